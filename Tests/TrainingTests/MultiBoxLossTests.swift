import CaffeFormat
import Codegen
import Foundation
import Graph
import NumPy
import Solvers
import Testing

/// SSD's MultiBoxLoss (issue 14): the loss and its loc/conf gradients against a NumPy reference
/// written from the fork's C++ (Tests/references/multibox_loss.py) over matching, encoding, mining,
/// both loss types and every normalization; central differences of the compiled loss; and a tiny
/// SSD-shaped net that fine-tunes (its first loss equal to the reference on the net's own heads).
@Suite("MultiBoxLoss forward, backward and SSD fine-tuning")
struct MultiBoxLossTests {
    static func values(_ count: Int, seed: UInt64, scale: Float = 2) -> [Float] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return (Float(state >> 40) / Float(1 << 24) * 2 - 1) * scale
        }
    }

    /// 24 priors: a 3×2 grid of cells, 4 boxes each (some crossing the image border), with
    /// SSD's variances; as PriorBox lays them out (1×2×96).
    static let priors: [Float] = {
        var boxes: [Float] = [], variances: [Float] = []
        for y in 0..<2 {
            for x in 0..<3 {
                let cx = (Float(x) + 0.5) / 3, cy = (Float(y) + 0.5) / 2
                for (w, h) in [(Float(0.3), Float(0.3)), (0.45, 0.45), (0.42, 0.21), (0.21, 0.42)] {
                    boxes += [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
                    variances += [0.1, 0.1, 0.2, 0.2]
                }
            }
        }
        return boxes + variances
    }()

    /// Ground truth rows `[item, label, instance, xmin, ymin, xmax, ymax, difficult]`: image 0 has
    /// two boxes and a difficult one; image 1 has none (`bothImages`: one), then a padding row.
    static func labels(bothImages: Bool) -> [Float] {
        var rows: [[Float]] = [[0, 1, 0, 0.05, 0.1, 0.4, 0.5, 0], [0, 2, 1, 0.5, 0.45, 0.95, 0.95, 0], [0, 1, 2, 0.6, 0.05, 0.9, 0.4, 1]]
        rows.append(bothImages ? [1, 2, 0, 0.2, 0.2, 0.7, 0.8, 0] : [-1, 0, 0, 0, 0, 0, 0, 0])
        return rows.flatMap { $0 }
    }

    /// A MultiBoxLoss configuration: `multibox_loss_param` fields, the loss normalization, and
    /// whether locations are shared.
    struct Configuration: CustomTestStringConvertible, Sendable {
        var name: String
        var fields: [(String, String)]
        var normalization: String
        var testDescription: String { name }
        var classes: Int { 3 }
        var locClasses: Int { fields.contains { $0 == ("share_location", "false") } ? classes : 1 }

        var prototxt: String {
            "loss_param { normalization: \(normalization) } multibox_loss_param { num_classes: \(classes) "
                + fields.map { "\($0.0): \($0.1)" }.joined(separator: " ") + " }"
        }

        /// The same settings for the reference script.
        var json: String {
            var entries = ["\"num_classes\": \(classes)", "\"normalization\": \"\(normalization)\""]
            for (key, value) in fields {
                let literal = value == "true" || value == "false" || Double(value) != nil ? value : "\"\(value)\""
                entries.append("\"\(key)\": \(literal)")
            }
            return "{" + entries.joined(separator: ", ") + "}"
        }
    }

    static let configurations: [Configuration] = [
        Configuration(name: "SSD's: SMOOTH_L1, SOFTMAX, PER_PREDICTION, CENTER_SIZE, MAX_NEGATIVE, VALID",
                      fields: [("loc_loss_type", "SMOOTH_L1"), ("conf_loss_type", "SOFTMAX"), ("match_type", "PER_PREDICTION"),
                               ("overlap_threshold", "0.5"), ("code_type", "CENTER_SIZE"), ("mining_type", "MAX_NEGATIVE"),
                               ("neg_pos_ratio", "3"), ("neg_overlap", "0.5")], normalization: "VALID"),
        Configuration(name: "L2, LOGISTIC, BIPARTITE, CORNER, no mining, FULL, difficult skipped, loc_weight 2",
                      fields: [("loc_loss_type", "L2"), ("conf_loss_type", "LOGISTIC"), ("match_type", "BIPARTITE"), ("code_type", "CORNER"),
                               ("mining_type", "NONE"), ("use_difficult_gt", "false"), ("loc_weight", "2")], normalization: "FULL"),
        Configuration(name: "CORNER_SIZE with variance in target, HARD_EXAMPLE, BATCH_SIZE, cross-boundary priors ignored",
                      fields: [("code_type", "CORNER_SIZE"), ("encode_variance_in_target", "true"), ("mining_type", "HARD_EXAMPLE"),
                               ("sample_size", "7"), ("ignore_cross_boundary_bbox", "true"), ("overlap_threshold", "0.3")],
                      normalization: "BATCH_SIZE"),
        Configuration(name: "per-class locations matched on decoded predictions, no mining, NONE",
                      fields: [("share_location", "false"), ("use_prior_for_matching", "false"), ("mining_type", "NONE"),
                               ("code_type", "CENTER_SIZE"), ("overlap_threshold", "0.2")], normalization: "NONE"),
        Configuration(name: "LOGISTIC with MAX_NEGATIVE mining, neg_pos_ratio 2, VALID",
                      fields: [("conf_loss_type", "LOGISTIC"), ("mining_type", "MAX_NEGATIVE"), ("neg_pos_ratio", "2"),
                               ("code_type", "CENTER_SIZE"), ("overlap_threshold", "0.4")], normalization: "VALID"),
    ]

    /// The loss layer alone on Input blobs, compiled for training (loc and conf take diffs).
    static func lossNet(_ configuration: Configuration) throws -> TrainingNet {
        let locCount = 24 * configuration.locClasses * 4, confCount = 24 * configuration.classes
        let text = """
            force_backward: true
            layer { name: "loc" type: "Input" top: "loc" input_param { shape { dim: 2 dim: \(locCount) } } }
            layer { name: "conf" type: "Input" top: "conf" input_param { shape { dim: 2 dim: \(confCount) } } }
            layer { name: "prior" type: "Input" top: "prior" input_param { shape { dim: 1 dim: 2 dim: 96 } } }
            layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 8 } } }
            layer { name: "mbox_loss" type: "MultiBoxLoss" bottom: "loc" bottom: "conf" bottom: "prior" bottom: "label" top: "mbox_loss"
                    \(configuration.prototxt) }
            """
        let graph = try GraphBuilder(phase: .train, insertsSplits: true).build(try CaffeFiles.parseNet(text: text))
        return try sharedTrainingCompiler.compileTraining(graph: graph, parameters: [:], keepingAllBlobs: true)
    }

    static func feeds(_ configuration: Configuration, bothImages: Bool) -> [String: NDArray] {
        let locCount = 24 * configuration.locClasses * 4, confCount = 24 * configuration.classes
        return ["loc": NDArray(shape: [2, locCount], data: values(2 * locCount, seed: 5, scale: 1.5)),
                "conf": NDArray(shape: [2, confCount], data: values(2 * confCount, seed: 6)),
                "prior": NDArray(shape: [1, 2, 96], data: priors),
                "label": NDArray(shape: [1, 1, 4, 8], data: labels(bothImages: bothImages))]
    }

    /// What the reference script computes for `inputs` (loc, conf, prior, label) under `configuration`.
    struct Reference: Decodable {
        var loss: Double
        var normalizer: Double
        var matches: Int
        var negatives: Int
        var loc_grad: [Double]
        var conf_grad: [Double]
    }

    static func reference(_ inputs: [String: NDArray], _ json: String) throws -> Reference {
        return try NumPyReference.run("multibox_loss.py", arrays: ["loc", "conf", "prior", "label"].map { ($0, inputs[$0]!) }, config: json)
    }

    static func close(_ a: [Float], _ b: [Double], tolerance: Double = 1e-5) -> (ok: Bool, worst: Double) {
        guard a.count == b.count else { return (false, .infinity) }
        var worst = 0.0
        for (x, y) in zip(a, b) { worst = max(worst, abs(Double(x) - y) / max(1, abs(y))) }
        return (worst <= tolerance, worst)
    }

    @Test("loss and loc/conf gradients equal the NumPy reference (batch 2, a difficult box, an image without boxes)",
          arguments: configurations, [false, true])
    func reference(_ configuration: Configuration, bothImages: Bool) throws {
        let net = try Self.lossNet(configuration)
        let inputs = Self.feeds(configuration, bothImages: bothImages)
        let (loss, _) = try net.run(inputs, backward: true)
        let expected = try Self.reference(inputs, configuration.json)
        print("multibox \(configuration.name) both=\(bothImages): loss \(loss) reference \(expected.loss) matches \(expected.matches) negatives \(expected.negatives)")
        #expect(expected.matches > 0, "the case should match some priors")
        #expect(abs(Double(loss) - expected.loss) <= 1e-5 * max(1, abs(expected.loss)), "loss \(loss) vs \(expected.loss)")
        let loc = try #require(net.blobDiff("loc")), conf = try #require(net.blobDiff("conf"))
        let locCheck = Self.close(loc.data, expected.loc_grad), confCheck = Self.close(conf.data, expected.conf_grad)
        #expect(locCheck.ok, "loc gradient differs by \(locCheck.worst)")
        #expect(confCheck.ok, "conf gradient differs by \(confCheck.worst)")
        #expect(loc.data.contains { $0 != 0 } && conf.data.contains { $0 != 0 }, "zero gradients check nothing")
    }

    @Test("loss_weight scales the loss and both gradients; propagate_down: false on loc drops its term", arguments: [Float(0.5), 3])
    func lossWeight(_ weight: Float) throws {
        let configuration = Self.configurations[0]
        let inputs = Self.feeds(configuration, bothImages: true)
        let plain = try Self.lossNet(configuration)
        let (base, _) = try plain.run(inputs, backward: true)
        let text = """
            layer { name: "loc" type: "Input" top: "loc" input_param { shape { dim: 2 dim: 96 } } }
            layer { name: "conf" type: "Input" top: "conf" input_param { shape { dim: 2 dim: 72 } } }
            layer { name: "prior" type: "Input" top: "prior" input_param { shape { dim: 1 dim: 2 dim: 96 } } }
            layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 8 } } }
            layer { name: "scale" type: "Scale" bottom: "conf" top: "conf_scaled" param { lr_mult: 1 } scale_param { bias_term: false } }
            layer { name: "mbox_loss" type: "MultiBoxLoss" bottom: "loc" bottom: "conf_scaled" bottom: "prior" bottom: "label" top: "mbox_loss"
                    loss_weight: \(weight) propagate_down: false propagate_down: true propagate_down: false propagate_down: false
                    \(configuration.prototxt) }
            """
        let graph = try GraphBuilder(phase: .train, insertsSplits: true).build(try CaffeFiles.parseNet(text: text))
        let net = try sharedTrainingCompiler.compileTraining(graph: graph, parameters: ["scale": [NDArray(shape: [72], repeating: 1)]], keepingAllBlobs: true)
        let (loss, _) = try net.run(inputs, backward: true)
        var json = configuration.json
        json.removeLast()
        let expected = try Self.reference(inputs, json + ", \"propagate_down\": [false, true, false, false]}")
        #expect(abs(Double(loss) - Double(weight) * expected.loss) <= 1e-5 * max(1, abs(expected.loss)), "loss \(loss) vs \(weight) × \(expected.loss)")
        #expect(expected.loss < Double(base), "without the loc term the loss is smaller")
        let conf = try #require(net.blobDiff("conf_scaled"))
        let check = Self.close(conf.data, expected.conf_grad.map { $0 * Double(weight) })
        #expect(check.ok, "conf gradient differs by \(check.worst)")
        #expect(net.blobDiff("loc") == nil || net.blobDiff("loc")!.data.allSatisfy { $0 == 0 }, "no diff into loc")
    }

    @Test("directional central differences of the compiled loss equal the loc and conf gradients", arguments: configurations)
    func finiteDifferences(_ configuration: Configuration) throws {
        let net = try Self.lossNet(configuration)
        let inputs = Self.feeds(configuration, bothImages: true)
        _ = try net.run(inputs, backward: true)
        for (blob, seed) in [("loc", UInt64(31)), ("conf", 32)] {
            let gradient = try #require(net.blobDiff(blob)).data
            let x = inputs[blob]!
            let direction = Self.values(x.count, seed: seed, scale: 1)
            let eps: Float = 1e-3
            func loss(_ sign: Float) throws -> Double {
                var moved = inputs
                moved[blob] = NDArray(shape: x.shape, data: zip(x.data, direction).map { $0 + sign * eps * $1 })
                return Double(try net.run(moved, backward: false).loss)
            }
            let numeric = (try loss(1) - loss(-1)) / Double(2 * eps)
            // With encode_variance_in_target the fork divides predictions and targets by the
            // variances but passes the gradient w.r.t. the divided prediction back unchanged: the
            // loss's true derivative is that gradient divided by the variance (0.1, 0.1, 0.2, 0.2).
            let divided = blob == "loc" && configuration.fields.contains { $0 == ("encode_variance_in_target", "true") }
            let variances: [Double] = [0.1, 0.1, 0.2, 0.2].map { Double(Float($0)) }
            let analytic = zip(gradient, direction).enumerated().reduce(0.0) { total, entry in
                total + Double(entry.element.0) * Double(entry.element.1) / (divided ? variances[entry.offset % 4] : 1)
            }
            print("multibox finite differences \(configuration.name) \(blob): analytic \(analytic) numeric \(numeric)")
            #expect(abs(analytic) > 1e-2, "a zero gradient checks nothing")
            #expect(abs(analytic - numeric) <= 2e-2 * max(1, abs(analytic)), "\(blob): analytic \(analytic), numeric \(numeric)")
        }
    }

    @Test("a background-labelled ground truth (the fork aborts) makes the loss NaN, reported at this layer")
    func backgroundLabel() throws {
        let configuration = Self.configurations[0]
        let net = try Self.lossNet(configuration)
        var inputs = Self.feeds(configuration, bothImages: true)
        var rows = inputs["label"]!.data
        rows[8 + 1] = 0  // image 0's second box labelled background_label_id 0
        inputs["label"] = NDArray(shape: [1, 1, 4, 8], data: rows)
        let (loss, _) = try net.run(inputs, backward: false)
        #expect(loss.isNaN)
        #expect(net.firstNonFinite()?.layer == "mbox_loss")
    }

    @Test("a diff into the priors or labels is refused with the propagate_down hint")
    func refusesPriorDiff() throws {
        let text = """
            layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
            layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 1 dim: 1 dim: 1 dim: 8 } } }
            layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 10 kernel_size: 3 pad: 1 } }
            layer { name: "flat" type: "Flatten" bottom: "conv" top: "flat" }
            layer { name: "slice" type: "Slice" bottom: "flat" top: "loc" top: "conf" top: "prior" slice_param { axis: 1 slice_point: 64 slice_point: 96 } }
            layer { name: "prior_reshape" type: "Reshape" bottom: "prior" top: "prior_r" reshape_param { shape { dim: 1 dim: 2 dim: -1 } } }
            layer { name: "mbox_loss" type: "MultiBoxLoss" bottom: "loc" bottom: "conf" bottom: "prior_r" bottom: "label" top: "mbox_loss"
                    multibox_loss_param { num_classes: 2 } }
            """
        let graph = try GraphBuilder(phase: .train, insertsSplits: true).build(try CaffeFiles.parseNet(text: text))
        do {
            _ = try sharedTrainingCompiler.compileTraining(graph: graph, parameters: ["conv": [NDArray(shape: [10, 3, 3, 3], repeating: 0.1), NDArray(shape: [10], repeating: 0)]])
            Issue.record("expected a refusal")
        } catch let error as Diagnostic {
            #expect(error.layer == "mbox_loss" && error.message.contains("prior") && (error.hint ?? "").contains("propagate_down"), "\(error)")
        }
    }
}

/// A tiny SSD-shaped train net: three strided convolutions, loc/conf heads on two feature maps
/// (8×8 and 4×4), Permute/Flatten/Concat as SSD lays them out, PriorBox on both, MultiBoxLoss.
@Suite("SSD fine-tuning")
struct SSDFineTuneTests {
    static let classes = 3

    static func head(_ feature: String, _ minSize: Int, _ maxSize: Int) -> String {
        let priors = 4  // min, sqrt(min·max), aspect ratios 2 and 1/2
        return """
            layer { name: "\(feature)_loc" type: "Convolution" bottom: "\(feature)" top: "\(feature)_loc"
                    convolution_param { num_output: \(priors * 4) kernel_size: 3 pad: 1 } }
            layer { name: "\(feature)_loc_perm" type: "Permute" bottom: "\(feature)_loc" top: "\(feature)_loc_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
            layer { name: "\(feature)_loc_flat" type: "Flatten" bottom: "\(feature)_loc_perm" top: "\(feature)_loc_flat" flatten_param { axis: 1 } }
            layer { name: "\(feature)_conf" type: "Convolution" bottom: "\(feature)" top: "\(feature)_conf"
                    convolution_param { num_output: \(priors * classes) kernel_size: 3 pad: 1 } }
            layer { name: "\(feature)_conf_perm" type: "Permute" bottom: "\(feature)_conf" top: "\(feature)_conf_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
            layer { name: "\(feature)_conf_flat" type: "Flatten" bottom: "\(feature)_conf_perm" top: "\(feature)_conf_flat" flatten_param { axis: 1 } }
            layer { name: "\(feature)_prior" type: "PriorBox" bottom: "\(feature)" bottom: "data" top: "\(feature)_prior"
                    prior_box_param { min_size: \(minSize) max_size: \(maxSize) aspect_ratio: 2 flip: true clip: false
                                      variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 offset: 0.5 } }
            """
    }

    static let net = """
        name: "tiny_ssd"
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 32 dim: 32 } } }
        layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 8 } } }
        layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 } }
        layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
        layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 } }
        layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
        layer { name: "conv3" type: "Convolution" bottom: "conv2" top: "conv3" convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 } }
        layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
        \(head("conv2", 8, 16))
        \(head("conv3", 16, 28))
        layer { name: "mbox_loc" type: "Concat" bottom: "conv2_loc_flat" bottom: "conv3_loc_flat" top: "mbox_loc" concat_param { axis: 1 } }
        layer { name: "mbox_conf" type: "Concat" bottom: "conv2_conf_flat" bottom: "conv3_conf_flat" top: "mbox_conf" concat_param { axis: 1 } }
        layer { name: "mbox_priorbox" type: "Concat" bottom: "conv2_prior" bottom: "conv3_prior" top: "mbox_priorbox" concat_param { axis: 2 } }
        layer { name: "mbox_loss" type: "MultiBoxLoss" bottom: "mbox_loc" bottom: "mbox_conf" bottom: "mbox_priorbox" bottom: "label" top: "mbox_loss"
                include { phase: TRAIN } propagate_down: true propagate_down: true propagate_down: false propagate_down: false
                loss_param { normalization: VALID }
                multibox_loss_param { loc_loss_type: SMOOTH_L1 conf_loss_type: SOFTMAX loc_weight: 1 num_classes: \(classes) share_location: true
                  match_type: PER_PREDICTION overlap_threshold: 0.5 use_prior_for_matching: true background_label_id: 0
                  use_difficult_gt: true neg_pos_ratio: 3 neg_overlap: 0.5 code_type: CENTER_SIZE mining_type: MAX_NEGATIVE } }
        """

    /// Gaussian-ish weights (sum of uniforms), std about 0.1·√(2/fan-in)·3; zero biases.
    static func parameters(_ graph: Graph) -> [String: [NDArray]] {
        var result: [String: [NDArray]] = [:]
        for (k, node) in graph.nodes.enumerated() where !node.parameters.isEmpty {
            result[node.name] = node.parameters.enumerated().map { index, info in
                let dims = info.shape.dims, count = dims.reduce(1, *)
                guard index == 0 else { return NDArray(shape: dims, repeating: 0) }
                let fanIn = Float(count / max(1, dims[0]))
                let scale = (2 / fanIn).squareRoot()
                let uniform = MultiBoxLossTests.values(count * 3, seed: UInt64(100 + k), scale: 1)
                return NDArray(shape: dims, data: (0..<count).map { (uniform[3 * $0] + uniform[3 * $0 + 1] + uniform[3 * $0 + 2]) * scale })
            }
        }
        return result
    }

    @Test("a tiny SSD trains: iteration 0's loss equals the NumPy reference on the net's own heads, and 20 SGD steps lower it clearly")
    func fineTunes() throws {
        let graph = try GraphBuilder(phase: .train, insertsSplits: true).build(try CaffeFiles.parseNet(text: Self.net))
        let net = try sharedTrainingCompiler.compileTraining(graph: graph, parameters: Self.parameters(graph), keepingAllBlobs: true)
        // Two images: bright rectangles where the boxes are, on noise; image 1's second row is padding.
        var pixels = MultiBoxLossTests.values(2 * 3 * 32 * 32, seed: 77, scale: 0.2)
        let boxes: [(image: Int, label: Int, box: [Float])] = [(0, 1, [0.1, 0.15, 0.45, 0.5]), (0, 2, [0.55, 0.5, 0.95, 0.9]),
                                                              (1, 1, [0.3, 0.25, 0.8, 0.75])]
        for (image, label, box) in boxes {
            for y in Int(box[1] * 32)..<Int(box[3] * 32) {
                for x in Int(box[0] * 32)..<Int(box[2] * 32) {
                    pixels[((image * 3 + label) * 32 + y) * 32 + x] += 1
                }
            }
        }
        var rows: [Float] = []
        for (k, entry) in boxes.enumerated() {
            let head: [Float] = [Float(entry.image), Float(entry.label), Float(k)]
            rows += head + entry.box + [0]
        }
        rows += [-1, 0, 0, 0, 0, 0, 0, 0] as [Float]
        let feeds = ["data": NDArray(shape: [2, 3, 32, 32], data: pixels), "label": NDArray(shape: [1, 1, 4, 8], data: rows)]

        let (first, _) = try net.run(feeds, backward: false)
        let loc = try #require(net.blob("mbox_loc")), conf = try #require(net.blob("mbox_conf"))
        let prior = try #require(net.blob("mbox_priorbox"))
        let heads: [String: NDArray] = ["loc": loc, "conf": conf, "prior": prior, "label": feeds["label"]!]
        #expect(heads["prior"]!.shape == [1, 2, 4 * (8 * 8 * 4 + 4 * 4 * 4)])
        let json = "{\"num_classes\": \(Self.classes), \"normalization\": \"VALID\", \"code_type\": \"CENTER_SIZE\", \"mining_type\": \"MAX_NEGATIVE\"}"
        let expected = try MultiBoxLossTests.reference(heads, json)
        #expect(expected.matches > 0)
        #expect(abs(Double(first) - expected.loss) <= 1e-5 * max(1, expected.loss), "iteration 0: \(first) vs reference \(expected.loss)")

        var hyper = SolverHyperparameters(schedule: LearningRateSchedule(baseRate: 0.02, policy: .fixed))
        hyper.momentum = 0.9
        let solver = Solver(hyperparameters: hyper, parameterCounts: net.learnableParameters.map(\.data.count))
        var losses: [Float] = []
        for _ in 0..<20 {
            net.zeroParameterDiffs()
            losses.append(try net.run(feeds, backward: true).loss)
            _ = solver.applyUpdate(net.learnableParameters)
        }
        print("tiny SSD losses: \(losses.map { String(format: "%.4f", $0) }.joined(separator: " "))")
        #expect(losses[0] == first)
        #expect(losses.allSatisfy { $0.isFinite })
        #expect(losses.suffix(3).max()! < 0.6 * losses[0], "the loss should go down clearly: \(losses)")
    }
}
