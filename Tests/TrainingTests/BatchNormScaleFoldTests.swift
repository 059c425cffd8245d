import CaffeFormat
import Codegen
import Foundation
import Graph
import NumPy
import Testing

/// ResNet's BatchNorm → Scale pairs run backward as one: the Scale's pass gives the per-channel
/// sums both layers need and the BatchNorm's input diff reads the Scale's top diff directly
/// (`batchNormBeforeScale`). A net compiled with every diff kept (where the fold is off, since
/// callers may read the Scale's input diff) is the reference: the parameter diffs upstream and
/// of the Scale itself must agree, with and without a bias, at batch 1 (where Caffe's Scale
/// overwrites its diff) and batch 4, over two iterations (diffs accumulate).
@Suite("BatchNorm and Scale backward folded")
struct BatchNormScaleFoldTests {
    static func net(batch: Int, bias: Bool) -> String {
        """
        force_backward: true
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: \(batch) dim: 3 dim: 9 dim: 9 } } }
        layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 16 kernel_size: 3 bias_term: false } }
        layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
        layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: \(bias) } }
        layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
        layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" convolution_param { num_output: 8 kernel_size: 3 } }
        """
    }

    static func values(_ shape: [Int], salt: Int) -> NDArray {
        NDArray(shape: shape, data: (0..<shape.reduce(1, *)).map { Float(sin(Double($0 * 7 + salt)) * 0.5 + (salt == 5 ? 1 : 0)) })
    }

    @Test("the folded pair gives the separate layers' parameter diffs", arguments: [(1, true), (4, true), (4, false)])
    func folded(_ setup: (batch: Int, bias: Bool)) throws {
        let graph = try GraphBuilder(phase: .train, insertsSplits: true).build(CaffeFiles.parseNet(text: Self.net(batch: setup.batch, bias: setup.bias)))
        var parameters = ["conv1": [Self.values([16, 3, 3, 3], salt: 1)],
                          "bn1": [NDArray(shape: [16], data: Array(repeating: 0, count: 16)), NDArray(shape: [16], data: Array(repeating: 1, count: 16)),
                                  NDArray(shape: [1], data: [1])],
                          "scale1": [Self.values([16], salt: 5)],
                          "conv2": [Self.values([8, 16, 3, 3], salt: 3), Self.values([8], salt: 4)]]
        if setup.bias { parameters["scale1"]!.append(Self.values([16], salt: 6)) }
        func run(keepingAllBlobs: Bool) throws -> (diffs: [String: [[Float]]], buffers: [String]) {
            let net = try Compiler(threads: 2).compileTraining(graph: graph, parameters: parameters, keepingAllBlobs: keepingAllBlobs)
            net.zeroParameterDiffs()
            for round in 0..<2 {
                net.setTopDiffs(["conv2": Self.values([setup.batch, 8, 5, 5], salt: 10 + round)])
                _ = try net.run(["data": Self.values([setup.batch, 3, 9, 9], salt: 20 + round)], backward: true)
            }
            return (net.parameterDiffs().mapValues { $0.map(\.data) }, net.program.program.buffers.map(\.name))
        }
        let fast = try run(keepingAllBlobs: false), reference = try run(keepingAllBlobs: true)
        #expect(fast.buffers.contains("scale1/gradient sums") && !fast.buffers.contains("bn1/gradient sums"), "the pair was folded")
        #expect(!reference.buffers.contains("scale1/gradient sums"), "the reference ran the layers apart")
        for layer in ["conv1", "scale1", "conv2"] {
            let (a, b) = (try #require(fast.diffs[layer]), try #require(reference.diffs[layer]))
            #expect(a.count == b.count)
            for (k, (x, y)) in zip(a, b).enumerated() {
                let scale = max(1e-6, y.map(abs).max() ?? 0)
                let worst = zip(x, y).map { abs($0 - $1) }.max() ?? 0
                #expect(worst <= 1e-4 * scale, "\(layer) blob \(k): worst difference \(worst) of max \(scale)")
            }
        }
    }
}
