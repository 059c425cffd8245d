import CaffeFormat

/// The resolved window geometry of a Convolution, Deconvolution or Im2col layer: one kernel, stride,
/// pad and dilation per spatial axis, however the prototxt spelled them (`kernel_size: 3`,
/// `kernel_size` once per axis, or `kernel_h`/`kernel_w`).
///
/// Spatial axes are the axes after the channel axis (`axis`, default 1), so a 5-D blob
/// `N×C×D×H×W` gets a 3-D convolution, as Caffe's N-D convolution does.
public struct ConvolutionGeometry: Sendable, Equatable {
    public var channelAxis: Int
    public var kernel: [Int]
    public var stride: [Int]
    public var pad: [Int]
    public var dilation: [Int]
    public var numOutput: Int
    public var group: Int
    public var biasTerm: Bool

    /// Caffe's `is_1x1_`: a 1×1 kernel, stride 1, no padding — the column matrix is the image itself.
    public var isPointwise: Bool { kernel.allSatisfy { $0 == 1 } && stride.allSatisfy { $0 == 1 } && pad.allSatisfy { $0 == 0 } }

    /// Reads the geometry for a bottom of rank `rank`, checking what Caffe checks.
    public init(_ p: Caffe_ConvolutionParameter, rank: Int, needsOutputs: Bool = true) throws {
        guard let axis = TensorShape(Array(repeating: 1, count: rank)).canonicalAxis(Int(p.axis)) else {
            throw Diagnostic("convolution axis \(p.axis) is out of range for a \(rank)-D input")
        }
        channelAxis = axis
        let spatial = rank - axis - 1
        guard spatial >= 1 else {
            throw Diagnostic("a convolution needs at least one spatial axis after the channel axis \(axis); the input is \(rank)-D",
                             hint: "feed an N×C×H×W blob, or Reshape the input first")
        }
        func perAxis(_ values: [UInt32], _ h: UInt32?, _ w: UInt32?, name: String, default fallback: Int?) throws -> [Int] {
            if h != nil || w != nil {
                guard spatial == 2 else { throw Diagnostic("\(name)_h/\(name)_w can only be used for 2-D convolution; this one has \(spatial) spatial axes") }
                guard values.isEmpty else { throw Diagnostic("give either \(name)_size/\(name) or \(name)_h and \(name)_w, not both") }
                guard let h, let w else { throw Diagnostic("\(name)_h and \(name)_w must be given together") }
                return [Int(h), Int(w)]
            }
            if values.isEmpty {
                guard let fallback else { throw Diagnostic("the convolution has no kernel size", hint: "add kernel_size: K (or kernel_h and kernel_w)") }
                return Array(repeating: fallback, count: spatial)
            }
            if values.count == 1 { return Array(repeating: Int(values[0]), count: spatial) }
            guard values.count == spatial else {
                throw Diagnostic("\(name) has \(values.count) values; expected 1 or one per spatial axis (\(spatial))")
            }
            return values.map(Int.init)
        }
        kernel = try perAxis(p.kernelSize, p.hasKernelH ? p.kernelH : nil, p.hasKernelW ? p.kernelW : nil, name: "kernel", default: nil)
        stride = try perAxis(p.stride, p.hasStrideH ? p.strideH : nil, p.hasStrideW ? p.strideW : nil, name: "stride", default: 1)
        pad = try perAxis(p.pad, p.hasPadH ? p.padH : nil, p.hasPadW ? p.padW : nil, name: "pad", default: 0)
        dilation = try perAxis(p.dilation, nil, nil, name: "dilation", default: 1)
        for (name, values) in [("kernel", kernel), ("stride", stride), ("pad", pad), ("dilation", dilation)] where values.contains(where: { $0 > Int(Int32.max) }) {
            throw Diagnostic("\(name) \(values) is out of range (at most \(Int32.max))")
        }
        guard kernel.allSatisfy({ $0 > 0 }) else { throw Diagnostic("kernel dimensions must be positive, got \(kernel)") }
        guard stride.allSatisfy({ $0 > 0 }) else { throw Diagnostic("strides must be positive, got \(stride)") }
        guard dilation.allSatisfy({ $0 > 0 }) else { throw Diagnostic("dilations must be positive, got \(dilation)") }
        numOutput = Int(p.numOutput)
        guard numOutput > 0 || !needsOutputs else { throw Diagnostic("num_output must be set and positive", hint: "add num_output: N to convolution_param") }
        group = Int(p.group)
        guard group > 0 else { throw Diagnostic("group must be positive") }
        biasTerm = p.biasTerm
    }

    /// Output extent of a convolution along spatial axis `i`.
    public func convolutionOutput(_ input: Int, axis i: Int) -> Int {
        guard input != TensorShape.unknown else { return input }
        let extent = dilation[i] * (kernel[i] - 1) + 1
        return (input + 2 * pad[i] - extent) / stride[i] + 1
    }

    /// Output extent of a deconvolution (transposed convolution) along spatial axis `i`.
    public func deconvolutionOutput(_ input: Int, axis i: Int) -> Int {
        guard input != TensorShape.unknown else { return input }
        let extent = dilation[i] * (kernel[i] - 1) + 1
        return stride[i] * (input - 1) + extent - 2 * pad[i]
    }

    /// `kernel 3×3 stride 2 pad 1` — for messages.
    public var summary: String {
        var parts = ["kernel " + kernel.map(String.init).joined(separator: "×")]
        if stride.contains(where: { $0 != 1 }) { parts.append("stride " + stride.map(String.init).joined(separator: "×")) }
        if pad.contains(where: { $0 != 0 }) { parts.append("pad " + pad.map(String.init).joined(separator: "×")) }
        if dilation.contains(where: { $0 != 1 }) { parts.append("dilation " + dilation.map(String.init).joined(separator: "×")) }
        if group != 1 { parts.append("group \(group)") }
        return parts.joined(separator: " ")
    }
}

/// The resolved window geometry of a Pooling layer over every spatial axis (axes 2...).
///
/// Caffe pools 4-D blobs only; SwiftJIT pools all spatial axes of an N-D blob with the same rules.
/// Output extents round up (`round_mode: CEIL`, the default) and drop a last window that would start
/// inside the padding, exactly as Caffe's `PoolingLayer::Reshape`. They round down with
/// `round_mode: FLOOR` (BVLC, NVIDIA's and Intel's forks) or the DenseNet/ResNeXt/DPN forks'
/// `ceil_mode: false` (BVLC PR #3057), which keep the same last-window rule.
public struct PoolingGeometry: Sendable, Equatable {
    public var kernel: [Int]
    public var stride: [Int]
    public var pad: [Int]
    public var isGlobal: Bool
    public var roundsUp: Bool

    public init(_ p: Caffe_PoolingParameter, input: TensorShape) throws {
        let spatial = input.rank - 2
        guard spatial >= 1 else {
            throw Diagnostic("pooling needs an N×C×spatial input; got \(input.rank)-D \(input)")
        }
        isGlobal = p.globalPooling
        if p.hasCeilMode, p.hasRoundMode, p.ceilMode != (p.roundMode == .ceil) {
            throw Diagnostic("pooling sets ceil_mode: \(p.ceilMode) and round_mode: \(p.roundMode == .ceil ? "CEIL" : "FLOOR"), which disagree",
                             hint: "keep one of them: ceil_mode is the DenseNet/ResNeXt forks' spelling of round_mode")
        }
        roundsUp = p.hasCeilMode ? p.ceilMode : p.roundMode == .ceil
        let hasKernel = p.hasKernelSize || p.hasKernelH || p.hasKernelW
        if isGlobal {
            if hasKernel {
                throw Diagnostic("global_pooling takes its window from the input; it cannot also have a kernel size",
                                 hint: "remove kernel_size (or kernel_h/kernel_w), or set global_pooling: false")
            }
            kernel = Array(input.dims[2...])
            guard p.pad == 0, p.padH == 0, p.padW == 0, p.stride == 1, !p.hasStrideH, !p.hasStrideW else {
                throw Diagnostic("global pooling needs pad 0 and stride 1")
            }
            stride = Array(repeating: 1, count: spatial)
            pad = Array(repeating: 0, count: spatial)
            return
        }
        func pair(_ single: UInt32, hasSingle: Bool, _ h: UInt32, hasH: Bool, _ w: UInt32, hasW: Bool, name: String) throws -> [Int]? {
            if hasH || hasW {
                guard spatial == 2 else { throw Diagnostic("\(name)_h/\(name)_w need a 4-D input; this one is \(input.rank)-D") }
                guard !hasSingle || name != "kernel" else { throw Diagnostic("give either kernel_size or kernel_h and kernel_w, not both") }
                guard hasH, hasW else { throw Diagnostic("\(name)_h and \(name)_w must be given together") }
                return [Int(h), Int(w)]
            }
            return hasSingle ? Array(repeating: Int(single), count: spatial) : nil
        }
        guard let kernel = try pair(p.kernelSize, hasSingle: p.hasKernelSize, p.kernelH, hasH: p.hasKernelH, p.kernelW, hasW: p.hasKernelW, name: "kernel") else {
            throw Diagnostic("pooling has no kernel size", hint: "add kernel_size: K, or global_pooling: true")
        }
        self.kernel = kernel
        stride = try pair(p.stride, hasSingle: true, p.strideH, hasH: p.hasStrideH, p.strideW, hasW: p.hasStrideW, name: "stride")!
        pad = try pair(p.pad, hasSingle: true, p.padH, hasH: p.hasPadH, p.padW, hasW: p.hasPadW, name: "pad")!
        for (name, values) in [("kernel", kernel), ("stride", stride), ("pad", pad)] where values.contains(where: { $0 > Int(Int32.max) }) {
            throw Diagnostic("pooling \(name) \(values) is out of range (at most \(Int32.max))")
        }
        guard kernel.allSatisfy({ $0 > 0 }) else { throw Diagnostic("pooling kernel dimensions must be positive, got \(kernel)") }
        guard stride.allSatisfy({ $0 > 0 }) else { throw Diagnostic("pooling strides must be positive, got \(stride)") }
        for i in 0..<spatial where pad[i] >= kernel[i] {
            throw Diagnostic("pooling pad (\(pad[i])) must be smaller than the kernel (\(kernel[i]))",
                             hint: "Caffe rejects this too (pooling_layer.cpp: pad < kernel); reduce pad")
        }
    }

    /// Output extent along spatial axis `i`.
    public func output(_ input: Int, axis i: Int) -> Int {
        guard input != TensorShape.unknown else { return input }
        if isGlobal { return 1 }
        let span = input + 2 * pad[i] - kernel[i]
        var out = (roundsUp ? Int((Double(span) / Double(stride[i])).rounded(.up)) : span / stride[i]) + 1
        // The last window must start inside the image (or left padding), not in the right padding.
        if pad[i] > 0, (out - 1) * stride[i] >= input + pad[i] { out -= 1 }
        return out
    }
}

/// Dropout's scaling as the forks with `scale_train` define it (py-faster-rcnn's and Microsoft's
/// `DropoutLayer`): by default TRAIN scales kept values by `1/(1 − ratio)` and TEST copies; with
/// `scale_train: false` TRAIN keeps them unscaled and TEST multiplies by `1 − ratio` instead.
public extension Caffe_DropoutParameter {
    /// The factor applied to kept values in TRAIN (Caffe's `scale_` as a float, or 1).
    var trainScale: Float { scaleTrain ? Float(1 / (1 - Double(dropoutRatio))) : 1 }

    /// The factor TEST multiplies by: 1, or Caffe's `1. / scale_` rounded to a float.
    var testScale: Float { scaleTrain ? 1 : Float(1 / Double(Float(1 / (1 - Double(dropoutRatio))))) }
}
