import Foundation

/// Caffe's snapshot files, written so Caffe reads them: the `.caffemodel` as `Net::ToProto` builds it
/// (every layer of the built net in order — automatic splits included — with `phase` set, and its
/// parameter blobs as `shape` + `data`) and the `.solverstate` as `SGDSolver::SnapshotSolverState`
/// (`iter`, `learned_net`, `history`, `current_step`).
///
/// Both files are written atomically (a temporary file, flushed to disk with `fsync`, then renamed),
/// the caffemodel first and the solverstate last, so a solverstate on disk always names a complete
/// caffemodel and a write cut short (kill -9, a full disk) never leaves a file that looks like a
/// snapshot. The solverstate names its caffemodel by file name only, and `modelPath(forState:)`
/// looks it up beside the solverstate first, so a snapshot pair resumes wherever it is moved.
public enum Snapshot {
    /// The `.caffemodel` message for `graph` with parameter values by layer name.
    public static func netParameter(graph: Graph, parameters: [String: [NDArray]], diffs: [String: [NDArray]]? = nil) -> Caffe_NetParameter {
        var net = Caffe_NetParameter()
        net.name = graph.name
        net.layer = graph.nodes.map { node in
            var layer = node.layer
            if !layer.hasPhase { layer.phase = graph.phase }
            // LossLayer::LayerSetUp writes its default weight into the layer's own parameters.
            if layer.lossWeight.isEmpty, node.kind.isLoss { layer.lossWeight = node.lossWeights }
            layer.blobs = (parameters[node.name] ?? []).enumerated().map { index, array in
                blob(array, diff: diffs?[node.name].flatMap { index < $0.count ? $0[index] : nil })
            }
            return layer
        }
        return net
    }

    /// The `.solverstate` message.
    public static func solverState(iteration: Int, learnedNet: String, currentStep: Int, history: [NDArray]) -> Caffe_SolverState {
        var state = Caffe_SolverState()
        state.iter = Int32(iteration)
        state.learnedNet = learnedNet
        state.currentStep = Int32(currentStep)
        state.history = history.map { blob($0, diff: nil) }
        return state
    }

    /// `prefix_iter_N.caffemodel` and `prefix_iter_N.solverstate`, as Caffe names them.
    public static func paths(prefix: String, iteration: Int) -> (model: String, state: String) {
        ("\(prefix)_iter_\(iteration).caffemodel", "\(prefix)_iter_\(iteration).solverstate")
    }

    /// Writes both files (caffemodel first, solverstate last). `learned_net` holds the caffemodel's
    /// file name without its folder (Caffe stores the path as given): the two files sit side by
    /// side, and the name stays right when the pair is copied elsewhere.
    @discardableResult
    public static func write(prefix: String, iteration: Int, net: Caffe_NetParameter, currentStep: Int,
                             history: [NDArray]) throws -> (model: String, state: String) {
        let paths = paths(prefix: prefix, iteration: iteration)
        try CaffeFiles.write(net, to: paths.model)
        let name = URL(fileURLWithPath: paths.model).lastPathComponent
        try CaffeFiles.write(solverState(iteration: iteration, learnedNet: name, currentStep: currentStep, history: history), to: paths.state)
        return paths
    }

    /// Where the caffemodel a `.solverstate` names is: beside the solverstate first (its
    /// `learned_net` as a path relative to the state's folder, then just its file name — which also
    /// finds the model of an old state holding an absolute path after the pair was moved), then
    /// `learned_net` as given, absolute or relative to `base` (default: the working directory),
    /// where Caffe's `SGDSolver::RestoreSolverStateFromBinaryProto` opens it.
    public static func modelPath(forState statePath: String, learnedNet: String, base: String? = nil) -> String {
        let folder = URL(fileURLWithPath: statePath).deletingLastPathComponent()
        let name = URL(fileURLWithPath: learnedNet).lastPathComponent
        var candidates: [String] = []
        if !learnedNet.hasPrefix("/") { candidates.append(folder.appendingPathComponent(learnedNet).path) }
        candidates.append(folder.appendingPathComponent(name).path)
        let given = learnedNet.hasPrefix("/") ? learnedNet
            : URL(fileURLWithPath: base ?? FileManager.default.currentDirectoryPath).appendingPathComponent(learnedNet).path
        candidates.append(given)
        return candidates.first { FileManager.default.fileExists(atPath: $0) } ?? given
    }

    static func blob(_ array: NDArray, diff: NDArray?) -> Caffe_BlobProto {
        var blob = Caffe_BlobProto()
        blob.shape.dim = array.shape.map(Int64.init)
        blob.data = array.data
        if let diff { blob.diff = diff.data }
        return blob
    }
}
