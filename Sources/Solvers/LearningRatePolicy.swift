import Foundation

/// Caffe's learning-rate schedules (`lr_policy`), computed with Caffe's own mix of float and double
/// arithmetic so the rate matches `SGDSolver::GetLearningRate` to the last bit or so.
///
///     let policy = LearningRatePolicy.step(gamma: 0.5, stepSize: 10)
///     var schedule = LearningRateSchedule(baseRate: 0.01, policy: policy)
///     schedule.rate(at: 25)   // 0.0025
public enum LearningRatePolicy: Sendable, Equatable {
    case fixed
    /// `base_lr · gamma^⌊iter / stepsize⌋`
    case step(gamma: Float, stepSize: Int)
    /// `base_lr · gamma^iter`
    case exp(gamma: Float)
    /// `base_lr · (1 + gamma·iter)^(-power)`
    case inv(gamma: Float, power: Float)
    /// `base_lr · gamma^k`, where k counts the step values passed so far.
    case multistep(gamma: Float, stepValues: [Int])
    /// `base_lr · (1 - iter/max_iter)^power`
    case poly(power: Float, maxIterations: Int)
    /// `base_lr · 1/(1 + exp(-gamma·(iter - stepsize)))`
    case sigmoid(gamma: Float, stepSize: Int)
}

/// A learning-rate schedule with the state Caffe keeps between iterations (`current_step_`,
/// which the `multistep` policy advances inside the rate computation and solverstates record).
public struct LearningRateSchedule: Sendable, Equatable {
    public var baseRate: Float
    public var policy: LearningRatePolicy
    /// Caffe's `current_step_`.
    public var currentStep: Int

    public init(baseRate: Float, policy: LearningRatePolicy, currentStep: Int = 0) {
        self.baseRate = baseRate
        self.policy = policy
        self.currentStep = currentStep
    }

    /// The rate for iteration `iter`. Mutating, because `step` and `multistep` update `currentStep`
    /// exactly as Caffe does (multistep advances by at most one per call).
    public mutating func rate(at iter: Int) -> Float {
        let base = baseRate
        switch policy {
        case .fixed:
            return base
        case .step(let gamma, let stepSize):
            currentStep = iter / max(stepSize, 1)
            return Float(Double(base) * pow(Double(gamma), Double(currentStep)))
        case .exp(let gamma):
            return Float(Double(base) * pow(Double(gamma), Double(iter)))
        case .inv(let gamma, let power):
            return base * powf(1 + gamma * Float(iter), -power)
        case .multistep(let gamma, let stepValues):
            if currentStep < stepValues.count, iter >= stepValues[currentStep] { currentStep += 1 }
            return Float(Double(base) * pow(Double(gamma), Double(currentStep)))
        case .poly(let power, let maxIterations):
            return base * powf(1 - Float(iter) / Float(maxIterations), power)
        case .sigmoid(let gamma, let stepSize):
            return base * (1 / (1 + expf(-gamma * (Float(iter) - Float(stepSize)))))
        }
    }
}
