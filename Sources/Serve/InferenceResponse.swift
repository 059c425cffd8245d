import Foundation

/// The KServe v2 response to one inference request: JSON, or a JSON header followed by the binary
/// data of the outputs sent as binary (Triton's binary tensor data extension).
///
/// `headerLength` is nil when no output is binary; otherwise the server sends it as
/// `Inference-Header-Content-Length` and the body's first `headerLength` bytes are the JSON.
///
///     let response = InferenceResponse.encode(model: "squeezenet", version: "1", id: "7",
///                                             outputs: [("prob", [1, 1000], values, true)])
public struct InferenceResponse: Sendable {
    public var body: [UInt8]
    public var headerLength: Int?

    /// One output tensor to send: name, shape, FP32 values, and whether it goes as binary data.
    public typealias Output = (name: String, shape: [Int], values: [Float], binary: Bool)

    public static func encode(model: String, version: String, id: String?, outputs: [Output]) -> InferenceResponse {
        var json = "{\"model_name\":" + jsonString(model) + ",\"model_version\":" + jsonString(version)
        if let id { json += ",\"id\":" + jsonString(id) }
        json += ",\"outputs\":["
        var binary: [UInt8] = []
        for (index, output) in outputs.enumerated() {
            if index > 0 { json += "," }
            json += "{\"name\":" + jsonString(output.name) + ",\"datatype\":\"FP32\",\"shape\":" + shapeText(output.shape)
            if output.binary {
                json += ",\"parameters\":{\"binary_data_size\":\(output.values.count * 4)}}"
                binary.reserveCapacity(binary.count + output.values.count * 4)
                for value in output.values {
                    let bits = value.bitPattern.littleEndian
                    withUnsafeBytes(of: bits) { binary.append(contentsOf: $0) }
                }
            } else {
                // Float's description is the shortest text that reads back to the same Float.
                json += ",\"data\":[" + output.values.map(jsonNumber).joined(separator: ",") + "]}"
            }
        }
        json += "]}"
        let header = Array(json.utf8)
        if outputs.contains(where: \.binary) {
            return InferenceResponse(body: header + binary, headerLength: header.count)
        }
        return InferenceResponse(body: header, headerLength: nil)
    }
}

/// A JSON string literal.
func jsonString(_ text: String) -> String {
    var result = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        default:
            if scalar.value < 0x20 { result += String(format: "\\u%04x", scalar.value) } else { result.unicodeScalars.append(scalar) }
        }
    }
    return result + "\""
}

/// A JSON number for a Float (JSON has no NaN or infinity: those become null).
func jsonNumber(_ value: Float) -> String { value.isFinite ? "\(value)" : "null" }

/// `{"error": "..."}`, the body of every error response.
func errorBody(_ message: String) -> [UInt8] { Array(("{\"error\":" + jsonString(message) + "}").utf8) }
