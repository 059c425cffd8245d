import Foundation
import Testing
@testable import Solvers

/// Each update rule against a direct transcription of its formula in double precision,
/// over three updates (so history matters), plus the learning-rate policies.
@Suite("solver update rules")
struct SolverTests {
    static let gradients: [[Float]] = [[0.5, -1.25, 2, 0], [0.25, 0.75, -1, 3], [-0.5, 0.5, 0.125, -2]]
    static let start: [Float] = [1, -2, 0.5, 0.25]

    /// Runs `solver` for three updates on one 4-element parameter, with lr_mult 2 and decay_mult 1.
    func run(_ hyper: SolverHyperparameters) -> [Float] {
        var data = Self.start
        let solver = Solver(hyperparameters: hyper, parameterCounts: [4])
        for g in Self.gradients {
            var diff = g
            data.withUnsafeMutableBufferPointer { d in
                diff.withUnsafeMutableBufferPointer { df in
                    solver.applyUpdate([LearnableParameter(data: d, diff: df, lrMult: 2, decayMult: 1)])
                }
            }
        }
        return data
    }

    /// The same three updates from the textbook formulas, in Double.
    func reference(_ kind: SolverKind, rate: Double, momentum: Double, decay: Double, delta: Double = 1e-8,
                   rmsDecay: Double = 0.9, beta2: Double = 0.999, l1: Bool = false) -> [Double] {
        var w = Self.start.map(Double.init)
        var h = [Double](repeating: 0, count: 4), u = h
        for (t, g0) in Self.gradients.enumerated() {
            for j in 0..<4 {
                let g = Double(g0[j]) + decay * (l1 ? (w[j] > 0 ? 1 : (w[j] < 0 ? -1 : 0)) : w[j])
                let lr = rate * 2
                var step: Double
                switch kind {
                case .sgd:
                    h[j] = momentum * h[j] + lr * g
                    step = h[j]
                case .nesterov:
                    let previous = h[j]
                    h[j] = momentum * h[j] + lr * g
                    step = (1 + momentum) * h[j] - momentum * previous
                case .adaGrad:
                    h[j] += g * g
                    step = lr * g / (h[j].squareRoot() + delta)
                case .rmsProp:
                    h[j] = rmsDecay * h[j] + (1 - rmsDecay) * g * g
                    step = lr * g / (h[j].squareRoot() + delta)
                case .adaDelta:
                    h[j] = momentum * h[j] + (1 - momentum) * g * g
                    let update = g * ((u[j] + delta) / (h[j] + delta)).squareRoot()
                    u[j] = momentum * u[j] + (1 - momentum) * update * update
                    step = lr * update
                case .adam:
                    h[j] = momentum * h[j] + (1 - momentum) * g
                    u[j] = beta2 * u[j] + (1 - beta2) * g * g
                    let n = Double(t + 1)
                    let correction = (1 - pow(beta2, n)).squareRoot() / (1 - pow(momentum, n))
                    step = lr * correction * h[j] / (u[j].squareRoot() + delta)
                }
                w[j] -= step
            }
        }
        return w
    }

    func hyper(_ kind: SolverKind, momentum: Float, decay: Float = 0.01) -> SolverHyperparameters {
        var h = SolverHyperparameters(schedule: LearningRateSchedule(baseRate: 0.1, policy: .fixed))
        h.kind = kind
        h.momentum = momentum
        h.weightDecay = decay
        h.rmsDecay = 0.9
        h.delta = kind == .adaDelta ? 1e-6 : 1e-8
        return h
    }

    @Test("SGD, Nesterov, AdaGrad, RMSProp, AdaDelta and Adam follow their formulas",
          arguments: [(SolverKind.sgd, Float(0.9)), (.nesterov, 0.9), (.adaGrad, 0), (.rmsProp, 0), (.adaDelta, 0.95), (.adam, 0.9)])
    func rules(kind: SolverKind, momentum: Float) {
        let ours = run(hyper(kind, momentum: momentum))
        let expected = reference(kind, rate: 0.1, momentum: Double(momentum), decay: 0.01, delta: kind == .adaDelta ? 1e-6 : 1e-8)
        for (a, b) in zip(ours, expected) {
            #expect(abs(Double(a) - b) <= 1e-5 * max(1, abs(b)), "\(kind): \(ours) vs \(expected)")
        }
    }

    @Test("L1 weight decay adds decay·sign(w); iter_size divides the gradient; clipping bounds the norm")
    func regularizationAndScaling() {
        var l1 = hyper(.sgd, momentum: 0.5)
        l1.regularization = .l1
        let ours = run(l1)
        let expected = reference(.sgd, rate: 0.1, momentum: 0.5, decay: 0.01, l1: true)
        for (a, b) in zip(ours, expected) { #expect(abs(Double(a) - b) <= 1e-6) }

        var clipped = hyper(.sgd, momentum: 0, decay: 0)
        clipped.clipGradients = 1
        clipped.iterSize = 2
        var data: [Float] = [0, 0]
        var diff: [Float] = [6, 8]  // accumulated over 2 passes: normalized later, after clipping
        let solver = Solver(hyperparameters: clipped, parameterCounts: [2])
        data.withUnsafeMutableBufferPointer { d in
            diff.withUnsafeMutableBufferPointer { df in _ = solver.applyUpdate([LearnableParameter(data: d, diff: df)]) }
        }
        // Caffe clips first (norm 10 → 1: 0.6, 0.8), then divides by iter_size (0.3, 0.4), then lr 0.1.
        #expect(abs(data[0] + 0.03) < 1e-7 && abs(data[1] + 0.04) < 1e-7)
    }

    @Test("learning-rate policies: step, exp, inv, multistep, poly, sigmoid")
    func policies() {
        func rates(_ policy: LearningRatePolicy, _ iters: [Int]) -> [Float] {
            var schedule = LearningRateSchedule(baseRate: 0.01, policy: policy)
            return iters.map { schedule.rate(at: $0) }
        }
        #expect(rates(.step(gamma: 0.5, stepSize: 10), [0, 9, 10, 25]) == [0.01, 0.01, 0.005, 0.0025])
        #expect(rates(.multistep(gamma: 0.1, stepValues: [2, 4]), [0, 1, 2, 3, 4, 5]).map { ($0 * 1e6).rounded() } == [10000, 10000, 1000, 1000, 100, 100])
        #expect(abs(rates(.inv(gamma: 0.05, power: 0.75), [10])[0] - Float(0.01 * pow(1.5, -0.75))) < 1e-9)
        #expect(abs(rates(.exp(gamma: 0.95), [3])[0] - Float(0.01 * pow(0.95, 3))) < 1e-9)
        #expect(abs(rates(.poly(power: 2, maxIterations: 10), [5])[0] - 0.0025) < 1e-9)
        #expect(abs(rates(.sigmoid(gamma: 0.5, stepSize: 10), [10])[0] - 0.005) < 1e-9)
    }

    @Test("restoring a snapshot with the wrong history sizes is refused")
    func restoreMismatch() {
        let solver = Solver(hyperparameters: hyper(.adam, momentum: 0.9), parameterCounts: [4, 2])
        #expect(solver.history.count == 4)
        #expect(throws: SolverError.self) { try solver.restore(iteration: 20, currentStep: 2, history: [[1, 2]]) }
    }
}
