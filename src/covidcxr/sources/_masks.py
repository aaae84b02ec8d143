"""Segmentation masks: normalising them and turning infection masks into lesion boxes.

:func:`mask_boxes` lives in :mod:`covidcxr.boxes` with the rest of the box arithmetic and
is re-exported here.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from covidcxr.boxes import mask_boxes

__all__ = ["binary_mask", "mask_boxes"]


def binary_mask(mask: NDArray[Any], shape: tuple[int, int] | None = None) -> NDArray[np.uint8]:
    """Normalise a mask to read-only ``uint8`` with values 0 and 255.

    Parameters
    ----------
    mask
        A 2-D mask of any integer dtype; every non-zero value is foreground.
    shape
        ``(height, width)`` to resize to (nearest neighbour, so it stays binary), when the
        mask was stored at another resolution than its image (the COVID-19 Radiography
        Database stores 256x256 masks for 299x299 images).

    Examples
    --------
    >>> import numpy as np
    >>> binary_mask(np.array([[0, 1], [7, 0]])).tolist()
    [[0, 255], [255, 0]]
    """
    binary: NDArray[np.uint8] = np.where(np.asarray(mask) > 0, 255, 0).astype(np.uint8)
    if shape is not None and binary.shape != shape:
        binary = np.asarray(
            cv2.resize(binary, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST),
            dtype=np.uint8,
        )
    binary.flags.writeable = False
    return binary
