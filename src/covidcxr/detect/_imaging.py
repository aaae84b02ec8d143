"""Small pixel helpers shared by the detectors and the drawing code.

Box arithmetic (clipping, scaling, filling boxes into masks) lives in :mod:`covidcxr.boxes`.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from covidcxr.boxes import fill_boxes
from covidcxr.errors import InvalidImageError
from covidcxr.preprocess import exact_uint8
from covidcxr.records import XRay


def to_uint8(pixels: NDArray[Any]) -> NDArray[np.uint8]:
    """8-bit grey levels for display or upload.

    ``uint8`` passes through, and so does 8-bit content in a ``uint16`` container
    (:func:`~covidcxr.preprocess.exact_uint8`); ``float32`` in ``[0, 1]`` (the
    preprocessors' output) is scaled by 255; anything else is stretched from its own
    minimum to maximum, so that a 12-bit radiograph stored as ``uint16`` is not left
    nearly black.
    """
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels)
    exact = exact_uint8(pixels)
    if exact is not None:
        return exact
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
    return fill_boxes(xray.boxes, xray.shape)
