"""Small pixel helpers shared by the detectors and the drawing code."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from covidcxr.errors import InvalidImageError
from covidcxr.records import Box, XRay


def to_uint8(pixels: NDArray[Any]) -> NDArray[np.uint8]:
    """8-bit grey levels for display or upload.

    ``uint8`` passes through; ``float32`` in ``[0, 1]`` (the preprocessors' output) is
    scaled by 255; anything else is stretched from its own minimum to maximum, so that a
    12-bit radiograph stored as ``uint16`` is not left nearly black.
    """
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels)
    values = pixels.astype(np.float64)
    if not np.isfinite(values).all():
        raise InvalidImageError("pixels contain NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if pixels.dtype == np.float32 and low >= 0.0 and high <= 1.0:
        low, high = 0.0, 1.0
    if high <= low:
        return np.zeros(pixels.shape, np.uint8)
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def encode_png(pixels: NDArray[np.uint8]) -> bytes:
    """PNG bytes of an 8-bit grey or RGB image (RGB given in RGB order)."""
    image = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if pixels.ndim == 3 else pixels
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise InvalidImageError(f"could not PNG-encode an array of shape {pixels.shape}")
    return bytes(encoded.tobytes())


def clip_box(box: Box, shape: tuple[int, int]) -> Box | None:
    """``box`` cut to an image of ``shape`` (height, width); ``None`` if nothing is left."""
    height, width = shape
    x1, y1 = min(max(box.x, 0.0), width), min(max(box.y, 0.0), height)
    x2, y2 = min(max(box.x2, 0.0), width), min(max(box.y2, 0.0), height)
    if x2 <= x1 or y2 <= y1:
        return None
    return Box.from_corners(x1, y1, x2, y2)


def scale_box(box: Box, sx: float, sy: float) -> Box:
    """``box`` with its x coordinates multiplied by ``sx`` and y by ``sy``."""
    return Box(box.x * sx, box.y * sy, box.width * sx, box.height * sy)


def lesion_mask(xray: XRay, key: str = "infection_mask") -> NDArray[np.bool_]:
    """The lesion mask of ``xray``: ``meta[key]`` when present, else its boxes filled in."""
    mask = xray.meta.get(key)
    if mask is not None:
        array = np.asarray(mask)
        if array.shape != xray.shape:
            raise InvalidImageError(
                f"meta[{key!r}] has shape {array.shape}, but the image is {xray.shape}",
                xray.id,
            )
        return array > 0
    filled = np.zeros(xray.shape, bool)
    for box in xray.boxes:
        x1, y1 = int(np.floor(box.x)), int(np.floor(box.y))
        x2, y2 = int(np.ceil(box.x2)), int(np.ceil(box.y2))
        filled[y1:y2, x1:x2] = True
    return filled
