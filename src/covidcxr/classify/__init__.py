"""Classifiers: the VGG19 transfer-learning model and its building blocks.

:class:`VGG19Classifier` is the library's default :class:`~covidcxr.Classifier`,
registered as ``"vgg19"``. Importing this package does not import TensorFlow.
"""

from covidcxr.classify._inputs import PixelRangeWarning
from covidcxr.classify._vgg19 import VGG19Classifier

__all__ = ["PixelRangeWarning", "VGG19Classifier"]
