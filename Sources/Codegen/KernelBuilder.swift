import CLLVM

/// Builds one kernel, `void name(float **operands, int64 begin, int64 end)`, as a nest of counted
/// loops over the LLVM C API, with typed values so lowerings read like the loops they generate.
///
/// `operands[i]` are the buffers the kernel's step passes; `begin..<end` is the slice of the task
/// space this call runs (`forEachTask`). Everything else is a compile-time constant: lowerings
/// pass Swift `Int`s for extents, strides and pads, so the optimizer sees constant trip counts and
/// can unroll and vectorize — except extents a kernel family reads from an operand at run time
/// (`KernelExtents`) so that layers differing only in them share one compiled kernel. IR is built with the typed calls (`LLVMBuildGEP2`, `LLVMBuildLoad2`,
/// `LLVMBuildCall2`) that survive the move to opaque pointers.
///
/// Each builder works in an LLVM context of its own, so kernels can be optimized and compiled on
/// several threads once built. The function and its module are always named `KernelBuilder.name`:
/// the kernel cache names a kernel by a digest of its IR, so identical code gets one name whichever
/// layer or process built it (`KernelModule.rename` gives it that name before compilation).
///
///     let b = KernelBuilder(operandCount: 2, jit: jit)
///     let (x, y) = (b.operand(0), b.operand(1))
///     b.forEachTask { i in y[i] = b.max(x[i], b.constant(0)) }
///     let kernel = b.finish()
final class KernelBuilder {
    /// The name every kernel is built under, before the cache names it by its content.
    static let name = "swiftjit_kernel"
    private let owned: KernelModule
    var module: LLVMModuleRef { owned.module }
    let function: LLVMValueRef
    // Internal (not fileprivate) so builder extensions in other files, such as the training
    // kernels' integer and branch helpers, can emit instructions.
    let llvm: LLVMBuilderRef
    let context: LLVMContextRef
    let f32, i64, i1, floatPointer: LLVMTypeRef
    private let entry: LLVMBasicBlockRef
    private let entryBranch: LLVMValueRef
    private var operandValues: [Buffer] = []
    private var declared: [String: (LLVMValueRef, LLVMTypeRef)] = [:]
    /// The first and one-past-last task of this call.
    private(set) var begin: Index!, end: Index!

    init(operandCount: Int, jit: KernelJIT) {
        context = LLVMContextCreate()
        let module = jit.makeModule(KernelBuilder.name, in: context)
        llvm = LLVMCreateBuilderInContext(context)
        f32 = LLVMFloatTypeInContext(context)
        i64 = LLVMInt64TypeInContext(context)
        i1 = LLVMInt1TypeInContext(context)
        floatPointer = LLVMPointerType(f32, 0)
        var parameters: [LLVMTypeRef?] = [LLVMPointerType(floatPointer, 0), i64, i64]
        let type = LLVMFunctionType(LLVMVoidTypeInContext(context), &parameters, 3, 0)
        function = LLVMAddFunction(module, KernelBuilder.name, type)
        owned = KernelModule(context: context, module: module, function: function)
        jit.tuneForHost(function, in: context)
        entry = LLVMAppendBasicBlockInContext(context, function, "entry")
        let body = LLVMAppendBasicBlockInContext(context, function, "body")
        LLVMPositionBuilderAtEnd(llvm, entry)
        let table = LLVMGetParam(function, 0)!
        var bases: [LLVMValueRef] = []
        for i in 0..<operandCount {
            var index: [LLVMValueRef?] = [LLVMConstInt(i64, UInt64(i), 0)]
            let slot = LLVMBuildInBoundsGEP2(llvm, floatPointer, table, &index, 1, "operand\(i).slot")
            bases.append(LLVMBuildLoad2(llvm, floatPointer, slot, "operand\(i)")!)
        }
        entryBranch = LLVMBuildBr(llvm, body)
        operandValues = bases.map { Buffer(base: $0, b: self) }
        LLVMPositionBuilderAtEnd(llvm, body)
        begin = Index(ref: LLVMGetParam(function, 1), b: self)
        end = Index(ref: LLVMGetParam(function, 2), b: self)
    }

    /// Operand `i` of the kernel's step.
    func operand(_ i: Int) -> Buffer { operandValues[i] }

    /// Ends the function and returns its module (the caller hands it to the kernel cache).
    func finish() -> KernelModule {
        LLVMBuildRetVoid(llvm)
        LLVMDisposeBuilder(llvm)
        return owned
    }

    /// Frees a kernel whose lowering failed half-way.
    func abandon() {
        LLVMDisposeBuilder(llvm)
    }

    // MARK: Constants and conversions

    func index(_ value: Int) -> Index { Index(ref: LLVMConstInt(i64, UInt64(bitPattern: Int64(value)), 1), b: self) }
    func constant(_ value: Float) -> Scalar { Scalar(ref: LLVMConstReal(f32, Double(value)), b: self) }
    /// The index as a float (`sitofp`), as Caffe stores max-pooling masks.
    func float(_ i: Index) -> Scalar { Scalar(ref: LLVMBuildSIToFP(llvm, i.ref, f32, ""), b: self) }

    // MARK: Choices

    func select(_ condition: Predicate, _ then: Scalar, _ otherwise: Scalar) -> Scalar {
        Scalar(ref: LLVMBuildSelect(llvm, condition.ref, then.ref, otherwise.ref, ""), b: self)
    }
    func select(_ condition: Predicate, _ then: Index, _ otherwise: Index) -> Index {
        Index(ref: LLVMBuildSelect(llvm, condition.ref, then.ref, otherwise.ref, ""), b: self)
    }
    /// `std::max(a, b)`: `a < b ? b : a` (keeps `a` on ties and NaNs, as Caffe's code does).
    func max(_ a: Scalar, _ b: Scalar) -> Scalar { select(a < b, b, a) }
    /// `std::min(a, b)`: `b < a ? b : a`.
    func min(_ a: Scalar, _ b: Scalar) -> Scalar { select(b < a, b, a) }
    func max(_ a: Index, _ b: Index) -> Index { select(a < b, b, a) }
    func min(_ a: Index, _ b: Index) -> Index { select(b < a, b, a) }

    // MARK: Maths functions

    /// Calls `float name(float, …)`: an LLVM intrinsic (`llvm.exp.f32`) or a C function the process
    /// exports (`tanhf`), found at link time through the JIT's process symbol generator.
    func call(_ name: String, _ arguments: Scalar...) -> Scalar {
        let (callee, type) = declaration(name, arity: arguments.count)
        var values: [LLVMValueRef?] = arguments.map(\.ref)
        return Scalar(ref: LLVMBuildCall2(llvm, type, callee, &values, UInt32(values.count), ""), b: self)
    }
    func exp(_ x: Scalar) -> Scalar { call("llvm.exp.f32", x) }
    func log(_ x: Scalar) -> Scalar { call("llvm.log.f32", x) }
    func sqrt(_ x: Scalar) -> Scalar { call("llvm.sqrt.f32", x) }
    func pow(_ x: Scalar, _ y: Scalar) -> Scalar { call("llvm.pow.f32", x, y) }
    func abs(_ x: Scalar) -> Scalar { call("llvm.fabs.f32", x) }
    func tanh(_ x: Scalar) -> Scalar { call("tanhf", x) }
    func log1p(_ x: Scalar) -> Scalar { call("log1pf", x) }
    func expm1(_ x: Scalar) -> Scalar { call("expm1f", x) }

    private func declaration(_ name: String, arity: Int) -> (LLVMValueRef, LLVMTypeRef) {
        if let known = declared[name] { return known }
        var parameters = [LLVMTypeRef?](repeating: f32, count: arity)
        let type = LLVMFunctionType(f32, &parameters, UInt32(arity), 0)!
        let callee = LLVMAddFunction(module, name, type)!
        if !name.hasPrefix("llvm.") {
            // libm's float functions touch no memory we care about (no errno reads follow).
            for attribute in ["nounwind", "readnone", "willreturn"] {
                let kind = LLVMGetEnumAttributeKindForName(attribute, attribute.utf8.count)
                LLVMAddAttributeAtIndex(callee, UInt32.max, LLVMCreateEnumAttribute(context, kind, 0))
            }
        }
        declared[name] = (callee, type)
        return (callee, type)
    }

    // MARK: Loops

    /// `for i in range { body(i) }` with constant bounds. `unrolled: false` keeps the optimizer from
    /// unrolling it: for an outer loop around inner loops (images around a reduction over a plane),
    /// whose full unrolling at a constant trip count of 16 or more multiplies the code, and the
    /// compile time, for no speed.
    func loop(_ range: Range<Int>, unrolled: Bool = true, _ body: (Index) -> Void) {
        guard !range.isEmpty else { return }
        loop(from: index(range.lowerBound), to: index(range.upperBound), unrolled: unrolled, body)
    }

    /// `for i in lower..<upper { body(i) }`; runs no iteration when `upper <= lower`.
    func loop(from lower: Index, to upper: Index, unrolled: Bool = true, _ body: (Index) -> Void) {
        _ = loop(from: lower, to: upper, carrying: [], unrolled: unrolled) { i, _ in
            body(i)
            return []
        }
    }

    /// `for task in begin..<end { body(task) }`: the slice of the task space this call owns.
    func forEachTask(_ body: (Index) -> Void) {
        loop(from: begin, to: end, body)
    }

    /// `count` floats of stack memory, 64-byte aligned, allocated once in the entry block: per-call
    /// scratch such as the panel GEMM's packed columns (each thread calls the kernel on its own
    /// stack, so the memory is private to it). Keep it to tens of KB: worker threads have 1 MiB.
    func stackArray(count: Int) -> Buffer {
        let here = LLVMGetInsertBlock(llvm)
        LLVMPositionBuilderBefore(llvm, entryBranch)
        let slot = LLVMBuildArrayAlloca(llvm, f32, LLVMConstInt(i64, UInt64(count), 0), "scratch")!
        LLVMSetAlignment(slot, 64)
        LLVMPositionBuilderAtEnd(llvm, here)
        return Buffer(base: slot, b: self)
    }

    /// A mutable float kept in a stack slot (promoted to a register by the optimizer).
    func variable(_ initial: Scalar) -> Variable {
        let here = LLVMGetInsertBlock(llvm)
        LLVMPositionBuilderBefore(llvm, entryBranch)
        let slot = LLVMBuildAlloca(llvm, f32, "var")!
        LLVMPositionBuilderAtEnd(llvm, here)
        let variable = Variable(slot: slot, b: self)
        variable.value = initial
        return variable
    }
}

/// An `int64` value in a kernel: a task number, a loop counter, an element offset.
struct Index {
    let ref: LLVMValueRef
    unowned let b: KernelBuilder

    static func + (l: Index, r: Index) -> Index { Index(ref: LLVMBuildNSWAdd(l.b.llvm, l.ref, r.ref, ""), b: l.b) }
    static func - (l: Index, r: Index) -> Index { Index(ref: LLVMBuildNSWSub(l.b.llvm, l.ref, r.ref, ""), b: l.b) }
    static func * (l: Index, r: Index) -> Index { Index(ref: LLVMBuildNSWMul(l.b.llvm, l.ref, r.ref, ""), b: l.b) }
    static func + (l: Index, r: Int) -> Index { r == 0 ? l : l + l.b.index(r) }
    static func - (l: Index, r: Int) -> Index { r == 0 ? l : l - l.b.index(r) }
    static func * (l: Index, r: Int) -> Index { r == 1 ? l : l * l.b.index(r) }
    static func + (l: Int, r: Index) -> Index { r + l }
    static func * (l: Int, r: Index) -> Index { r * l }
    /// Signed division and remainder by a positive constant (task numbers are never negative).
    static func / (l: Index, r: Int) -> Index { r == 1 ? l : Index(ref: LLVMBuildSDiv(l.b.llvm, l.ref, l.b.index(r).ref, ""), b: l.b) }
    static func % (l: Index, r: Int) -> Index { Index(ref: LLVMBuildSRem(l.b.llvm, l.ref, l.b.index(r).ref, ""), b: l.b) }

    static func < (l: Index, r: Index) -> Predicate { l.compare(LLVMIntSLT, r) }
    static func >= (l: Index, r: Index) -> Predicate { l.compare(LLVMIntSGE, r) }
    static func < (l: Index, r: Int) -> Predicate { l < l.b.index(r) }
    static func >= (l: Index, r: Int) -> Predicate { l >= l.b.index(r) }

    private func compare(_ predicate: LLVMIntPredicate, _ r: Index) -> Predicate {
        Predicate(ref: LLVMBuildICmp(b.llvm, predicate, ref, r.ref, ""), b: b)
    }
}

/// A `float` value in a kernel. Arithmetic is plain IEEE (no fast-math): results round like Caffe's
/// scalar C++ loops.
struct Scalar {
    let ref: LLVMValueRef
    unowned let b: KernelBuilder

    static func + (l: Scalar, r: Scalar) -> Scalar { Scalar(ref: LLVMBuildFAdd(l.b.llvm, l.ref, r.ref, ""), b: l.b) }
    static func - (l: Scalar, r: Scalar) -> Scalar { Scalar(ref: LLVMBuildFSub(l.b.llvm, l.ref, r.ref, ""), b: l.b) }
    static func * (l: Scalar, r: Scalar) -> Scalar { Scalar(ref: LLVMBuildFMul(l.b.llvm, l.ref, r.ref, ""), b: l.b) }
    static func / (l: Scalar, r: Scalar) -> Scalar { Scalar(ref: LLVMBuildFDiv(l.b.llvm, l.ref, r.ref, ""), b: l.b) }
    static func + (l: Scalar, r: Float) -> Scalar { l + l.b.constant(r) }
    static func - (l: Scalar, r: Float) -> Scalar { l - l.b.constant(r) }
    static func * (l: Scalar, r: Float) -> Scalar { l * l.b.constant(r) }
    static func / (l: Scalar, r: Float) -> Scalar { l / l.b.constant(r) }
    static func * (l: Float, r: Scalar) -> Scalar { r.b.constant(l) * r }
    static func + (l: Float, r: Scalar) -> Scalar { r.b.constant(l) + r }
    static func - (l: Float, r: Scalar) -> Scalar { r.b.constant(l) - r }
    static func / (l: Float, r: Scalar) -> Scalar { r.b.constant(l) / r }
    static prefix func - (x: Scalar) -> Scalar { Scalar(ref: LLVMBuildFNeg(x.b.llvm, x.ref, ""), b: x.b) }

    /// Ordered comparisons: false when either side is NaN, like C's `<` and `>`.
    static func < (l: Scalar, r: Scalar) -> Predicate { l.compare(LLVMRealOLT, r) }
    static func > (l: Scalar, r: Scalar) -> Predicate { l.compare(LLVMRealOGT, r) }
    static func <= (l: Scalar, r: Scalar) -> Predicate { l.compare(LLVMRealOLE, r) }
    static func > (l: Scalar, r: Float) -> Predicate { l > l.b.constant(r) }
    static func < (l: Scalar, r: Float) -> Predicate { l < l.b.constant(r) }
    static func <= (l: Scalar, r: Float) -> Predicate { l <= l.b.constant(r) }

    private func compare(_ predicate: LLVMRealPredicate, _ r: Scalar) -> Predicate {
        Predicate(ref: LLVMBuildFCmp(b.llvm, predicate, ref, r.ref, ""), b: b)
    }
}

/// A boolean (`i1`) in a kernel, for `select`.
struct Predicate {
    let ref: LLVMValueRef
    unowned let b: KernelBuilder

    static func && (l: Predicate, r: Predicate) -> Predicate { Predicate(ref: LLVMBuildAnd(l.b.llvm, l.ref, r.ref, ""), b: l.b) }
}

/// A float buffer operand: `buffer[i]` loads, `buffer[i] = v` stores (4-byte aligned accesses).
struct Buffer {
    let base: LLVMValueRef
    unowned let b: KernelBuilder

    subscript(_ i: Index) -> Scalar {
        get {
            let load = LLVMBuildLoad2(b.llvm, b.f32, address(i), "")!
            LLVMSetAlignment(load, 4)
            return Scalar(ref: load, b: b)
        }
        nonmutating set {
            let store = LLVMBuildStore(b.llvm, newValue.ref, address(i))!
            LLVMSetAlignment(store, 4)
        }
    }

    private func address(_ i: Index) -> LLVMValueRef {
        var indices: [LLVMValueRef?] = [i.ref]
        return LLVMBuildInBoundsGEP2(b.llvm, b.f32, base, &indices, 1, "")
    }
}

/// A mutable float across loop iterations (`acc.value = acc.value + x`).
struct Variable {
    let slot: LLVMValueRef
    unowned let b: KernelBuilder

    var value: Scalar {
        get { Scalar(ref: LLVMBuildLoad2(b.llvm, b.f32, slot, "")!, b: b) }
        nonmutating set { LLVMBuildStore(b.llvm, newValue.ref, slot) }
    }
}

/// One built kernel: its LLVM context, module and function, freed together.
///
/// The context is the module's alone, so the module can be optimized and compiled on any thread,
/// one thread at a time.
final class KernelModule: @unchecked Sendable {
    let context: LLVMContextRef
    let module: LLVMModuleRef
    let function: LLVMValueRef

    init(context: LLVMContextRef, module: LLVMModuleRef, function: LLVMValueRef) {
        self.context = context
        self.module = module
        self.function = function
    }

    deinit {
        LLVMDisposeModule(module)
        LLVMContextDispose(context)
    }

    /// The module's IR as text.
    var text: String { KernelJIT.text(of: module) }

    /// Names the function (the symbol the JIT will export) and the module.
    func rename(to name: String) {
        LLVMSetValueName2(function, name, name.utf8.count)
        LLVMSetModuleIdentifier(module, name, name.utf8.count)
    }
}
