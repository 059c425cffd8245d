import CaffeFormat
import Foundation
import Graph
import Runtime

/// Layer-by-layer access to a `TrainingNet` compiled `keepingAllBlobs`, for drivers that run
/// parts of a pass and read or write blobs in between (pycaffe's `forward(start=, end=)`,
/// `backward(start=, end=)`, `net.blobs[name].data[...] = x`).
///
/// Every blob and diff of such a net has its own arena space for the whole schedule (no reuse),
/// so values written between partial passes stay put. Pointers are valid for the net's life.
/// Nets with Filter layers re-specialize per run and are not driven this way.
///
///     net.prepareForward()
///     try net.executeForward(nodes: 0...3)
///     try net.executeBackward(nodes: 0...3)
extension TrainingNet {
    /// A blob's value and diff memory in the current layout (nil where the net keeps none).
    public struct BlobMemory {
        public var shape: [Int]
        public var data: UnsafeMutablePointer<Float>?
        public var diff: UnsafeMutablePointer<Float>?
    }

    /// Where blob `name` lives: its latest version's value and Caffe's diff of it.
    public func blobMemory(_ name: String) -> BlobMemory? {
        lock.lock()
        defer { lock.unlock() }
        let value = layout.values[name], diff = layout.diffs[name]
        guard let shape = value?.shape ?? diff?.shape else { return nil }
        return BlobMemory(shape: shape, data: value.map { layout.executable.pointer(to: $0.buffer) },
                          diff: diff.map { layout.executable.pointer(to: $0.buffer) })
    }

    /// Parameter blob `index` of node `node`: its value and diff (shared blobs: the owner's).
    public func parameterMemory(node: Int, index: Int) -> BlobMemory? {
        lock.lock()
        defer { lock.unlock() }
        guard slotOf.indices.contains(node), slotOf[node].indices.contains(index) else { return nil }
        let slot = slots[slotOf[node][index]]
        return BlobMemory(shape: graph.nodes[node].parameters[index].shape.dims, data: layout.executable.pointer(to: slot.data),
                          diff: layout.executable.pointer(to: slot.diff))
    }

    /// The memory of layer `layer`'s parameter blob `index` when it has exactly `shape`, for
    /// another net to share (`Compiler.compileTraining(sharingParametersWith:)`).
    func parameterMemory(layer: String, index: Int, shape: [Int]) -> AlignedBuffer? {
        guard let node = graph.node(named: layer), node.parameters.indices.contains(index),
              node.parameters[index].shape.dims == shape else { return nil }
        return layout.executable.persistentBuffer(slots[slotOf[node.id][index]].data)
    }

    /// The data-source tops the caller fills (Input, DummyData, Data), and for constant DummyData
    /// fillers the values they start with.
    public var feedTops: [(name: String, shape: [Int], constantValues: [Float]?)] {
        lock.lock()
        defer { lock.unlock() }
        return layout.feeds.keys.sorted().map { name in
            let feed = layout.feeds[name]!
            return (name, feed.blob.shape, feed.defaultValues)
        }
    }

    /// Writes a fresh dropout key, as every forward pass of `run` does.
    public func prepareForward() {
        lock.lock()
        defer { lock.unlock() }
        runCount += 1
        writeRandomKey()
    }

    /// Sets the diffs of loss-weighted outputs to their loss weight (what Caffe's loss layers hold
    /// after a forward). Other outputs' diffs keep what the caller wrote.
    public func resetOutputDiffs() {
        lock.lock()
        defer { lock.unlock() }
        let weights = Dictionary(layout.losses.map { ($0.0.buffer, $0.1) }, uniquingKeysWith: { $1 })
        for (name, seed) in layout.seeds {
            guard let weight = layout.values[name].flatMap({ weights[$0.buffer] }) else { continue }
            layout.executable.pointer(to: seed.buffer).update(repeating: weight, count: seed.count)
        }
    }

    /// Runs the forward steps of nodes `nodes` (graph node ids, in order). False when a host
    /// step (a caller's layer) stopped the pass.
    @discardableResult
    public func executeForward(nodes: ClosedRange<Int>) throws -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard rows == nil else {
            throw Diagnostic("a net with Filter layers cannot run forward layer by layer", hint: "run it whole (TrainingNet.run)")
        }
        let steps = layout.nodeSteps
        guard nodes.lowerBound >= 0, nodes.upperBound < steps.count else { return true }
        return layout.executable.execute(steps: steps[nodes.lowerBound].lowerBound..<steps[nodes.upperBound].upperBound)
    }

    /// Runs the backward steps of nodes `nodes`, last node first. Throws when one of them must run
    /// backward but has none (Caffe aborts there). False when a host step stopped the pass.
    @discardableResult
    public func executeBackward(nodes: ClosedRange<Int>) throws -> Bool {
        lock.lock()
        defer { lock.unlock() }
        let names = Set(nodes.map { graph.nodes[$0].name })
        if let problem = layout.backwardProblems.first(where: { $0.layer.map(names.contains) ?? true }) { throw problem }
        seedInPlaceDiffs(below: nodes.upperBound)
        for node in nodes.reversed() where layout.backwardNodeSteps.indices.contains(node) {
            guard layout.executable.execute(steps: layout.backwardNodeSteps[node]) else { return false }
        }
        return true
    }

    /// Caffe's in-place layers share one diff per blob; here each version has its own. Callers
    /// write (and read) the blob's diff as the first version's buffer, so before a backward from
    /// node `last` down, the version the first layer to run reads gets those values.
    private func seedInPlaceDiffs(below last: Int) {
        var latest: [String: ValueID] = [:]
        for value in graph.values where value.producer.map({ $0 <= last }) ?? true && layout.valueDiffs[value.id] != nil {
            latest[value.name] = value.id
        }
        for (name, id) in latest {
            guard let exposed = layout.diffs[name], let target = layout.valueDiffs[id], target != exposed.buffer else { continue }
            layout.executable.pointer(to: target).update(from: layout.executable.pointer(to: exposed.buffer), count: exposed.count)
        }
    }
}
