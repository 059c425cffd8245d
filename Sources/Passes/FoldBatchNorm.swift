import CaffeFormat
import Graph
import NumPy

/// Folds an inference-mode `BatchNorm` (and the `Scale` that usually follows it) into the
/// Convolution or InnerProduct that feeds it.
///
/// `y = γ·(conv(x) + b − μ)/√(σ² + ε) + β` is again a convolution: weights scaled per output channel
/// by `γ/√(σ² + ε)` and bias `(b − μ)·γ/√(σ² + ε) + β`, with μ and σ² divided by Caffe's scale-factor
/// blob (0 → 0). The chain is folded only when each intermediate blob has no other reader, the
/// BatchNorm uses global statistics, and normalization runs over the producer's output channels.
/// ResNet-50 loses 106 layers this way.
public struct FoldBatchNorm: GraphPass {
    public let name = "fold BatchNorm/Scale into convolution"

    public init() {}

    public func run(_ context: inout PassContext) throws {
        let graph = context.graph
        var removed = Set<NodeID>()
        var replacements: [ValueID: ValueID] = [:]
        var folded: [String] = []
        var nodes = graph.nodes
        for node in graph.nodes where node.kind == .convolution || node.kind == .innerProduct {
            guard node.inputs.count == 1, node.outputs.count == 1, let blobs = context.parameters[node.name],
                  !node.parameters.contains(where: { $0.shareName != nil }) else { continue }
            var chain: [Node] = []
            var current = graph.values[node.outputs[0]]
            while current.consumers.count == 1 {
                let next = graph.nodes[current.consumers[0]]
                let isNormalization = next.kind == .batchNorm && chain.isEmpty && usesGlobalStatistics(next, phase: graph.phase)
                let isScale = next.kind == .scale && next.inputs.count == 1 && chain.count <= 1 &&
                    (chain.first?.kind == .batchNorm || chain.isEmpty) && next.layer.scaleParam.axis == 1 && next.layer.scaleParam.numAxes == 1
                guard isNormalization || isScale, next.outputs.count == 1 else { break }
                chain.append(next)
                current = graph.values[next.outputs[0]]
            }
            guard !chain.isEmpty else { continue }
            let channels = node.kind == .convolution ? node.layer.convolutionParam.numOutput : node.layer.innerProductParam.numOutput
            let outputChannelAxis = graph.values[node.outputs[0]].shape.rank > 1 ? graph.values[node.outputs[0]].shape[1] : -1
            guard outputChannelAxis == Int(channels), node.kind == .convolution || node.layer.innerProductParam.axis == 1 else { continue }
            var multiplier = [Float](repeating: 1, count: Int(channels))
            var shift = [Float](repeating: 0, count: Int(channels))
            for link in chain {
                guard let values = context.parameters[link.name] else { break }
                if link.kind == .batchNorm {
                    let factor = values[2].data.first ?? 1
                    let scale: Float = factor == 0 ? 0 : 1 / factor
                    let eps = link.layer.batchNormParam.eps
                    for c in 0..<multiplier.count {
                        let inverse = 1 / (values[1].data[c] * scale + eps).squareRoot()
                        shift[c] = (shift[c] - values[0].data[c] * scale) * inverse
                        multiplier[c] *= inverse
                    }
                } else {
                    let gamma = values[0].data
                    let beta = link.layer.scaleParam.biasTerm ? values[1].data : [Float](repeating: 0, count: multiplier.count)
                    for c in 0..<multiplier.count {
                        multiplier[c] *= gamma[c]
                        shift[c] = shift[c] * gamma[c] + beta[c]
                    }
                }
            }
            let weights = blobs[0]
            let perChannel = weights.count / multiplier.count
            let transposed = node.kind == .innerProduct && node.layer.innerProductParam.transpose
            // Row by row rather than a division per element: this runs over every weight of the net
            // (25M for ResNet-50) on each compilation. Same products, so the same values.
            let source = weights.data
            let newWeights = [Float](unsafeUninitializedCapacity: source.count) { target, initialized in
                source.withUnsafeBufferPointer { source in
                    if transposed {
                        // [inputs][channels]: every row holds one weight per channel.
                        for row in stride(from: 0, to: source.count, by: multiplier.count) {
                            for c in 0..<multiplier.count { target[row + c] = source[row + c] * multiplier[c] }
                        }
                    } else {
                        for c in 0..<multiplier.count {
                            let m = multiplier[c]
                            for i in c * perChannel..<(c + 1) * perChannel { target[i] = source[i] * m }
                        }
                    }
                }
                initialized = source.count
            }
            let oldBias = blobs.count > 1 ? blobs[1].data : [Float](repeating: 0, count: multiplier.count)
            let newBias = (0..<multiplier.count).map { oldBias[$0] * multiplier[$0] + shift[$0] }
            context.parameters[node.name] = [NDArray(shape: weights.shape, data: newWeights), NDArray(shape: [multiplier.count], data: newBias)]
            var updated = nodes[node.id]
            if node.kind == .convolution { updated.layer.convolutionParam.biasTerm = true } else { updated.layer.innerProductParam.biasTerm = true }
            switch updated.attributes {
            case .convolution(var g):
                g.biasTerm = true
                updated.attributes = .convolution(g)
            case .innerProduct(var p):
                p.biasTerm = true
                updated.attributes = .innerProduct(p)
            default: break
            }
            if updated.parameters.count == 1 {
                updated.parameters.append(ParameterInfo(shape: TensorShape([multiplier.count]), role: "bias"))
            }
            nodes[node.id] = updated
            var previous = node.outputs[0]
            for link in chain {
                removed.insert(link.id)
                replacements[link.outputs[0]] = previous
                previous = link.outputs[0]
                context.parameters[link.name] = nil
            }
            folded.append("\(chain.map(\.name).joined(separator: " + ")) → \(node.name)")
        }
        guard !removed.isEmpty else { return }
        var rewritten = graph
        rewritten.nodes = nodes
        context.graph = rewritten.removing(removed, replacing: replacements)
        context.report.append("folded \(folded.count) BatchNorm/Scale chain\(folded.count == 1 ? "" : "s") into their convolutions (\(removed.count) layers removed)")
    }

    /// Inference normalization uses the stored statistics: `use_global_stats` (default: TEST phase).
    private func usesGlobalStatistics(_ node: Node, phase: Caffe_Phase) -> Bool {
        let p = node.layer.batchNormParam
        return p.hasUseGlobalStats ? p.useGlobalStats : phase == .test
    }
}

/// Removes layers that copy their input at inference: `Dropout` in TEST and Caffe's `Split`.
public struct RemoveIdentities: GraphPass {
    public let name = "remove identity layers"

    public init() {}

    public func run(_ context: inout PassContext) throws {
        let graph = context.graph
        var removed = Set<NodeID>()
        var replacements: [ValueID: ValueID] = [:]
        for node in graph.nodes where node.inputs.count == 1 {
            let identity = (node.kind == .dropout && graph.phase == .test && node.layer.dropoutParam.testScale == 1) || (node.kind == .split && node.lossWeights.allSatisfy { $0 == 0 })
            guard identity else { continue }
            // Keep a layer whose output is a net output under a different name: callers ask for it by name.
            if node.outputs.contains(where: { graph.values[$0].consumers.isEmpty && graph.values[$0].name != graph.values[node.inputs[0]].name }) { continue }
            removed.insert(node.id)
            for output in node.outputs { replacements[output] = node.inputs[0] }
        }
        guard !removed.isEmpty else { return }
        context.graph = graph.removing(removed, replacing: replacements)
        context.report.append("removed \(removed.count) identity layer\(removed.count == 1 ? "" : "s") (Dropout in TEST, Split)")
    }
}
