/// A compiled kernel's entry point: `void kernel(float **operands, int64 begin, int64 end)`.
///
/// Every JIT'd kernel has this one signature. `operands` lists the buffers the kernel reads and
/// writes (in the order its lowering declared them); `begin..<end` is the slice of the kernel's task
/// space to run, so the same code runs serially (`0..<taskCount`) or split across a `ThreadPool`.
public typealias KernelFunction = @convention(c) (UnsafePointer<UnsafeMutablePointer<Float>?>?, Int64, Int64) -> Void

/// A compiled kernel as the runtime sees it: a name for profiles and errors, and its entry point.
///
/// The code behind `function` belongs to whoever compiled it (the JIT); keep that owner alive as long
/// as any `Executable` uses the kernel. `function` is nil while the kernel waits for its batch to be
/// compiled; an `Executable` refuses a program that still holds such a kernel.
public struct Kernel: @unchecked Sendable {
    public var name: String
    public var function: KernelFunction?

    public init(name: String, function: KernelFunction?) {
        self.name = name
        self.function = function
    }
}

/// Identifies a buffer declared in a `Program`.
public typealias BufferID = Int

/// A place a step reads or writes: a declared buffer, starting `offset` floats in.
public struct Operand: Hashable, Sendable {
    public var buffer: BufferID
    public var offset: Int

    public init(_ buffer: BufferID, offset: Int = 0) {
        self.buffer = buffer
        self.offset = offset
    }
}

/// A buffer a `Program` uses: an activation (placed in the arena by the memory planner), a constant
/// (parameters, owned by the executable, never written), or a persistent buffer.
///
/// Persistent buffers (training parameters, their gradients, running statistics) live outside the
/// arena for the executable's whole life, start with `constant`'s values (zeros when nil), may be
/// written by steps, and are read and written between runs through `Executable.pointer(to:)`.
public struct BufferDeclaration: Sendable {
    /// For profiles and errors: the blob name, `conv1/weights`, `conv1/im2col`.
    public var name: String
    public var count: Int
    /// The values of a constant buffer (or the initial values of a persistent one); nil for activations.
    public var constant: [Float]?
    /// True for a writable buffer kept outside the arena (see above).
    public var isPersistent = false
    /// A constant computed at compile time straight into aligned memory (transformed weights),
    /// which the executable adopts instead of copying; nil for the others.
    public var prepared: AlignedBuffer?

    public init(name: String, count: Int, constant: [Float]? = nil) {
        self.name = name
        self.count = count
        self.constant = constant
    }

    /// True when the buffer lives in the arena (neither constant nor persistent).
    public var isActivation: Bool { constant == nil && prepared == nil && !isPersistent }

    /// True for a read-only buffer: a constant or a prepared constant.
    public var isConstant: Bool { (constant != nil || prepared != nil) && !isPersistent }
}

/// One JIT'd kernel call: run `kernel` over tasks `0..<taskCount`, split across the pool when `parallel`.
public struct KernelStep: Sendable {
    public var kernel: Kernel
    public var operands: [Operand]
    public var taskCount: Int
    public var parallel: Bool
    /// True for an epilogue whose task `t` reads and writes only row `t` of the C of the GEMM step
    /// right before it (a bias and activation per output channel): the executable may run it on
    /// each thread's block of rows as soon as that block's product is done, while it is in cache.
    public var rowsOfGemm = false

    public init(kernel: Kernel, operands: [Operand], taskCount: Int, parallel: Bool) {
        self.kernel = kernel
        self.operands = operands
        self.taskCount = taskCount
        self.parallel = parallel
    }
}

/// One or more row-major SGEMMs through the `BLAS` bridge: for `r` in `0..<repeats`,
/// `C + r·strideC = alpha · op(A + r·strideA) · op(B + r·strideB) + beta · (C + r·strideC)`.
/// Repeats express a grouped convolution's per-group products in one step.
public struct GemmStep: Sendable {
    public var transA = false, transB = false
    public var m: Int, n: Int, k: Int
    public var alpha: Float = 1, beta: Float = 0
    public var a: Operand, b: Operand, c: Operand
    public var lda: Int, ldb: Int, ldc: Int
    public var repeats = 1
    public var strideA = 0, strideB = 0, strideC = 0

    public init(m: Int, n: Int, k: Int, a: Operand, lda: Int, b: Operand, ldb: Int, c: Operand, ldc: Int) {
        self.m = m; self.n = n; self.k = k
        self.a = a; self.b = b; self.c = c
        self.lda = lda; self.ldb = ldb; self.ldc = ldc
    }

    /// Every operand with the elements it touches (for lifetimes and bounds checks).
    var extents: [(Operand, Int, isWrite: Bool)] {
        let rowsA = transA ? k : m, rowsB = transB ? n : k
        let last = repeats - 1
        return [(a, last * strideA + max(0, rowsA - 1) * lda + (transA ? m : k), false),
                (b, last * strideB + max(0, rowsB - 1) * ldb + (transB ? k : n), false),
                (c, last * strideC + max(0, m - 1) * ldc + n, true)]
    }
}

/// The same short sequence of kernels and GEMMs once per item of a batch, items shared among the
/// pool's threads: each thread runs whole items one after another, kernels over all their tasks
/// and GEMMs on one core, so a batched convolution (im2col, GEMM, epilogue per image) needs no
/// synchronisation between its steps and keeps each image's columns in the thread's cache.
///
/// `body` is written for item 0; for item `i` every operand on buffer `b` is moved
/// `i · strides[b]` elements on (buffers without a stride, such as weights, stay put). Buffers in
/// `privateSlices` are scratch: declared `threads × slice` long, each thread uses its own slice.
///
///     ItemLoop(items: 16, body: [.kernel(im2col), .gemm(product), .kernel(epilogue)],
///              strides: [input: 3 * 224 * 224, output: 64 * 112 * 112], privateSlices: [columns: 147 * 12544])
public struct ItemLoop: Sendable {
    public var items: Int
    public var body: [Step.Action]
    public var strides: [BufferID: Int]
    public var privateSlices: [BufferID: Int]
    /// When set, a kernel in the body runs only item `i`'s share of its tasks
    /// (`i·t..<(i+1)·t` with `t = taskCount / items`) instead of all of them: its tasks are the items.
    public var taskSlices: Bool

    public init(items: Int, body: [Step.Action], strides: [BufferID: Int], privateSlices: [BufferID: Int] = [:], taskSlices: Bool = false) {
        self.items = items
        self.body = body
        self.strides = strides
        self.privateSlices = privateSlices
        self.taskSlices = taskSlices
    }
}

/// A call into the host program between kernels (a layer the caller implements, such as Caffe's
/// "Python" layers): `function` receives the addresses of `operands`, in order, and returns false
/// to stop the pass (the caller's owner records why). Runs on the executing thread, never split.
public struct HostStep: Sendable {
    public var operands: [Operand]
    public var function: @Sendable (UnsafePointer<UnsafeMutablePointer<Float>>) -> Bool

    public init(operands: [Operand], function: @escaping @Sendable (UnsafePointer<UnsafeMutablePointer<Float>>) -> Bool) {
        self.operands = operands
        self.function = function
    }
}

/// One entry of an `Executable`'s schedule, labelled with the layer it implements (for `time`).
public struct Step: Sendable {
    /// What the step does.
    public enum Action: Sendable {
        case kernel(KernelStep)
        case gemm(GemmStep)
        /// A per-item loop of kernel and GEMM actions (not nested).
        case items(ItemLoop)
        /// A call into the host (not allowed inside an item loop).
        case host(HostStep)

        /// Every operand the action names (for an item loop: those of item 0).
        public var operands: [Operand] {
            switch self {
            case .kernel(let k): return k.operands
            case .gemm(let g): return [g.a, g.b, g.c]
            case .items(let loop): return loop.body.flatMap(\.operands)
            case .host(let h): return h.operands
            }
        }

        /// The action with every operand on buffer `from` moved into buffer `to`, `offset` floats
        /// in (a buffer relocated into a slice of a larger one after its steps were emitted).
        /// Item loops are left alone: their strides and private slices are per buffer.
        public func relocating(_ from: BufferID, into to: BufferID, offset: Int) -> Action {
            if case .items = self { return self }
            return mappingOperands { $0.buffer == from ? Operand(to, offset: offset + $0.offset) : $0 }
        }

        /// The kernel or GEMM action with every operand passed through `map` (an item loop's body
        /// too, but not its per-buffer strides and slices).
        private func mappingOperands(_ map: (Operand) -> Operand) -> Action {
            switch self {
            case .kernel(var k):
                k.operands = k.operands.map(map)
                return .kernel(k)
            case .gemm(var g):
                (g.a, g.b, g.c) = (map(g.a), map(g.b), map(g.c))
                return .gemm(g)
            case .items(var loop):
                loop.body = loop.body.map { $0.mappingOperands(map) }
                return .items(loop)
            case .host(var h):
                h.operands = h.operands.map(map)
                return .host(h)
            }
        }

        /// The action with every buffer id passed through `map` (offsets kept), for lowerings that
        /// rebind buffers after emitting steps.
        public func mappingBuffers(_ map: (BufferID) -> BufferID) -> Action {
            let moved = mappingOperands { Operand(map($0.buffer), offset: $0.offset) }
            guard case .items(var loop) = moved else { return moved }
            loop.strides = Dictionary(loop.strides.map { (map($0.key), $0.value) }, uniquingKeysWith: { first, _ in first })
            loop.privateSlices = Dictionary(loop.privateSlices.map { (map($0.key), $0.value) }, uniquingKeysWith: { first, _ in first })
            return .items(loop)
        }
    }

    public var label: String
    public var action: Action

    public init(label: String, _ action: Action) {
        self.label = label
        self.action = action
    }

    var operands: [Operand] { action.operands }
}

/// A named, shaped view of a buffer that the caller feeds (`inputs`) or reads back (`outputs`).
public struct BlobBinding: Sendable {
    public var name: String
    public var shape: [Int]
    public var buffer: BufferID

    public init(name: String, shape: [Int], buffer: BufferID) {
        self.name = name
        self.shape = shape
        self.buffer = buffer
    }
}

/// A place between two steps where a driver may stop the schedule, read what the steps so far
/// computed (a Filter's selected row count), and go on — in the same executable, or in another one
/// compiled from the same prefix after copying the `live` buffers over (`Executable.pointer(to:)`).
///
/// The memory plan keeps every `live` buffer's contents intact across the checkpoint whatever the
/// steps after it touch, so what the prefix computed is still there to copy, in every executable
/// built with the same checkpoint, even one whose later steps no longer read a buffer.
public struct Checkpoint: Sendable {
    /// Steps `0..<step` run before the checkpoint.
    public var step: Int
    /// Activation buffers whose contents the steps after the checkpoint need.
    public var live: [BufferID]

    public init(step: Int, live: [BufferID]) {
        self.step = step
        self.live = live
    }
}

/// Everything an `Executable` needs, before memory is planned: buffers, a flat schedule of steps in
/// execution order, and the blobs callers feed and read.
///
/// Invariants (checked by `Executable.init`): every operand names a declared buffer; inputs and
/// outputs name activation buffers large enough for their shapes. Steps that write a buffer in place
/// simply name it as both source and destination; blobs that are views of one another (Reshape,
/// Split) share a `BufferID`.
public struct Program: Sendable {
    public var buffers: [BufferDeclaration] = []
    public var steps: [Step] = []
    public var inputs: [BlobBinding] = []
    public var outputs: [BlobBinding] = []
    /// Where a driver may stop and continue the schedule (see `Checkpoint`); usually none.
    public var checkpoints: [Checkpoint] = []

    public init() {}

    /// Declares an activation buffer of `count` floats.
    public mutating func addBuffer(_ name: String, count: Int) -> BufferID {
        buffers.append(BufferDeclaration(name: name, count: count))
        return buffers.count - 1
    }

    /// Declares a constant buffer holding `values`.
    public mutating func addConstant(_ name: String, values: [Float]) -> BufferID {
        buffers.append(BufferDeclaration(name: name, count: values.count, constant: values))
        return buffers.count - 1
    }

    /// Declares a constant whose values are already in `prepared` (adopted, not copied).
    public mutating func addConstant(_ name: String, prepared: AlignedBuffer) -> BufferID {
        var declaration = BufferDeclaration(name: name, count: prepared.count)
        declaration.prepared = prepared
        buffers.append(declaration)
        return buffers.count - 1
    }

    /// Declares a persistent, writable buffer of `count` floats outside the arena, starting with
    /// `values` (zeros when nil).
    public mutating func addPersistent(_ name: String, count: Int, values: [Float]? = nil) -> BufferID {
        var declaration = BufferDeclaration(name: name, count: count, constant: values)
        declaration.isPersistent = true
        buffers.append(declaration)
        return buffers.count - 1
    }
}
