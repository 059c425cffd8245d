import Foundation
import Testing
import CaffeFormat
@testable import Graph

/// Every real net in ../shared/zoo, in all three dialects, builds in both phases — or fails with the
/// clear unsupported-layer error when it uses a layer SwiftJIT does not run (Python layers).
@Suite("the zoo compiles")
struct ZooTests {
    static func netFiles() throws -> [URL] {
        try SharedFixtures.files(under: SharedFixtures.zoo, suffixes: [".prototxt", ".pt"]).filter { !isSolver($0) }
    }

    static func isSolver(_ url: URL) -> Bool {
        let name = url.lastPathComponent
        return name.contains("solver")
    }

    @Test("every zoo net builds for TRAIN and TEST, or names its unsupported layer")
    func everyNetBuilds() throws {
        let files = try Self.netFiles()
        #expect(files.count >= 75)
        var built = 0, unsupported = 0
        for file in files {
            let definition: NetDefinition
            do {
                definition = try CaffeFiles.loadNet(path: file.path)
            } catch {
                Issue.record("\(file.path): does not load: \(error)")
                continue
            }
            for phase in [Caffe_Phase.train, .test] {
                do {
                    let graph = try Self.build(definition, phase: phase)
                    #expect(!graph.nodes.isEmpty, "\(file.lastPathComponent) \(phase.caffeName) has no layers")
                    built += 1
                } catch let diagnostic as Diagnostic {
                    if Self.testOnly(diagnostic, phase: phase) {
                        continue
                    } else if diagnostic.message.hasPrefix("layer type 'Python' is not supported") {
                        #expect(diagnostic.layer != nil && diagnostic.location != nil, "\(diagnostic)")
                        unsupported += 1
                    } else {
                        Issue.record("\(file.path) \(phase.caffeName): \(diagnostic)")
                    }
                }
            }
        }
        #expect(built >= 130)
        #expect(unsupported > 0)
    }

    /// Builds with the stages a solver's train_state/test_state would supply.
    static func build(_ definition: NetDefinition, phase: Caffe_Phase) throws -> Graph {
        try GraphBuilder(phase: phase, enablesMissingStages: true).build(definition)
    }

    /// Deploy nets whose layers exist only in TEST (Caffe cannot build them for TRAIN either).
    static func testOnly(_ diagnostic: Diagnostic, phase: Caffe_Phase) -> Bool {
        phase == .train && (diagnostic.hint?.contains("is only in phase TEST") ?? false)
    }

    @Test("every zoo solver reads, with legacy solver_type upgraded to type")
    func everySolverReads() throws {
        let files = try SharedFixtures.files(under: SharedFixtures.zoo, suffixes: [".prototxt", ".pt"]).filter(Self.isSolver)
        #expect(files.count >= 40)
        for file in files {
            do {
                let solver = try CaffeFiles.loadSolver(path: file.path)
                #expect(!solver.hasSolverType, "\(file.lastPathComponent) keeps solver_type")
            } catch {
                Issue.record("\(file.path): \(error)")
            }
        }
    }

    @Test("V1 and V2 GoogLeNet give the same shapes")
    func dialectsAgree() throws {
        let v2 = try GraphBuilder().build(try CaffeFiles.loadNet(path: SharedFixtures.zoo.appendingPathComponent("bvlc_googlenet/deploy.prototxt").path))
        let v1 = try GraphBuilder().build(try CaffeFiles.loadNet(path: SharedFixtures.zoo.appendingPathComponent("bvlc_legacy_v1/bvlc_googlenet/deploy.prototxt").path))
        #expect(v1.value(named: "prob")?.shape == TensorShape([10, 1000]))
        for value in v2.values where value.producer != nil {
            #expect(v1.value(named: value.name)?.shape == v2.value(named: value.name)?.shape, "\(value.name)")
        }
        #expect(v1.parameterCount == v2.parameterCount)
    }

    @Test("well-known nets: output shapes and parameter counts")
    func knownNets() throws {
        func graph(_ path: String, _ inputs: [String: TensorShape] = [:]) throws -> Graph {
            try GraphBuilder(inputShapes: inputs).build(try CaffeFiles.loadNet(path: SharedFixtures.zoo.appendingPathComponent(path).path))
        }
        let alexnet = try graph("bvlc_alexnet/deploy.prototxt")
        #expect(alexnet.value(named: "pool5")?.shape == TensorShape([10, 256, 6, 6]))
        #expect(alexnet.parameterCount == 60_965_224)
        let resnet = try graph("resnet/ResNet-50-deploy.prototxt", ["data": TensorShape([1, 3, 224, 224])])
        #expect(resnet.value(named: "prob")?.shape == TensorShape([1, 1000]))
        #expect(resnet.value(named: "pool1")?.shape == TensorShape([1, 64, 56, 56]))
        let squeeze = try graph("squeezenet_v1.1/deploy.prototxt")
        #expect(squeeze.value(named: "pool10")?.shape == TensorShape([10, 1000, 1, 1]))
        #expect(squeeze.parameterCount == 1_235_496)
        let vgg = try graph("faster_rcnn/VGG16/fast_rcnn/test.prototxt")
        #expect(vgg.value(named: "pool5")?.shape == TensorShape([1, 512, 7, 7]))
        #expect(vgg.node(named: "fc6")?.parameters.first?.shape == TensorShape([4096, 25088]))
    }
}
