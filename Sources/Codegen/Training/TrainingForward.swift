import CaffeFormat
import Graph
import Runtime

extension TrainingLowering {
    /// Lowers `node`'s forward pass: the inference lowering where its semantics are the same in
    /// training (its parameter constants rebound to the persistent parameter buffers), otherwise
    /// a training lowering (batch statistics, dropout masks, losses, metrics, structure ops).
    mutating func lowerForward(_ node: Node) throws {
        let firstStep = base.program.steps.count, firstBuffer = base.program.buffers.count
        switch node.kind {
        case .input, .data, .imageData, .hdf5Data, .windowData, .dummyData, .memoryData, .denseImageData, .annotatedData: try lowerFeed(node)
        case .convolution: try base.lowerConvolution(node)
        case .innerProduct: try base.lowerInnerProduct(node)
        case .pooling: try lowerPoolingForward(node)
        case .lrn: try base.lowerLRN(node)
        case .scale: try base.lowerScale(node)
        case .bias: try base.lowerBias(node)
        case .softmax: try base.lowerSoftmax(node)
        case .concat: try base.lowerConcat(node)
        case .eltwise: try lowerEltwiseForward(node)
        case .reshape, .flatten, .split: base.lowerView(node)
        case .silence, .hdf5Output: break
        case .batchNorm: try lowerBatchNormForward(node)
        case .dropout where graph.phase == .train: try lowerDropoutForward(node)
        case .softmaxWithLoss: try base.lowerSoftmaxWithLossForward(node)
        case .accuracy: try base.lowerAccuracy(node)
        case .python: try lowerHostForward(node)
        default:
            if try lowerExtraForward(node) {
                break
            } else if let function = try base.unaryFunction(node) {
                try base.lowerUnary(node, function)
            } else {
                throw unsupported(node, "no training lowering for this layer type yet")
            }
        }
        try checkNoConstants(node, firstBuffer: firstBuffer)
        forwardSteps.append(firstStep..<base.program.steps.count)
    }

    /// Pooling forward: the inference lowering. A 2-D MAX pooling whose input diff is wanted also
    /// saves its arg-max per output, as Caffe's forward fills `max_idx_`, so backward scatters
    /// the top diff without scanning the windows again (its mask top when it has one, else a
    /// buffer of its own that the memory plan keeps from this forward to that backward).
    mutating func lowerPoolingForward(_ node: Node) throws {
        let p = try node.poolingAttributes()
        guard p.method == .max, shape(node.inputs[0]).count == 4, analysis.writesBottomDiff(node, 0) else {
            return try base.lowerPooling(node)
        }
        let argmax = node.outputs.count > 1 ? base.buffer(node.outputs[1]) : base.scratch(node, "argmax", count: count(node.outputs[0]))
        savedArgmax[node.id] = argmax
        try base.lowerPooling(node, argmax: argmax)
    }

    /// Data-source tops become buffers the caller fills before each run (bound as program inputs so
    /// they are live from the first step). Constant `DummyData` fillers give default values.
    mutating func lowerFeed(_ node: Node) throws {
        let fillers = node.layer.dummyDataParam.dataFiller
        for (index, output) in node.outputs.enumerated() {
            let id = base.buffer(output)
            base.program.inputs.append(BlobBinding(name: graph.values[output].name, shape: shape(output), buffer: id))
            feeds.append(output)
            if node.kind == .dummyData {
                let filler = fillers.isEmpty ? Caffe_FillerParameter() : fillers[fillers.count == 1 ? 0 : min(index, fillers.count - 1)]
                if filler.type == "constant" {
                    feedDefaults[output] = Array(repeating: filler.value, count: count(output))
                }
            }
        }
    }

    /// Eltwise forward. PROD with `stable_prod_grad: false` and MAX need nothing extra: backward
    /// recomputes the arg-max and reads the product from the top.
    mutating func lowerEltwiseForward(_ node: Node) throws {
        try base.lowerEltwise(node)
    }

}
