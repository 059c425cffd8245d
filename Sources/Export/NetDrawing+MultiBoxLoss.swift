import CaffeFormat

extension NetDrawing {
    /// SSD's MultiBoxLoss box line: classes, the two loss types, matching, mining and coding,
    /// e.g. `21 classes, SMOOTH_L1 + SOFTMAX, PER_PREDICTION ≥ 0.5, MAX_NEGATIVE 3:1, CENTER_SIZE`.
    static func multiBoxLossAttributes(_ layer: Caffe_LayerParameter) -> String {
        let p = layer.multiboxLossParam
        let loc = p.locLossType == .smoothL1 ? "SMOOTH_L1" : "L2"
        let conf = p.confLossType == .softmax ? "SOFTMAX" : "LOGISTIC"
        let match = p.matchType == .bipartite ? "BIPARTITE" : "PER_PREDICTION ≥ \(p.overlapThreshold)"
        let mining: String
        switch p.miningType {
        case .none: mining = "no mining"
        case .maxNegative: mining = "MAX_NEGATIVE \(p.negPosRatio):1"
        case .hardExample: mining = "HARD_EXAMPLE \(p.sampleSize)"
        }
        let code = p.codeType == .centerSize ? "CENTER_SIZE" : p.codeType == .cornerSize ? "CORNER_SIZE" : "CORNER"
        var text = "\(p.numClasses) classes, \(loc) + \(conf), \(match), \(mining), \(code)"
        if !p.shareLocation { text += ", per-class boxes" }
        if p.locWeight != 1 { text += ", loc weight \(p.locWeight)" }
        return text
    }
}
