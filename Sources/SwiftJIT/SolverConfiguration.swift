/// Turns a Caffe `SolverParameter` into the protobuf-free `SolverHyperparameters` the solvers run
/// on, with the checks Caffe makes (as `Diagnostic`s naming the solver file instead of CHECK aborts).
public enum SolverConfiguration {
    public static func hyperparameters(_ p: Caffe_SolverParameter, file: String) throws -> SolverHyperparameters {
        func fail(_ message: String, hint: String? = nil) -> Diagnostic { Diagnostic(message, file: file, hint: hint) }
        let typeName = p.type.isEmpty ? "SGD" : p.type
        guard let kind = SolverKind(rawValue: typeName) else {
            throw fail("unknown solver type '\(typeName)'" + Diagnostic.didYouMean(typeName, among: SolverKind.allCases.map(\.rawValue)),
                       hint: "one of: " + SolverKind.allCases.map(\.rawValue).joined(separator: ", "))
        }
        let policyName = p.hasLrPolicy ? p.lrPolicy : "fixed"
        let policy: LearningRatePolicy
        switch policyName {
        case "fixed": policy = .fixed
        case "step":
            guard p.stepsize > 0 else { throw fail("lr_policy \"step\" needs stepsize > 0", hint: "add stepsize: N") }
            policy = .step(gamma: p.gamma, stepSize: Int(p.stepsize))
        case "exp": policy = .exp(gamma: p.gamma)
        case "inv": policy = .inv(gamma: p.gamma, power: p.power)
        case "multistep": policy = .multistep(gamma: p.gamma, stepValues: p.stepvalue.map(Int.init))
        case "poly":
            guard p.maxIter > 0 else { throw fail("lr_policy \"poly\" needs max_iter > 0") }
            policy = .poly(power: p.power, maxIterations: Int(p.maxIter))
        case "sigmoid":
            guard p.stepsize > 0 else { throw fail("lr_policy \"sigmoid\" needs stepsize > 0", hint: "add stepsize: N") }
            policy = .sigmoid(gamma: p.gamma, stepSize: Int(p.stepsize))
        default:
            let known = ["fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid"]
            throw fail("unknown lr_policy \"\(policyName)\"" + Diagnostic.didYouMean(policyName, among: known), hint: "one of: " + known.joined(separator: ", "))
        }
        if ["step", "exp", "inv", "multistep", "sigmoid"].contains(policyName), p.gamma < 0 {
            throw fail("lr_policy \"\(policyName)\" needs gamma ≥ 0, got \(p.gamma)",
                       hint: policyName == "sigmoid" ? "Caffe's sigmoid policy can only ramp the rate up" : nil)
        }
        var hyper = SolverHyperparameters(schedule: LearningRateSchedule(baseRate: p.baseLr, policy: policy))
        hyper.kind = kind
        hyper.momentum = p.momentum
        hyper.momentum2 = p.momentum2
        hyper.delta = p.delta
        hyper.rmsDecay = p.rmsDecay
        hyper.weightDecay = p.weightDecay
        switch p.regularizationType {
        case "L2": hyper.regularization = .l2
        case "L1": hyper.regularization = .l1
        default: throw fail("unknown regularization_type \"\(p.regularizationType)\"", hint: "use \"L2\" or \"L1\"")
        }
        hyper.clipGradients = p.clipGradients
        guard p.iterSize >= 1 else { throw fail("iter_size must be at least 1") }
        hyper.iterSize = Int(p.iterSize)
        if (kind == .adaGrad || kind == .rmsProp), p.momentum != 0 {
            throw fail("\(kind.rawValue) does not use momentum; set momentum: 0 (it is \(p.momentum))",
                       hint: "Caffe rejects this too; remove the momentum line")
        }
        if kind == .rmsProp, !(0...1).contains(p.rmsDecay) { throw fail("rms_decay must lie in [0, 1], got \(p.rmsDecay)") }
        return hyper
    }
}
