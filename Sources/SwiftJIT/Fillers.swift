import Foundation

/// Caffe's weight fillers (`constant`, `uniform`, `gaussian` with `sparse`, `positive_unitball`,
/// `xavier`, `msra`, `bilinear`), seeded and deterministic.
///
/// Caffe draws from boost's mt19937, which nobody can reproduce outside Caffe, so values differ from
/// Caffe's for the same seed; the distributions are the same. Each parameter blob gets its own stream
/// derived from (seed, layer name, blob index), so adding a layer never changes another's values.
public struct Filler: Sendable {
    public var parameter: Caffe_FillerParameter

    public init(_ parameter: Caffe_FillerParameter) {
        self.parameter = parameter
    }

    /// `constant` with `value`.
    public static func constant(_ value: Float) -> Filler {
        var p = Caffe_FillerParameter()
        p.type = "constant"
        p.value = value
        return Filler(p)
    }

    public static let supportedTypes = ["constant", "uniform", "gaussian", "positive_unitball", "xavier", "msra", "bilinear"]

    /// Values for a blob of `shape`, drawn from `generator`.
    public func fill(shape: [Int], generator: inout SeededGenerator) throws -> [Float] {
        let count = shape.reduce(1, *)
        let p = parameter
        switch p.type {
        case "constant":
            return [Float](repeating: p.value, count: count)
        case "uniform":
            return (0..<count).map { _ in generator.uniform(p.min, p.max) }
        case "gaussian":
            var values = (0..<count).map { _ in generator.gaussian(mean: p.mean, std: p.std) }
            if p.sparse >= 0, let outputs = shape.first, outputs > 0 {
                let keep = Float(p.sparse) / Float(outputs)
                for i in values.indices where generator.uniform(0, 1) >= keep { values[i] = 0 }
            }
            return values
        case "positive_unitball":
            var values = (0..<count).map { _ in generator.uniform(0, 1) }
            let rows = max(shape.first ?? 1, 1), width = count / rows
            for r in 0..<rows where width > 0 {
                let sum = values[(r * width)..<((r + 1) * width)].reduce(0, +)
                for i in (r * width)..<((r + 1) * width) { values[i] /= sum }
            }
            return values
        case "xavier", "msra":
            let fanIn = shape.count > 0 ? count / max(shape[0], 1) : count
            let fanOut = shape.count > 1 ? count / max(shape[1], 1) : count
            let n: Float
            switch p.varianceNorm {
            case .fanOut: n = Float(fanOut)
            case .average: n = Float(fanIn + fanOut) / 2
            default: n = Float(fanIn)
            }
            if p.type == "xavier" {
                let scale = (3 / n).squareRoot()
                return (0..<count).map { _ in generator.uniform(-scale, scale) }
            }
            let std = (2 / n).squareRoot()
            return (0..<count).map { _ in generator.gaussian(mean: 0, std: std) }
        case "bilinear":
            guard shape.count == 4, shape[2] == shape[3] else {
                throw Diagnostic("the bilinear filler needs a 4-D blob with a square kernel, got \(shape.map(String.init).joined(separator: "×"))")
            }
            let width = shape[3], height = shape[2]
            let f = Float((Double(width) / 2).rounded(.up))
            let c = (2 * f - 1 - Float(Int(f) % 2)) / (2 * f)
            return (0..<count).map { i in
                let x = Float(i % width), y = Float((i / width) % height)
                return (1 - abs(x / f - c)) * (1 - abs(y / f - c))
            }
        default:
            throw Diagnostic("unknown filler type '\(p.type)'" + Diagnostic.didYouMean(p.type, among: Self.supportedTypes),
                             hint: "one of: " + Self.supportedTypes.joined(separator: ", "))
        }
    }
}

/// A small, fast, seedable generator (xoshiro256**), with the uniform and Gaussian draws fillers use.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var x = seed
        func splitmix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (splitmix(), splitmix(), splitmix(), splitmix())
    }

    /// A stream for one named thing (a layer's blob), independent of every other name's.
    public init(seed: UInt64, stream name: String) {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        self.init(seed: seed ^ hash)
    }

    public mutating func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = s.3 << 45 | s.3 >> 19
        return result
    }

    /// Uniform in [low, high).
    public mutating func uniform(_ low: Float, _ high: Float) -> Float {
        let unit = Float(next() >> 40) / Float(1 << 24)
        return low + (high - low) * unit
    }

    /// Normal with the given mean and standard deviation (Box–Muller).
    public mutating func gaussian(mean: Float, std: Float) -> Float {
        let u1 = max(Double(next() >> 11) / Double(1 << 53), .leastNonzeroMagnitude)
        let u2 = Double(next() >> 11) / Double(1 << 53)
        return mean + std * Float((-2 * log(u1)).squareRoot() * cos(2 * .pi * u2))
    }
}

/// Fills every parameter of a graph as Caffe's layers do at setup: each layer type's fillers and
/// defaults (Scale 1, PReLU 0.25), from one seed.
public enum ParameterInitializer {
    /// What an untrained BatchNorm layer holds.
    public enum BatchNormStatistics: String, Sendable, CaseIterable {
        /// Caffe's setup values: mean, variance and scale factor all 0 — so the layer divides by
        /// sqrt(eps), and a deep net of them overflows. Right for training from scratch.
        case caffe
        /// Mean 0, variance 1, factor 1: the identity up to eps, so random-weight nets stay finite
        /// (what benchmarks and runtime-vs-runtime comparisons want).
        case unit
    }

    /// Parameter values by layer name, in each layer's blob order. Layers sharing a parameter by
    /// name get the owner's values. `unfilledWeights`, when given, replaces Caffe's default filler
    /// (constant 0) for the weights of convolution, deconvolution and InnerProduct layers whose
    /// prototxt names no `weight_filler` — deploy nets usually name none, and all-zero weights make
    /// every activation 0, which is no test of a runtime.
    ///
    /// `memory` says what the caller will allocate beside these parameters; a net that cannot fit
    /// in the memory available fails (`MemoryBudget.check`) before anything is filled.
    public static func initialize(_ graph: Graph, seed: UInt64, batchNorm: BatchNormStatistics = .caffe,
                                  unfilledWeights: Filler? = nil, memory: MemoryBudget.Use = .inference) throws -> [String: [NDArray]] {
        try MemoryBudget(graph, use: memory).check()
        var result: [String: [NDArray]] = [:]
        var shared: [String: NDArray] = [:]
        for node in graph.nodes where !node.parameters.isEmpty {
            var blobs: [NDArray] = []
            for (index, parameter) in node.parameters.enumerated() {
                guard let count = parameter.shape.count else {
                    throw Diagnostic("cannot fill parameter \(index) (\(parameter.role)): its shape \(parameter.shape) is not fully known",
                                     layer: node.name, hint: "give the input shapes with --input NAME=d0,d1,...")
                }
                if let name = parameter.shareName, let owner = shared[name] {
                    blobs.append(owner)
                    continue
                }
                var generator = SeededGenerator(seed: seed, stream: "\(node.name)/\(index)")
                let values: [Float]
                do {
                    let chosen = index == 0 && !namesWeightFiller(node) ? unfilledWeights ?? filler(for: node, index: index)
                        : filler(for: node, index: index)
                    values = try chosen.fill(shape: parameter.shape.dims, generator: &generator)
                } catch let diagnostic as Diagnostic {
                    throw diagnostic.inLayer(node.name)
                }
                precondition(values.count == count)
                var array = NDArray(shape: parameter.shape.dims, data: values)
                if node.kind == .batchNorm, batchNorm == .unit, index > 0 {
                    array = NDArray(shape: parameter.shape.dims, repeating: 1)  // variance 1, scale factor 1
                }
                if let name = parameter.shareName { shared[name] = array }
                blobs.append(array)
            }
            result[node.name] = blobs
        }
        return result
    }

    /// Whether a layer with weights names their filler; true for layers whose weights never default to 0.
    static func namesWeightFiller(_ node: Node) -> Bool {
        switch node.kind {
        case .convolution, .deconvolution: return node.layer.convolutionParam.hasWeightFiller
        case .innerProduct: return node.layer.innerProductParam.hasWeightFiller
        default: return true
        }
    }

    /// The filler Caffe's layer uses for its blob `index`.
    static func filler(for node: Node, index: Int) -> Filler {
        let layer = node.layer
        switch node.kind {
        case .convolution, .deconvolution:
            return Filler(index == 0 ? layer.convolutionParam.weightFiller : layer.convolutionParam.biasFiller)
        case .innerProduct:
            return Filler(index == 0 ? layer.innerProductParam.weightFiller : layer.innerProductParam.biasFiller)
        case .embed:
            return Filler(index == 0 ? layer.embedParam.weightFiller : layer.embedParam.biasFiller)
        case .lstm, .rnn:
            return Filler(node.parameters[index].role.hasPrefix("b_") ? layer.recurrentParam.biasFiller : layer.recurrentParam.weightFiller)
        case .scale:
            let p = layer.scaleParam
            let takesScale = node.inputs.count == 1
            if index == 0, takesScale { return p.hasFiller ? Filler(p.filler) : .constant(1) }
            return Filler(p.biasFiller)
        case .bias:
            return Filler(layer.biasParam.filler)
        case .prelu:
            return layer.preluParam.hasFiller ? Filler(layer.preluParam.filler) : .constant(0.25)
        case .normalize:
            return layer.normParam.hasScaleFiller ? Filler(layer.normParam.scaleFiller) : .constant(1)
        case .bn:
            return Filler(index == 0 ? layer.bnParam.scaleFiller : layer.bnParam.shiftFiller)
        case .ctpnLSTM:
            return Filler(index < 2 ? layer.lstmParam.weightFiller : layer.lstmParam.biasFiller)
        default:
            return .constant(0)
        }
    }
}
