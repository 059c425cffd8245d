import Foundation
import Testing
import SwiftJIT

/// Caffe's pooling arithmetic (ceil-rounded sizes, the dropped last window, the padded-average
/// divisor) against ONNX Runtime over a grid of sizes, kernels, strides and pads.
@Suite("ONNX pooling matches Caffe's rules")
struct PoolingExportTests {
    /// Whether Caffe's ceil rounding leaves a last window that starts past the input (pad 0 only:
    /// with a pad, Caffe drops such a window).
    static func hasWindowOutside(_ input: Int, kernel k: Int, stride s: Int, pad p: Int) -> Bool {
        var out = (input + 2 * p - k + s - 1) / s + 1
        if p > 0, (out - 1) * s >= input + p { out -= 1 }
        return (out - 1) * s - p >= input
    }

    @Test("MAX and AVE pooling agree with a line-by-line NumPy port of Caffe's pooling_layer.cpp on 90 configurations")
    func grid() throws {
        var layers = [#"name: "pools""#]
        var configs: [[String: Any]] = []
        for h in [5, 6, 7, 8] {
            layers.append(#"layer { name: "x\#(h)" type: "Input" top: "x\#(h)" input_param { shape { dim: 2 dim: 3 dim: \#(h) dim: \#(h + 1) } } }"#)
            for k in [2, 3] { for s in [1, 2, 3] { for p in [0, 1] where p < k { for pool in ["MAX", "AVE"]
                where !Self.hasWindowOutside(h, kernel: k, stride: s, pad: p) && !Self.hasWindowOutside(h + 1, kernel: k, stride: s, pad: p) {
                let name = "\(pool.lowercased())_h\(h)_k\(k)_s\(s)_p\(p)"
                layers.append(#"layer { name: "\#(name)" type: "Pooling" bottom: "x\#(h)" top: "\#(name)" pooling_param { pool: \#(pool) kernel_size: \#(k) stride: \#(s) pad: \#(p) } }"#)
                configs.append(["input": "x\(h)", "output": name, "pool": pool, "kernel": k, "stride": s, "pad": p])
            } } } }
        }
        try ExportFixtures.withTempDir { dir in
            let net = dir.appendingPathComponent("pools.prototxt")
            try layers.joined(separator: "\n").write(to: net, atomically: true, encoding: .utf8)
            let model = try ONNXExporter().export(try ExportSource(netPath: net.path, weightsPath: nil))
            let path = dir.appendingPathComponent("pools.onnx").path
            try model.write(to: path)
            // All three average lowerings occur in the grid.
            let averages = model.proto.graph.node.filter { $0.opType == "AveragePool" }
            let includePad = averages.map { $0.attribute.first { $0.name == "count_include_pad" }?.i }
            #expect(includePad.contains(1) && includePad.contains(0))
            #expect(model.proto.graph.node.contains { $0.opType == "Pad" })
            let configPath = dir.appendingPathComponent("configs.json")
            try JSONSerialization.data(withJSONObject: configs).write(to: configPath)
            let report = try ExportFixtures.pythonJSON(PythonScripts.poolingReference, [path, configPath.path])
            let pools = report["pools"] as? [[String: Any]] ?? []
            #expect(pools.count == configs.count && configs.count == 90)
            for entry in pools {
                #expect(entry["shape"] as? [Int] == entry["expected"] as? [Int], "\(entry)")
                #expect((entry["max_abs"] as? Double ?? 1) < 1e-6, "\(entry)")
            }
        }
    }

    @Test("a ceil-rounded window lying wholly outside the input (pad 0, stride > kernel) is refused: Caffe outputs -FLT_MAX or NaN there")
    func windowOutside() throws {
        #expect(Self.hasWindowOutside(6, kernel: 2, stride: 3, pad: 0))
        try ExportFixtures.withTempDir { dir in
            let net = dir.appendingPathComponent("pool.prototxt")
            try """
                layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 1 dim: 6 dim: 6 } } }
                layer { name: "pool" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: MAX kernel_size: 2 stride: 3 } }
                """.write(to: net, atomically: true, encoding: .utf8)
            #expect {
                _ = try ONNXExporter().export(try ExportSource(netPath: net.path, weightsPath: nil))
            } throws: { error in
                (error as? Diagnostic)?.headline == "\(net.path):2:1: layer 'pool': cannot export this Pooling layer to ONNX: Caffe's ceil rounding gives it a last window lying wholly outside the input along axis 2 (input 6, kernel 2, stride 3, pad 0), where Caffe outputs -FLT_MAX (MAX) or NaN (AVE)"
            }
        }
    }
}
