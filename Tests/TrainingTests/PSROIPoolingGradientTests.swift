import CaffeFormat
import Codegen
import Foundation
import Graph
import NumPy
import Testing

/// R-FCN's PSROIPooling backward (caffe-rfcn's `PSROIPoolingBackwardAtomic`: each bin's top diff
/// spread evenly over the bin's features) checked by central differences of the forward, with
/// ROIs that overlap, reach past the map, and shrink below one cell.
@Suite("PSROIPooling gradient by finite differences")
struct PSROIPoolingGradientTests {
    @Test("PSROIPooling backward matches central differences (overlapping, clipped and tiny ROIs, two images)")
    func psroiPooling() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-gradcheck-psroi-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try """
            force_backward: true
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 18 dim: 7 dim: 8 } } }
            layer { name: "rois" type: "Input" top: "rois" input_param { shape { dim: 4 dim: 5 } } }
            layer { name: "psroi" type: "PSROIPooling" bottom: "x" bottom: "rois" top: "y" propagate_down: true propagate_down: false
                    psroi_pooling_param { spatial_scale: 0.5 output_dim: 2 group_size: 3 } }
            """.write(to: directory.appendingPathComponent("net.prototxt"), atomically: true, encoding: .utf8)
        let shape = [2, 18, 7, 8]
        let x = NDArray(shape: shape, data: ForkLayerGradientTests.values(shape.reduce(1, *), seed: 31))
        let rois = NDArray(shape: [4, 5], data: [0, 1, 2, 11, 9,
                                                 1, 3.4, 0.6, 15.5, 13.2,
                                                 0, 6, 4, 20, 30,
                                                 1, 7, 7, 7.2, 7.4])
        try NumPyFile.write(archive: [("rois", rois), ("x", x)], to: directory.appendingPathComponent("inputs.npz").path)
        try NumPyFile.write(archive: [("y", NDArray(shape: [4, 2, 3, 3], data: ForkLayerGradientTests.values(72, seed: 32)))],
                            to: directory.appendingPathComponent("top_diff.npz").path)
        try NumPyFile.write(archive: [("x", NDArray(shape: shape, repeating: 0))], to: directory.appendingPathComponent("grads.npz").path)
        let check = try GradientCheck.run(try GoldenTrainingCase(directory: directory), compiler: sharedTrainingCompiler)
        #expect(check.agrees(eps: 1e-3), "analytic \(check.analytic), numeric \(check.numeric)")
        #expect(abs(check.analytic) > 1e-3, "a zero gradient checks nothing")
    }
}
