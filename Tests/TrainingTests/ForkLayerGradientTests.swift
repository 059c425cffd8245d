import CaffeFormat
import Codegen
import Foundation
import Graph
import NumPy
import Testing

/// Backward passes added for issue 14, checked by finite differences (`GradientCheck`) on cases
/// this test writes in the golden layout: N-D pooling (MAX and AVE over every spatial axis, with
/// padding and overlapping windows) and Dropout with `scale_train: false` at TEST.
@Suite("fork layers' gradients by finite differences")
struct ForkLayerGradientTests {
    static func values(_ count: Int, seed: UInt64) -> [Float] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(state >> 40) / Float(1 << 24) * 4 - 2
        }
    }

    /// Writes a one-input case (`x` of `shape`, seed on `y` of `outputShape`) and checks it.
    static func check(_ name: String, net: String, shape: [Int], outputShape: [Int]) throws -> GradientCheck {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-gradcheck-\(name)-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try net.write(to: directory.appendingPathComponent("net.prototxt"), atomically: true, encoding: .utf8)
        let x = NDArray(shape: shape, data: values(shape.reduce(1, *), seed: 21))
        try NumPyFile.write(archive: [("x", x)], to: directory.appendingPathComponent("inputs.npz").path)
        try NumPyFile.write(archive: [("y", NDArray(shape: outputShape, data: values(outputShape.reduce(1, *), seed: 22)))],
                            to: directory.appendingPathComponent("top_diff.npz").path)
        try NumPyFile.write(archive: [("x", NDArray(shape: shape, repeating: 0))], to: directory.appendingPathComponent("grads.npz").path)
        let golden = try GoldenTrainingCase(directory: directory)
        let check = try GradientCheck.run(golden, compiler: sharedTrainingCompiler)
        print("gradient check \(name): analytic \(check.analytic) numeric \(check.numeric) |f| \(check.magnitude)")
        return check
    }

    @Test("N-D pooling backward matches central differences (5-D and 3-D blobs, pad, overlapping windows)",
          arguments: [("MAX", [2, 2, 5, 6, 7], [2, 2, 3, 4, 4]), ("AVE", [2, 2, 5, 6, 7], [2, 2, 3, 4, 4]),
                      ("MAX", [2, 3, 11], [2, 3, 6]), ("AVE", [2, 3, 11], [2, 3, 6])])
    func poolingND(_ method: String, _ shape: [Int], _ outputShape: [Int]) throws {
        let dims = shape.map { "dim: \($0)" }.joined(separator: " ")
        let net = """
            force_backward: true
            layer { name: "x" type: "Input" top: "x" input_param { shape { \(dims) } } }
            layer { name: "pool" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: \(method) kernel_size: 3 stride: 2 pad: 1 } }
            """
        let check = try Self.check("pool\(shape.count)d_\(method)", net: net, shape: shape, outputShape: outputShape)
        #expect(check.agrees(eps: 1e-3), "analytic \(check.analytic), numeric \(check.numeric)")
        #expect(abs(check.analytic) > 1e-3, "a zero gradient checks nothing")
    }

    @Test("Upsample (SegNet) backward, through the MAX pooling whose mask it reads, matches central differences")
    func upsample() throws {
        let net = """
            force_backward: true
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 2 dim: 6 dim: 7 } } }
            layer { name: "pool" type: "Pooling" bottom: "x" top: "pooled" top: "mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
            layer { name: "up" type: "Upsample" bottom: "pooled" bottom: "mask" top: "y" propagate_down: true propagate_down: false
                    upsample_param { upsample_h: 6 upsample_w: 7 } }
            """
        let check = try Self.check("upsample", net: net, shape: [2, 2, 6, 7], outputShape: [2, 2, 6, 7])
        #expect(check.agrees(eps: 1e-3), "analytic \(check.analytic), numeric \(check.numeric)")
        #expect(abs(check.analytic) > 1e-3, "a zero gradient checks nothing")
    }

    @Test("Dropout with scale_train: false passes dy · (1 − ratio) back at TEST")
    func dropoutScaleTrain() throws {
        let net = """
            force_backward: true
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 3 dim: 8 } } }
            layer { name: "drop" type: "Dropout" bottom: "x" top: "y" dropout_param { dropout_ratio: 0.25 scale_train: false } }
            """
        let check = try Self.check("dropout_scale_train", net: net, shape: [3, 8], outputShape: [3, 8])
        #expect(check.agrees(eps: 1e-3), "analytic \(check.analytic), numeric \(check.numeric)")
    }

    @Test("Dropout in TRAIN with scale_train: false keeps values unscaled (x or 0), and the default scales by 1/(1 − ratio)")
    func dropoutTrainForward() throws {
        for (field, scale) in [("scale_train: false", Float(1)), ("", Float(1 / (1 - Double(Float(0.25)))))] {
            let text = """
                layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 dim: 64 } } }
                layer { name: "drop" type: "Dropout" bottom: "x" top: "y" dropout_param { dropout_ratio: 0.25 \(field) } }
                """
            let graph = try GraphBuilder(phase: .train, insertsSplits: true).build(try CaffeFiles.parseNet(text: text))
            let net = try sharedTrainingCompiler.compileTraining(graph: graph, parameters: [:], keepingAllBlobs: true)
            let x = Self.values(256, seed: 4)
            _ = try net.run(["x": NDArray(shape: [4, 64], data: x)], backward: false)
            let y = try #require(net.blob("y"))
            let kept = zip(y.data, x).filter { $0.0 != 0 }
            #expect(kept.allSatisfy { $0.0 == $0.1 * scale }, "\(field)")
            #expect(kept.count > 128 && kept.count < 256, "about 3/4 kept: \(kept.count)")
        }
    }
}
