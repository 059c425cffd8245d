import Codegen
import NumPy
import Runtime
import Testing

/// Every lowered op against Caffe's forward output, one line per golden case.
@Suite("Caffe golden layers")
struct GoldenLayerTests {
    static let cases = [
        "conv_k3_basic", "conv_k3_p1_s2", "conv_k1_p1", "conv_kh3_kw5_asym", "conv_dilation2", "conv_group2",
        "conv_depthwise", "conv_depthwise_mult2", "conv_nobias", "conv_two_bottoms", "deconv_k2_s2_nobias", "deconv_s2_p1",
        "pool_max_k3s2", "pool_max_k3s2p1", "pool_max_k2s2_odd", "pool_max_k2s2p1_clip", "pool_max_global",
        "pool_max_mask", "pool_max_rect", "pool_ave_k3s2", "pool_ave_k3s2p1", "pool_ave_k2s2_odd",
        "pool_ave_k2s2p1_clip", "pool_ave_global", "roi_pool_scale0p25",
        "ip_axis1", "ip_axis2", "ip_nobias", "ip_transpose", "ip_shared_params",
        "relu", "relu_inplace", "relu_slope0p1", "sigmoid", "tanh", "softmax_axis1", "softmax_axis2",
        "lrn_across", "lrn_within", "concat_axis1", "concat_axis2",
        "eltwise_sum3", "eltwise_sum_coeff", "eltwise_prod", "eltwise_prod_unstable", "eltwise_max",
        "bn_test_global", "bn_test_2d", "bn_test_eps_factor0p5", "bn_test_factor0", "bn_test_inplace",
        "scale_axis1_bias", "scale_axis1_numaxes2", "scale_numaxes0", "scale_2bottom_axis1", "scale_2bottom_axis0_bias",
        "bias_1bottom", "bias_2bottom", "dropout_test", "flatten",
        "reshape_0_m1", "reshape_0_2_m1_5", "reshape_insert_axis", "reshape_axis1_numaxes1_5d", "reshape_5d_pool_5d", "conv3d_5d",
        "split_explicit", "split_implicit", "input_only",
        "crop_axis1_single_offset", "crop_axis2", "slice_points_axis1", "tile_axis1", "batch_reindex", "embed", "filter",
        "dummydata_constant", "im2col", "prelu_channel", "prelu_shared", "reduction_asum_axis1", "reduction_mean_axis_m1",
        "reduction_sum_all", "argmax_axis1_outmax", "argmax_axis1_top2", "argmax_default", "mvn_across_channels", "mvn_default",
        "spp_max", "spp_ave",
        "absval", "power_p0p5", "power_p1_linear", "power_p2", "exp", "log", "bnll", "elu", "clip", "swish", "threshold",
        "lstm", "lstm_expose_hidden", "lstm_static", "rnn", "lstm_unit",
    ]

    @Test("forward matches Caffe within 1e-5 of the blob's largest value, with the host's kernels and the AVX2 ones",
          arguments: cases, VectorISA.allCases)
    func forward(_ name: String, _ isa: VectorISA) throws {
        try GoldenCase("layers", name).check(with: isa.shared, rtol: 1e-5)
    }
}

/// Convolutions built band by band (im2col of a few output rows, GEMM, epilogue, per thread) give
/// Caffe's numbers: a compiler that bands every convolution it can, one output row per band.
@Suite("banded convolutions")
struct BandedConvolutionTests {
    static let banding: Compiler = {
        do {
            let compiler = try Compiler(threads: 2)
            compiler.options.convolutionBanding = ConvolutionBanding(minimumBytes: 0, minimumColumns: 1)
            return compiler
        } catch { fatalError("cannot create the JIT: \(error)") }
    }()

    @Test("every golden convolution and net matches Caffe when its columns are built one output row at a time",
          arguments: ["layers/conv_k3_basic", "layers/conv_k3_p1_s2", "layers/conv_kh3_kw5_asym", "layers/conv_dilation2",
                      "layers/conv_group2", "layers/conv_two_bottoms", "layers/conv3d_5d", "nets/lenet_deploy", "nets/cifar10_quick",
                      "nets/cms_rcnn_head"])
    func golden(_ path: String) throws {
        let parts = path.split(separator: "/").map(String.init)
        let golden = try GoldenCase(parts[0], parts[1])
        let net = try Self.banding.compile(graph: golden.graph(), parameters: golden.parameters())
        let banded = net.executable.steps.contains { step in
            if case .items(let loop) = step.action { return loop.taskSlices } else { return false }
        }
        #expect(banded, "no convolution of \(path) was banded")
        try golden.check(with: Self.banding, rtol: 1e-5)
    }
}

/// Whole nets against Caffe's forward outputs for every blob.
@Suite("Caffe golden nets")
struct GoldenNetTests {
    @Test("whole-net forward matches Caffe on every blob within 1e-4 of its largest value, with the host's kernels and the AVX2 ones",
          arguments: ["lenet_deploy", "cifar10_quick", "conv3d_5d_pool", "cms_rcnn_head"], VectorISA.allCases)
    func forward(_ name: String, _ isa: VectorISA) throws {
        try GoldenCase("nets", name).check(with: isa.shared, rtol: 1e-4)
    }
}

/// Run-time checks Caffe makes with CHECK (an abort) and a kernel cannot: they must throw instead.
@Suite("Caffe run-time checks")
struct RuntimeCheckTests {
    @Test("a ROI whose batch index is outside the features' batch throws, naming the layer")
    func roiBatchIndexOutOfRange() throws {
        let golden = try GoldenCase("layers", "roi_pool_scale0p25")
        let net = try sharedCompiler.compile(graph: golden.graph(), parameters: [:])
        var inputs = try golden.inputs()
        var rois = inputs["rois"]!
        rois.data[5 * 3] = 2  // the features hold 2 images: index 2 is out of range
        inputs["rois"] = rois
        let error = #expect(throws: RuntimeError.self) { try net.run(inputs: inputs) }
        #expect(error?.message.contains("roi_pool") == true)
        #expect(error?.message.contains("ROI 3") == true)
        rois.data[5 * 3] = 1
        inputs["rois"] = rois
        _ = try net.run(inputs: inputs)
    }

    @Test("an Embed index outside input_dim throws, naming the layer")
    func embedIndexOutOfRange() throws {
        let golden = try GoldenCase("layers", "embed")
        let net = try sharedCompiler.compile(graph: golden.graph(), parameters: golden.parameters())
        var inputs = try golden.inputs()
        var indices = inputs["idx"]!
        indices.data[4] = 7  // input_dim is 7
        inputs["idx"] = indices
        let error = #expect(throws: RuntimeError.self) { try net.run(inputs: inputs) }
        #expect(error?.message.contains("embed") == true)
        #expect(error?.message.contains("element 4") == true)
    }
}

/// Exact ties, which the random golden inputs never produce.
@Suite("Caffe tie-breaking")
struct TieTests {
    @Test("ArgMax top_k orders equal values larger index first, like Caffe's partial_sort on (value, index)")
    func argMaxTies() throws {
        let text = """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 5 } } }
        layer { name: "am" type: "ArgMax" bottom: "x" top: "y" argmax_param { top_k: 4 out_max_val: true } }
        """
        let net = try sharedCompiler.compile(graph: graph(text), parameters: [:])
        let y = try net.run(inputs: ["x": NDArray(shape: [1, 5], data: [1, 2, 2, 0, 2])])["y"]!
        #expect(y.data == [4, 2, 1, 0, 2, 2, 2, 1])
    }
}
