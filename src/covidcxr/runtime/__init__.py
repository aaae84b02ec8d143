"""Exported runtimes: a pipeline's classifier on ONNX Runtime, OpenVINO or LiteRT; the guard.

:func:`export` writes a copy of a saved pipeline whose classifier network is exported by
Keras (:meth:`keras.Model.export`) to ONNX, OpenVINO or LiteRT, optionally quantised to
int8 (ONNX Runtime's static quantisation or LiteRT's full-integer quantisation, calibrated
on training radiographs) or run in bfloat16
(OpenVINO, on CPUs that offer it). The **accuracy guard** measures the exported network
against the Keras model on held-out radiographs and refuses the export (nothing is
written) when accuracy drops by more than 0.5 points or any class's recall by more than
1 point; the figures go into the model card. :meth:`covidcxr.Pipeline.load` runs the
exported network (``runtime=``); TensorFlow remains the fallback. See :doc:`/export`.

The runtime packages are optional: ``pip install 'covidcxr[onnx]'`` (ONNX Runtime, and
``onnx`` + ``tf2onnx`` for Keras's exporter), ``'covidcxr[openvino]'`` or
``'covidcxr[litert]'``.
"""

from covidcxr.classify._runtime import (
    RUNTIMES,
    RuntimeClassifier,
    RuntimeFallbackWarning,
    runtime_available,
)
from covidcxr.errors import AccuracyGuardError
from covidcxr.runtime._export import EXPORTED_FOLDER, ExportReport, cpu_features, export
from covidcxr.runtime._guard import (
    MAX_ACCURACY_DROP,
    MAX_RECALL_DROP,
    GuardReport,
    measure_guard,
)

__all__ = [
    "EXPORTED_FOLDER",
    "MAX_ACCURACY_DROP",
    "MAX_RECALL_DROP",
    "RUNTIMES",
    "AccuracyGuardError",
    "ExportReport",
    "GuardReport",
    "RuntimeClassifier",
    "RuntimeFallbackWarning",
    "cpu_features",
    "export",
    "measure_guard",
    "runtime_available",
]
