"""Float32 pixels that are exactly ``uint8 / 255``, kept as the ``uint8`` values.

Preprocessed radiographs usually are such pixels (8-bit enhancement, then scaling to
``[0, 1]``). Keeping the ``uint8`` values quarters what the cache writes and what worker
processes send back, and :func:`expand_pixels` restores the identical float32 array.
"""

from __future__ import annotations

from typing import Any, Final

import cv2
import numpy as np

__all__ = ["UINT8_OVER_255", "PackedPixels", "compact_pixels", "expand_pixels"]

#: Marks a float32 array stored as the uint8 values it was scaled from.
UINT8_OVER_255: Final = "u8/255"
#: ``(encoding, array)``: ``("u8/255", uint8 array)`` or ``("raw", pixels)``.
PackedPixels = tuple[str, np.ndarray[Any, Any]]
_UNIT_SCALE: Final = np.float32(1.0 / 255.0)


def compact_pixels(pixels: np.ndarray[Any, Any]) -> PackedPixels:
    """Store float32 pixels that are exactly ``uint8 / 255`` as the ``uint8`` values.

    Anything else is kept as it is.

    Returns
    -------
    tuple
        ``(encoding, array)``: ``("u8/255", uint8 array)`` or ``("raw", pixels)``.

    Examples
    --------
    >>> import numpy as np
    >>> pixels = np.multiply(np.arange(4, dtype=np.uint8), np.float32(1 / 255), dtype=np.float32)
    >>> encoding, stored = compact_pixels(pixels)
    >>> encoding, stored.dtype, expand_pixels(encoding, stored).tobytes() == pixels.tobytes()
    ('u8/255', dtype('uint8'), True)
    """
    if pixels.dtype == np.float32 and pixels.ndim in (1, 2) and pixels.size:
        # A candidate from OpenCV's saturating, rounding conversion (one pass), accepted
        # only if expanding it gives back the very same bits: NaN, negative, out-of-range
        # and in-between values all fail that test and keep the array as it is.
        as_uint8 = cv2.convertScaleAbs(pixels, alpha=255.0).reshape(pixels.shape)
        restored = expand_pixels(UINT8_OVER_255, as_uint8)
        contiguous = np.ascontiguousarray(pixels)
        if np.array_equal(restored.view(np.uint32), contiguous.view(np.uint32)):
            return UINT8_OVER_255, as_uint8
    return "raw", pixels


def expand_pixels(encoding: str, stored: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Undo :func:`compact_pixels`: ``uint8`` values times ``float32(1 / 255)``, in float32."""
    if encoding == UINT8_OVER_255:
        # Convert, then scale in place: the same float32 products as one mixed-type
        # multiply, with one array made instead of two passes through a temporary.
        expanded: np.ndarray[Any, Any] = stored.astype(np.float32)
        expanded *= _UNIT_SCALE
        return expanded
    return stored
