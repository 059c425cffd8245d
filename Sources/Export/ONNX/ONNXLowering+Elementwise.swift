import CaffeFormat
import Foundation
import Graph
import NumPy

/// Activations, Eltwise, BatchNorm (with a following Scale folded in), Scale and Bias.
extension ONNXLowering {
    /// One-bottom elementwise layers. Each follows Caffe's formula as Caffe evaluates it.
    mutating func lowerActivation(_ node: Node) throws {
        let x = input(node), y = output(node), name = node.name
        switch node.kind {
        case .relu:
            let slope = node.layer.reluParam.negativeSlope
            if slope == 0 {
                writer.node("Relu", name: name, inputs: [x], outputs: [y])
            } else {
                writer.node("LeakyRelu", name: name, inputs: [x], outputs: [y], [Attribute.float("alpha", slope)])
            }
        case .sigmoid: writer.node("Sigmoid", name: name, inputs: [x], outputs: [y])
        case .tanh: writer.node("Tanh", name: name, inputs: [x], outputs: [y])
        case .absVal: writer.node("Abs", name: name, inputs: [x], outputs: [y])
        case .bnll: writer.node("Softplus", name: name, inputs: [x], outputs: [y])   // log(1 + eˣ)
        case .dropout:
            // Caffe scales while training; `scale_train: false` scales at test time instead.
            let scale = node.layer.dropoutParam.testScale
            if scale == 1 {
                writer.node("Identity", name: name, inputs: [x], outputs: [y])
            } else {
                let factor = writer.constant("\(name)/scale", [scale])
                writer.node("Mul", name: name, inputs: [x, factor], outputs: [y])
            }
        case .elu: writer.node("Elu", name: name, inputs: [x], outputs: [y], [Attribute.float("alpha", node.layer.eluParam.alpha)])
        case .prelu:
            // Caffe's slope is per channel (axis 1) or one shared value; ONNX broadcasts from the right.
            let rank = inputShape(node).count
            let slope = try weights.blob(of: node, index: 0)
            let shape = node.layer.preluParam.channelShared ? [1] : [slope.count] + Array(repeating: 1, count: max(rank - 2, 0))
            let operand = writer.initializer("\(name)/0", NDArray(shape: shape, data: slope.data))
            writer.node("PRelu", name: name, inputs: [x, operand], outputs: [y])
        case .power:
            // (shift + scale·x)^power
            let p = node.layer.powerParam
            var t = x
            if p.scale != 1 { t = writer.node("Mul", name: "\(name)/scale", inputs: [t, writer.constant("\(name)/scale", [p.scale])]) }
            if p.shift != 0 { t = writer.node("Add", name: "\(name)/shift", inputs: [t, writer.constant("\(name)/shift", [p.shift])]) }
            if p.power != 1 { t = writer.node("Pow", name: "\(name)/power", inputs: [t, writer.constant("\(name)/power", [p.power])]) }
            writer.node("Identity", name: name, inputs: [t], outputs: [y])
        case .exp:
            // base^(shift + scale·x) = base^shift · e^(ln(base)·scale·x), as Caffe's ExpLayer computes it.
            let p = node.layer.expParam
            let logBase = p.base == -1 ? Float(1) : Float(Foundation.log(Double(p.base)))
            let innerScale = logBase * p.scale
            let outerScale = p.shift == 0 ? Float(1) : (p.base == -1 ? Float(Foundation.exp(Double(p.shift))) : Float(pow(Double(p.base), Double(p.shift))))
            var t = x
            if innerScale != 1 { t = writer.node("Mul", name: "\(name)/scale", inputs: [t, writer.constant("\(name)/scale", [innerScale])]) }
            t = writer.node("Exp", name: "\(name)/exp", inputs: [t])
            if outerScale != 1 { t = writer.node("Mul", name: "\(name)/outer", inputs: [t, writer.constant("\(name)/outer", [outerScale])]) }
            writer.node("Identity", name: name, inputs: [t], outputs: [y])
        case .log:
            // log_base(shift + scale·x) = ln(shift + scale·x) / ln(base)
            let p = node.layer.logParam
            var t = x
            if p.scale != 1 { t = writer.node("Mul", name: "\(name)/scale", inputs: [t, writer.constant("\(name)/scale", [p.scale])]) }
            if p.shift != 0 { t = writer.node("Add", name: "\(name)/shift", inputs: [t, writer.constant("\(name)/shift", [p.shift])]) }
            t = writer.node("Log", name: "\(name)/log", inputs: [t])
            if p.base != -1 {
                let baseScale = Float(1 / Foundation.log(Double(p.base)))
                t = writer.node("Mul", name: "\(name)/base", inputs: [t, writer.constant("\(name)/base", [baseScale])])
            }
            writer.node("Identity", name: name, inputs: [t], outputs: [y])
        case .clip:
            let p = node.layer.clipParam
            writer.node("Clip", name: name, inputs: [x, writer.constant("\(name)/min", [p.min]), writer.constant("\(name)/max", [p.max])], outputs: [y])
        case .swish:
            // x · sigmoid(beta·x)
            let beta = node.layer.swishParam.beta
            var t = x
            if beta != 1 { t = writer.node("Mul", name: "\(name)/beta", inputs: [x, writer.constant("\(name)/beta", [beta])]) }
            let gate = writer.node("Sigmoid", name: "\(name)/sigmoid", inputs: [t])
            writer.node("Mul", name: name, inputs: [x, gate], outputs: [y])
        default:
            throw unsupported(node)
        }
    }

    /// SUM (each bottom times its coefficient, then added), PROD, MAX.
    mutating func lowerEltwise(_ node: Node) throws {
        let p = try node.eltwiseAttributes()
        let operands = node.inputs.indices.map { input(node, $0) }
        switch p.operation {
        case .prod:
            chain("Mul", node, operands)
        case .max:
            writer.node("Max", name: node.name, inputs: operands, outputs: [output(node)])
        case .sum:
            let terms = operands.enumerated().map { index, operand -> String in
                let coeff = p.coefficients[index]
                if coeff == 1 { return operand }
                return writer.node("Mul", name: "\(node.name)/coeff\(index)", inputs: [operand, writer.constant("\(node.name)/coeff\(index)", [coeff])])
            }
            chain("Add", node, terms)
        }
    }

    /// Folds `a op b op c…` left to right (Caffe's accumulation order), the last step writing the top.
    private mutating func chain(_ op: String, _ node: Node, _ operands: [String]) {
        guard operands.count > 1 else {
            writer.node("Identity", name: node.name, inputs: operands, outputs: [output(node)])
            return
        }
        var accumulated = operands[0]
        for (index, operand) in operands.enumerated().dropFirst() {
            let last = index == operands.count - 1
            accumulated = writer.node(op, name: last ? node.name : "\(node.name)/\(index)", inputs: [accumulated, operand],
                                      outputs: last ? [output(node)] : nil)
        }
    }

    /// BatchNorm with global statistics → `BatchNormalization`. Caffe stores the statistics scaled by
    /// blob 2 (the factor); they are divided here exactly as Caffe divides before using them. When a
    /// per-channel Scale layer is the only reader of the BatchNorm's top (Caffe's BN+Scale idiom), its
    /// multiplier and bias become the operator's `scale` and `B`, and the Scale node disappears.
    mutating func lowerBatchNorm(_ node: Node) throws {
        let p = node.layer.batchNormParam
        // Caffe's default: the stored statistics in TEST, each batch's own in TRAIN.
        if !(p.hasUseGlobalStats ? p.useGlobalStats : graph.phase == .test) {
            throw unsupported(node, "it normalizes with each batch's own statistics (use_global_stats false, or TRAIN phase), which ONNX's BatchNormalization does not",
                              hint: "set use_global_stats: true (Caffe's TEST default) for inference; nothing was written")
        }
        let shape = inputShape(node)
        guard shape.count >= 2 else { throw unsupported(node, "its input \(TensorShape(shape)) has no channel axis") }
        let channels = shape[1]
        var blobs = try weights.blobs(of: node)
        let factor = blobs[2].data.first ?? 1
        let multiplier: Float = factor == 0 ? 0 : 1 / factor
        for i in 0..<2 { blobs[i].data = blobs[i].data.map { $0 * multiplier } }
        let mean = writer.initializer("\(node.name)/0", blobs[0])
        let variance = writer.initializer("\(node.name)/1", blobs[1])

        var gamma: String, beta: String, top = output(node)
        if let scale = foldableScale(after: node) {
            folded.insert(scale.id)
            gamma = try parameter(scale, 0)
            beta = scale.layer.scaleParam.biasTerm ? try parameter(scale, 1)
                : writer.constant("\(scale.name)/zero", Array(repeating: 0, count: channels), shape: [channels])
            top = output(scale)
        } else {
            gamma = writer.constant("\(node.name)/one", Array(repeating: 1, count: channels), shape: [channels])
            beta = writer.constant("\(node.name)/zero", Array(repeating: 0, count: channels), shape: [channels])
        }
        writer.node("BatchNormalization", name: node.name, inputs: [input(node), gamma, beta, mean, variance], outputs: [top],
                    [Attribute.float("epsilon", p.eps)])
    }

    /// The Scale layer that can merge into `batchNorm`: the only reader of its top, one bottom,
    /// one multiplier per channel (axis 1, num_axes 1).
    private func foldableScale(after batchNorm: Node) -> Node? {
        let top = graph.values[batchNorm.outputs[0]]
        guard top.consumers.count == 1, !graph.outputs.contains(top.id) else { return nil }
        let next = graph.nodes[top.consumers[0]]
        let p = next.layer.scaleParam
        guard next.kind == .scale, next.inputs.count == 1, TensorShape(top.shape.dims).canonicalAxis(Int(p.axis)) == 1, p.numAxes == 1 else { return nil }
        return next
    }

    /// Scale → `Mul` (then `Add` for its bias), Bias → `Add`. The operand covers input axes
    /// `axis ..< axis+num_axes` (or is the second bottom); it is reshaped with trailing 1s so ONNX's
    /// right-aligned broadcasting lines it up where Caffe does.
    mutating func lowerScaleOrBias(_ node: Node) throws {
        let isScale = node.kind == .scale
        let shape = inputShape(node)
        let axisValue = isScale ? Int(node.layer.scaleParam.axis) : Int(node.layer.biasParam.axis)
        let axis = TensorShape(shape).canonicalAxis(axisValue) ?? 0
        var operand: String
        var operandRank: Int
        var nextParameter = 0
        if node.inputs.count == 2 {
            operandRank = inputShape(node, 1).count
            let trailing = shape.count - axis - operandRank
            operand = trailing == 0 ? input(node, 1)
                : writer.node("Reshape", name: "\(node.name)/operand", inputs: [input(node, 1), writer.int64s("\(node.name)/shape", Array(repeating: 0, count: operandRank) + Array(repeating: 1, count: trailing))])
        } else {
            let blob = try weights.blob(of: node, index: 0)
            operandRank = blob.rank
            if axis == 0, operandRank > 0 { fixBatch(node, because: "has a learned operand along the batch axis") }
            let trailing = shape.count - axis - operandRank
            operand = writer.initializer("\(node.name)/0", NDArray(shape: blob.shape + Array(repeating: 1, count: max(trailing, 0)), data: blob.data))
            nextParameter = 1
        }
        guard isScale else {
            writer.node("Add", name: node.name, inputs: [input(node), operand], outputs: [output(node)])
            return
        }
        guard node.layer.scaleParam.biasTerm else {
            writer.node("Mul", name: node.name, inputs: [input(node), operand], outputs: [output(node)])
            return
        }
        let product = writer.node("Mul", name: "\(node.name)/scale", inputs: [input(node), operand])
        let bias = try weights.blob(of: node, index: nextParameter)
        let trailing = shape.count - axis - bias.rank
        let biasName = writer.initializer("\(node.name)/\(nextParameter)", NDArray(shape: bias.shape + Array(repeating: 1, count: max(trailing, 0)), data: bias.data))
        writer.node("Add", name: node.name, inputs: [product, biasName], outputs: [output(node)])
    }
}
