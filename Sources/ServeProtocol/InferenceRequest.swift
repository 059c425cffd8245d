import Foundation

/// One KServe v2 inference request, decoded and converted to FP32, not yet checked against a model.
///
/// `decode` is a pure function from the request body (and the `Inference-Header-Content-Length`
/// header, when the client used Triton's binary tensor data extension) to a request or a
/// `ServeError`: nothing in the body can make it trap, allocate more than the body's size implies,
/// or read past the end.
///
///     // {"inputs":[{"name":"data","shape":[1,2],"datatype":"FP32","data":[1,2]}]}
///     let request = try InferenceRequest.decode(body: bytes, headerLength: nil)
///     request.inputs[0].values   // [1.0, 2.0]
public struct InferenceRequest: Sendable, Equatable {
    /// One input tensor: its name, shape, the datatype it was sent as, and its values as FP32.
    public struct Input: Sendable, Equatable {
        public var name: String
        public var shape: [Int]
        public var datatype: TensorDatatype
        public var values: [Float]

        package init(name: String, shape: [Int], datatype: TensorDatatype, values: [Float]) {
            self.name = name
            self.shape = shape
            self.datatype = datatype
            self.values = values
        }
    }

    /// An output the client asked for, and whether it wants it as binary data.
    public struct RequestedOutput: Sendable, Equatable {
        public var name: String
        public var binary: Bool

        package init(name: String, binary: Bool) {
            self.name = name
            self.binary = binary
        }
    }

    /// The client's `id`, echoed in the response.
    public var id: String?
    public var inputs: [Input]
    /// The requested outputs; nil means every output of the model.
    public var outputs: [RequestedOutput]?
    /// `parameters.binary_data_output`: outputs not named in `outputs` come back as binary data.
    public var binaryDataOutput: Bool

    /// The most elements one tensor may declare (2^31), far above any image batch the nets take.
    public static let maxElements = 1 << 31

    /// Decodes a request body. `headerLength` is the `Inference-Header-Content-Length` header: the
    /// JSON header is the body's first `headerLength` bytes and the inputs' binary data follow in
    /// input order, each `parameters.binary_data_size` bytes. Without it the whole body is JSON.
    public static func decode(body: [UInt8], headerLength: Int?) throws(ServeError) -> InferenceRequest {
        let jsonEnd: Int
        if let headerLength {
            guard headerLength >= 0, headerLength <= body.count else {
                throw ServeError(.badRequest, "Inference-Header-Content-Length is \(headerLength) but the body has only \(body.count) bytes")
            }
            jsonEnd = headerLength
        } else {
            jsonEnd = body.count
        }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(body[0..<jsonEnd]), options: [])
        } catch {
            let detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? error.localizedDescription
            throw ServeError(.badRequest, "the request is not valid JSON" + (headerLength == nil ? "" : " in its first \(jsonEnd) bytes (Inference-Header-Content-Length)") + ": \(detail)")
        }
        guard let header = object as? [String: Any] else { throw ServeError(.badRequest, "the request must be a JSON object with \"inputs\"") }

        var request = InferenceRequest(id: nil, inputs: [], outputs: nil, binaryDataOutput: false)
        if let id = header["id"] {
            guard let text = id as? String else { throw ServeError(.badRequest, "\"id\" must be a string") }
            request.id = text
        }
        if let parameters = header["parameters"] {
            guard let dictionary = parameters as? [String: Any] else { throw ServeError(.badRequest, "\"parameters\" must be an object") }
            request.binaryDataOutput = flag(dictionary["binary_data_output"])
        }
        guard let inputs = header["inputs"] as? [Any], !inputs.isEmpty else {
            throw ServeError(.badRequest, "the request has no \"inputs\" (a non-empty array of {name, shape, datatype, data})")
        }
        var offset = jsonEnd
        for (index, item) in inputs.enumerated() {
            guard let input = item as? [String: Any] else { throw ServeError(.badRequest, "inputs[\(index)] must be an object") }
            let decoded = try decodeInput(input, index: index, body: body, jsonLength: jsonEnd, offset: &offset,
                                          binaryAllowed: headerLength != nil)
            if request.inputs.contains(where: { $0.name == decoded.name }) {
                throw ServeError(.badRequest, "input '\(decoded.name)' appears twice")
            }
            request.inputs.append(decoded)
        }
        if offset != body.count {
            throw ServeError(.badRequest, "the body has \(body.count - jsonEnd) bytes after the JSON header but the inputs' binary_data_size add up to \(offset - jsonEnd)")
        }
        if let outputs = header["outputs"] {
            guard let list = outputs as? [Any] else { throw ServeError(.badRequest, "\"outputs\" must be an array of {name}") }
            request.outputs = try list.enumerated().map { (index, item) throws(ServeError) in
                guard let output = item as? [String: Any], let name = output["name"] as? String else {
                    throw ServeError(.badRequest, "outputs[\(index)] must be an object with a \"name\"")
                }
                let parameters = output["parameters"] as? [String: Any] ?? [:]
                return RequestedOutput(name: name, binary: flag(parameters["binary_data"]))
            }
        }
        return request
    }

    /// One input: its shape is checked against `maxElements`, and against the bytes that could hold
    /// its values (the binary data, or the `jsonLength` bytes of JSON), before anything is allocated.
    private static func decodeInput(_ input: [String: Any], index: Int, body: [UInt8], jsonLength: Int, offset: inout Int,
                                    binaryAllowed: Bool) throws(ServeError) -> Input {
        guard let name = input["name"] as? String else { throw ServeError(.badRequest, "inputs[\(index)] has no \"name\"") }
        guard let rawShape = input["shape"] as? [Any] else { throw ServeError(.badRequest, "input '\(name)' has no \"shape\" (an array of non-negative integers)") }
        var shape: [Int] = []
        for dimension in rawShape {
            guard let number = dimension as? NSNumber, let value = Int(exactly: number.doubleValue), value >= 0 else {
                throw ServeError(.badRequest, "input '\(name)': shape must be non-negative integers, got \(rawShape)")
            }
            shape.append(value)
        }
        var count = 1
        for d in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow, product <= maxElements else {
                throw ServeError(.badRequest, "input '\(name)': shape \(shapeText(shape)) has more than \(maxElements) elements")
            }
            count = product
        }
        guard let typeName = input["datatype"] as? String else { throw ServeError(.badRequest, "input '\(name)' has no \"datatype\" (FP32)") }
        guard let datatype = TensorDatatype(rawValue: typeName) else {
            throw ServeError(.badRequest, "input '\(name)': unknown datatype '\(typeName)' (expected FP32, or a numeric type convertible without loss)")
        }
        let parameters = input["parameters"] as? [String: Any] ?? [:]
        if let declared = parameters["binary_data_size"] {
            guard binaryAllowed else {
                throw ServeError(.badRequest, "input '\(name)' has binary_data_size but the request has no Inference-Header-Content-Length header")
            }
            guard let number = declared as? NSNumber, let size = Int(exactly: number.doubleValue), size >= 0 else {
                throw ServeError(.badRequest, "input '\(name)': binary_data_size must be a non-negative integer")
            }
            guard let elementSize = datatype.byteSize else {
                throw ServeError(.badRequest, "input '\(name)': datatype BYTES is not supported: these models take numeric tensors (FP32)")
            }
            guard size == count * elementSize else {
                throw ServeError(.badRequest, "input '\(name)': binary_data_size is \(size) bytes but shape \(shapeText(shape)) of \(typeName) needs \(count * elementSize)")
            }
            guard size <= body.count - offset else {
                throw ServeError(.badRequest, "input '\(name)': binary_data_size declares \(size) bytes but only \(body.count - offset) remain in the body")
            }
            let values: [Float]
            do { values = try datatype.floats(fromLittleEndian: body[offset..<offset + size], count: count) } catch { throw ServeError(.badRequest, "input '\(name)': " + error.message) }
            offset += size
            return Input(name: name, shape: shape, datatype: datatype, values: values)
        }
        guard let data = input["data"] else {
            throw ServeError(.badRequest, "input '\(name)' has neither \"data\" nor parameters.binary_data_size")
        }
        // Each JSON value takes at least two bytes ("0,"), so a shape the header cannot hold is refused
        // before its values are reserved.
        guard count <= (jsonLength + 1) / 2 else {
            throw ServeError(.badRequest, "input '\(name)': shape \(shapeText(shape)) has \(count) elements, more than the "
                             + "\(jsonLength)-byte JSON header can hold in \"data\" (each value takes at least 2 bytes)")
        }
        var numbers: [Double] = []
        numbers.reserveCapacity(count)
        try flatten(data, into: &numbers, limit: count, name: name)
        guard numbers.count == count else {
            throw ServeError(.badRequest, "input '\(name)': shape \(shapeText(shape)) has \(count) elements but \"data\" has \(numbers.count)")
        }
        do { return Input(name: name, shape: shape, datatype: datatype, values: try datatype.floats(fromJSON: numbers)) } catch { throw ServeError(.badRequest, "input '\(name)': " + error.message) }
    }

    /// Flattens `data` (a number, or arrays nested in row-major order), stopping past `limit` values.
    private static func flatten(_ data: Any, into numbers: inout [Double], limit: Int, name: String) throws(ServeError) {
        if let array = data as? [Any] {
            for element in array {
                try flatten(element, into: &numbers, limit: limit, name: name)
                if numbers.count > limit { return }
            }
        } else if let number = data as? NSNumber {
            numbers.append(number.doubleValue)   // JSON true/false arrive as 1/0 too

        } else {
            throw ServeError(.badRequest, "input '\(name)': \"data\" must hold numbers, got \(type(of: data)) (BYTES tensors are not supported)")
        }
    }

    private static func flag(_ value: Any?) -> Bool {
        if let bool = value as? Bool { return bool }
        if let number = value as? NSNumber { return number.intValue != 0 }
        return false
    }
}
