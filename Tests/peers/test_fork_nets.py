"""Issue 14's whole nets from the forks: `swiftjit run` against OpenCV DNN on the same seeded random
weights (`swiftjit init`) and inputs, to 1e-3 of each output's largest magnitude.

- DenseNet-121 (shicai/DenseNet-Caffe, no license given: built here by `densenet121()` in the same
  shape, layer for layer) at 72×72, so that its pooling sizes are odd and `ceil_mode: false` matters.
- ResNeXt-50 32x4d and DPN-92 (soeaver/caffe-model, MIT: nets/) at 64×64.
- YOLOv2 (Intel Caffe's benchmark model ends in EvalDetection, which OpenCV lacks; `yolov2()` builds
  darknet's yolo-voc trunk — Darknet-19, the passthrough Reorg and Concat — with a Region head) at
  160×160: conv_reg is compared with OpenCV, and the Region output with a NumPy port of OpenCV's
  region layer over our conv_reg.
- Faster R-CNN VGG16 (../shared/zoo) and ZF (py-faster-rcnn, MIT: nets/) end to end at 224×224 with
  py-faster-rcnn's TEST settings (300 proposals kept): image and im_info in, cls_prob and bbox_pred
  out. The RPN's Python layer runs natively in both. OpenCV's proposal layer skips py-faster-rcnn's
  minimum-size filter, so im_info's scale is 1/16 (minimum size 1 pixel: no box is dropped); OpenCV
  pads its proposals to 300 rows, so its rows past ours must be the padding.

Global pooling ends the classification nets, so their small inputs keep every layer. Runs the
release swiftjit binary (tools/test.sh builds it; SWIFTJIT overrides the path).
"""
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_opencv_parity import ZOO, assert_close, swiftjit  # noqa: E402

NETS_DIR = Path(__file__).resolve().parent / "nets"


def conv_bn(name, bottom, outputs, kernel, stride=1, pad=0, relu="ReLU", slope=None):
    """Convolution (no bias) + BatchNorm + Scale + ReLU, in place after the convolution."""
    relu_param = f" relu_param {{ negative_slope: {slope} }}" if slope else ""
    return f"""
layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}"
  convolution_param {{ num_output: {outputs} bias_term: false kernel_size: {kernel} stride: {stride} pad: {pad} }} }}
layer {{ name: "{name}/bn" type: "BatchNorm" bottom: "{name}" top: "{name}" batch_norm_param {{ use_global_stats: true }} }}
layer {{ name: "{name}/scale" type: "Scale" bottom: "{name}" top: "{name}" scale_param {{ bias_term: true }} }}
layer {{ name: "{name}/relu" type: "{relu}" bottom: "{name}" top: "{name}"{relu_param} }}"""


def densenet121(size):
    """shicai/DenseNet-Caffe's DenseNet_121.prototxt: conv1 7×7/2, MAX 3×3/2 pad 1 with ceil_mode
    false, dense blocks of 6, 12, 24, 16 (BN-Scale-ReLU-conv1×1 128, BN-Scale-ReLU-conv3×3 32,
    Concat), transitions (BN-Scale-ReLU-conv1×1 halving the channels, AVE 2×2/2), a last
    BN-Scale-ReLU, global AVE pooling and a 1×1 convolution to 1000 classes."""
    def bn_relu(name, bottom):
        return f"""
layer {{ name: "{name}/bn" type: "BatchNorm" bottom: "{bottom}" top: "{name}/bn" batch_norm_param {{ eps: 1e-5 }} }}
layer {{ name: "{name}/scale" type: "Scale" bottom: "{name}/bn" top: "{name}/bn" scale_param {{ bias_term: true }} }}
layer {{ name: "relu_{name}" type: "ReLU" bottom: "{name}/bn" top: "{name}/bn" }}"""

    text = f"""name: "DENSENET_121"
input: "data" input_shape {{ dim: 1 dim: 3 dim: {size} dim: {size} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 64 bias_term: false pad: 3 kernel_size: 7 stride: 2 }} }}""" + bn_relu("conv1", "conv1") + """
layer { name: "pool1" type: "Pooling" bottom: "conv1/bn" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 ceil_mode: false } }"""
    bottom, channels = "pool1", 64
    for stage, blocks in zip(range(2, 6), (6, 12, 24, 16)):
        for k in range(1, blocks + 1):
            x1, x2 = f"conv{stage}_{k}/x1", f"conv{stage}_{k}/x2"
            text += bn_relu(x1, bottom) + f"""
layer {{ name: "{x1}" type: "Convolution" bottom: "{x1}/bn" top: "{x1}" convolution_param {{ num_output: 128 bias_term: false kernel_size: 1 }} }}"""
            text += bn_relu(x2, x1) + f"""
layer {{ name: "{x2}" type: "Convolution" bottom: "{x2}/bn" top: "{x2}" convolution_param {{ num_output: 32 bias_term: false pad: 1 kernel_size: 3 }} }}
layer {{ name: "concat_{stage}_{k}" type: "Concat" bottom: "{bottom}" bottom: "{x2}" top: "concat_{stage}_{k}" }}"""
            bottom, channels = f"concat_{stage}_{k}", channels + 32
        blk = f"conv{stage}_blk"
        text += bn_relu(blk, bottom)
        if stage < 5:
            channels //= 2
            text += f"""
layer {{ name: "{blk}" type: "Convolution" bottom: "{blk}/bn" top: "{blk}" convolution_param {{ num_output: {channels} bias_term: false kernel_size: 1 }} }}
layer {{ name: "pool{stage}" type: "Pooling" bottom: "{blk}" top: "pool{stage}" pooling_param {{ pool: AVE kernel_size: 2 stride: 2 }} }}"""
            bottom = f"pool{stage}"
    return text + """
layer { name: "pool5" type: "Pooling" bottom: "conv5_blk/bn" top: "pool5" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc6" type: "Convolution" bottom: "pool5" top: "fc6" convolution_param { num_output: 1000 kernel_size: 1 } }
"""


YOLO_ANCHORS = [1.3221, 1.73145, 3.19275, 4.00944, 5.05587, 8.09892, 9.47112, 4.84053, 11.2364, 10.0071]


def yolov2(size, region=True):
    """darknet's yolo-voc.cfg as the Caffe ports write it: Darknet-19 (3×3 and 1×1 convolutions with
    BatchNorm, Scale and leaky ReLU 0.1; MAX 2×2/2 pooling), two more 3×3 1024 convolutions, the
    passthrough (1×1 64 on the 26×26 map, Reorg stride 2, Concat), a 3×3 1024 convolution and
    conv_reg, a 1×1 convolution to 5 × (5 + 20) = 125 channels; then Region."""
    text = f'name: "YOLOv2"\ninput: "data" input_shape {{ dim: 1 dim: 3 dim: {size} dim: {size} }}'
    plan = [(32, 3), "M", (64, 3), "M", (128, 3), (64, 1), (128, 3), "M", (256, 3), (128, 1), (256, 3), "M",
            (512, 3), (256, 1), (512, 3), (256, 1), (512, 3), "M", (1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3),
            (1024, 3), (1024, 3)]
    bottom, index, passthrough = "data", 0, None
    for step in plan:
        index += 1
        name = f"layer{index}"
        if step == "M":
            if index == 18:
                passthrough = bottom
            text += f'\nlayer {{ name: "{name}-maxpool" type: "Pooling" bottom: "{bottom}" top: "{name}-maxpool" pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}'
            bottom = f"{name}-maxpool"
        else:
            outputs, kernel = step
            text += conv_bn(f"{name}-conv", bottom, outputs, kernel, pad=kernel // 2, slope=0.1)
            bottom = f"{name}-conv"
    text += conv_bn("passthrough-conv", passthrough, 64, 1, slope=0.1)
    text += """
layer { name: "passthrough-reorg" type: "Reorg" bottom: "passthrough-conv" top: "passthrough-reorg" reorg_param { stride: 2 } }"""
    text += f'\nlayer {{ name: "concat" type: "Concat" bottom: "passthrough-reorg" bottom: "{bottom}" top: "concat" }}'
    text += conv_bn("head-conv", "concat", 1024, 3, pad=1, slope=0.1)
    text += """
layer { name: "conv_reg" type: "Convolution" bottom: "head-conv" top: "conv_reg" convolution_param { num_output: 125 kernel_size: 1 } }"""
    if region:
        anchors = " ".join(f"anchors: {a}" for a in YOLO_ANCHORS)
        text += f"""
layer {{ name: "region" type: "Region" bottom: "conv_reg" top: "region"
  region_param {{ classes: 20 coords: 4 boxes_of_each_grid: 5 softmax: true {anchors} thresh: 0.005 nms_threshold: 0.4 }} }}"""
    return text + "\n"


def region_reference(conv, thresh=0.005, nms=0.4, num=5, classes=20):
    """OpenCV DNN's RegionLayerImpl::forward (logistic, softmax, box decoding, threshold, do_nms_sort)."""
    cell = 5 + classes
    _, _, h, w = conv.shape
    out = np.zeros((h * w * num, cell), np.float32)
    sig = lambda v: np.float32(1) / (np.float32(1) + np.exp(-v))
    for y in range(h):
        for x in range(w):
            for a in range(num):
                v = conv[0, a * cell:(a + 1) * cell, y, x]
                r = out[(y * w + x) * num + a]
                r[0], r[1] = (x + sig(v[0])) / np.float32(w), (y + sig(v[1])) / np.float32(h)
                r[2] = np.exp(v[2]) * np.float32(YOLO_ANCHORS[2 * a]) / np.float32(w)
                r[3] = np.exp(v[3]) * np.float32(YOLO_ANCHORS[2 * a + 1]) / np.float32(h)
                r[4] = sig(v[4])
                e = np.exp(v[5:] - v[5:].max())
                p = r[4] * (e / e.sum())
                r[5:] = np.where(p > np.float32(thresh), p, 0)
    boxes = np.stack([out[:, 0] - out[:, 2] / 2, out[:, 1] - out[:, 3] / 2, out[:, 2], out[:, 3]], 1)
    for k in range(classes):
        scores = out[:, 5 + k].copy()
        out[:, 5 + k] = 0
        kept = []
        for i in [i for i in np.argsort(-scores, kind="stable") if scores[i] > thresh]:
            def iou(j):
                a, b = boxes[i], boxes[j]
                x0, y0 = max(a[0], b[0]), max(a[1], b[1])
                iw, ih = min(a[0] + a[2], b[0] + b[2]) - x0, min(a[1] + a[3], b[1] + b[3]) - y0
                inter = 0.0 if iw <= 0 or ih <= 0 else float(iw * ih)
                return inter / (float(a[2] * a[3]) + float(b[2] * b[3]) - inter)
            if all(iou(j) <= nms for j in kept):
                kept.append(i)
                out[i, 5 + k] = scores[i]
    return out


PROPOSAL_PARAM = ("proposal_param { feat_stride: 16 base_size: 16 min_size: 16 ratio: 0.5 ratio: 1 ratio: 2 "
                  "scale: 8 scale: 16 scale: 32 pre_nms_topn: 6000 post_nms_topn: 300 nms_thresh: 0.7 }")

# name -> (prototxt source, inputs, outputs compared with OpenCV)
NETS = {
    "densenet121": (lambda: densenet121(72), {"data": (1, 3, 72, 72)}, ["fc6"]),
    "resnext50_32x4d": (NETS_DIR / "resnext50-32x4d.prototxt", {"data": (1, 3, 64, 64)}, ["prob"]),
    "dpn92": (NETS_DIR / "dpn92.prototxt", {"data": (1, 3, 64, 64)}, ["prob"]),
    "yolov2": (lambda: yolov2(160), {"data": (1, 3, 160, 160)}, ["conv_reg"]),
    "faster_rcnn_vgg16": (ZOO / "faster_rcnn/VGG16/faster_rcnn_end2end/test.prototxt", {"data": (1, 3, 224, 224), "im_info": (1, 3)},
                          ["cls_prob", "bbox_pred"]),
    "faster_rcnn_zf": (NETS_DIR / "faster_rcnn_zf_test.prototxt", {"data": (1, 3, 224, 224), "im_info": (1, 3)},
                       ["cls_prob", "bbox_pred"]),
}


@pytest.mark.parametrize("net", sorted(NETS))
def test_fork_net_matches_opencv(net, tmp_path):
    import cv2
    source, shapes, compared = NETS[net]
    if callable(source):
        prototxt = tmp_path / f"{net}.prototxt"
        prototxt.write_text(source())
    else:
        prototxt = source
        if not prototxt.exists():
            pytest.fail(f"missing {prototxt}")
    shape_args = [a for name, shape in shapes.items() for a in ("--input", f"{name}={','.join(map(str, shape))}")]
    weights = tmp_path / "w.caffemodel"
    swiftjit("init", prototxt, "--seed", "5", "--batchnorm", "unit", "-o", weights, *shape_args)
    rng = np.random.RandomState(7)
    inputs = {"data": rng.uniform(-1, 1, shapes["data"]).astype(np.float32)}
    if "im_info" in shapes:
        inputs["im_info"] = np.array([[224, 224, 1 / 16]], np.float32)
    np.savez(tmp_path / "in.npz", **inputs)
    ours_path = tmp_path / "ours.npz"
    keep = compared + (["rois"] if "im_info" in shapes else []) + (["region"] if net == "yolov2" else [])
    swiftjit("run", prototxt, "--weights", weights, "--input", tmp_path / "in.npz", "-o", ours_path, "--blobs", ",".join(keep))
    ours = dict(np.load(ours_path))
    for name, value in ours.items():
        assert np.isfinite(value).all(), f"{net}: '{name}' has non-finite values"

    opencv_prototxt = prototxt
    if "im_info" in shapes:
        # OpenCV reads the proposal layer only as its native type (its own test nets are converted
        # so); ours runs the Python layer as written. py-faster-rcnn's TEST settings, spelled out.
        opencv_prototxt = tmp_path / "opencv.prototxt"
        opencv_prototxt.write_text(re.sub(
            r"type:\s*'Python'(.*?)python_param\s*\{[^}]*\}", r'type: "Proposal"\1' + PROPOSAL_PARAM, prototxt.read_text(), flags=re.S))
    if net == "yolov2":
        opencv_prototxt = tmp_path / "trunk.prototxt"
        opencv_prototxt.write_text(yolov2(160, region=False))
    model = cv2.dnn.readNetFromCaffe(str(opencv_prototxt), str(weights))
    model.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    for name, value in inputs.items():
        model.setInput(value, name)
    theirs = dict(zip(compared, model.forward(compared)))

    if "im_info" in shapes:
        rows = ours["rois"].shape[0]
        assert 0 < rows <= 300, f"{net}: {rows} proposals"
        for name in compared:
            padding = theirs[name][rows:]
            # OpenCV pools its zero-padded proposals too; those rows all pool the same empty-ish box.
            assert padding.shape[0] == 300 - rows, f"{net}: OpenCV kept {theirs[name].shape[0]} rows, we kept {rows}"
            theirs[name] = theirs[name][:rows]
    assert_close(net, {k: ours[k] for k in compared}, theirs, 1e-3, "OpenCV")

    if net == "yolov2":
        expected = region_reference(ours["conv_reg"])
        assert ours["region"].shape == expected.shape
        assert np.abs(ours["region"] - expected).max() <= 1e-5
        assert (expected[:, 5:] > 0).sum() > 0, "the threshold must keep some class scores"
