import CLLVM

/// What training kernels need beyond the forward builder: labels turned into indices, branches,
/// integer comparisons, and a counter-based random number for dropout masks.
extension KernelBuilder {
    /// `static_cast<int>(x)`: truncation toward zero, as Caffe turns a float label into an index.
    func int(_ x: Scalar) -> Index {
        Index(ref: LLVMBuildFPToSI(llvm, x.ref, i64, ""), b: self)
    }

    /// 1 or 0 as a float (`bool` promoted to `Dtype`, as in `(x > 0) + slope * (x <= 0)`).
    func float(_ p: Predicate) -> Scalar {
        Scalar(ref: LLVMBuildUIToFP(llvm, p.ref, f32, ""), b: self)
    }

    /// Runs `body` only where `condition` holds.
    func when(_ condition: Predicate, _ body: () -> Void) {
        let then = LLVMAppendBasicBlockInContext(context, function, "then")
        let after = LLVMAppendBasicBlockInContext(context, function, "endif")
        LLVMBuildCondBr(llvm, condition.ref, then, after)
        LLVMPositionBuilderAtEnd(llvm, then)
        body()
        LLVMBuildBr(llvm, after)
        LLVMPositionBuilderAtEnd(llvm, after)
    }

    /// `if condition { then() } else { otherwise() }`.
    func when(_ condition: Predicate, _ then: () -> Void, otherwise: () -> Void) {
        let thenBlock = LLVMAppendBasicBlockInContext(context, function, "then")
        let elseBlock = LLVMAppendBasicBlockInContext(context, function, "else")
        let after = LLVMAppendBasicBlockInContext(context, function, "endif")
        LLVMBuildCondBr(llvm, condition.ref, thenBlock, elseBlock)
        LLVMPositionBuilderAtEnd(llvm, thenBlock)
        then()
        LLVMBuildBr(llvm, after)
        LLVMPositionBuilderAtEnd(llvm, elseBlock)
        otherwise()
        LLVMBuildBr(llvm, after)
        LLVMPositionBuilderAtEnd(llvm, after)
    }

    func not(_ p: Predicate) -> Predicate { Predicate(ref: LLVMBuildNot(llvm, p.ref, ""), b: self) }

    func equal(_ l: Index, _ r: Index) -> Predicate { Predicate(ref: LLVMBuildICmp(llvm, LLVMIntEQ, l.ref, r.ref, ""), b: self) }
    func equal(_ l: Index, _ r: Int) -> Predicate { equal(l, index(r)) }
    func equal(_ l: Scalar, _ r: Scalar) -> Predicate { Predicate(ref: LLVMBuildFCmp(llvm, LLVMRealOEQ, l.ref, r.ref, ""), b: self) }
    /// Ordered `l >= r` (false for NaN).
    func greaterOrEqual(_ l: Scalar, _ r: Scalar) -> Predicate { Predicate(ref: LLVMBuildFCmp(llvm, LLVMRealOGE, l.ref, r.ref, ""), b: self) }
    /// Whether `x` is neither NaN nor infinite (`|x| < inf`).
    func isFinite(_ x: Scalar) -> Predicate {
        Predicate(ref: LLVMBuildFCmp(llvm, LLVMRealOLT, abs(x).ref, constant(.infinity).ref, ""), b: self)
    }

    // MARK: Counter-based random numbers

    /// A 64-bit key the host stored in `buffer[0..<4]` as four 16-bit chunks (exact small floats,
    /// since kernel operands are float buffers), least significant first.
    func key(from buffer: Buffer) -> Index {
        (0..<4).map { int(buffer[index($0)]) << (16 * $0) }.reduce(index(0), |)
    }

    /// A 64-bit constant (bit pattern preserved).
    func bitPattern(_ value: UInt64) -> Index { Index(ref: LLVMConstInt(i64, value, 0), b: self) }

    /// SplitMix64's finalizer of `key + i·golden` (wrapping arithmetic): a well-mixed 64-bit
    /// value per (key, i), so element `i` of a mask is reproducible without storing the mask.
    func mix(_ key: Index, _ i: Index) -> Index {
        func constant64(_ v: UInt64) -> LLVMValueRef { LLVMConstInt(i64, v, 0) }
        var z = LLVMBuildAdd(llvm, key.ref, LLVMBuildMul(llvm, i.ref, constant64(0x9E37_79B9_7F4A_7C15), ""), "")!
        z = LLVMBuildMul(llvm, LLVMBuildXor(llvm, z, LLVMBuildLShr(llvm, z, constant64(30), ""), ""), constant64(0xBF58_476D_1CE4_E5B9), "")
        z = LLVMBuildMul(llvm, LLVMBuildXor(llvm, z, LLVMBuildLShr(llvm, z, constant64(27), ""), ""), constant64(0x94D0_49BB_1331_11EB), "")
        z = LLVMBuildXor(llvm, z, LLVMBuildLShr(llvm, z, constant64(31), ""), "")
        return Index(ref: z, b: self)
    }

    /// A uniform float in [0, 1) with 24 random bits, from `mix(key, i)`.
    func uniform(_ key: Index, _ i: Index) -> Scalar {
        let top = LLVMBuildLShr(llvm, mix(key, i).ref, LLVMConstInt(i64, 40, 0), "")
        let value = Scalar(ref: LLVMBuildUIToFP(llvm, top, f32, ""), b: self)
        return value * Float(1.0 / 16_777_216.0)
    }
}

extension Predicate {
    static func || (l: Predicate, r: Predicate) -> Predicate { Predicate(ref: LLVMBuildOr(l.b.llvm, l.ref, r.ref, ""), b: l.b) }
}

extension Index {
    static func <= (l: Index, r: Int) -> Predicate { Predicate(ref: LLVMBuildICmp(l.b.llvm, LLVMIntSLE, l.ref, l.b.index(r).ref, ""), b: l.b) }
    static func > (l: Index, r: Int) -> Predicate { Predicate(ref: LLVMBuildICmp(l.b.llvm, LLVMIntSGT, l.ref, l.b.index(r).ref, ""), b: l.b) }
    /// Wrapping (modulo 2⁶⁴) bit operations, for hashing.
    static func << (l: Index, r: Int) -> Index { Index(ref: LLVMBuildShl(l.b.llvm, l.ref, l.b.index(r).ref, ""), b: l.b) }
    static func | (l: Index, r: Index) -> Index { Index(ref: LLVMBuildOr(l.b.llvm, l.ref, r.ref, ""), b: l.b) }
    static func ^ (l: Index, r: Index) -> Index { Index(ref: LLVMBuildXor(l.b.llvm, l.ref, r.ref, ""), b: l.b) }
}

extension Scalar {
    static func >= (l: Scalar, r: Scalar) -> Predicate { l.b.greaterOrEqual(l, r) }
    static func >= (l: Scalar, r: Float) -> Predicate { l.b.greaterOrEqual(l, l.b.constant(r)) }
}
