import Foundation
import SwiftProtobuf
import Testing
@testable import CaffeFormat

/// `../shared/zoo` next to the package root: real Caffe nets of every format generation.
private let zooRoot: String = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()  // CaffeFormatTests
    .deletingLastPathComponent()  // Tests
    .deletingLastPathComponent()  // package root
    .deletingLastPathComponent()
    .appendingPathComponent("shared/zoo").path

/// The absolute path of a zoo file; fails the test with a clear message when the corpus is missing.
private func zoo(_ relative: String) throws -> String {
    var isDirectory: ObjCBool = false
    try #require(FileManager.default.fileExists(atPath: zooRoot, isDirectory: &isDirectory) && isDirectory.boolValue,
                 "the test corpus folder \(zooRoot) is missing; these tests need ../shared/zoo beside the package root")
    let path = zooRoot + "/" + relative
    try #require(FileManager.default.fileExists(atPath: path), "zoo file \(path) is missing")
    return path
}

private func loadNet(_ relative: String) throws -> NetDefinition {
    try CaffeFiles.loadNet(path: zoo(relative))
}

/// Expects two layer lists to agree on everything the upgrade produces: names, types, wiring, param
/// specs, rules and layer parameters. Field-by-field checks first, for readable failures; then
/// whole-message equality to catch anything else.
private func expectSameLayers(_ upgraded: [Caffe_LayerParameter], _ expected: [Caffe_LayerParameter],
                              sourceLocation: Testing.SourceLocation = #_sourceLocation) {
    #expect(upgraded.map(\.name) == expected.map(\.name), sourceLocation: sourceLocation)
    #expect(upgraded.count == expected.count, sourceLocation: sourceLocation)
    for (a, b) in zip(upgraded, expected) {
        let layer = Comment(rawValue: "layer '\(b.name)'")
        #expect(a.type == b.type, layer, sourceLocation: sourceLocation)
        #expect(a.bottom == b.bottom, layer, sourceLocation: sourceLocation)
        #expect(a.top == b.top, layer, sourceLocation: sourceLocation)
        #expect(a.param == b.param, layer, sourceLocation: sourceLocation)
        #expect(a.include == b.include, layer, sourceLocation: sourceLocation)
        #expect(a.exclude == b.exclude, layer, sourceLocation: sourceLocation)
        #expect(a.lossWeight == b.lossWeight, layer, sourceLocation: sourceLocation)
        #expect(a.convolutionParam == b.convolutionParam, layer, sourceLocation: sourceLocation)
        #expect(a.poolingParam == b.poolingParam, layer, sourceLocation: sourceLocation)
        #expect(a.lrnParam == b.lrnParam, layer, sourceLocation: sourceLocation)
        #expect(a.innerProductParam == b.innerProductParam, layer, sourceLocation: sourceLocation)
        #expect(a.dataParam == b.dataParam, layer, sourceLocation: sourceLocation)
        #expect(a.transformParam == b.transformParam, layer, sourceLocation: sourceLocation)
        #expect(a == b, layer, sourceLocation: sourceLocation)
    }
}

/// Compares a V1 deploy net (with `input_dim`) against its V2 version (with an Input layer):
/// identical except that our Input layer is named "input".
private func expectV1DeployMatchesV2(_ v1Path: String, _ v2Path: String, shape: [Int64]) throws {
    let v1 = try loadNet(v1Path)
    let v2 = try loadNet(v2Path)
    #expect(v2.upgradeNotes.isEmpty)
    #expect(v1.net.layers.isEmpty)
    #expect(v1.net.input.isEmpty && v1.net.inputDim.isEmpty && v1.net.inputShape.isEmpty)
    #expect(v1.upgradeNotes.contains { $0.hasPrefix("upgraded \(v1.net.layer.count - 1) V1 layers") })
    #expect(v1.upgradeNotes.contains("converted input/input_dim to an Input layer 'input'"))

    let input = try #require(v1.net.layer.first)
    #expect(input.name == "input")
    #expect(input.type == "Input")
    #expect(input.top == ["data"])
    #expect(input.inputParam.shape.map(\.dim) == [shape])
    var renamed = input
    renamed.name = v2.net.layer.first?.name ?? ""
    expectSameLayers([renamed] + v1.net.layer.dropFirst(), v2.net.layer)
    #expect(v1.layerLocations.count == v1.net.layer.count)
}

private func expectDiagnostic(_ mentioning: [String], sourceLocation: Testing.SourceLocation = #_sourceLocation,
                              _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected a Diagnostic mentioning \(mentioning)", sourceLocation: sourceLocation)
    } catch let diagnostic as Diagnostic {
        for text in mentioning {
            #expect(diagnostic.description.contains(text), "diagnostic: \(diagnostic)", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("expected a Diagnostic, got \(error)", sourceLocation: sourceLocation)
    }
}

// MARK: - V1 → V2

@Suite("UpgradeTests")
struct UpgradeTests {
    @Test("V1 CaffeNet deploy upgrades to the V2 deploy net")
    func caffenetDeploy() throws {
        try expectV1DeployMatchesV2("bvlc_legacy_v1/bvlc_reference_caffenet/deploy.prototxt",
                                    "bvlc_reference_caffenet/deploy.prototxt", shape: [10, 3, 227, 227])
    }

    @Test("V1 GoogLeNet deploy upgrades to the V2 deploy net")
    func googlenetDeploy() throws {
        try expectV1DeployMatchesV2("bvlc_legacy_v1/bvlc_googlenet/deploy.prototxt",
                                    "bvlc_googlenet/deploy.prototxt", shape: [10, 3, 224, 224])
    }

    @Test("V1 CaffeNet train_val upgrades to the V2 train_val: blobs_lr, weight_decay, include phase")
    func caffenetTrainVal() throws {
        let v1 = try loadNet("bvlc_legacy_v1/bvlc_reference_caffenet/train_val.prototxt")
        let v2 = try loadNet("bvlc_reference_caffenet/train_val.prototxt")
        #expect(v1.upgradeNotes == ["upgraded 26 V1 layers (layers {}) to the current layer {} format"])
        expectSameLayers(v1.net.layer, v2.net.layer)

        let conv1 = try #require(v1.net.layer.first { $0.name == "conv1" })
        #expect(conv1.param.map(\.lrMult) == [1, 2])
        #expect(conv1.param.map(\.decayMult) == [1, 0])
        #expect(conv1.param.allSatisfy { $0.hasLrMult && $0.hasDecayMult && !$0.hasName })
        let data = v1.net.layer.filter { $0.type == "Data" }
        #expect(data.map { $0.include.map(\.phase) } == [[.train], [.test]])
        #expect(data.map(\.transformParam.cropSize) == [227, 227])
        #expect(data.map(\.dataParam.batchSize) == [256, 50])
        let loss = try #require(v1.net.layer.first { $0.name == "loss" })
        #expect(loss.type == "SoftmaxWithLoss")
    }

    @Test("V1 GoogLeNet train_val upgrades to the V2 train_val (loss_weight, pool AVE)")
    func googlenetTrainVal() throws {
        let v1 = try loadNet("bvlc_legacy_v1/bvlc_googlenet/train_val.prototxt")
        let v2 = try loadNet("bvlc_googlenet/train_val.prototxt")
        #expect(v1.net.layer.filter { !$0.lossWeight.isEmpty }.count == 3)
        #expect(v1.net.layer.contains { $0.type == "Pooling" && $0.poolingParam.pool == .ave })
        // BVLC edited two things in this file after the V1 → V2 switch: the (unused) `std` of the
        // xavier fillers was deleted, and the loss2 accuracy top "loss2/loss1" was renamed "loss2/loss2".
        // Apply those edits to the upgraded net; everything else must match exactly.
        var edited = v1.net.layer
        var editedFillers = 0
        for index in edited.indices {
            if edited[index].convolutionParam.weightFiller.type == "xavier", edited[index].convolutionParam.weightFiller.hasStd {
                edited[index].convolutionParam.weightFiller.clearStd()
                editedFillers += 1
            }
            if edited[index].innerProductParam.weightFiller.type == "xavier", edited[index].innerProductParam.weightFiller.hasStd {
                edited[index].innerProductParam.weightFiller.clearStd()
                editedFillers += 1
            }
            edited[index].top = edited[index].top.map { $0 == "loss2/loss1" ? "loss2/loss2" : $0 }
        }
        #expect(editedFillers > 0)
        expectSameLayers(edited, v2.net.layer)
    }

    @Test("every V1 zoo net upgrades, with no legacy fields left")
    func allV1Nets() throws {
        for file in ["bvlc_reference_caffenet/deploy.prototxt", "bvlc_reference_caffenet/train_val.prototxt",
                     "bvlc_googlenet/deploy.prototxt", "bvlc_googlenet/train_val.prototxt",
                     "cifar10/cifar10_full_train_test.prototxt", "cifar10/cifar10_quick.prototxt",
                     "mnist/lenet.prototxt", "mnist/lenet_train_test.prototxt", "mnist/mnist_autoencoder.prototxt",
                     "siamese/mnist_siamese.prototxt", "siamese/mnist_siamese_train_test.prototxt"] {
            let net = try loadNet("bvlc_legacy_v1/" + file).net
            #expect(net.layers.isEmpty && net.input.isEmpty, "\(file)")
            #expect(!net.layer.isEmpty && net.layer.allSatisfy { !$0.type.isEmpty }, "\(file)")
            #expect(NetUpgrader.needsUpgrade(net) == false, "\(file)")
        }
    }

    @Test("V1 param names become ParamSpec names; autoencoder loss weights and stage rules survive")
    func paramSharingAndRules() throws {
        let siamese = try loadNet("bvlc_legacy_v1/siamese/mnist_siamese_train_test.prototxt").net
        let conv1 = try #require(siamese.layer.first { $0.name == "conv1" })
        let conv1p = try #require(siamese.layer.first { $0.name == "conv1_p" })
        #expect(conv1.param.map(\.name) == ["conv1_w", "conv1_b"])
        #expect(conv1p.param.map(\.name) == ["conv1_w", "conv1_b"])
        #expect(conv1.param.map(\.lrMult) == [1, 2])
        #expect(siamese.layer.contains { $0.type == "ContrastiveLoss" && $0.contrastiveLossParam.margin == 1 })
        #expect(siamese.layer.contains { $0.type == "Slice" && $0.top.count == 2 })

        let autoencoder = try loadNet("bvlc_legacy_v1/mnist/mnist_autoencoder.prototxt").net
        #expect(autoencoder.layer.contains { $0.type == "SigmoidCrossEntropyLoss" && $0.lossWeight == [1] })
        #expect(autoencoder.layer.contains { $0.type == "EuclideanLoss" && $0.lossWeight == [0] })
        #expect(autoencoder.layer.contains { $0.include.contains { $0.stage == ["test-on-train"] } })
    }

    @Test("V1 blob_share_mode becomes ParamSpec.share_mode")
    func blobShareMode() throws {
        let net = try CaffeFiles.parseNet(text: """
            layers { name: "ip" type: INNER_PRODUCT bottom: "x" top: "y"
                     param: "w" blob_share_mode: PERMISSIVE blob_share_mode: STRICT blobs_lr: 3 }
            """).net
        let ip = try #require(net.layer.first)
        #expect(ip.type == "InnerProduct")
        #expect(ip.param.count == 2)
        #expect(ip.param[0].name == "w" && ip.param[0].shareMode == .permissive && ip.param[0].lrMult == 3)
        #expect(!ip.param[1].hasName && ip.param[1].shareMode == .strict && !ip.param[1].hasLrMult)
    }

    @Test("every V1 layer type enum maps to a current type name")
    func v1TypeNames() {
        let names = Caffe_V1LayerParameter.LayerType.allCases.map(NetUpgrader.v2TypeName(of:))
        #expect(Set(names).count == names.count)
        #expect(NetUpgrader.v2TypeName(of: .softmaxLoss) == "SoftmaxWithLoss")
        #expect(NetUpgrader.v2TypeName(of: .im2Col) == "Im2col")
        #expect(NetUpgrader.v2TypeName(of: .tanh) == "TanH")
        #expect(NetUpgrader.v2TypeName(of: .hdf5Data) == "HDF5Data")
        #expect(NetUpgrader.v2TypeName(of: .none) == "")
    }

    @Test("V1 data layers move scale/mean_file/crop_size/mirror into transform_param")
    func dataTransformation() throws {
        let definition = try CaffeFiles.parseNet(text: """
            layers { name: "data" type: DATA top: "data" top: "label"
                     data_param { source: "db" batch_size: 8 scale: 0.5 mean_file: "mean.binaryproto" crop_size: 20 mirror: true } }
            layers { name: "images" type: IMAGE_DATA top: "img" top: "l2" image_data_param { source: "list.txt" crop_size: 7 } }
            layers { name: "plain" type: DATA top: "d3" top: "l3" data_param { source: "db2" } }
            """)
        #expect(definition.upgradeNotes.first == "moved scale/mean_file/crop_size/mirror of 2 data layers into transform_param")
        let data = definition.net.layer[0]
        #expect(data.transformParam.scale == 0.5 && data.transformParam.meanFile == "mean.binaryproto")
        #expect(data.transformParam.cropSize == 20 && data.transformParam.mirror)
        #expect(!data.dataParam.hasScale && !data.dataParam.hasMeanFile && !data.dataParam.hasCropSize && !data.dataParam.hasMirror)
        #expect(data.dataParam.source == "db" && data.dataParam.batchSize == 8)
        #expect(definition.net.layer[1].transformParam.cropSize == 7 && !definition.net.layer[1].imageDataParam.hasCropSize)
        #expect(!definition.net.layer[2].hasTransformParam)
    }

    // MARK: - V0 → V1 → V2

    @Test("V0 ImageNet deploy upgrades to CaffeNet's layers and parameters")
    func v0ImagenetDeploy() throws {
        let definition = try loadNet("bvlc_legacy_v0/imagenet_deploy.prototxt")
        let net = definition.net
        #expect(definition.upgradeNotes == [
            "upgraded 23 V0 layers (layers { layer {} }) to V1 layers",
            "upgraded 23 V1 layers (layers {}) to the current layer {} format",
            "converted input/input_dim to an Input layer 'input'",
        ])
        #expect(net.name == "CaffeNet")
        let conv1 = try #require(net.layer.first { $0.name == "conv1" })
        #expect(conv1.type == "Convolution")
        #expect(conv1.bottom == ["data"] && conv1.top == ["conv1"])
        #expect(conv1.convolutionParam.numOutput == 96)
        #expect(conv1.convolutionParam.kernelSize == [11])
        #expect(conv1.convolutionParam.stride == [4])
        #expect(conv1.convolutionParam.weightFiller.type == "gaussian" && conv1.convolutionParam.weightFiller.std == 0.01)
        #expect(conv1.param.map(\.lrMult) == [1, 2] && conv1.param.map(\.decayMult) == [1, 0])
        let pool1 = try #require(net.layer.first { $0.name == "pool1" })
        #expect(pool1.type == "Pooling" && pool1.poolingParam.pool == .max)
        #expect(pool1.poolingParam.kernelSize == 3 && pool1.poolingParam.stride == 2)
        let norm1 = try #require(net.layer.first { $0.name == "norm1" })
        #expect(norm1.type == "LRN" && norm1.lrnParam.localSize == 5)
        #expect(norm1.lrnParam.alpha == 0.0001 && norm1.lrnParam.beta == 0.75)
        let conv2 = try #require(net.layer.first { $0.name == "conv2" })
        #expect(conv2.convolutionParam.group == 2 && conv2.convolutionParam.pad == [2] && conv2.convolutionParam.kernelSize == [5])
        #expect(net.layer.first { $0.name == "fc6" }?.innerProductParam.numOutput == 4096)
        #expect(net.layer.first { $0.name == "drop6" }?.dropoutParam.dropoutRatio == 0.5)

        // The same wiring and core parameters as the V2 CaffeNet deploy net.
        let v2 = try loadNet("bvlc_reference_caffenet/deploy.prototxt").net
        #expect(net.layer.dropFirst().map(\.name) == v2.layer.dropFirst().map(\.name))
        for (a, b) in zip(net.layer.dropFirst(), v2.layer.dropFirst()) {
            #expect(a.type == b.type && a.bottom == b.bottom && a.top == b.top, "layer '\(b.name)'")
            #expect(a.convolutionParam.numOutput == b.convolutionParam.numOutput, "layer '\(b.name)'")
            #expect(a.convolutionParam.kernelSize == b.convolutionParam.kernelSize, "layer '\(b.name)'")
            #expect(a.convolutionParam.stride == b.convolutionParam.stride, "layer '\(b.name)'")
            #expect(a.convolutionParam.pad == b.convolutionParam.pad, "layer '\(b.name)'")
            #expect(a.convolutionParam.group == b.convolutionParam.group, "layer '\(b.name)'")
            #expect(a.poolingParam == b.poolingParam, "layer '\(b.name)'")
            #expect(a.lrnParam == b.lrnParam, "layer '\(b.name)'")
            #expect(a.innerProductParam.numOutput == b.innerProductParam.numOutput, "layer '\(b.name)'")
        }
        #expect(net.layer.first?.inputParam.shape.first?.dim == [10, 3, 227, 227])
    }

    @Test("V0 LeNet upgrades: conv/pool/innerproduct/relu/softmax with their parameters")
    func v0Lenet() throws {
        let net = try loadNet("bvlc_legacy_v0/lenet.prototxt").net
        #expect(net.layer.map(\.type) == ["Input", "Convolution", "Pooling", "Convolution", "Pooling",
                                          "InnerProduct", "ReLU", "InnerProduct", "Softmax"])
        #expect(net.layer[0].inputParam.shape.map(\.dim) == [[64, 1, 28, 28]])
        let conv1 = net.layer[1]
        #expect(conv1.convolutionParam.numOutput == 20 && conv1.convolutionParam.kernelSize == [5])
        #expect(conv1.convolutionParam.stride == [1] && conv1.convolutionParam.weightFiller.type == "xavier")
        #expect(conv1.param.map(\.lrMult) == [1, 2] && conv1.param.allSatisfy { !$0.hasDecayMult })
        #expect(net.layer[2].poolingParam.kernelSize == 2 && net.layer[2].poolingParam.stride == 2 && net.layer[2].poolingParam.pool == .max)
        #expect(net.layer[5].innerProductParam.numOutput == 500)
        #expect(net.layer[7].innerProductParam.numOutput == 10)
    }

    @Test("V0 train/test nets: data layer fields split into data_param and transform_param")
    func v0DataLayers() throws {
        let train = try loadNet("bvlc_legacy_v0/imagenet_train.prototxt").net
        let data = try #require(train.layer.first)
        #expect(data.type == "Data" && data.top == ["data", "label"])
        #expect(data.dataParam.source == "ilvsrc12_train_leveldb" && data.dataParam.batchSize == 256)
        #expect(data.transformParam.meanFile == "../../data/ilsvrc12/imagenet_mean.binaryproto")
        #expect(data.transformParam.cropSize == 227 && data.transformParam.mirror)
        #expect(train.layer.last?.type == "SoftmaxWithLoss")
        for file in ["imagenet_val.prototxt", "lenet_train.prototxt", "lenet_test.prototxt"] {
            let net = try loadNet("bvlc_legacy_v0/" + file).net
            #expect(net.layers.isEmpty && !net.layer.isEmpty && net.layer.allSatisfy { !$0.type.isEmpty }, "\(file)")
        }
        let test = try loadNet("bvlc_legacy_v0/lenet_test.prototxt").net
        #expect(test.layer.contains { $0.type == "Accuracy" })
        #expect(test.layer.first?.dataParam.batchSize == 100)
    }

    @Test("a V0 padding layer folds into the pad of the conv layer it feeds")
    func v0Padding() throws {
        let definition = try CaffeFiles.parseNet(text: """
            input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
            layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
            layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 } bottom: "pad1" top: "conv1" }
            layers { layer { name: "pad2" type: "padding" pad: 1 } bottom: "conv1" top: "pad2" }
            layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 2 stride: 2 } bottom: "pad2" top: "pool1" }
            """)
        let net = definition.net
        #expect(net.layer.map(\.name) == ["input", "conv1", "pool1"])
        #expect(net.layer[1].bottom == ["data"] && net.layer[1].convolutionParam.pad == [2])
        #expect(net.layer[2].bottom == ["conv1"] && net.layer[2].poolingParam.pad == 1 && net.layer[2].poolingParam.pool == .ave)
        #expect(definition.upgradeNotes.contains("folded 2 V0 padding layers into the pad of the conv/pool layers reading them"))
    }

    @Test("V0 window_data and images fields map to their parameter messages")
    func v0WindowAndImages() throws {
        let net = try CaffeFiles.parseNet(text: """
            layers { layer { name: "win" type: "window_data" source: "w.txt" batchsize: 4 det_fg_threshold: 0.6
                             det_bg_threshold: 0.4 det_fg_fraction: 0.3 det_context_pad: 16 det_crop_mode: "square"
                             cropsize: 227 mirror: true scale: 2 } top: "a" top: "b" }
            layers { layer { name: "img" type: "images" source: "l.txt" batchsize: 2 shuffle_images: true
                             new_height: 256 new_width: 250 rand_skip: 7 } top: "c" top: "d" }
            layers { layer { name: "cat" type: "concat" concat_dim: 0 } bottom: "a" bottom: "c" top: "e" }
            layers { layer { name: "out" type: "hdf5_output" hdf5_output_param { file_name: "o.h5" } } bottom: "e" bottom: "b" }
            """).net
        let window = net.layer[0].windowDataParam
        #expect(net.layer[0].type == "WindowData" && window.source == "w.txt" && window.batchSize == 4)
        #expect(window.fgThreshold == 0.6 && window.bgThreshold == 0.4 && window.fgFraction == 0.3)
        #expect(window.contextPad == 16 && window.cropMode == "square")
        #expect(net.layer[0].transformParam.cropSize == 227 && net.layer[0].transformParam.mirror && net.layer[0].transformParam.scale == 2)
        let images = net.layer[1].imageDataParam
        #expect(net.layer[1].type == "ImageData" && images.shuffle && images.newHeight == 256 && images.newWidth == 250 && images.randSkip == 7)
        #expect(net.layer[2].type == "Concat" && net.layer[2].concatParam.concatDim == 0)
        #expect(net.layer[3].type == "HDF5Output" && net.layer[3].hdf5OutputParam.fileName == "o.h5")
    }

    @Test("V0 errors: unknown type, a field the type does not have, a bottom nobody produces")
    func v0Errors() {
        expectDiagnostic(["net.prototxt", "layer 'c1'", "unknown V0 layer type 'convolution'"]) {
            _ = try CaffeFiles.parseNet(text: "layers { layer { name: \"c1\" type: \"convolution\" } top: \"x\" }", file: "net.prototxt")
        }
        expectDiagnostic(["layer 'r1'", "'num_output'", "'relu'", "'conv' or 'innerproduct'"]) {
            _ = try CaffeFiles.parseNet(text: """
                input: "data" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1
                layers { layer { name: "r1" type: "relu" num_output: 3 } bottom: "data" top: "data" }
                """)
        }
        expectDiagnostic(["layer 'c1'", "bottom 'nothing'"]) {
            _ = try CaffeFiles.parseNet(text: "layers { layer { name: \"c1\" type: \"conv\" } bottom: \"nothing\" top: \"x\" }")
        }
        expectDiagnostic(["layer 'relu'", "padding layer 'pad'", "'conv' and 'pool'"]) {
            _ = try CaffeFiles.parseNet(text: """
                input: "data" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4
                layers { layer { name: "pad" type: "padding" pad: 1 } bottom: "data" top: "p" }
                layers { layer { name: "relu" type: "relu" } bottom: "p" top: "p" }
                """)
        }
        expectDiagnostic(["layer 'v1'", "mix V0 and V1"]) {
            _ = try CaffeFiles.parseNet(text: """
                layers { layer { name: "v0" type: "data" source: "db" batchsize: 1 } top: "data" }
                layers { name: "v1" type: RELU bottom: "data" top: "data" }
                """)
        }
    }

    // MARK: - Input fields

    @Test("input_dim and input_shape nets get a first Input layer with the right shapes",
          arguments: [("bvlc_reference_caffenet/deploy.prototxt", [Int64(10), 3, 227, 227]),
                      ("bvlc_googlenet/deploy.prototxt", [10, 3, 224, 224]),
                      ("mnist/lenet.prototxt", [64, 1, 28, 28]),
                      ("siamese/mnist_siamese.prototxt", [10000, 1, 28, 28])])
    func inputUpgrade(file: String, shape: [Int64]) throws {
        let fromDim = try loadNet("bvlc_legacy_input_dim/" + file)
        let fromShape = try loadNet("bvlc_legacy_input_shape/" + file)
        #expect(fromDim.upgradeNotes == ["converted input/input_dim to an Input layer 'input'"])
        #expect(fromShape.upgradeNotes == ["converted input/input_shape to an Input layer 'input'"])
        for definition in [fromDim, fromShape] {
            let input = try #require(definition.net.layer.first)
            #expect(input.name == "input" && input.type == "Input" && input.top == ["data"])
            #expect(input.inputParam.shape.map(\.dim) == [shape])
            #expect(definition.net.input.isEmpty && definition.net.inputDim.isEmpty && definition.net.inputShape.isEmpty)
            #expect(definition.layerLocations.count == definition.net.layer.count)
            #expect(definition.layerLocations.first! == nil && definition.layerLocations.dropFirst().allSatisfy { $0 != nil })
        }
        #expect(fromDim.net == fromShape.net)
    }

    @Test("several inputs become the tops of one Input layer, one shape each")
    func multipleInputs() throws {
        let net = try CaffeFiles.parseNet(text: """
            input: "data" input_shape { dim: 1 dim: 3 dim: 224 dim: 224 }
            input: "rois" input_shape { dim: 1 dim: 5 }
            layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }
            """).net
        #expect(net.layer.map(\.name) == ["input", "relu"])
        #expect(net.layer[0].top == ["data", "rois"])
        #expect(net.layer[0].inputParam.shape.map(\.dim) == [[1, 3, 224, 224], [1, 5]])
    }

    @Test("input_dim/input_shape count mismatches are diagnosed with what was expected")
    func inputMismatch() {
        expectDiagnostic(["deploy.prototxt", "1 input ('data')", "3 input_dim values", "expected 4"]) {
            _ = try CaffeFiles.parseNet(text: """
                input: "data" input_dim: 10 input_dim: 3 input_dim: 227
                layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }
                """, file: "deploy.prototxt")
        }
        expectDiagnostic(["2 inputs ('a', 'b')", "1 input_shape entry", "one input_shape per input"]) {
            _ = try CaffeFiles.parseNet(text: "input: \"a\" input: \"b\" input_shape { dim: 1 }")
        }
    }

    // MARK: - Errors, weights, BatchNorm

    @Test("a net with both 'layer' and 'layers' is refused")
    func mixedLayerAndLayers() {
        expectDiagnostic(["mixed.prototxt", "both 'layer'", "'layers'"]) {
            _ = try CaffeFiles.parseNet(text: """
                layer { name: "a" type: "ReLU" bottom: "x" top: "x" }
                layers { name: "b" type: RELU bottom: "x" top: "x" }
                """, file: "mixed.prototxt")
        }
    }

    @Test("a failed upgrade leaves the net untouched")
    func atomic() throws {
        var net = try Caffe_NetParameter(textFormatString: """
            input: "data" input_dim: 1 input_dim: 2
            layers { name: "r" type: RELU bottom: "data" top: "data" }
            """)
        let original = net
        #expect(throws: Diagnostic.self) { try NetUpgrader.upgrade(&net, file: "x") }
        #expect(net == original)
    }

    @Test("a V1 .caffemodel keeps its blobs unchanged, legacy 4-D dims included")
    func v1CaffemodelBlobs() throws {
        var blob = Caffe_BlobProto()
        blob.num = 2; blob.channels = 1; blob.height = 3; blob.width = 3
        blob.data = (0..<18).map(Float.init)
        var bias = Caffe_BlobProto()
        bias.shape.dim = [2]
        bias.data = [0.5, -0.5]
        var conv = Caffe_V1LayerParameter()
        conv.name = "conv1"
        conv.type = .convolution
        conv.bottom = ["data"]
        conv.top = ["conv1"]
        conv.blobs = [blob, bias]
        conv.blobsLr = [1, 2]
        conv.convolutionParam.numOutput = 2
        conv.convolutionParam.kernelSize = [3]
        var model = Caffe_NetParameter()
        model.name = "tiny"
        model.input = ["data"]  // Caffe wrote input names, without shapes, into old caffemodels
        model.layers = [conv]

        let path = FileManager.default.temporaryDirectory.appendingPathComponent("upgrade-test-\(UUID().uuidString).caffemodel").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try CaffeFiles.write(model, to: path)
        let net = try CaffeFiles.loadWeights(path: path)
        #expect(net.layers.isEmpty && net.input.isEmpty)
        #expect(net.layer.map(\.name) == ["conv1"])
        #expect(net.layer[0].type == "Convolution")
        #expect(net.layer[0].blobs == [blob, bias])
        #expect(net.layer[0].blobs[0].hasNum && !net.layer[0].blobs[0].hasShape)
        #expect(net.layer[0].param.map(\.lrMult) == [1, 2])

        var again = net
        #expect(try NetUpgrader.upgrade(&again).isEmpty)
    }

    @Test("a shapeless input field (old caffemodel) is dropped with a note")
    func shapelessInput() throws {
        var net = Caffe_NetParameter()
        net.input = ["data"]
        var relu = Caffe_LayerParameter()
        relu.name = "relu"; relu.type = "ReLU"
        net.layer = [relu]
        let notes = try NetUpgrader.upgrade(&net)
        #expect(notes == ["dropped the shapeless net-level input field 'data' (legacy .caffemodel)"])
        #expect(net.input.isEmpty && net.layer == [relu])
    }

    @Test("a binary V1 layer type that Caffe does not know is diagnosed")
    func unknownV1TypeInBinary() throws {
        // NetParameter { layers { name: "x" type: 99 } }, written by hand: Swift cannot hold an unknown enum value.
        var net = try Caffe_NetParameter(serializedBytes: [0x12, 0x05, 0x22, 0x01, 0x78, 0x28, 0x63])
        #expect(!net.layers[0].hasType)
        expectDiagnostic(["model.caffemodel", "layer 'x'", "V1 layer type 99"]) {
            _ = try NetUpgrader.upgrade(&net, file: "model.caffemodel")
        }
    }

    @Test("BatchNorm layers with three param specs get lr_mult and decay_mult 0, as current Caffe does")
    func batchNorm() throws {
        let definition = try loadNet("cifar10/cifar10_full_sigmoid_train_test_bn.prototxt")
        #expect(definition.upgradeNotes == ["set lr_mult/decay_mult to 0 in the 3 param specs of 3 BatchNorm layers (old-style statistics freezing)"])
        let batchNorms = definition.net.layer.filter { $0.type == "BatchNorm" }
        #expect(batchNorms.count == 3)
        for layer in batchNorms {
            #expect(layer.param.count == 3)
            #expect(layer.param.allSatisfy { $0.hasLrMult && $0.lrMult == 0 && $0.hasDecayMult && $0.decayMult == 0 })
        }
        var net = definition.net
        #expect(try NetUpgrader.upgrade(&net).isEmpty)  // already frozen: nothing to report
        #expect(net == definition.net)
    }

    @Test("current-format nets load with no upgrade notes")
    func currentNetsUntouched() throws {
        for file in ["bvlc_alexnet/deploy.prototxt", "bvlc_googlenet/train_val.prototxt", "cifar10/cifar10_quick.prototxt"] {
            let definition = try loadNet(file)
            #expect(definition.upgradeNotes.isEmpty, "\(file)")
            var net = definition.net
            #expect(try NetUpgrader.upgrade(&net).isEmpty)
            #expect(net == definition.net)
        }
    }

    // MARK: - Solver

    @Test("legacy solver_type enums become the type string",
          arguments: [("lenet_adadelta_solver.prototxt", "AdaDelta"), ("lenet_solver_adam.prototxt", "Adam"),
                      ("lenet_solver_rmsprop.prototxt", "RMSProp"), ("mnist_autoencoder_solver_adadelta.prototxt", "AdaDelta"),
                      ("mnist_autoencoder_solver_adagrad.prototxt", "AdaGrad"),
                      ("mnist_autoencoder_solver_nesterov.prototxt", "Nesterov")])
    func solverEnum(file: String, type: String) throws {
        let solver = try CaffeFiles.loadSolver(path: zoo("bvlc_legacy_solver_enum/" + file))
        #expect(solver.type == type && solver.hasType)
        #expect(!solver.hasSolverType)
    }

    @Test("every file in bvlc_legacy_solver_enum is covered and upgrades")
    func allSolverEnumFiles() throws {
        let folder = try zoo("bvlc_legacy_solver_enum")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".prototxt") }
        #expect(files.count == 6)
        for file in files {
            let text = try String(contentsOfFile: folder + "/" + file, encoding: .utf8)
            var solver = try Caffe_SolverParameter(textFormatString: text)
            #expect(solver.hasSolverType, "\(file)")
            let notes = try SolverUpgrader.upgrade(&solver, file: file)
            #expect(notes.count == 1 && notes[0].hasPrefix("upgraded solver_type: "), "\(file)")
            #expect(!solver.hasSolverType && solver.hasType, "\(file)")
        }
    }

    @Test("solver_type and type: agreeing is accepted, disagreeing is diagnosed")
    func solverConflict() throws {
        expectDiagnostic(["solver.prototxt", "solver_type: ADAM", "type: \"SGD\"", "disagree"]) {
            _ = try CaffeFiles.parseSolver(text: "base_lr: 0.1 solver_type: ADAM type: \"SGD\"", file: "solver.prototxt")
        }
        let agreeing = try CaffeFiles.parseSolver(text: "solver_type: NESTEROV type: \"Nesterov\"")
        #expect(agreeing.type == "Nesterov" && !agreeing.hasSolverType)
        var current = try CaffeFiles.parseSolver(text: "type: \"Adam\" base_lr: 0.01")
        #expect(try SolverUpgrader.upgrade(&current).isEmpty)
        #expect(SolverUpgrader.typeName(of: .sgd) == "SGD" && SolverUpgrader.typeName(of: .rmsprop) == "RMSProp")
    }
}
