import CaffeFormat
import Graph

/// Which layers, bottoms and parameters take part in backward, decided exactly as Caffe's
/// `Net::Init` decides `layer_need_backward_`, `bottom_need_backward_` and `param_propagate_down_`.
///
/// Three passes, in Caffe's order:
/// 1. forward: a blob needs backward when its producer does; a layer does when a bottom blob
///    does or one of its parameters has a non-zero `lr_mult` (read from the prototxt's own `param`
///    entries, default 1 — so a BatchNorm without `param` entries "needs backward" as in Caffe);
///    `propagate_down` overrides a bottom's flag;
/// 2. backward, by blob name: a layer whose tops carry no loss weight and feed no loss needs no
///    backward, nor do its bottoms; a layer all of whose tops are skipped by their readers skips too;
/// 3. `force_backward`: every layer runs backward, every bottom its layer allows (not loss labels,
///    `ContrastiveLoss`'s similarity, a recurrent layer's `cont`, MultiBoxLoss's priors and
///    labels), every parameter.
///
/// Example: in LeNet's train net the data and label blobs get no diff, `conv1` computes only its
/// parameter gradients, and `Accuracy` (TEST) never runs backward.
struct BackwardAnalysis {
    /// Per node: whether its backward runs at all.
    var layerNeedsBackward: [Bool]
    /// Per node and bottom: whether backward writes that bottom's diff.
    var bottomNeedsBackward: [[Bool]]
    /// Per node and parameter blob: whether backward accumulates that parameter's diff.
    var parameterPropagatesDown: [[Bool]]

    init(_ graph: Graph) throws {
        let nodes = graph.nodes
        layerNeedsBackward = Array(repeating: false, count: nodes.count)
        bottomNeedsBackward = nodes.map { Array(repeating: false, count: $0.inputs.count) }
        parameterPropagatesDown = nodes.map { Array(repeating: false, count: $0.parameters.count) }
        var blobNeedsBackward: [String: Bool] = [:]
        func name(_ value: ValueID) -> String { graph.values[value].name }

        for node in nodes {
            let layer = node.layer
            if !layer.propagateDown.isEmpty, layer.propagateDown.count != node.inputs.count {
                throw Diagnostic("propagate_down is given \(layer.propagateDown.count) time\(layer.propagateDown.count == 1 ? "" : "s") for \(node.inputs.count) bottom\(node.inputs.count == 1 ? "" : "s")",
                                 at: node.location, layer: node.name, hint: "give propagate_down once per bottom, or not at all")
            }
            var needs = false
            for (j, input) in node.inputs.enumerated() {
                let blobNeeds = blobNeedsBackward[name(input)] ?? false
                bottomNeedsBackward[node.id][j] = layer.propagateDown.isEmpty ? blobNeeds : layer.propagateDown[j]
                needs = needs || blobNeeds
            }
            for k in node.parameters.indices {
                let spec = k < layer.param.count ? layer.param[k] : Caffe_ParamSpec()
                let lrMult: Float = spec.hasLrMult ? spec.lrMult : 1
                parameterPropagatesDown[node.id][k] = lrMult != 0
                needs = needs || lrMult != 0
            }
            layerNeedsBackward[node.id] = needs
            // A new top starts as not needing backward; an in-place top keeps its bottom's flag.
            for output in node.outputs where needs || blobNeedsBackward[name(output)] == nil {
                blobNeedsBackward[name(output)] = needs
            }
        }

        var underLoss = Set<String>(), skipped = Set<String>()
        for node in nodes.reversed() {
            var contributes = false, skipsAll = true
            for (k, output) in node.outputs.enumerated() {
                let weight = k < node.lossWeights.count ? node.lossWeights[k] : 0
                if weight != 0 || underLoss.contains(name(output)) { contributes = true }
                if !skipped.contains(name(output)) { skipsAll = false }
                if contributes && !skipsAll { break }
            }
            if layerNeedsBackward[node.id] && skipsAll {
                layerNeedsBackward[node.id] = false
                for j in node.inputs.indices { bottomNeedsBackward[node.id][j] = false }
            }
            if !contributes { layerNeedsBackward[node.id] = false }
            for (j, input) in node.inputs.enumerated() {
                if contributes {
                    underLoss.insert(name(input))
                } else {
                    bottomNeedsBackward[node.id][j] = false
                }
                if !bottomNeedsBackward[node.id][j] { skipped.insert(name(input)) }
            }
        }

        if graph.forceBackward {
            for node in nodes {
                layerNeedsBackward[node.id] = true
                for j in node.inputs.indices where BackwardAnalysis.allowsForceBackward(node.kind, bottom: j) {
                    bottomNeedsBackward[node.id][j] = true
                }
                for k in node.parameters.indices { parameterPropagatesDown[node.id][k] = true }
            }
        }
        // A layer that runs no backward touches no parameter diff.
        for node in nodes where !layerNeedsBackward[node.id] {
            for k in node.parameters.indices { parameterPropagatesDown[node.id][k] = false }
        }
    }

    /// Caffe's `AllowForceBackward`: loss layers protect their labels (EuclideanLoss excepted: both
    /// its bottoms are data), ContrastiveLoss its similarity bottom, recurrent layers and LSTMUnit
    /// their sequence-continuation bottom.
    static func allowsForceBackward(_ kind: OpKind, bottom: Int) -> Bool {
        switch kind {
        case .euclideanLoss: return true
        case .contrastiveLoss, .lstmUnit: return bottom != 2
        case .lstm, .rnn: return bottom != 1
        // The fork inherits LossLayer's rule (all but bottom 1), which would force a diff into
        // the priors and labels (where its Backward aborts) and none into conf: only loc and conf.
        case .multiBoxLoss: return bottom < 2
        default: return !kind.isLoss || bottom != 1
        }
    }

    /// Whether `node`'s backward writes the diff of its bottom `j`.
    func writesBottomDiff(_ node: Node, _ j: Int) -> Bool {
        layerNeedsBackward[node.id] && bottomNeedsBackward[node.id][j]
    }

    /// Whether backward does anything for `node`: it runs and writes a bottom or a parameter diff.
    func hasWork(_ node: Node) -> Bool {
        layerNeedsBackward[node.id] && (bottomNeedsBackward[node.id].contains(true) || parameterPropagatesDown[node.id].contains(true))
    }
}
