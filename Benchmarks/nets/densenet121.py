#!/usr/bin/env python3
"""Writes DenseNet-121 as a Caffe deploy prototxt in the shape of shicai/DenseNet-Caffe's
DenseNet_121.prototxt (the net the issue names; that repository states no license, so its file is
not copied): the same layer names, blocks of 6, 12, 24 and 16 bottleneck layers (BatchNorm, Scale,
ReLU, 1×1 convolution to 128 channels, BatchNorm, Scale, ReLU, 3×3 convolution to 32, Concat),
transitions halving the channels then averaging 2×2, pool1 with `ceil_mode: false`, global average
pooling and fc6 as a 1×1 convolution to 1000 classes.

  python3 Benchmarks/nets/densenet121.py > densenet121.prototxt
"""
import sys


def bn_scale_relu(lines, name, bottom, top, relu):
    lines.append(f'layer {{ name: "{name}/bn" type: "BatchNorm" bottom: "{bottom}" top: "{top}" batch_norm_param {{ eps: 1e-5 }} }}')
    lines.append(f'layer {{ name: "{name}/scale" type: "Scale" bottom: "{top}" top: "{top}" scale_param {{ bias_term: true }} }}')
    lines.append(f'layer {{ name: "{relu}" type: "ReLU" bottom: "{top}" top: "{top}" }}')


def conv(lines, name, bottom, outputs, kernel, pad=0, stride=1, bias=False):
    extra = f" pad: {pad}" if pad else ""
    extra += f" stride: {stride}" if stride != 1 else ""
    lines.append(f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" convolution_param {{ '
                 f'num_output: {outputs}{"" if bias else " bias_term: false"}{extra} kernel_size: {kernel} }} }}')


def densenet121():
    lines = ['name: "DENSENET_121"', 'input: "data"', 'input_dim: 1', 'input_dim: 3', 'input_dim: 224', 'input_dim: 224']
    conv(lines, "conv1", "data", 64, 7, pad=3, stride=2)
    bn_scale_relu(lines, "conv1", "conv1", "conv1/bn", "relu1")
    lines.append('layer { name: "pool1" type: "Pooling" bottom: "conv1/bn" top: "pool1" '
                 'pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 ceil_mode: false } }')
    current, channels = "pool1", 64
    for stage, layers in zip((2, 3, 4, 5), (6, 12, 24, 16)):
        for i in range(1, layers + 1):
            prefix = f"conv{stage}_{i}"
            bn_scale_relu(lines, f"{prefix}/x1", current, f"{prefix}/x1/bn", f"relu{stage}_{i}/x1")
            conv(lines, f"{prefix}/x1", f"{prefix}/x1/bn", 128, 1)
            bn_scale_relu(lines, f"{prefix}/x2", f"{prefix}/x1", f"{prefix}/x2/bn", f"relu{stage}_{i}/x2")
            conv(lines, f"{prefix}/x2", f"{prefix}/x2/bn", 32, 3, pad=1)
            lines.append(f'layer {{ name: "concat_{stage}_{i}" type: "Concat" bottom: "{current}" bottom: "{prefix}/x2" top: "concat_{stage}_{i}" }}')
            current, channels = f"concat_{stage}_{i}", channels + 32
        bn_scale_relu(lines, f"conv{stage}_blk", current, f"conv{stage}_blk/bn", f"relu{stage}_blk")
        if stage < 5:
            channels //= 2
            conv(lines, f"conv{stage}_blk", f"conv{stage}_blk/bn", channels, 1)
            lines.append(f'layer {{ name: "pool{stage}" type: "Pooling" bottom: "conv{stage}_blk" top: "pool{stage}" '
                         'pooling_param { pool: AVE kernel_size: 2 stride: 2 } }')
            current = f"pool{stage}"
    lines.append('layer { name: "pool5" type: "Pooling" bottom: "conv5_blk/bn" top: "pool5" pooling_param { pool: AVE global_pooling: true } }')
    conv(lines, "fc6", "pool5", 1000, 1, bias=True)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(densenet121())
