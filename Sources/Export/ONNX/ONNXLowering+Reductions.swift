import CaffeFormat
import Graph

/// Layers built from ONNX reductions and comparisons: MVN, Reduction, Threshold; and the
/// shape-static Crop and Tile.
extension ONNXLowering {
    /// A `Reduce*` over `axes`; the axes travel as an input from opset 18 (13 for ReduceSum).
    mutating func reduce(_ op: String, _ x: String, axes: [Int], keepDims: Bool, name: String, output: String? = nil) -> String {
        let axesAsInput = opset >= 18 || op == "ReduceSum"
        let inputs = axesAsInput ? [x, writer.int64s("\(name)/axes", axes)] : [x]
        let attributes = (axesAsInput ? [] : [Attribute.ints("axes", axes)]) + [Attribute.int("keepdims", keepDims ? 1 : 0)]
        return writer.node(op, name: name, inputs: inputs, outputs: output.map { [$0] }, attributes)
    }

    /// MVN, Caffe's order of operations: subtract the mean over each item's (channel's) values,
    /// then divide by `sqrt(mean of squares) + eps` (eps added after the root, unlike ONNX's
    /// MeanVarianceNormalization, which has no eps and so is not used).
    mutating func lowerMVN(_ node: Node) throws {
        let p = node.layer.mvnParam
        let rank = inputShape(node).count
        let first = p.acrossChannels ? 1 : 2
        guard rank > first else { throw unsupported(node, "its \(rank)-D input has no axes to normalize over") }
        let axes = Array(first..<rank)
        let mean = reduce("ReduceMean", input(node), axes: axes, keepDims: true, name: "\(node.name)/mean")
        guard p.normalizeVariance else {
            writer.node("Sub", name: node.name, inputs: [input(node), mean], outputs: [output(node)])
            return
        }
        let centered = writer.node("Sub", name: "\(node.name)/center", inputs: [input(node), mean])
        let square = writer.node("Mul", name: "\(node.name)/square", inputs: [centered, centered])
        let variance = reduce("ReduceMean", square, axes: axes, keepDims: true, name: "\(node.name)/variance")
        let deviation = writer.node("Sqrt", name: "\(node.name)/sqrt", inputs: [variance])
        let divisor = writer.node("Add", name: "\(node.name)/eps", inputs: [deviation, writer.constant("\(node.name)/eps", [p.eps])])
        writer.node("Div", name: node.name, inputs: [centered, divisor], outputs: [output(node)])
    }

    /// Reduction over axes `axis…` (SUM, ASUM, SUMSQ, MEAN), then times `coeff`.
    mutating func lowerReduction(_ node: Node) throws {
        let p = node.layer.reductionParam
        let rank = inputShape(node).count
        guard let axis = TensorShape(inputShape(node)).canonicalAxis(Int(p.axis)) else { throw unsupported(node, "axis \(p.axis) is out of range") }
        let op: String
        switch p.operation {
        case .sum: op = "ReduceSum"
        case .asum: op = "ReduceL1"
        case .sumsq: op = "ReduceSumSquare"
        case .mean: op = "ReduceMean"
        }
        let axes = Array(axis..<rank)
        if p.coeff == 1 {
            _ = reduce(op, input(node), axes: axes, keepDims: false, name: node.name, output: output(node))
        } else {
            let reduced = reduce(op, input(node), axes: axes, keepDims: false, name: "\(node.name)/reduce")
            writer.node("Mul", name: node.name, inputs: [reduced, writer.constant("\(node.name)/coeff", [p.coeff])], outputs: [output(node)])
        }
    }

    /// Threshold: 1 where `x > threshold`, else 0.
    mutating func lowerThreshold(_ node: Node) throws {
        let above = writer.node("Greater", name: "\(node.name)/greater", inputs: [input(node), writer.constant("\(node.name)/threshold", [node.layer.thresholdParam.threshold])])
        writer.node("Cast", name: node.name, inputs: [above], outputs: [output(node)], [Attribute.int("to", Int(Onnx_TensorProto.DataType.float.rawValue))])
    }

    /// Tile: `tiles` copies along `axis`.
    mutating func lowerTile(_ node: Node) throws {
        let p = node.layer.tileParam
        let shape = inputShape(node)
        guard let axis = TensorShape(shape).canonicalAxis(Int(p.axis)) else { throw unsupported(node, "axis \(p.axis) is out of range") }
        var repeats = Array(repeating: 1, count: shape.count)
        repeats[axis] = Int(p.tiles)
        writer.node("Tile", name: node.name, inputs: [input(node), writer.int64s("\(node.name)/repeats", repeats)], outputs: [output(node)])
    }

    /// Crop: a `Slice` of axes `axis…` to the second bottom's extents, starting at the offsets
    /// (the second bottom only supplies a shape, known statically).
    mutating func lowerCrop(_ node: Node) throws {
        let p = node.layer.cropParam
        let shape = inputShape(node), out = outputShape(node)
        guard let axis = TensorShape(shape).canonicalAxis(Int(p.axis)) else { throw unsupported(node, "axis \(p.axis) is out of range") }
        if axis == 0 { fixBatch(node, because: "crops the batch axis") }
        let axes = Array(axis..<shape.count)
        let starts = axes.map { i in p.offset.isEmpty ? 0 : Int(p.offset.count == 1 ? p.offset[0] : p.offset[i - axis]) }
        let ends = zip(starts, axes).map { $0 + out[$1] }
        writer.node("Slice", name: node.name, inputs: [input(node), writer.int64s("\(node.name)/starts", starts),
                                                        writer.int64s("\(node.name)/ends", ends), writer.int64s("\(node.name)/axes", axes)],
                    outputs: [output(node)])
    }
}
