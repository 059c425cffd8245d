import CaffeFormat
import Graph
import Runtime

extension TrainingLowering {
    /// Forward lowerings of the layers only training lowers (structure, losses, and layers the
    /// inference lowering lacks); false when `node` is not one of them.
    mutating func lowerExtraForward(_ node: Node) throws -> Bool {
        switch node.kind {
        case .deconvolution: try lowerDeconvolutionForward(node)
        case .slice: try lowerSliceForward(node)
        case .crop: try lowerCropForward(node)
        case .tile: try lowerTileForward(node)
        case .sigmoidCrossEntropyLoss: try base.lowerSigmoidCrossEntropyForward(node)
        case .euclideanLoss: try base.lowerEuclideanForward(node)
        case .hingeLoss: try base.lowerHingeForward(node)
        case .multinomialLogisticLoss: try base.lowerMultinomialLogisticForward(node)
        case .infogainLoss: try base.lowerInfogainForward(node)
        case .contrastiveLoss: try base.lowerContrastiveForward(node)
        case .prelu: try lowerPReLUForward(node)
        case .mvn: try lowerMVNForward(node)
        case .embed: try lowerEmbedForward(node)
        case .reduction: try lowerReductionForward(node)
        case .parameter: try lowerParameterForward(node)
        case .batchReindex: try lowerBatchReindexForward(node)
        case .filter: try base.lowerFilter(node)
        case .argMax: try lowerArgMax(node)
        case .im2col: try lowerIm2colForward(node)
        case .spp: try lowerSPPForward(node)
        case .roiPooling: try lowerROIPoolingForward(node)
        case .psroiPooling: try lowerPSROIPoolingForward(node)
        case .lstmUnit: try base.lowerLSTMUnit(node)
        case .lstm, .rnn: try base.lowerRecurrent(node, savesOutput: true)
        case .upsample: try base.lowerUpsample(node)
        case .bn: try base.lowerBN(node)
        case .spatialDropout: try lowerSpatialDropoutForward(node)
        case .transpose: try base.lowerTranspose(node)
        case .reverse: try base.lowerReverse(node)
        case .ctpnLSTM: try base.lowerCTPNLSTM(node)
        // SSD's train net (MultiBoxLoss and the layers between its heads and the loss).
        case .multiBoxLoss: try base.lowerMultiBoxLoss(node)
        case .permute: try base.lowerPermute(node)
        case .priorBox: try base.lowerPriorBox(node)
        case .normalize: try lowerNormalizeForward(node)
        // Inference-side fork layers in train nets (GradientForwardOnly.swift).
        case .reorg: try base.lowerReorg(node)
        case .proposal: try base.lowerProposal(node)
        case .detectionOutput: try base.lowerDetectionOutput(node)
        case .region: try base.lowerRegion(node)
        default: return false
        }
        return true
    }

    /// Backward lowerings of every layer that is not element-wise; false when `node` is none of them.
    mutating func lowerExtraBackward(_ node: Node) throws -> Bool {
        switch node.kind {
        case .softmax: try lowerSoftmaxBackward(node)
        case .concat: try lowerConcatBackward(node)
        case .slice: try lowerSliceBackward(node)
        case .crop: try lowerCropBackward(node)
        case .tile: try lowerTileBackward(node)
        case .lrn: try lowerLRNBackward(node)
        case .batchNorm: try lowerBatchNormBackward(node)
        case .scale: try lowerScaleBackward(node)
        case .bias: try lowerBiasBackward(node)
        case .sigmoidCrossEntropyLoss: try lowerSigmoidCrossEntropyBackward(node)
        case .euclideanLoss: try lowerEuclideanBackward(node)
        case .hingeLoss: try lowerHingeBackward(node)
        case .multinomialLogisticLoss: try lowerMultinomialLogisticBackward(node)
        case .infogainLoss: try lowerInfogainBackward(node)
        case .contrastiveLoss: try lowerContrastiveBackward(node)
        case .prelu: try lowerPReLUBackward(node)
        case .mvn: try lowerMVNBackward(node)
        case .embed: try lowerEmbedBackward(node)
        case .reduction: try lowerReductionBackward(node)
        case .parameter: try lowerParameterBackward(node)
        case .batchReindex: try lowerBatchReindexBackward(node)
        case .filter: try lowerFilterBackward(node)
        case .im2col: try lowerIm2colBackward(node)
        case .spp: try lowerSPPBackward(node)
        case .roiPooling: try lowerROIPoolingBackward(node)
        case .psroiPooling: try lowerPSROIPoolingBackward(node)
        case .lstmUnit: try lowerLSTMUnitBackward(node)
        case .lstm, .rnn: try lowerRecurrentBackward(node)
        case .upsample: try lowerUpsampleBackward(node)
        case .bn: try lowerBNBackward(node)
        case .spatialDropout: try lowerSpatialDropoutBackward(node)
        case .transpose: try lowerTransposeBackward(node)
        case .reverse: try lowerReverseBackward(node)
        case .ctpnLSTM: try lowerCTPNLSTMBackward(node)
        // SSD's train net.
        case .multiBoxLoss: try lowerMultiBoxLossBackward(node)
        case .permute: try lowerPermuteBackward(node)
        case .priorBox: try lowerPriorBoxBackward(node)
        case .normalize: try lowerNormalizeBackward(node)
        // Inference-side fork layers in train nets (GradientForwardOnly.swift).
        case .reorg: try lowerReorgBackward(node)
        case .proposal: try lowerProposalBackward(node)
        case .detectionOutput, .region: lowerInferenceOnlyBackward(node)
        default: return false
        }
        return true
    }
}
