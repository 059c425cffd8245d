import Graph

/// The im2col layout of one image: `channels` planes of extents `image`, unfolded into a
/// (channels·∏kernel) × ∏result column matrix, any number of spatial axes. The forward
/// convolution's im2col and training's col2im walk it the same way (`walk`) and move each row
/// segment with the same vector code (`copyRow`, `addRow`).
struct ColumnLayout {
    var channels: Int
    var image: [Int]
    var result: [Int]
    var geometry: ConvolutionGeometry
    var kernel: [Int] { geometry.kernel }
    var stride: [Int] { geometry.stride }
    var pad: [Int] { geometry.pad }
    var dilation: [Int] { geometry.dilation }
    /// Caffe's `is_1x1_` (`ConvolutionGeometry.isPointwise`): the column matrix is the image itself.
    var isPointwise: Bool { geometry.isPointwise }

    init(channels: Int, image: [Int], result: [Int], _ g: ConvolutionGeometry) {
        self.channels = channels
        self.image = image
        self.result = result
        geometry = g
    }

    var imageCount: Int { channels * image.reduce(1, *) }
    var kernelCount: Int { kernel.reduce(1, *) }
    var resultCount: Int { result.reduce(1, *) }
    var columnCount: Int { channels * kernelCount * resultCount }

    var signature: String {
        func list(_ values: [Int]) -> String { values.map(String.init).joined(separator: "x") }
        return "c\(channels) in\(list(image)) k\(list(kernel)) s\(list(stride)) p\(list(pad)) d\(list(dilation)) o\(list(result))"
    }

    /// Visits every row segment of one channel's columns: for each kernel offset and each output
    /// position of the outer axes, `row(column, image, lower, upper, inside)` means column entries
    /// `column + o` (`o` in `0..<result.last`) correspond to image elements `image + o·stride` for
    /// `o` in `lower..<upper` (the last axis's positions that land inside the image, a compile-time
    /// range), and to padding elsewhere; `inside` is false when an outer axis falls in the padding
    /// (then `image` is clamped).
    ///
    /// With `band`, only output rows `band.index·band.rows..<(band.index + 1)·band.rows` of the
    /// first axis are visited, and the columns are those of a band: a (channels·∏kernel) ×
    /// (band.rows·∏other result axes) matrix. `unrolled: false` keeps LLVM from unrolling the
    /// loops over output rows, whose bodies are already a row of vector code (ours or the loop
    /// vectorizer's): unrolled, ResNet's 28×28 im2col took 0.75 s to compile and ran no faster.
    func walk(_ b: KernelBuilder, channel: Index, band: (index: Index, rows: Int)? = nil, unrolled: Bool = true,
              _ row: (Index, Index, Int, Int, Predicate?) -> Void) {
        let last = image.count - 1
        let (w, ow, kw) = (image[last], result[last], kernel[last])
        let (sw, pw, dw) = (stride[last], pad[last], dilation[last])
        let imagePlane = image.reduce(1, *), kernels = kernelCount
        let results = band.map { $0.rows * result.dropFirst().reduce(1, *) } ?? resultCount
        func overOutput(_ axis: Int, offsets: [Index], kx: Int, columnRow: Index, outFlat: Index, inFlat: Index, inside: Predicate?) {
            if axis == last {
                let shift = kx * dw - pw
                let lower = Swift.min(ow, Swift.max(0, ceilDiv(-shift, sw)))
                let upper = Swift.max(lower, Swift.min(ow, ceilDiv(w - shift, sw)))
                row(columnRow * results + outFlat * ow, channel * imagePlane + inFlat * w + shift, lower, upper, inside)
                return
            }
            let positions = axis == 0 ? band?.rows ?? result[0] : result[axis]
            b.loop(0..<positions, unrolled: unrolled) { local in
                // Within a band, `local` counts the band's rows; the input row is the absolute one.
                let position = axis == 0 ? band.map { $0.index * $0.rows + local } ?? local : local
                let at = position * stride[axis] + offsets[axis] * dilation[axis] - pad[axis]
                let valid = at >= 0 && at < image[axis]
                let clamped = b.max(b.index(0), b.min(at, b.index(image[axis] - 1)))
                overOutput(axis + 1, offsets: offsets, kx: kx, columnRow: columnRow, outFlat: outFlat * positions + local,
                           inFlat: inFlat * image[axis] + clamped, inside: inside.map { $0 && valid } ?? valid)
            }
        }
        func overKernel(_ axis: Int, offsets: [Index], kernelFlat: Index) {
            if axis == last {
                for kx in 0..<kw {
                    overOutput(0, offsets: offsets, kx: kx, columnRow: channel * kernels + kernelFlat * kw + kx,
                               outFlat: b.index(0), inFlat: b.index(0), inside: nil)
                }
                return
            }
            b.loop(0..<kernel[axis]) { offset in
                overKernel(axis + 1, offsets: offsets + [offset], kernelFlat: kernelFlat * kernel[axis] + offset)
            }
        }
        overKernel(0, offsets: [], kernelFlat: b.index(0))
    }

    /// The vector width row segments move in for `lanes`-wide registers, or nil for scalar code:
    /// only rows read with stride 1 and at most 8 vectors long are moved by hand (half a register
    /// when the row fits in one); longer rows are left to the loop vectorizer.
    func rowVectorWidth(lanes: Int) -> Int? {
        let ow = result.last ?? 1
        guard stride.last == 1, lanes >= 8, ow <= 8 * lanes else { return nil }
        return KernelBuilder.rowWidth(outputs: ow, lanes: lanes)
    }

    /// One im2col row segment (see `walk`): `col[column + o] = x[image + o·stride]` for `o` in
    /// `lower..<upper` when `inside`, 0 elsewhere. With a vector `width`, each chunk of the row is
    /// one masked load (lanes outside `lower..<upper` read nothing and are 0) and one store, so
    /// rows narrower than the loop vectorizer's trip count (16 or 14 columns) still move a vector
    /// at a time; the values are the same copies either way.
    func copyRow(_ b: KernelBuilder, from x: Buffer, to col: Buffer, column: Index, image start: Index,
                 lower: Int, upper: Int, inside: Predicate?, width: Int?) {
        let ow = result.last ?? 1, sw = stride.last ?? 1
        guard let width else {
            b.loop(0..<lower) { o in col[column + o] = b.constant(0) }
            b.loop(lower..<upper) { o in
                let value = x[start + o * sw]
                col[column + o] = inside.map { b.select($0, value, b.constant(0)) } ?? value
            }
            b.loop(upper..<ow) { o in col[column + o] = b.constant(0) }
            return
        }
        for first in Swift.stride(from: 0, to: ow, by: width) {
            let reads = LaneMask((0..<width).map { first + $0 >= lower && first + $0 < upper })
            var value = x.load(start + b.index(first), reads)
            if let inside, !reads.isEmpty { value = b.select(inside, value, b.splat(0, width: width)) }
            col.store(value, at: column + b.index(first), LaneMask(first: Swift.min(width, ow - first), of: width))
        }
    }

    /// One col2im row segment, the reverse of `copyRow`: `x[image + o·stride] += col[column + o]`
    /// for `o` in `lower..<upper` when `inside` (padding receives nothing). With a vector `width`,
    /// each chunk is a masked load of both rows, an add and a masked store; every element gets the
    /// same additions in the same order as the scalar loop.
    func addRow(_ b: KernelBuilder, from col: Buffer, to x: Buffer, column: Index, image start: Index,
                lower: Int, upper: Int, inside: Predicate?, width: Int?) {
        let ow = result.last ?? 1, sw = stride.last ?? 1
        func add() {
            guard let width else {
                b.loop(lower..<upper) { o in
                    let at = start + o * sw
                    x[at] = x[at] + col[column + o]
                }
                return
            }
            for first in Swift.stride(from: 0, to: ow, by: width) {
                let lanes = LaneMask((0..<width).map { first + $0 >= lower && first + $0 < upper })
                guard !lanes.isEmpty else { continue }
                let at = start + b.index(first)
                x.store(x.load(at, lanes) + col.load(column + b.index(first), lanes), at: at, lanes)
            }
        }
        if let inside { b.when(inside, add) } else { add() }
    }
}
