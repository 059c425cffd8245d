import Foundation

/// The six update rules of Caffe's solvers.
public enum SolverKind: String, Sendable, CaseIterable {
    case sgd = "SGD", nesterov = "Nesterov", adaGrad = "AdaGrad", rmsProp = "RMSProp", adaDelta = "AdaDelta", adam = "Adam"

    /// How many history blobs per parameter the solver keeps (and its solverstate stores).
    public var historyPerParameter: Int { self == .adaDelta || self == .adam ? 2 : 1 }
}

/// Everything a solver needs besides the parameters: Caffe's `SolverParameter` fields that shape
/// the update, free of protobuf (the SwiftJIT layer maps `Caffe_SolverParameter` onto this).
public struct SolverHyperparameters: Sendable, Equatable {
    public var kind: SolverKind = .sgd
    public var schedule: LearningRateSchedule
    public var momentum: Float = 0
    /// Adam's β₂.
    public var momentum2: Float = 0.999
    /// AdaGrad/RMSProp/AdaDelta/Adam's ε.
    public var delta: Float = 1e-8
    /// RMSProp's decay.
    public var rmsDecay: Float = 0.99
    public var weightDecay: Float = 0
    public enum Regularization: String, Sendable { case l2 = "L2", l1 = "L1" }
    public var regularization: Regularization = .l2
    /// Gradients are scaled down to this global L2 norm when larger; negative disables.
    public var clipGradients: Float = -1
    /// Gradients accumulated over `iterSize` forward/backward passes are divided by it.
    public var iterSize: Int = 1

    public init(schedule: LearningRateSchedule) {
        self.schedule = schedule
    }
}

/// One learnable parameter blob as the solver sees it: its values, its accumulated gradient, and
/// its `lr_mult`/`decay_mult`. The buffers belong to the caller (the runtime's arena).
public struct LearnableParameter {
    public var data: UnsafeMutableBufferPointer<Float>
    public var diff: UnsafeMutableBufferPointer<Float>
    public var lrMult: Float
    public var decayMult: Float

    public init(data: UnsafeMutableBufferPointer<Float>, diff: UnsafeMutableBufferPointer<Float>, lrMult: Float = 1, decayMult: Float = 1) {
        self.data = data
        self.diff = diff
        self.lrMult = lrMult
        self.decayMult = decayMult
    }
}

/// Caffe's solver update, `SGDSolver::ApplyUpdate` and its five siblings: clip gradients, then per
/// parameter normalize by `iter_size`, add weight decay, turn the gradient into an update with the
/// solver's rule and history, and subtract it from the data.
///
/// The arithmetic follows Caffe's order of float operations (axpby as scale-then-axpy, powx, div),
/// so runs agree with Caffe to rounding. History is owned here and is what a `.solverstate` stores:
/// `history[i]` for parameter i, and for AdaDelta/Adam `history[n + i]` for the second moment.
public final class Solver {
    public private(set) var hyper: SolverHyperparameters
    /// Caffe's `iter_`: the number of updates applied.
    public private(set) var iteration: Int
    public private(set) var history: [[Float]]

    /// A solver for parameters with these element counts, starting at `iteration` (0, or a snapshot's).
    public init(hyperparameters: SolverHyperparameters, parameterCounts: [Int], iteration: Int = 0) {
        self.hyper = hyperparameters
        self.iteration = iteration
        let perParameter = hyperparameters.kind.historyPerParameter
        history = (0..<perParameter).flatMap { _ in parameterCounts.map { [Float](repeating: 0, count: $0) } }
    }

    /// Restores history and schedule state from a snapshot. Throws when the shapes disagree.
    public func restore(iteration: Int, currentStep: Int, history: [[Float]]) throws {
        guard history.count == self.history.count, zip(history, self.history).allSatisfy({ $0.count == $1.count }) else {
            throw SolverError("the snapshot holds \(history.count) history blobs of sizes \(history.map(\.count)); this net and solver need \(self.history.count) of sizes \(self.history.map(\.count))")
        }
        self.iteration = iteration
        self.history = history
        hyper.schedule.currentStep = currentStep
    }

    /// The rate the next update will use (advancing `multistep` state as Caffe does).
    public func learningRate() -> Float {
        hyper.schedule.rate(at: iteration)
    }

    /// Applies one update to every parameter and advances the iteration. Returns the rate used.
    ///
    /// Gradient clipping needs the global norm first (one pass over every diff); the rest is one
    /// fused pass per parameter blob: each element is normalized by `iter_size`, regularized,
    /// turned into an update by the solver's rule and subtracted from the data, with Caffe's float
    /// operations in Caffe's order (its separate passes compute exactly this per element). Large
    /// blobs are split among the cores; elements are independent, so the result does not depend on
    /// the split. The diff holds the update afterwards, as in Caffe.
    @discardableResult
    public func applyUpdate(_ parameters: [LearnableParameter]) -> Float {
        let rate = learningRate()
        clipGradients(parameters)
        for (index, parameter) in parameters.enumerated() {
            update(parameter, index: index, count: parameters.count, rate: rate)
        }
        iteration += 1
        return rate
    }

    private func clipGradients(_ parameters: [LearnableParameter]) {
        let clip = hyper.clipGradients
        guard clip >= 0 else { return }
        var sumsq: Float = 0
        for parameter in parameters {
            var partial: Float = 0
            for value in parameter.diff { partial += value * value }
            sumsq += partial
        }
        let norm = sumsq.squareRoot()
        guard norm > clip else { return }
        let scale = clip / norm
        for parameter in parameters {
            for j in 0..<parameter.diff.count { parameter.diff[j] *= scale }
        }
    }

    /// `y = alpha·x + beta·y`, as Caffe's `caffe_cpu_axpby` (scale, then axpy).
    @inline(__always)
    private static func axpby(_ alpha: Float, _ x: Float, _ beta: Float, _ y: Float) -> Float {
        (beta * y) + alpha * x
    }

    /// Elements below which a blob is updated on one thread (splitting costs more than it saves).
    static let parallelElements = 1 << 16

    /// The fused update of one parameter blob (see `applyUpdate`).
    private func update(_ parameter: LearnableParameter, index: Int, count: Int, rate: Float) {
        let localRate = rate * parameter.lrMult
        let n = parameter.diff.count
        let second = hyper.kind.historyPerParameter == 2 ? count + index : nil
        // Take the history buffers out of the array while updating them (unique, so no copy):
        // two simultaneous mutable accesses to `history` would break exclusivity.
        var first = history[index]
        history[index] = []
        var moments: [Float] = []
        if let second { swap(&moments, &history[second]) }
        defer {
            history[index] = first
            if let second { swap(&moments, &history[second]) }
        }
        let rule = UpdateRule(kind: hyper.kind, rate: localRate, momentum: hyper.momentum, momentum2: hyper.momentum2, delta: hyper.delta,
                              rmsDecay: hyper.rmsDecay, iteration: iteration,
                              normalization: hyper.iterSize > 1 ? 1 / Float(hyper.iterSize) : nil,
                              decay: hyper.weightDecay * parameter.decayMult, regularization: hyper.regularization)
        first.withUnsafeMutableBufferPointer { h in
            moments.withUnsafeMutableBufferPointer { u in
                let buffers = UpdateBuffers(data: parameter.data.baseAddress!, diff: parameter.diff.baseAddress!,
                                            history: h.baseAddress!, moments: u.baseAddress)
                let chunks = n >= Self.parallelElements ? min(ProcessInfo.processInfo.activeProcessorCount, n / (Self.parallelElements / 2)) : 1
                if chunks <= 1 {
                    rule.apply(buffers, 0..<n)
                } else {
                    DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
                        rule.apply(buffers, (chunk * n / chunks)..<((chunk + 1) * n / chunks))
                    }
                }
            }
        }
    }

    /// The memory one blob's update touches (valid for the duration of the update).
    private struct UpdateBuffers: @unchecked Sendable {
        var data: UnsafeMutablePointer<Float>
        var diff: UnsafeMutablePointer<Float>
        var history: UnsafeMutablePointer<Float>
        /// AdaDelta's and Adam's second history; nil for the others.
        var moments: UnsafeMutablePointer<Float>?
    }

    /// One blob's update, element by element, as Caffe's `Normalize`, `Regularize`,
    /// `ComputeUpdateValue` and `Net::Update` compute it.
    private struct UpdateRule: Sendable {
        var kind: SolverKind
        var rate: Float, momentum: Float, momentum2: Float, delta: Float, rmsDecay: Float
        var iteration: Int
        var normalization: Float?
        var decay: Float
        var regularization: SolverHyperparameters.Regularization

        func apply(_ m: UpdateBuffers, _ range: Range<Int>) {
            let (data, diff, h) = (m.data, m.diff, m.history)
            let adamScale: Float
            if kind == .adam {
                let t = Double(iteration + 1)
                adamScale = rate * Float((1 - pow(Double(momentum2), t)).squareRoot() / (1 - pow(Double(momentum), t)))
            } else {
                adamScale = 0
            }
            for j in range {
                var g = diff[j]
                if let normalization { g *= normalization }
                if decay != 0 {
                    switch regularization {
                    case .l2: g += decay * data[j]
                    case .l1: g += decay * (data[j] > 0 ? 1 : (data[j] < 0 ? -1 : 0))
                    }
                }
                let update: Float
                switch kind {
                case .sgd:
                    h[j] = Solver.axpby(rate, g, momentum, h[j])
                    update = h[j]
                case .nesterov:
                    let previous = h[j]
                    h[j] = Solver.axpby(rate, g, momentum, h[j])
                    update = Solver.axpby(1 + momentum, h[j], -momentum, previous)
                case .adaGrad:
                    h[j] += g * g
                    update = rate * (g / (h[j].squareRoot() + delta))
                case .rmsProp:
                    h[j] = Solver.axpby(1 - rmsDecay, g * g, rmsDecay, h[j])
                    update = rate * (g / (h[j].squareRoot() + delta))
                case .adaDelta:
                    let u = m.moments!
                    h[j] = Solver.axpby(1 - momentum, g * g, momentum, h[j])
                    let step = ((delta + u[j]) / (delta + h[j])).squareRoot()
                    let scaled = g * step
                    u[j] = Solver.axpby(1 - momentum, scaled * scaled, momentum, u[j])
                    update = rate * scaled
                case .adam:
                    let u = m.moments!
                    h[j] = Solver.axpby(1 - momentum, g, momentum, h[j])
                    u[j] = Solver.axpby(1 - momentum2, g * g, momentum2, u[j])
                    update = adamScale * (h[j] / (u[j].squareRoot() + delta))
                }
                diff[j] = update
                data[j] -= update
            }
        }
    }
}

/// A solver configuration or state problem, said in one sentence.
public struct SolverError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
