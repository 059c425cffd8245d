import Foundation
import Testing
import CaffeFormat
@testable import Graph

/// Every .caffemodel Caffe wrote under ../shared/golden reads, writes back and reads again to
/// identical values, and loads into its net with every parameter initialized.
@Suite("caffemodel round trips")
struct CaffemodelRoundTripTests {
    @Test("read → write → read gives identical blobs, for every golden caffemodel")
    func roundTrip() throws {
        let files = try SharedFixtures.files(under: SharedFixtures.golden, suffixes: [".caffemodel"])
        #expect(files.count >= 80)
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-roundtrip-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        for file in files {
            let first = try CaffeFiles.loadWeights(path: file.path)
            let copy = folder.appendingPathComponent("copy.caffemodel").path
            try CaffeFiles.write(first, to: copy)
            let second = try CaffeFiles.loadWeights(path: copy)
            #expect(first == second, "\(file.path)")
            #expect(first.layer.flatMap(\.blobs).map(\.data) == second.layer.flatMap(\.blobs).map(\.data))
        }
    }

    @Test("every golden net's weights initialize all of its parameters")
    func weightsBind() throws {
        for folder in try GoldenShapeTests.caseFolders() {
            let weights = folder.appendingPathComponent("weights.caffemodel")
            guard FileManager.default.fileExists(atPath: weights.path) else { continue }
            let info = try SharedFixtures.json(folder.appendingPathComponent("case.json"))
            let phase: Caffe_Phase = (info["phase"] as? String) == "TRAIN" ? .train : .test
            let graph = try GraphBuilder(phase: phase).build(try CaffeFiles.loadNet(path: folder.appendingPathComponent("net.prototxt").path))
            let report = try WeightBinding.check(graph, weights: try CaffeFiles.loadWeights(path: weights.path), file: weights.path)
            #expect(report.notInitialized.isEmpty, "\(folder.lastPathComponent): \(report.notInitialized)")
        }
    }
}
