import CaffeFormat
import Graph
import NumPy

/// The segmentation and sequence forks' layers that ONNX has operators for: SegNet's and ENet's
/// BN (Mul and Add; with batch statistics, ReduceMean over N, H, W first), ENet's spatial
/// dropout (Identity or Mul, as SwiftJIT's inference runs it), CTPN's Transpose (Transpose) and
/// Reverse (Slice with step −1), SegNet's Upsample (MaxUnpool), CTPN's Lstm (LSTM). Caffe's own
/// LSTM and RNN are refused: their `cont` bottom can reset the state at any step.
extension ONNXLowering {
    /// BN: INFERENCE is `x·scale + shift` with the 1×C×1×1 blobs broadcast; LEARN normalizes with
    /// the batch's mean and biased variance first (eps 1e-9), as the forks do in every phase. A
    /// LEARN BN's second and third tops (the batch statistics) are exported too.
    mutating func lowerBN(_ node: Node) throws {
        let rank = inputShape(node).count
        guard rank == 4 else { throw unsupported(node, "its input has \(rank) axes; the export writes N×C×H×W BN layers") }
        let scale = try parameter(node, 0), shift = try parameter(node, 1)
        var x = input(node)
        if node.layer.bnParam.bnMode == .learn {
            fixBatch(node, because: "normalizes with statistics over the whole batch")
            let mean = reduce("ReduceMean", x, axes: [0, 2, 3], keepDims: true, name: "\(node.name)/mean",
                              output: node.outputs.count > 1 ? output(node, 1) : nil)
            let centered = writer.node("Sub", name: "\(node.name)/center", inputs: [x, mean])
            let square = writer.node("Mul", name: "\(node.name)/square", inputs: [centered, centered])
            let variance = reduce("ReduceMean", square, axes: [0, 2, 3], keepDims: true, name: "\(node.name)/variance",
                                  output: node.outputs.count > 2 ? output(node, 2) : nil)
            let padded = writer.node("Add", name: "\(node.name)/eps", inputs: [variance, writer.constant("\(node.name)/eps", [BNLayer.varianceEpsilon])])
            let deviation = writer.node("Sqrt", name: "\(node.name)/sqrt", inputs: [padded])
            x = writer.node("Div", name: "\(node.name)/normalize", inputs: [centered, deviation])
        }
        let scaled = writer.node("Mul", name: "\(node.name)/scale", inputs: [x, scale])
        writer.node("Add", name: node.name, inputs: [scaled, shift], outputs: [output(node)])
    }

    /// ENet's spatial dropout as SwiftJIT's inference runs it: Identity where it would draw masks,
    /// else `x · 1/(1 − p)` (the fork's branch for other phases).
    mutating func lowerSpatialDropout(_ node: Node) throws {
        let settings = try SpatialDropoutSettings(node.layer, phase: graph.phase)
        if settings.dropsChannels {
            writer.node("Identity", name: node.name, inputs: [input(node)], outputs: [output(node)])
        } else {
            writer.node("Mul", name: node.name, inputs: [input(node), writer.constant("\(node.name)/scale", [settings.scale])], outputs: [output(node)])
        }
    }

    /// Transpose: ONNX's `perm` is CTPN's `dim` (top axis i = bottom axis perm[i]).
    mutating func lowerTranspose(_ node: Node) throws {
        let order = try AxisTransposition(node.layer.transposeParam, rank: inputShape(node).count).order
        if order.first != 0 { fixBatch(node, because: "moves the batch axis") }
        writer.node("Transpose", name: node.name, inputs: [input(node)], outputs: [output(node)], [Attribute.ints("perm", order)])
    }

    /// Reverse: a Slice of `axis` from its last index to before the first, step −1.
    mutating func lowerReverse(_ node: Node) throws {
        let axis = Int(node.layer.reverseParam.axis)
        if axis == 0 { fixBatch(node, because: "reverses the batch axis") }
        let starts = writer.int64s("\(node.name)/starts", [-1]), ends = writer.int64s("\(node.name)/ends", [Int(Int64.min)])
        let axes = writer.int64s("\(node.name)/axes", [axis]), steps = writer.int64s("\(node.name)/steps", [-1])
        writer.node("Slice", name: node.name, inputs: [input(node), starts, ends, axes, steps], outputs: [output(node)])
    }

    /// Upsample (SegNet's `UpsampleLayer::Forward_cpu`): a zero N×C×H'×W' top where each value goes
    /// to `top[plane][mask]`, the mask being the flat index within the image plane that MAX pooling's
    /// second top holds. ONNX MaxUnpool scatters to flat indices over the whole N×C×H'×W' output,
    /// so the graph adds `plane · H'·W'` (a constant per (n, c), which fixes the batch) to the mask
    /// cast to int64, and gives `output_shape` so `scale`, `upsample_h`/`upsample_w` and
    /// `pad_out` all come out at Caffe's size. Kernel and stride 1 keep MaxUnpool's own size
    /// (the input's) within that output. Caffe skips indices past the plane; ONNX has no such skip,
    /// so the export takes the mask only straight from a MAX pooling whose input plane fits in
    /// H'·W' (every index then lands), as SegNet's and ENet's nets are built.
    mutating func lowerUpsample(_ node: Node) throws {
        let values = inputShape(node), top = outputShape(node)
        let outer = top[2] * top[3]
        guard let producer = graph.values[node.inputs[1]].producer, graph.nodes[producer].kind == .pooling,
              graph.nodes[producer].outputs.count > 1, graph.nodes[producer].outputs[1] == node.inputs[1] else {
            throw unsupported(node, "its mask does not come straight from a MAX Pooling layer's second top, so its indices may fall outside the plane, which Caffe skips and ONNX MaxUnpool cannot",
                              hint: "feed the Upsample the pooling's mask top directly; nothing was written")
        }
        let pooled = graph.values[graph.nodes[producer].inputs[0]].shape.dims
        guard pooled.count == 4, pooled[2] * pooled[3] <= outer, top[2] >= values[2], top[3] >= values[3] else {
            throw unsupported(node, "the pooling's input plane \(pooled.dropFirst(2).map(String.init).joined(separator: "×")) is larger than the upsampled \(top[2])×\(top[3]), so some indices would be skipped, which ONNX MaxUnpool cannot do",
                              hint: "upsample to at least the pooling's input size; nothing was written")
        }
        fixBatch(node, because: "scatters to flat indices over the whole output (ONNX MaxUnpool)")
        let planes = values[0] * values[1]
        let offsets = writer.int64s("\(node.name)/plane_offsets", (0..<planes).map { $0 * outer })
        let offsetShape = writer.int64s("\(node.name)/plane_offsets_shape", [values[0], values[1], 1, 1])
        let planeOffsets = writer.node("Reshape", name: "\(node.name)/plane_offsets", inputs: [offsets, offsetShape])
        let mask = writer.node("Cast", name: "\(node.name)/mask", inputs: [input(node, 1)],
                               [Attribute.int("to", Int(Onnx_TensorProto.DataType.int64.rawValue))])
        let indices = writer.node("Add", name: "\(node.name)/indices", inputs: [mask, planeOffsets])
        writer.node("MaxUnpool", name: node.name, inputs: [input(node), indices, writer.int64s("\(node.name)/output_shape", top)],
                    outputs: [output(node)], [Attribute.ints("kernel_shape", [1, 1]), Attribute.ints("strides", [1, 1])])
    }

    /// CTPN's Lstm (junhyukoh-style, `LstmLayer::Forward_gpu`) → ONNX `LSTM` over the T×N×I input
    /// (a Reshape first when the bottom has more than three axes), then a Squeeze of the direction
    /// axis of its T×1×N×H output. The fork's blobs stack the gates i, f, o, g (W_i 4H×I, W_h 4H×H,
    /// one bias 4H); ONNX stacks i, o, f, c, so the exporter reorders the row blocks into initializers
    /// `lstm/0[iofc]`, `lstm/1[iofc]` and `lstm/2[iofc]` (Wb, then zeros for Rb).
    ///
    /// Without a clip bottom the fork starts each forward from h₀ = c₀ = 0 and skips the forget gate
    /// and the recurrent term at t = 0, which with zero state is what ONNX's LSTM computes from its
    /// default zero initial state. `clipping_threshold` bounds the pre-activation gradients in the
    /// fork's backward only (`ActivationBackward`, `caffe_bound` on `pre_gate_diff`), so it does not
    /// change the forward and is not ONNX's `clip` (which bounds the forward pre-activations). The
    /// clip bottom is refused: it carries h and c over from the previous forward and resets them
    /// wherever a flag is 0, neither of which one ONNX LSTM can do.
    mutating func lowerCTPNLSTM(_ node: Node) throws {
        guard node.inputs.count == 1 else {
            throw unsupported(node, "its clip bottom carries h and c over from the previous forward and resets them wherever a flag is 0; ONNX LSTM starts every run from one initial state and cannot reset within a sequence",
                              hint: "export the net without the clip bottom (CTPN's deploy.prototxt has none): each forward then starts from zero, as in ONNX; nothing was written")
        }
        let shape = inputShape(node)
        let hidden = Int(node.layer.lstmParam.numOutput), features = shape.dropFirst(2).reduce(1, *)
        var sequence = input(node)
        if shape.count > 3 { sequence = reshape(node, sequence, from: shape, to: [shape[0], shape[1], features]) }
        // The fork's gate blocks in ONNX's order: i, o, f, c (= g).
        func onnxGateOrder(_ blob: NDArray, columns: Int) -> [Float] {
            let block = hidden * columns
            return [0, 2, 1, 3].flatMap { blob.data[($0 * block)..<(($0 + 1) * block)] }
        }
        let inputWeights = try weights.blob(of: node, index: 0), recurrentWeights = try weights.blob(of: node, index: 1)
        let bias = try weights.blob(of: node, index: 2)
        let w = writer.initializer("\(node.name)/0[iofc]", NDArray(shape: [1, 4 * hidden, features], data: onnxGateOrder(inputWeights, columns: features)))
        let r = writer.initializer("\(node.name)/1[iofc]", NDArray(shape: [1, 4 * hidden, hidden], data: onnxGateOrder(recurrentWeights, columns: hidden)))
        let b = writer.initializer("\(node.name)/2[iofc]", NDArray(shape: [1, 8 * hidden],
                                                                   data: onnxGateOrder(bias, columns: 1) + Array(repeating: 0, count: 4 * hidden)))
        let states = writer.node("LSTM", name: "\(node.name)/lstm", inputs: [sequence, w, r, b], [Attribute.int("hidden_size", hidden)])
        writer.node("Squeeze", name: node.name, inputs: [states, writer.int64s("\(node.name)/direction_axis", [1])], outputs: [output(node)])
    }
}
