"""Lung fields: segment them, crop the radiograph to them, and measure infection within them.

Classifiers that see the whole frame learn borders, text markers and body size as well as
the lungs; restricting the classifier to the lungs is the standard remedy. This namespace
holds the lung segmenter (:class:`LungSegmenter`, a small U-Net trained on lung masks), the
pipeline stage that crops each radiograph to its lung fields (:class:`LungCrop`) and the
severity measurement (:func:`lung_severity`: the infected share of each lung).
"""

from covidcxr.lungs._crop import LUNG_CROP_KEY, LUNGS_FOUND_KEY, LUNGS_KEY, LungCrop
from covidcxr.lungs._segmenter import (
    LEFT_LUNG,
    LUNG_MASK_KEY,
    RIGHT_LUNG,
    LungFields,
    LungSegmenter,
    lung_labels,
    network_input,
)
from covidcxr.lungs._severity import inside_lungs, lung_severity

__all__ = [
    "LEFT_LUNG",
    "LUNGS_FOUND_KEY",
    "LUNGS_KEY",
    "LUNG_CROP_KEY",
    "LUNG_MASK_KEY",
    "RIGHT_LUNG",
    "LungCrop",
    "LungFields",
    "LungSegmenter",
    "inside_lungs",
    "lung_labels",
    "lung_severity",
    "network_input",
]
