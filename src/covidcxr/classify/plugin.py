"""The built-in plugin that registers :class:`~covidcxr.VGG19Classifier` as ``"vgg19"``.

It registers a reference to the class, so a lookup imports neither the classifier's
module nor what that imports (scikit-learn, for :class:`sklearn.base.BaseEstimator`;
TensorFlow is imported only when a model is built, trained, run, saved or loaded).
"""

from __future__ import annotations

from covidcxr.hookspecs import Register, hookimpl

__all__ = ["covidcxr_register_classifiers"]


@hookimpl
def covidcxr_register_classifiers(register: Register) -> None:
    """Register the VGG19 classifier (the class, so that ``load`` is reachable)."""
    register("vgg19", "covidcxr.classify._vgg19:VGG19Classifier")
