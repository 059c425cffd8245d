import CaffeFormat

/// Selects the layers of a net that exist in one `NetState` (phase, level, stages), as Caffe's
/// `Net::FilterNet` and `Net::StateMeetsRule` do.
///
/// A layer with `include` rules is kept when any rule matches; otherwise a layer with `exclude`
/// rules is dropped when any matches. A rule matches when its phase (if set) equals the state's,
/// the level lies within `min_level...max_level`, every `stage` is in the state and no `not_stage` is.
public struct NetFilter: Sendable {
    public var state: Caffe_NetState

    public init(phase: Caffe_Phase, level: Int32 = 0, stages: [String] = []) {
        state = Caffe_NetState()
        state.phase = phase
        state.level = level
        state.stage = stages
    }

    /// The state Caffe uses for `net`: the prototxt's own `state`, with the phase (and level/stages
    /// when given) overridden by the caller.
    public init(net: Caffe_NetParameter, phase: Caffe_Phase, level: Int32? = nil, stages: [String]? = nil) {
        state = net.state
        state.phase = phase
        if let level { state.level = level }
        if let stages { state.stage = stages }
    }

    public func includes(_ layer: Caffe_LayerParameter) -> Bool {
        if !layer.include.isEmpty { return layer.include.contains(where: meets) }
        return !layer.exclude.contains(where: meets)
    }

    /// Why `layer` is left out, for "bottom not produced" hints ("it is only in phase TRAIN").
    public func exclusionReason(_ layer: Caffe_LayerParameter) -> String? {
        guard !includes(layer) else { return nil }
        if let rule = layer.include.first, rule.hasPhase { return "layer '\(layer.name)' that makes it is only in phase \(rule.phase.caffeName)" }
        if let rule = layer.exclude.first(where: meets), rule.hasPhase { return "layer '\(layer.name)' that makes it is excluded in phase \(rule.phase.caffeName)" }
        return "layer '\(layer.name)' that makes it is filtered out by its include/exclude rules for this net state"
    }

    /// The stages that would include `layer` in this phase, when stages are all it lacks.
    public func stagesEnabling(_ layer: Caffe_LayerParameter) -> [String]? {
        for rule in layer.include where !rule.stage.isEmpty {
            var relaxed = self
            relaxed.state.stage = Array(Set(state.stage + rule.stage)).sorted()
            if relaxed.meets(rule) { return rule.stage }
        }
        return nil
    }

    public func meets(_ rule: Caffe_NetStateRule) -> Bool {
        if rule.hasPhase, rule.phase != state.phase { return false }
        if rule.hasMinLevel, state.level < rule.minLevel { return false }
        if rule.hasMaxLevel, state.level > rule.maxLevel { return false }
        if rule.stage.contains(where: { !state.stage.contains($0) }) { return false }
        if rule.notStage.contains(where: { state.stage.contains($0) }) { return false }
        return true
    }
}

extension Caffe_Phase {
    /// `TRAIN` or `TEST`, as written in prototxt.
    public var caffeName: String { self == .train ? "TRAIN" : "TEST" }
}
