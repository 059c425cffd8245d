import CaffeFormat
import Foundation
import Graph
import Runtime

/// The derivative of an element-wise layer, as a row of the table `unaryGradient`: its kernel
/// signature, which saved values it reads, and `dx` from (x, y, dy), written as Caffe's
/// `Backward_cpu` computes it (same operation order, so rounding agrees).
struct UnaryGradient {
    var signature: String
    var readsInput = false
    var readsOutput = false
    var formula: (_ b: KernelBuilder, _ x: Scalar?, _ y: Scalar?, _ dy: Scalar) -> Scalar
}

extension TrainingLowering {
    /// The gradient formula of each element-wise layer; nil for layers that are not element-wise.
    /// Throws for element-wise layers Caffe gives no backward (Threshold).
    func unaryGradient(_ node: Node) throws -> UnaryGradient? {
        let layer = node.layer
        switch node.kind {
        case .relu:
            let slope = layer.reluParam.negativeSlope
            // dy · ((x > 0) + slope · (x ≤ 0)); an in-place ReLU reads its output, as Caffe does.
            return UnaryGradient(signature: "relu slope\(slope.bitPattern)", readsInput: true) { b, x, _, dy in
                dy * (b.float(x! > 0) + slope * b.float(x! <= 0))
            }
        case .sigmoid:
            return UnaryGradient(signature: "sigmoid", readsOutput: true) { _, _, y, dy in dy * y! * (1 - y!) }
        case .tanh:
            return UnaryGradient(signature: "tanh", readsOutput: true) { _, _, y, dy in dy * (1 - y! * y!) }
        case .absVal:
            // sign(x) · dy, sign being (0 < x) − (x < 0).
            return UnaryGradient(signature: "abs", readsInput: true) { b, x, _, dy in
                (b.float(x! > 0) - b.float(x! < 0)) * dy
            }
        case .power:
            let p = layer.powerParam
            let (power, scale, shift) = (p.power, p.scale, p.shift)
            let diffScale = power * scale
            if diffScale == 0 || power == 1 {
                return UnaryGradient(signature: "power.const \(diffScale.bitPattern)") { b, _, _, dy in
                    diffScale == 0 ? b.constant(0) : dy * diffScale
                }
            }
            if power == 2 {
                return UnaryGradient(signature: "power.square a\(scale.bitPattern) b\(shift.bitPattern)", readsInput: true) { _, x, _, dy in
                    var d = x! * (diffScale * scale)
                    if shift != 0 { d = d + diffScale * shift }
                    return dy * d
                }
            }
            if shift == 0 {
                return UnaryGradient(signature: "power.noshift p\(power.bitPattern)", readsInput: true, readsOutput: true) { _, x, y, dy in
                    dy * ((y! / x!) * power)
                }
            }
            return UnaryGradient(signature: "power p\(power.bitPattern) a\(scale.bitPattern) b\(shift.bitPattern)", readsInput: true, readsOutput: true) { _, x, y, dy in
                var base = x!
                if scale != 1 { base = base * scale }
                base = base + shift
                var d = y! / base
                if diffScale != 1 { d = d * diffScale }
                return dy * d
            }
        case .exp:
            let p = layer.expParam
            let logBase: Float = p.base == -1 ? 1 : logf(p.base)
            let innerScale = logBase * p.scale
            return UnaryGradient(signature: "exp \(innerScale.bitPattern)", readsOutput: true) { _, _, y, dy in
                innerScale == 1 ? dy * y! : (dy * y!) * innerScale
            }
        case .log:
            let p = layer.logParam
            let logBase: Float = p.base == -1 ? 1 : logf(p.base)
            let numerator = p.scale / logBase
            return UnaryGradient(signature: "log a\(p.scale.bitPattern) b\(p.shift.bitPattern) n\(numerator.bitPattern)", readsInput: true) { b, x, _, dy in
                var v = x!
                if p.scale != 1 { v = v * p.scale }
                if p.shift != 0 { v = v + p.shift }
                var d = b.pow(v, b.constant(-1))
                if numerator != 1 { d = d * numerator }
                return dy * d
            }
        case .bnll:
            return UnaryGradient(signature: "bnll", readsInput: true) { b, x, _, dy in
                let e = b.exp(b.min(x!, b.constant(50)))
                return dy * e / (e + 1)
            }
        case .elu:
            let alpha = layer.eluParam.alpha
            return UnaryGradient(signature: "elu \(alpha.bitPattern)", readsInput: true, readsOutput: true) { b, x, y, dy in
                dy * (b.float(x! > 0) + (alpha + y!) * b.float(x! <= 0))
            }
        case .clip:
            let (low, high) = (layer.clipParam.min, layer.clipParam.max)
            return UnaryGradient(signature: "clip \(low.bitPattern) \(high.bitPattern)", readsInput: true) { b, x, _, dy in
                dy * b.float(x! >= low && x! <= high)
            }
        case .swish:
            let beta = layer.swishParam.beta
            return UnaryGradient(signature: "swish \(beta.bitPattern)", readsInput: true, readsOutput: true) { b, x, y, dy in
                let sigmoid = 0.5 * b.tanh(0.5 * (x! * beta)) + 0.5
                return dy * (beta * y! + sigmoid * (1 - beta * y!))
            }
        case .dropout where graph.phase != .train:
            let scale = layer.dropoutParam.testScale
            if scale != 1 { return UnaryGradient(signature: "scale \(scale.bitPattern)") { _, _, _, dy in dy * scale } }
            return UnaryGradient(signature: "identity") { _, _, _, dy in dy }
        case .threshold:
            throw Diagnostic("Threshold has no backward in Caffe (Caffe leaves it NOT_IMPLEMENTED)", at: node.location, layer: node.name,
                             hint: "set propagate_down: false on the layer's bottom, or drop force_backward")
        default:
            return nil
        }
    }

    /// Backward of an element-wise layer: one task per element, the bottom diff written over the
    /// top diff when nothing else reads it.
    mutating func lowerUnaryBackward(_ node: Node, _ gradient: UnaryGradient) throws {
        guard analysis.writesBottomDiff(node, 0) else { return }
        let input = node.inputs[0], output = node.outputs[0]
        let dy = try topDiff(node, output)
        var operands = [dy]
        if gradient.readsInput { operands.append(data(input)) }
        if gradient.readsOutput { operands.append(data(output)) }
        let dx = bottomDiff(node, 0, reusing: dy)
        let elements = count(input)
        try base.emitKernel(node, "grad \(gradient.signature)", operands: operands + [dx], tasks: elements, work: elements) { b in
            let topDiff = b.operand(0)
            let x = gradient.readsInput ? b.operand(1) : nil
            let y = gradient.readsOutput ? b.operand(gradient.readsInput ? 2 : 1) : nil
            let result = b.operand(operands.count)
            b.forEachTask { i in result[i] = gradient.formula(b, x?[i], y?[i], topDiff[i]) }
        }
    }

    // MARK: Dropout

    /// Whether element `i` survives dropout in this run: `u ≥ ratio` for a uniform `u` hashed from
    /// the run's random key, the layer and `i` (Caffe keeps with probability 1 − ratio). Forward and
    /// backward recompute the same mask instead of storing it.
    static func keeps(_ b: KernelBuilder, key: Buffer, layer: Int, _ i: Index, ratio: Float) -> Predicate {
        let salt = b.bitPattern(UInt64(truncatingIfNeeded: layer) &* 0xD1B5_4A32_D192_ED03)
        return b.uniform(b.key(from: key) ^ salt, i) >= ratio
    }

    /// Dropout in TRAIN: `y = x · mask · 1/(1 − ratio)` with a seeded mask (Caffe's own mask comes
    /// from its internal generator and cannot be reproduced); `y = x · mask` with `scale_train: false`.
    mutating func lowerDropoutForward(_ node: Node) throws {
        let ratio = node.layer.dropoutParam.dropoutRatio
        let scale = node.layer.dropoutParam.trainScale
        let input = node.inputs[0], elements = count(input)
        let source = data(input)
        let output = Operand(base.elementwiseOutput(node))
        try base.emitKernel(node, "dropout.forward r\(ratio.bitPattern) s\(scale.bitPattern) layer\(node.id)", operands: [source, output, Operand(randomKey)],
                            tasks: elements, work: elements * 4) { b in
            let (x, y, key) = (b.operand(0), b.operand(1), b.operand(2))
            b.forEachTask { i in
                let mask = b.float(TrainingLowering.keeps(b, key: key, layer: node.id, i, ratio: ratio))
                y[i] = x[i] * mask * scale
            }
        }
    }

    /// Dropout backward in TRAIN: `dx = dy · mask · scale`, the mask recomputed.
    mutating func lowerDropoutBackward(_ node: Node) throws {
        guard analysis.writesBottomDiff(node, 0) else { return }
        let ratio = node.layer.dropoutParam.dropoutRatio
        let scale = node.layer.dropoutParam.trainScale
        let elements = count(node.inputs[0])
        let dy = try topDiff(node, node.outputs[0])
        let dx = bottomDiff(node, 0, reusing: dy)
        try base.emitKernel(node, "dropout.backward r\(ratio.bitPattern) s\(scale.bitPattern) layer\(node.id)", operands: [dy, dx, Operand(randomKey)],
                            tasks: elements, work: elements * 4) { b in
            let (topDiff, result, key) = (b.operand(0), b.operand(1), b.operand(2))
            b.forEachTask { i in
                let mask = b.float(TrainingLowering.keeps(b, key: key, layer: node.id, i, ratio: ratio))
                result[i] = topDiff[i] * mask * scale
            }
        }
    }

    // MARK: Eltwise

    /// Eltwise backward per bottom that needs it: SUM `coeffᵢ · dy`; PROD `dy · Π_{j≠i} xⱼ`
    /// (`stable_prod_grad`, the default) or `dy · y / xᵢ`; MAX `dy` where bottom i held the first
    /// maximum (recomputed as Caffe's forward chose it: strict `>`, ties to the later of the first
    /// two, to the earlier afterwards).
    mutating func lowerEltwiseBackward(_ node: Node) throws {
        let p = try node.eltwiseAttributes()
        let inputs = node.inputs.count, elements = count(node.outputs[0])
        let coefficients = p.coefficients
        let dy = try topDiff(node, node.outputs[0])
        for i in 0..<inputs where analysis.writesBottomDiff(node, i) {
            switch p.operation {
            case .sum:
                let dx = bottomDiff(node, i)
                let c = coefficients[i]
                try base.emitKernel(node, "scale \(c.bitPattern)", operands: [dy, dx], tasks: elements, work: elements) { b in
                    let (topDiff, result) = (b.operand(0), b.operand(1))
                    b.forEachTask { k in result[k] = c == 1 ? topDiff[k] : c * topDiff[k] }
                }
            case .prod:
                let dx = bottomDiff(node, i)
                let stable = p.stableProductGradient
                let sources = stable ? node.inputs.enumerated().filter { $0.offset != i }.map { data($0.element) }
                                     : [data(node.outputs[0]), data(node.inputs[i])]
                try base.emitKernel(node, "eltwise.prod.grad \(sources.count) stable=\(stable)", operands: sources + [dy, dx],
                                    tasks: elements, work: elements * inputs) { b in
                    let topDiff = b.operand(sources.count), result = b.operand(sources.count + 1)
                    b.forEachTask { k in
                        var product: Scalar
                        if stable {
                            product = b.operand(0)[k]
                            for j in 1..<max(1, sources.count) { product = b.operand(j)[k] * product }
                        } else {
                            product = b.operand(0)[k] / b.operand(1)[k]
                        }
                        result[k] = product * topDiff[k]
                    }
                }
            case .max:
                let dx = bottomDiff(node, i)
                let sources = node.inputs.map { data($0) }
                try base.emitKernel(node, "eltwise.max.grad \(inputs) bottom\(i)", operands: sources + [dy, dx],
                                    tasks: elements, work: elements * inputs) { b in
                    let topDiff = b.operand(inputs), result = b.operand(inputs + 1)
                    b.forEachTask { k in
                        let first = b.operand(0)[k] > b.operand(1)[k]
                        var best = b.select(first, b.operand(0)[k], b.operand(1)[k])
                        var winner = b.select(first, b.index(0), b.index(1))
                        for j in 2..<max(2, inputs) {
                            let better = b.operand(j)[k] > best
                            best = b.select(better, b.operand(j)[k], best)
                            winner = b.select(better, b.index(j), winner)
                        }
                        result[k] = b.select(b.equal(winner, i), topDiff[k], b.constant(0))
                    }
                }
            }
        }
    }
}
