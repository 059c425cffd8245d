import Foundation

/// The part of a Triton model configuration (`config.pbtxt`, protobuf text format) the server honours.
///
/// Honoured: `max_batch_size`, `dynamic_batching { max_queue_delay_microseconds preferred_batch_size }`,
/// `instance_group { count }`, and `input`/`output` `{ name data_type dims }`. `name`, `platform` and
/// `backend` are accepted as descriptions. Any other field is kept out and reported in `warnings`,
/// naming it, so a configuration written for Triton loads with a clear account of what was ignored.
///
///     max_batch_size: 8
///     dynamic_batching { max_queue_delay_microseconds: 200 preferred_batch_size: [4, 8] }
///     instance_group [ { count: 2 kind: KIND_CPU } ]
///     input [ { name: "data" data_type: TYPE_FP32 dims: [3, 227, 227] } ]
public struct ModelConfiguration: Sendable, Equatable {
    /// One input or output as the configuration declares it (dims exclude the batch dimension when
    /// `maxBatchSize > 0`, as in Triton).
    public struct Tensor: Sendable, Equatable {
        public var name: String
        public var dataType: String
        public var dims: [Int]

        package init(name: String, dataType: String, dims: [Int]) {
            self.name = name
            self.dataType = dataType
            self.dims = dims
        }
    }

    /// Dynamic batching; nil when the configuration has no `dynamic_batching` block (each request runs alone).
    public struct DynamicBatching: Sendable, Equatable {
        public var maxQueueDelayMicroseconds: Int
        public var preferredBatchSizes: [Int]

        package init(maxQueueDelayMicroseconds: Int = 0, preferredBatchSizes: [Int] = []) {
            self.maxQueueDelayMicroseconds = maxQueueDelayMicroseconds
            self.preferredBatchSizes = preferredBatchSizes
        }
    }

    public var name: String?
    /// The largest batch the batcher forms; 0 means the model takes no batch dimension from the server.
    public var maxBatchSize: Int = 0
    public var dynamicBatching: DynamicBatching?
    /// Execution contexts (threads) running batches of this model at once.
    public var instanceCount: Int = 1
    public var inputs: [Tensor] = []
    public var outputs: [Tensor] = []
    /// One line per field this server does not honour.
    public var warnings: [String] = []

    public init() {}

    /// What a model folder without `config.pbtxt` gets: batches of up to 8, formed from whatever is
    /// queued when an execution context is free (no added delay), one instance.
    public static let standard: ModelConfiguration = {
        var configuration = ModelConfiguration()
        configuration.maxBatchSize = 8
        configuration.dynamicBatching = DynamicBatching()
        return configuration
    }()

    /// Parses `config.pbtxt` text; `file` names it in errors.
    public static func parse(_ text: String, file: String = "config.pbtxt") throws(ServeError) -> ModelConfiguration {
        var parser = TextFormatParser(text: Array(text.utf8), file: file)
        // An empty list (`model_warmup [ ]`) of a field we honour says nothing; of any other, it still gets its warning.
        let honoured: Set<String> = ["name", "platform", "backend", "max_batch_size", "dynamic_batching", "instance_group", "input", "output"]
        let fields = try parser.parseFields(closing: nil).filter { !($0.isEmptyList && honoured.contains($0.name)) }
        var configuration = ModelConfiguration()
        for field in fields {
            switch field.name {
            case "name": configuration.name = try field.string()
            case "platform", "backend": break
            case "max_batch_size":
                configuration.maxBatchSize = try field.integer()
                guard configuration.maxBatchSize >= 0 else { throw field.error("max_batch_size must be 0 or more") }
            case "dynamic_batching":
                var batching = DynamicBatching()
                for inner in try field.message() where !inner.isEmptyList {
                    switch inner.name {
                    case "max_queue_delay_microseconds":
                        batching.maxQueueDelayMicroseconds = try inner.integer()
                        guard batching.maxQueueDelayMicroseconds >= 0 else { throw inner.error("max_queue_delay_microseconds must be 0 or more") }
                    case "preferred_batch_size":
                        let size = try inner.integer()
                        guard size > 0 else { throw inner.error("preferred_batch_size must be positive") }
                        batching.preferredBatchSizes.append(size)
                    default: configuration.warnings.append("\(file): dynamic_batching.\(inner.name) is not supported and is ignored")
                    }
                }
                configuration.dynamicBatching = batching
            case "instance_group":
                for inner in try field.message() where !inner.isEmptyList {
                    switch inner.name {
                    case "count":
                        configuration.instanceCount = try inner.integer()
                        guard configuration.instanceCount > 0 else { throw inner.error("instance_group.count must be positive") }
                    case "kind":
                        if inner.scalar != "KIND_CPU" && inner.scalar != "KIND_AUTO" {
                            configuration.warnings.append("\(file): instance_group.kind \(inner.scalar ?? "") is not supported; the model runs on the CPU")
                        }
                    default: configuration.warnings.append("\(file): instance_group.\(inner.name) is not supported and is ignored")
                    }
                }
            case "input", "output":
                var tensor = Tensor(name: "", dataType: "TYPE_FP32", dims: [])
                for inner in try field.message() where !inner.isEmptyList {
                    switch inner.name {
                    case "name": tensor.name = try inner.string()
                    case "data_type": tensor.dataType = try inner.string()
                    case "dims": tensor.dims.append(try inner.integer())
                    default: configuration.warnings.append("\(file): \(field.name).\(inner.name) is not supported and is ignored")
                    }
                }
                guard !tensor.name.isEmpty else { throw field.error("\(field.name) has no name") }
                if field.name == "input" { configuration.inputs.append(tensor) } else { configuration.outputs.append(tensor) }
            default:
                configuration.warnings.append("\(file): \(field.name) is not supported and is ignored")
            }
        }
        if let batching = configuration.dynamicBatching, configuration.maxBatchSize > 0,
           let large = batching.preferredBatchSizes.first(where: { $0 > configuration.maxBatchSize }) {
            throw ServeError(.badRequest, "\(file): preferred_batch_size \(large) exceeds max_batch_size \(configuration.maxBatchSize)")
        }
        return configuration
    }
}

/// One field of a protobuf text-format message: a scalar or a nested message, with its line.
struct TextFormatField {
    var name: String
    var scalar: String? = nil
    var fields: [TextFormatField]? = nil
    var line: Int
    var file: String
    /// `name: [ ]`: a repeated field given no values.
    var isEmptyList = false

    func error(_ message: String) -> ServeError { ServeError(.badRequest, "\(file):\(line): \(message)") }
    func string() throws(ServeError) -> String {
        guard let scalar else { throw error("\(name) must be a value, not a message") }
        return scalar
    }
    func integer() throws(ServeError) -> Int {
        guard let scalar, let value = Int(scalar) else { throw error("\(name) must be an integer, got \(scalar ?? "a message")") }
        return value
    }
    func message() throws(ServeError) -> [TextFormatField] {
        guard let fields else { throw error("\(name) must be a message { ... }") }
        return fields
    }
}

/// A small reader for protobuf text format: `name: value`, `name { ... }`, `name: [a, b]`,
/// `name [ { ... }, { ... } ]`, `#` comments. Repeated fields come out as repeated entries.
struct TextFormatParser {
    let text: [UInt8]
    let file: String
    var index = 0
    var line = 1

    init(text: [UInt8], file: String) {
        self.text = text
        self.file = file
    }

    mutating func parseFields(closing: UInt8?) throws(ServeError) -> [TextFormatField] {
        var fields: [TextFormatField] = []
        while true {
            skipSpace()
            guard index < text.count else {
                if let closing { throw error("expected '\(Character(UnicodeScalar(closing)))' before the end of the file") }
                return fields
            }
            if let closing, text[index] == closing { index += 1; return fields }
            let name = try identifier()
            let fieldLine = line
            skipSpace()
            var hasColon = false
            if index < text.count, text[index] == UInt8(ascii: ":") { index += 1; hasColon = true; skipSpace() }
            guard index < text.count else { throw error("field '\(name)' has no value") }
            if text[index] == UInt8(ascii: "[") {
                index += 1
                var items = 0
                while true {
                    skipSpace()
                    guard index < text.count else { throw error("unterminated list for '\(name)'") }
                    if text[index] == UInt8(ascii: "]") {
                        index += 1
                        if items == 0 { fields.append(TextFormatField(name: name, line: fieldLine, file: file, isEmptyList: true)) }
                        break
                    }
                    items += 1
                    fields.append(try value(name: name, line: line))
                    skipSpace()
                    if index < text.count, text[index] == UInt8(ascii: ",") { index += 1 }
                }
            } else {
                if !hasColon, text[index] != UInt8(ascii: "{") { throw error("expected ':' or '{' after '\(name)'") }
                fields.append(try value(name: name, line: fieldLine))
            }
            skipSpace()
            if index < text.count, text[index] == UInt8(ascii: ",") || text[index] == UInt8(ascii: ";") { index += 1 }
        }
    }

    private mutating func value(name: String, line: Int) throws(ServeError) -> TextFormatField {
        if text[index] == UInt8(ascii: "{") || text[index] == UInt8(ascii: "<") {
            let closing = text[index] == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: ">")
            index += 1
            return TextFormatField(name: name, scalar: nil, fields: try parseFields(closing: closing), line: line, file: file)
        }
        if text[index] == UInt8(ascii: "\"") || text[index] == UInt8(ascii: "'") {
            let quote = text[index]
            index += 1
            let start = index
            while index < text.count, text[index] != quote {
                if text[index] == UInt8(ascii: "\n") { break }
                index += 1
            }
            guard index < text.count, text[index] == quote else { throw error("unterminated string in '\(name)'") }
            let string = String(decoding: text[start..<index], as: UTF8.self)
            index += 1
            return TextFormatField(name: name, scalar: string, fields: nil, line: line, file: file)
        }
        let start = index
        while index < text.count, isWordByte(text[index]) { index += 1 }
        guard index > start else { throw error("expected a value for '\(name)'") }
        return TextFormatField(name: name, scalar: String(decoding: text[start..<index], as: UTF8.self), fields: nil, line: line, file: file)
    }

    private mutating func identifier() throws(ServeError) -> String {
        let start = index
        while index < text.count, isWordByte(text[index]) { index += 1 }
        guard index > start else { throw error("unexpected '\(Character(UnicodeScalar(text[index])))'") }
        return String(decoding: text[start..<index], as: UTF8.self)
    }

    private func isWordByte(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
            || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "+")
    }

    private mutating func skipSpace() {
        while index < text.count {
            let byte = text[index]
            if byte == UInt8(ascii: "\n") { line += 1; index += 1 }
            else if byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\r") { index += 1 }
            else if byte == UInt8(ascii: "#") { while index < text.count, text[index] != UInt8(ascii: "\n") { index += 1 } }
            else { return }
        }
    }

    private func error(_ message: String) -> ServeError { ServeError(.badRequest, "\(file):\(line): \(message)") }
}
