/// The shape of a blob: its extents from outermost (batch) to innermost, like Caffe's `Blob::shape()`.
///
/// A shape can be partly unknown at compile time: a `Data` layer's channels and height come from the
/// first record of its LMDB, an `HDF5Data` layer's whole shape from its files. Unknown extents are
/// stored as `TensorShape.unknown` (-1) and print as `?`; a shape whose rank is unknown has
/// `isRankKnown == false`. Shape inference propagates unknowns instead of guessing, so `compile`
/// still explains a train_val net whose datasets are not on this machine. A 0-d shape (`[]`) is a
/// scalar, as Caffe's loss tops are.
public struct TensorShape: Hashable, Sendable, CustomStringConvertible {
    /// The marker for an extent not known until data is read.
    public static let unknown = -1

    public var dims: [Int]
    public var isRankKnown: Bool

    public init(_ dims: [Int]) {
        self.dims = dims
        self.isRankKnown = true
    }

    /// A shape about which nothing is known, not even its rank.
    public static let unknownRank: TensorShape = {
        var shape = TensorShape([])
        shape.isRankKnown = false
        return shape
    }()

    public static let scalar = TensorShape([])

    public var rank: Int { dims.count }

    /// True when the rank and every extent are known.
    public var isFullyKnown: Bool { isRankKnown && !dims.contains(TensorShape.unknown) }

    /// The number of elements, or nil when some extent is unknown.
    public var count: Int? { isFullyKnown ? Extent.checkedProduct(dims) : nil }

    /// True when every extent is known but their product does not fit in an `Int`.
    public var overflows: Bool { isFullyKnown && Extent.checkedProduct(dims) == nil }

    /// The element count of axes `start..<end`, or nil when unknown.
    public func count(from start: Int, to end: Int? = nil) -> Int? {
        guard isRankKnown else { return nil }
        let slice = dims[max(0, start)..<min(dims.count, end ?? dims.count)]
        return slice.contains(TensorShape.unknown) ? nil : Extent.checkedProduct(Array(slice))
    }

    public subscript(axis: Int) -> Int {
        get { dims[axis] }
        set { dims[axis] = newValue }
    }

    /// Caffe's `CanonicalAxisIndex`: a negative axis counts from the end.
    public func canonicalAxis(_ axis: Int) -> Int? {
        let resolved = axis < 0 ? axis + rank : axis
        return (0..<max(rank, 1)).contains(resolved) || (rank == 0 && resolved == 0) ? resolved : nil
    }

    /// `2×3×224×224`, `?` for unknown extents, `scalar` for 0-d, `?` for an unknown rank.
    public var description: String {
        guard isRankKnown else { return "?" }
        if dims.isEmpty { return "scalar" }
        return dims.map { $0 == TensorShape.unknown ? "?" : String($0) }.joined(separator: "×")
    }

    /// The dims as a JSON-friendly list (`null` for unknowns is up to the caller).
    public var jsonDims: [Int?] { dims.map { $0 == TensorShape.unknown ? nil : $0 } }

    /// Whether two shapes can describe the same blob: equal where both are known.
    public func isCompatible(with other: TensorShape) -> Bool {
        guard isRankKnown, other.isRankKnown else { return true }
        guard rank == other.rank else { return false }
        return zip(dims, other.dims).allSatisfy { $0 == $1 || $0 == TensorShape.unknown || $1 == TensorShape.unknown }
    }
}

/// Arithmetic on extents that keeps unknowns unknown.
enum Extent {
    static func map(_ values: Int..., body: ([Int]) -> Int) -> Int {
        values.contains(TensorShape.unknown) ? TensorShape.unknown : body(values)
    }

    static func product(_ values: [Int]) -> Int {
        values.contains(TensorShape.unknown) ? TensorShape.unknown : (checkedProduct(values) ?? TensorShape.unknown)
    }

    /// The product, or nil when it does not fit in an `Int` (hostile or corrupt inputs).
    static func checkedProduct(_ values: [Int]) -> Int? {
        var result = 1
        for value in values {
            let (next, overflow) = result.multipliedReportingOverflow(by: value)
            if overflow { return nil }
            result = next
        }
        return result
    }
}
