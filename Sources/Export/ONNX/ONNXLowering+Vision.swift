import CaffeFormat
import Graph
import NumPy

/// Convolution, pooling, InnerProduct, LRN and ROI pooling as ONNX operators, with Caffe's window
/// arithmetic reproduced exactly (see `lowerPooling` for how ceil rounding and the padded-average
/// divisor are expressed).
extension ONNXLowering {
    /// Convolution → `Conv`, Deconvolution → `ConvTranspose`. Both keep Caffe's weight blob as is:
    /// ONNX's `ConvTranspose` stores `in × out/group × k…` exactly like Caffe's Deconvolution, and
    /// with equal begin/end pads and no `output_padding` its output size is Caffe's.
    mutating func lowerConvolution(_ node: Node) throws {
        let g = try node.convolutionGeometry()
        guard g.channelAxis == 1 else {
            throw unsupported(node, "its channel axis is \(g.channelAxis); ONNX convolutions read channels from axis 1")
        }
        var operands = [try parameter(node, 0)]
        if g.biasTerm { operands.append(try parameter(node, 1)) }
        let attributes = [Attribute.ints("kernel_shape", g.kernel), Attribute.ints("strides", g.stride),
                          Attribute.ints("pads", g.pad + g.pad), Attribute.ints("dilations", g.dilation),
                          Attribute.int("group", g.group)]
        let op = node.kind == .deconvolution ? "ConvTranspose" : "Conv"
        // Caffe applies one (de)convolution to each bottom in turn, with the same weights.
        for i in node.inputs.indices {
            writer.node(op, name: node.name, inputs: [input(node, i)] + operands, outputs: [output(node, i)], attributes)
        }
    }

    /// Caffe pooling with explicit pads, so every runtime gets Caffe's sizes and divisors.
    ///
    /// Sizes: Caffe rounds the window count up and drops a last window that would start in the
    /// right padding. Instead of `ceil_mode` (whose last-window rule differs between ONNX versions
    /// and runtimes), the exporter computes Caffe's output size `out` and sets the end pad to
    /// `(out-1)·stride + kernel - H - pad` (or 0 when a stride larger than the kernel skips the last
    /// values), so floor rounding yields exactly `out` windows.
    ///
    /// Average divisor: Caffe divides by the window clipped to `[-pad, H+pad)`; ONNX's
    /// `count_include_pad=1` clips to `[-pad_begin, H+pad_end)` and `count_include_pad=0` to `[0, H)`.
    /// So: when no end pad exceeds `pad`, `count_include_pad=1` is exact; when `pad` is 0 on every
    /// axis, `count_include_pad=0` is exact; otherwise the input is zero-padded by `pad` with a `Pad`
    /// op first, and the pooling (with only the extra end pad, excluded) divides by the window
    /// clipped to the zero-padded input, which is Caffe's `[-pad, H+pad)`.
    mutating func lowerPooling(_ node: Node) throws {
        let p = try node.poolingAttributes()
        guard node.outputs.count == 1 || p.method == .max else {
            throw unsupported(node, "only MAX pooling has a second top (the argmax mask)")
        }
        guard p.method == .max || p.method == .ave else {
            throw unsupported(node, "STOCHASTIC pooling has no ONNX equivalent", hint: "use MAX or AVE pooling; nothing was written")
        }
        let inShape = inputShape(node), outShape = outputShape(node)
        let g = p.geometry
        if g.isGlobal {
            writer.node(p.method == .max ? "GlobalMaxPool" : "GlobalAveragePool", name: node.name, inputs: [input(node)], outputs: [output(node)])
            return
        }
        let spatial = inShape.count - 2
        var endPads: [Int] = []
        for i in 0..<spatial {
            // Negative when the stride skips the input's last values (stride > kernel): no end pad needed.
            let end = max((outShape[i + 2] - 1) * g.stride[i] + g.kernel[i] - inShape[i + 2] - g.pad[i], 0)
            guard (inShape[i + 2] + g.pad[i] + end - g.kernel[i]) / g.stride[i] + 1 == outShape[i + 2] else {
                throw unsupported(node, "no ONNX padding yields Caffe's \(outShape[i + 2]) windows along axis \(i + 2)")
            }
            // With pad 0 Caffe keeps a last window that starts past the input (stride > kernel):
            // it pools nothing (MAX gives -FLT_MAX, AVE 0/0). No ONNX pooling reproduces that.
            guard end < g.kernel[i] else {
                throw unsupported(node, "Caffe's ceil rounding gives it a last window lying wholly outside the input along axis \(i + 2) (input \(inShape[i + 2]), kernel \(g.kernel[i]), stride \(g.stride[i]), pad \(g.pad[i])), where Caffe outputs -FLT_MAX (MAX) or NaN (AVE)",
                                  hint: "use round_mode: FLOOR, a stride no larger than the kernel, or an input size the windows cover; nothing was written")
            }
            endPads.append(end)
        }
        let window = [Attribute.ints("kernel_shape", g.kernel), Attribute.ints("strides", g.stride)]
        if p.method == .max {
            let indices = node.outputs.count > 1 ? [writer.unique("\(node.name)/indices")] : []
            writer.node("MaxPool", name: node.name, inputs: [input(node)], outputs: [output(node)] + indices,
                        window + [Attribute.ints("pads", g.pad + endPads)])
            if let indices = indices.first { lowerPoolingMask(node, indices: indices, plane: inShape[2...].reduce(1, *)) }
            return
        }
        if zip(endPads, g.pad).allSatisfy({ $0 <= $1 }) {
            writer.node("AveragePool", name: node.name, inputs: [input(node)], outputs: [output(node)],
                        window + [Attribute.ints("pads", g.pad + endPads), Attribute.int("count_include_pad", 1)])
        } else if g.pad.allSatisfy({ $0 == 0 }) {
            writer.node("AveragePool", name: node.name, inputs: [input(node)], outputs: [output(node)],
                        window + [Attribute.ints("pads", g.pad + endPads), Attribute.int("count_include_pad", 0)])
        } else {
            let pads = writer.int64s("\(node.name)/pads", [0, 0] + g.pad + [0, 0] + g.pad)
            let padded = writer.node("Pad", name: "\(node.name)/pad", inputs: [input(node), pads])
            let extra = zip(endPads, g.pad).map { max($0 - $1, 0) }
            writer.node("AveragePool", name: node.name, inputs: [padded], outputs: [output(node)],
                        window + [Attribute.ints("pads", g.pad.map { _ in 0 } + extra), Attribute.int("count_include_pad", 0)])
        }
    }

    /// MAX pooling's mask top from ONNX MaxPool's `Indices`: ONNX counts over the whole N×C×H×W
    /// input (padding not counted), Caffe within each image plane (`h·W + w`, stored as float), so
    /// the mask is `Indices mod (H·W)` cast to float. Exact while a plane holds fewer than 2²⁴ values.
    mutating func lowerPoolingMask(_ node: Node, indices: String, plane: Int) {
        let local = writer.node("Mod", name: "\(node.name)/mask_in_plane", inputs: [indices, writer.int64s("\(node.name)/plane", [plane])])
        writer.node("Cast", name: "\(node.name)/mask", inputs: [local], outputs: [output(node, 1)],
                    [Attribute.int("to", Int(Onnx_TensorProto.DataType.float.rawValue))])
    }

    /// InnerProduct on `axis` 1 → `Flatten` + `Gemm` (Caffe's weight is `out × in`, so `transB=1`;
    /// with `transpose: true` it is `in × out` and `transB=0`). On a later axis, the trailing axes are
    /// flattened by a `Reshape` and multiplied with `MatMul`, keeping the leading axes.
    mutating func lowerInnerProduct(_ node: Node) throws {
        let p = try node.innerProductAttributes()
        let inShape = inputShape(node), axis = p.axis
        let k = inShape[axis...].reduce(1, *)
        if axis == 1 {
            let flat = inShape.count == 2 ? input(node)
                : writer.node("Flatten", name: "\(node.name)/flatten", inputs: [input(node)], [Attribute.int("axis", 1)])
            var operands = [flat, try parameter(node, 0)]
            if p.biasTerm { operands.append(try parameter(node, 1)) }
            writer.node("Gemm", name: node.name, inputs: operands, outputs: [output(node)], [Attribute.int("transB", p.transpose ? 0 : 1)])
            return
        }
        if axis == 0 { fixBatch(node, because: "multiplies over all axes including the batch (axis 0)") }
        let target = Array(repeating: 0, count: axis) + [k]
        let flat = inShape.count == axis + 1 ? input(node)
            : writer.node("Reshape", name: "\(node.name)/flatten", inputs: [input(node), writer.int64s("\(node.name)/shape", target)])
        var weight = try weights.blob(of: node, index: 0)
        if !p.transpose { weight = Tensor.transpose(weight, [1, 0]) }
        let matrix = writer.initializer("\(node.name)/0\(p.transpose ? "" : "ᵀ")", weight)
        if p.biasTerm {
            let product = writer.node("MatMul", name: "\(node.name)/matmul", inputs: [flat, matrix])
            writer.node("Add", name: node.name, inputs: [product, try parameter(node, 1)], outputs: [output(node)])
        } else {
            writer.node("MatMul", name: node.name, inputs: [flat, matrix], outputs: [output(node)])
        }
    }

    /// ACROSS_CHANNELS → `LRN`: both compute `x / (k + alpha/size · Σ x²)^beta` over the same
    /// channel window (`c - (size-1)/2 … c + size/2`). WITHIN_CHANNEL has no ONNX operator; it is
    /// Caffe's own decomposition: `x · (1 + alpha · avgpool(x²))^-beta` (Caffe ignores `k` there).
    mutating func lowerLRN(_ node: Node) throws {
        let p = try node.lrnAttributes()
        let size = p.localSize
        if p.region == .acrossChannels {
            writer.node("LRN", name: node.name, inputs: [input(node)], outputs: [output(node)],
                        [Attribute.int("size", size), Attribute.float("alpha", p.alpha), Attribute.float("beta", p.beta), Attribute.float("bias", p.k)])
            return
        }
        let spatial = inputShape(node).count - 2
        let pad = (size - 1) / 2
        let square = writer.node("Mul", name: "\(node.name)/square", inputs: [input(node), input(node)])
        let mean = writer.node("AveragePool", name: "\(node.name)/pool", inputs: [square],
                               [Attribute.ints("kernel_shape", Array(repeating: size, count: spatial)),
                                Attribute.ints("pads", Array(repeating: pad, count: 2 * spatial)), Attribute.int("count_include_pad", 1)])
        let scaled = writer.node("Mul", name: "\(node.name)/alpha", inputs: [mean, writer.constant("\(node.name)/alpha", [p.alpha])])
        let shifted = writer.node("Add", name: "\(node.name)/one", inputs: [scaled, writer.constant("\(node.name)/one", [1])])
        let power = writer.node("Pow", name: "\(node.name)/pow", inputs: [shifted, writer.constant("\(node.name)/-beta", [-p.beta])])
        writer.node("Mul", name: node.name, inputs: [input(node), power], outputs: [output(node)])
    }

    /// ROIPooling (Fast R-CNN) → `MaxRoiPool`. The two agree operation for operation: rois rows
    /// `[batch, x1, y1, x2, y2]`, coordinates `round(v · spatial_scale)`, malformed boxes forced to
    /// 1×1, bins `floor(i·h/pooled)…ceil((i+1)·h/pooled)` clipped to the image, empty bins 0.
    /// A layer with an argmax top, or rois that are not 5 values each, is refused.
    mutating func lowerROIPooling(_ node: Node) throws {
        let p = node.layer.roiPoolingParam
        guard node.inputs.count == 2 else { throw unsupported(node, "it needs 2 bottoms (features, rois), this one has \(node.inputs.count)") }
        guard node.outputs.count == 1 else {
            throw unsupported(node, "its second top (argmax indices) has no MaxRoiPool equivalent", hint: "remove the second top; nothing was written")
        }
        guard p.pooledH > 0, p.pooledW > 0 else { throw unsupported(node, "pooled_h and pooled_w must be positive") }
        let rois = inputShape(node, 1)
        guard rois.count >= 2, rois.dropFirst().reduce(1, *) == 5 else {
            throw unsupported(node, "its rois blob is \(TensorShape(rois)); MaxRoiPool reads rows of 5 values [batch, x1, y1, x2, y2]")
        }
        let rows = rois.count == 2 ? input(node, 1) : reshape(node, input(node, 1), from: rois, to: [rois[0], 5])
        writer.node("MaxRoiPool", name: node.name, inputs: [input(node), rows], outputs: [output(node)],
                    [Attribute.ints("pooled_shape", [Int(p.pooledH), Int(p.pooledW)]), Attribute.float("spatial_scale", p.spatialScale)])
    }
}
