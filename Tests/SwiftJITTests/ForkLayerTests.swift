import Foundation
import Testing
import SwiftJIT

/// The forks' fields and the layers `run` gained for issue 14: pooling's `ceil_mode`, Dropout's
/// `scale_train`, pooling over every spatial axis of N-D blobs, loss layers and Accuracy forward
/// in `run`, and the memory check before anything is allocated.
@Suite("fork fields, N-D pooling, losses in run, memory check")
struct ForkLayerTests {
    // MARK: ceil_mode

    @Test("ceil_mode: false rounds pooling's output down, ceil_mode: true (the default) up, like round_mode")
    func ceilModeShapes() throws {
        func outputShape(_ fields: String) throws -> [Int] {
            let graph = try GraphBuilder().build(try CaffeFiles.parseNet(text: """
                layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 dim: 6 dim: 7 } } }
                layer { name: "pool" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: MAX kernel_size: 3 stride: 2 \(fields) } }
                """))
            return graph.value(named: "y")!.shape.dims
        }
        #expect(try outputShape("") == [1, 2, 3, 3])
        #expect(try outputShape("ceil_mode: true") == [1, 2, 3, 3])
        #expect(try outputShape("ceil_mode: false") == [1, 2, 2, 3])
        #expect(try outputShape("round_mode: FLOOR") == [1, 2, 2, 3])
        #expect(try outputShape("ceil_mode: false round_mode: FLOOR") == [1, 2, 2, 3])
        do {
            _ = try outputShape("ceil_mode: false round_mode: CEIL")
            Issue.record("contradicting ceil_mode and round_mode must be refused")
        } catch {
            #expect("\(error)".contains("ceil_mode: false and round_mode: CEIL, which disagree"), "\(error)")
        }
    }

    // MARK: Dropout scale_train

    @Test("Dropout with scale_train: false multiplies by 1 − ratio at TEST (py-faster-rcnn's fork); the default copies")
    func dropoutScaleTrain() throws {
        let x = ForkLayerFixtures.values(24)
        for (field, factor) in [("", Float(1)), ("scale_train: true", 1), ("scale_train: false", Float(1 / Double(Float(1 / (1 - Double(Float(0.3)))))))] {
            let model = try ForkLayerFixtures.model("""
                layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 12 } } }
                layer { name: "drop" type: "Dropout" bottom: "x" top: "y" dropout_param { dropout_ratio: 0.3 \(field) } }
                """)
            for blobs in [BlobSelection.outputs, .all] {
                let y = try #require(try model.forward(["x": NDArray(shape: [2, 12], data: x)], blobs: blobs)["y"])
                #expect(y.data == x.map { $0 * factor }, "\(field) \(blobs)")
            }
        }
    }

    // MARK: N-D pooling

    /// A 5-D blob pooled by a 2×2×2 window with stride 2 over D, H and W: NumPy's
    /// `x.reshape(N, C, D/2, 2, H/2, 2, W/2, 2).max/mean(axis=(3, 5, 7))`.
    static func blockReduce(_ x: [Float], _ dims: [Int], mean: Bool) -> [Float] {
        let (n, c, d, h, w) = (dims[0], dims[1], dims[2], dims[3], dims[4])
        var out: [Float] = []
        for plane in 0..<(n * c) {
            for z in 0..<(d / 2) { for y in 0..<(h / 2) { for v in 0..<(w / 2) {
                var block: [Float] = []
                for dz in 0..<2 { for dy in 0..<2 { for dx in 0..<2 {
                    block.append(x[plane * d * h * w + (2 * z + dz) * h * w + (2 * y + dy) * w + 2 * v + dx])
                } } }
                out.append(mean ? block.reduce(0, +) / 8 : block.max()!)
            } } }
        }
        return out
    }

    @Test("5-D MAX and AVE pooling (1×8×4×16×16 → 1×8×2×8×8, the seed's case) equal NumPy's block maximum and mean",
          arguments: ["MAX", "AVE"])
    func pooling5D(_ method: String) throws {
        let dims = [1, 8, 4, 16, 16]
        let model = try ForkLayerFixtures.model("""
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 8 dim: 4 dim: 16 dim: 16 } } }
            layer { name: "pool" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: \(method) kernel_size: 2 stride: 2 } }
            """)
        let x = ForkLayerFixtures.values(dims.reduce(1, *))
        let y = try #require(try model.forward(["x": NDArray(shape: dims, data: x)])["y"])
        #expect(y.shape == [1, 8, 2, 8, 8])
        let expected = Self.blockReduce(x, dims, mean: method == "AVE")
        let worst = zip(y.data, expected).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worst <= (method == "MAX" ? 0 : 1e-6), "max |Δ| \(worst)")
    }

    /// Caffe's pooling rules on one axis of an N×C×L blob, written from `pooling_layer.cpp`: window
    /// `[o·s − p, o·s − p + k)` clipped to the blob for the values and to `[−p, L + p)` for AVE's divisor.
    static func pool1D(_ x: [Float], planes: Int, length: Int, kernel k: Int, stride s: Int, pad p: Int, max isMax: Bool) -> [Float] {
        var out = Int((Double(length + 2 * p - k) / Double(s)).rounded(.up)) + 1
        if p > 0, (out - 1) * s >= length + p { out -= 1 }
        var result: [Float] = []
        for plane in 0..<planes {
            for o in 0..<out {
                let start = o * s - p, end = min(start + k, length + p)
                let lo = max(start, 0), hi = min(end, length)
                let window = (lo..<hi).map { x[plane * length + $0] }
                result.append(isMax ? window.reduce(-Float.greatestFiniteMagnitude) { Swift.max($0, $1) }
                              : window.reduce(0, +) / Float(end - start))
            }
        }
        return result
    }

    @Test("3-D (N×C×L) pooling with pad and overlapping windows follows Caffe's per-axis rules, with the mask top",
          arguments: ["MAX", "AVE"])
    func pooling3D(_ method: String) throws {
        let model = try ForkLayerFixtures.model("""
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 10 } } }
            layer { name: "pool" type: "Pooling" bottom: "x" top: "y" \(method == "MAX" ? "top: \"mask\"" : "")
                    pooling_param { pool: \(method) kernel_size: 3 stride: 2 pad: 1 } }
            """)
        let x = ForkLayerFixtures.values(60, seed: 5)
        let outputs = try model.forward(["x": NDArray(shape: [2, 3, 10], data: x)])
        let y = try #require(outputs["y"])
        let expected = Self.pool1D(x, planes: 6, length: 10, kernel: 3, stride: 2, pad: 1, max: method == "MAX")
        #expect(y.shape == [2, 3, 6])
        let worst = zip(y.data, expected).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worst <= 1e-6, "max |Δ| \(worst)")
        if method == "MAX" {
            let mask = try #require(outputs["mask"])
            for (i, index) in mask.data.enumerated() {
                #expect(x[(i / 6) * 10 + Int(index)] == y.data[i])
            }
        }
    }

    // MARK: Upsample (SegNet)

    @Test("Upsample scatters MAX pooling's values back to the positions its mask names (SegNet), with upsample_h/w, scale and pad_out sizes")
    func upsample() throws {
        let model = try ForkLayerFixtures.model("""
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 9 dim: 10 } } }
            layer { name: "pool" type: "Pooling" bottom: "x" top: "pooled" top: "mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
            layer { name: "up" type: "Upsample" bottom: "pooled" bottom: "mask" top: "up" upsample_param { upsample_h: 9 upsample_w: 10 } }
            layer { name: "up_scale" type: "Upsample" bottom: "pooled" bottom: "mask" top: "up_scale" upsample_param { scale: 2 pad_out_h: true } }
            """)
        let x = ForkLayerFixtures.values(2 * 3 * 9 * 10, seed: 8)
        let blobs = try model.forward(["x": NDArray(shape: [2, 3, 9, 10], data: x)], blobs: .all)
        let pooled = try #require(blobs["pooled"]), mask = try #require(blobs["mask"])
        #expect(pooled.shape == [2, 3, 5, 5])
        for (name, width) in [("up", 10)] {
            let up = try #require(blobs[name])
            #expect(up.shape == [2, 3, 9, width])
            var expected = [Float](repeating: 0, count: 2 * 3 * 9 * width)
            for plane in 0..<6 { for i in 0..<25 { expected[plane * 9 * width + Int(mask.data[plane * 25 + i])] = pooled.data[plane * 25 + i] } }
            #expect(up.data == expected)
            // Every pooled maximum lands where it came from.
            #expect(zip(up.data, x).allSatisfy { $0.0 == 0 || $0.0 == $0.1 })
        }
        #expect(blobs["up_scale"]?.shape == [2, 3, 9, 10])
        #expect(blobs["up_scale"]?.data == blobs["up"]?.data)
        do {
            _ = try ForkLayerFixtures.model("""
                layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
                layer { name: "m" type: "Input" top: "m" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 3 } } }
                layer { name: "up" type: "Upsample" bottom: "x" bottom: "m" top: "up" upsample_param { scale: 2 } }
                """)
            Issue.record("values and mask of different shapes must be refused")
        } catch {
            #expect("\(error)".contains("must have the same shape"), "\(error)")
        }
    }

    // MARK: Loss layers in run

    static let lossNet = """
        layer { name: "scores" type: "Input" top: "scores" input_param { shape { dim: 4 dim: 5 dim: 3 } } }
        layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 4 dim: 3 } } }
        layer { name: "target" type: "Input" top: "target" input_param { shape { dim: 4 dim: 5 dim: 3 } } }
        layer { name: "sm_valid" type: "SoftmaxWithLoss" bottom: "scores" bottom: "label" top: "sm_valid"
                loss_param { ignore_label: 2 normalization: VALID } }
        layer { name: "sm_full" type: "SoftmaxWithLoss" bottom: "scores" bottom: "label" top: "sm_full"
                loss_param { ignore_label: 2 normalization: FULL } }
        layer { name: "sm_batch" type: "SoftmaxWithLoss" bottom: "scores" bottom: "label" top: "sm_batch"
                loss_param { normalization: BATCH_SIZE } }
        layer { name: "sm_none" type: "SoftmaxWithLoss" bottom: "scores" bottom: "label" top: "sm_none"
                loss_weight: 0.5 loss_param { normalization: NONE } }
        layer { name: "sce" type: "SigmoidCrossEntropyLoss" bottom: "scores" bottom: "target" top: "sce" }
        layer { name: "euclid" type: "EuclideanLoss" bottom: "scores" bottom: "target" top: "euclid" }
        layer { name: "accuracy" type: "Accuracy" bottom: "scores" bottom: "label" top: "accuracy" accuracy_param { ignore_label: 2 } }
        """

    @Test("loss layers and Accuracy run forward in `run`/`Net`, equal to `swiftjit test`'s values and to Caffe's formulas")
    func lossesInRun() throws {
        let scores = NDArray(shape: [4, 5, 3], data: ForkLayerFixtures.values(60, seed: 3))
        let labels: [Float] = [0, 1, 2, 3, 4, 2, 1, 1, 0, 2, 4, 3]
        let label = NDArray(shape: [4, 3], data: labels)
        let target = NDArray(shape: [4, 5, 3], data: ForkLayerFixtures.values(60, seed: 9).map { $0 > 0 ? 1 : 0 })
        let inputs = ["scores": scores, "label": label, "target": target]
        let outputs = try ForkLayerFixtures.model(Self.lossNet).forward(inputs)

        // `swiftjit test`: the training compiler on the TEST-phase graph.
        let graph = try GraphBuilder(phase: .test, insertsSplits: true).build(try CaffeFiles.parseNet(text: Self.lossNet))
        let trained = try Compiler().compileTraining(graph: graph, parameters: [:]).run(inputs, backward: false).outputs
        for name in ["sm_valid", "sm_full", "sm_batch", "sm_none", "sce", "euclid", "accuracy"] {
            let ours = try #require(outputs[name]?.data.first, "\(name) is missing from run's outputs")
            #expect(ours == trained[name]?.data.first, "\(name): run \(ours), test \(String(describing: trained[name]?.data))")
        }

        // Caffe's formulas, in Double.
        var logLoss = 0.0, counted = 0, allLog = 0.0, correct = 0
        for o in 0..<4 {
            for i in 0..<3 {
                let column = (0..<5).map { Double(scores.data[(o * 5 + $0) * 3 + i]) }
                let top = column.max()!
                let logSum = log(column.map { exp($0 - top) }.reduce(0, +)) + top
                let truth = Int(labels[o * 3 + i])
                allLog -= column[truth] - logSum
                guard truth != 2 else { continue }
                logLoss -= column[truth] - logSum
                counted += 1
                if column.filter({ $0 >= column[truth] }).count <= 1 { correct += 1 }
            }
        }
        func close(_ name: String, _ expected: Double) {
            let value = Double(outputs[name]?.data.first ?? .nan)
            #expect(abs(value - expected) <= 1e-5 * max(1, abs(expected)), "\(name): \(value) vs \(expected)")
        }
        close("sm_valid", logLoss / Double(counted))
        close("sm_full", logLoss / 12)
        close("sm_batch", allLog / 4)
        close("sm_none", allLog)  // the blob holds the loss; loss_weight only scales its gradient
        var sce = 0.0, squared = 0.0
        for (x, t) in zip(scores.data.map(Double.init), target.data.map(Double.init)) {
            sce -= x * (t - (x >= 0 ? 1 : 0)) - log(1 + exp(x - 2 * x * (x >= 0 ? 1 : 0)))
            squared += (x - t) * (x - t)
        }
        close("sce", sce / 4)
        close("euclid", squared / 4 / 2)
        close("accuracy", Double(correct) / Double(counted))
    }

    // MARK: Memory

    /// VGG16 with every pooling stride set to 1: the pools no longer shrink the map, and fc6
    /// becomes 4096 × (512·219·219) = 4096 × 24,556,032 — 402 GB of weights.
    static let stride1VGG16: String = {
        var lines = [#"name: "VGG16 stride-1 pools""#,
                     #"layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 224 dim: 224 } } }"#]
        var bottom = "data"
        for (block, (convs, width)) in [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)].enumerated() {
            for i in 1...convs {
                let name = "conv\(block + 1)_\(i)"
                lines.append(#"layer { name: "\#(name)" type: "Convolution" bottom: "\#(bottom)" top: "\#(name)" convolution_param { num_output: \#(width) kernel_size: 3 pad: 1 } }"#)
                lines.append(#"layer { name: "relu\#(block + 1)_\#(i)" type: "ReLU" bottom: "\#(name)" top: "\#(name)" }"#)
                bottom = name
            }
            lines.append(#"layer { name: "pool\#(block + 1)" type: "Pooling" bottom: "\#(bottom)" top: "pool\#(block + 1)" pooling_param { pool: MAX kernel_size: 2 stride: 1 } }"#)
            bottom = "pool\(block + 1)"
        }
        for (name, outputs) in [("fc6", 4096), ("fc7", 4096), ("fc8", 1000)] {
            lines.append(#"layer { name: "\#(name)" type: "InnerProduct" bottom: "\#(bottom)" top: "\#(name)" inner_product_param { num_output: \#(outputs) } }"#)
            bottom = name
        }
        lines.append(#"layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }"#)
        return lines.joined(separator: "\n")
    }()

    @Test("the stride-1 VGG16 is measured (402 GB of parameters, fc6 the largest) and refused in one line before anything is allocated")
    func memoryBudget() throws {
        let graph = try GraphBuilder().build(try CaffeFiles.parseNet(text: Self.stride1VGG16))
        let budget = MemoryBudget(graph)
        let fc6 = 4096 * 512 * 219 * 219
        let parameters = 14_714_688 + fc6 + 4096 + 4096 * 4096 + 4096 + 1000 * 4096 + 1000
        #expect(budget.parameterBytes == 4 * parameters)
        #expect(budget.largestLayer?.name == "fc6" && budget.largestLayer?.bytes == 4 * (fc6 + 4096))
        // Peak activations: conv4_2 reads conv4_1 (its ReLU ran in place) and writes conv4_2,
        // two 512×221×221 maps; everything before has been released.
        #expect(budget.activationBytes == 4 * 2 * 512 * 221 * 221)
        do {
            try budget.check(available: 16_000_000_000)
            Issue.record("402 GB cannot fit in 16 GB")
        } catch {
            let text = "\(error)"
            #expect(!text.contains("\n"), "one line: \(text)")
            #expect(text.hasPrefix("the net needs 402.7 GB (402,668,469,408 bytes): 402.5 GB of parameters + 0.2 GB of activations, "
                                   + "more than the 16.0 GB of memory available; the largest layer is 'fc6' (InnerProduct, parameters 4096 × 24556032 and 4096: 402.3 GB)"), "\(text)")
        }
        try budget.check(available: 500_000_000_000)
        // The real check, as `run` makes it: no machine this runs on has 402 GB free.
        #expect(throws: Diagnostic.self) { _ = try ForkLayerFixtures.model(Self.stride1VGG16) }
        // A small net passes.
        try MemoryBudget(try GraphBuilder().build(try CaffeFiles.parseNet(text: Self.lossNet))).check()
    }

    @Test("`swiftjit compile` explains the stride-1 VGG16 with its 402 GB total; `run` fails with the one-line memory error")
    func memoryCommandLine() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-vgg-stride1-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let net = directory.appendingPathComponent("vgg16_stride1.prototxt")
        try Self.stride1VGG16.write(to: net, atomically: true, encoding: .utf8)
        let compile = try CompileCommandTests.run(["compile", net.path])
        #expect(compile.status == 0, "\(compile.err)")
        #expect(compile.out.contains("fc6"), "\(compile.out)")
        #expect(compile.out.contains("100,617,104,168 parameters (374.83 GiB)"), "\(compile.out)")
        #expect(compile.out.contains("not JIT-compiled: the net needs 402.7 GB"), "\(compile.out)")
        let run = try CompileCommandTests.run(["run", net.path, "--output", directory.appendingPathComponent("out.npz").path])
        #expect(run.status != 0)
        let errorLines = run.err.split(separator: "\n").filter { !$0.isEmpty }
        #expect(errorLines.count == 1 && errorLines[0].contains("the net needs 402.7 GB") && errorLines[0].contains("'fc6'"), "\(run.err)")
    }
}
