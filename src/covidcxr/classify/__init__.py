"""Classifiers: the VGG19 transfer-learning model, and ensembles of classifiers.

:class:`~covidcxr.VGG19Classifier` is the library's default :class:`~covidcxr.Classifier`,
registered as ``"vgg19"``; :class:`EnsembleClassifier` (``"ensemble"``) averages the
probabilities of several classifiers trained alike but for their seed. Importing this
package does not import TensorFlow.

Radiographs reach the model through a :mod:`tf.data` pipeline: Python converts each
image's pixels to ``[0, 1]`` and checks their range (a :class:`PixelRangeWarning` when
they look wrong); resizing, rotation and normalisation run as TensorFlow ops. The
normalisation matches the weights:

``"imagenet"``
    VGG19's own ("caffe") preprocessing: scale to 0-255 and subtract the ImageNet channel
    means (B, G, R = 103.939, 116.779, 123.68). The grayscale image is replicated to three
    channels, so the BGR channel swap is a no-op.
``"symmetric"``
    ``2 * x - 1``, mapping ``[0, 1]`` to ``[-1, 1]``: used when training from scratch
    (``weights=None``), where a zero-centred input helps the first layers.
"""

from typing import TYPE_CHECKING

from covidcxr._lazy import lazy_attributes

if TYPE_CHECKING:
    from covidcxr.classify._ensemble import EnsembleClassifier
    from covidcxr.classify._inputs import PixelRangeWarning
    from covidcxr.classify._vgg19 import FROM_SCRATCH, VGG19Classifier

# Imported on first use: a plugin lookup imports covidcxr.classify.plugin, and with it this
# package, but builds no classifier (see covidcxr._lazy).
_HOMES = {
    "EnsembleClassifier": "covidcxr.classify._ensemble",
    "FROM_SCRATCH": "covidcxr.classify._vgg19",
    "PixelRangeWarning": "covidcxr.classify._inputs",
    "VGG19Classifier": "covidcxr.classify._vgg19",
}
__getattr__, __dir__ = lazy_attributes(__name__, _HOMES, globals())

__all__ = ["FROM_SCRATCH", "EnsembleClassifier", "PixelRangeWarning", "VGG19Classifier"]
