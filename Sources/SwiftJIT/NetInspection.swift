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

    /// Data layers' top shapes from their sources (LMDB, image list, window file, .h5 list), by
    /// `DataSources`' rule; a note for each source that cannot be read, whose extents stay `?`.
    private func lmdbShapes(_ definition: NetDefinition) -> ([String: TensorShape], [String]) {
        let found = try? DataSources.shapes(definition, phase: phase, level: level ?? definition.net.state.level,
                                            stages: stages ?? definition.net.state.stage, given: inputShapes, required: false)
        return found ?? ([:], [])
    }

    public func summarize() throws -> NetSummary {
        let (definition, graph, report) = try build()
        return NetSummary(graph: graph, weights: report.map { (weightsPath ?? "", $0) }, notes: definition.upgradeNotes + graph.notes)
    }
}
