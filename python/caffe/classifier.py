"""``caffe.Classifier``: a Net that predicts class probabilities for images."""

import numpy as np

from . import io
from .pycaffe import Net, TEST


class Classifier(Net):
    """A TEST-phase Net with the preprocessing of its first input built in.

    ``Classifier(model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
    raw_scale=None, channel_swap=None)``: images are resized to `image_dims` (default: the
    input's H x W), cropped to the input's size, transposed to C x H x W and transformed with
    the given mean / scales / channel order (see :class:`caffe.io.Transformer`)::

        clf = caffe.Classifier("deploy.prototxt", "weights.caffemodel", image_dims=(256, 256),
                               mean=np.array([104, 117, 123]), raw_scale=255, channel_swap=(2, 1, 0))
        probabilities = clf.predict([caffe.io.load_image("cat.jpg")])   # N x classes
    """

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None, input_scale=None, raw_scale=None,
                 channel_swap=None):
        Net.__init__(self, model_file, TEST, weights=pretrained_file)
        name = self.inputs[0]
        self.transformer = io.input_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.crop_dims = np.array(self.blobs[name].data.shape[2:])
        self.image_dims = self.crop_dims if image_dims is None or len(image_dims) == 0 else image_dims

    def predict(self, inputs, oversample=True):
        """Class probabilities (N x C) for N images (H x W x K arrays in [0, 1]).

        With `oversample` (default) each image's prediction is the mean over ten crops (corners,
        center, and their mirrors); otherwise only the center crop is used.
        """
        name = self.inputs[0]
        resized = np.zeros((len(inputs), self.image_dims[0], self.image_dims[1], inputs[0].shape[2]), np.float32)
        for i, image in enumerate(inputs):
            resized[i] = io.resize_image(image, self.image_dims)
        if oversample:
            crops = io.oversample(resized, self.crop_dims)
        else:
            top, left = (np.array(self.image_dims) / 2.0 - self.crop_dims / 2.0).astype(int)
            crops = resized[:, top:top + self.crop_dims[0], left:left + self.crop_dims[1], :]
        batch = np.zeros((crops.shape[0], crops.shape[3], crops.shape[1], crops.shape[2]), np.float32)
        for i, crop in enumerate(crops):
            batch[i] = self.transformer.preprocess(name, crop)
        predictions = self.forward_all(**{name: batch})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(1)
        return predictions
