import Foundation
import Testing
@testable import Serve

/// The KServe v2 request body, JSON and binary, decoded by a pure function that never traps.
@Suite("inference request decoding")
struct RequestDecodingTests {
    static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }
    static func floats(_ values: [Float]) -> [UInt8] { values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } } }

    @Test("JSON tensors: nested data flattens in row-major order, id and outputs come through")
    func jsonTensors() throws {
        let body = Self.bytes(#"{"id":"42","inputs":[{"name":"data","shape":[1,2,2],"datatype":"FP32","data":[[1,2],[3,4.5]]}],"outputs":[{"name":"prob"}]}"#)
        let request = try InferenceRequest.decode(body: body, headerLength: nil)
        #expect(request.id == "42")
        #expect(request.inputs == [.init(name: "data", shape: [1, 2, 2], datatype: .fp32, values: [1, 2, 3, 4.5])])
        #expect(request.outputs == [.init(name: "prob", binary: false)])
    }

    @Test("binary tensors follow the JSON header, each binary_data_size bytes, in input order")
    func binaryTensors() throws {
        let header = #"{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},{"name":"b","shape":[3],"datatype":"UINT8","parameters":{"binary_data_size":3}}],"parameters":{"binary_data_output":true}}"#
        let body = Self.bytes(header) + Self.floats([1.5, -2]) + [0, 128, 255]
        let request = try InferenceRequest.decode(body: body, headerLength: header.utf8.count)
        #expect(request.inputs.map(\.values) == [[1.5, -2], [0, 128, 255]])
        #expect(request.binaryDataOutput)
        #expect(request.outputs == nil)
    }

    @Test("a binary body shorter or longer than declared is refused, naming the sizes")
    func binaryLengthMismatch() throws {
        let header = #"{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#
        for extra in [4, 12] {
            let body = Self.bytes(header) + [UInt8](repeating: 0, count: extra)
            #expect(throws: ServeError.self) { try InferenceRequest.decode(body: body, headerLength: header.utf8.count) }
        }
        do {
            _ = try InferenceRequest.decode(body: Self.bytes(header) + [0, 0, 0, 0], headerLength: header.utf8.count)
        } catch {
            #expect(error.message.contains("declares 8 bytes but only 4 remain"))
        }
    }

    @Test("a declared size of terabytes or a shape past 2^31 elements allocates nothing and is refused")
    func hugeDeclarations() throws {
        let huge = #"{"inputs":[{"name":"a","shape":[1000000,1000000],"datatype":"FP32","parameters":{"binary_data_size":4000000000000}}]}"#
        #expect(throws: ServeError.self) { try InferenceRequest.decode(body: Self.bytes(huge), headerLength: huge.utf8.count) }
        let lying = #"{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":4000000000000}}]}"#
        #expect(throws: ServeError.self) { try InferenceRequest.decode(body: Self.bytes(lying), headerLength: lying.utf8.count) }
        #expect(throws: ServeError.self) { try InferenceRequest.decode(body: Self.bytes(lying), headerLength: 1 << 40) }
    }

    @Test("a JSON tensor whose shape needs more values than the body can hold is refused before reserving them, naming both sizes")
    func jsonShapeBeyondBody() throws {
        // 2^31 elements (the element limit) in a 90-byte body: refused before 16 GB of Doubles are reserved.
        let body = #"{"inputs":[{"name":"a","shape":[2147483648],"datatype":"FP32","data":[1]}]}"#
        do {
            _ = try InferenceRequest.decode(body: Self.bytes(body), headerLength: nil)
            Issue.record("expected an error")
        } catch {
            #expect(error.status == .badRequest)
            #expect(error.message == "input 'a': shape [2147483648] has 2147483648 elements, more than the \(body.utf8.count)-byte JSON header can hold in \"data\" (each value takes at least 2 bytes)")
        }
        // The tightest honest body still decodes: three one-digit values.
        let tight = #"{"inputs":[{"name":"a","shape":[3],"datatype":"FP32","data":[1,2,3]}]}"#
        #expect(try InferenceRequest.decode(body: Self.bytes(tight), headerLength: nil).inputs[0].values == [1, 2, 3])
    }

    @Test("malformed JSON, missing fields and wrong element counts are 400s that say what is wrong")
    func malformed() throws {
        let cases: [(String, String)] = [
            (#"{"inputs":[{"name":"a""#, "not valid JSON"),
            (#"[1,2]"#, "JSON object"),
            (#"{"inputs":[]}"#, "no \"inputs\""),
            (#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","data":[1,2,3]}]}"#, "has 2 elements but \"data\" has 3"),
            (#"{"inputs":[{"name":"a","shape":[-1],"datatype":"FP32","data":[1]}]}"#, "non-negative integers"),
            (#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP17","data":[1]}]}"#, "unknown datatype 'FP17'"),
            (#"{"inputs":[{"name":"a","shape":[1],"datatype":"BYTES","data":["x"]}]}"#, "BYTES"),
            (#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32"}]}"#, "neither \"data\""),
        ]
        for (body, phrase) in cases {
            do {
                _ = try InferenceRequest.decode(body: Self.bytes(body), headerLength: nil)
                Issue.record("accepted \(body)")
            } catch {
                #expect(error.status == .badRequest)
                #expect(error.message.contains(phrase), "\(error.message)")
            }
        }
    }

    @Test("other numeric datatypes convert to FP32 only when no value changes")
    func datatypeConversion() throws {
        let ok = #"{"inputs":[{"name":"a","shape":[3],"datatype":"INT64","data":[-5,0,16777216]}]}"#
        #expect(try InferenceRequest.decode(body: Self.bytes(ok), headerLength: nil).inputs[0].values == [-5, 0, 16_777_216])
        let lossy = #"{"inputs":[{"name":"a","shape":[1],"datatype":"INT64","data":[16777217]}]}"#
        #expect(throws: ServeError.self) { try InferenceRequest.decode(body: Self.bytes(lossy), headerLength: nil) }
        let fraction = #"{"inputs":[{"name":"a","shape":[1],"datatype":"INT32","data":[1.5]}]}"#
        #expect(throws: ServeError.self) { try InferenceRequest.decode(body: Self.bytes(fraction), headerLength: nil) }
        let fp64 = #"{"inputs":[{"name":"a","shape":[1],"datatype":"FP64","parameters":{"binary_data_size":8}}]}"#
        let tenth = withUnsafeBytes(of: (0.1 as Double).bitPattern.littleEndian) { Array($0) }
        #expect(throws: ServeError.self) { try InferenceRequest.decode(body: Self.bytes(fp64) + tenth, headerLength: fp64.utf8.count) }
        let half = #"{"inputs":[{"name":"a","shape":[2],"datatype":"FP16","parameters":{"binary_data_size":4}}]}"#
        let values = try InferenceRequest.decode(body: Self.bytes(half) + [0x00, 0x3C, 0x00, 0xC0], headerLength: half.utf8.count).inputs[0].values
        #expect(values == [1, -2])
    }

    @Test("random bytes never trap the decoder")
    func fuzz() {
        var generator = SystemRandomNumberGenerator()
        let seed = Self.bytes(#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#) + Self.floats([1, 2])
        for _ in 0..<2000 {
            var body = seed
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                body[Int.random(in: 0..<body.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
            }
            if Bool.random(using: &generator) { body.removeLast(Int.random(in: 0..<body.count, using: &generator)) }
            _ = try? InferenceRequest.decode(body: body, headerLength: Bool.random(using: &generator) ? nil : Int.random(in: -2...body.count + 2, using: &generator))
        }
    }

    @Test("responses put binary outputs after the JSON header and JSON outputs inline")
    func responseEncoding() throws {
        let response = InferenceResponse.encode(model: "m", version: "1", id: "7", outputs: [("p", [1, 2], [0.5, 0.25], true), ("q", [1], [0.1], false)])
        let length = try #require(response.headerLength)
        let header = try #require(try JSONSerialization.jsonObject(with: Data(response.body[0..<length])) as? [String: Any])
        #expect(header["id"] as? String == "7")
        #expect(Array(response.body[length...]) == Self.floats([0.5, 0.25]))
        let outputs = try #require(header["outputs"] as? [[String: Any]])
        #expect((outputs[1]["data"] as? [Double])?.first.map(Float.init) == 0.1)
    }
}
