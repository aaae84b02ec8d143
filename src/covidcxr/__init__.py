"""covidcxr: chest X-ray analysis.

Classify a chest radiograph as COVID-19, normal or pneumonia, and find and box the lesions
(opacities) in it. The pipeline runs one way::

    DatasetSource ──▶ Preprocessor ──▶ Classifier / LesionDetector ──▶ Evaluator

This package holds the names most programs need, and nothing else:

============================  ===========================================================
records                       :class:`XRay`, :class:`Box`, :class:`Detection`,
                              :class:`GroundTruth`, :class:`Prediction`,
                              :class:`Severity`, :data:`LABELS`
roles (protocols)             :class:`DatasetSource`, :class:`Preprocessor`,
                              :class:`Classifier`, :class:`LesionDetector`,
                              :class:`Evaluator`
the end-to-end job            :class:`Pipeline`, :class:`PipelineConfig`
default implementations       :class:`GaussianClahePreprocessor`,
                              :class:`VGG19Classifier`, :class:`LocalDetector`,
                              :class:`WatsonDetector`, :class:`ClassificationEvaluator`
lookups and plugins           :func:`open_source`, :func:`create_preprocessor`,
                              :func:`create_classifier`, :func:`create_detector`,
                              :data:`hookimpl`
reading and errors            :func:`read_xray`, :class:`CovidCXRError`,
                              :class:`InvalidImageError`
============================  ===========================================================

Everything else lives in a namespace named for what it is: :mod:`covidcxr.sources`,
:mod:`covidcxr.preprocess`, :mod:`covidcxr.classify`, :mod:`covidcxr.detect`,
:mod:`covidcxr.evaluate`, :mod:`covidcxr.pipeline`, :mod:`covidcxr.pretrained` (the
models that ship with covidcxr), :mod:`covidcxr.io`,
:mod:`covidcxr.boxes`, :mod:`covidcxr.split`, :mod:`covidcxr.plugins`,
:mod:`covidcxr.errors` and the rest (see the API reference). Modules whose names start
with an underscore are private.
"""

import importlib
import logging
import warnings
from typing import TYPE_CHECKING, Any

from covidcxr._version import __version__
from covidcxr.errors import CovidCXRError, InvalidImageError
from covidcxr.hookspecs import hookimpl
from covidcxr.labels import LABELS
from covidcxr.plugins import create_classifier, create_detector, create_preprocessor, open_source
from covidcxr.protocols import Classifier, DatasetSource, Evaluator, LesionDetector, Preprocessor
from covidcxr.records import Box, Detection, GroundTruth, Prediction, Severity, XRay

# A library logs and lets the application decide what is shown (the command line does,
# from its -v count): without this handler, Python would print WARNING records itself.
logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from covidcxr.classify import VGG19Classifier
    from covidcxr.detect import LocalDetector, WatsonDetector
    from covidcxr.evaluate import ClassificationEvaluator
    from covidcxr.io import read_xray
    from covidcxr.pipeline import Pipeline, PipelineConfig
    from covidcxr.preprocess import GaussianClahePreprocessor

# The implementations are loaded on first use, so that ``import covidcxr`` (which every
# plugin lookup and the command line do) stays fast: scikit-learn alone takes a second.
_LAZY: dict[str, str] = {
    "ClassificationEvaluator": "covidcxr.evaluate",
    "GaussianClahePreprocessor": "covidcxr.preprocess",
    "LocalDetector": "covidcxr.detect",
    "Pipeline": "covidcxr.pipeline",
    "PipelineConfig": "covidcxr.pipeline",
    "VGG19Classifier": "covidcxr.classify",
    "WatsonDetector": "covidcxr.detect",
    "read_xray": "covidcxr.io",
}

# The public namespaces, imported on first attribute access (``covidcxr.sources.ZipSource``
# after a plain ``import covidcxr``).
_NAMESPACES: frozenset[str] = frozenset(
    {
        "boxes",
        "classify",
        "cli",
        "demo",
        "detect",
        "errors",
        "evaluate",
        "files",
        "gate",
        "hookspecs",
        "io",
        "labels",
        "lungs",
        "phantoms",
        "pipeline",
        "plugins",
        "preprocess",
        "pretrained",
        "protocols",
        "records",
        "runtime",
        "sources",
        "split",
        "testing",
    }
)

# Names this package exported before its surface was cut down, and where they live now.
# They still resolve, with a DeprecationWarning, so that code (and plugins) written
# against 0.1 keep working while they move to the namespaces.
_MOVED: dict[str, str] = {
    "COSSource": "covidcxr.sources",
    "ConfigurationError": "covidcxr.errors",
    "DatasetSplit": "covidcxr.split",
    "DetectionMetrics": "covidcxr.evaluate",
    "DetectorServiceError": "covidcxr.errors",
    "EvaluationReport": "covidcxr.evaluate",
    "FolderSource": "covidcxr.sources",
    "GradCAMDetector": "covidcxr.detect",
    "ModelFormatError": "covidcxr.errors",
    "OutputExistsError": "covidcxr.errors",
    "PixelRangeWarning": "covidcxr.classify",
    "PluginError": "covidcxr.errors",
    "Registration": "covidcxr.plugins",
    "Report": "covidcxr.protocols",
    "SourceError": "covidcxr.errors",
    "UnknownLabelError": "covidcxr.errors",
    "UnknownNameError": "covidcxr.errors",
    "WeightsUnavailableError": "covidcxr.errors",
    "ZipSource": "covidcxr.sources",
    "available_classifiers": "covidcxr.plugins",
    "available_detectors": "covidcxr.plugins",
    "available_preprocessors": "covidcxr.plugins",
    "available_sources": "covidcxr.plugins",
    "canonical_label": "covidcxr.labels",
    "draw_detections": "covidcxr.detect",
    "evaluate_detections": "covidcxr.evaluate",
    "generate_phantom": "covidcxr.phantoms",
    "generate_phantoms": "covidcxr.phantoms",
    "get_plugin_manager": "covidcxr.plugins",
    "preprocess_batch": "covidcxr.preprocess",
    "read_image": "covidcxr.io",
    "register_plugin": "covidcxr.plugins",
    "run_demo": "covidcxr.demo",
    "split_dataset": "covidcxr.split",
    "unregister_plugin": "covidcxr.plugins",
    "write_phantom_dataset": "covidcxr.phantoms",
    "write_png": "covidcxr.detect",
    "write_report": "covidcxr.evaluate",
}


def __getattr__(name: str) -> Any:
    """Load implementations and namespaces on first use (PEP 562)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _NAMESPACES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _MOVED:
        home = _MOVED[name]
        warnings.warn(
            f"covidcxr.{name} has moved to {home}: use `from {home} import {name}`; "
            "the top-level name will be removed in a future release",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(home), name)
    raise AttributeError(f"module 'covidcxr' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names only (PEP 562), so that completion shows the short list."""
    return sorted(__all__)


__all__ = [
    "LABELS",
    "Box",
    "ClassificationEvaluator",
    "Classifier",
    "CovidCXRError",
    "DatasetSource",
    "Detection",
    "Evaluator",
    "GaussianClahePreprocessor",
    "GroundTruth",
    "InvalidImageError",
    "LesionDetector",
    "LocalDetector",
    "Pipeline",
    "PipelineConfig",
    "Prediction",
    "Preprocessor",
    "Severity",
    "VGG19Classifier",
    "WatsonDetector",
    "XRay",
    "__version__",
    "create_classifier",
    "create_detector",
    "create_preprocessor",
    "hookimpl",
    "open_source",
    "read_xray",
]
