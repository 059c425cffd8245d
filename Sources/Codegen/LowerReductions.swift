import CaffeFormat
import Graph
import Runtime

extension Lowering {
    /// PReLU (`PReLULayer::Forward_cpu`): `y = max(x, 0) + slope[c] · min(x, 0)` with one slope per
    /// channel (axis 1), or one for all with `channel_shared`. One task per (item, channel) plane.
    mutating func lowerPReLU(_ node: Node) throws {
        let shared = node.layer.preluParam.channelShared
        let blobs = try parameterBlobs(node)
        let input = node.inputs[0], dims = shape(input)
        let outer = dims.first ?? 1, channels = dims.count > 1 ? dims[1] : 1, inner = dims.count > 2 ? dims[2...].reduce(1, *) : 1
        guard blobs[0].count == (shared ? 1 : channels) else {
            throw Diagnostic("PReLU needs \(shared ? 1 : channels) slope\(shared ? "" : "s"), the weights give \(blobs[0].count)", at: node.location, layer: node.name)
        }
        let slopes = parameter(node, 0, "slopes", blobs)
        let output = elementwiseOutput(node)
        try emitPReLU(node, input: Operand(buffer(input)), slopes: Operand(slopes), output: Operand(output),
                      outer: outer, channels: channels, inner: inner, shared: shared)
    }

    /// PReLU's `max(x, 0) + slope[c] · min(x, 0)` over an outer × channels × inner layout (one
    /// slope for all channels when `shared`); one task per (outer, channel) plane. Also the training
    /// compiler's PReLU forward, whose slopes are the learned parameter.
    mutating func emitPReLU(_ node: Node, input: Operand, slopes: Operand, output: Operand,
                            outer: Int, channels: Int, inner: Int, shared: Bool) throws {
        try emitKernel(node, "prelu c\(channels) i\(inner) shared=\(shared)", operands: [input, output, slopes],
                       tasks: outer * channels, work: outer * channels * inner) { b in
            let (x, y, slope) = (b.operand(0), b.operand(1), b.operand(2))
            b.forEachTask { plane in
                let a = slope[shared ? b.index(0) : plane % channels]
                b.loop(0..<inner) { i in
                    let v = x[plane * inner + i]
                    y[plane * inner + i] = b.max(v, b.constant(0)) + a * b.min(v, b.constant(0))
                }
            }
        }
    }

    /// Reduction (`ReductionLayer::Forward_cpu`): reduces all axes from `axis` on to one value per
    /// outer index — SUM, ASUM (Σ|x|), SUMSQ (Σx²) or MEAN (SUM · 1/dim) — then scales by
    /// `coeff`. Sums run left to right (Caffe's BLAS dot may associate differently: a rounding-level
    /// difference). One task per outer index.
    mutating func lowerReduction(_ node: Node) throws {
        let p = node.layer.reductionParam
        let input = node.inputs[0], dims = shape(input)
        guard let axis = graph.values[input].shape.canonicalAxis(Int(p.axis)) else { throw unsupported(node, "axis \(p.axis) is out of range for \(dims)") }
        let outer = dims[..<axis].reduce(1, *), dim = dims[axis...].reduce(1, *)
        var coeff = p.coeff
        if p.operation == .mean { coeff /= Float(dim) }
        let operation = p.operation
        try emitKernel(node, "reduce \(operation) d\(dim) coeff\(coeff.bitPattern)", operands: [Operand(buffer(input)), Operand(buffer(node.outputs[0]))],
                       tasks: outer, work: outer * dim) { b in
            let (x, y) = (b.operand(0), b.operand(1))
            b.forEachTask { row in
                let sum = b.variable(b.constant(0))
                b.loop(0..<dim) { i in
                    let v = x[row * dim + i]
                    switch operation {
                    case .asum: sum.value = sum.value + b.abs(v)
                    case .sumsq: sum.value = sum.value + v * v
                    default: sum.value = sum.value + v
                    }
                }
                y[row] = coeff == 1 ? sum.value : sum.value * coeff
            }
        }
    }

    /// ArgMax (`ArgMaxLayer::Forward_cpu`): the `top_k` largest values along `axis` (or over all
    /// non-batch axes when no axis is set), largest first. Output: their indices; with
    /// `out_max_val` and an axis, their values; with `out_max_val` and no axis, the indices then
    /// the values (N×2×top_k). Picked by k passes of a scan for the largest element below the
    /// previous pick in (value, index) order, so equal values come out larger index first, as in
    /// Caffe.
    mutating func lowerArgMax(_ node: Node) throws {
        let p = node.layer.argmaxParam
        let input = node.inputs[0], dims = shape(input)
        let topK = Int(p.topK)
        let (outer, dim, inner): (Int, Int, Int)
        if p.hasAxis {
            guard let axis = graph.values[input].shape.canonicalAxis(Int(p.axis)) else { throw unsupported(node, "axis \(p.axis) is out of range") }
            (outer, dim, inner) = (dims[..<axis].reduce(1, *), dims[axis], dims[(axis + 1)...].reduce(1, *))
        } else {
            (outer, dim, inner) = (dims.first ?? 1, dims.dropFirst().reduce(1, *), 1)
        }
        guard topK >= 1, topK <= dim else { throw unsupported(node, "top_k \(topK) must lie in 1...\(dim)") }
        let mode = p.outMaxVal ? (p.hasAxis ? 1 : 2) : 0
        try emitKernel(node, "argmax d\(dim) i\(inner) k\(topK) mode\(mode)", operands: [Operand(buffer(input)), Operand(buffer(node.outputs[0]))],
                       tasks: outer * inner, work: outer * inner * dim * topK) { b in
            let (x, y) = (b.operand(0), b.operand(1))
            b.forEachTask { position in
                let o = position / inner, i = position % inner
                let base = o * (dim * inner) + i
                // Picks in (value, index) order, largest first, like Caffe's partial_sort with
                // std::greater on pairs: equal values come out larger index first.
                let previous = b.variable(b.constant(Float.infinity))
                let previousIndex = b.variable(b.constant(Float.infinity))
                for k in 0..<topK {
                    let best = b.variable(b.constant(-Float.infinity))
                    let bestIndex = b.variable(b.constant(-1))
                    let (limit, limitIndex) = (previous.value, previousIndex.value)
                    b.loop(0..<dim) { j in
                        let v = x[base + j * inner], fj = b.float(j)
                        let below = v < limit || (v <= limit && v >= limit && fj < limitIndex)
                        let above = v > best.value || (v <= best.value && v >= best.value) || bestIndex.value < 0
                        let better = below && above
                        best.value = b.select(better, v, best.value)
                        bestIndex.value = b.select(better, fj, bestIndex.value)
                    }
                    previous.value = best.value
                    previousIndex.value = bestIndex.value
                    switch mode {
                    case 1: y[(o * topK + k) * inner + i] = best.value
                    case 2:
                        y[o * (2 * topK) + k] = bestIndex.value
                        y[o * (2 * topK) + topK + k] = best.value
                    default: y[(o * topK + k) * inner + i] = bestIndex.value
                    }
                }
            }
        }
    }

    /// MVN (`MVNLayer::Forward_cpu`): per item (or per item and channel unless `across_channels`),
    /// `y = x − mean`, and with `normalize_variance` `y /= (sqrt(mean((x − mean)²)) + eps)`, where
    /// means multiply each value by 1/dim and sum (as Caffe's gemv with a 1/dim vector). One task
    /// per group.
    mutating func lowerMVN(_ node: Node) throws {
        let p = node.layer.mvnParam
        let input = node.inputs[0], dims = shape(input)
        let groups = p.acrossChannels ? (dims.first ?? 1) : dims.prefix(2).reduce(1, *)
        let dim = groups == 0 ? 0 : count(input) / groups
        let scale = 1 / Float(dim), eps = p.eps, normalize = p.normalizeVariance
        let output = elementwiseOutput(node)
        try emitKernel(node, "mvn d\(dim) var=\(normalize) eps\(eps.bitPattern)", operands: [Operand(buffer(input)), Operand(output)],
                       tasks: groups, work: groups * dim * 3) { b in
            let (x, y) = (b.operand(0), b.operand(1))
            b.forEachTask { group in
                let base = group * dim
                let sum = b.variable(b.constant(0))
                b.loop(0..<dim) { i in sum.value = sum.value + x[base + i] * scale }
                let mean = sum.value
                b.loop(0..<dim) { i in y[base + i] = x[base + i] - mean }
                if normalize {
                    let squares = b.variable(b.constant(0))
                    b.loop(0..<dim) { i in
                        let d = y[base + i]
                        squares.value = squares.value + d * d * scale
                    }
                    let denominator = b.sqrt(squares.value) + eps
                    b.loop(0..<dim) { i in y[base + i] = y[base + i] / denominator }
                }
            }
        }
    }
}
