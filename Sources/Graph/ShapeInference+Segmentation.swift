import CaffeFormat
import Foundation

// Shape rules of the segmentation and sequence forks' layers: SegNet's and ENet's BN and
// DenseImageData, ENet's spatial dropout, CTPN's Transpose, Reverse and Lstm.

extension ShapeInference {
    /// BN (`BNLayer::LayerSetUp`/`Reshape` of alexgkendall/caffe-segnet and TimoSaemann/caffe-enet):
    /// the top has the bottom's shape; the optional second and third tops are the batch mean and
    /// variance, 1×C×1×1. The blobs are scale and shift, each 1×C×1×1. The fork reads the bottom
    /// through `num()/channels()/height()/width()`, so it takes 2 to 4 axes.
    static func bn(_ c: ShapeContext) throws -> LayerSignature {
        let input = c.inputs[0]
        guard (2...4).contains(input.rank) else {
            throw Diagnostic("BN needs an N×C×H×W bottom (2 to 4 axes), got \(c.shapeText(0))")
        }
        guard (1...3).contains(c.layer.top.count) else {
            throw Diagnostic("BN has one top, plus optionally the batch mean and variance; got \(c.layer.top.count)")
        }
        let channel = TensorShape([1, input[1], 1, 1])
        let outputs = [input] + Array(repeating: channel, count: c.layer.top.count - 1)
        let perElement = c.layer.bnParam.bnMode == .learn ? 6 : 2
        return LayerSignature(outputs: outputs, parameters: [(channel, "scale"), (channel, "shift")],
                              flops: perElement &* (input.count ?? 0))
    }

    /// DenseImageData (SegNet, ENet): images N×C×H×W and label images N×1×H×W. C is 3 (`is_color`)
    /// or 1; H×W is `crop_size` (transform_param), else `crop_height × crop_width`, else
    /// `new_height × new_width`, else the first image's size, which only the data source knows
    /// (given with `--input`). The forks' setup checks become diagnostics. ENet's
    /// `label_divide_factor` f shrinks the label top to ⌊H/f⌋ × ⌊W/f⌋ (the fork's integer
    /// division); its fork resizes the label only with `new_height`/`new_width` and crops it with
    /// the image's full-size window, so f > 1 needs the resize and refuses cropping here.
    static func denseImageData(_ c: ShapeContext) throws -> LayerSignature {
        let p = c.layer.denseImageDataParam
        guard (p.newHeight == 0) == (p.newWidth == 0) else {
            throw Diagnostic("DenseImageData needs new_height and new_width set together, got \(p.newHeight) and \(p.newWidth)")
        }
        guard (p.cropHeight == 0) == (p.cropWidth == 0) else {
            throw Diagnostic("DenseImageData needs crop_height and crop_width set together, got \(p.cropHeight) and \(p.cropWidth)")
        }
        guard p.batchSize > 0 else {
            throw Diagnostic("DenseImageData needs a batch_size greater than 0", hint: "add batch_size: 1 to dense_image_data_param")
        }
        guard (1...2).contains(c.layer.top.count) else {
            throw Diagnostic("DenseImageData has two tops (images, label images), got \(c.layer.top.count)")
        }
        let factor = try c.layer.checkedLabelDivideFactor()
        let unknown = TensorShape.unknown
        let crop = Int(c.layer.transformParam.cropSize)
        var size = (height: unknown, width: unknown)
        if crop > 0 {
            size = (crop, crop)
        } else if p.cropHeight > 0 {
            size = (Int(p.cropHeight), Int(p.cropWidth))
        } else if p.newHeight > 0 {
            size = (Int(p.newHeight), Int(p.newWidth))
        }
        let batch = Int(p.batchSize)
        func labelExtent(_ extent: Int) -> Int { extent == unknown ? unknown : extent / factor }
        var outputs = [TensorShape([batch, p.isColor ? 3 : 1, size.height, size.width]),
                       TensorShape([batch, 1, labelExtent(size.height), labelExtent(size.width)])]
        for (i, top) in c.layer.top.enumerated() {
            if let given = c.overrides[top] { outputs[i] = given }
        }
        // A shape given for the images fixes the labels' extent too, and the other way round.
        if c.layer.top.count == 2, outputs[1].rank == 4, outputs[0].rank == 4 {
            if c.overrides[c.layer.top[1]] == nil {
                outputs[1] = TensorShape([outputs[0][0], 1, labelExtent(outputs[0][2]), labelExtent(outputs[0][3])])
            }
        }
        return LayerSignature(outputs: Array(outputs.prefix(c.layer.top.count)))
    }

    /// Transpose (CTPN): top axis i is bottom axis `dim[i]`; `dim` names every axis exactly once
    /// (`TransposeLayer::Reshape` checks the count).
    static func transpose(_ c: ShapeContext) throws -> LayerSignature {
        let input = c.inputs[0]
        let order = try AxisTransposition(c.layer.transposeParam, rank: input.rank).order
        return LayerSignature(outputs: [TensorShape(order.map { input.dims[$0] })])
    }

    /// Reverse (CTPN): the bottom's shape; `axis` must name one of its axes (0 ≤ axis < rank,
    /// no negative axes, as `ReverseLayer::Reshape` checks).
    static func reverse(_ c: ShapeContext) throws -> LayerSignature {
        let input = c.inputs[0]
        let axis = Int(c.layer.reverseParam.axis)
        guard input.rank > 0 else { throw Diagnostic("Reverse does not take a 0-axis blob") }
        guard axis >= 0, axis < input.rank else {
            throw Diagnostic("Reverse axis \(axis) is not an axis of \(c.shapeText(0))", hint: "axis must lie in 0..<\(input.rank)")
        }
        return LayerSignature(outputs: [input])
    }

    /// CTPN's Lstm (`LstmLayer::LayerSetUp`/`Reshape`): x is T×N×…, I = the product of the axes after
    /// the second; the top is T×N×H (H = `num_output`). Blobs W_i (4H×I), W_h (4H×H), b (4H).
    /// A second bottom (T×N "clip" flags) continues the previous forward's state where it is 1.
    static func ctpnLSTM(_ c: ShapeContext) throws -> LayerSignature {
        let x = c.inputs[0]
        guard x.rank >= 3 else {
            throw Diagnostic("Lstm needs a T×N×… bottom (3 or more axes), got \(c.shapeText(0))",
                             hint: "reshape the sequence to time × streams × features first")
        }
        let hidden = Int(c.layer.lstmParam.numOutput)
        guard hidden > 0 else { throw Diagnostic("Lstm needs num_output greater than 0", hint: "add lstm_param { num_output: H }") }
        let features = Extent.product(Array(x.dims[2...]))
        if c.inputs.count > 1, let flags = c.inputs[1].count, x[0] != TensorShape.unknown, x[1] != TensorShape.unknown, flags != x[0] * x[1] {
            throw Diagnostic("Lstm's clip bottom \(c.shapeText(1)) must hold one flag per time step and stream (T×N = \(x[0])×\(x[1]))")
        }
        let steps = Extent.product([x[0], x[1]])
        let flops = steps == TensorShape.unknown || features == TensorShape.unknown ? 0 : 2 &* steps &* 4 &* hidden &* (features &+ hidden)
        return LayerSignature(outputs: [TensorShape([x[0], x[1], hidden])],
                              parameters: [(TensorShape([4 * hidden, features]), "W_i"), (TensorShape([4 * hidden, hidden]), "W_h"),
                                           (TensorShape([4 * hidden]), "b")],
                              flops: flops)
    }
}

/// Constants of SegNet's and ENet's BN layer shared by the compiler and the exporters.
public enum BNLayer {
    /// The variance epsilon, fixed in the forks' `BNLayer::LayerSetUp` (`var_eps_ = 1e-9`).
    public static let varianceEpsilon: Float = 1e-9
}

/// CTPN's `transpose_param`: `dim` lists every axis of the bottom once, in the order the top
/// takes them (top axis i = bottom axis `dim[i]`).
///
///     transpose_param { dim: 3 dim: 2 dim: 0 dim: 1 }   // N×C×H×W → W×H×N×C
public struct AxisTransposition: Sendable, Equatable {
    public var order: [Int]

    public init(_ p: Caffe_TransposeParameter, rank: Int) throws {
        guard p.dim.count == rank else {
            throw Diagnostic("Transpose lists \(p.dim.count) axes in transpose_param, but its bottom has \(rank)",
                             hint: "give one dim per axis of the bottom, e.g. dim: 0 dim: 2 dim: 1 for 3 axes")
        }
        let order = p.dim.map(Int.init)
        guard Set(order) == Set(0..<rank) else {
            throw Diagnostic("Transpose dims \(order) must name each of the axes 0..<\(rank) exactly once")
        }
        self.order = order
    }
}

/// ENet's spatial dropout (`spatial_dropout.SpatialDropoutLayer`, TimoSaemann/caffe-enet's
/// python/spatial_dropout.py), read from its `param_str` (a Python dict such as
/// `{'phase': 'TRAIN', 'p': '0.01'}`, read by `ParamString`), or from `dropout_param` for
/// `type: "SpatialDropout"`.
///
/// The fork's layer follows the phase written in `param_str`, not the net's: with 'TRAIN' it
/// zeroes whole channels of each image with probability p and scales the rest by 1/(1 − p);
/// with any other phase it multiplies everything by 1/(1 − p) (its `else` branch; not the
/// identity). `dropsChannels` is that first case; `passScale` the second case's factor.
public struct SpatialDropoutSettings: Sendable, Equatable {
    /// The probability p of dropping one channel of one image.
    public var ratio: Float
    /// Whether the layer draws channel masks (param_str phase 'TRAIN', or the net's TRAIN phase
    /// for `type: "SpatialDropout"`).
    public var dropsChannels: Bool

    /// 1/(1 − p), applied to kept channels and, without masks, to everything.
    public var scale: Float { 1 / (1 - ratio) }

    public init(_ layer: Caffe_LayerParameter, phase: Caffe_Phase) throws {
        if !layer.hasPythonParam {
            ratio = layer.dropoutParam.dropoutRatio
            dropsChannels = phase == .train
        } else {
            let entries = try ParamString.entries(layer.pythonParam.paramStr)
            guard let p = entries["p"], p.count == 1, let value = Float(p[0]) else {
                throw Diagnostic("spatial dropout's param_str needs 'p', the probability of dropping a channel, got \"\(layer.pythonParam.paramStr)\"",
                                 hint: "param_str: \"{'phase': 'TRAIN', 'p': '0.01'}\"")
            }
            ratio = value
            dropsChannels = entries["phase"] == ["TRAIN"]
        }
        guard ratio > 0, ratio < 1 else {
            throw Diagnostic("spatial dropout's p must lie strictly between 0 and 1, got \(ratio)")
        }
    }
}
