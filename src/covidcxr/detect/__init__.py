"""Lesion detectors, and drawing their boxes.

- :class:`~covidcxr.WatsonDetector` (``"watson"``): IBM Watson Visual Recognition v4 collections.
- :class:`~covidcxr.LocalDetector` (``"local"``): a small trainable segmentation network, offline.
- :class:`GradCAMDetector` (``"gradcam"``): weakly supervised boxes from a classifier.
- :func:`draw_detections` and :func:`write_png`: annotated images.

All detectors return :class:`~covidcxr.Detection` records in the pixel coordinates of the
:class:`~covidcxr.XRay` passed in, by descending score. TensorFlow and the IBM SDK are
imported only when a detector needs them.
"""

from typing import TYPE_CHECKING

from covidcxr._lazy import lazy_attributes

if TYPE_CHECKING:
    from covidcxr.detect._draw import DETECTION_COLOR, TRUTH_COLOR, draw_detections, write_png
    from covidcxr.detect._gradcam import CamClassifier, GradCAMDetector, cam_to_detections
    from covidcxr.detect._local import LocalDetector, mask_to_detections
    from covidcxr.detect._loopback_watson import FormPart, LoopbackWatsonServer, RecordedRequest
    from covidcxr.detect._watson import ImageFailure, WatsonDetector
    from covidcxr.detect._watson_service import ServiceRetiredWarning, watson_configured
    from covidcxr.detect.plugin import default_detector_name

# Imported on first use: a plugin lookup imports covidcxr.detect.plugin, and with it this
# package, but builds no detector (see covidcxr._lazy).
_HOMES = {
    "DETECTION_COLOR": "covidcxr.detect._draw",
    "TRUTH_COLOR": "covidcxr.detect._draw",
    "draw_detections": "covidcxr.detect._draw",
    "write_png": "covidcxr.detect._draw",
    "CamClassifier": "covidcxr.detect._gradcam",
    "GradCAMDetector": "covidcxr.detect._gradcam",
    "cam_to_detections": "covidcxr.detect._gradcam",
    "LocalDetector": "covidcxr.detect._local",
    "mask_to_detections": "covidcxr.detect._local",
    "FormPart": "covidcxr.detect._loopback_watson",
    "LoopbackWatsonServer": "covidcxr.detect._loopback_watson",
    "RecordedRequest": "covidcxr.detect._loopback_watson",
    "ImageFailure": "covidcxr.detect._watson",
    "WatsonDetector": "covidcxr.detect._watson",
    "ServiceRetiredWarning": "covidcxr.detect._watson_service",
    "watson_configured": "covidcxr.detect._watson_service",
    "default_detector_name": "covidcxr.detect.plugin",
}
__getattr__, __dir__ = lazy_attributes(__name__, _HOMES, globals())

__all__ = [
    "DETECTION_COLOR",
    "TRUTH_COLOR",
    "CamClassifier",
    "FormPart",
    "GradCAMDetector",
    "ImageFailure",
    "LocalDetector",
    "LoopbackWatsonServer",
    "RecordedRequest",
    "ServiceRetiredWarning",
    "WatsonDetector",
    "cam_to_detections",
    "default_detector_name",
    "draw_detections",
    "mask_to_detections",
    "watson_configured",
    "write_png",
]
