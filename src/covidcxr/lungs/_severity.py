"""Severity: the infected share of each lung, from lung fields and an infection map."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from covidcxr.lungs._segmenter import LEFT_LUNG, RIGHT_LUNG, LungFields
from covidcxr.records import Severity

__all__ = ["inside_lungs", "lung_severity"]


def _onto(probabilities: NDArray[Any], shape: tuple[int, int]) -> NDArray[np.float32]:
    height, width = shape
    return np.asarray(
        cv2.resize(
            np.asarray(probabilities, np.float32), (width, height), interpolation=cv2.INTER_LINEAR
        ),
        np.float32,
    )


def lung_severity(
    probabilities: NDArray[np.floating[Any]], fields: LungFields, threshold: float = 0.5
) -> Severity | None:
    """The infected share of each lung: infection map at or above ``threshold``, within each field.

    Parameters
    ----------
    probabilities
        An infection probability map of the same image as ``fields`` (any resolution: it
        is stretched onto the fields').
    fields
        The image's lung fields.
    threshold
        The probability at which a pixel counts as infected (the detector's own).

    Returns
    -------
    Severity or None
        ``None`` when the lung fields were not found or one lung is missing: a share of a
        lung that was not drawn would be a guess.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((8, 8), np.uint8)
    >>> labels[1:7, :4], labels[1:7, 4:] = 1, 2
    >>> infection = np.zeros((8, 8), np.float32)
    >>> infection[:4, :4] = 0.9
    >>> lung_severity(infection, LungFields(labels))
    Severity(right=0.5, left=0.0, total=0.25)
    """
    if not fields.found:
        return None
    labels = fields.labels
    right, left = labels == RIGHT_LUNG, labels == LEFT_LUNG
    n_right, n_left = int(np.count_nonzero(right)), int(np.count_nonzero(left))
    if not n_right or not n_left:
        return None
    infected = _onto(probabilities, labels.shape) >= threshold
    in_right = int(np.count_nonzero(infected & right))
    in_left = int(np.count_nonzero(infected & left))
    return Severity(
        right=in_right / n_right,
        left=in_left / n_left,
        total=(in_right + in_left) / (n_right + n_left),
    )


def inside_lungs(
    probabilities: NDArray[np.floating[Any]], fields: LungFields, grow: float = 0.03
) -> NDArray[np.float32]:
    """``probabilities`` with everything outside the (slightly grown) lung fields set to 0.

    Lesions are in the lungs: a detection over the shoulder, the bowel gas or a text marker
    is a false positive by construction. The fields are grown by ``grow`` of the image
    side, since lung masks are often drawn a little inside the pleura where opacities
    sit. Unfound fields leave the map as it is.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((40, 40), np.uint8)
    >>> labels[10:30, 5:15], labels[10:30, 25:35] = 1, 2
    >>> kept = inside_lungs(np.ones((20, 20), np.float32), LungFields(labels), grow=0.0)
    >>> float(kept.mean())
    0.25
    """
    if not fields.found:
        return np.asarray(probabilities, np.float32)
    height, width = np.asarray(probabilities).shape
    mask = cv2.resize(
        fields.mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST
    )
    radius = round(grow * max(height, width))
    if radius > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.dilate(mask, kernel)
    return np.asarray(probabilities, np.float32) * mask.astype(np.float32)
