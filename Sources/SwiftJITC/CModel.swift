import CSwiftJIT
import Foundation
import SwiftJIT

/// What `sj_model` holds: the `Model`, and C copies of its input and output names and shapes that
/// live as long as it does.
final class CModel {
    let model: Model
    let inputs: [CBlobInfo]
    let outputs: [CBlobInfo]

    init(_ model: Model) {
        self.model = model
        inputs = model.inputs.map { CBlobInfo(name: $0.name, shape: $0.shape) }
        outputs = model.outputShapes.map { CBlobInfo(name: $0.name, shape: $0.shape) }
    }

    /// Builds the model `options` describe from a prototxt file and an optional caffemodel file.
    /// The model keeps no parameter arrays beside its compiled constants: C callers never read
    /// them, and the file is there to compile new shapes from.
    static func load(prototxt: String, weights: String?, options: COptions?) throws -> CModel {
        let options = options ?? COptions()
        return CModel(try Model(prototxt: prototxt, weights: weights, phase: options.phase, inputShapes: options.inputShapes,
                                seed: options.seed, keepsParameters: false, compiler: try compiler(options)))
    }

    /// The same from a parsed net and optional decoded weights (loading from memory).
    static func load(definition: NetDefinition, weights: (Caffe_NetParameter, String)?, options: COptions?) throws -> CModel {
        let options = options ?? COptions()
        return CModel(try Model(definition: definition, weights: weights.map { (model: $0.0, file: $0.1) }, phase: options.phase,
                                inputShapes: options.inputShapes, seed: options.seed, compiler: try compiler(options)))
    }

    private static func compiler(_ options: COptions) throws -> Compiler {
        try Compiler(threads: options.threads ?? ProcessInfo.processInfo.activeProcessorCount, cache: options.makeKernelCache())
    }
}

/// A blob's name and shape as C reads them: a NUL-terminated name and an `int64_t` dims array,
/// both owned by this object.
final class CBlobInfo {
    let name: UnsafeMutablePointer<CChar>
    let dims: UnsafeMutablePointer<Int64>
    let ndim: Int32

    init(name: String, shape: [Int]) {
        self.name = strdup(name)
        ndim = Int32(shape.count)
        dims = .allocate(capacity: max(1, shape.count))
        for (i, extent) in shape.enumerated() { dims[i] = Int64(extent) }
    }

    deinit {
        free(name)
        dims.deallocate()
    }

    var shape: [Int] { (0..<Int(ndim)).map { Int(dims[$0]) } }

    /// Fills `tensor` with this blob's name and shape and `data`.
    func describe(into tensor: UnsafeMutablePointer<sj_tensor>, data: UnsafePointer<Float>?) {
        tensor.pointee = sj_tensor(name: UnsafePointer(name), ndim: ndim, dims: UnsafePointer(dims), data: data)
    }
}

/// What `sj_session` holds: a `Session`, and the C views of its outputs from the last run.
final class CSession {
    let owner: CModel
    let session: Session
    /// Names and shapes of the last run's outputs, alive until the next run (C reads them).
    private var lastOutputs: [String: CBlobInfo] = [:]

    init(owner: CModel) throws {
        self.owner = owner
        session = try owner.model.session()
    }

    /// Throws SJ_NOT_FOUND, with the library's did-you-mean message, for a name that is not an input.
    func requireInput(_ name: String) throws {
        let inputs = session.inputs.map(\.name)
        guard inputs.contains(name) else {
            let message = Diagnostic("'\(name)' is not an input of this net" + Diagnostic.didYouMean(name, among: inputs),
                                     hint: "net inputs: " + inputs.joined(separator: ", "))
            throw CAPIError(.notFound, message.description)
        }
    }

    func reshape(_ shapes: [String: [Int]]) throws {
        try session.reshape(shapes)
        lastOutputs = [:]
    }

    /// Runs with `inputs` and fills `outputs` with views of the session's memory.
    func run(_ inputs: [String: CompiledNet.BlobView], names: [String]?, into outputs: UnsafeMutablePointer<sj_tensor>?) throws {
        let results = try session.runInPlace(inputs, blobs: names)
        var infos: [String: CBlobInfo] = [:]
        for (index, name) in (names ?? session.outputs.map(\.name)).enumerated() {
            guard let result = results[name] else { continue }
            let info = lastOutputs[name].flatMap { $0.shape == result.shape ? $0 : nil } ?? CBlobInfo(name: name, shape: result.shape)
            infos[name] = info
            if let outputs { info.describe(into: outputs + index, data: result.values.baseAddress) }
        }
        lastOutputs = infos
    }
}

// MARK: Models

@_cdecl("sj_model_load")
public func sj_model_load(_ prototxt: UnsafePointer<CChar>?, _ weights: UnsafePointer<CChar>?, _ options: OpaquePointer?,
                          _ out: UnsafeMutablePointer<OpaquePointer?>?) -> OpaquePointer? {
    CStatus.catching {
        guard let out else { throw CAPIError(.invalidArgument, "sj_model_load: out is NULL") }
        out.pointee = nil
        let path = try cString(prototxt, "prototxt_path")
        out.pointee = Handle.retain(try CModel.load(prototxt: path, weights: weights.map { String(cString: $0) },
                                                    options: Handle.peek(options, as: COptions.self)))
    }
}

@_cdecl("sj_model_load_from_memory")
public func sj_model_load_from_memory(_ prototxt: UnsafePointer<CChar>?, _ prototxtSize: Int, _ weights: UnsafeRawPointer?, _ weightsSize: Int,
                                      _ options: OpaquePointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> OpaquePointer? {
    CStatus.catching {
        guard let out else { throw CAPIError(.invalidArgument, "sj_model_load_from_memory: out is NULL") }
        out.pointee = nil
        guard let prototxt else { throw CAPIError(.invalidArgument, "sj_model_load_from_memory: prototxt is NULL") }
        let bytes = UnsafeRawBufferPointer(start: prototxt, count: prototxtSize)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw CAPIError(.invalidModel, "<prototxt in memory>: the text is not valid UTF-8")
        }
        let definition = try CaffeFiles.parseNet(text: text, file: "<prototxt in memory>")
        let decoded = try weights.map { pointer -> (Caffe_NetParameter, String) in
            let file = "<caffemodel in memory>"
            return (try CaffeFiles.parseWeights(Data(bytes: pointer, count: weightsSize), file: file), file)
        }
        out.pointee = Handle.retain(try CModel.load(definition: definition, weights: decoded, options: Handle.peek(options, as: COptions.self)))
    }
}

@_cdecl("sj_model_free")
public func sj_model_free(_ model: OpaquePointer?) {
    Handle.release(model, as: CModel.self)
}

@_cdecl("sj_model_input_count")
public func sj_model_input_count(_ model: OpaquePointer?) -> Int32 {
    Int32(Handle.peek(model, as: CModel.self)?.inputs.count ?? 0)
}

@_cdecl("sj_model_output_count")
public func sj_model_output_count(_ model: OpaquePointer?) -> Int32 {
    Int32(Handle.peek(model, as: CModel.self)?.outputs.count ?? 0)
}

@_cdecl("sj_model_input")
public func sj_model_input(_ model: OpaquePointer?, _ index: Int32, _ info: UnsafeMutablePointer<sj_tensor>?) -> OpaquePointer? {
    CStatus.catching { try describe(model, index, info, inputs: true) }
}

@_cdecl("sj_model_output")
public func sj_model_output(_ model: OpaquePointer?, _ index: Int32, _ info: UnsafeMutablePointer<sj_tensor>?) -> OpaquePointer? {
    CStatus.catching { try describe(model, index, info, inputs: false) }
}

private func describe(_ model: OpaquePointer?, _ index: Int32, _ info: UnsafeMutablePointer<sj_tensor>?, inputs: Bool) throws {
    let box = try Handle.borrow(model, as: CModel.self, "model")
    guard let info else { throw CAPIError(.invalidArgument, "info is NULL") }
    let blobs = inputs ? box.inputs : box.outputs
    guard blobs.indices.contains(Int(index)) else {
        throw CAPIError(.invalidArgument, "\(inputs ? "input" : "output") index \(index) is out of range: the net has \(blobs.count)")
    }
    blobs[Int(index)].describe(into: info, data: nil)
}

@_cdecl("sj_model_constant_bytes")
public func sj_model_constant_bytes(_ model: OpaquePointer?) -> Int64 {
    Int64(Handle.peek(model, as: CModel.self)?.model.constants.bytes ?? 0)
}

// MARK: Sessions

@_cdecl("sj_session_create")
public func sj_session_create(_ model: OpaquePointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> OpaquePointer? {
    CStatus.catching {
        guard let out else { throw CAPIError(.invalidArgument, "sj_session_create: out is NULL") }
        out.pointee = nil
        out.pointee = Handle.retain(try CSession(owner: try Handle.borrow(model, as: CModel.self, "model")))
    }
}

@_cdecl("sj_session_free")
public func sj_session_free(_ session: OpaquePointer?) {
    Handle.release(session, as: CSession.self)
}

@_cdecl("sj_session_reshape")
public func sj_session_reshape(_ session: OpaquePointer?, _ inputs: UnsafePointer<sj_tensor>?, _ count: Int) -> OpaquePointer? {
    CStatus.catching(diagnosticCode: .invalidArgument) {
        let box = try Handle.borrow(session, as: CSession.self, "session")
        var shapes: [String: [Int]] = [:]
        for tensor in try tensors(inputs, count) {
            let name = try cString(tensor.name, "input name")
            try box.requireInput(name)
            shapes[name] = try cShape(tensor.dims, tensor.ndim, of: name)
        }
        try box.reshape(shapes)
    }
}

@_cdecl("sj_session_run")
public func sj_session_run(_ session: OpaquePointer?, _ inputs: UnsafePointer<sj_tensor>?, _ inputCount: Int,
                           _ outputNames: UnsafePointer<UnsafePointer<CChar>?>?, _ outputCount: Int,
                           _ outputs: UnsafeMutablePointer<sj_tensor>?) -> OpaquePointer? {
    CStatus.catching(diagnosticCode: .invalidArgument) {
        let box = try Handle.borrow(session, as: CSession.self, "session")
        var given: [String: CompiledNet.BlobView] = [:]
        for tensor in try tensors(inputs, inputCount) {
            let name = try cString(tensor.name, "input name")
            try box.requireInput(name)
            let shape = try cShape(tensor.dims, tensor.ndim, of: name)
            guard let data = tensor.data else { throw CAPIError(.invalidArgument, "input '\(name)': data is NULL") }
            given[name] = (shape, UnsafeBufferPointer(start: data, count: shape.reduce(1, *)))
        }
        guard outputs != nil || outputCount == 0 else { throw CAPIError(.invalidArgument, "outputs is NULL but output_count is \(outputCount)") }
        var names: [String]?
        if let outputNames {
            names = try (0..<outputCount).map { try cString(outputNames[$0], "output_names[\($0)]") }
        } else if outputs == nil {
            names = []  // run only
        } else if outputCount < box.session.outputs.count {
            throw CAPIError(.invalidArgument, "outputs has room for \(outputCount) tensors, but the net has \(box.session.outputs.count) outputs")
        }
        try box.run(given, names: names, into: outputs)
    }
}

@_cdecl("sj_session_input_buffer")
public func sj_session_input_buffer(_ session: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ data: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>?,
                                    _ count: UnsafeMutablePointer<Int64>?) -> OpaquePointer? {
    CStatus.catching(diagnosticCode: .invalidArgument) {
        let box = try Handle.borrow(session, as: CSession.self, "session")
        let buffer = try box.session.inputBuffer(try cString(name, "name"))
        data?.pointee = buffer.baseAddress
        count?.pointee = Int64(buffer.count)
    }
}

@_cdecl("sj_session_arena_bytes")
public func sj_session_arena_bytes(_ session: OpaquePointer?) -> Int64 {
    Int64(Handle.peek(session, as: CSession.self)?.session.arenaBytes ?? 0)
}

/// The `count` tensors at `pointer` (none when count is 0; NULL with a count is an error).
private func tensors(_ pointer: UnsafePointer<sj_tensor>?, _ count: Int) throws -> UnsafeBufferPointer<sj_tensor> {
    guard count > 0 else { return UnsafeBufferPointer(start: nil, count: 0) }
    guard let pointer else { throw CAPIError(.invalidArgument, "tensors is NULL but its count is \(count)") }
    return UnsafeBufferPointer(start: pointer, count: count)
}
