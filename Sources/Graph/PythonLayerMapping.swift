import CaffeFormat

/// Python layers that SwiftJIT runs natively: a `type: "Python"` layer whose `python_param` names
/// a known module and class is rewritten, at graph-build time, into the native layer with the
/// same semantics, so the net runs without a Python interpreter (OpenCV DNN does the same).
///
/// Known so far: ENet's `spatial_dropout.SpatialDropoutLayer` → `SpatialDropout`, and
/// py-faster-rcnn's `rpn.proposal_layer.ProposalLayer` → `Proposal`. The latter's
/// `param_str` is YAML (`"'feat_stride': 16"`, optionally `'scales': [8, 16, 32]`, a braced
/// `{…}` dict, or `!!python/tuple` lists); its thresholds come from py-faster-rcnn's `cfg` for the
/// net's phase, as the Python layer reads them. A key the layer does not read is refused rather
/// than ignored, so no setting is silently lost.
///
///     layer { type: "Python" python_param { module: 'rpn.proposal_layer' layer: 'ProposalLayer'
///             param_str: "'feat_stride': 16" } }      →  layer { type: "Proposal" proposal_param { feat_stride: 16 } }
public enum PythonLayerMapping {
    /// The native layer for `layer`, or nil when it is not a Python layer SwiftJIT knows.
    /// With `pythonHost` (pycaffe runs the net and has the user's Python), py-faster-rcnn's
    /// proposal layer is left to that Python; ENet's spatial dropout is native either way.
    public static func native(for layer: Caffe_LayerParameter, phase: Caffe_Phase, pythonHost: Bool = false) throws -> Caffe_LayerParameter? {
        guard layer.type == "Python" else { return nil }
        let python = layer.pythonParam
        switch (python.module, python.layer) {
        case ("rpn.proposal_layer", "ProposalLayer") where !pythonHost:
            return try proposal(layer, phase: phase)
        case ("spatial_dropout", "SpatialDropoutLayer"):
            // ENet's layer: `SpatialDropoutSettings` reads its param_str from the python_param kept here.
            var native = layer
            native.type = OpKind.spatialDropout.rawValue
            return native
        default:
            return nil
        }
    }

    /// py-faster-rcnn's `ProposalLayer.setup` and `cfg.TEST`/`cfg.TRAIN` (`lib/fast_rcnn/config.py`).
    static func proposal(_ layer: Caffe_LayerParameter, phase: Caffe_Phase) throws -> Caffe_LayerParameter {
        let entries = try ParamString.numbers(layer.pythonParam.paramStr)
        var p = Caffe_ProposalParameter()
        let training = phase == .train
        p.preNmsTopn = training ? 12000 : 6000
        p.postNmsTopn = training ? 2000 : 300
        p.nmsThresh = 0.7
        p.minSize = 16
        guard let stride = entries["feat_stride"] else {
            throw Diagnostic("py-faster-rcnn's ProposalLayer needs 'feat_stride' in param_str, got \"\(layer.pythonParam.paramStr)\"",
                             hint: "e.g. param_str: \"'feat_stride': 16\"")
        }
        p.featStride = try whole(stride, "feat_stride")
        for (key, values) in entries {
            switch key {
            case "feat_stride": break
            case "scales": p.scale = values
            case "ratios": p.ratio = values
            case "base_size": p.baseSize = try whole(values, "base_size")
            default:
                throw Diagnostic("py-faster-rcnn's ProposalLayer does not read '\(key)' from param_str",
                                 hint: "it reads feat_stride and scales (and, in some forks, ratios and base_size)")
            }
        }
        var native = layer
        native.type = "Proposal"
        native.clearPythonParam()
        native.proposalParam = p
        return native
    }

    private static func whole(_ values: [Float], _ key: String) throws -> UInt32 {
        guard values.count == 1, let value = values.first, value > 0, value == value.rounded(), value < 16_777_216 else {
            throw Diagnostic("param_str's '\(key)' must be one positive whole number, got \(values)")
        }
        return UInt32(value)
    }
}
