"""The built-in plugin that registers the classifiers ``"vgg19"`` and ``"ensemble"``.

They are :class:`~covidcxr.VGG19Classifier` and :class:`~covidcxr.classify.EnsembleClassifier`.
It registers references to the classes, so a lookup imports neither the classifier's
module nor what that imports (scikit-learn, for :class:`sklearn.base.BaseEstimator`;
TensorFlow is imported only when a model is built, trained, run, saved or loaded).
"""

from __future__ import annotations

from covidcxr.hookspecs import Register, hookimpl

__all__ = ["covidcxr_register_classifiers"]


@hookimpl
def covidcxr_register_classifiers(register: Register) -> None:
    """Register the VGG19 classifier and the ensemble (the classes, so ``load`` is reachable)."""
    register("vgg19", "covidcxr.classify._vgg19:VGG19Classifier")
    register("ensemble", "covidcxr.classify._ensemble:EnsembleClassifier")
