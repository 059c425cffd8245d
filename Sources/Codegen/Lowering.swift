import CaffeFormat
import Graph
import NumPy
import Runtime

/// When a convolution's im2col column matrix is built and multiplied band by band of output rows
/// instead of whole: when the whole matrix is larger than `minimumBytes` (so it would not stay in
/// cache between im2col and GEMM), in bands at least `minimumColumns` wide (narrower GEMMs lose
/// more than the cache saves). The default suits VGG-size images on a machine with ~1 MB of L2 per
/// core; tests lower both limits to band every convolution.
public struct ConvolutionBanding: Sendable {
    public var minimumBytes: Int
    public var minimumColumns: Int

    public init(minimumBytes: Int = 8 << 20, minimumColumns: Int = 448) {
        self.minimumBytes = minimumBytes
        self.minimumColumns = minimumColumns
    }
}

/// The state of lowering one graph into a `Program`: which buffer holds each value, the constants
/// made from parameters, and the steps emitted so far. One `lower…` method per op family (in the
/// `Lower*.swift` files) turns a node into kernel and GEMM steps through `emitKernel`/`emitGemm`.
///
/// Buffer sharing is decided here, value by value: views (Reshape, Flatten, Split) share their
/// input's buffer, as Caffe's `ShareData` does; an element-wise op writes over its input when the
/// prototxt says so (`top == bottom`) or when nothing reads the input afterwards. The runtime's
/// `MemoryPlan` then packs the buffers into one arena by lifetime.
struct Lowering {
    let graph: Graph
    let parameters: [String: [NDArray]]
    let cache: KernelCache
    /// The kernels this lowering asks for, compiled together by `compileKernels` once every layer is lowered.
    let kernels: KernelBatch
    /// Elements below which a kernel runs on the calling thread (splitting costs a wake-up).
    let parallelThreshold: Int
    /// Threads of the pool the program will run on (sizes per-thread scratch of item loops).
    var threads = 1
    /// When a convolution builds its columns band by band.
    var banding = ConvolutionBanding()
    /// When a 3×3 convolution runs as Winograd F(2×2, 3×3); nil: never.
    var winograd: WinogradPolicy?
    /// Whether an InnerProduct over a few rows streams weight panels (`InnerProductPanels`).
    var innerProductPanels = false
    /// Whether convolutions multiply by `PanelGemm` (weights packed into panels) where it applies.
    var panelGemms = false
    /// In training: each node's parameter blobs as persistent buffers (by node id, then blob index),
    /// which lowerings read instead of constants so that the solver's updates reach the kernels;
    /// nil when compiling for inference. See `parameter` and `derivedConstant`.
    var parameterBuffers: [[BufferID]]?
    /// Whether a Concat over one outer index has its bottoms' producers write straight into its top
    /// (`relocateIntoConcat`). Off in training, whose backward reads the bottoms' own buffers.
    var concatInPlace = false
    var program = Program()
    /// Checks `CompiledNet.run` makes on input blobs before running (ROI batch indices).
    var inputChecks: [InputCheck] = []
    /// Persistent buffers a forward writes for the next forward to read (the final h and c of
    /// recurrent layers without `expose_hidden`), in program order.
    var recurrentStates: [BufferID] = []
    /// Where the schedule learns a Filter's selected row count (see `RowSpecializer`).
    var rowGuards: [RowGuard] = []
    /// Constants the net's definition decides (shapes, prototxt values: kernels' run-time extents,
    /// PriorBox's priors, class weights), never its parameters: the same in inference and training,
    /// so training takes them (`definitionConstant`).
    var definitionConstants: Set<BufferID> = []
    private(set) var bufferOf: [ValueID: BufferID] = [:]
    private var valuesOf: [BufferID: [ValueID]] = [:]
    /// The last node that reads each value (`Int.max` for values callers keep).
    let lastUse: [Int]

    init(graph: Graph, parameters: [String: [NDArray]], cache: KernelCache, kept: Set<ValueID>, parallelThreshold: Int) {
        self.graph = graph
        self.parameters = parameters
        self.cache = cache
        kernels = KernelBatch(cache: cache)
        self.parallelThreshold = parallelThreshold
        lastUse = graph.values.map { value in
            kept.contains(value.id) ? Int.max : (value.consumers.max() ?? value.producer ?? -1)
        }
    }

    // MARK: Buffers

    /// The buffer holding `value`, declaring a fresh one on first use.
    mutating func buffer(_ value: ValueID) -> BufferID {
        if let id = bufferOf[value] { return id }
        let v = graph.values[value]
        let id = program.addBuffer(v.name, count: max(1, v.shape.count ?? 1))
        bind(value, to: id)
        return id
    }

    /// Makes `value` live in `buffer` (a view or an in-place result).
    mutating func bind(_ value: ValueID, to buffer: BufferID) {
        bufferOf[value] = buffer
        valuesOf[buffer, default: []].append(value)
    }

    /// Every value bound to `buffer` so far.
    func valuesLiving(in buffer: BufferID) -> [ValueID] { valuesOf[buffer, default: []] }

    /// The buffer for `node`'s output `index` of an element-wise op, reusing input `input`'s buffer
    /// when the prototxt writes in place or when no one needs that buffer after this node.
    mutating func elementwiseOutput(_ node: Node, index: Int = 0, overwriting input: Int = 0) -> BufferID {
        let output = node.outputs[index], source = node.inputs[input]
        let sourceBuffer = buffer(source)
        let free = valuesOf[sourceBuffer, default: []].allSatisfy { lastUse[$0] <= node.id }
        if graph.values[output].isInPlace || free, program.buffers[sourceBuffer].count == (graph.values[output].shape.count ?? -1) {
            bind(output, to: sourceBuffer)
            return sourceBuffer
        }
        return buffer(output)
    }

    /// A scratch buffer used only by `node`'s steps (im2col columns).
    mutating func scratch(_ node: Node, _ what: String, count: Int) -> BufferID {
        program.addBuffer("\(node.name)/\(what)", count: count)
    }

    mutating func constant(_ node: Node, _ what: String, _ values: [Float]) -> BufferID {
        program.addConstant("\(node.name)/\(what)", values: values)
    }

    /// A constant that depends only on the net's definition, never on its parameters (see
    /// `definitionConstants`): training keeps it, where it refuses parameter-derived constants.
    mutating func definitionConstant(_ node: Node, _ what: String, _ values: [Float]) -> BufferID {
        let buffer = constant(node, what, values)
        definitionConstants.insert(buffer)
        return buffer
    }

    /// Parameter blob `k` of `node` (one of `blobs`, from `parameterBlobs`) as a buffer: a constant
    /// holding it when compiling for inference, the parameter's own persistent buffer in training.
    mutating func parameter(_ node: Node, _ k: Int, _ what: String, _ blobs: [[Float]]) -> BufferID {
        if let parameterBuffers { return parameterBuffers[node.id][k] }
        return constant(node, what, blobs[k])
    }

    /// `count` values computed by `derive` from parameter blob `k` of `node` (weights packed into
    /// panels, Winograd-transformed filters): one lowering for inference and training. Inference
    /// derives them once, now, into constant memory (`preparedConstant`). Training derives them
    /// from the parameter's persistent buffer at this point of every forward pass (a host step into
    /// an arena buffer), so they follow the solver's updates; backward reads the parameter itself.
    mutating func derivedConstant(_ node: Node, _ what: String, count: Int, from k: Int, _ blobs: [[Float]],
                                  _ derive: @escaping @Sendable (UnsafeBufferPointer<Float>, UnsafeMutablePointer<Float>) -> Void) throws -> BufferID {
        guard let parameterBuffers else {
            return try preparedConstant(node, what, count: count) { target in blobs[k].withUnsafeBufferPointer { derive($0, target) } }
        }
        let target = program.addBuffer("\(node.name)/\(what)", count: count)
        let sourceCount = blobs[k].count
        program.steps.append(Step(label: node.name, .host(HostStep(operands: [Operand(parameterBuffers[node.id][k]), Operand(target)]) { pointers in
            derive(UnsafeBufferPointer(start: pointers[0], count: sourceCount), pointers[1])
            return true
        })))
        return target
    }

    /// A constant of `count` values computed by `fill` straight into the aligned memory the
    /// executable will use (transformed weights: no second copy of hundreds of MB while compiling).
    /// `fill` must write every element: the memory is not zeroed first, so it is touched once.
    mutating func preparedConstant(_ node: Node, _ what: String, count: Int, _ fill: (UnsafeMutablePointer<Float>) -> Void) throws -> BufferID {
        let storage = try AlignedBuffer(count: count, zeroed: false)
        fill(storage.pointer)
        return program.addConstant("\(node.name)/\(what)", prepared: storage)
    }

    func shape(_ value: ValueID) -> [Int] { graph.values[value].shape.dims }
    func count(_ value: ValueID) -> Int { graph.values[value].shape.count ?? 0 }

    // MARK: Steps

    /// Emits a call of the kernel `signature` (generated by `build` on a cache miss) over
    /// `tasks` tasks; `work` (elements touched) decides whether the step runs in parallel. A new
    /// kernel is only built as IR here; `compileKernels` compiles it with the net's others.
    mutating func emitKernel(_ node: Node, _ signature: String, operands: [Operand], tasks: Int, work: Int, rowsOfGemm: Bool = false,
                             _ build: (KernelBuilder) throws -> Void) throws {
        guard tasks > 0 else { return }
        let kernel = try kernels.kernel(signature, operands: operands.count, build)
        var step = KernelStep(kernel: kernel, operands: operands, taskCount: tasks, parallel: tasks > 1 && work >= parallelThreshold)
        step.rowsOfGemm = rowsOfGemm
        program.steps.append(Step(label: node.name, .kernel(step)))
    }

    /// Compiles the kernels the emitted steps call (see `KernelBatch.compile`) and puts their
    /// functions into the steps. Call once, after the last `emitKernel`, before building an `Executable`.
    mutating func compileKernels() throws -> KernelStatistics {
        let statistics = try kernels.compile()
        try kernels.resolve(&program)
        return statistics
    }

    /// Emits the steps `body` emits for item 0 of a batch as one item loop over `items` items
    /// (`ItemLoop`): operands on the buffers in `strides` move by that many elements per item,
    /// buffers in `privateSlices` give each thread its own slice. A single item emits the steps as
    /// they are, so each one can use every thread.
    /// With `taskSlices`, the items are the kernels' tasks (bands of an image): each item runs its
    /// share of every kernel's tasks (see `ItemLoop.taskSlices`).
    mutating func emitItemLoop(_ node: Node, items: Int, strides: [BufferID: Int], privateSlices: [BufferID: Int], taskSlices: Bool = false,
                               _ body: (inout Lowering) throws -> Void) throws {
        let first = program.steps.count
        try body(&self)
        guard items > 1, program.steps.count > first else { return }
        let actions = program.steps[first...].map(\.action)
        program.steps.removeSubrange(first...)
        program.steps.append(Step(label: node.name, .items(ItemLoop(items: items, body: actions, strides: strides, privateSlices: privateSlices,
                                                                    taskSlices: taskSlices))))
    }

    mutating func emitGemm(_ node: Node, _ gemm: GemmStep) {
        guard gemm.m > 0, gemm.n > 0 else { return }
        program.steps.append(Step(label: node.name, .gemm(gemm)))
    }

    // MARK: Parameters

    /// The layer's parameter blobs, checked against the shapes the graph expects (element counts
    /// must match; legacy 4-D caffemodel dims are accepted). Shared parameters (`param { name }`)
    /// may come from any layer that shares them.
    func parameterBlobs(_ node: Node) throws -> [[Float]] {
        let expected = node.parameters
        var blobs = parameters[node.name] ?? []
        if blobs.count < expected.count {
            for (index, info) in expected.enumerated() where index >= blobs.count {
                guard let share = info.shareName,
                      let owner = graph.nodes.first(where: { other in
                          other.parameters.indices.contains(index) && other.parameters[index].shareName == share
                              && (parameters[other.name]?.count ?? 0) > index
                      }) else { break }
                blobs.append(parameters[owner.name]![index])
            }
        }
        guard blobs.count >= expected.count else {
            let list = expected.map { "\($0.role) \($0.shape)" }.joined(separator: ", ")
            throw Diagnostic("needs \(expected.count) parameter blob\(expected.count == 1 ? "" : "s") (\(list)), but the weights give \(blobs.count)",
                             at: node.location, layer: node.name,
                             hint: "load a .caffemodel that has a layer named '\(node.name)'")
        }
        return try expected.enumerated().map { index, info in
            let blob = blobs[index]
            guard let want = info.shape.count, blob.count == want else {
                throw Diagnostic("parameter \(index) (\(info.role)) should be \(info.shape) = \(info.shape.count ?? 0) values, but the weights give \(blob.shape) = \(blob.count)",
                                 at: node.location, layer: node.name,
                                 hint: "the weights were trained for a different net or input size")
            }
            return blob.data
        }
    }

    func unsupported(_ node: Node, _ why: String, hint: String? = nil) -> Diagnostic {
        Diagnostic("\(node.kind.rawValue) cannot be compiled yet: \(why)", at: node.location, layer: node.name, hint: hint)
    }
}
