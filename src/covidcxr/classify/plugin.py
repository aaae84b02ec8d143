"""The built-in plugin that registers :class:`~covidcxr.VGG19Classifier` as ``"vgg19"``.

Importing it is cheap: the classifier imports TensorFlow only when it builds, trains,
predicts, saves or loads.
"""

from __future__ import annotations

from covidcxr.classify._vgg19 import VGG19Classifier
from covidcxr.hookspecs import Register, hookimpl

__all__ = ["covidcxr_register_classifiers"]


@hookimpl
def covidcxr_register_classifiers(register: Register) -> None:
    """Register the VGG19 classifier (the class itself, so ``load`` is reachable)."""
    register(VGG19Classifier.registered_name, VGG19Classifier)
