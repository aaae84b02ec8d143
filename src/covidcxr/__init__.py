"""covidcxr: chest X-ray analysis.

Classify a chest radiograph as COVID-19, normal or pneumonia, and find and box the lesions
(opacities) in it. This module re-exports the public API; nothing else lives here.

The pipeline runs one way::

    DatasetSource ──▶ Preprocessor ──▶ Classifier / LesionDetector ──▶ Evaluator

Every stage is a :mod:`typing.Protocol`, with default implementations registered through
the plugin hooks in :mod:`covidcxr.hookspecs`.
"""

import importlib
from typing import TYPE_CHECKING, Any

from covidcxr._version import __version__
from covidcxr.classify import PixelRangeWarning, VGG19Classifier
from covidcxr.detect import (
    GradCAMDetector,
    LocalDetector,
    WatsonDetector,
    draw_detections,
    write_png,
)
from covidcxr.errors import (
    ConfigurationError,
    CovidCXRError,
    DetectorServiceError,
    InvalidImageError,
    ModelFormatError,
    OutputExistsError,
    PluginError,
    SourceError,
    UnknownLabelError,
    UnknownNameError,
    WeightsUnavailableError,
)
from covidcxr.hookspecs import hookimpl
from covidcxr.io import read_image, read_xray
from covidcxr.labels import LABELS, canonical_label
from covidcxr.phantoms import generate_phantom, generate_phantoms, write_phantom_dataset
from covidcxr.plugins import (
    Registration,
    available_classifiers,
    available_detectors,
    available_preprocessors,
    available_sources,
    create_classifier,
    create_detector,
    create_preprocessor,
    get_plugin_manager,
    open_source,
    register_plugin,
    unregister_plugin,
)
from covidcxr.preprocess import GaussianClahePreprocessor, preprocess_batch
from covidcxr.protocols import (
    Classifier,
    DatasetSource,
    Evaluator,
    LesionDetector,
    Preprocessor,
    Report,
)
from covidcxr.records import Box, Detection, GroundTruth, Prediction, XRay
from covidcxr.sources import COSSource, FolderSource, ZipSource
from covidcxr.split import DatasetSplit, split_dataset

if TYPE_CHECKING:
    from covidcxr.demo import run_demo
    from covidcxr.evaluate import ClassificationEvaluator, EvaluationReport, write_report
    from covidcxr.evaluate._detection import DetectionMetrics, evaluate_detections
    from covidcxr.pipeline import Pipeline, PipelineConfig

# Names whose modules import scikit-learn or matplotlib (about a second): loaded on first
# use, so that ``import covidcxr`` stays fast for plugin lookups and the command line.
_LAZY: dict[str, str] = {
    "ClassificationEvaluator": "covidcxr.evaluate",
    "DetectionMetrics": "covidcxr.evaluate._detection",
    "EvaluationReport": "covidcxr.evaluate",
    "Pipeline": "covidcxr.pipeline",
    "PipelineConfig": "covidcxr.pipeline",
    "evaluate_detections": "covidcxr.evaluate._detection",
    "run_demo": "covidcxr.demo",
    "write_report": "covidcxr.evaluate",
}


def __getattr__(name: str) -> Any:
    """Import the heavier public names on first use (PEP 562)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'covidcxr' has no attribute {name!r}")


__all__ = [
    "LABELS",
    "Box",
    "COSSource",
    "ClassificationEvaluator",
    "Classifier",
    "ConfigurationError",
    "CovidCXRError",
    "DatasetSource",
    "DatasetSplit",
    "Detection",
    "DetectionMetrics",
    "DetectorServiceError",
    "EvaluationReport",
    "Evaluator",
    "FolderSource",
    "GaussianClahePreprocessor",
    "GradCAMDetector",
    "GroundTruth",
    "InvalidImageError",
    "LesionDetector",
    "LocalDetector",
    "ModelFormatError",
    "OutputExistsError",
    "Pipeline",
    "PipelineConfig",
    "PixelRangeWarning",
    "PluginError",
    "Prediction",
    "Preprocessor",
    "Registration",
    "Report",
    "SourceError",
    "UnknownLabelError",
    "UnknownNameError",
    "VGG19Classifier",
    "WatsonDetector",
    "WeightsUnavailableError",
    "XRay",
    "ZipSource",
    "__version__",
    "available_classifiers",
    "available_detectors",
    "available_preprocessors",
    "available_sources",
    "canonical_label",
    "create_classifier",
    "create_detector",
    "create_preprocessor",
    "draw_detections",
    "evaluate_detections",
    "generate_phantom",
    "generate_phantoms",
    "get_plugin_manager",
    "hookimpl",
    "open_source",
    "preprocess_batch",
    "read_image",
    "read_xray",
    "register_plugin",
    "run_demo",
    "split_dataset",
    "unregister_plugin",
    "write_phantom_dataset",
    "write_png",
    "write_report",
]
