import CLLVM

/// A `<width x float>` value in a kernel, for lowerings that vectorize by hand where the loop
/// vectorizer cannot: rows too short or too ragged for it (a 14-wide output row, a window that
/// hangs over the image's edge), strided reads it would not interleave.
///
/// Arithmetic is lane by lane and in the order written, exactly as the scalar `Scalar` code would
/// compute each lane (no fused multiply-add, no reassociation), so a vectorized kernel and its
/// scalar twin give the same bits. Which lanes a load or store touches is a compile-time
/// `LaneMask`: lanes outside it are neither read (they load 0) nor written, so a vector may start
/// before a row or run past its end without touching memory there.
struct FloatVector {
    let ref: LLVMValueRef
    let width: Int
    unowned let b: KernelBuilder

    static func + (l: FloatVector, r: FloatVector) -> FloatVector { l.combine(r, LLVMBuildFAdd) }
    static func - (l: FloatVector, r: FloatVector) -> FloatVector { l.combine(r, LLVMBuildFSub) }
    static func * (l: FloatVector, r: FloatVector) -> FloatVector { l.combine(r, LLVMBuildFMul) }
    static func / (l: FloatVector, r: FloatVector) -> FloatVector { l.combine(r, LLVMBuildFDiv) }
    static func < (l: FloatVector, r: FloatVector) -> LLVMValueRef {
        LLVMBuildFCmp(l.b.llvm, LLVMRealOLT, l.ref, r.ref, "")
    }

    private func combine(_ r: FloatVector,
                         _ build: (LLVMBuilderRef?, LLVMValueRef?, LLVMValueRef?, UnsafePointer<CChar>?) -> LLVMValueRef?) -> FloatVector {
        precondition(width == r.width, "vector widths differ")
        return FloatVector(ref: build(b.llvm, ref, r.ref, "")!, width: width, b: b)
    }
}

/// Which lanes of a vector access touch memory: a compile-time constant per access site.
struct LaneMask: Equatable {
    var lanes: [Bool]
    /// Lanes `0..<count` of `width`.
    init(first count: Int, of width: Int) { lanes = (0..<width).map { $0 < count } }
    init(_ lanes: [Bool]) { self.lanes = lanes }
    var isFull: Bool { lanes.allSatisfy { $0 } }
    var isEmpty: Bool { !lanes.contains(true) }
}

extension KernelBuilder {
    func vectorType(_ width: Int) -> LLVMTypeRef { LLVMVectorType(f32, UInt32(width)) }

    /// Every lane `value`.
    func splat(_ value: Float, width: Int) -> FloatVector {
        var lanes = [LLVMValueRef?](repeating: LLVMConstReal(f32, Double(value)), count: width)
        return FloatVector(ref: LLVMConstVector(&lanes, UInt32(width)), width: width, b: self)
    }

    /// Every lane the scalar `value` (an insert and a broadcast shuffle).
    func splat(_ value: Scalar, width: Int) -> FloatVector {
        let i32 = LLVMInt32TypeInContext(context)
        let one = LLVMBuildInsertElement(llvm, LLVMGetUndef(vectorType(width)), value.ref, LLVMConstInt(i32, 0, 0), "")
        var zeros = [LLVMValueRef?](repeating: LLVMConstInt(i32, 0, 0), count: width)
        let broadcast = LLVMBuildShuffleVector(llvm, one, LLVMGetUndef(vectorType(width)), LLVMConstVector(&zeros, UInt32(width)), "")!
        return FloatVector(ref: broadcast, width: width, b: self)
    }

    /// The sum of the lanes, as a tree: the upper half added to the lower half until one lane is
    /// left (a fixed order, so the same bits on every run; not the left-to-right scalar order).
    func sum(_ v: FloatVector) -> Scalar {
        let i32 = LLVMInt32TypeInContext(context)
        var value = v.ref, width = v.width
        while width > 1 {
            width /= 2
            func half(_ first: Int) -> LLVMValueRef {
                var lanes = (0..<width).map { LLVMConstInt(i32, UInt64(first + $0), 0) as LLVMValueRef? }
                return LLVMBuildShuffleVector(llvm, value, LLVMGetUndef(LLVMTypeOf(value)), LLVMConstVector(&lanes, UInt32(width)), "")!
            }
            value = LLVMBuildFAdd(llvm, half(0), half(width), "")!
        }
        return Scalar(ref: LLVMBuildExtractElement(llvm, value, LLVMConstInt(i32, 0, 0), "")!, b: self)
    }

    /// Sums over the `count` consecutive positions `start..<start + count` of a row, for reductions
    /// the loop vectorizer will not reorder: `terms(i, mask)` gives, for each of the `sums` sums,
    /// its terms at positions `i..<i + width` (loads through `mask`), and lanes outside the mask
    /// are zeroed here, so a term like `(x − mean)²` may be written plainly. One vector
    /// accumulator per sum runs over the row, the last partial vector masked, then a tree over its
    /// lanes: a fixed order, the same bits on every run, but not the scalar left-to-right one.
    func rowSums(_ sums: Int, count: Int, from start: Index, width: Int, _ terms: (Index, LaneMask) -> [FloatVector]) -> [Scalar] {
        let full = count / width, tail = count % width
        let whole = LaneMask(first: width, of: width)
        var totals = loop(0..<full, carrying: Array(repeating: splat(0, width: width), count: sums), unrolled: false) { i, carried in
            zip(carried, terms(start + i * width, whole)).map { $0 + $1 }
        }
        if tail > 0 {
            let mask = LaneMask(first: tail, of: width)
            let zero = splat(0, width: width)
            let masked = terms(start + index(full * width), mask).map {
                FloatVector(ref: LLVMBuildSelect(llvm, maskConstant(mask), $0.ref, zero.ref, "")!, width: width, b: self)
            }
            totals = zip(totals, masked).map { $0 + $1 }
        }
        return totals.map { sum($0) }
    }

    /// `a` when the scalar `condition` holds, else `b`: the whole vector either way.
    func select(_ condition: Predicate, _ a: FloatVector, _ b: FloatVector) -> FloatVector {
        FloatVector(ref: LLVMBuildSelect(llvm, condition.ref, a.ref, b.ref, ""), width: a.width, b: self)
    }

    /// `std::max` lane by lane: `a < b ? b : a`, as the scalar `max`.
    func max(_ a: FloatVector, _ b: FloatVector) -> FloatVector {
        FloatVector(ref: LLVMBuildSelect(llvm, a < b, b.ref, a.ref, ""), width: a.width, b: self)
    }
    /// `std::min` lane by lane: `b < a ? b : a`.
    func min(_ a: FloatVector, _ b: FloatVector) -> FloatVector {
        FloatVector(ref: LLVMBuildSelect(llvm, b < a, b.ref, a.ref, ""), width: a.width, b: self)
    }

    /// The even lanes of the 2·width lanes `low ++ high`: lane i is lane 2i of the pair, what a
    /// stride-2 read of consecutive memory keeps.
    func evenLanes(_ low: FloatVector, _ high: FloatVector) -> FloatVector {
        let i32 = LLVMInt32TypeInContext(context)
        var picks = (0..<low.width).map { LLVMConstInt(i32, UInt64(2 * $0), 0) as LLVMValueRef? }
        let shuffled = LLVMBuildShuffleVector(llvm, low.ref, high.ref, LLVMConstVector(&picks, UInt32(low.width)), "")!
        return FloatVector(ref: shuffled, width: low.width, b: self)
    }

    /// Columns `column + stride·i` (stride 1 or 2) of an image row of `rowWidth` values starting at
    /// `rowStart`, for lanes `i < lanes` of a `width`-lane vector; columns outside the row read as 0
    /// and which lanes those are is known at compile time. Stride 2 loads two vectors and keeps the
    /// even lanes; reading the odd ones too (where inside the row) keeps whole vectors unmasked. The
    /// row reads of depthwise convolution and pooling (`DepthwiseRows`, `PoolingRows`).
    func stridedRow(_ x: Buffer, _ rowStart: Index, column: Int, stride: Int, lanes: Int, width: Int, rowWidth: Int) -> FloatVector {
        let mask = (0..<(width * stride)).map { j in j / stride < lanes && (0..<rowWidth).contains(column + j) }
        if stride == 1 { return x.load(rowStart + column, LaneMask(mask)) }
        return evenLanes(x.load(rowStart + column, LaneMask(Array(mask[..<width]))),
                         x.load(rowStart + (column + width), LaneMask(Array(mask[width...]))))
    }

    /// The vector width for rows of `count` outputs: half the host's `lanes` when the row fits in
    /// half a vector, else all of them.
    static func rowWidth(outputs count: Int, lanes: Int) -> Int { count <= lanes / 2 ? lanes / 2 : lanes }

    /// `a · b + c` lane by lane with one rounding (`llvm.fma`): for GEMM-like inner loops, where
    /// the product's order is the GEMM's own anyway.
    func fma(_ a: FloatVector, _ b: FloatVector, _ c: FloatVector) -> FloatVector {
        let (callee, type) = intrinsic("llvm.fma", overloadedOn: [vectorType(a.width)])
        var arguments: [LLVMValueRef?] = [a.ref, b.ref, c.ref]
        return FloatVector(ref: LLVMBuildCall2(llvm, type, callee, &arguments, 3, "")!, width: a.width, b: self)
    }

    /// `for i in range { values = body(i, values) }` with the vectors kept in registers (phi nodes,
    /// not stack slots): an accumulator tile. Returns the values after the last iteration.
    /// `unrolled: false` keeps the optimizer from unrolling the loop (see `loop(from:to:…)`).
    func loop(_ range: Range<Int>, carrying initial: [FloatVector], unrolled: Bool = true,
              _ body: (Index, [FloatVector]) -> [FloatVector]) -> [FloatVector] {
        guard !range.isEmpty else { return initial }
        return loop(from: index(range.lowerBound), to: index(range.upperBound), carrying: initial, unrolled: unrolled, body)
    }

    /// `for i in lower..<upper { values = body(i, values) }`; no iteration when `upper <= lower`.
    /// The plain `loop(from:to:)` is this loop carrying nothing. With `unrolled: false` the loop
    /// carries `llvm.loop.unroll.disable`: for a tile that fills the register file, where the
    /// scheduler would start an unrolled copy's loads early and spill accumulators to make room.
    func loop(from lower: Index, to upper: Index, carrying initial: [FloatVector], unrolled: Bool = true,
              _ body: (Index, [FloatVector]) -> [FloatVector]) -> [FloatVector] {
        let preheader = LLVMGetInsertBlock(llvm)
        let header = LLVMAppendBasicBlockInContext(context, function, "loop")
        let bodyBlock = LLVMAppendBasicBlockInContext(context, function, "loop.body")
        let exit = LLVMAppendBasicBlockInContext(context, function, "loop.exit")
        LLVMBuildBr(llvm, header)
        LLVMPositionBuilderAtEnd(llvm, header)
        let counter = LLVMBuildPhi(llvm, i64, "i")!
        let carried = initial.map { FloatVector(ref: LLVMBuildPhi(llvm, vectorType($0.width), "carried")!, width: $0.width, b: self) }
        LLVMBuildCondBr(llvm, LLVMBuildICmp(llvm, LLVMIntSLT, counter, upper.ref, ""), bodyBlock, exit)
        LLVMPositionBuilderAtEnd(llvm, bodyBlock)
        let updated = body(Index(ref: counter, b: self), carried)
        precondition(updated.count == initial.count, "a carried loop must return as many values as it carries")
        let next = LLVMBuildNSWAdd(llvm, counter, LLVMConstInt(i64, 1, 0), "i.next")
        let latch = LLVMGetInsertBlock(llvm)
        let backEdge = LLVMBuildBr(llvm, header)!
        if !unrolled { LLVMSetMetadata(backEdge, LLVMGetMDKindIDInContext(context, "llvm.loop", 9), noUnrollLoopID()) }
        var blocks: [LLVMBasicBlockRef?] = [preheader, latch]
        var counterValues: [LLVMValueRef?] = [lower.ref, next]
        LLVMAddIncoming(counter, &counterValues, &blocks, 2)
        for (phi, (first, last)) in zip(carried, zip(initial, updated)) {
            var values: [LLVMValueRef?] = [first.ref, last.ref]
            LLVMAddIncoming(phi.ref, &values, &blocks, 2)
        }
        LLVMPositionBuilderAtEnd(llvm, exit)
        return carried
    }

    /// A loop ID (`!0 = !{!0, !{!"llvm.loop.unroll.disable"}}`) for a loop's back edge: its
    /// first operand must be the node itself, made here by replacing a temporary node.
    private func noUnrollLoopID() -> LLVMValueRef {
        let name = "llvm.loop.unroll.disable"
        var disable: [LLVMMetadataRef?] = [LLVMMDStringInContext2(context, name, name.utf8.count)]
        let property = LLVMMDNodeInContext2(context, &disable, 1)
        var none: [LLVMMetadataRef?] = []
        let placeholder = LLVMTemporaryMDNode(context, &none, 0)
        var operands: [LLVMMetadataRef?] = [placeholder, property]
        let id = LLVMMDNodeInContext2(context, &operands, 2)!
        LLVMMetadataReplaceAllUsesWith(placeholder, id)
        return LLVMMetadataAsValue(context, id)
    }

    fileprivate func maskConstant(_ mask: LaneMask) -> LLVMValueRef {
        var bits = mask.lanes.map { LLVMConstInt(i1, $0 ? 1 : 0, 0) as LLVMValueRef? }
        return LLVMConstVector(&bits, UInt32(bits.count))
    }

    /// The declaration and type of the overloaded LLVM intrinsic `name` for `types`.
    fileprivate func intrinsic(_ name: String, overloadedOn types: [LLVMTypeRef]) -> (LLVMValueRef, LLVMTypeRef) {
        let id = LLVMLookupIntrinsicID(name, name.utf8.count)
        var overloads: [LLVMTypeRef?] = types
        let callee = LLVMGetIntrinsicDeclaration(module, id, &overloads, types.count)!
        let type = LLVMIntrinsicGetType(context, id, &overloads, types.count)!
        return (callee, type)
    }

    /// `llvm.masked.load` / `llvm.masked.store` for `<width x float>`: both are overloaded on the
    /// vector type and then the pointer type.
    fileprivate func maskedIntrinsic(_ name: String, width: Int) -> (LLVMValueRef, LLVMTypeRef) {
        intrinsic(name, overloadedOn: [vectorType(width), LLVMPointerType(vectorType(width), 0)])
    }
}

extension Buffer {
    /// `width` consecutive floats from element `i` on; lanes outside `mask` read nothing and are 0.
    func load(_ i: Index, _ mask: LaneMask) -> FloatVector {
        let width = mask.lanes.count
        let pointer = vectorAddress(i, width: width)
        if mask.isFull {
            let load = LLVMBuildLoad2(b.llvm, b.vectorType(width), pointer, "")!
            LLVMSetAlignment(load, 4)
            return FloatVector(ref: load, width: width, b: b)
        }
        if mask.isEmpty { return b.splat(0, width: width) }
        let (callee, type) = b.maskedIntrinsic("llvm.masked.load", width: width)
        let i32 = LLVMInt32TypeInContext(b.context)
        var arguments: [LLVMValueRef?] = [pointer, LLVMConstInt(i32, 4, 0), b.maskConstant(mask), b.splat(0, width: width).ref]
        return FloatVector(ref: LLVMBuildCall2(b.llvm, type, callee, &arguments, 4, "")!, width: width, b: b)
    }

    /// Stores the lanes of `value` inside `mask` to elements `i..<i + width`.
    func store(_ value: FloatVector, at i: Index, _ mask: LaneMask) {
        precondition(mask.lanes.count == value.width, "mask and vector widths differ")
        guard !mask.isEmpty else { return }
        let pointer = vectorAddress(i, width: value.width)
        if mask.isFull {
            let store = LLVMBuildStore(b.llvm, value.ref, pointer)!
            LLVMSetAlignment(store, 4)
            return
        }
        let (callee, type) = b.maskedIntrinsic("llvm.masked.store", width: value.width)
        let i32 = LLVMInt32TypeInContext(b.context)
        var arguments: [LLVMValueRef?] = [value.ref, pointer, LLVMConstInt(i32, 4, 0), b.maskConstant(mask)]
        LLVMBuildCall2(b.llvm, type, callee, &arguments, 4, "")
    }

    /// Element `i`'s address as a vector pointer. Not `inbounds`: a masked access may start before
    /// the buffer (its first lanes masked off).
    private func vectorAddress(_ i: Index, width: Int) -> LLVMValueRef {
        var indices: [LLVMValueRef?] = [i.ref]
        let element = LLVMBuildGEP2(b.llvm, b.f32, base, &indices, 1, "")
        return LLVMBuildBitCast(b.llvm, element, LLVMPointerType(b.vectorType(width), 0), "")
    }
}
