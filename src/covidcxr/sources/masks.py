"""Segmentation masks: normalising them and turning infection masks into lesion boxes."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from covidcxr.records import Box

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


def mask_boxes(mask: NDArray[Any], *, min_area: int = 1, connectivity: int = 8) -> tuple[Box, ...]:
    """The bounding boxes of a mask's connected components, one per lesion.

    Parameters
    ----------
    mask
        A 2-D mask; non-zero pixels are foreground.
    min_area
        Components with fewer pixels are ignored (specks of annotation noise).
    connectivity
        8 (diagonal neighbours touch) or 4.

    Returns
    -------
    tuple of Box
        Sorted top-to-bottom, then left-to-right; empty for an empty mask.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((10, 10), np.uint8)
    >>> mask[1:3, 2:5] = 255
    >>> mask_boxes(mask)
    (Box(x=2.0, y=1.0, width=3.0, height=2.0),)
    """
    foreground = (np.asarray(mask) > 0).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(foreground, connectivity=connectivity)
    boxes = [
        Box(int(x), int(y), int(width), int(height))
        for x, y, width, height, area in stats[1:count]
        if area >= min_area
    ]
    return tuple(sorted(boxes, key=lambda box: (box.y, box.x)))
