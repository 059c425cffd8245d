/// Brings a `SolverParameter` up to today's format, the way Caffe's `UpgradeSolverAsNeeded` does:
/// the legacy `solver_type: ADAM` enum becomes the `type: "Adam"` string.
public enum SolverUpgrader {
    /// Whether the solver still uses the `solver_type` enum (Caffe's `SolverNeedsTypeUpgrade`).
    public static func needsUpgrade(_ solver: Caffe_SolverParameter) -> Bool {
        solver.hasSolverType
    }

    /// Upgrades `solver` in place and returns one human-readable line per upgrade applied
    /// (empty when it was already current).
    ///
    /// When only `solver_type` is set, `type` gets the matching name and `solver_type` is cleared.
    /// When both are set and name the same solver, the legacy field is dropped; when they disagree
    /// this throws, since there is no telling which one the author meant. (Caffe refuses any file
    /// that sets both.)
    ///
    /// - Parameter file: the file the solver came from, for diagnostics.
    @discardableResult
    public static func upgrade(_ solver: inout Caffe_SolverParameter, file: String? = nil) throws -> [String] {
        guard needsUpgrade(solver) else { return [] }
        let legacy = solver.solverType
        let name = typeName(of: legacy)
        let legacyText = "solver_type: \(enumName(of: legacy))"
        if solver.hasType {
            guard solver.type == name else {
                throw Diagnostic("the solver sets both \(legacyText) and type: \"\(solver.type)\", which disagree", file: file,
                                 hint: "delete the deprecated solver_type line and keep type: \"\(solver.type)\", "
                                     + "or set type: \"\(name)\"")
            }
            solver.clearSolverType()
            return ["dropped \(legacyText), which repeats type: \"\(name)\""]
        }
        solver.type = name
        solver.clearSolverType()
        return ["upgraded \(legacyText) to type: \"\(name)\""]
    }

    /// The `type` string Caffe's solver registry knows each legacy enum value by.
    public static func typeName(of type: Caffe_SolverParameter.SolverType) -> String {
        switch type {
        case .sgd: return "SGD"
        case .nesterov: return "Nesterov"
        case .adagrad: return "AdaGrad"
        case .rmsprop: return "RMSProp"
        case .adadelta: return "AdaDelta"
        case .adam: return "Adam"
        }
    }

    /// The enum value as written in prototxt (`ADAM`).
    static func enumName(of type: Caffe_SolverParameter.SolverType) -> String {
        switch type {
        case .sgd: return "SGD"
        case .nesterov: return "NESTEROV"
        case .adagrad: return "ADAGRAD"
        case .rmsprop: return "RMSPROP"
        case .adadelta: return "ADADELTA"
        case .adam: return "ADAM"
        }
    }
}
