import Foundation

/// What a caller-implemented layer is asked to do (the C API's `sj_layer_stage`).
public enum HostLayerStage: Int32, Sendable {
    case setup = 0, reshape = 1, forward = 2, backward = 3
}

/// A blob as a caller-implemented layer sees it: in `setup` and `reshape` only shapes (the layer
/// writes its tops' shapes); in `forward` and `backward` the blob's memory as well.
public struct HostLayerBlob {
    public var name: String
    public var shape: [Int]
    public var data: UnsafeMutablePointer<Float>?
    public var diff: UnsafeMutablePointer<Float>?

    public init(name: String, shape: [Int], data: UnsafeMutablePointer<Float>? = nil, diff: UnsafeMutablePointer<Float>? = nil) {
        self.name = name
        self.shape = shape
        self.data = data
        self.diff = diff
    }
}

/// A caller's layer failed: it returned `code` at `stage`. (The caller keeps its own details.)
public struct HostLayerError: Error, CustomStringConvertible {
    public var layer: String
    public var stage: HostLayerStage
    public var code: Int32

    public var description: String {
        "layer '\(layer)': the caller's Python layer implementation returned \(code) in \(stage)" +
            "; hint: the error it raised is kept by the caller (see its traceback)"
    }
}

/// Runs a net's "Python" layers through one caller-supplied function, as pycaffe's `PythonLayer`
/// runs Python code: `setup` once per layer when the net is first built, `reshape` whenever the
/// graph is (re)built or a forward may change shapes, and `forward`/`backward` as host steps in
/// the compiled schedule. The function returns 0 on success; anything else stops the pass.
///
///     let layers = HostLayers { index, name, stage, bottoms, tops, propagateDown in
///         if stage == .reshape { tops[0].shape = bottoms[0].shape }
///         return 0
///     }
public final class HostLayers: @unchecked Sendable {
    /// `(layer index, layer name, stage, bottoms, tops, propagate_down) -> status`.
    public typealias Function = (_ index: Int, _ name: String, _ stage: HostLayerStage, _ bottoms: [HostLayerBlob],
                                 _ tops: inout [HostLayerBlob], _ propagateDown: [Bool]) -> Int32

    private let function: Function
    private var setUp = Set<String>()
    /// Each Python layer's index among the net's layers, as its graph was built.
    private var indices: [String: Int] = [:]
    /// Added to every layer index the function sees: `net × 65536` for a solver's net `net`
    /// (0: the train net, i + 1: test net i), so one function can tell the nets apart.
    public let indexOffset: Int
    /// Why the last pass stopped, if a layer stopped it.
    private(set) var failure: HostLayerError?
    private let lock = NSLock()

    public init(indexOffset: Int = 0, _ function: @escaping Function) {
        self.indexOffset = indexOffset
        self.function = function
    }

    /// Installs these layers' shape hook in `builder`.
    public func install(in builder: inout GraphBuilder) {
        builder.hostLayerShapes = { [self] layer, index, bottoms in try topShapes(layer, index: index, bottoms: bottoms) }
    }

    /// The tops' shapes of `layer` for these bottom shapes: `setup` the first time, then `reshape`.
    func topShapes(_ layer: Caffe_LayerParameter, index layerIndex: Int, bottoms: [TensorShape]) throws -> [TensorShape] {
        lock.lock()
        defer { lock.unlock() }
        let bottomBlobs = zip(layer.bottom, bottoms).map { HostLayerBlob(name: $0, shape: $1.dims) }
        var tops = layer.top.map { HostLayerBlob(name: $0, shape: []) }
        indices[layer.name] = layerIndex + indexOffset
        let index = layerIndex + indexOffset
        if setUp.insert(layer.name).inserted {
            let code = function(index, layer.name, .setup, bottomBlobs, &tops, [])
            guard code == 0 else { throw HostLayerError(layer: layer.name, stage: .setup, code: code) }
        }
        let code = function(index, layer.name, .reshape, bottomBlobs, &tops, [])
        guard code == 0 else { throw HostLayerError(layer: layer.name, stage: .reshape, code: code) }
        return tops.map { TensorShape($0.shape) }
    }

    /// The compiler's view: one forward or backward of a layer inside a schedule.
    var hostFunction: HostLayerFunction {
        { [self] layer, backward, bottoms, tops, propagateDown in
            lock.lock()
            defer { lock.unlock() }
            let stage: HostLayerStage = backward ? .backward : .forward
            var topBlobs = tops.map { HostLayerBlob(name: $0.name, shape: $0.shape, data: $0.data, diff: $0.diff) }
            let code = function(indices[layer] ?? -1, layer, stage,
                                bottoms.map { HostLayerBlob(name: $0.name, shape: $0.shape, data: $0.data, diff: $0.diff) },
                                &topBlobs, propagateDown.isEmpty ? Array(repeating: false, count: bottoms.count) : propagateDown)
            if code != 0 { failure = HostLayerError(layer: layer, stage: stage, code: code) }
            return code == 0
        }
    }

    /// The failure that stopped the last pass (cleared), or a generic one.
    func takeFailure() -> Error {
        lock.lock()
        defer { lock.unlock() }
        defer { failure = nil }
        return failure ?? Diagnostic("a caller's layer stopped the pass")
    }
}
