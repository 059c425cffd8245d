/// What the `Trainer` needs from a net compiled for training (Codegen's `TrainingNet` provides it).
///
/// One `run` is one forward pass (and backward when asked) over one batch; parameter gradients
/// accumulate across runs until `zeroParameterDiffs`, which is how Caffe's `iter_size` works.
public protocol TrainableNet: AnyObject {
    /// The graph the net was compiled from; its data-source layers are what the trainer feeds.
    var graph: Graph { get }
    /// Forward (and backward) on `feeds` (every data-source top by blob name): the total weighted
    /// loss and each net output by name.
    func run(_ feeds: [String: NDArray], backward: Bool) throws -> (loss: Float, outputs: [String: NDArray])
    /// The solver's view of the learnable parameters (each shared blob once), in Caffe's order.
    var learnableParameters: [LearnableParameter] { get }
    func zeroParameterDiffs()
    /// Current parameter values by layer name (shared blobs repeated under each layer).
    func parameterArrays() -> [String: [NDArray]]
    func setParameters(_ values: [String: [NDArray]]) throws
    /// The first layer whose output holds NaN or inf after the last run.
    func firstNonFinite() -> (layer: String, blob: String)?
}

extension TrainableNet {
    /// The shapes of `learnableParameters`, for solverstate history blobs.
    var learnableShapes: [[Int]] {
        var shapes: [[Int]] = []
        var seen = Set<String>()
        for node in graph.nodes {
            for parameter in node.parameters {
                if let name = parameter.shareName, !seen.insert(name).inserted { continue }
                shapes.append(parameter.shape.dims)
            }
        }
        return shapes
    }
}
