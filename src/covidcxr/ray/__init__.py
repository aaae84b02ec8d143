"""Run covidcxr on a Ray cluster: batch inference, preprocessing and training.

Install with ``pip install 'covidcxr[ray]'``; nothing else in covidcxr imports Ray. Every
function connects to the cluster already connected, to ``address``, or starts a local
cluster for the call (:func:`ray.init`), so the same code runs on a laptop and on a
cluster. See :doc:`/ray`.
"""

from covidcxr.ray._cluster import connected
from covidcxr.ray._predict import SKIPPED, RayPredictions, predict
from covidcxr.ray._preprocess import RayPreprocessed, preprocess
from covidcxr.ray._train import fit

__all__ = [
    "SKIPPED",
    "RayPredictions",
    "RayPreprocessed",
    "connected",
    "fit",
    "predict",
    "preprocess",
]
