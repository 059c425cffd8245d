import CaffeFormat
import Graph
import Runtime

/// The extents of one LSTM or RNN layer and where its bottoms and parameter blobs sit, read once
/// for the inference lowering and the training (BPTT) lowering.
///
/// With `x` T×N×… (I = the product of the axes after the second, as Caffe's InnerProduct with
/// `axis: 2` flattens them), `cont` T×N, an optional static input N×… (S features), and
/// H = `num_output`, one time step computes G pre-activations per stream: G = 4H for an LSTM
/// (gates i, f, o, g, in that order) and G = H for an RNN. Parameter indices follow the order in
/// which Caffe's unrolled net creates the blobs, so they are the layer's own blob indices:
/// LSTM `W_xc, b_c, [W_xc_static], W_hc`; RNN `W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o`.
/// Example: the golden `layers/lstm` case has T 3, N 2, I 5, H 4, G 16.
struct RecurrentGeometry {
    let isLSTM: Bool
    let steps: Int, batch: Int, features: Int, hidden: Int
    /// S, the static input's features per stream, when bottom 2 is a static input.
    let staticFeatures: Int?
    /// Whether the initial states are bottoms and the final states tops (`expose_hidden`).
    let exposesHidden: Bool

    /// Pre-activations per stream and step: 4H (LSTM) or H (RNN).
    var gates: Int { isLSTM ? 4 * hidden : hidden }
    /// Floats of one step's state over all streams (N·H) and of one step's pre-activations (N·G).
    var stateCount: Int { batch * hidden }
    var gateCount: Int { batch * gates }
    var hasStatic: Bool { staticFeatures != nil }
    /// Bottom index of the first exposed initial state (h0; c0 follows for an LSTM).
    var firstStateBottom: Int { hasStatic ? 3 : 2 }

    let inputWeights = 0, inputBias = 1
    var staticWeights: Int { 2 }
    var recurrentWeights: Int { hasStatic ? 3 : 2 }
    /// RNN only: the output projection `W_ho` and `b_o`.
    var outputWeights: Int { recurrentWeights + 1 }
    var outputBias: Int { recurrentWeights + 2 }

    init(_ node: Node, _ graph: Graph) throws {
        let p = node.layer.recurrentParam
        isLSTM = node.kind == .lstm
        exposesHidden = p.exposeHidden
        let x = graph.values[node.inputs[0]].shape.dims
        let cont = graph.values[node.inputs[1]].shape.dims
        guard x.count >= 2 else {
            throw Diagnostic("\(node.kind.rawValue) input \(TensorShape(x)) must have at least 2 axes (T×N×…)", at: node.location, layer: node.name)
        }
        steps = x[0]
        batch = x[1]
        features = x[2...].reduce(1, *)
        hidden = Int(p.numOutput)
        guard steps > 0, batch > 0, hidden > 0 else {
            throw Diagnostic("\(node.kind.rawValue) needs at least one time step, one stream and one output; got x \(TensorShape(x)) and num_output \(hidden)",
                             at: node.location, layer: node.name)
        }
        guard cont == [steps, batch] else {
            throw Diagnostic("\(node.kind.rawValue) sequence-continuation input must be T×N = \(steps)×\(batch), but it is \(TensorShape(cont))",
                             at: node.location, layer: node.name)
        }
        let exposed = p.exposeHidden ? (isLSTM ? 2 : 1) : 0
        switch node.inputs.count - 2 - exposed {
        case 0: staticFeatures = nil
        case 1:
            let dims = graph.values[node.inputs[2]].shape.dims
            guard dims.first == batch else {
                throw Diagnostic("\(node.kind.rawValue) static input must be N×… with N = \(batch), but it is \(TensorShape(dims))",
                                 at: node.location, layer: node.name)
            }
            staticFeatures = dims[1...].reduce(1, *)
        default:
            throw Diagnostic("\(node.kind.rawValue) takes x, cont, an optional static input and \(exposed) exposed state(s); got \(node.inputs.count) bottoms",
                             at: node.location, layer: node.name)
        }
    }
}

/// LSTM and RNN, lowered directly rather than unrolled into a net of InnerProduct, Eltwise, Scale,
/// Slice, Concat and LSTMUnit layers as Caffe's `RecurrentLayer` builds it.
///
/// Why direct: Caffe's unrolled net costs per time step one InnerProduct, one Scale, one Eltwise,
/// one LSTMUnit and the Slice/Concat copies, each with its own blob. Lowered directly, the input
/// projection of all T·N rows is one GEMM, and a time step is one GEMM (`h_{t−1}·W_hᵀ`
/// accumulated into that step's slice of the projection, `beta = 1`) plus one JIT'd kernel that
/// applies the gates, writes `h_t` straight into the top and already multiplies it by
/// `cont_{t+1}` for the next step. The intermediate values live in scratch buffers of the layer,
/// so `--blobs all` lists only the layer's tops, as Caffe's `net.blobs` does, and the parameters
/// stay the layer's own blobs in Caffe's order (caffemodels, `net.params`, solvers, export see
/// them unchanged). Training reuses this forward and adds BPTT (`lowerRecurrentBackward`). An
/// unrolled graph would instead add about five nodes and blobs per time step to compile, plan and
/// hide again. Here the layer runs at GEMM speed: coco_caption's lrcn_word_to_preds (N 1000,
/// H 1000) spends ~85 ms on lstm1's 16 GFLOP on this 2-core machine.
///
/// Caffe semantics kept: `h_conted_{t−1} = cont_t·h_{t−1}` feeds the recurrent product, and an
/// LSTM's forget gate is 0 where `cont_t == 0`; without `expose_hidden` the layer carries its final
/// h (and c) to the next forward of the same compiled net (Caffe copies `h_T` into `h_0` at every
/// Forward; `cont = 0` at t = 0 starts fresh), which word-by-word caption generation relies on;
/// `Net` keeps one compiled net per concurrent caller and blob selection, each with its own state.
/// With `expose_hidden` the initial states are bottoms and the final states are copied to the
/// extra tops.
extension Lowering {
    /// The standard logistic function `1/(1 + e^−x)`, as LSTMUnit's source defines it.
    static func sigmoid(_ b: KernelBuilder, _ x: Scalar) -> Scalar { 1 / (1 + b.exp(-x)) }

    /// One LSTM step (and Caffe's LSTMUnit): per stream `n` (one task each) and unit `k`, with
    /// gate pre-activations (i, f, o, g), `c = f·c_prev + i·g` where f is 0 when `cont` is 0 (and
    /// scaled by it otherwise), and `h = o·tanh(c)`. Caffe's LSTMUnit evaluates its sigmoid and its
    /// `tanh = 2·sigmoid(2x) − 1` in double (its `1.` and `2.` literals promote) and rounds to
    /// float; `1/(1 + e^−x)` in float and libm's `tanhf` stay within an ulp or two of that.
    ///
    /// Operands: `c_prev, gates, cont, c, h`, then with `hasStatic` the static projection (N×4H,
    /// added to the gates, which are stored back so backward reads the full pre-activation), then
    /// with `hasNext` `cont_{t+1}` and the next step's `cont_{t+1}·h` buffer.
    mutating func emitLSTMStep(_ node: Node, operands: [Operand], batch: Int, hidden: Int, hasStatic: Bool, hasNext: Bool) throws {
        let signature = "lstm.step h\(hidden) static=\(hasStatic) next=\(hasNext)"
        try emitKernel(node, signature, operands: operands, tasks: batch, work: batch * hidden * 24) { b in
            let (previous, x, cont, c, h) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3), b.operand(4))
            let staticGates = hasStatic ? b.operand(5) : nil
            let next = hasNext ? (b.operand(hasStatic ? 6 : 5), b.operand(hasStatic ? 7 : 6)) : nil
            b.forEachTask { n in
                let row = n * (4 * hidden), keep = cont[n]
                let nextKeep = next.map { $0.0[n] }
                b.loop(0..<hidden) { k in
                    func gate(_ j: Int) -> Scalar {
                        guard let staticGates else { return x[row + (j * hidden) + k] }
                        let value = x[row + (j * hidden) + k] + staticGates[row + (j * hidden) + k]
                        x[row + (j * hidden) + k] = value
                        return value
                    }
                    let i = Lowering.sigmoid(b, gate(0))
                    let f = b.select(b.equal(keep, b.constant(0)), b.constant(0), keep * Lowering.sigmoid(b, gate(1)))
                    let o = Lowering.sigmoid(b, gate(2))
                    let g = b.tanh(gate(3))
                    let at = n * hidden + k
                    let value = f * previous[at] + i * g
                    c[at] = value
                    let output = o * b.tanh(value)
                    h[at] = output
                    if let next, let nextKeep { next.1[at] = nextKeep * output }
                }
            }
        }
    }

    /// LSTMUnit in inference: one `lstm.step` without static input or a next step.
    mutating func lowerLSTMUnit(_ node: Node) throws {
        let dims = shape(node.inputs[0])
        guard dims.count == 3, dims[0] == 1, count(node.inputs[1]) == 4 * count(node.inputs[0]), count(node.inputs[2]) == dims[1] else {
            throw Diagnostic("LSTMUnit needs c_prev 1×N×H, gates 1×N×4H and cont 1×N; got \(TensorShape(dims)), \(TensorShape(shape(node.inputs[1]))), \(TensorShape(shape(node.inputs[2])))",
                             at: node.location, layer: node.name)
        }
        let operands = [node.inputs[0], node.inputs[1], node.inputs[2], node.outputs[0], node.outputs[1]].map { Operand(buffer($0)) }
        try emitLSTMStep(node, operands: operands, batch: dims[1], hidden: dims[2], hasStatic: false, hasNext: false)
    }

    /// LSTM or RNN forward (see the extension's comment). Scratch buffers, which the training
    /// lowering's backward finds by name: `gates` (LSTM: every step's pre-activations, T×N×4H),
    /// `hidden` (RNN: every step's h, T×N×H), `cells` (LSTM: c_0 … c_T, (T+1)×N×H) and
    /// `gated hidden` (every step's `cont_t·h_{t−1}`, T×N×H), and with `savesOutput` (RNN) `outputs`,
    /// a copy of o that a later in-place layer cannot change (Caffe's backward reads its internal o_t).
    mutating func lowerRecurrent(_ node: Node, savesOutput: Bool = false) throws {
        let g = try RecurrentGeometry(node, graph)
        let blobs = try parameterBlobs(node)
        func role(_ k: Int) -> String { node.parameters[k].role }
        let inputWeights = parameter(node, g.inputWeights, role(g.inputWeights), blobs)
        let inputBias = parameter(node, g.inputBias, role(g.inputBias), blobs)
        let recurrentWeights = parameter(node, g.recurrentWeights, role(g.recurrentWeights), blobs)
        let (t, n, h, gates) = (g.steps, g.batch, g.hidden, g.gates)

        // Input projection of every step at once: pre = x·W_xᵀ + b (InnerProduct's order).
        let pre = scratch(node, g.isLSTM ? "gates" : "hidden", count: t * g.gateCount)
        var projection = GemmStep(m: t * n, n: gates, k: g.features, a: Operand(buffer(node.inputs[0])), lda: g.features,
                                  b: Operand(inputWeights), ldb: g.features, c: Operand(pre), ldc: gates)
        projection.transB = true
        emitGemm(node, projection)
        try emitChannelAffine(node, input: Operand(pre), output: Operand(pre), outer: t * n, channels: gates, inner: 1, shift: Operand(inputBias))

        var staticGates: Operand?
        if let s = g.staticFeatures {
            let weights = parameter(node, g.staticWeights, role(g.staticWeights), blobs)
            let target = scratch(node, "static gates", count: g.gateCount)
            var gemm = GemmStep(m: n, n: gates, k: s, a: Operand(buffer(node.inputs[2])), lda: s, b: Operand(weights), ldb: s,
                                c: Operand(target), ldc: gates)
            gemm.transB = true
            emitGemm(node, gemm)
            staticGates = Operand(target)
        }

        // Initial states: the exposed bottoms, or what the previous forward left (zeros at first).
        let initialH: Operand, initialC: Operand?
        var finalH: Operand?, finalC: Operand?
        if g.exposesHidden {
            initialH = Operand(buffer(node.inputs[g.firstStateBottom]))
            initialC = g.isLSTM ? Operand(buffer(node.inputs[g.firstStateBottom + 1])) : nil
            if node.outputs.count > 1 { finalH = Operand(buffer(node.outputs[1])) }
            if g.isLSTM, node.outputs.count > 2 { finalC = Operand(buffer(node.outputs[2])) }
        } else {
            let stateH = program.addPersistent("\(node.name)/h state", count: g.stateCount)
            initialH = Operand(stateH)
            finalH = initialH
            recurrentStates.append(stateH)
            if g.isLSTM {
                let stateC = program.addPersistent("\(node.name)/c state", count: g.stateCount)
                initialC = Operand(stateC)
                finalC = initialC
                recurrentStates.append(stateC)
            } else {
                initialC = nil
            }
        }
        let cont = buffer(node.inputs[1])
        let gated = scratch(node, "gated hidden", count: t * g.stateCount)
        let cells = g.isLSTM ? scratch(node, "cells", count: (t + 1) * g.stateCount) : nil
        try emitScaleRows(node, scale: Operand(cont), input: initialH, output: Operand(gated), rows: n, width: h)
        if let initialC, let cells { try emitCopyRows(node, from: initialC, to: Operand(cells), rows: n, width: h) }

        let output = buffer(node.outputs[0])
        for step in 0..<t {
            let hasNext = step + 1 < t
            var recurrent = GemmStep(m: n, n: gates, k: h, a: Operand(gated, offset: step * g.stateCount), lda: h,
                                     b: Operand(recurrentWeights), ldb: h, c: Operand(pre, offset: step * g.gateCount), ldc: gates)
            recurrent.transB = true
            recurrent.beta = 1
            emitGemm(node, recurrent)
            var operands: [Operand]
            if let cells {
                operands = [Operand(cells, offset: step * g.stateCount), Operand(pre, offset: step * g.gateCount), Operand(cont, offset: step * n),
                            Operand(cells, offset: (step + 1) * g.stateCount), Operand(output, offset: step * g.stateCount)]
            } else {
                operands = [Operand(pre, offset: step * g.gateCount)]
            }
            if let staticGates { operands.append(staticGates) }
            if hasNext { operands += [Operand(cont, offset: (step + 1) * n), Operand(gated, offset: (step + 1) * g.stateCount)] }
            if g.isLSTM {
                try emitLSTMStep(node, operands: operands, batch: n, hidden: h, hasStatic: staticGates != nil, hasNext: hasNext)
            } else {
                try emitRNNStep(node, operands: operands, batch: n, hidden: h, hasStatic: staticGates != nil, hasNext: hasNext)
            }
        }

        let lastH = g.isLSTM ? Operand(output, offset: (t - 1) * g.stateCount) : Operand(pre, offset: (t - 1) * g.stateCount)
        if !g.isLSTM {
            // o = tanh(h·W_hoᵀ + b_o) over all steps at once.
            let weights = parameter(node, g.outputWeights, role(g.outputWeights), blobs)
            let bias = parameter(node, g.outputBias, role(g.outputBias), blobs)
            var gemm = GemmStep(m: t * n, n: h, k: h, a: Operand(pre), lda: h, b: Operand(weights), ldb: h, c: Operand(output), ldc: h)
            gemm.transB = true
            emitGemm(node, gemm)
            var operands = [Operand(output), Operand(bias)]
            if savesOutput { operands.append(Operand(scratch(node, "outputs", count: t * g.stateCount))) }
            try emitKernel(node, "rnn.output h\(h) copy=\(savesOutput)", operands: operands, tasks: t * n, work: t * n * h * 8) { b in
                let (y, bias) = (b.operand(0), b.operand(1))
                let copy = savesOutput ? b.operand(2) : nil
                b.forEachTask { row in
                    b.loop(0..<h) { k in
                        let value = b.tanh(y[row * h + k] + bias[k])
                        y[row * h + k] = value
                        if let copy { copy[row * h + k] = value }
                    }
                }
            }
        }
        if let finalH { try emitCopyRows(node, from: lastH, to: finalH, rows: n, width: h) }
        if let finalC, let cells { try emitCopyRows(node, from: Operand(cells, offset: t * g.stateCount), to: finalC, rows: n, width: h) }
    }

    /// One RNN step, one task per stream: `h = tanh(pre (+ static))` written over the
    /// pre-activations, and with `hasNext` `cont_{t+1}·h` for the next step. Operands: `pre`, then
    /// the static projection with `hasStatic`, then `cont_{t+1}` and the next gated buffer.
    mutating func emitRNNStep(_ node: Node, operands: [Operand], batch: Int, hidden: Int, hasStatic: Bool, hasNext: Bool) throws {
        try emitKernel(node, "rnn.step h\(hidden) static=\(hasStatic) next=\(hasNext)", operands: operands,
                       tasks: batch, work: batch * hidden * 8) { b in
            let pre = b.operand(0)
            let staticGates = hasStatic ? b.operand(1) : nil
            let next = hasNext ? (b.operand(hasStatic ? 2 : 1), b.operand(hasStatic ? 3 : 2)) : nil
            b.forEachTask { n in
                let nextKeep = next.map { $0.0[n] }
                b.loop(0..<hidden) { k in
                    let at = n * hidden + k
                    let input = staticGates.map { pre[at] + $0[at] } ?? pre[at]
                    let value = b.tanh(input)
                    pre[at] = value
                    if let next, let nextKeep { next.1[at] = nextKeep * value }
                }
            }
        }
    }

    /// `output[r, k] = scale[r] · input[r, k]` for `rows` rows of `width` (Caffe's Scale with
    /// `axis: 0`, as the unrolled net gates `h_{t−1}` by `cont_t`). One task per row.
    mutating func emitScaleRows(_ node: Node, scale: Operand, input: Operand, output: Operand, rows: Int, width: Int) throws {
        try emitKernel(node, "scale.rows w\(width)", operands: [scale, input, output], tasks: rows, work: rows * width) { b in
            let (s, x, y) = (b.operand(0), b.operand(1), b.operand(2))
            b.forEachTask { row in
                let factor = s[row]
                b.loop(0..<width) { k in y[row * width + k] = x[row * width + k] * factor }
            }
        }
    }

    /// Copies `rows` rows of `width` contiguous floats (the same kernel Concat uses for one block).
    mutating func emitCopyRows(_ node: Node, from source: Operand, to target: Operand, rows: Int, width: Int) throws {
        try emitKernel(node, "copy.rows in\(width) out\(width)", operands: [source, target], tasks: rows, work: rows * width) { b in
            let (x, y) = (b.operand(0), b.operand(1))
            b.forEachTask { row in
                b.loop(0..<width) { i in y[row * width + i] = x[row * width + i] }
            }
        }
    }
}
