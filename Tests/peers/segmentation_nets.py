"""Generators for SegNet- and ENet-shaped Caffe nets, and a NumPy interpreter for the layer types
they use, written from the forks' C++ (alexgkendall/caffe-segnet, TimoSaemann/caffe-enet).

The published prototxts (alexgkendall/SegNet-Tutorial Models/segnet_inference.prototxt,
TimoSaemann/ENet prototxts/enet_deploy_final.prototxt and enet_train_encoder.prototxt) are under
CC BY-NC 4.0, so they are not committed; these functions write nets with the same layers, names,
kernel geometry, channel widths and wiring (SegNet: VGG16 encoder, BN after every convolution,
pooling masks feeding Upsample in the decoder; ENet: the initial block, bottlenecks with
downsampling, dilated and asymmetric convolutions, the upsampling bottlenecks with pooling masks
and deconvolutions), with Input layers instead of DenseImageData and random fillers.
"""
import numpy as np

FILLERS = 'weight_filler { type: "msra" } bias_filler { type: "uniform" min: -0.05 max: 0.05 }'
BN_FILLERS = 'scale_filler { type: "uniform" min: 0.5 max: 1.5 } shift_filler { type: "uniform" min: -0.2 max: 0.2 }'


class NetWriter:
    def __init__(self, name):
        self.lines = [f'name: "{name}"']

    def layer(self, name, kind, bottoms, tops, body=""):
        b = " ".join(f'bottom: "{x}"' for x in bottoms)
        t = " ".join(f'top: "{x}"' for x in tops)
        self.lines.append(f'layer {{ name: "{name}" type: "{kind}" {b} {t} {body} }}')
        return tops[0]

    def input(self, name, shape):
        dims = " ".join(f"dim: {d}" for d in shape)
        return self.layer(name, "Input", [], [name], f"input_param {{ shape {{ {dims} }} }}")

    def conv(self, name, bottom, outputs, kernel=None, pad=None, stride=None, dilation=None, kernel_hw=None, kind="Convolution"):
        fields = [f"num_output: {outputs}"]
        if kernel_hw:
            fields.append(f"kernel_h: {kernel_hw[0]} kernel_w: {kernel_hw[1]}")
        else:
            fields.append(f"kernel_size: {kernel}")
        if pad:
            fields.append(f"pad: {pad}")
        if stride:
            fields.append(f"stride: {stride}")
        if dilation:
            fields.append(f"dilation: {dilation}")
        return self.layer(name, kind, [bottom], [name], f"convolution_param {{ {' '.join(fields)} {FILLERS} }}")

    def bn(self, name, bottom, mode):
        return self.layer(name, "BN", [bottom], [name], f"bn_param {{ bn_mode: {mode} {BN_FILLERS} }}")

    def prelu(self, name, bottom):
        return self.layer(name, "PReLU", [bottom], [name], 'prelu_param { filler { type: "uniform" min: 0.05 max: 0.4 } }')

    def relu(self, name, bottom):
        return self.layer(name, "ReLU", [bottom], [name])

    def pool(self, name, bottom):
        self.layer(name, "Pooling", [bottom], [name, name + "_mask"], "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
        return name, name + "_mask"

    def text(self):
        return "\n".join(self.lines) + "\n"


def segnet(height=32, width=64, classes=11, bn_mode="INFERENCE"):
    """SegNet (segnet_inference.prototxt's layers): 13 VGG16 convolutions with BN and ReLU, five
    MAX poolings with masks, and the mirrored decoder whose Upsample layers read those masks,
    ending in a classes-wide convolution and Softmax. The published net runs BN in place; here
    every layer has its own top so each can be checked from its dumped bottoms."""
    net = NetWriter("segnet")
    x = net.input("data", (1, 3, height, width))
    widths = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]
    masks = []
    for stage, stage_widths in enumerate(widths, start=1):
        for index, channels in enumerate(stage_widths, start=1):
            name = f"conv{stage}_{index}"
            x = net.conv(name, x, channels, kernel=3, pad=1)
            x = net.bn(name + "_bn", x, bn_mode)
            x = net.relu(f"relu{stage}_{index}", x)
        x, mask = net.pool(f"pool{stage}", x)
        masks.append(mask)
    decoder = [[512, 512, 512], [512, 512, 256], [256, 256, 128], [128, 64], [64, classes]]
    for stage, stage_widths in zip(range(5, 0, -1), decoder):
        x = net.layer(f"upsample{stage}", "Upsample", [x, masks[stage - 1]], [f"pool{stage}_D"], "upsample_param { scale: 2 }")
        for index, channels in zip(range(len(stage_widths), 0, -1), stage_widths):
            name = f"conv{stage}_{index}_D"
            x = net.conv(name, x, channels, kernel=3, pad=1)
            if stage == 1 and index == 1:
                break  # the classifier: no BN or ReLU
            x = net.bn(name + "_bn", x, bn_mode)
            x = net.relu(f"relu{stage}_{index}_D", x)
    net.layer("prob", "Softmax", [x], ["prob"])
    return net.text()


def enet(height=64, width=128, classes=19, spatial_dropout=False):
    """ENet (enet_deploy_final.prototxt's layers; with spatial_dropout, the training encoder's
    BN (LEARN) and spatial_dropout Python layers after each bottleneck's last convolution, whose
    param_str says TRAIN, as enet_train_encoder.prototxt writes them)."""
    net = NetWriter("ENet")
    data = net.input("data", (1, 3, height, width))
    a = net.conv("conv0_1", data, 13, kernel=3, pad=1, stride=2)
    p, _ = net.pool("pool0_1", data)
    net.lines[-1] = net.lines[-1].replace(' top: "pool0_1_mask"', "")  # the initial block keeps no mask
    x = net.layer("concat0_1", "Concat", [a, p], ["concat0_1"], "concat_param { axis: 1 }")
    x = net.bn("bn0_1", x, "INFERENCE")
    x = net.prelu("prelu0_1", x)
    masks = {}

    def finish(prefix, branch):
        if not spatial_dropout:
            return branch
        branch = net.bn(f"bn{prefix}_2", branch, "LEARN")
        return net.layer(f"drop{prefix}_3", "Python", [branch], [f"drop{prefix}_3"],
                         "python_param { module: \"spatial_dropout\" layer: \"SpatialDropoutLayer\" "
                         "param_str: \"{'phase': 'TRAIN', 'p': '0.01'}\" }")

    def bottleneck(stage, index, x, channels, inner, kind="regular", value=None, activation="PReLU"):
        prefix = f"{stage}_{index}"
        act = net.prelu if activation == "PReLU" else net.relu
        if kind == "downsample":
            b = net.conv(f"conv{prefix}_0", x, inner, kernel=2, stride=2)
        else:
            b = net.conv(f"conv{prefix}_0", x, inner, kernel=1, stride=1)
        b = act(f"prelu{prefix}_0", b)
        if kind == "dilated":
            b = net.conv(f"conv{prefix}_1", b, inner, kernel=3, pad=value, stride=1, dilation=value)
        elif kind == "asymmetric":
            b = net.conv(f"conv{prefix}_1_a", b, inner, kernel_hw=(value, 1), pad=1, stride=1)
            b = net.conv(f"conv{prefix}_1", b, inner, kernel_hw=(1, value), pad=1, stride=1)
        else:
            b = net.conv(f"conv{prefix}_1", b, inner, kernel=3, pad=1, stride=1)
        b = act(f"prelu{prefix}_1", b)
        b = net.conv(f"conv{prefix}_2", b, channels, kernel=1, stride=1)
        b = finish(prefix, b)
        main = x
        if kind == "downsample":
            main, masks[stage] = net.pool(f"pool{prefix}_4", x)
            main = net.conv(f"conv{prefix}_4", main, channels, kernel=1, stride=1)
        y = net.layer(f"eltwise{prefix}_4", "Eltwise", [main, b], [f"eltwise{prefix}_4"])
        return act(f"prelu{prefix}_4", y)

    def upsampling(stage, x, channels, inner, mask):
        prefix = f"{stage}_0"
        b = net.conv(f"conv{prefix}_0", x, inner, kernel=1, stride=1)
        b = net.relu(f"prelu{prefix}_0", b)
        b = net.conv(f"deconv{prefix}_1", b, inner, kernel=2, stride=2, kind="Deconvolution")
        b = net.bn(f"bn{prefix}_1", b, "INFERENCE")
        b = net.relu(f"prelu{prefix}_1", b)
        b = net.conv(f"conv{prefix}_2", b, channels, kernel=1, stride=1)
        main = net.conv(f"conv{prefix}_4", x, channels, kernel=1, stride=1)
        main = net.layer(f"upsample{prefix}_4", "Upsample", [main, mask], [f"upsample{prefix}_4"], "upsample_param { scale: 2 }")
        y = net.layer(f"eltwise{prefix}_4", "Eltwise", [main, b], [f"eltwise{prefix}_4"])
        return net.relu(f"prelu{prefix}_4", y)

    x = bottleneck(1, 0, x, 64, 16, "downsample")
    for index in range(1, 5):
        x = bottleneck(1, index, x, 64, 16)
    x = bottleneck(2, 0, x, 128, 32, "downsample")
    pattern = [("regular", None), ("dilated", 2), ("asymmetric", 5), ("dilated", 4),
               ("regular", None), ("dilated", 8), ("asymmetric", 5), ("dilated", 16)]
    for stage in (2, 3):
        for index, (kind, value) in enumerate(pattern, start=1):
            x = bottleneck(stage, index, x, 128, 32, kind, value)
    x = upsampling(4, x, 64, 16, masks[2])
    for index in (1, 2):
        x = bottleneck(4, index, x, 64, 16, activation="ReLU")
    x = upsampling(5, x, 16, 4, masks[1])
    x = bottleneck(5, 1, x, 16, 4, activation="ReLU")
    net.conv("deconv6_0_0", x, classes, kernel=2, stride=2, kind="Deconvolution")
    return net.text()


# NumPy interpreter (float64) for the layers above, from the forks' Forward_cpu.

def conv2d(x, w, b, stride, pad, dilation):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (wd + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    cols = np.empty((n, c, kh, kw, oh, ow))
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
    y = np.einsum("nckluv,ockl->nouv", cols, w, optimize=True)
    return y + b.reshape(1, -1, 1, 1)


def deconv2d(x, w, b, stride, pad):
    """Caffe's Deconvolution (col2im of wᵀ·x), weights C_in × C_out × kh × kw."""
    n, c, h, wd = x.shape
    _, o, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, pad
    oh, ow = sh * (h - 1) + kh - 2 * ph, sw * (wd - 1) + kw - 2 * pw
    full = np.zeros((n, o, sh * (h - 1) + kh, sw * (wd - 1) + kw))
    for i in range(kh):
        for j in range(kw):
            full[:, :, i:i + sh * (h - 1) + 1:sh, j:j + sw * (wd - 1) + 1:sw] += np.einsum("nchw,co->nohw", x, w[:, :, i, j])
    return full[:, :, ph:ph + oh, pw:pw + ow] + b.reshape(1, -1, 1, 1)


def max_pool_with_mask(x):
    """2×2 stride-2 MAX pooling with Caffe's ceil rounding; the mask holds h·W + w of the first
    maximum in window order (strict >)."""
    n, c, h, w = x.shape
    oh, ow = -(-(h - 2) // 2) + 1, -(-(w - 2) // 2) + 1
    y = np.full((n, c, oh, ow), -np.inf)
    mask = np.full((n, c, oh, ow), -1.0)
    for i in range(oh):
        for j in range(ow):
            for di in range(2):
                for dj in range(2):
                    hi, wj = 2 * i + di, 2 * j + dj
                    if hi >= h or wj >= w:
                        continue
                    v = x[:, :, hi, wj]
                    better = v > y[:, :, i, j]
                    y[:, :, i, j] = np.where(better, v, y[:, :, i, j])
                    mask[:, :, i, j] = np.where(better, hi * w + wj, mask[:, :, i, j])
    return y, mask


def upsample(x, mask, out_h, out_w):
    n, c = x.shape[:2]
    y = np.zeros((n, c, out_h * out_w))
    flat, index = x.reshape(n, c, -1), mask.reshape(n, c, -1).astype(np.int64)
    for a in range(n):
        for b in range(c):
            y[a, b, index[a, b]] = flat[a, b]
    return y.reshape(n, c, out_h, out_w)


def bn(x, scale, shift, mode):
    scale, shift = scale.reshape(1, -1, 1, 1), shift.reshape(1, -1, 1, 1)
    if mode == "INFERENCE":
        return scale * x + shift
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    variance = (x * x).mean(axis=(0, 2, 3), keepdims=True) - mean * mean
    return scale * (x - mean) / np.sqrt(variance + 1e-9) + shift


def pair(values, default):
    values = list(values)
    return (values[0], values[-1]) if values else (default, default)


def run_layer(layer, bottoms, params):
    """The tops of one layer (caffe_pb2.LayerParameter) from float64 bottoms."""
    kind = layer.type
    if kind in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        kernel = (p.kernel_h, p.kernel_w) if p.kernel_h else pair(p.kernel_size, 1)
        stride = (p.stride_h, p.stride_w) if p.stride_h else pair(p.stride, 1)
        pad = (p.pad_h, p.pad_w) if p.pad_h or p.pad_w else pair(p.pad, 0)
        dilation = pair(p.dilation, 1)
        w, b = params[layer.name + "/0"].astype(np.float64), params[layer.name + "/1"].astype(np.float64)
        assert w.shape[2:] == kernel
        if kind == "Convolution":
            return [conv2d(bottoms[0], w, b, stride, pad, dilation)]
        return [deconv2d(bottoms[0], w, b, stride, pad)]
    if kind == "BN":
        mode = "LEARN" if layer.bn_param.bn_mode == 0 else "INFERENCE"
        return [bn(bottoms[0], params[layer.name + "/0"], params[layer.name + "/1"], mode)]
    if kind == "ReLU":
        return [np.maximum(bottoms[0], 0)]
    if kind == "PReLU":
        slope = params[layer.name + "/0"].reshape(1, -1, 1, 1)
        return [np.where(bottoms[0] > 0, bottoms[0], bottoms[0] * slope)]
    if kind == "Pooling":
        y, mask = max_pool_with_mask(bottoms[0])
        return [y, mask][:len(layer.top)]
    if kind == "Upsample":
        h, w = bottoms[0].shape[2:]
        return [upsample(bottoms[0], bottoms[1], 2 * h, 2 * w)]
    if kind == "Eltwise":
        return [sum(bottoms)]
    if kind == "Concat":
        return [np.concatenate(bottoms, axis=1)]
    if kind == "Softmax":
        e = np.exp(bottoms[0] - bottoms[0].max(axis=1, keepdims=True))
        return [e / e.sum(axis=1, keepdims=True)]
    if kind == "Python" and layer.python_param.module == "spatial_dropout":
        return [bottoms[0]]  # param_str phase 'TRAIN': SwiftJIT's inference runs the masks' expectation
    raise NotImplementedError(kind)
