import CaffeFormat

/// Shape rules for layers that move, join, split or reduce blobs, for recurrent layers, and for losses.
extension ShapeInference {
    static func softmax(_ c: ShapeContext) throws -> LayerSignature {
        guard let axis = c.inputs[0].canonicalAxis(Int(c.layer.softmaxParam.axis)) else {
            throw Diagnostic("Softmax axis \(c.layer.softmaxParam.axis) is out of range for \(c.shapeText(0))")
        }
        var signature = sameShape(c, flopsPerElement: 4)
        signature.attributes = .axis(axis)
        return signature
    }

    static func concat(_ c: ShapeContext) throws -> LayerSignature {
        let p = c.layer.concatParam
        let first = c.inputs[0]
        guard !(p.hasConcatDim && p.hasAxis) else {
            throw Diagnostic("Concat gives both axis and concat_dim", hint: "keep axis (concat_dim is its legacy spelling), as Caffe requires one or the other")
        }
        let requested = p.hasConcatDim && !p.hasAxis ? Int(p.concatDim) : Int(p.axis)
        guard let axis = first.canonicalAxis(requested) else {
            throw Diagnostic("Concat axis \(requested) is out of range for \(c.shapeText(0))")
        }
        var output = first
        for i in 1..<c.inputs.count {
            let other = c.inputs[i]
            guard other.rank == first.rank else {
                throw Diagnostic("Concat inputs must have the same number of axes: \(c.shapeText(0)) vs \(c.shapeText(i))")
            }
            for d in 0..<first.rank where d != axis {
                if first[d] != other[d], first[d] != TensorShape.unknown, other[d] != TensorShape.unknown {
                    let differing = (0..<first.rank).filter { $0 != axis && first[$0] != other[$0] }
                    throw Diagnostic("Concat inputs must match on every axis except the concat axis \(axis): \(c.shapeText(0)) vs \(c.shapeText(i)) differ on axis \(differing.map(String.init).joined(separator: " and "))",
                                     hint: differing.count == 1 ? "check the layers that produce these blobs, or concatenate along axis \(d) (concat_param { axis: \(d) })"
                                                                : "check the layers that produce these blobs (pooling rounds up; padding changes sizes)")
                }
            }
            output[axis] = Extent.map(output[axis], other[axis]) { $0[0] + $0[1] }
        }
        return LayerSignature(outputs: [output], attributes: .axis(axis))
    }

    static func eltwise(_ c: ShapeContext) throws -> LayerSignature {
        let p = c.layer.eltwiseParam
        if !p.coeff.isEmpty {
            guard p.coeff.count == c.inputs.count else {
                throw Diagnostic("Eltwise has \(p.coeff.count) coeff values for \(c.inputs.count) bottoms; give one per bottom")
            }
            guard p.operation == .sum else { throw Diagnostic("Eltwise coeff is only allowed for operation SUM") }
        }
        for i in 1..<c.inputs.count where !c.inputs[i].isCompatible(with: c.inputs[0]) {
            var hint = "give both blobs the same shape, e.g. with a Reshape layer"
            if c.inputs[i].count != nil, c.inputs[i].count == c.inputs[0].count {
                hint = "they hold the same number of values (\(c.inputs[0].count!)); add a Reshape layer (reshape_param { shape { \(c.inputs[0].dims.map { "dim: \($0)" }.joined(separator: " ")) } }) to make \(c.name(i)) \(c.inputs[0])"
            }
            throw Diagnostic("Eltwise inputs must have identical shapes: \(c.name(0)) is \(c.inputs[0]), \(c.name(i)) is \(c.inputs[i])", hint: hint)
        }
        let coefficients = p.coeff.isEmpty ? [Float](repeating: 1, count: c.inputs.count) : p.coeff
        return LayerSignature(outputs: [c.inputs[0]], flops: (c.inputs[0].count ?? 0) &* max(1, c.inputs.count - 1),
                              attributes: .eltwise(EltwiseAttributes(operation: p.operation, coefficients: coefficients,
                                                                     stableProductGradient: p.stableProdGrad)))
    }

    static func reshape(_ c: ShapeContext) throws -> LayerSignature {
        let p = c.layer.reshapeParam
        let input = c.inputs[0]
        let requestedAxis = Int(p.axis)
        let start = requestedAxis >= 0 ? requestedAxis : input.rank + requestedAxis + 1
        guard start >= 0, start <= input.rank else {
            throw Diagnostic("Reshape axis \(requestedAxis) is out of range for \(c.shapeText(0))")
        }
        let numAxes = Int(p.numAxes)
        guard numAxes >= -1 else { throw Diagnostic("Reshape num_axes must be -1 or non-negative, got \(numAxes)") }
        let end = numAxes == -1 ? input.rank : start + numAxes
        guard end <= input.rank else {
            throw Diagnostic("Reshape axis \(start) + num_axes \(numAxes) runs past the \(input.rank) axes of \(c.shapeText(0))")
        }
        let spec = p.shape.dim.map(Int.init)
        var middle: [Int] = []
        var inferred: Int?
        for (i, d) in spec.enumerated() {
            switch d {
            case 0:
                guard start + i < input.rank else {
                    throw Diagnostic("Reshape dim \(i) is 0 (copy), but the input \(c.shapeText(0)) has no axis \(start + i)")
                }
                middle.append(input[start + i])
            case -1:
                guard inferred == nil else {
                    throw Diagnostic("Reshape shape has more than one -1 dim; at most one can be inferred",
                                     hint: "replace all but one -1 by the actual size (or 0 to copy the input's)")
                }
                inferred = i
                middle.append(TensorShape.unknown)
            default:
                guard d > 0 else { throw Diagnostic("Reshape dims must be positive, 0 (copy) or -1 (infer); got \(d)") }
                middle.append(d)
            }
        }
        var output = Array(input.dims[0..<start]) + middle + Array(input.dims[end...])
        let inputCount = input.count
        if let inferred {
            let known = output.enumerated().filter { $0.offset != start + inferred }.map(\.element)
            if let inputCount, !known.contains(TensorShape.unknown) {
                let rest = TensorShape(known).count ?? 0
                guard rest > 0, inputCount % rest == 0 else {
                    throw Diagnostic("cannot reshape \(c.shapeText(0)) (\(inputCount) values) to \(TensorShape(output)): \(inputCount) is not a multiple of \(rest)")
                }
                output[start + inferred] = inputCount / rest
            }
        } else if let inputCount, let outputCount = TensorShape(output).count, inputCount != outputCount {
            throw Diagnostic("cannot reshape \(c.shapeText(0)) (\(inputCount) values) to \(TensorShape(output)) (\(outputCount) values)",
                             hint: "the element count must not change; use -1 for one dim to infer it")
        }
        return LayerSignature(outputs: [TensorShape(output)])
    }

    static func flatten(_ c: ShapeContext) throws -> LayerSignature {
        let input = c.inputs[0]
        let p = c.layer.flattenParam
        guard let start = input.canonicalAxis(Int(p.axis)), let end = input.canonicalAxis(Int(p.endAxis)), start <= end else {
            throw Diagnostic("Flatten axis \(p.axis)...end_axis \(p.endAxis) is not a valid range for \(c.shapeText(0))")
        }
        let merged = Extent.product(Array(input.dims[start...end]))
        return LayerSignature(outputs: [TensorShape(Array(input.dims[0..<start]) + [merged] + Array(input.dims[(end + 1)...]))])
    }

    static func slice(_ c: ShapeContext) throws -> LayerSignature {
        let p = c.layer.sliceParam
        let input = c.inputs[0]
        guard !(p.hasSliceDim && p.hasAxis) else {
            throw Diagnostic("Slice gives both axis and slice_dim", hint: "keep axis (slice_dim is its legacy spelling), as Caffe requires one or the other")
        }
        let requested = p.hasSliceDim && !p.hasAxis ? Int(p.sliceDim) : Int(p.axis)
        guard let axis = input.canonicalAxis(requested) else {
            throw Diagnostic("Slice axis \(requested) is out of range for \(c.shapeText(0))")
        }
        let tops = c.layer.top.count
        let extent = input[axis]
        var sizes: [Int]
        if !p.slicePoint.isEmpty {
            guard p.slicePoint.count == tops - 1 else {
                throw Diagnostic("Slice has \(tops) tops but \(p.slicePoint.count) slice_point values; give one fewer points than tops")
            }
            let points = [0] + p.slicePoint.map(Int.init) + [extent]
            sizes = zip(points.dropFirst(), points).map { extent == TensorShape.unknown && $0.0 == extent ? TensorShape.unknown : $0.0 - $0.1 }
            if extent != TensorShape.unknown, sizes.contains(where: { $0 <= 0 }) {
                throw Diagnostic("slice points \(p.slicePoint) must increase strictly inside axis \(axis) of \(c.shapeText(0))")
            }
        } else {
            if extent != TensorShape.unknown, extent % tops != 0 {
                throw Diagnostic("cannot split axis \(axis) of \(c.shapeText(0)) evenly into \(tops) tops", hint: "give slice_point values")
            }
            sizes = Array(repeating: extent == TensorShape.unknown ? extent : extent / tops, count: tops)
        }
        return LayerSignature(outputs: sizes.map { size in
            var s = input
            s[axis] = size
            return s
        }, attributes: .axis(axis))
    }

    static func tile(_ c: ShapeContext) throws -> LayerSignature {
        let p = c.layer.tileParam
        guard let axis = c.inputs[0].canonicalAxis(Int(p.axis)) else { throw Diagnostic("Tile axis \(p.axis) is out of range for \(c.shapeText(0))") }
        guard p.tiles > 0 else { throw Diagnostic("Tile needs tiles > 0") }
        var output = c.inputs[0]
        output[axis] = Extent.map(output[axis]) { $0[0] * Int(p.tiles) }
        return LayerSignature(outputs: [output])
    }

    static func reduction(_ c: ShapeContext) throws -> LayerSignature {
        let input = c.inputs[0]
        guard let axis = input.canonicalAxis(Int(c.layer.reductionParam.axis)) else {
            throw Diagnostic("Reduction axis \(c.layer.reductionParam.axis) is out of range for \(c.shapeText(0))")
        }
        return LayerSignature(outputs: [TensorShape(Array(input.dims[0..<axis]))], flops: input.count ?? 0)
    }

    static func argMax(_ c: ShapeContext) throws -> LayerSignature {
        let p = c.layer.argmaxParam
        let input = c.inputs[0]
        let topK = Int(p.topK)
        guard topK >= 1 else { throw Diagnostic("ArgMax top_k must be at least 1") }
        var output: TensorShape
        if p.hasAxis {
            guard let axis = input.canonicalAxis(Int(p.axis)) else { throw Diagnostic("ArgMax axis \(p.axis) is out of range for \(c.shapeText(0))") }
            output = input
            output[axis] = topK
        } else {
            output = TensorShape(Array(repeating: 1, count: max(input.rank, 3)))
            output[0] = input.rank > 0 ? input[0] : 1
            output[2] = topK
            if p.outMaxVal { output[1] = 2 }
        }
        return LayerSignature(outputs: [output])
    }

    static func embed(_ c: ShapeContext) throws -> LayerSignature {
        let p = c.layer.embedParam
        guard p.numOutput > 0, p.inputDim > 0 else {
            throw Diagnostic("Embed needs num_output and input_dim", hint: "add embed_param { num_output: N input_dim: V }")
        }
        var parameters: [(TensorShape, String)] = [(TensorShape([Int(p.inputDim), Int(p.numOutput)]), "weights")]
        if p.biasTerm { parameters.append((TensorShape([Int(p.numOutput)]), "bias")) }
        return LayerSignature(outputs: [TensorShape(c.inputs[0].dims + [Int(p.numOutput)])], parameters: parameters)
    }

    // MARK: - Recurrent

    /// Caffe's `RecurrentLayer::LayerSetUp`/`Reshape` for LSTM and RNN: x is T×N×…, cont T×N,
    /// an optional static input N×…, then (with `expose_hidden`) the initial state blobs, each
    /// 1×N×H (h0, plus c0 for an LSTM); tops are h (T×N×H) and, exposed, the final states.
    /// Parameters in the order the unrolled net creates them: LSTM `W_xc, b_c, [W_xc_static],
    /// W_hc`; RNN `W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o`.
    static func recurrent(_ c: ShapeContext) throws -> LayerSignature {
        let p = c.layer.recurrentParam
        let x = c.inputs[0], cont = c.inputs[1]
        guard x.rank >= 2 else {
            throw Diagnostic("\(c.kind.rawValue) input \(c.shapeText(0)) must have at least 2 axes, T×N×… (time steps, independent streams, features)",
                             hint: "reshape the input to T×N×D, e.g. with a Reshape layer")
        }
        guard p.numOutput > 0 else { throw Diagnostic("\(c.kind.rawValue) needs recurrent_param { num_output: H }") }
        let steps = x[0], batch = x[1]
        let expected = TensorShape([steps, batch])
        guard cont.rank == 2, cont.isCompatible(with: expected) else {
            throw Diagnostic("\(c.kind.rawValue) sequence-continuation input \(c.name(1)) must be T×N = \(expected) to match \(c.shapeText(0)), but it is \(cont)",
                             hint: "give one 0/1 marker per time step and stream (0 starts a new sequence)")
        }
        let hidden = Int(p.numOutput)
        let features = x.count(from: 2) ?? TensorShape.unknown
        let isLSTM = c.kind == .lstm
        let recurrentBlobs = isLSTM ? 2 : 1
        let exposed = p.exposeHidden ? recurrentBlobs : 0
        let extra = c.inputs.count - 2 - exposed
        guard extra == 0 || extra == 1 else {
            let names = isLSTM ? "h0 and c0" : "h0"
            throw Diagnostic("\(c.kind.rawValue) takes x, cont, an optional static input\(p.exposeHidden ? " and the initial states \(names)" : ""); got \(c.inputs.count) bottoms",
                             hint: p.exposeHidden ? "list bottoms x, cont, [static], \(names)" : "set recurrent_param { expose_hidden: true } to feed initial states")
        }
        let hasStatic = extra == 1
        if hasStatic {
            let staticInput = c.inputs[2]
            guard staticInput.rank >= 1, staticInput[0] == TensorShape.unknown || batch == TensorShape.unknown || staticInput[0] == batch else {
                throw Diagnostic("\(c.kind.rawValue) static input \(c.name(2)) must be N×… with N = \(batch == TensorShape.unknown ? "?" : String(batch)) streams (from \(c.shapeText(0))), but it is \(staticInput)",
                                 hint: "give one static feature vector per stream")
            }
        }
        let state = TensorShape([1, batch, hidden])
        for k in 0..<exposed {
            let index = 2 + (hasStatic ? 1 : 0) + k
            guard c.inputs[index].isCompatible(with: state) else {
                throw Diagnostic("\(c.kind.rawValue) initial state \(c.name(index)) must be 1×N×H = \(state), but it is \(c.inputs[index])",
                                 hint: "feed the state of one time step for every stream")
            }
        }
        let staticFeatures = hasStatic ? (c.inputs[2].count(from: 1) ?? TensorShape.unknown) : 0
        var parameters: [(TensorShape, String)] = []
        if isLSTM {
            parameters.append((TensorShape([4 * hidden, features]), "W_xc"))
            parameters.append((TensorShape([4 * hidden]), "b_c"))
            if hasStatic { parameters.append((TensorShape([4 * hidden, staticFeatures]), "W_xc_static")) }
            parameters.append((TensorShape([4 * hidden, hidden]), "W_hc"))
        } else {
            parameters.append((TensorShape([hidden, features]), "W_xh"))
            parameters.append((TensorShape([hidden]), "b_h"))
            if hasStatic { parameters.append((TensorShape([hidden, staticFeatures]), "W_xh_static")) }
            parameters.append((TensorShape([hidden, hidden]), "W_hh"))
            parameters.append((TensorShape([hidden, hidden]), "W_ho"))
            parameters.append((TensorShape([hidden]), "b_o"))
        }
        // Every top Caffe makes: h, then the exposed final states (the builder checks the count).
        let outputs = [TensorShape([steps, batch, hidden])] + Array(repeating: state, count: exposed)
        let gates = isLSTM ? 4 : 1
        let known = steps != TensorShape.unknown && batch != TensorShape.unknown && features != TensorShape.unknown
        var flops = known ? 2 &* steps &* batch &* gates &* hidden &* (features + hidden) : 0
        if known, !isLSTM { flops = flops &+ 2 &* steps &* batch &* hidden &* hidden }
        if known, hasStatic, staticFeatures != TensorShape.unknown { flops = flops &+ 2 &* batch &* gates &* hidden &* staticFeatures }
        return LayerSignature(outputs: outputs, parameters: parameters, flops: flops)
    }

    static func lstmUnit(_ c: ShapeContext) throws -> LayerSignature {
        let previous = c.inputs[0], gates = c.inputs[1]
        guard previous.rank == 3, gates.rank == 3 else {
            throw Diagnostic("LSTMUnit takes c_prev 1×N×H and gates 1×N×4H; got \(c.shapeText(0)) and \(c.shapeText(1))")
        }
        if previous[2] != TensorShape.unknown, gates[2] != TensorShape.unknown, gates[2] != 4 * previous[2] {
            throw Diagnostic("LSTMUnit gates \(c.shapeText(1)) must have 4× the channels of c_prev \(c.shapeText(0))")
        }
        return LayerSignature(outputs: [previous, previous], flops: 10 &* (previous.count ?? 0))
    }

    // MARK: - Losses

    static func loss(_ c: ShapeContext) throws -> LayerSignature {
        let scores = c.inputs[0], labels = c.inputs[1]
        // LossLayer::Reshape: the first dims of data and label agree (Accuracy has its own rules).
        if c.kind != .accuracy, scores.rank > 0, labels.rank > 0,
           scores[0] != TensorShape.unknown, labels[0] != TensorShape.unknown, scores[0] != labels[0] {
            throw Diagnostic("\(c.kind.rawValue) inputs must have the same first (batch) dimension: \(c.shapeText(0)) vs \(c.shapeText(1))")
        }
        var outputs = [TensorShape.scalar]
        var attributes: NodeAttributes?  // the class axis of the losses that have one
        switch c.kind {
        case .softmaxWithLoss, .accuracy:
            let axisValue = Int(c.layer.softmaxParam.axis)
            let axis = c.kind == .accuracy ? Int(c.layer.accuracyParam.axis) : axisValue
            guard let resolved = scores.canonicalAxis(axis) else {
                throw Diagnostic("\(c.kind.rawValue) axis \(axis) is out of range for \(c.shapeText(0))")
            }
            attributes = .axis(resolved)
            let outer = scores.count(from: 0, to: resolved), inner = scores.count(from: resolved + 1)
            if let outer, let inner, let labelCount = labels.count, outer * inner != labelCount {
                throw Diagnostic("\(c.kind.rawValue) needs one label per prediction: \(c.shapeText(0)) makes \(outer * inner) predictions along axis \(resolved), but \(c.shapeText(1)) holds \(labelCount) labels",
                                 hint: "labels are N (or N×1×H×W) integers for N×C(×H×W) scores")
            }
            if c.kind == .accuracy {
                let topK = Int(c.layer.accuracyParam.topK)
                if scores[resolved] != TensorShape.unknown, topK > scores[resolved] {
                    throw Diagnostic("Accuracy top_k \(topK) exceeds the \(scores[resolved]) classes of \(c.shapeText(0))")
                }
                if c.layer.top.count > 1 { outputs.append(TensorShape([scores[resolved]])) }
            } else if c.layer.top.count > 1 {
                outputs.append(scores)
            }
            // SegNet's and ENet's class weighting: one weight per class (their CHECK_EQ in LayerSetUp).
            let weighting = c.layer.lossParam
            if c.kind == .softmaxWithLoss, weighting.weightByLabelFreqs, scores[resolved] != TensorShape.unknown,
               weighting.classWeighting.count != scores[resolved] {
                throw Diagnostic("loss_param.weight_by_label_freqs needs one class_weighting value per class: \(weighting.classWeighting.count) given, but \(c.shapeText(0)) has \(scores[resolved]) classes along axis \(resolved)",
                                 hint: "list \(scores[resolved]) class_weighting values (SegNet's and ENet's 'Number of class weight values does not match the number of classes')")
            }
        case .sigmoidCrossEntropyLoss:
            if let a = scores.count, let b = labels.count, a != b {
                throw Diagnostic("SigmoidCrossEntropyLoss inputs must hold the same number of values: \(c.shapeText(0)) has \(a), \(c.shapeText(1)) has \(b)")
            }
        case .euclideanLoss:
            if let a = scores.count(from: 1), let b = labels.count(from: 1), a != b {
                throw Diagnostic("EuclideanLoss inputs must hold the same number of values per item: \(c.shapeText(0)) vs \(c.shapeText(1))")
            }
        case .contrastiveLoss:
            let other = c.inputs[1], similar = c.inputs[2]
            guard scores.isCompatible(with: other) else {
                throw Diagnostic("ContrastiveLoss feature inputs must have the same shape: \(c.shapeText(0)) vs \(c.shapeText(1))")
            }
            if let n = scores.rank > 0 ? scores[0] : nil, let s = similar.count, n != TensorShape.unknown, s != n {
                throw Diagnostic("ContrastiveLoss needs one similarity label per pair: \(c.shapeText(2)) for \(n) pairs")
            }
        case .smoothL1Loss:
            for i in 1..<c.inputs.count where !c.inputs[i].isCompatible(with: scores) && c.inputs[i].count != scores.count {
                throw Diagnostic("SmoothL1Loss inputs must have the same shape: \(c.shapeText(0)) vs \(c.shapeText(i))")
            }
        case .multinomialLogisticLoss, .hingeLoss, .infogainLoss:
            if c.kind == .infogainLoss {
                guard let axis = scores.canonicalAxis(Int(c.layer.infogainLossParam.axis)) else {
                    throw Diagnostic("InfogainLoss axis \(c.layer.infogainLossParam.axis) is out of range for \(c.shapeText(0))")
                }
                attributes = .axis(axis)
            }
            if let n = scores.rank > 0 ? scores[0] : nil, let count = labels.count, n != TensorShape.unknown, count != n {
                throw Diagnostic("\(c.kind.rawValue) needs one label per item: \(c.shapeText(0)) vs \(c.shapeText(1))")
            }
        default:
            break
        }
        let tops = c.layer.top.count
        return LayerSignature(outputs: Array(outputs.prefix(max(tops, 1))), flops: 4 &* (scores.count ?? 0), attributes: attributes)
    }
}

extension ShapeInference {
    /// Filter (`FilterLayer::LayerSetUp`/`Reshape`): the last bottom is the selector, one value per
    /// row (its axes after the first must be 1); every other bottom is filtered row by row and
    /// gets one top. The tops keep Caffe's *setup* shape — all N rows, as `first_reshape_` makes
    /// them — because the selected count is data: Caffe resizes the tops at every Forward, and a
    /// compiled net re-specializes itself for the count it observes (`Graph.specializingRows`).
    /// Caffe CHECKs each bottom's first axis against the selector's; here the data bottoms are
    /// compared with one another first, so a mismatch names the two blobs that disagree.
    static func filter(_ c: ShapeContext) throws -> LayerSignature {
        let s = c.inputs.count - 1, selector = c.inputs[s]
        let unknown = TensorShape.unknown
        guard c.layer.top.count == s else {
            throw Diagnostic("Filter filters \(s) bottom\(s == 1 ? "" : "s") (the last bottom, \(c.name(s)), is the selector), so it needs \(s) top\(s == 1 ? "" : "s"), got \(c.layer.top.count)",
                             hint: "give one top per filtered bottom, in the same order")
        }
        guard selector.rank >= 1, (1..<selector.rank).allSatisfy({ selector[$0] == 1 || selector[$0] == unknown }) else {
            throw Diagnostic("Filter's selector \(c.shapeText(s)) must hold one value per row: shape N, or N×1×…×1",
                             hint: "the selector is the last bottom; reshape it to N values (e.g. reshape_param { shape { dim: 0 } axis: 0 num_axes: -1 })")
        }
        for i in 0..<s where c.inputs[i].rank == 0 {
            throw Diagnostic("Filter cannot filter \(c.shapeText(i)): a 0-d blob has no rows")
        }
        for i in 1..<s where c.inputs[i][0] != c.inputs[0][0] && c.inputs[i][0] != unknown && c.inputs[0][0] != unknown {
            throw Diagnostic("Filter's filtered bottoms must have the same number of rows (first axis): \(c.shapeText(0)) has \(c.inputs[0][0]), \(c.shapeText(i)) has \(c.inputs[i][0])",
                             hint: "the selector picks the same rows of every bottom; filter blobs of different batch sizes with separate Filter layers")
        }
        for i in 0..<s where c.inputs[i][0] != selector[0] && c.inputs[i][0] != unknown && selector[0] != unknown {
            throw Diagnostic("Filter's selector \(c.shapeText(s)) has \(selector[0]) value\(selector[0] == 1 ? "" : "s"), but \(c.shapeText(i)) has \(c.inputs[i][0]) rows",
                             hint: "the selector (the last bottom) needs one value per row of every filtered bottom")
        }
        return LayerSignature(outputs: Array(c.inputs[..<s]))
    }
}
