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
    @discardableResult
    public func applyUpdate(_ parameters: [LearnableParameter]) -> Float {
        let rate = learningRate()
        clipGradients(parameters)
        for (index, parameter) in parameters.enumerated() {
            normalize(parameter)
            regularize(parameter)
            computeUpdateValue(parameter, index: index, count: parameters.count, rate: rate)
            // Net::Update: data -= diff
            let data = parameter.data, diff = parameter.diff
            for j in 0..<data.count { data[j] -= diff[j] }
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

    private func normalize(_ parameter: LearnableParameter) {
        guard hyper.iterSize > 1 else { return }
        let factor = 1 / Float(hyper.iterSize)
        for j in 0..<parameter.diff.count { parameter.diff[j] *= factor }
    }

    private func regularize(_ parameter: LearnableParameter) {
        let decay = hyper.weightDecay * parameter.decayMult
        guard decay != 0 else { return }
        let data = parameter.data, diff = parameter.diff
        switch hyper.regularization {
        case .l2:
            for j in 0..<diff.count { diff[j] += decay * data[j] }
        case .l1:
            for j in 0..<diff.count { diff[j] += decay * (data[j] > 0 ? 1 : (data[j] < 0 ? -1 : 0)) }
        }
    }

    /// `y = alpha·x + beta·y`, as Caffe's `caffe_cpu_axpby` (scale, then axpy).
    @inline(__always)
    private static func axpby(_ alpha: Float, _ x: Float, _ beta: Float, _ y: Float) -> Float {
        (beta * y) + alpha * x
    }

    private func computeUpdateValue(_ parameter: LearnableParameter, index: Int, count: Int, rate: Float) {
        let localRate = rate * parameter.lrMult
        let diff = parameter.diff
        let n = diff.count
        let momentum = hyper.momentum, delta = hyper.delta
        // Take the history buffers out of the array while updating them (unique, so no copy):
        // two simultaneous mutable accesses to `history` would break exclusivity.
        let second = hyper.kind.historyPerParameter == 2 ? count + index : nil
        var first = history[index]
        history[index] = []
        var moments: [Float] = []
        if let second { swap(&moments, &history[second]) }
        defer {
            history[index] = first
            if let second { swap(&moments, &history[second]) }
        }
        let kind = hyper.kind, rmsDecay = hyper.rmsDecay, beta2 = hyper.momentum2, iteration = self.iteration
        first.withUnsafeMutableBufferPointer { h in
          moments.withUnsafeMutableBufferPointer { u in
            switch kind {
            case .sgd:
                for j in 0..<n {
                    h[j] = Self.axpby(localRate, diff[j], momentum, h[j])
                    diff[j] = h[j]
                }
            case .nesterov:
                for j in 0..<n {
                    let previous = h[j]
                    h[j] = Self.axpby(localRate, diff[j], momentum, h[j])
                    diff[j] = Self.axpby(1 + momentum, h[j], -momentum, previous)
                }
            case .adaGrad:
                for j in 0..<n {
                    h[j] += diff[j] * diff[j]
                    diff[j] = localRate * (diff[j] / (h[j].squareRoot() + delta))
                }
            case .rmsProp:
                let decay = rmsDecay
                for j in 0..<n {
                    h[j] = Self.axpby(1 - decay, diff[j] * diff[j], decay, h[j])
                    diff[j] = localRate * (diff[j] / (h[j].squareRoot() + delta))
                }
            case .adaDelta:
                for j in 0..<n {
                    h[j] = Self.axpby(1 - momentum, diff[j] * diff[j], momentum, h[j])
                    let step = ((delta + u[j]) / (delta + h[j])).squareRoot()
                    let update = diff[j] * step
                    u[j] = Self.axpby(1 - momentum, update * update, momentum, u[j])
                    diff[j] = localRate * update
                }
            case .adam:
                let beta1 = momentum
                let t = Double(iteration + 1)
                let correction = Float((1 - pow(Double(beta2), t)).squareRoot() / (1 - pow(Double(beta1), t)))
                let scale = localRate * correction
                for j in 0..<n {
                    let g = diff[j]
                    h[j] = Self.axpby(1 - beta1, g, beta1, h[j])
                    u[j] = Self.axpby(1 - beta2, g * g, beta2, u[j])
                    diff[j] = scale * (h[j] / (u[j].squareRoot() + delta))
                }
            }
          }
        }
    }
}

/// A solver configuration or state problem, said in one sentence.
public struct SolverError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
