import CaffeFormat
import Foundation
import NumPy
import Testing

/// SSD's Normalize in training (issue 14: SSD300's `conv4_3_norm` in its published train net):
/// the backward of x and of the learnable scale against central differences, per position
/// (SSD's setting) and across the whole image with one shared scale. The scales are equal (as
/// SSD's `scale_filler { value: 20 }` starts them), where the fork's backward is the exact gradient.
@Suite("Normalize gradients by finite differences")
struct NormalizeGradientTests {
    @Test("Normalize backward (x and scale) matches central differences", arguments: [
        ("across_spatial: false channel_shared: false", 4, Float(20), "per_position"),
        ("across_spatial: true channel_shared: true", 1, Float(3), "across_shared"),
        ("across_spatial: false channel_shared: true eps: 0.001", 1, Float(5), "per_position_shared"),
    ])
    func normalize(_ parameters: String, _ scales: Int, _ value: Float, _ name: String) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-gradcheck-normalize-\(name)-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let shape = [2, 4, 3, 5]
        try """
            force_backward: true
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 dim: 3 dim: 5 } } }
            layer { name: "norm" type: "Normalize" bottom: "x" top: "y" norm_param { \(parameters) } }
            """.write(to: directory.appendingPathComponent("net.prototxt"), atomically: true, encoding: .utf8)
        var weights = Caffe_NetParameter()
        var layer = Caffe_LayerParameter()
        (layer.name, layer.type) = ("norm", "Normalize")
        var blob = Caffe_BlobProto()
        blob.shape.dim = [Int64(scales)]
        blob.data = [Float](repeating: value, count: scales)
        layer.blobs = [blob]
        weights.layer = [layer]
        try weights.serializedData().write(to: directory.appendingPathComponent("weights.caffemodel"))
        let count = shape.reduce(1, *)
        try NumPyFile.write(archive: [("x", NDArray(shape: shape, data: ForkLayerGradientTests.values(count, seed: 31)))],
                            to: directory.appendingPathComponent("inputs.npz").path)
        try NumPyFile.write(archive: [("y", NDArray(shape: shape, data: ForkLayerGradientTests.values(count, seed: 32)))],
                            to: directory.appendingPathComponent("top_diff.npz").path)
        try NumPyFile.write(archive: [("x", NDArray(shape: shape, repeating: 0))], to: directory.appendingPathComponent("grads.npz").path)
        let check = try GradientCheck.run(try GoldenTrainingCase(directory: directory), compiler: sharedTrainingCompiler)
        print("gradient check normalize \(name): analytic \(check.analytic) numeric \(check.numeric) |f| \(check.magnitude)")
        #expect(check.agrees(eps: 1e-3), "analytic \(check.analytic), numeric \(check.numeric)")
        #expect(abs(check.analytic) > 1e-3, "a zero gradient checks nothing")
    }
}
