import CaffeFormat
import Foundation
import Testing
import SwiftJIT

/// The inference passes change how a net computes, never what: outputs with BatchNorm/Scale folded,
/// identities removed, ReLUs and residual sums fused into their producers equal the unoptimized net's.
@Suite("inference passes keep outputs")
struct PassesNumericsTests {
    static let zoo = CompileCommandTests.shared.appendingPathComponent("zoo")

    /// MSRA weights where the prototxt names no filler (Caffe's 0 would make every blob 0 and the
    /// comparison vacuous), inputs scaled so the softmax is not saturated (checked).
    func compare(_ path: String, input: [Int], removed expected: Int, scale: Float = 1) throws {
        var msra = Caffe_FillerParameter()
        msra.type = "msra"
        let net = try Net(prototxt: Self.zoo.appendingPathComponent(path).path, inputShapes: ["data": input], seed: 3,
                          unfilledWeights: Filler(msra))
        var generator = SeededGenerator(seed: 11, stream: "x")
        let x = NDArray(shape: input, data: (0..<input.reduce(1, *)).map { _ in scale * generator.uniform(-1, 1) })
        let optimized = try InferencePasses.run(net.graph, parameters: net.params)
        #expect(net.graph.nodes.count - optimized.graph.nodes.count == expected, "\(optimized.report)")
        let fused = try net.forward(["data": x])
        let reference = try net.forward(["data": x], blobs: .named(net.outputs))
        for name in net.outputs {
            let a = fused[name]!.data, b = reference[name]!.data
            let scale = max(b.map(abs).max()!, 1e-6)
            let error = zip(a, b).map { abs($0 - $1) }.max()! / scale
            #expect(error < 1e-4, "\(path): '\(name)' differs by \(error) of its max")
            #expect(b.max()! < 0.5 && b.max()! > b.min()!, "\(path): '\(name)' is saturated or constant; the comparison would prove little")
        }
    }

    @Test("MobileNet: 27 BatchNorm+Scale pairs fold into their (depthwise) convolutions and 27 ReLUs into their epilogues")
    func mobilenet() throws {
        try compare("mobilenet/mobilenet_deploy.prototxt", input: [1, 3, 224, 224], removed: 54 + 27)
    }

    @Test("ResNet-50: 53 BatchNorm+Scale pairs fold into convolutions, 49 ReLUs into convolutions and Eltwise sums, 16 sums into convolutions")
    func resnet50() throws {
        try compare("resnet/ResNet-50-deploy.prototxt", input: [1, 3, 224, 224], removed: 106 + 49 + 16, scale: 1e-4)
    }

    @Test("ResNet-50 at batch 2: the residual sums accumulate onto the shortcut image by image")
    func resnet50Batch() throws {
        try compare("resnet/ResNet-50-deploy.prototxt", input: [2, 3, 224, 224], removed: 106 + 49 + 16, scale: 1e-4)
    }

    @Test("GoogLeNet at batch 3: ReLUs fused, Dropout removed, convolutions run image by image on each thread")
    func googlenetBatch() throws {
        try compare("bvlc_googlenet/deploy.prototxt", input: [3, 3, 224, 224], removed: 57 + 1)
    }

    @Test("CaffeNet: Dropout is removed at inference and 7 ReLUs fuse into convolutions and InnerProducts")
    func caffenet() throws {
        try compare("bvlc_reference_caffenet/deploy.prototxt", input: [1, 3, 227, 227], removed: 2 + 7)
    }
}
