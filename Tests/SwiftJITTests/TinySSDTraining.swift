import Codegen
import Foundation
import SwiftJIT

/// The small SSD-shaped train nets the AnnotatedData tests train: the heads on two feature maps
/// (`conv2`, `conv3`), their concatenations and a 3-class MultiBoxLoss, and a short SGD run of
/// such a net from a folder holding its data. The tests give the data layer and the trunk.
enum TinySSDTraining {
    /// One feature map's loc and conf heads (Permute + Flatten) and its PriorBox over `data`.
    static func head(_ f: String, minSize: Int, maxSize: Int) -> String {
        """
        layer { name: "\(f)_loc" type: "Convolution" bottom: "\(f)" top: "\(f)_loc" convolution_param { num_output: 16 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
        layer { name: "\(f)_loc_perm" type: "Permute" bottom: "\(f)_loc" top: "\(f)_loc_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
        layer { name: "\(f)_loc_flat" type: "Flatten" bottom: "\(f)_loc_perm" top: "\(f)_loc_flat" flatten_param { axis: 1 } }
        layer { name: "\(f)_conf" type: "Convolution" bottom: "\(f)" top: "\(f)_conf" convolution_param { num_output: 12 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
        layer { name: "\(f)_conf_perm" type: "Permute" bottom: "\(f)_conf" top: "\(f)_conf_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
        layer { name: "\(f)_conf_flat" type: "Flatten" bottom: "\(f)_conf_perm" top: "\(f)_conf_flat" flatten_param { axis: 1 } }
        layer { name: "\(f)_prior" type: "PriorBox" bottom: "\(f)" bottom: "data" top: "\(f)_prior"
                prior_box_param { min_size: \(minSize) max_size: \(maxSize) aspect_ratio: 2 flip: true variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } }
        """
    }

    /// Both heads (prior sizes `first` on conv2, `second` on conv3), concatenated into the MultiBoxLoss.
    static func heads(_ first: (Int, Int), _ second: (Int, Int)) -> String {
        """
        \(head("conv2", minSize: first.0, maxSize: first.1))
        \(head("conv3", minSize: second.0, maxSize: second.1))
        layer { name: "mbox_loc" type: "Concat" bottom: "conv2_loc_flat" bottom: "conv3_loc_flat" top: "mbox_loc" concat_param { axis: 1 } }
        layer { name: "mbox_conf" type: "Concat" bottom: "conv2_conf_flat" bottom: "conv3_conf_flat" top: "mbox_conf" concat_param { axis: 1 } }
        layer { name: "mbox_priorbox" type: "Concat" bottom: "conv2_prior" bottom: "conv3_prior" top: "mbox_priorbox" concat_param { axis: 2 } }
        layer { name: "mbox_loss" type: "MultiBoxLoss" bottom: "mbox_loc" bottom: "mbox_conf" bottom: "mbox_priorbox" bottom: "label" top: "mbox_loss"
                include { phase: TRAIN } propagate_down: true propagate_down: true propagate_down: false propagate_down: false
                loss_param { normalization: VALID }
                multibox_loss_param { loc_loss_type: SMOOTH_L1 conf_loss_type: SOFTMAX loc_weight: 1 num_classes: 3 share_location: true
                  match_type: PER_PREDICTION overlap_threshold: 0.5 use_prior_for_matching: true background_label_id: 0
                  use_difficult_gt: true neg_pos_ratio: 3 neg_overlap: 0.5 code_type: CENTER_SIZE mining_type: MAX_NEGATIVE } }
        """
    }

    /// Writes `net` and an SGD solver (lr 0.01, momentum 0.9, seed 5) into `folder` and trains
    /// `iterations` iterations quietly, sources resolved in `folder`; returns the losses.
    static func train(_ net: String, in folder: URL, iterations: Int) throws -> [Float] {
        try net.write(to: folder.appendingPathComponent("train.prototxt"), atomically: true, encoding: .utf8)
        let solver = folder.appendingPathComponent("solver.prototxt")
        try """
        net: "train.prototxt" base_lr: 0.01 momentum: 0.9 lr_policy: "fixed" max_iter: \(iterations) display: 0 random_seed: 5 type: "SGD" snapshot_after_train: false
        """.write(to: solver, atomically: true, encoding: .utf8)
        var options = TrainingOptions()
        options.baseDirectory = folder.path
        options.progress = .quiet
        let trainer = try Trainer(solverPath: solver.path, options: options, compiler: try Compiler())
        return try trainer.train().losses.map(\.loss)
    }
}
