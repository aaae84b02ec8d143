"""Decode PNG, JPEG and WebP radiographs to 2-D grayscale arrays with OpenCV.

8-bit images stay ``uint8`` and 16-bit PNGs stay ``uint16``: mapping 16 bits to 8 is a
preprocessing decision (see :mod:`covidcxr.preprocess`), not a decoding one. Colour images
(many public datasets store grayscale radiographs as RGB) are converted with the ITU-R
BT.601 luma weights, which leaves images whose three channels are equal unchanged; an
alpha channel is dropped.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from covidcxr.errors import InvalidImageError

__all__ = ["decode_raster"]

# ANYDEPTH keeps 16-bit PNGs 16-bit; ANYCOLOR keeps gray images single-channel and, unlike
# IMREAD_UNCHANGED, applies the EXIF orientation of JPEGs and drops alpha.
_IMREAD_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR


def decode_raster(data: bytes, source: str | None = None) -> NDArray[Any]:
    """Decode PNG, JPEG or WebP bytes to a 2-D ``uint8`` or ``uint16`` array.

    The caller has already checked the format and the declared size (see
    :mod:`covidcxr.io._sniff`).

    Raises
    ------
    InvalidImageError
        If OpenCV cannot decode the bytes or produces an unexpected depth.
    """
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _IMREAD_FLAGS)
    if decoded is None:
        raise InvalidImageError("the image data is corrupt and could not be decoded", source)
    if decoded.dtype not in (np.uint8, np.uint16):
        raise InvalidImageError(
            f"unsupported sample type {decoded.dtype}; radiographs are 8- or 16-bit", source
        )
    if decoded.ndim == 3:
        channels = decoded.shape[2]
        if channels == 1:
            decoded = decoded[:, :, 0]
        elif channels == 3:
            decoded = cv2.cvtColor(decoded, cv2.COLOR_BGR2GRAY)
        elif channels == 4:
            decoded = cv2.cvtColor(decoded, cv2.COLOR_BGRA2GRAY)
        else:
            raise InvalidImageError(f"unsupported number of channels: {channels}", source)
    return np.ascontiguousarray(decoded)
