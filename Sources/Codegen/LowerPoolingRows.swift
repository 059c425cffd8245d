/// Interior output rows of a 2-D MAX (without an index top) or AVE pooling, `width` outputs at a
/// time: per vector, the KH×KW taps in Caffe's order, each a vector load of the input row (stride 2
/// reads two vectors and keeps the even lanes), combined lane by lane exactly as the scalar kernel
/// combines one output (`v > best ? v : best` from −FLT_MAX, or a sum from 0 divided by KH·KW), so
/// the result is the same bit for bit. Only windows wholly inside the image come here, so no lane
/// reads padding; lanes past the row's outputs are masked off.
///
/// The scalar interior loop did not vectorize at stride 2 (SqueezeNet's 3×3 stride-2 MAX pools ran
/// at a tenth of ONNX Runtime's speed), and a window covering a whole plane (global AVE pooling) was
/// one dependent chain of KH·KW adds; `planeSums` sums such a plane a vector at a time.
struct PoolingRows {
    let b: KernelBuilder
    let x: Buffer, y: Buffer
    let width: Int
    let image: (h: Int, w: Int), result: (h: Int, w: Int)
    let kernel: (h: Int, w: Int), stride: (h: Int, w: Int), pad: (h: Int, w: Int)
    let maximum: Bool
    /// The plane's first input and output elements.
    let source: Index, target: Index
    /// Whether an output vector's masked-off lanes may be stored anyway: they land on outputs of
    /// this plane that the task writes later (see `Lowering.poolingRows`).
    let storesWhole: Bool

    /// Whether pooling with this geometry runs its interior by rows: horizontal stride 1 or 2.
    static func applies(strideWidth: Int) -> Bool { strideWidth == 1 || strideWidth == 2 }

    /// Outputs `columns` of interior row `oy`.
    func emit(_ oy: Index, columns: Range<Int>) {
        for first in Swift.stride(from: columns.lowerBound, to: columns.upperBound, by: width) {
            let lanes = min(width, columns.upperBound - first)
            var value = b.splat(maximum ? -Float.greatestFiniteMagnitude : 0, width: width)
            for ky in 0..<kernel.h {
                let rowStart = source + (oy * stride.h + (ky - pad.h)) * image.w
                for kx in 0..<kernel.w {
                    let v = b.stridedRow(x, rowStart, column: first * stride.w + kx - pad.w, stride: stride.w, lanes: lanes,
                                         width: width, rowWidth: image.w)
                    value = maximum ? b.max(value, v) : value + v  // max: `value < v ? v : value`, Caffe's `v > best`
                }
            }
            if !maximum { value = value / b.splat(Float(kernel.h * kernel.w), width: width) }
            y.store(value, at: target + oy * result.w + first, LaneMask(first: storesWhole ? width : lanes, of: width))
        }
    }
}
