import Foundation
import CaffeFormat
import Graph
import Runtime

/// SSD's MultiBoxLoss (weiliu89/caffe `MultiBoxLossLayer::Forward_cpu` with `bbox_util.cpp`'s
/// `GetGroundTruth`, `FindMatches`/`MatchBBox`, `MineHardExamples`, `EncodeLocPrediction`,
/// `EncodeConfPrediction` and `ComputeConfLoss`), as plain host code run once per forward.
///
/// Matching and mining are discrete per-iteration work (which priors are positives, which
/// negatives are kept), so they are not worth a kernel; the fork does them on the host too. One
/// pass computes the loss the top holds and, for backward, the gradients of the fork's inner loss
/// layers before its final scaling: the localization one (`SmoothL1Loss` or `EuclideanLoss` with
/// loss weight `loc_weight`, at the matched priors' rows) and the confidence one (`SoftmaxWithLoss`
/// with normalization NONE, or `SigmoidCrossEntropyLoss`, at every prior without mining, at the
/// positives and mined negatives with it). Backward multiplies them by `top diff / normalizer`,
/// exactly the fork's `caffe_scal`; the priors and labels get no diff.
///
/// Like the fork, with `encode_variance_in_target` the gradient is the one w.r.t. the prediction
/// divided by the variances, passed back undivided (so it is not the derivative of the loss
/// there); training reproduces the fork's updates, and a test pins the relation.
///
/// Deviations, all where the fork's result is unspecified: negatives of equal loss are picked in
/// prior order (the fork's `std::sort` leaves ties unordered); invalid ground truth the fork
/// aborts on (a background label, an empty box under CENTER_SIZE coding) makes the loss NaN or
/// infinite, which training reports as a non-finite loss at this layer.
///
///     let loss = MultiBoxLossAlgorithm(layer, images: 2, priors: 8732)
///     let value = loss.evaluate(loc: loc, conf: conf, priors: priorBox, labels: label, groundTruth: 3,
///                               locGradient: dLoc, confGradient: dConf)
struct MultiBoxLossAlgorithm: Sendable {
    typealias Box = DetectionOutputAlgorithm.Box

    let images: Int
    let priors: Int
    let classes: Int
    let locClasses: Int
    let shareLocation: Bool
    let background: Int
    let useDifficult: Bool
    let bipartiteOnly: Bool
    let overlapThreshold: Float
    let usePriorForMatching: Bool
    let ignoreCrossBoundary: Bool
    let codeType: Caffe_PriorBoxParameter.CodeType
    let varianceInTarget: Bool
    let mining: Caffe_MultiBoxLossParameter.MiningType
    let negPosRatio: Float
    let negOverlap: Float
    let sampleSize: Int
    let smoothL1: Bool
    let softmax: Bool
    let normalization: Caffe_LossParameter.NormalizationMode
    let locWeight: Float
    let mapObjectToAgnostic: Bool
    let bpInside: Bool
    /// The layer's own `propagate_down` (the fork defaults it to true, true, false, false): the
    /// loss counts the localization term only when the first is true, the confidence term only
    /// when the second is.
    let countsLoc: Bool
    let countsConf: Bool
    /// Decodes predictions for `use_prior_for_matching: false` (the DetectionOutput decoder).
    let decoder: DetectionOutputAlgorithm

    /// Reads the layer's parameters; throws for settings the fork rejects or that are not run here.
    init(_ layer: Caffe_LayerParameter, images: Int, priors: Int) throws {
        let p = layer.multiboxLossParam
        self.images = images
        self.priors = priors
        classes = Int(p.numClasses)
        shareLocation = p.shareLocation
        locClasses = p.shareLocation ? 1 : classes
        background = Int(p.backgroundLabelID)
        useDifficult = p.useDifficultGt
        bipartiteOnly = p.matchType == .bipartite
        overlapThreshold = p.overlapThreshold
        usePriorForMatching = p.usePriorForMatching
        ignoreCrossBoundary = p.ignoreCrossBoundaryBbox
        codeType = p.codeType
        varianceInTarget = p.encodeVarianceInTarget
        mining = p.miningType
        negPosRatio = p.negPosRatio
        negOverlap = p.negOverlap
        sampleSize = Int(p.sampleSize)
        smoothL1 = p.locLossType == .smoothL1
        softmax = p.confLossType == .softmax
        normalization = Lowering.normalization(layer.lossParam)
        locWeight = p.locWeight
        mapObjectToAgnostic = p.mapObjectToAgnostic
        bpInside = p.bpInside
        countsLoc = layer.propagateDown.count > 0 ? layer.propagateDown[0] : true
        countsConf = layer.propagateDown.count > 1 ? layer.propagateDown[1] : true
        var decode = Caffe_DetectionOutputParameter()
        decode.numClasses = p.numClasses
        decode.codeType = p.codeType
        decode.varianceEncodedInTarget = p.encodeVarianceInTarget
        decoder = DetectionOutputAlgorithm(decode, images: images, priors: priors)

        if p.hasDoNegMining, p.doNegMining != (p.miningType != .none) {
            throw MultiBoxLossAlgorithm.invalid("do_neg_mining: \(p.doNegMining) contradicts mining_type: \(p.miningType)",
                                                hint: "drop the deprecated do_neg_mining and set mining_type")
        }
        if mining != .none, !shareLocation {
            throw MultiBoxLossAlgorithm.invalid("negative mining needs share_location: true (as in the fork)",
                                                hint: "set share_location: true or mining_type: NONE")
        }
        if softmax, background >= classes {
            throw MultiBoxLossAlgorithm.invalid("background_label_id \(background) is not within [0, \(classes)) as SOFTMAX needs")
        }
        if mining == .hardExample, sampleSize <= 0 {
            throw MultiBoxLossAlgorithm.invalid("HARD_EXAMPLE mining needs a positive sample_size, got \(sampleSize)")
        }
        if mining != .none, p.hasNmsParam, p.nmsParam.nmsThreshold > 0 {
            throw MultiBoxLossAlgorithm.invalid("nms_param in multibox_loss_param (NMS among mined examples) is not supported yet",
                                                hint: "remove nms_param from multibox_loss_param (SSD's published nets do not set it)")
        }
        if mapObjectToAgnostic, classes != (background >= 0 ? 2 : 1) {
            throw MultiBoxLossAlgorithm.invalid("map_object_to_agnostic needs num_classes: 2 (background and object), got \(classes)")
        }
    }

    static func invalid(_ message: String, hint: String? = nil) -> Diagnostic {
        Diagnostic("multibox_loss_param: " + message, hint: hint)
    }

    /// A ground-truth box of one image: its label and corners.
    struct Truth {
        var label: Int
        var box: Box
    }

    /// Per image, per location class (-1 when shared), each prior's matched ground truth
    /// (`-1` none, `-2` ignored across the boundary) — the fork's `all_match_indices_`.
    typealias Matches = [[(label: Int, indices: [Int])]]

    /// `GetGroundTruth`: rows of 8 (`item, label, instance, xmin, ymin, xmax, ymax, difficult`),
    /// item -1 skipped, difficult ones skipped unless `use_difficult_gt`, grouped by item.
    func groundTruth(_ labels: UnsafePointer<Float>, rows: Int) -> [Int: [Truth]] {
        var truths: [Int: [Truth]] = [:]
        for row in 0..<rows {
            let r = labels + row * 8
            let item = Int(r[0])
            if item == -1 { continue }
            if !useDifficult, r[7] != 0 { continue }
            truths[item, default: []].append(Truth(label: Int(r[1]), box: Box(r[3], r[4], r[5], r[6])))
        }
        return truths
    }

    /// Prior `p`'s box and its four variances.
    func prior(_ data: UnsafePointer<Float>, _ p: Int) -> (box: Box, variance: [Float]) {
        let b = data + 4 * p, v = data + 4 * (priors + p)
        return (Box(b[0], b[1], b[2], b[3]), [v[0], v[1], v[2], v[3]])
    }

    /// `MatchBBox`: bipartite matching (the best remaining pair first, any overlap), then with
    /// PER_PREDICTION each unmatched prediction's best ground truth at `overlap_threshold` or more.
    /// Returns each prediction's match and its best overlap with any candidate ground truth.
    func match(_ truths: [Truth], _ predictions: [Box], label: Int) -> (indices: [Int], overlaps: [Float]) {
        var indices = Array(repeating: -1, count: predictions.count)
        var best = Array(repeating: Float(0), count: predictions.count)
        let candidates = truths.indices.filter { label == -1 || truths[$0].label == label }
        guard !candidates.isEmpty else { return (indices, best) }
        var overlaps: [Int: [Int: Float]] = [:]
        for (i, prediction) in predictions.enumerated() {
            if ignoreCrossBoundary, crossesBoundary(prediction) {
                indices[i] = -2
                continue
            }
            for j in candidates.indices {
                let overlap = prediction.overlap(truths[candidates[j]].box)
                if overlap > 1e-6 {
                    best[i] = max(best[i], overlap)
                    overlaps[i, default: [:]][j] = overlap
                }
            }
        }
        let rows = overlaps.keys.sorted()
        var pool = Array(candidates.indices)
        while !pool.isEmpty {
            var pick = (i: -1, j: -1, overlap: Float(-1))
            for i in rows where indices[i] == -1 {
                for j in pool {
                    if let overlap = overlaps[i]?[j], overlap > pick.overlap { pick = (i, j, overlap) }
                }
            }
            if pick.i == -1 { break }
            indices[pick.i] = candidates[pick.j]
            best[pick.i] = pick.overlap
            pool.removeAll { $0 == pick.j }
        }
        if !bipartiteOnly {
            for i in rows where indices[i] == -1 {
                var pick = (j: -1, overlap: Float(-1))
                for j in candidates.indices {
                    if let overlap = overlaps[i]?[j], overlap >= overlapThreshold, overlap > pick.overlap { pick = (j, overlap) }
                }
                if pick.j != -1 {
                    indices[i] = candidates[pick.j]
                    best[i] = pick.overlap
                }
            }
        }
        return (indices, best)
    }

    func crossesBoundary(_ b: Box) -> Bool {
        b.xmin < 0 || b.xmin > 1 || b.ymin < 0 || b.ymin > 1 || b.xmax < 0 || b.xmax > 1 || b.ymax < 0 || b.ymax > 1
    }

    /// The predicted offsets of prior `p`, location class `c`, image `image`.
    func offsets(_ loc: UnsafePointer<Float>, image: Int, prior p: Int, locClass c: Int) -> UnsafePointer<Float> {
        loc + ((image * priors + p) * locClasses + c) * 4
    }

    /// `FindMatches`: per image, per location class, the matches (see `Matches`) and overlaps.
    func findMatches(loc: UnsafePointer<Float>, priorData: UnsafePointer<Float>, truths: [Int: [Truth]])
        -> (matches: Matches, overlaps: [[Int: [Float]]]) {
        let priorBoxes = (0..<priors).map { prior(priorData, $0).box }
        var all: Matches = [], allOverlaps: [[Int: [Float]]] = []
        for image in 0..<images {
            guard let gt = truths[image] else {
                all.append([])
                allOverlaps.append([:])
                continue
            }
            var matches: [(label: Int, indices: [Int])] = [], overlaps: [Int: [Float]] = [:]
            if !usePriorForMatching {
                for c in 0..<locClasses {
                    let label = shareLocation ? -1 : c
                    if !shareLocation, label == background { continue }
                    let decoded = (0..<priors).map { decoder.decode(prior: priorData, $0, offsets(loc, image: image, prior: $0, locClass: c)) }
                    let result = match(gt, decoded, label: label)
                    matches.append((label, result.indices))
                    overlaps[label] = result.overlaps
                }
            } else {
                let result = match(gt, priorBoxes, label: -1)
                if shareLocation {
                    matches.append((-1, result.indices))
                    overlaps[-1] = result.overlaps
                } else {
                    for c in 0..<locClasses where c != background {
                        matches.append((c, result.indices.map { $0 > -1 && gt[$0].label == c ? $0 : -1 }))
                        overlaps[c] = result.overlaps
                    }
                }
            }
            all.append(matches)
            allOverlaps.append(overlaps)
        }
        return (all, allOverlaps)
    }

    /// `EncodeBBox`: ground truth `t` relative to prior `p` by `code_type`, the variances divided
    /// out unless `encode_variance_in_target`. Float arithmetic as in C++ (halves and logs through
    /// double, stored as float).
    func encode(_ t: Box, prior p: Box, variance v: [Float]) -> [Float] {
        switch codeType {
        case .corner:
            let d = [t.xmin - p.xmin, t.ymin - p.ymin, t.xmax - p.xmax, t.ymax - p.ymax]
            return varianceInTarget ? d : (0..<4).map { d[$0] / v[$0] }
        case .centerSize:
            let pw = p.xmax - p.xmin, ph = p.ymax - p.ymin
            let pcx = Float((Double(p.xmin) + Double(p.xmax)) / 2), pcy = Float((Double(p.ymin) + Double(p.ymax)) / 2)
            let tw = t.xmax - t.xmin, th = t.ymax - t.ymin
            let tcx = Float((Double(t.xmin) + Double(t.xmax)) / 2), tcy = Float((Double(t.ymin) + Double(t.ymax)) / 2)
            let w = tw > 0 && pw > 0 ? Float(Foundation.log(Double(tw / pw))) : .nan
            let h = th > 0 && ph > 0 ? Float(Foundation.log(Double(th / ph))) : .nan
            if varianceInTarget { return [(tcx - pcx) / pw, (tcy - pcy) / ph, w, h] }
            return [(tcx - pcx) / pw / v[0], (tcy - pcy) / ph / v[1], w / v[2], h / v[3]]
        case .cornerSize:
            let pw = p.xmax - p.xmin, ph = p.ymax - p.ymin
            let d = [(t.xmin - p.xmin) / pw, (t.ymin - p.ymin) / ph, (t.xmax - p.xmax) / pw, (t.ymax - p.ymax) / ph]
            return varianceInTarget ? d : (0..<4).map { d[$0] / v[$0] }
        }
    }

    /// One matched prediction for the localization loss: where its 4 offsets live, the values
    /// the loss compares (`EncodeLocPrediction`'s `loc_pred` and `loc_gt`).
    struct LocPair {
        var offset: Int
        var prediction: [Float]
        var target: [Float]
    }

    /// `EncodeLocPrediction` over the current matches, in the fork's order (image, class, prior).
    func encodeLocations(loc: UnsafePointer<Float>, priorData: UnsafePointer<Float>, truths: [Int: [Truth]], matches: Matches) -> [LocPair] {
        var pairs: [LocPair] = []
        for image in 0..<images {
            for (label, indices) in matches[image] {
                let c = shareLocation ? 0 : label
                for (j, g) in indices.enumerated() where g > -1 {
                    guard let truth = truths[image]?[g] else { continue }
                    let (priorBox, variance) = prior(priorData, j)
                    var target = encode(truth.box, prior: priorBox, variance: variance)
                    let at = offsets(loc, image: image, prior: j, locClass: c)
                    var prediction = [at[0], at[1], at[2], at[3]]
                    if bpInside {
                        let box = usePriorForMatching ? priorBox : decoder.decode(prior: priorData, j, at)
                        let corners = [box.xmin, box.ymin, box.xmax, box.ymax]
                        for k in 0..<4 where corners[k] < 0 || corners[k] > 1 { prediction[k] = target[k] }
                    }
                    if varianceInTarget {
                        for k in 0..<4 {
                            prediction[k] /= variance[k]
                            target[k] /= variance[k]
                        }
                    }
                    pairs.append(LocPair(offset: at - loc, prediction: prediction, target: target))
                }
            }
        }
        return pairs
    }

    /// The localization loss of one difference and its derivative (SmoothL1 or L2's `½d²`).
    func locLoss(_ d: Float) -> (loss: Float, slope: Float) {
        if smoothL1 {
            let a = abs(d)
            return a < 1 ? (0.5 * d * d, d) : (a - 0.5, d > 0 ? 1 : (d < 0 ? -1 : 0))
        }
        return (0.5 * d * d, d)
    }

    /// Softmax of one row of `classes` scores as Caffe's SoftmaxLayer computes it.
    func softmaxRow(_ x: UnsafePointer<Float>) -> [Float] {
        var maximum = x[0]
        for c in 1..<max(1, classes) { maximum = max(maximum, x[c]) }
        let e = (0..<classes).map { expf(x[$0] - maximum) }
        var sum: Float = 0
        for value in e { sum += value }
        return e.map { $0 / sum }
    }

    /// `ComputeConfLoss`: each prior's confidence loss against its matched label (background when
    /// unmatched), for mining.
    func confLosses(conf: UnsafePointer<Float>, image: Int, truths: [Int: [Truth]], matches: [(label: Int, indices: [Int])]) -> [Float] {
        (0..<priors).map { p in
            var label = background
            for (_, indices) in matches where indices[p] > -1 {
                label = truths[image]?[indices[p]].label ?? background
                break
            }
            let row = conf + (image * priors + p) * classes
            if softmax {
                let probability = softmaxRow(row)[max(0, min(label, classes - 1))]
                return -logf(max(probability, .leastNormalMagnitude))
            }
            var loss: Float = 0
            for c in 0..<classes {
                loss -= logisticTerm(row[c], target: c == label ? 1 : 0)
            }
            return loss
        }
    }

    /// `x·(t − [x ≥ 0]) − log(1 + exp(x − 2x·[x ≥ 0]))`, the negative of one logistic loss term.
    func logisticTerm(_ x: Float, target t: Float) -> Float {
        let positive: Float = x >= 0 ? 1 : 0
        return x * (t - positive) - logf(1 + expf(x - 2 * x * positive))
    }

    /// `MineHardExamples`: updates `matches` (HARD_EXAMPLE unmatches positives it does not pick)
    /// and returns each image's negatives, in prior order.
    func mine(loc: UnsafePointer<Float>, conf: UnsafePointer<Float>, priorData: UnsafePointer<Float>, truths: [Int: [Truth]],
              matches: inout Matches, overlaps: [[Int: [Float]]]) -> [[Int]] {
        guard mining != .none else { return Array(repeating: [], count: images) }
        var locLosses = Array(repeating: Array(repeating: Float(0), count: priors), count: images)
        if mining == .hardExample {
            let pairs = encodeLocations(loc: loc, priorData: priorData, truths: truths, matches: matches)
            var k = 0
            for image in 0..<images {
                for (_, indices) in matches[image] {
                    for (j, g) in indices.enumerated() where g > -1 {
                        var loss: Float = 0
                        for q in 0..<4 { loss += locLoss(pairs[k].prediction[q] - pairs[k].target[q]).loss }
                        locLosses[image][j] = loss
                        k += 1
                    }
                }
            }
        }
        var negatives: [[Int]] = []
        for image in 0..<images {
            let confLoss = confLosses(conf: conf, image: image, truths: truths, matches: matches[image])
            let loss = (0..<priors).map { confLoss[$0] + locLosses[image][$0] }
            var selected = Set<Int>(), chosen: [Int] = []
            for slot in matches[image].indices {
                let (label, indices) = matches[image][slot]
                let overlap = overlaps[image][label] ?? []
                let eligible = indices.indices.filter { m in
                    mining == .hardExample || (indices[m] == -1 && overlap[m] < negOverlap)
                }
                var count = eligible.count
                if mining == .maxNegative {
                    let positives = indices.filter { $0 > -1 }.count
                    count = min(Int(Float(positives) * negPosRatio), count)
                } else {
                    count = min(sampleSize, count)
                }
                let ranked = eligible.sorted { loss[$0] != loss[$1] ? loss[$0] > loss[$1] : $0 < $1 }
                selected.formUnion(ranked.prefix(count))
                for m in indices.indices {
                    if matches[image][slot].indices[m] > -1 {
                        if mining == .hardExample, !selected.contains(m) { matches[image][slot].indices[m] = -1 }
                    } else if matches[image][slot].indices[m] == -1, selected.contains(m) {
                        chosen.append(m)
                    }
                }
            }
            negatives.append(chosen)
        }
        return negatives
    }

    /// Caffe's `GetNormalizer` for the matches left after mining.
    func normalizer(matches: Int) -> Float {
        switch normalization {
        case .full: return Float(max(1, images * priors))
        case .valid: return Float(max(1, matches))
        case .batchSize: return Float(max(1, images))
        case .none: return 1
        }
    }

    /// The loss the top holds; fills `locGradient` and `confGradient` (zero elsewhere) with the
    /// inner losses' gradients before the final `top diff / normalizer` scaling, and returns the
    /// normalizer that scaling divides by.
    func evaluate(loc: UnsafePointer<Float>, conf: UnsafePointer<Float>, priors priorData: UnsafePointer<Float>,
                  labels: UnsafePointer<Float>, groundTruth rows: Int,
                  locGradient: UnsafeMutablePointer<Float>, confGradient: UnsafeMutablePointer<Float>) -> (loss: Float, normalizer: Float) {
        locGradient.update(repeating: 0, count: images * priors * locClasses * 4)
        confGradient.update(repeating: 0, count: images * priors * classes)
        let truths = groundTruth(labels, rows: rows)
        // The fork aborts on a background ground truth ("Found background label in the dataset").
        if truths.values.contains(where: { $0.contains { $0.label == background } }) { return (.nan, 1) }
        var (matches, overlaps) = findMatches(loc: loc, priorData: priorData, truths: truths)
        let negatives = mine(loc: loc, conf: conf, priorData: priorData, truths: truths, matches: &matches, overlaps: overlaps)
        let matched = matches.reduce(0) { $0 + $1.reduce(0) { $0 + $1.indices.filter { $0 > -1 }.count } }

        // Localization: SmoothL1Loss / EuclideanLoss over the matched pairs, loss weight loc_weight.
        var locLoss: Float = 0
        for pair in encodeLocations(loc: loc, priorData: priorData, truths: truths, matches: matches) {
            for k in 0..<4 {
                let (loss, slope) = self.locLoss(pair.prediction[k] - pair.target[k])
                locLoss += loss
                locGradient[pair.offset + k] = locWeight * slope
            }
        }

        // Confidence: the rows the inner loss sees (all priors, or positives then negatives per
        // image), each with its target label.
        var rowsSeen: [(offset: Int, label: Int)] = []
        let agnostic = background + 1
        if mining == .none {
            // SOFTMAX's unmatched rows are background; LOGISTIC's have no entry set to 1.
            var labelOf = Array(repeating: softmax ? background : -1, count: images * priors)
            for image in 0..<images where truths[image] != nil {
                for (_, indices) in matches[image] {
                    for (j, g) in indices.enumerated() where g > -1 {
                        labelOf[image * priors + j] = mapObjectToAgnostic ? agnostic : truths[image]![g].label
                    }
                }
            }
            rowsSeen = labelOf.enumerated().map { ($0 * classes, $1) }
        } else {
            for image in 0..<images where truths[image] != nil {
                for (_, indices) in matches[image] {
                    for (j, g) in indices.enumerated() where g > -1 {
                        rowsSeen.append(((image * priors + j) * classes, mapObjectToAgnostic ? agnostic : truths[image]![g].label))
                    }
                }
                for j in negatives[image] { rowsSeen.append(((image * priors + j) * classes, background)) }
            }
        }
        var confLoss: Float = 0
        for (offset, label) in rowsSeen {
            let row = conf + offset
            if softmax {
                let probability = softmaxRow(row)
                let truth = max(0, min(label, classes - 1))
                confLoss -= logf(max(probability[truth], .leastNormalMagnitude))
                for c in 0..<classes { confGradient[offset + c] = c == truth ? probability[c] - 1 : probability[c] }
            } else {
                // Targets start at background_label_id's value (the fork's caffe_set), the matched
                // label set to 1; a mined negative sets its background entry to 1.
                for c in 0..<classes {
                    var target = Float(background)
                    if c == label { target = 1 }
                    let sigmoid = 1 / (1 + expf(-row[c]))
                    confLoss -= logisticTerm(row[c], target: target)
                    confGradient[offset + c] = sigmoid - target
                }
            }
        }
        let normalizer = self.normalizer(matches: matched)
        var loss: Float = 0
        if countsLoc { loss += locWeight * locLoss / normalizer }
        if countsConf { loss += confLoss / normalizer }
        return (loss, normalizer)
    }
}

extension Lowering {
    /// MultiBoxLoss forward: checks the bottoms as the fork's `Reshape` does, then one host step
    /// runs `MultiBoxLossAlgorithm` into the top and three scratch buffers kept for backward
    /// ("loc gradient", "conf gradient", "normalizer").
    mutating func lowerMultiBoxLoss(_ node: Node) throws {
        let p = node.layer.multiboxLossParam
        let (loc, conf, prior, label) = (node.inputs[0], node.inputs[1], node.inputs[2], node.inputs[3])
        let priorDims = shape(prior), labelDims = shape(label)
        guard priorDims.count >= 3, priorDims[2] % 4 == 0, count(prior) == 2 * priorDims[2] else {
            throw Diagnostic("MultiBoxLoss's priors (bottom 2) should be 1×2×(4·priors) as PriorBox makes them, got \(priorDims)",
                             at: node.location, layer: node.name, hint: "concatenate the PriorBox tops along axis 2")
        }
        guard labelDims.count == 4, labelDims[3] == 8 else {
            throw Diagnostic("MultiBoxLoss's ground truth (bottom 3) should be 1×1×G×8 rows [item, label, instance, xmin, ymin, xmax, ymax, difficult], got \(labelDims)",
                             at: node.location, layer: node.name, hint: "feed the label top of an AnnotatedData layer")
        }
        let images = num(loc), priors = priorDims[2] / 4
        let classes = Int(p.numClasses), locClasses = p.shareLocation ? 1 : classes
        guard num(conf) == images else {
            throw Diagnostic("loc has \(images) images but conf has \(num(conf))", at: node.location, layer: node.name)
        }
        guard count(loc) == images * priors * locClasses * 4 else {
            throw Diagnostic("loc has \(count(loc) / max(1, images)) values per image; \(priors) priors × \(locClasses) location class\(locClasses == 1 ? "" : "es") × 4 need \(priors * locClasses * 4)",
                             at: node.location, layer: node.name, hint: "Number of priors must match number of location predictions (check the heads' num_output and PriorBox's aspect ratios)")
        }
        guard count(conf) == images * priors * classes else {
            throw Diagnostic("conf has \(count(conf) / max(1, images)) values per image; \(priors) priors × \(classes) classes need \(priors * classes)",
                             at: node.location, layer: node.name, hint: "Number of priors must match number of confidence predictions")
        }
        let algorithm: MultiBoxLossAlgorithm
        do {
            algorithm = try MultiBoxLossAlgorithm(node.layer, images: images, priors: priors)
        } catch var diagnostic as Diagnostic {
            diagnostic.location = node.location
            throw diagnostic.inLayer(node.name)
        }
        let rows = labelDims[2]
        let locGradient = scratch(node, "loc gradient", count: max(1, count(loc)))
        let confGradient = scratch(node, "conf gradient", count: max(1, count(conf)))
        let normalizer = scratch(node, "normalizer", count: 1)
        let operands = [loc, conf, prior, label, node.outputs[0]].map { Operand(buffer($0)) }
            + [Operand(locGradient), Operand(confGradient), Operand(normalizer)]
        program.steps.append(Step(label: node.name, .host(HostStep(operands: operands) { pointers in
            let result = algorithm.evaluate(loc: pointers[0], conf: pointers[1], priors: pointers[2], labels: pointers[3], groundTruth: rows,
                                            locGradient: pointers[5], confGradient: pointers[6])
            pointers[4][0] = result.loss
            pointers[7][0] = result.normalizer
            return true
        })))
    }
}
