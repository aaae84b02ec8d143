"""Lesion detectors, and drawing their boxes.

- :class:`WatsonDetector` (``"watson"``): IBM Watson Visual Recognition v4 collections.
- :class:`LocalDetector` (``"local"``): a small trainable segmentation network, offline.
- :class:`GradCAMDetector` (``"gradcam"``): weakly supervised boxes from a classifier.
- :func:`draw_detections` and :func:`write_png`: annotated images.

All detectors return :class:`~covidcxr.Detection` records in the pixel coordinates of the
:class:`~covidcxr.XRay` passed in, by descending score. TensorFlow and the IBM SDK are
imported only when a detector needs them.
"""

from covidcxr.detect.watson import ImageFailure, ServiceRetiredWarning, WatsonDetector

__all__ = [
    "ImageFailure",
    "ServiceRetiredWarning",
    "WatsonDetector",
]
