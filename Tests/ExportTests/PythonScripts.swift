/// The Python side of the export tests: onnx's checker, ONNX Runtime, and NumPy references.
/// Each script prints one JSON object on its last line.
enum PythonScripts {
    /// `model.onnx inputs.npz expected.npz|- [batch]`: checks the model, runs it on the inputs
    /// (random normals of each input's shape with axis 0 = batch when inputs is `-`), exposes every
    /// tensor named like an expected blob as an extra output, and reports per-blob differences
    /// in graph order (`rel` = max |a-b| / max |b|).
    static let runONNX = """
        import json
        model_path, inputs_path, expected_path = sys.argv[1:4]
        batch = int(sys.argv[4]) if len(sys.argv) > 4 else None
        m = onnx.load(model_path)
        onnx.checker.check_model(m, full_check=True)
        expected = dict(np.load(expected_path)) if expected_path != '-' else {}
        produced = [o for n in m.graph.node for o in n.output]
        declared = [o.name for o in m.graph.output]
        for k in expected:
            if k in produced and k not in declared:
                m.graph.output.append(onnx.ValueInfoProto(name=k))
        options = ort.SessionOptions(); options.log_severity_level = 3
        session = ort.InferenceSession(m.SerializeToString(), options, providers=['CPUExecutionProvider'])
        if inputs_path != '-':
            given = dict(np.load(inputs_path))
            feed = {i.name: given[i.name].astype(np.float32) for i in session.get_inputs()}
        else:
            rng = np.random.RandomState(0)
            feed = {i.name: rng.randn(*([batch] + [int(d) for d in i.shape[1:]])).astype(np.float32) for i in session.get_inputs()}
        results = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
        report = {"inputs": {k: list(v.shape) for k, v in feed.items()},
                  "outputs": {k: list(results[k].shape) for k in declared},
                  "finite": all(bool(np.isfinite(results[k]).all()) for k in declared),
                  "blobs": [], "missing": [k for k in expected if k not in results]}
        for k in [n for n in produced if n in expected]:
            a, b = results[k], expected[k]
            if a.shape != b.shape:
                report["blobs"].append({"name": k, "shape": list(a.shape), "expected": list(b.shape), "rel": 1e9}); continue
            scale = float(np.abs(b).max()) if b.size else 0.0
            diff = float(np.abs(a - b).max()) if b.size else 0.0
            report["blobs"].append({"name": k, "max_abs": diff, "rel": diff / scale if scale > 0 else diff})
        print(json.dumps(report))
        """

    /// `hwio.npz oihw.npz key x.npy onnx_model run.npz`: the migration case. Convolves x (N×C×H×W) with
    /// the exported OIHW weights in NCHW, and with the exported HWIO weights in NHWC (the way
    /// TensorFlow does), both in float64 NumPy with pad 2; also runs the exported ONNX model and
    /// reads `swiftjit run`'s NCHW output of the same convolution.
    static let migration = """
        import json
        hwio_path, oihw_path, key, x_path, model_path, run_path = sys.argv[1:7]
        W_hwio = np.load(hwio_path)[key].astype(np.float64)
        W_oihw = np.load(oihw_path)[key].astype(np.float64)
        bias_key = key.rsplit('/', 1)[0] + '/1'
        b = np.load(oihw_path)[bias_key].astype(np.float64)
        x = np.load(x_path).astype(np.float64)
        pad = 2
        def nchw(x, W):
            N, C, H, Wd = x.shape; O, I, KH, KW = W.shape
            xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
            y = np.zeros((N, O, H + 2 * pad - KH + 1, Wd + 2 * pad - KW + 1))
            for i in range(KH):
                for j in range(KW):
                    y += np.einsum('nchw,oc->nohw', xp[:, :, i:i + y.shape[2], j:j + y.shape[3]], W[:, :, i, j])
            return y + b[None, :, None, None]
        def nhwc(x, W):
            N, H, Wd, C = x.shape; KH, KW, I, O = W.shape
            xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
            y = np.zeros((N, H + 2 * pad - KH + 1, Wd + 2 * pad - KW + 1, O))
            for i in range(KH):
                for j in range(KW):
                    y += np.einsum('nhwc,co->nhwo', xp[:, i:i + y.shape[1], j:j + y.shape[2], :], W[i, j])
            return y + b
        reference = nchw(x, W_oihw)
        ported = nhwc(x.transpose(0, 2, 3, 1), W_hwio).transpose(0, 3, 1, 2)
        session = ort.InferenceSession(model_path, providers=['CPUExecutionProvider'])
        runtime = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]
        ours = np.load(run_path)[key.rsplit('/', 1)[0]]
        scale = float(np.abs(reference).max())
        print(json.dumps({"hwio_shape": list(W_hwio.shape), "output_shape": list(reference.shape),
                          "nhwc_vs_nchw": float(np.abs(ported - reference).max()) / scale,
                          "onnx_vs_nchw": float(np.abs(runtime - reference).max()) / scale,
                          "swiftjit_vs_nchw": float(np.abs(ours - reference).max()) / scale,
                          "nhwc_vs_swiftjit": float(np.abs(ported - ours).max()) / scale}))
        """

    /// `model.onnx configs.json`: Caffe's pooling (pooling_layer.cpp, ported line by line to
    /// float64 NumPy) against ONNX Runtime for each `{"input", "output", "pool", "kernel", "stride", "pad"}`.
    static let poolingReference = """
        import json, math
        model_path, configs_path = sys.argv[1:3]
        configs = json.load(open(configs_path))
        session = ort.InferenceSession(model_path, providers=['CPUExecutionProvider'])
        rng = np.random.RandomState(1)
        feed = {i.name: rng.randn(*[int(d) if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32) for i in session.get_inputs()}
        results = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
        def caffe_pool(x, pool, k, s, p):
            N, C, H, W = x.shape
            def size(n):
                out = int(math.ceil((n + 2 * p - k) / s)) + 1
                if p > 0 and (out - 1) * s >= n + p: out -= 1
                return out
            PH, PW = size(H), size(W)
            y = np.zeros((N, C, PH, PW))
            for ph in range(PH):
                for pw in range(PW):
                    hs, ws = ph * s - p, pw * s - p
                    he, we = min(hs + k, H + p), min(ws + k, W + p)
                    area = (he - hs) * (we - ws)
                    hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, H), min(we, W)
                    window = x[:, :, hs:he, ws:we].astype(np.float64)
                    y[:, :, ph, pw] = window.max(axis=(2, 3)) if pool == 'MAX' else window.sum(axis=(2, 3)) / area
            return y
        report = []
        for c in configs:
            ref = caffe_pool(feed[c["input"]], c["pool"], c["kernel"], c["stride"], c["pad"])
            got = results[c["output"]]
            entry = {"output": c["output"], "shape": list(got.shape), "expected": list(ref.shape)}
            if got.shape == ref.shape:
                entry["max_abs"] = float(np.abs(got - ref).max())
            report.append(entry)
        print(json.dumps({"pools": report}))
        """
}
