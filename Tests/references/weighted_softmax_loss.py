"""NumPy reference of SoftmaxWithLoss with SegNet's and ENet's class weighting, written from the
forks' C++ (alexgkendall/caffe-segnet and TimoSaemann/caffe-enet, identical there):
src/caffe/layers/softmax_loss_layer.cpp, LayerSetUp / Forward_cpu / Backward_cpu.
Independent of the Swift implementation; float64 arithmetic.

  Forward:  loss = -sum over non-ignored positions of log(max(prob[label], FLT_MIN)) * w[label]
            (w[label] = class_weighting[label] when weight_by_label_freqs, else 1), divided by the
            count of non-ignored positions (normalize: true, the forks' default) or by the outer
            count N (normalize: false). The normalizer is a count, not the sum of the weights.
  Backward: diff = prob; diff[label] -= 1; every class's diff at the position times w[label];
            zero at ignored positions; all times loss_weight / the same normalizer.

BVLC's `normalization` modes (FULL, VALID, BATCH_SIZE, NONE, each at least 1), which the forks'
code does not read, are applied when the config names one: SwiftJIT's superset honours them with
the weights too.

Usage: python3 weighted_softmax_loss.py inputs.npz config.json  -> prints JSON {"loss", "grad"}
inputs.npz holds scores (N x C [x H x W]) and label (N values per position, any shape).
config.json: {"weight_by_label_freqs": bool, "class_weighting": [...], "ignore_label": int?,
              "normalize": bool?, "normalization": "FULL"|"VALID"|"BATCH_SIZE"|"NONE"?,
              "loss_weight": float}
"""
import json
import sys

import numpy as np

FLT_MIN = float(np.finfo(np.float32).tiny)


def weighted_softmax_loss(scores, label, config):
    scores = scores.astype(np.float64)
    outer, classes = scores.shape[0], scores.shape[1]
    inner = int(np.prod(scores.shape[2:])) if scores.ndim > 2 else 1
    x = scores.reshape(outer, classes, inner)
    labels = label.reshape(outer, inner).astype(np.int64)   # static_cast<int> of the float label
    shifted = x - x.max(axis=1, keepdims=True)
    prob = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)

    weighted = config.get("weight_by_label_freqs", False)
    weights = np.asarray(config.get("class_weighting", []), np.float64)
    if weighted and len(weights) != classes:
        raise SystemExit("Number of class weight values does not match the number of classes.")
    has_ignore = "ignore_label" in config
    ignore = config.get("ignore_label")

    loss, count = 0.0, 0
    diff = prob.copy()
    for i in range(outer):
        for j in range(inner):
            value = int(labels[i, j])
            if has_ignore and value == ignore:
                diff[i, :, j] = 0
                continue
            w = float(weights[value]) if weighted else 1.0
            loss -= np.log(max(prob[i, value, j], FLT_MIN)) * w
            diff[i, value, j] -= 1
            diff[i, :, j] *= w
            count += 1

    mode = config.get("normalization")
    if mode is None:
        normalizer = count if config.get("normalize", True) else outer
    else:
        normalizer = {"FULL": outer * inner, "VALID": count, "BATCH_SIZE": outer, "NONE": 1}[mode]
        normalizer = max(1.0, normalizer)
    loss_weight = float(config.get("loss_weight", 1.0))
    return loss / normalizer, (diff * (loss_weight / normalizer)).reshape(scores.shape)


def main():
    inputs = np.load(sys.argv[1])
    with open(sys.argv[2]) as handle:
        config = json.load(handle)
    loss, grad = weighted_softmax_loss(inputs["scores"], inputs["label"], config)
    json.dump({"loss": loss, "grad": grad.ravel().tolist()}, sys.stdout)


if __name__ == "__main__":
    main()
