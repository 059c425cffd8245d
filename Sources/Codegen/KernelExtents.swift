import CLLVM
import CaffeFormat
import Graph
import Runtime

/// Extents a kernel reads when it runs rather than bakes into its code, so that layers whose
/// products differ only in size (a panel GEMM's depth, column count and panel count) share one
/// compiled kernel instead of one per layer. A cold compile spends most of its time optimizing
/// and compiling kernels, one per distinct piece of IR: every extent moved out of the IR is a
/// kernel fewer to compile wherever two layers differed only in it.
///
/// The values travel as a small constant operand (`Lowering.extents`), each extent stored as the
/// bit pattern of a 32-bit integer in a float slot (copied, never computed with, so every bit
/// survives), read once at the kernel's entry and widened to an `Index`. Only extents that steer
/// loop trip counts and address arithmetic belong here; anything that changes the code's shape (a
/// tile's masks, a flag, an activation) stays a compile-time constant and in the kernel's signature.
///
///     let extents = lowering.extents(node, "panel gemm", [k, n])
///     … operands: [x, y, extents] …
///     let (k, n) = (b.extent(b.operand(2), 0), b.extent(b.operand(2), 1))
enum KernelExtents {
    /// The largest extent an operand slot holds (a 32-bit integer's bits).
    static let largest = Int(Int32.max)

    /// `value`'s slot: the bits of the 32-bit integer.
    static func slot(_ value: Int) -> Float { Float(bitPattern: UInt32(value)) }
}

extension Lowering {
    /// A constant operand holding `values` for `KernelBuilder.extent`, then `floats` for
    /// `KernelBuilder.value` (factors derived from the extents, such as 1/m, computed here in
    /// float exactly as a constant baked into the code would be). Throws a diagnostic naming the
    /// layer for an extent outside 0…`KernelExtents.largest`.
    mutating func extents(_ node: Node, _ what: String, _ values: [Int], floats: [Float] = []) throws -> Operand {
        if let bad = values.first(where: { $0 < 0 || $0 > KernelExtents.largest }) {
            throw Diagnostic("\(what): extent \(bad) is outside 0…\(KernelExtents.largest), the range a kernel reads", at: node.location, layer: node.name,
                             hint: "split the layer's input (smaller batches or images)")
        }
        return Operand(definitionConstant(node, "\(what) extents", values.map(KernelExtents.slot) + floats))
    }
}

extension KernelBuilder {
    /// Extent `i` of an extents operand (`Lowering.extents`), as an index.
    func extent(_ extents: Buffer, _ i: Int) -> Index {
        let bits = LLVMBuildBitCast(llvm, extents[index(i)].ref, LLVMInt32TypeInContext(context), "")
        return Index(ref: LLVMBuildSExt(llvm, bits, i64, "")!, b: self)
    }
    /// Float `i` of an extents operand (counting the extents before it).
    func value(_ extents: Buffer, _ i: Int) -> Scalar { extents[index(i)] }
}

extension Index {
    /// Signed division and remainder by an index known only at run time (positive: task numbers
    /// and extents are never negative).
    static func / (l: Index, r: Index) -> Index { Index(ref: LLVMBuildSDiv(l.b.llvm, l.ref, r.ref, ""), b: l.b) }
    static func % (l: Index, r: Index) -> Index { Index(ref: LLVMBuildSRem(l.b.llvm, l.ref, r.ref, ""), b: l.b) }
}
