import Foundation
import NumPy
import Testing
@testable import Export
import SwiftJIT

/// `swiftjit export --output`: layouts, the sidecar, BatchNorm's scale factor, deconvolution's
/// input-first storage, the TensorFlow migration case, and refusing without writing anything.
@Suite("parameter export", .serialized)
struct ParameterExportTests {
    static func goldenCase(_ path: String) throws -> URL {
        try ExportFixtures.require(ExportFixtures.golden.appendingPathComponent(path))
    }

    static func source(_ folder: URL) throws -> ExportSource {
        try ExportSource(netPath: folder.appendingPathComponent("net.prototxt").path,
                         weightsPath: folder.appendingPathComponent("weights.caffemodel").path)
    }

    @Test("export --layout hwio: conv weights as kh×kw×in×out, InnerProduct as in×out, and a sidecar per key")
    func lenetHWIO() throws {
        let folder = try Self.goldenCase("nets/lenet_deploy")
        try ExportFixtures.withTempDir { dir in
            let archive = dir.appendingPathComponent("params.npz").path
            let result = try ExportFixtures.swiftjit(["export", folder.appendingPathComponent("net.prototxt").path,
                                                      "--weights", folder.appendingPathComponent("weights.caffemodel").path,
                                                      "--layout", "hwio", "--output", archive])
            #expect(result.status == 0, "\(result.err)")
            #expect(result.out.hasPrefix("wrote \(archive) (8 arrays, layout hwio) and \(dir.appendingPathComponent("params.json").path)"))
            let exported = try NumPyFile.readArchive(path: archive)
            #expect(exported.keys == ["conv1/0", "conv1/1", "conv2/0", "conv2/1", "ip1/0", "ip1/1", "ip2/0", "ip2/1"])
            let source = try Self.source(folder)
            let caffe = try source.weights.blob(of: source.graph.node(named: "conv2")!, index: 0)   // 50×20×5×5
            let hwio = try #require(exported["conv2/0"])
            #expect(hwio.shape == [5, 5, 20, 50])
            for (o, i, h, w) in [(0, 0, 0, 0), (49, 19, 4, 4), (7, 3, 1, 4), (31, 12, 4, 0)] {
                #expect(hwio.data[((h * 5 + w) * 20 + i) * 50 + o] == caffe.data[((o * 20 + i) * 5 + h) * 5 + w])
            }
            #expect(exported["ip1/0"]?.shape == [800, 500])
            #expect(exported["ip1/1"] == (try source.weights.blob(of: source.graph.node(named: "ip1")!, index: 1)))

            let sidecar = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("params.json"))) as? [String: Any]
            #expect(sidecar?["layout"] as? String == "hwio")
            let entries = sidecar?["parameters"] as? [[String: Any]] ?? []
            #expect(entries.map { $0["key"] as? String } == exported.keys)
            let conv = entries[2]
            #expect(conv["layer"] as? String == "conv2" && conv["type"] as? String == "Convolution" && conv["role"] as? String == "weights")
            #expect(conv["layout"] as? String == "hwio" && conv["shape"] as? [Int] == [5, 5, 20, 50] && conv["caffe_shape"] as? [Int] == [50, 20, 5, 5])
            #expect(entries[4]["layout"] as? String == "io" && entries[5]["layout"] as? String == "vector" && entries[5]["role"] as? String == "bias")
        }
    }

    @Test("every layout restores to the caffemodel's exact blobs", arguments: WeightLayout.allCases)
    func roundTrip(layout: WeightLayout) throws {
        for path in ["nets/lenet_deploy", "layers/deconv_s2_p1", "layers/conv_group2", "layers/ip_transpose", "layers/conv3d_5d"] {
            let source = try Self.source(try Self.goldenCase(path))
            let export = try ParameterExport(graph: source.graph, weights: source.weights, layout: layout)
            for (entry, array) in zip(export.entries, export.arrays) {
                let node = try #require(source.graph.node(named: entry.layer))
                let index = Int(entry.key.split(separator: "/").last!)!
                var restored = array
                if index == 0, let kind = ParameterExport.weightKind(node) { restored = try layout.restore(array, as: kind) }
                #expect(restored == (try source.weights.blob(of: node, index: index)), "\(path) \(entry.key) \(layout)")
            }
        }
    }

    @Test("a Deconvolution's weights (Caffe: in × out/group × kh × kw) come out as num_output × in/group × kh × kw in oihw")
    func deconvolution() throws {
        let source = try Self.source(try Self.goldenCase("layers/deconv_s2_p1"))
        let node = try #require(source.graph.nodes.first { $0.kind == .deconvolution })
        let caffe = try source.weights.blob(of: node, index: 0)
        let (inputs, outputs, k) = (caffe.shape[0], caffe.shape[1], caffe.shape[2])
        #expect(node.layer.convolutionParam.group == 1)
        let oihw = try #require(try ParameterExport(graph: source.graph, weights: source.weights, layout: .oihw).arrays.first)
        #expect(oihw.shape == [outputs, inputs, k, caffe.shape[3]])
        let hwio = try #require(try ParameterExport(graph: source.graph, weights: source.weights, layout: .hwio).arrays.first)
        #expect(hwio.shape == [k, caffe.shape[3], inputs, outputs])
        for i in 0..<inputs { for o in 0..<outputs {
            #expect(oihw.data[(o * inputs + i) * k * k + 1] == caffe.data[(i * outputs + o) * k * k + 1])
            #expect(hwio.data[(1 * inputs + i) * outputs + o] == caffe.data[(i * outputs + o) * k * k + 1])
        } }
        #expect(try ParameterExport(graph: source.graph, weights: source.weights, layout: .iohw).arrays.first == caffe)
    }

    @Test("BatchNorm mean and variance are divided by the stored scale factor; a factor of 0 gives zeros, as in Caffe",
          arguments: ["layers/bn_test_eps_factor0p5", "layers/bn_test_factor0", "layers/bn_test_global"])
    func batchNorm(path: String) throws {
        let source = try Self.source(try Self.goldenCase(path))
        let node = try #require(source.graph.nodes.first { $0.kind == .batchNorm })
        let raw = try source.weights.blobs(of: node)
        let factor = raw[2].data[0]
        let export = try ParameterExport(graph: source.graph, weights: source.weights, layout: .oihw)
        #expect(export.entries.map(\.role) == ["mean", "variance", "scale factor"])
        for i in 0..<2 {
            #expect(export.arrays[i].data == raw[i].data.map { factor == 0 ? 0 : $0 * (1 / factor) })
            #expect(export.entries[i].dividedByScaleFactor == factor)
        }
        #expect(export.arrays[2].data == [1])
        if path.hasSuffix("factor0") { #expect(factor == 0 && export.arrays[0].data.allSatisfy { $0 == 0 }) }
        if path.hasSuffix("factor0p5") { #expect(factor != 1 && factor != 0) }
    }

    @Test("the migration case: a 96×1×5×5 pad-2 convolution exported as HWIO and run as NHWC in NumPy equals the NCHW convolution and swiftjit run")
    func migration() throws {
        try ExportFixtures.withTempDir { dir in
            let net = dir.appendingPathComponent("conv.prototxt")
            try """
                name: "migration"
                layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 1 dim: 9 dim: 13 } } }
                layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
                  convolution_param { num_output: 96 kernel_size: 5 pad: 2 } }
                """.write(to: net, atomically: true, encoding: .utf8)
            let weights = dir.appendingPathComponent("conv.caffemodel")
            try CaffeFiles.write(try ExportFixtures.randomWeights(for: net, seed: 3), to: weights.path)
            var generator = SplitMix64(seed: 4)
            let x = NDArray(shape: [2, 1, 9, 13], data: (0..<(2 * 9 * 13)).map { _ in Float.random(in: -1..<1, using: &generator) })
            let input = dir.appendingPathComponent("x.npy")
            try NumPyFile.write(x, to: input.path)
            let paths = (hwio: dir.appendingPathComponent("hwio.npz").path, oihw: dir.appendingPathComponent("oihw.npz").path,
                         onnx: dir.appendingPathComponent("conv.onnx").path)
            for (layout, archive) in [("hwio", paths.hwio), ("oihw", paths.oihw)] {
                let result = try ExportFixtures.swiftjit(["export", net.path, "--weights", weights.path, "--layout", layout, "--output", archive, "--onnx", paths.onnx])
                #expect(result.status == 0, "\(result.err)")
            }
            let ours = dir.appendingPathComponent("run.npz").path
            let run = try ExportFixtures.swiftjit(["run", net.path, "--weights", weights.path, "--input", "data=\(input.path)", "--output", ours])
            #expect(run.status == 0, "\(run.err)")
            let report = try ExportFixtures.pythonJSON(PythonScripts.migration, [paths.hwio, paths.oihw, "conv1/0", input.path, paths.onnx, ours])
            #expect(report["hwio_shape"] as? [Int] == [5, 5, 1, 96])
            #expect(report["output_shape"] as? [Int] == [2, 96, 9, 13])
            #expect((report["nhwc_vs_nchw"] as? Double ?? 1) < 1e-12, "\(report)")
            #expect((report["onnx_vs_nchw"] as? Double ?? 1) < 1e-5, "\(report)")
            #expect((report["swiftjit_vs_nchw"] as? Double ?? 1) < 1e-5, "\(report)")
            #expect((report["nhwc_vs_swiftjit"] as? Double ?? 1) < 1e-5, "\(report)")
            print("migration case: NHWC/HWIO vs NCHW/OIHW \(report["nhwc_vs_nchw"] ?? ""), vs swiftjit run \(report["nhwc_vs_swiftjit"] ?? ""), ONNX vs NCHW \(report["onnx_vs_nchw"] ?? "")")
        }
    }

    @Test("an unsupported layer stops the export with its name and type, and no file is written")
    func refusal() throws {
        try ExportFixtures.withTempDir { dir in
            let net = dir.appendingPathComponent("argmax.prototxt")
            try """
                name: "argmax"
                layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
                layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 } }
                layer { name: "best" type: "ArgMax" bottom: "conv1" top: "best" }
                """.write(to: net, atomically: true, encoding: .utf8)
            let weights = dir.appendingPathComponent("w.caffemodel")
            try CaffeFiles.write(try ExportFixtures.randomWeights(for: net, seed: 1), to: weights.path)
            let result = try ExportFixtures.swiftjit(["export", net.path, "--weights", weights.path, "--output", dir.appendingPathComponent("p.npz").path,
                                                      "--onnx", dir.appendingPathComponent("net.onnx").path])
            #expect(result.status == 1)
            #expect(result.err == """
                error: \(net.path):4:1: layer 'best': ONNX export does not support layer type 'ArgMax'
                  hint: swiftjit has no ONNX lowering that reproduces Caffe's ArgMax; nothing was written

                """)
            let left = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
            #expect(left == ["argmax.prototxt", "w.caffemodel"])

            let noWeights = try ExportFixtures.swiftjit(["export", net.path, "--output", dir.appendingPathComponent("p.npz").path])
            #expect(noWeights.status == 1)
            #expect(noWeights.err.hasPrefix("error: layer 'conv1': this Convolution layer has parameters, and no weights were given\n  hint: pass the trained .caffemodel with --weights"))
        }
    }
}
