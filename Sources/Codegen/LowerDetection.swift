import CaffeFormat
import Graph
import Runtime

extension Lowering {
    /// Permute (SSD): output element at position `o` (row-major over the permuted shape) is the
    /// input element whose index along axis `order[d]` is `o[d]`. One task per index of the first
    /// output axis; the other axes are nested loops with constant bounds and strides, so the
    /// innermost loop is a strided gather (or a contiguous copy when the last axis stays last):
    /// `emitAxisPermutation`, which CTPN's Transpose shares.
    mutating func lowerPermute(_ node: Node) throws {
        let dims = shape(node.inputs[0])
        let order = try Permutation(node.layer.permuteParam, rank: dims.count).order
        try emitAxisPermutation(node, input: Operand(buffer(node.inputs[0])), output: Operand(buffer(node.outputs[0])), dims: dims, order: order)
    }

    /// PriorBox's top for this graph's shapes (inference and training hold it differently).
    func priorBoxValues(_ node: Node) throws -> [Float] {
        let values = try PriorBoxGeometry(node.layer.priorBoxParam)
            .output(feature: shape(node.inputs[0]), image: node.inputs.count > 1 ? shape(node.inputs[1]) : nil)
        guard values.count == count(node.outputs[0]) else {
            throw unsupported(node, "its \(values.count) prior values do not fill the \(shape(node.outputs[0])) top")
        }
        return values
    }

    /// PriorBox (SSD): its output depends only on shapes, so it is computed once while compiling
    /// (`PriorBoxGeometry.output`) and copied into the top by one kernel per run; a definition
    /// constant, so training nets run this lowering too.
    mutating func lowerPriorBox(_ node: Node) throws {
        let values = try priorBoxValues(node)
        let priors = Operand(definitionConstant(node, "priors", values))
        try emitCopyRows(node, from: priors, to: Operand(buffer(node.outputs[0])), rows: 2, width: values.count / 2)
    }

    /// Normalize (SSD's `NormalizeLayer::Forward_cpu`): per image, x divided by its L2 norm over
    /// C×H×W (`across_spatial`, `y = x · (1 / sqrt(Σx² + eps))`) or over channels at each position
    /// (`y = x / sqrt(Σ_c x² + eps)`), then times the learned scale (one value, or one per
    /// channel). One task per image. Training calls it too, with the scale its learnable parameter
    /// (`parameter` gives the persistent buffer there) and `norms` to keep each norm for backward
    /// (one per image with `across_spatial`, else one per image and position).
    mutating func lowerNormalize(_ node: Node, keepingNorms norms: Operand? = nil) throws {
        let p = node.layer.normParam
        let input = node.inputs[0], dims = shape(input)
        guard dims.count >= 2 else { throw unsupported(node, "Normalize needs an N×C(×H×W) input, got \(dims)") }
        let num = dims[0], channels = dims[1], spatial = dims[2...].reduce(1, *)
        let blobs = try parameterBlobs(node)
        let shared = p.channelShared
        guard let scaleValues = blobs.first, scaleValues.count == (shared ? 1 : channels) else {
            throw unsupported(node, "Normalize needs \(shared ? 1 : channels) scale value\(shared ? "" : "s"), the weights give \(blobs.first?.count ?? 0)")
        }
        let scale = Operand(parameter(node, 0, "scale", blobs))
        let eps = p.eps, dim = channels * spatial
        let operands = [Operand(buffer(input)), Operand(buffer(node.outputs[0])), scale] + (norms.map { [$0] } ?? [])
        let signature = "normalize c\(channels) s\(spatial) across=\(p.acrossSpatial) shared=\(shared) eps\(eps.bitPattern)"
            + (norms == nil ? "" : " keeping norms")
        try emitKernel(node, signature, operands: operands, tasks: num, work: num * dim * 3) { b in
            let (x, y, factor) = (b.operand(0), b.operand(1), b.operand(2))
            let kept = norms.map { _ in b.operand(3) }
            b.forEachTask { image in
                let base = image * dim
                func scaled(_ value: Scalar, channel: Index) -> Scalar { value * factor[shared ? b.index(0) : channel] }
                if p.acrossSpatial {
                    let sum = b.variable(b.constant(0))
                    b.loop(0..<dim) { i in sum.value = sum.value + x[base + i] * x[base + i] }
                    let norm = b.sqrt(sum.value + eps)
                    kept?[image] = norm
                    let inverse = 1 / norm
                    b.loop(0..<channels) { c in
                        b.loop(0..<spatial) { i in y[base + c * spatial + i] = scaled(x[base + c * spatial + i] * inverse, channel: c) }
                    }
                } else {
                    b.loop(0..<spatial) { i in
                        let sum = b.variable(b.constant(eps))
                        b.loop(0..<channels) { c in sum.value = sum.value + x[base + c * spatial + i] * x[base + c * spatial + i] }
                        let norm = b.sqrt(sum.value)
                        kept?[image * spatial + i] = norm
                        b.loop(0..<channels) { c in y[base + c * spatial + i] = scaled(x[base + c * spatial + i] / norm, channel: c) }
                    }
                }
            }
        }
    }

    /// Upsample (SegNet): each N×C plane of the top is zeroed, then every value is written at the
    /// flat position its mask names (`top[int(mask[i])] = x[i]`, later values winning). Caffe
    /// aborts on a position outside the plane; the kernel skips it, so it never writes out of bounds.
    mutating func lowerUpsample(_ node: Node) throws {
        let dims = shape(node.inputs[0]), outDims = shape(node.outputs[0])
        let planes = dims[0] * dims[1], inner = dims[2] * dims[3], outer = outDims[2] * outDims[3]
        let operands = [Operand(buffer(node.inputs[0])), Operand(buffer(node.inputs[1])), Operand(buffer(node.outputs[0]))]
        try emitKernel(node, "upsample i\(inner) o\(outer)", operands: operands, tasks: planes, work: planes * (inner + outer)) { b in
            let (x, mask, y) = (b.operand(0), b.operand(1), b.operand(2))
            b.forEachTask { plane in
                b.loop(0..<outer) { i in y[plane * outer + i] = b.constant(0) }
                b.loop(0..<inner) { i in
                    let index = b.int(mask[plane * inner + i])
                    b.when(index >= 0 && index < outer) { y[plane * outer + index] = x[plane * inner + i] }
                }
            }
        }
    }

    /// Reorg (YOLOv2, darknet's `reorg_cpu` as the Caffe forks call it with the bottom's W, H, C):
    /// for every bottom position (b, k, j, i), `P = i + W(j + H(k + C·b))` and
    /// `Q = w2 + W·s(h2 + H·s(c2 + C/s²·b))` with `c2 = k mod C/s²`, `o = k div C/s²`,
    /// `w2 = i·s + o mod s`, `h2 = j·s + o div s`; the top gets `top[P] = bottom[Q]`
    /// (`top[Q] = bottom[P]` with `reverse`). One task per (image, channel).
    mutating func lowerReorg(_ node: Node) throws {
        try emitReorg(node, input: Operand(buffer(node.inputs[0])), output: Operand(buffer(node.outputs[0])), reverse: node.layer.reorgParam.reverse)
    }

    /// The reorg mapping over the bottom's extents, from `input` to `output`; `reverse` swaps the
    /// direction (`top[Q] = bottom[P]`). The mapping is a bijection, so the backward of one
    /// direction is the other applied to the diffs (`reorg_cpu` with `1 − forward`, as darknet's
    /// backward calls it).
    mutating func emitReorg(_ node: Node, input: Operand, output: Operand, reverse: Bool) throws {
        let dims = shape(node.inputs[0])
        let (n, c, h, w, s) = (dims[0], dims[1], dims[2], dims[3], Int(node.layer.reorgParam.stride))
        let groups = c / (s * s)
        guard groups > 0 else { throw unsupported(node, "darknet's reorg needs at least stride² (\(s * s)) channels, got \(c)") }
        let operands = [input, output]
        try emitKernel(node, "reorg c\(c) h\(h) w\(w) s\(s) reverse=\(reverse)", operands: operands, tasks: n * c, work: n * c * h * w) { b in
            let (x, y) = (b.operand(0), b.operand(1))
            b.forEachTask { task in
                let image = task / c, k = task % c
                let c2 = k % groups, o = k / groups
                b.loop(0..<h) { j in
                    b.loop(0..<w) { i in
                        let flat = task * (h * w) + j * w + i
                        let w2 = i * s + o % s, h2 = j * s + o / s
                        let other = w2 + (h2 + (c2 + image * groups) * (h * s)) * (w * s)
                        if reverse { y[other] = x[flat] } else { y[flat] = x[other] }
                    }
                }
            }
        }
    }
}
