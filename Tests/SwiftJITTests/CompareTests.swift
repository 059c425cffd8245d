import Foundation
import Testing
import SwiftJIT

/// `swiftjit run --compare`: the porting tool that finds where two runs of a net part ways.
@Suite("run --compare")
struct CompareTests {
    static let lenet = CompileCommandTests.shared.appendingPathComponent("golden/nets/lenet_deploy")

    @Test("perturbing one layer's weights makes that layer's blob the first divergence")
    func findsPerturbedLayer() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-compare-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        var weights = try CaffeFiles.loadWeights(path: Self.lenet.appendingPathComponent("weights.caffemodel").path)
        let index = try #require(weights.layer.firstIndex { $0.name == "conv2" })
        weights.layer[index].blobs[0].data[7] += 0.5
        let perturbed = folder.appendingPathComponent("perturbed.caffemodel").path
        try CaffeFiles.write(weights, to: perturbed)

        let net = Self.lenet.appendingPathComponent("net.prototxt").path
        let caffe = Self.lenet.appendingPathComponent("outputs.npz").path
        let inputs = Self.lenet.appendingPathComponent("inputs.npz").path
        let same = try CompileCommandTests.run(["run", net, "--weights", Self.lenet.appendingPathComponent("weights.caffemodel").path,
                                                "--input", inputs, "-o", folder.appendingPathComponent("a.npz").path, "--blobs", "all", "--compare", caffe])
        #expect(same.status == 0, "\(same.err)")
        #expect(same.out.contains("all 8 blobs agree with"))

        let different = try CompileCommandTests.run(["run", net, "--weights", perturbed, "--input", inputs,
                                                     "-o", folder.appendingPathComponent("b.npz").path, "--blobs", "all", "--compare", caffe])
        #expect(different.status == 1)
        #expect(different.out.contains("first blob diverging from \(caffe) beyond rtol 0.0001: 'conv2'"))
        let conv1 = different.out.split(separator: "\n").first { $0.hasPrefix("conv1 ") }
        #expect(conv1?.contains("first divergence") == false)
    }
}
