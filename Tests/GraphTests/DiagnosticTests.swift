import Foundation
import Testing
import CaffeFormat
@testable import Graph

/// The errors people see, pinned word for word: each names the file and line:column (or the
/// layer and blob), shows both shapes when shapes conflict, and says what to do.
@Suite("errors people can act on")
struct DiagnosticTests {
    func buildError(_ text: String, file: String = "net.prototxt", phase: Caffe_Phase = .test) -> String {
        do {
            _ = try GraphBuilder(phase: phase).build(try CaffeFiles.parseNet(text: text, file: file))
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    @Test("a bottom nobody produces suggests the closest blob")
    func missingBottom() {
        let text = """
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
        layer { name: "conv1" type: "Convolution" bottom: "dta" top: "conv1" convolution_param { num_output: 2 kernel_size: 3 } }
        """
        #expect(buildError(text) == "net.prototxt:2:1: layer 'conv1': bottom 'dta' is not produced by any earlier layer\n  hint: did you mean 'data'?")
    }

    @Test("a bottom made only in the other phase says so")
    func bottomFromOtherPhase() {
        let text = """
        layer { name: "data" type: "DummyData" top: "data" include { phase: TRAIN } dummy_data_param { shape { dim: 2 dim: 3 } } }
        layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
        """
        #expect(buildError(text) == "net.prototxt:2:1: layer 'ip': bottom 'data' is not produced by any earlier layer\n  hint: 'data' exists, but the layer 'data' that makes it is only in phase TRAIN; this net is being built for phase TEST")
    }

    @Test("an unknown layer type lists the closest supported ones")
    func unknownType() {
        let text = """
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
        layer { name: "x" type: "Convolutoin" bottom: "data" top: "x" }
        """
        let message = buildError(text)
        #expect(message.hasPrefix("net.prototxt:2:1: layer 'x': unknown layer type 'Convolutoin' — did you mean 'Convolution' or 'Deconvolution'?\n  hint: supported types: AbsVal, Accuracy,"))
    }

    @Test("a Python layer is named as unsupported, except py-faster-rcnn's proposal layer, which needs its feat_stride")
    func pythonLayer() {
        let text = """
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }
        layer { name: "input-data" type: "Python" top: "data2" python_param { module: "roi_data_layer.layer" layer: "RoIDataLayer" } }
        """
        #expect(buildError(text) == "net.prototxt:2:1: layer 'input-data': layer type 'Python' is not supported: it runs arbitrary Python code inside Caffe (py-faster-rcnn's rpn.proposal_layer is the exception: it runs natively as Proposal)\n  hint: replace the layer by supported ones, or feed its tops as net inputs (Input layer) and run it outside SwiftJIT")
        let proposal = """
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }
        layer { name: "proposal" type: "Python" bottom: "data" top: "rois" python_param { module: "rpn.proposal_layer" layer: "ProposalLayer" } }
        """
        #expect(buildError(proposal) == "net.prototxt:2:1: layer 'proposal': py-faster-rcnn's ProposalLayer needs 'feat_stride' in param_str, got \"\"\n  hint: e.g. param_str: \"'feat_stride': 16\"")
    }

    @Test("Eltwise of label (10) and DummyData noise (10×1×1×1) shows both shapes and the Reshape fix")
    func eltwiseLabelNoise() {
        let text = """
        layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 10 } } }
        layer { name: "noise" type: "DummyData" top: "noise"
                dummy_data_param { data_filler { type: "uniform" min: 0 max: 0.1 } shape { dim: 10 dim: 1 dim: 1 dim: 1 } } }
        layer { name: "label_noise" type: "Eltwise" bottom: "label" bottom: "noise" top: "label_noise" eltwise_param { operation: SUM } }
        """
        #expect(buildError(text) == "net.prototxt:4:1: layer 'label_noise': Eltwise inputs must have identical shapes: 'label' is 10, 'noise' is 10×1×1×1\n  hint: they hold the same number of values (10); add a Reshape layer (reshape_param { shape { dim: 10 } }) to make 'noise' 10")
    }

    @Test("Concat inputs that disagree off the concat axis")
    func concatMismatch() {
        let text = """
        layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
        layer { name: "b" type: "Input" top: "b" input_param { shape { dim: 1 dim: 3 dim: 5 dim: 4 } } }
        layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "cat" }
        """
        #expect(buildError(text) == "net.prototxt:3:1: layer 'cat': Concat inputs must match on every axis except the concat axis 1: 'a' (1×3×4×4) vs 'b' (1×3×5×4) differ on axis 2\n  hint: check the layers that produce these blobs, or concatenate along axis 2 (concat_param { axis: 2 })")
    }

    @Test("loss inputs: batch sizes and value counts")
    func lossInputs() {
        let batch = """
        layer { name: "s" type: "Input" top: "s" input_param { shape { dim: 10 } } }
        layer { name: "t" type: "Input" top: "t" input_param { shape { dim: 5 } } }
        layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "s" bottom: "t" top: "loss" }
        """
        #expect(buildError(batch) == "net.prototxt:3:1: layer 'loss': SigmoidCrossEntropyLoss inputs must have the same first (batch) dimension: 's' (10) vs 't' (5)")
        let labels = """
        layer { name: "s" type: "Input" top: "s" input_param { shape { dim: 4 dim: 10 } } }
        layer { name: "l" type: "Input" top: "l" input_param { shape { dim: 4 dim: 2 } } }
        layer { name: "loss" type: "SoftmaxWithLoss" bottom: "s" bottom: "l" top: "loss" }
        """
        #expect(buildError(labels) == "net.prototxt:3:1: layer 'loss': SoftmaxWithLoss needs one label per prediction: 's' (4×10) makes 4 predictions along axis 1, but 'l' (4×2) holds 8 labels\n  hint: labels are N (or N×1×H×W) integers for N×C(×H×W) scores")
    }

    @Test("a top written twice, pooling pad ≥ kernel, reshape with two -1")
    func configurationErrors() {
        #expect(buildError("""
        layer { name: "a" type: "Input" top: "x" input_param { shape { dim: 1 } } }
        layer { name: "b" type: "Input" top: "x" input_param { shape { dim: 1 } } }
        """) == "net.prototxt:2:1: layer 'b': top blob 'x' is already produced by layer 'a'\n  hint: give the top a new name; writing a blob in place is only allowed when top N equals bottom N")
        #expect(buildError("""
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 1 dim: 5 dim: 5 } } }
        layer { name: "p" type: "Pooling" bottom: "x" top: "p" pooling_param { kernel_size: 2 pad: 2 } }
        """) == "net.prototxt:2:1: layer 'p': pooling pad (2) must be smaller than the kernel (2)\n  hint: Caffe rejects this too (pooling_layer.cpp: pad < kernel); reduce pad")
        #expect(buildError("""
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 6 } } }
        layer { name: "r" type: "Reshape" bottom: "x" top: "r" reshape_param { shape { dim: -1 dim: -1 } } }
        """) == "net.prototxt:2:1: layer 'r': Reshape shape has more than one -1 dim; at most one can be inferred\n  hint: replace all but one -1 by the actual size (or 0 to copy the input's)")
    }

    /// The classic fine-tuning trap: a 1×1 convolution with pad 1 grows a 7×7 ROI-pooled map to 9×9,
    /// so fc6 receives 10368 = 128×9×9 values while the caffemodel's fc6 was trained on 25088.
    @Test("a weight shape mismatch explains where the net's shape comes from")
    func weightMismatch() throws {
        let text = """
        name: "cms_head"
        layer { name: "input" type: "Input" top: "conv5_3" top: "rois" input_param { shape { dim: 1 dim: 512 dim: 14 dim: 14 } shape { dim: 1 dim: 5 } } }
        layer { name: "roi_pool5" type: "ROIPooling" bottom: "conv5_3" bottom: "rois" top: "roi_pool5" roi_pooling_param { pooled_h: 7 pooled_w: 7 spatial_scale: 0.0625 } }
        layer { name: "roi_conv1x1" type: "Convolution" bottom: "roi_pool5" top: "roi_conv1x1" convolution_param { num_output: 128 kernel_size: 1 pad: 1 } }
        layer { name: "fc6" type: "InnerProduct" bottom: "roi_conv1x1" top: "fc6" inner_product_param { num_output: 4096 } }
        """
        let graph = try GraphBuilder().build(try CaffeFiles.parseNet(text: text, file: "head.prototxt"))
        var weights = Caffe_NetParameter()
        var fc6 = Caffe_LayerParameter()
        fc6.name = "fc6"
        fc6.type = "InnerProduct"
        var w = Caffe_BlobProto()
        w.shape.dim = [4096, 25088]  // shape only: the check stops before reading 100M values
        var b = Caffe_BlobProto()
        b.shape.dim = [4096]
        b.data = Array(repeating: 0, count: 4096)
        fc6.blobs = [w, b]
        weights.layer = [fc6]
        #expect(throws: Diagnostic.self) { try WeightBinding.check(graph, weights: weights, file: "vgg16.caffemodel") }
        do {
            _ = try WeightBinding.check(graph, weights: weights, file: "vgg16.caffemodel")
        } catch {
            #expect("\(error)" == """
            vgg16.caffemodel: layer 'fc6': cannot copy param 0 (weights): the caffemodel's blob is 4096×25088, the net's is 4096×10368 (it was trained on 25088 input values per item); the net's shape follows from its input 'roi_conv1x1' 1×128×9×9 (10368 = 128×9×9 values per item), made by layer 'roi_conv1x1' (Convolution kernel 1×1 pad 1×1) from 'roi_pool5' 1×512×7×7 — its pad 1×1 grows a 1×1 convolution's output from 7×7 to 9×9
              hint: Caffe copies parameters by layer name: to learn 'fc6' from scratch instead, rename the layer; to reuse these weights, make its input match the shape they were trained for
            """)
        }
    }

    @Test("legacy 4-D blob dims (1 1 64 392) load into a 64×392 InnerProduct; a wrong blob count is named")
    func legacyDims() throws {
        let text = """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 8 dim: 7 dim: 7 } } }
        layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 64 } }
        """
        let graph = try GraphBuilder().build(try CaffeFiles.parseNet(text: text))
        var layer = Caffe_LayerParameter()
        layer.name = "ip"
        var w = Caffe_BlobProto()
        (w.num, w.channels, w.height, w.width) = (1, 1, 64, 392)
        w.data = Array(repeating: 0.5, count: 64 * 392)
        var b = Caffe_BlobProto()
        (b.num, b.channels, b.height, b.width) = (1, 1, 1, 64)
        b.data = Array(repeating: 0, count: 64)
        layer.blobs = [w, b]
        var weights = Caffe_NetParameter()
        weights.layer = [layer]
        let report = try WeightBinding.check(graph, weights: weights, file: "v1.caffemodel")
        #expect(report.initialized == ["ip"])
        layer.blobs = [w]
        weights.layer = [layer]
        #expect(throws: Diagnostic.self) { try WeightBinding.check(graph, weights: weights, file: "v1.caffemodel") }
    }
}

@Suite("Filter's shape checks")
struct FilterShapeTests {
    func buildError(_ filter: String, x: String = "dim: 4 dim: 3", z: String = "dim: 4 dim: 5", sel: String = "dim: 4") -> String {
        let text = """
        layer { name: "x" type: "Input" top: "x" input_param { shape { \(x) } } }
        layer { name: "z" type: "Input" top: "z" input_param { shape { \(z) } } }
        layer { name: "sel" type: "Input" top: "sel" input_param { shape { \(sel) } } }
        \(filter)
        """
        do {
            _ = try GraphBuilder(phase: .test).build(try CaffeFiles.parseNet(text: text, file: "net.prototxt"))
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    static let filter = #"layer { name: "pick" type: "Filter" bottom: "x" bottom: "z" bottom: "sel" top: "fx" top: "fz" }"#

    @Test("a selector whose length differs from the rows names the layer and both shapes")
    func selectorLength() {
        #expect(buildError(Self.filter, sel: "dim: 5") == "net.prototxt:4:1: layer 'pick': Filter's selector 'sel' (5) has 5 values, but 'x' (4×3) has 4 rows\n  hint: the selector (the last bottom) needs one value per row of every filtered bottom")
    }

    @Test("filtered bottoms with different row counts name both blobs")
    func dataRows() {
        #expect(buildError(Self.filter, z: "dim: 3 dim: 5") == "net.prototxt:4:1: layer 'pick': Filter's filtered bottoms must have the same number of rows (first axis): 'x' (4×3) has 4, 'z' (3×5) has 3\n  hint: the selector picks the same rows of every bottom; filter blobs of different batch sizes with separate Filter layers")
    }

    @Test("a selector with more than one value per row is refused, as Caffe's singleton check does")
    func selectorSingletons() {
        #expect(buildError(Self.filter, sel: "dim: 4 dim: 2").hasPrefix("net.prototxt:4:1: layer 'pick': Filter's selector 'sel' (4×2) must hold one value per row: shape N, or N×1×…×1"))
        #expect(buildError(Self.filter, sel: "dim: 4 dim: 1 dim: 1") == "no error")
    }

    @Test("one top per filtered bottom")
    func topCount() {
        let filter = #"layer { name: "pick" type: "Filter" bottom: "x" bottom: "z" bottom: "sel" top: "fx" }"#
        #expect(buildError(filter).hasPrefix("net.prototxt:4:1: layer 'pick': Filter filters 2 bottoms (the last bottom, 'sel', is the selector), so it needs 2 tops, got 1"))
    }
}

@Suite("net state")
struct NetStateTests {
    static let text = """
    layer { name: "train_data" type: "DummyData" top: "data" include { phase: TRAIN } dummy_data_param { shape { dim: 4 dim: 3 } } }
    layer { name: "val_data" type: "DummyData" top: "data" include { phase: TEST stage: "test-on-val" } dummy_data_param { shape { dim: 2 dim: 3 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
    """

    @Test("a layer missing only for lack of a stage names the stage to pass")
    func stageHint() {
        do {
            _ = try GraphBuilder(phase: .test).build(try CaffeFiles.parseNet(text: Self.text, file: "net.prototxt"))
            Issue.record("expected an error")
        } catch {
            #expect("\(error)" == "net.prototxt:3:1: layer 'ip': bottom 'data' is not produced by any earlier layer\n  hint: 'data' is made by layer 'val_data' only when stage 'test-on-val' is set: pass --stage test-on-val (a solver's test_state/train_state sets stages)")
        }
    }

    @Test("with enablesMissingStages the stage is enabled and noted")
    func stageEnabled() throws {
        let graph = try GraphBuilder(phase: .test, enablesMissingStages: true).build(try CaffeFiles.parseNet(text: Self.text))
        #expect(graph.value(named: "ip")?.shape == TensorShape([2, 2]))
        #expect(graph.notes == ["built with stage 'test-on-val', which layer 'val_data' needs in phase TEST (a solver's test_state/train_state sets it; choose with --stage)"])
        let train = try GraphBuilder(phase: .train, stages: ["test-on-val"]).build(try CaffeFiles.parseNet(text: Self.text))
        #expect(train.value(named: "ip")?.shape == TensorShape([4, 2]))
    }
}
