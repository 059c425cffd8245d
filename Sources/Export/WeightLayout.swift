import CaffeFormat
import NumPy

/// The axis order another framework wants for convolution weights, named by its letters:
/// `O` output channels (`num_output`), `I` input channels per group, `HW` the kernel's spatial axes
/// (`DHW` for 3-D convolution, and so on).
///
/// Caffe stores a Convolution's weights as `oihw`. TensorFlow/Keras want `hwio`, TensorFlow Lite
/// and many NHWC runtimes `ohwi`; PyTorch's and ONNX's `ConvTranspose` store Caffe's native
/// Deconvolution order, which is `iohw` here when `group` is 1.
///
/// The letters mean the same for every layer: a Deconvolution's `O` is its `num_output` and `I`
/// its input channels per group, although Caffe stores deconvolution weights input-first
/// (`in × out/group × kh × kw`). An InnerProduct weight is `out × in` under `oihw`/`ohwi` and
/// `in × out` under `hwio`/`iohw` (whichever comes first of O and I), whatever Caffe's `transpose`.
///
///     let hwio = try WeightLayout.hwio.arrange(weights, as: .convolution)   // 96×1×5×5 → 5×5×1×96
public enum WeightLayout: String, CaseIterable, Sendable, Codable {
    case oihw, hwio, ohwi, iohw

    /// What a weight blob is, which decides how Caffe laid it out.
    public enum WeightKind: Sendable, Equatable {
        /// Caffe `O × I/group × spatial…`.
        case convolution
        /// Caffe `I × O/group × spatial…` (input channels first).
        case deconvolution(group: Int)
        /// Caffe `out × in`, or `in × out` when the layer says `transpose: true`.
        case innerProduct(transposed: Bool)
    }

    /// How `arrange` names the result's axes for a weight of `rank` axes, e.g. `hwio`, `dhwio`, `io`.
    public func axisNames(rank: Int, kind: WeightKind) -> String {
        if case .innerProduct = kind { return outputFirst ? "oi" : "io" }
        let spatial = String(["w", "h", "d"].prefix(max(rank - 2, 0)).reversed().joined())
        let spatialNames = rank - 2 <= 3 ? spatial : (0..<(rank - 2)).map { "s\($0)" }.joined()
        switch self {
        case .oihw: return "oi" + spatialNames
        case .hwio: return spatialNames + "io"
        case .ohwi: return "o" + spatialNames + "i"
        case .iohw: return "io" + spatialNames
        }
    }

    /// Whether O comes before I (which orients InnerProduct weights).
    var outputFirst: Bool { self == .oihw || self == .ohwi }

    /// The permutation from canonical `O, I, spatial…` to this layout (`result axis k = source axis p[k]`).
    func permutation(rank: Int) -> [Int] {
        let spatial = Array(2..<max(rank, 2))
        switch self {
        case .oihw: return [0, 1] + spatial
        case .hwio: return spatial + [1, 0]
        case .ohwi: return [0] + spatial + [1]
        case .iohw: return [1, 0] + spatial
        }
    }

    /// Caffe's stored weight → this layout.
    public func arrange(_ caffe: NDArray, as kind: WeightKind) throws -> NDArray {
        let canonical = try Self.canonical(caffe, kind: kind)
        if case .innerProduct = kind { return outputFirst ? canonical : Tensor.transpose(canonical, [1, 0]) }
        return Tensor.transpose(canonical, permutation(rank: canonical.rank))
    }

    /// This layout → Caffe's stored weight: the inverse of `arrange`, for importing weights back.
    public func restore(_ arranged: NDArray, as kind: WeightKind) throws -> NDArray {
        let canonical: NDArray
        if case .innerProduct = kind {
            guard arranged.rank == 2 else { throw Diagnostic("an InnerProduct weight has 2 axes, this one \(arranged.shape)") }
            canonical = outputFirst ? arranged : Tensor.transpose(arranged, [1, 0])
        } else {
            guard arranged.rank >= 3 else { throw Diagnostic("a convolution weight has at least 3 axes, this one \(arranged.shape)") }
            let forward = permutation(rank: arranged.rank)
            var inverse = Array(repeating: 0, count: forward.count)
            for (k, p) in forward.enumerated() { inverse[p] = k }
            canonical = Tensor.transpose(arranged, inverse)
        }
        switch kind {
        case .convolution: return canonical
        case .innerProduct(let transposed): return transposed ? Tensor.transpose(canonical, [1, 0]) : canonical
        case .deconvolution(let group):
            // canonical is O × I/g × k…; Caffe wants I × O/g × k….
            let outputs = canonical.shape[0], inputsPerGroup = canonical.shape[1]
            guard group > 0, outputs % group == 0 else { throw Diagnostic("\(outputs) outputs do not split into \(group) groups") }
            return Tensor.regroup(canonical, group: group, rows: outputs / group, columns: inputsPerGroup)
        }
    }

    /// Caffe's stored weight as `O × I/group × spatial…` (or `out × in` for InnerProduct).
    static func canonical(_ caffe: NDArray, kind: WeightKind) throws -> NDArray {
        switch kind {
        case .convolution:
            guard caffe.rank >= 3 else { throw Diagnostic("a convolution weight has at least 3 axes, this one \(caffe.shape)") }
            return caffe
        case .innerProduct(let transposed):
            guard caffe.rank == 2 else { throw Diagnostic("an InnerProduct weight has 2 axes, this one \(caffe.shape)") }
            return transposed ? Tensor.transpose(caffe, [1, 0]) : caffe
        case .deconvolution(let group):
            guard caffe.rank >= 3 else { throw Diagnostic("a deconvolution weight has at least 3 axes, this one \(caffe.shape)") }
            let inputs = caffe.shape[0], outputsPerGroup = caffe.shape[1]
            guard group > 0, inputs % group == 0 else { throw Diagnostic("\(inputs) input channels do not split into \(group) groups") }
            return Tensor.regroup(caffe, group: group, rows: inputs / group, columns: outputsPerGroup)
        }
    }
}

/// Small array reshuffles on `NDArray`, done once per exported weight.
enum Tensor {
    /// `result` with `result.shape[k] == array.shape[permutation[k]]`, like NumPy's `transpose(permutation)`.
    static func transpose(_ array: NDArray, _ permutation: [Int]) -> NDArray {
        let rank = array.rank
        precondition(permutation.sorted() == Array(0..<rank), "not a permutation of \(rank) axes: \(permutation)")
        if permutation == Array(0..<rank) { return array }
        var sourceStrides = Array(repeating: 1, count: rank)
        for axis in stride(from: rank - 2, through: 0, by: -1) { sourceStrides[axis] = sourceStrides[axis + 1] * array.shape[axis + 1] }
        let shape = permutation.map { array.shape[$0] }
        let strides = permutation.map { sourceStrides[$0] }
        var data = [Float](repeating: 0, count: array.count)
        var index = Array(repeating: 0, count: rank)
        var source = 0
        for position in 0..<array.count {
            data[position] = array.data[source]
            var axis = rank - 1
            while axis >= 0 {
                index[axis] += 1
                source += strides[axis]
                if index[axis] < shape[axis] { break }
                source -= strides[axis] * shape[axis]
                index[axis] = 0
                axis -= 1
            }
        }
        return NDArray(shape: shape, data: data)
    }

    /// Swaps the two leading axes inside each group: a `(group·rows) × columns × rest…` array becomes
    /// `(group·columns) × rows × rest…`, with `result[g·columns + c, r] = array[g·rows + r, c]`.
    /// This turns Caffe's `I × O/g` deconvolution weights into `O × I/g` and back.
    static func regroup(_ array: NDArray, group: Int, rows: Int, columns: Int) -> NDArray {
        let inner = array.shape.dropFirst(2).reduce(1, *)
        var data = [Float](repeating: 0, count: array.count)
        for g in 0..<group {
            for r in 0..<rows {
                for c in 0..<columns {
                    let source = ((g * rows + r) * columns + c) * inner
                    let target = ((g * columns + c) * rows + r) * inner
                    for k in 0..<inner { data[target + k] = array.data[source + k] }
                }
            }
        }
        return NDArray(shape: [group * columns, rows] + array.shape.dropFirst(2), data: data)
    }
}
