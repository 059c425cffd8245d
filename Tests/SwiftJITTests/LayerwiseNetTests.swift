import Foundation
import Testing
import SwiftJIT

/// `LayerwiseNet` and `LayerwiseSolver` behave as pycaffe's `caffe.Net` and `caffe.SGDSolver`
/// (python/caffe/test/test_net.py, test_solver.py, test_python_layer.py).
@Suite("layer-by-layer nets, as pycaffe drives them", .serialized)
struct LayerwiseNetTests {
    static let compiler: Compiler? = try? Compiler(threads: 2)

    /// test_net.py's simple net: DummyData (gaussian data, constant label), conv, ip, softmax loss.
    static let simpleNet = """
        name: 'testnet' force_backward: true
        layer { type: 'DummyData' name: 'data' top: 'data' top: 'label'
          dummy_data_param { num: 5 channels: 2 height: 3 width: 4
            num: 5 channels: 1 height: 1 width: 1
            data_filler { type: 'gaussian' std: 1 }
            data_filler { type: 'constant' } } }
        layer { type: 'Convolution' name: 'conv' bottom: 'data' top: 'conv'
          convolution_param { num_output: 11 kernel_size: 2 pad: 3
            weight_filler { type: 'gaussian' std: 1 }
            bias_filler { type: 'constant' value: 2 } }
            param { decay_mult: 1 } param { decay_mult: 0 } }
        layer { type: 'InnerProduct' name: 'ip' bottom: 'conv' top: 'ip_blob'
          inner_product_param { num_output: 13
            weight_filler { type: 'gaussian' std: 2.5 }
            bias_filler { type: 'constant' value: -3 } } }
        layer { type: 'SoftmaxWithLoss' name: 'loss' bottom: 'ip_blob' bottom: 'label' top: 'loss' }
        """

    static func file(_ text: String, _ name: String) throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("layerwise-\(getpid())-\(name)")
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }

    static func net(_ text: String = simpleNet, seed: UInt64 = 1, hostLayers: HostLayers? = nil) throws -> LayerwiseNet {
        let compiler = try #require(Self.compiler)
        let path = try file(text, "net\(seed).prototxt")
        return try LayerwiseNet(definition: try CaffeFiles.loadNet(path: path), phase: .train, seed: seed, compiler: compiler, hostLayers: hostLayers)
    }

    static func values(_ memory: TrainingNet.BlobMemory?, diff: Bool = false) -> [Float] {
        guard let memory, let pointer = diff ? memory.diff : memory.data else { return [] }
        return Array(UnsafeBufferPointer(start: pointer, count: memory.shape.reduce(1, *)))
    }

    static func close(_ a: [Float], _ b: [Float], tolerance: Float = 1e-4) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) <= tolerance * max(1, abs($1)) }
    }

    @Test("layers, blobs, inputs and outputs are listed as pycaffe lists them")
    func metadata() throws {
        let net = try Self.net()
        #expect(net.layers.map(\.name) == ["data", "conv", "ip", "loss"])
        #expect(net.layers.map(\.tops) == [["data", "label"], ["conv"], ["ip_blob"], ["loss"]])
        #expect(net.layers.map(\.bottoms) == [[], ["data"], ["conv"], ["ip_blob", "label"]])
        #expect(net.layers.map(\.parameterCount) == [0, 2, 2, 0])
        #expect(net.blobNames == ["data", "label", "conv", "ip_blob", "loss"])
        #expect(net.inputs.isEmpty)
        #expect(net.outputs == ["loss"])
        #expect(net.lossWeights == ["loss": 1])
    }

    @Test("forward(start: ip, end: ip) computes W·x + b from the conv blob the caller wrote")
    func forwardRange() throws {
        let net = try Self.net()
        let conv = try #require(net.blob("conv"))
        let count = conv.shape.reduce(1, *)
        let x = (0..<count).map { Float(($0 * 37) % 101) / 101 }
        conv.data!.update(from: x, count: count)
        let ip = try #require(net.layerIndex("ip"))
        try net.forward(from: ip, to: ip)
        let w = Self.values(net.parameter(layer: ip, index: 0)), b = Self.values(net.parameter(layer: ip, index: 1))
        let batch = conv.shape[0], inner = count / batch
        var expected: [Float] = []
        for n in 0..<batch {
            for o in 0..<13 { expected.append(b[o] + (0..<inner).reduce(Float(0)) { $0 + w[o * inner + $1] * x[n * inner + $1] }) }
        }
        #expect(Self.close(Self.values(net.blob("ip_blob")), expected))
    }

    @Test("backward(start: ip, end: ip) writes Wᵀ·diff into the conv blob's diff")
    func backwardRange() throws {
        let net = try Self.net()
        let top = try #require(net.blob("ip_blob"))
        let dy = (0..<65).map { Float(($0 * 13) % 29) / 29 - 0.5 }
        top.diff!.update(from: dy, count: 65)
        let ip = try #require(net.layerIndex("ip"))
        try net.backward(from: ip, to: ip)
        let w = Self.values(net.parameter(layer: ip, index: 0))
        let inner = w.count / 13
        var expected: [Float] = []
        for n in 0..<5 {
            for i in 0..<inner { expected.append((0..<13).reduce(Float(0)) { $0 + w[$1 * inner + i] * dy[n * 13 + $1] }) }
        }
        #expect(Self.close(Self.values(net.blob("conv"), diff: true), expected))
    }

    @Test("a constant DummyData top keeps the labels written into it; a gaussian one is refilled every forward")
    func dummyData() throws {
        let net = try Self.net()
        let labels: [Float] = [3, 1, 4, 1, 5]
        net.blob("label")!.data!.update(from: labels, count: 5)
        let loss = try net.forward()
        #expect(loss.isFinite && loss > 0)
        #expect(Self.values(net.blob("label")) == labels)
        let first = Self.values(net.blob("data"))
        try net.forward()
        #expect(Self.values(net.blob("label")) == labels)
        #expect(Self.values(net.blob("data")) != first)
        #expect(Self.values(net.blob("loss"), diff: true) == [1])  // the loss weight, as Caffe sets it
        try net.backward()
        #expect(Self.values(net.parameter(layer: 1, index: 0), diff: true).contains { $0 != 0 })
        net.zeroParameterDiffs()
        #expect(Self.values(net.parameter(layer: 1, index: 0), diff: true).allSatisfy { $0 == 0 })
    }

    @Test("share(with:) makes parameters the same memory; save and copyParameters round-trip")
    func sharingAndFiles() throws {
        let a = try Self.net(seed: 1), b = try Self.net(seed: 2)
        #expect(Self.values(a.parameter(layer: 2, index: 0)) != Self.values(b.parameter(layer: 2, index: 0)))
        try b.share(with: a)
        #expect(a.parameter(layer: 2, index: 0)?.data == b.parameter(layer: 2, index: 0)?.data)
        a.parameter(layer: 2, index: 1)!.data!.pointee = 42
        #expect(b.parameter(layer: 2, index: 1)?.data?.pointee == 42)

        let path = try Self.file("", "saved.caffemodel")
        try a.save(to: path)
        let c = try Self.net(seed: 3)
        try c.copyParameters(from: path)
        for layer in [1, 2] {
            for index in 0..<2 {
                #expect(Self.values(c.parameter(layer: layer, index: index)) == Self.values(a.parameter(layer: layer, index: index)))
            }
        }
    }

    @Test("reshape recompiles for a new input shape, keeping parameters and older pointers alive")
    func reshape() throws {
        let text = """
            input: 'data' input_shape { dim: 2 dim: 3 }
            layer { type: 'InnerProduct' name: 'ip' bottom: 'data' top: 'ip'
              inner_product_param { num_output: 4 weight_filler { type: 'gaussian' } } }
            """
        let net = try Self.net(text)
        #expect(net.inputs == ["data"])
        let weights = Self.values(net.parameter(layer: 1, index: 0))
        let old = try #require(net.blob("ip"))
        try net.setInputShape("data", [5, 3])
        try net.reshape()
        #expect(net.blob("ip")?.shape == [5, 4])
        #expect(Self.values(net.parameter(layer: 1, index: 0)) == weights)
        old.data!.update(repeating: 1, count: 8)  // the old layout is still allocated
        net.blob("data")!.data!.update(repeating: 1, count: 15)
        try net.forward()
        let row = (0..<4).map { o in (0..<3).reduce(Float(0)) { $0 + weights[o * 3 + $1] } }
        #expect(Self.close(Self.values(net.blob("ip")), Array((0..<5).map { _ in row }.joined())))
    }

    @Test("a caller's layer doubles its input forward and its diff backward between JIT'd layers")
    func hostLayer() throws {
        let text = """
            force_backward: true
            input: 'data' input_shape { dim: 2 dim: 3 }
            layer { type: 'InnerProduct' name: 'ip1' bottom: 'data' top: 'ip1'
              inner_product_param { num_output: 4 weight_filler { type: 'gaussian' } } }
            layer { type: 'Python' name: 'double' bottom: 'ip1' top: 'doubled'
              python_param { module: 'layers' layer: 'Double' param_str: '2' } }
            layer { type: 'InnerProduct' name: 'ip2' bottom: 'doubled' top: 'ip2'
              inner_product_param { num_output: 2 weight_filler { type: 'gaussian' } } }
            """
        var stages: [HostLayerStage] = []
        let layers = HostLayers { index, name, stage, bottoms, tops, propagateDown in
            stages.append(stage)
            guard index == 2, name == "double" else { return 7 }
            switch stage {
            case .setup, .reshape: tops[0].shape = bottoms[0].shape
            case .forward:
                for i in 0..<bottoms[0].shape.reduce(1, *) { tops[0].data![i] = 2 * bottoms[0].data![i] }
            case .backward:
                guard propagateDown == [true] else { return 9 }
                for i in 0..<bottoms[0].shape.reduce(1, *) { bottoms[0].diff![i] = 2 * tops[0].diff![i] }
            }
            return 0
        }
        let net = try Self.net(text, hostLayers: layers)
        #expect(net.layers[2].python?.parameter == "2")
        #expect(net.blob("doubled")?.shape == [2, 4])
        net.blob("data")!.data!.update(from: [1, 2, 3, -1, 0, 1], count: 6)
        try net.forward()
        let ip1 = Self.values(net.blob("ip1")), doubled = Self.values(net.blob("doubled"))
        #expect(doubled == ip1.map { 2 * $0 })
        let w2 = Self.values(net.parameter(layer: 3, index: 0)), b2 = Self.values(net.parameter(layer: 3, index: 1))
        let ip2 = (0..<2).flatMap { n in (0..<2).map { o in b2[o] + (0..<4).reduce(Float(0)) { $0 + w2[o * 4 + $1] * doubled[n * 4 + $1] } } }
        #expect(Self.close(Self.values(net.blob("ip2")), ip2))
        net.blob("ip2")!.diff!.update(from: [1, -1, 0.5, 2], count: 4)
        try net.backward()
        #expect(Self.close(Self.values(net.blob("ip1"), diff: true), Self.values(net.blob("doubled"), diff: true).map { 2 * $0 }))
        #expect(Self.values(net.blob("doubled"), diff: true).contains { $0 != 0 })
        #expect(stages.prefix(2) == [.setup, .reshape])
        #expect(stages.contains(.backward))
    }

    @Test("when a caller's layer reshapes its top on a later forward, the net recompiles for it")
    func hostLayerReshape() throws {
        let text = """
            input: 'data' input_shape { dim: 1 }
            layer { type: 'Python' name: 'grow' bottom: 'data' top: 'grown' python_param { module: 'm' layer: 'Grow' } }
            """
        var forwards = 0
        let layers = HostLayers { _, _, stage, _, tops, _ in
            switch stage {
            case .setup, .reshape: tops[0].shape = [forwards + 1]
            case .forward:
                forwards += 1
                tops[0].data!.update(repeating: Float(forwards), count: tops[0].shape[0])
            case .backward: break
            }
            return 0
        }
        let net = try Self.net(text, hostLayers: layers)
        try net.forward()
        #expect(Self.values(net.blob("grown")) == [1])
        try net.forward()
        #expect(net.blob("grown")?.shape == [2])
        #expect(Self.values(net.blob("grown")) == [2, 2])
    }

    @Test("a caller's layer that fails stops the pass with an error naming it")
    func hostLayerFailure() throws {
        let text = """
            input: 'data' input_shape { dim: 1 dim: 2 }
            layer { type: 'Python' name: 'broken' bottom: 'data' top: 'out' python_param { module: 'm' layer: 'L' } }
            """
        let layers = HostLayers { _, _, stage, bottoms, tops, _ in
            if stage == .reshape || stage == .setup { tops[0].shape = bottoms[0].shape }
            return stage == .forward ? 3 : 0
        }
        let net = try Self.net(text, hostLayers: layers)
        #expect(throws: HostLayerError.self) { try net.forward() }
        #expect(throws: Diagnostic.self) { try Self.net(text) }  // without a layer function: unsupported, as before
    }

    @Test("a Data layer reads its LMDB batch by batch on each forward, as Caffe's does")
    func dataLayer() throws {
        let data = GoldenTrainingRunTests.train.appendingPathComponent("data")
        let text = """
            layer { type: 'Data' name: 'data' top: 'data' top: 'label' transform_param { scale: 0.00390625 }
              data_param { source: '\(data.appendingPathComponent("train_lmdb").path)' batch_size: 16 backend: LMDB } }
            layer { type: 'InnerProduct' name: 'ip' bottom: 'data' top: 'ip' inner_product_param { num_output: 2 } }
            """
        let net = try Self.net(text)
        #expect(net.blob("data")?.shape == [16, 1, 28, 28])
        try net.forward()
        let expected = try NumPyFile.readArchive(path: data.appendingPathComponent("first_batches.npz").path)
        #expect(Self.values(net.blob("data")) == expected["data_batch0"]?.data)
        #expect(Self.values(net.blob("label")) == expected["label_batch0"]?.data)
    }

    @Test("a TEST-phase net with force_backward runs backward too")
    func testPhaseBackward() throws {
        let text = """
            force_backward: true
            input: 'data' input_shape { dim: 1 dim: 3 }
            layer { type: 'InnerProduct' name: 'ip' bottom: 'data' top: 'ip'
              inner_product_param { num_output: 2 weight_filler { type: 'gaussian' } } }
            layer { type: 'Dropout' name: 'drop' bottom: 'ip' top: 'ip' }
            """
        let compiler = try #require(Self.compiler)
        let net = try LayerwiseNet(definition: try CaffeFiles.loadNet(path: try Self.file(text, "test-phase.prototxt")), phase: .test, compiler: compiler)
        net.blob("data")!.data!.update(from: [1, 2, 3], count: 3)
        try net.forward()
        net.blob("ip")!.diff!.update(from: [1, -2], count: 2)
        try net.backward()
        let w = Self.values(net.parameter(layer: 1, index: 0))
        #expect(Self.close(Self.values(net.blob("data"), diff: true), (0..<3).map { w[$0] - 2 * w[3 + $0] }))
        #expect(Self.close(Self.values(net.parameter(layer: 1, index: 0), diff: true), [1, 2, 3, -2, -4, -6]))
    }

    @Test("a solver's train and test nets run their Python layers, told apart by net × 65536 + layer")
    func solverHostLayers() throws {
        let solverText = """
            net_param { name: 's'
              layer { type: 'DummyData' name: 'data' top: 'data' top: 'label'
                dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 }
                  data_filler { type: 'constant' value: 1 } data_filler { type: 'constant' } } }
              layer { type: 'Python' name: 'double' bottom: 'data' top: 'doubled' python_param { module: 'm' layer: 'Double' } }
              layer { type: 'InnerProduct' name: 'ip' bottom: 'doubled' top: 'ip'
                inner_product_param { num_output: 2 weight_filler { type: 'gaussian' std: 0.1 } } }
              layer { type: 'SoftmaxWithLoss' name: 'loss' bottom: 'ip' bottom: 'label' top: 'loss' } }
            test_iter: 1 test_interval: 2 base_lr: 0.1 lr_policy: 'fixed' max_iter: 4 display: 0 snapshot_after_train: false
            """
        var seen = Set<String>()
        let solver = try LayerwiseSolver(solverPath: try Self.file(solverText, "host-solver.prototxt"), threads: 2) { net in
            HostLayers(indexOffset: net << 16) { index, _, stage, bottoms, tops, _ in
                seen.insert("\(index) \(stage)")
                switch stage {
                case .setup, .reshape: tops[0].shape = bottoms[0].shape
                case .forward: for i in 0..<12 { tops[0].data![i] = 2 * bottoms[0].data![i] }
                case .backward: break
                }
                return 0
            }
        }
        let losses = try solver.trainer.step(4).losses.map(\.loss)
        #expect(losses.count == 4 && losses[3] < losses[0])
        #expect(Self.values(solver.net.blob("doubled")) == Array(repeating: 2, count: 12))
        #expect(seen.isSuperset(of: ["1 setup", "1 forward", "65537 setup", "65537 forward"]))
    }

    @Test("solver step(n) reproduces swiftjit train's losses on Caffe's golden SGD run with a test net")
    func solverMatchesTrain() throws {
        let compiler = try #require(Self.compiler)
        let folder = try GoldenTrainingRunTests.workspace("sgd_test")
        defer { try? FileManager.default.removeItem(at: folder.deletingLastPathComponent()) }
        let solverPath = folder.appendingPathComponent("solver.prototxt").path
        var options = TrainingOptions()
        options.baseDirectory = folder.path
        options.progress = .quiet
        options.weights = [GoldenTrainingRunTests.train.appendingPathComponent("common/init.caffemodel").path]

        let solver = try LayerwiseSolver(solverPath: solverPath, options: options, threads: 2)
        try #require(solver.testNets.count == 1)
        let first = try solver.trainer.step(7), second = try solver.trainer.step(13)
        #expect(solver.iteration == 20)
        let ours = (first.losses + second.losses).map(\.loss)

        let reference = try Trainer(solverPath: solverPath, options: options, compiler: compiler).step(20).losses.map(\.loss)
        #expect(ours == reference)
        let caffe = try GoldenTrainingRunTests.csv(folder.appendingPathComponent("losses.csv")).prefix(20).map { $0[1] }
        #expect(zip(ours, caffe).allSatisfy { abs($0 - $1) <= 1e-3 * abs($1) })
        // Test nets read the train net's parameter memory.
        #expect(solver.testNets[0].parameter(layer: 2, index: 0)?.data == solver.net.parameter(layer: 2, index: 0)?.data)

        // A forward outside step() reads the test net's next LMDB batch, as pycaffe's does.
        let testLoss = try solver.testNets[0].forward()
        #expect(testLoss.isFinite && testLoss > 0)

        let paths = try solver.snapshot()
        #expect(paths.state.hasSuffix("_iter_20.solverstate"))
        solver.net.zeroParameterDiffs()
        let rate = solver.applyUpdate()
        #expect(solver.iteration == 21 && rate > 0)
        try solver.restore(from: paths.state)
        #expect(solver.iteration == 20)
    }
}
