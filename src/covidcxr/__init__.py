"""covidcxr: chest X-ray analysis.

Classify a chest radiograph as COVID-19, normal or pneumonia, and find and box the lesions
(opacities) in it. This module re-exports the public API; nothing else lives here.

The pipeline runs one way::

    DatasetSource ──▶ Preprocessor ──▶ Classifier / LesionDetector ──▶ Evaluator

Every stage is a :mod:`typing.Protocol`, with default implementations registered through
the plugin hooks in :mod:`covidcxr.hookspecs`.
"""

from covidcxr._version import __version__
from covidcxr.errors import (
    ConfigurationError,
    CovidCXRError,
    DetectorServiceError,
    InvalidImageError,
    ModelFormatError,
    PluginError,
    SourceError,
    UnknownLabelError,
    UnknownNameError,
    WeightsUnavailableError,
)
from covidcxr.hookspecs import hookimpl
from covidcxr.io import read_image, read_xray
from covidcxr.labels import LABELS, canonical_label
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
from covidcxr.records import Box, Detection, XRay
from covidcxr.sources import FolderSource, ZipSource
from covidcxr.split import DatasetSplit, split_dataset

__all__ = [
    "LABELS",
    "Box",
    "Classifier",
    "ConfigurationError",
    "CovidCXRError",
    "DatasetSource",
    "DatasetSplit",
    "Detection",
    "DetectorServiceError",
    "Evaluator",
    "FolderSource",
    "GaussianClahePreprocessor",
    "InvalidImageError",
    "LesionDetector",
    "ModelFormatError",
    "PluginError",
    "Preprocessor",
    "Registration",
    "Report",
    "SourceError",
    "UnknownLabelError",
    "UnknownNameError",
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
    "get_plugin_manager",
    "hookimpl",
    "open_source",
    "preprocess_batch",
    "read_image",
    "read_xray",
    "register_plugin",
    "split_dataset",
    "unregister_plugin",
]
