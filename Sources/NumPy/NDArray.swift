/// A dense float32 tensor in C (row-major) order — the in-memory form of one `.npy` array.
///
/// `shape` lists the dimensions outermost first and `data` holds exactly `shape.reduce(1, *)`
/// elements, the last axis varying fastest. A 0-d array (a NumPy scalar such as a Caffe loss)
/// has `shape == []` and one element. Whatever dtype a file stores, reading converts it to
/// `Float` (see `NumPyFile.readArray(path:)`); writing always produces little-endian `<f4`.
/// Equality is element-wise `Float` equality, so arrays holding NaN never compare equal.
public struct NDArray: Sendable, Equatable {
    /// The dimensions, outermost first; `[]` for a 0-d (scalar) array.
    public var shape: [Int]
    /// The elements in C order; `data.count` must equal the product of `shape`.
    public var data: [Float]

    /// Creates an array from its shape and C-ordered elements.
    ///
    /// It is a programming error (checked with a precondition) for a dimension to be negative or
    /// for `data.count` to differ from the product of `shape` (1 for `shape == []`).
    public init(shape: [Int], data: [Float]) {
        precondition(
            NDArray.elementCount(shape) == data.count,
            "NDArray: shape \(shape) needs \(NDArray.elementCount(shape).map(String.init) ?? "an invalid number of") elements, got \(data.count)")
        self.shape = shape
        self.data = data
    }

    /// Creates an array of the given shape with every element set to `value` (zero by default).
    ///
    /// The shape's dimensions must be non-negative (checked with a precondition).
    public init(shape: [Int], repeating value: Float = 0) {
        guard let n = NDArray.elementCount(shape) else {
            preconditionFailure("NDArray: invalid shape \(shape)")
        }
        self.shape = shape
        self.data = [Float](repeating: value, count: n)
    }

    /// Creates a 0-d array (`shape == []`) holding the single value `scalar`, the way NumPy
    /// stores a scalar such as a loss.
    public init(scalar: Float) {
        self.shape = []
        self.data = [scalar]
    }

    /// Creates a 1-d array (`shape == [values.count]`) holding `values`.
    public init(_ values: [Float]) {
        self.shape = [values.count]
        self.data = values
    }

    /// The number of elements, `data.count` (1 for a 0-d array, 0 if any dimension is 0).
    public var count: Int { data.count }

    /// The number of dimensions, `shape.count` (0 for a scalar).
    public var rank: Int { shape.count }

    /// The product of `shape` (1 for `[]`), or nil if a dimension is negative or the product
    /// overflows `Int`.
    static func elementCount(_ shape: [Int]) -> Int? {
        var n = 1
        for d in shape {
            guard d >= 0 else { return nil }
            let (p, overflow) = n.multipliedReportingOverflow(by: d)
            if overflow { return nil }
            n = p
        }
        return n
    }
}

extension NDArray: CustomStringConvertible {
    /// A short summary such as `NDArray(shape: [2, 3], data: [1.0, 2.0, 3.0, …])` (at most 8
    /// elements are printed).
    public var description: String {
        let head = data.prefix(8).map { "\($0)" }.joined(separator: ", ")
        return "NDArray(shape: \(shape), data: [\(head)\(data.count > 8 ? ", …" : "")])"
    }
}
