"""``caffe.Detector``: R-CNN-style windowed detection with a classification Net."""

import os

import numpy as np

from . import io
from .pycaffe import Net, TEST


class Detector(Net):
    """A TEST-phase Net that classifies image windows (crops warped to the input size).

    ``Detector(model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None,
    channel_swap=None, context_pad=None)``. With `context_pad`, each window is enlarged so that a
    border of that many pixels of the net's input is surrounding context (as in R-CNN); parts
    outside the image are filled with the mean.
    """

    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None,
                 channel_swap=None, context_pad=None):
        Net.__init__(self, model_file, TEST, weights=pretrained_file)
        self.transformer = io.input_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        """Classifies windows: `images_windows` is an iterable of (image filename, [window, ...])
        with windows as (ymin, xmin, ymax, xmax). Returns a list of
        {"window", "prediction", "filename"} dicts, one per window, in order."""
        images_windows = list(images_windows)
        crops = []
        for filename, windows in images_windows:
            image = io.load_image(filename).astype(np.float32)
            crops.extend(self.crop(image, window) for window in windows)
        name = self.inputs[0]
        batch = np.zeros((len(crops), crops[0].shape[2]) + tuple(self.blobs[name].data.shape[2:]), np.float32)
        for i, crop in enumerate(crops):
            batch[i] = self.transformer.preprocess(name, crop)
        predictions = self.forward_all(**{name: batch})[self.outputs[0]]
        detections = []
        i = 0
        for filename, windows in images_windows:
            for window in windows:
                detections.append({"window": window, "prediction": predictions[i], "filename": filename})
                i += 1
        return detections

    def detect_selective_search(self, image_fnames):
        """Detects over Selective Search proposals (needs the selective_search_ijcv_with_python module)."""
        import selective_search_ijcv_with_python as selective_search
        image_fnames = [os.path.abspath(f) for f in image_fnames]
        windows = selective_search.get_windows(image_fnames, cmd="selective_search_rcnn")
        return self.detect_windows(zip(image_fnames, windows))

    def crop(self, im, window):
        """The image region of `window` (ymin, xmin, ymax, xmax), with context when configured."""
        window = np.asarray(window)
        if not self.context_pad:
            return im[window[0]:window[2], window[1]:window[3]]
        size = self.blobs[self.inputs[0]].width  # the input is square
        scale = size / (1.0 * size - 2 * self.context_pad)
        half_h = (window[2] - window[0] + 1) / 2.0
        half_w = (window[3] - window[1] + 1) / 2.0
        center = np.array([window[0] + half_h, window[1] + half_w])
        box = np.round(np.tile(center, 2) + scale * np.array([-half_h, -half_w, half_h, half_w]))
        scale_h = size / (box[2] - box[0] + 1)
        scale_w = size / (box[3] - box[1] + 1)
        pad_y = int(round(max(0, -box[0]) * scale_h))   # the part above/left of the image
        pad_x = int(round(max(0, -box[1]) * scale_w))
        height, width = im.shape[:2]
        box = np.clip(box, 0.0, [height, width, height, width])
        clipped_h = box[2] - box[0] + 1
        clipped_w = box[3] - box[1] + 1
        assert clipped_h > 0 and clipped_w > 0, "window %s lies outside the image" % (window,)
        crop_h = min(int(round(clipped_h * scale_h)), size - pad_y)
        crop_w = min(int(round(clipped_w * scale_w)), size - pad_x)
        box = box.astype(int)
        context = io.resize_image(im[box[0]:box[2], box[1]:box[3]], (crop_h, crop_w))
        crop = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
        crop[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = context
        return crop

    def configure_crop(self, context_pad):
        """Sets the crop size (the input's, in image axis order) and the context padding; with
        padding, prepares the mean image that fills context outside the image."""
        name = self.inputs[0]
        order = self.transformer.transpose[name]
        image_order = [order[t] for t in order]
        self.crop_dims = np.array(self.blobs[name].data.shape[1:])[image_order]
        self.context_pad = context_pad
        if not context_pad:
            return
        mean = self.transformer.mean.get(name)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        crop_mean = mean.copy().transpose(image_order)
        swap = self.transformer.channel_swap.get(name)
        if swap is not None:
            crop_mean = crop_mean[:, :, [list(swap).index(i) for i in range(crop_mean.shape[2])]]
        raw_scale = self.transformer.raw_scale.get(name)
        if raw_scale is not None:
            crop_mean = crop_mean / raw_scale
        self.crop_mean = crop_mean
