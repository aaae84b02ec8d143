"""Exported runtimes: a pipeline's networks on ONNX Runtime, OpenVINO or LiteRT; the guards.

:func:`export` writes a copy of a saved pipeline whose networks (the classifier, and the
lung segmenter and local lesion detector where present) are exported by
Keras (:meth:`keras.Model.export`) to ONNX, OpenVINO or LiteRT, optionally quantised to
int8 (ONNX Runtime's static quantisation, LiteRT's full-integer quantisation or
OpenVINO's through NNCF, calibrated on training radiographs) or run in bfloat16
(OpenVINO, on CPUs that offer it). The **accuracy guard** measures the exported
classifier against the Keras model on held-out radiographs and refuses the export
(nothing is written) when accuracy drops by more than 0.5 points or any class's recall
by more than 1 point; the **mask guard** refuses it when a lung or lesion network's masks
agree with the Keras network's at a mean Dice below 0.97. The figures go into the model
card. :meth:`covidcxr.Pipeline.load` runs the exported networks (``runtime=``);
TensorFlow remains the fallback. See :doc:`/export`.

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
    MIN_MASK_DICE,
    GuardReport,
    MaskGuardReport,
    measure_guard,
    measure_mask_guard,
)

__all__ = [
    "EXPORTED_FOLDER",
    "MAX_ACCURACY_DROP",
    "MAX_RECALL_DROP",
    "MIN_MASK_DICE",
    "RUNTIMES",
    "AccuracyGuardError",
    "ExportReport",
    "GuardReport",
    "MaskGuardReport",
    "RuntimeClassifier",
    "RuntimeFallbackWarning",
    "cpu_features",
    "export",
    "measure_guard",
    "measure_mask_guard",
    "runtime_available",
]
