import CaffeFormat
import Foundation
import Graph
import Runtime

/// An element-wise function of one input, as a row of the table `unaryFunctions`: the part of the
/// kernel signature that names it (with every constant it bakes in) and the scalar formula.
struct UnaryFunction {
    var signature: String
    var formula: (KernelBuilder, Scalar) -> Scalar
}

extension Lowering {
    /// The formula of each element-wise layer, written as Caffe's `Forward_cpu` computes it so the
    /// float rounding matches (no fast-math, the same operation order).
    func unaryFunction(_ node: Node) throws -> UnaryFunction? {
        let layer = node.layer
        switch node.kind {
        case .relu:
            let relu = FusedActivation.relu(negativeSlope: layer.reluParam.negativeSlope)
            return UnaryFunction(signature: relu.signature) { b, x in relu.apply(b, x) }
        case .sigmoid:
            // Caffe's sigmoid is 0.5 · tanh(0.5 · x) + 0.5.
            return UnaryFunction(signature: "sigmoid") { b, x in 0.5 * b.tanh(0.5 * x) + 0.5 }
        case .tanh:
            return UnaryFunction(signature: "tanh") { b, x in b.tanh(x) }
        case .absVal:
            return UnaryFunction(signature: "abs") { b, x in b.abs(x) }
        case .dropout:
            guard graph.phase == .test else {
                throw unsupported(node, "TRAIN-phase dropout draws masks from Caffe's random generator",
                                  hint: "compile the net for the TEST phase, where Dropout is the identity")
            }
            let scale = layer.dropoutParam.testScale
            if scale != 1 { return UnaryFunction(signature: "scale \(scale.bitPattern)") { _, x in x * scale } }
            return UnaryFunction(signature: "identity") { _, x in x }
        case .power:
            let p = layer.powerParam
            let (power, scale, shift) = (p.power, p.scale, p.shift)
            if scale == 0 || power == 0 {
                let value: Float = power == 0 ? 1 : powf(shift, power)
                return UnaryFunction(signature: "fill \(value.bitPattern)") { b, _ in b.constant(value) }
            }
            return UnaryFunction(signature: "power p\(power.bitPattern) a\(scale.bitPattern) b\(shift.bitPattern)") { b, x in
                var y = x
                if scale != 1 { y = y * scale }
                if shift != 0 { y = y + shift }
                if power != 1 { y = b.pow(y, b.constant(power)) }
                return y
            }
        case .exp:
            let p = layer.expParam
            let logBase: Float = p.base == -1 ? 1 : logf(p.base)
            let innerScale = logBase * p.scale
            let outerScale: Float = p.shift == 0 ? 1 : (p.base == -1 ? expf(p.shift) : powf(p.base, p.shift))
            return UnaryFunction(signature: "exp in\(innerScale.bitPattern) out\(outerScale.bitPattern)") { b, x in
                var y = b.exp(innerScale == 1 ? x : x * innerScale)
                if outerScale != 1 { y = y * outerScale }
                return y
            }
        case .log:
            let p = layer.logParam
            let baseScale: Float = p.base == -1 ? 1 : 1 / logf(p.base)
            return UnaryFunction(signature: "log a\(p.scale.bitPattern) b\(p.shift.bitPattern) s\(baseScale.bitPattern)") { b, x in
                var y = x
                if p.scale != 1 { y = y * p.scale }
                if p.shift != 0 { y = y + p.shift }
                y = b.log(y)
                if baseScale != 1 { y = y * baseScale }
                return y
            }
        case .bnll:
            // x > 0 ? x + log(1 + exp(−x)) : log(1 + exp(x))
            return UnaryFunction(signature: "bnll") { b, x in
                b.select(x > 0, x + b.log(1 + b.exp(-x)), b.log(1 + b.exp(x)))
            }
        case .elu:
            let alpha = layer.eluParam.alpha
            return UnaryFunction(signature: "elu a\(alpha.bitPattern)") { b, x in
                b.max(x, b.constant(0)) + alpha * (b.exp(b.min(x, b.constant(0))) - 1)
            }
        case .clip:
            let (low, high) = (layer.clipParam.min, layer.clipParam.max)
            return UnaryFunction(signature: "clip \(low.bitPattern) \(high.bitPattern)") { b, x in
                b.max(b.constant(low), b.min(x, b.constant(high)))
            }
        case .threshold:
            let t = layer.thresholdParam.threshold
            return UnaryFunction(signature: "threshold \(t.bitPattern)") { b, x in b.select(x > t, b.constant(1), b.constant(0)) }
        case .swish:
            let beta = layer.swishParam.beta
            // x · sigmoid(β·x), Caffe's sigmoid being 0.5 · tanh(0.5 · βx) + 0.5.
            return UnaryFunction(signature: "swish \(beta.bitPattern)") { b, x in
                x * (0.5 * b.tanh(0.5 * (x * beta)) + 0.5)
            }
        default:
            return nil
        }
    }

    /// An element-wise layer: one task per element, written over its input when that is free.
    mutating func lowerUnary(_ node: Node, _ function: UnaryFunction) throws {
        let input = node.inputs[0]
        let source = buffer(input)
        let output = elementwiseOutput(node)
        let elements = count(input)
        if function.signature == "identity", source == output { return }
        try emitKernel(node, "map \(function.signature)", operands: [Operand(source), Operand(output)],
                       tasks: elements, work: elements) { b in
            let (x, y) = (b.operand(0), b.operand(1))
            b.forEachTask { i in y[i] = function.formula(b, x[i]) }
        }
    }

    /// Eltwise over same-shaped bottoms: SUM with optional coefficients (Caffe accumulates
    /// `y += coeffᵢ · xᵢ` from zero), PROD (left to right), MAX (first strict maximum), followed by
    /// the node's fused activation, if any (ResNet's `res2a` + `res2a_relu` in one pass).
    mutating func lowerEltwise(_ node: Node) throws {
        let p = try node.eltwiseAttributes()
        let inputs = node.inputs.count
        let coefficients = p.coefficients
        let sources = node.inputs.map { Operand(buffer($0)) }
        let output = Operand(elementwiseOutput(node))
        let elements = count(node.outputs[0])
        let operation = p.operation
        let signature: String
        switch operation {
        case .sum: signature = "eltwise.sum " + coefficients.map { String($0.bitPattern) }.joined(separator: ",")
        case .prod: signature = "eltwise.prod \(inputs)"
        case .max: signature = "eltwise.max \(inputs)"
        }
        let activation = node.fusedActivation
        try emitKernel(node, signature + (activation.map { " " + $0.signature } ?? ""), operands: sources + [output], tasks: elements, work: elements * inputs) { b in
            let y = b.operand(inputs)
            b.forEachTask { i in
                let values = (0..<inputs).map { b.operand($0)[i] }
                var result: Scalar
                switch operation {
                case .sum:
                    result = coefficients[0] == 1 ? values[0] : coefficients[0] * values[0]
                    for j in 1..<inputs { result = result + (coefficients[j] == 1 ? values[j] : coefficients[j] * values[j]) }
                case .prod:
                    result = values[1...].reduce(values[0], *)
                case .max:
                    result = b.select(values[0] > values[1], values[0], values[1])
                    for j in 2..<max(2, inputs) { result = b.select(values[j] > result, values[j], result) }
                }
                y[i] = activation?.apply(b, result) ?? result
            }
        }
    }
}

extension FusedActivation {
    /// The part of a kernel signature that names the activation and its constants.
    var signature: String {
        switch self {
        case .relu(let slope): return "relu slope\(slope.bitPattern)"
        }
    }

    /// The activation of `x`, with Caffe's operation order (`max(x, 0) + slope · min(x, 0)` for ReLU).
    func apply(_ b: KernelBuilder, _ x: Scalar) -> Scalar {
        switch self {
        case .relu(let slope): return b.max(x, b.constant(0)) + slope * b.min(x, b.constant(0))
        }
    }

    /// The same, lane by lane.
    func apply(_ b: KernelBuilder, _ x: FloatVector) -> FloatVector {
        let zero = b.splat(0, width: x.width)
        switch self {
        case .relu(let slope): return b.max(x, zero) + b.splat(slope, width: x.width) * b.min(x, zero)
        }
    }
}
