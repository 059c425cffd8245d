import CaffeFormat
import Graph
import Runtime

/// SSD's Normalize (weiliu89/caffe `normalize_layer.cpp`) in training: the forward of the
/// inference lowering with its scale read from the learnable parameter buffer and its norms kept
/// (`node/norm`: one per image with `across_spatial`, else one per image and position), and the
/// fork's backward — which SSD300's `conv4_3_norm` needs for its published train net to train.
///
/// With `x̂ = x / norm` and `a = Σ x·dy` over what one norm covers, the fork's backward is
/// `dx = scale · (dy − x·a / norm²) / norm` and `dscale_c += Σ y·dy / scale_c` (over images and
/// positions; over everything when `channel_shared`). Like the fork, the bottom diff uses `a`
/// without the per-channel scale inside the sum, so it is the exact gradient only when the
/// scales are equal (the fork's own arithmetic, kept on purpose).
extension TrainingLowering {
    /// Normalize's split: images, channels, positions per channel.
    private func normalizeSplit(_ node: Node) throws -> (num: Int, channels: Int, spatial: Int) {
        let dims = shape(node.inputs[0])
        guard dims.count >= 2 else { throw unsupported(node, "Normalize needs an N×C(×H×W) input, got \(dims)") }
        return (dims[0], dims[1], dims[2...].reduce(1, *))
    }

    /// Normalize forward: inference's lowering, keeping the norms for backward.
    mutating func lowerNormalizeForward(_ node: Node) throws {
        let (num, _, spatial) = try normalizeSplit(node)
        let norms = Operand(base.scratch(node, "norm", count: node.layer.normParam.acrossSpatial ? num : num * spatial))
        try base.lowerNormalize(node, keepingNorms: norms)
    }

    /// Normalize backward, as the fork computes it (see the type's comment).
    mutating func lowerNormalizeBackward(_ node: Node) throws {
        let p = node.layer.normParam
        let (num, channels, spatial) = try normalizeSplit(node)
        let across = p.acrossSpatial, shared = p.channelShared, dim = channels * spatial
        guard let norms = scratchBuffer(node, "norm") else { throw unsupported(node, "its forward kept no norms") }
        let dy = try topDiff(node, node.outputs[0])
        let x = data(node.inputs[0]), y = data(node.outputs[0]), scale = parameter(node, 0)
        if propagatesToParameter(node, 0) {
            let groups = shared ? 1 : channels
            try base.emitKernel(node, "normalize.scale.grad n\(num) c\(channels) s\(spatial) shared=\(shared)",
                                operands: [dy, y, scale.data, scale.diff], tasks: groups, work: num * dim) { b in
                let (topDiff, top, factor, factorDiff) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3))
                b.forEachTask { group in
                    let total = b.variable(b.constant(0))
                    b.loop(0..<num, unrolled: false) { image in
                        b.loop(0..<(shared ? channels : 1)) { k in
                            let start = image * dim + (shared ? k : group) * spatial
                            b.loop(0..<spatial) { i in total.value = total.value + top[start + i] * topDiff[start + i] }
                        }
                    }
                    factorDiff[group] = factorDiff[group] + total.value / factor[group]
                }
            }
        }
        guard analysis.writesBottomDiff(node, 0) else { return }
        let dx = bottomDiff(node, 0)
        try base.emitKernel(node, "normalize.grad c\(channels) s\(spatial) across=\(across) shared=\(shared)",
                            operands: [dy, x, scale.data, norms, dx], tasks: num, work: num * dim * 3) { b in
            let (topDiff, bottom, factor, norm, result) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3), b.operand(4))
            b.forEachTask { image in
                let start = image * dim
                func scale(_ channel: Index) -> Scalar { factor[shared ? b.index(0) : channel] }
                if across {
                    let dot = b.variable(b.constant(0))
                    b.loop(0..<dim) { i in dot.value = dot.value + bottom[start + i] * topDiff[start + i] }
                    let value = norm[image]
                    let ratio = dot.value / value / value
                    b.loop(0..<channels) { c in
                        b.loop(0..<spatial) { i in
                            let at = start + c * spatial + i
                            result[at] = (topDiff[at] - bottom[at] * ratio) * (1 / value) * scale(c)
                        }
                    }
                } else {
                    b.loop(0..<spatial) { i in
                        let dot = b.variable(b.constant(0))
                        b.loop(0..<channels) { c in dot.value = dot.value + bottom[start + c * spatial + i] * topDiff[start + c * spatial + i] }
                        let value = norm[image * spatial + i]
                        let squared = value * value
                        b.loop(0..<channels) { c in
                            let at = start + c * spatial + i
                            result[at] = (topDiff[at] - bottom[at] * dot.value / squared) / value * scale(c)
                        }
                    }
                }
            }
        }
    }
}
