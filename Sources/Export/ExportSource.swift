import CaffeFormat
import Graph

/// A net and its trained weights, loaded once for the exporters (`ParameterExport`, `ONNXExporter`).
///
/// The graph is built for inference (`TEST` phase unless asked otherwise) without Caffe's automatic
/// Split layers: exporters want the net as the user wrote it, and a Split carries no computation.
///
///     let source = try ExportSource(netPath: "deploy.prototxt", weightsPath: "net.caffemodel")
public struct ExportSource: Sendable {
    public var netPath: String
    /// nil for a net without parameters (or to be told which layers need them).
    public var weightsPath: String?
    public var graph: Graph
    public var weights: TrainedWeights

    /// `inputShapes` overrides the prototxt's input shapes (the ONNX batch axis stays symbolic).
    public init(netPath: String, weightsPath: String?, phase: Caffe_Phase = .test, inputShapes: [String: TensorShape] = [:]) throws {
        self.netPath = netPath
        self.weightsPath = weightsPath
        let definition = try CaffeFiles.loadNet(path: netPath)
        graph = try GraphBuilder(phase: phase, inputShapes: inputShapes, insertsSplits: false, enablesMissingStages: true).build(definition)
        if let weightsPath {
            weights = try TrainedWeights(graph: graph, weights: try CaffeFiles.loadWeights(path: weightsPath), file: weightsPath)
        } else {
            weights = try TrainedWeights(graph: graph, weights: Caffe_NetParameter(), file: nil)
        }
    }
}
