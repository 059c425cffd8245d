import DataPipeline
import Foundation
/// Loads a net (and optionally weights) and builds its graph for one phase: the work behind
/// `swiftjit compile`, usable from code.
///
///     let summary = try NetInspection(netPath: "deploy.prototxt").summarize()
///     print(summary.table)
public struct NetInspection: Sendable {
    public var netPath: String
    public var weightsPath: String?
    public var phase: Caffe_Phase
    public var stages: [String]?
    public var level: Int32?
    public var inputShapes: [String: TensorShape]

    public init(netPath: String, weightsPath: String? = nil, phase: Caffe_Phase = .test,
                stages: [String]? = nil, level: Int32? = nil, inputShapes: [String: TensorShape] = [:]) {
        self.netPath = netPath
        self.weightsPath = weightsPath
        self.phase = phase
        self.stages = stages
        self.level = level
        self.inputShapes = inputShapes
    }

    /// The net definition, its graph, and what the weights initialize.
    public func build() throws -> (definition: NetDefinition, graph: Graph, weights: WeightBindingReport?) {
        let definition = try CaffeFiles.loadNet(path: netPath)
        let (dataShapes, dataNotes) = lmdbShapes(definition)
        let builder = GraphBuilder(phase: phase, level: level, stages: stages,
                                   inputShapes: dataShapes.merging(inputShapes) { $1 },
                                   enablesMissingStages: stages == nil)
        var graph = try builder.build(definition)
        graph.notes += dataNotes
        guard let weightsPath else { return (definition, graph, nil) }
        let weights = try CaffeFiles.loadWeights(path: weightsPath)
        let report = try WeightBinding.check(graph, weights: weights, file: weightsPath)
        return (definition, graph, report)
    }

    /// The file a data layer reads (its LMDB, image list, window file or list of .h5 files), or nil
    /// for layers that read none.
    static func sourceOfDataLayer(_ layer: Caffe_LayerParameter) -> String? {
        switch layer.type {
        case "Data": return layer.dataParam.source
        case "ImageData": return layer.imageDataParam.source
        case "WindowData": return layer.windowDataParam.source
        case "HDF5Data": return layer.hdf5DataParam.source
        default: return nil
        }
    }

    /// Data layers' top shapes from the first record of their LMDBs (the first image of an
    /// ImageData list, a WindowData crop, the first .h5 file of an HDF5Data list), when those can be opened
    /// (relative sources resolve against the working directory, as in Caffe, then the net's folder);
    /// otherwise a note says why the extents stay `?`.
    private func lmdbShapes(_ definition: NetDefinition) -> ([String: TensorShape], [String]) {
        var shapes: [String: TensorShape] = [:]
        var notes: [String] = []
        let netFolder = URL(fileURLWithPath: netPath).deletingLastPathComponent().path
        for layer in definition.net.layer where Self.sourceOfDataLayer(layer) != nil && NetFilter(net: definition.net, phase: phase).includes(layer) {
            guard !layer.top.contains(where: { inputShapes[$0] != nil }), let source = Self.sourceOfDataLayer(layer) else { continue }
            let candidates = [FileManager.default.currentDirectoryPath, netFolder]
            guard let base = candidates.first(where: { FileManager.default.fileExists(atPath: URL(fileURLWithPath: $0).appendingPathComponent(source).path) || source.hasPrefix("/") }) else {
                if layer.type == "Data" {
                    notes.append("Data layer '\(layer.name)': its LMDB '\(source)' is not on this machine, so its image size is '?' (give it with --input \(layer.top.first ?? "data")=N,C,H,W)")
                } else {
                    notes.append("\(layer.type) layer '\(layer.name)': its source '\(source)' is not on this machine, so its shapes may be '?' (give them with --input)")
                }
                continue
            }
            do {
                if layer.type == "HDF5Data" {
                    let reader = try HDF5DataReader(layer: layer, seed: 0, baseDirectory: base)
                    for (top, shape) in zip(layer.top, reader.batchShapes) { shapes[top] = TensorShape(shape) }
                    continue
                }
                let feed = try DataLayerFeed(layer: layer, phase: phase, baseDirectory: base, prefetch: 0)
                defer { feed.close() }
                if let top = layer.top.first { shapes[top] = TensorShape(feed.batchShape) }
                if layer.top.count > 1 { shapes[layer.top[1]] = TensorShape([feed.batchShape[0]]) }
            } catch {
                notes.append("\(layer.type) layer '\(layer.name)': \((error as? Diagnostic)?.message ?? "\(error)")")
            }
        }
        return (shapes, notes)
    }

    public func summarize() throws -> NetSummary {
        let (definition, graph, report) = try build()
        return NetSummary(graph: graph, weights: report.map { (weightsPath ?? "", $0) }, notes: definition.upgradeNotes + graph.notes)
    }
}
