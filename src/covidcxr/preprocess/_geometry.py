"""Resizing images to the model size: choosing the transform and applying it to pixels.

Every resize covidcxr does is a scale followed by an offset, per axis::

    x_out = x_in * scale_x + offset_x        y_out = y_in * scale_y + offset_y

in *edge* coordinates (pixel ``i`` spans ``[i, i + 1)``), which is the convention of
:func:`cv2.resize`, so a box drawn on the original image frames exactly the same anatomy
after the transform. :func:`fit_resize` chooses the transform for a resize mode and
:func:`resize_image` applies it to pixels (and masks). The transform record,
:class:`~covidcxr.boxes.ResizeTransform`, and everything that moves boxes through it
(:func:`~covidcxr.boxes.transform_boxes`, :func:`~covidcxr.boxes.boxes_to_original`) live
in :mod:`covidcxr.boxes`; they are re-exported here for code that imports them from here.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from covidcxr.boxes import ResizeTransform, boxes_to_original, transform_boxes
from covidcxr.errors import ConfigurationError

__all__ = [
    "RESIZE_MODES",
    "ResizeMode",
    "ResizeTransform",
    "boxes_to_original",
    "fit_resize",
    "resize_image",
    "transform_boxes",
]

ResizeMode = Literal["stretch", "pad", "crop"]
RESIZE_MODES: Final[tuple[str, ...]] = ("stretch", "pad", "crop")
# Scale factors below this use area averaging (see resize_image).
_AREA_BELOW_SCALE: Final = 0.75


def fit_resize(shape: tuple[int, int], size: int, mode: str) -> ResizeTransform:
    """The transform that brings an image of ``shape`` to ``size x size``.

    Parameters
    ----------
    shape
        ``(height, width)`` of the input.
    size
        The side of the square output.
    mode
        ``"stretch"``: scale each axis to ``size`` (the aspect ratio changes).
        ``"pad"``: scale the longer side to ``size`` and pad the shorter one equally on
        both sides with black. ``"crop"``: scale the shorter side to ``size`` and cut the
        longer one equally on both sides.

    Raises
    ------
    ConfigurationError
        For an unknown mode or a size below 1.

    Examples
    --------
    >>> t = fit_resize((100, 200), 50, "pad")
    >>> t.scale_x, t.offset_y, t.output_shape
    (0.25, 12.0, (50, 50))
    """
    if mode not in RESIZE_MODES:
        raise ConfigurationError(f"resize_mode must be one of {list(RESIZE_MODES)}, got {mode!r}")
    if size < 1:
        raise ConfigurationError(f"output_size must be at least 1, got {size}")
    height, width = shape
    if mode == "stretch":
        return ResizeTransform.stretch(shape, (size, size))
    factor = size / max(height, width) if mode == "pad" else size / min(height, width)
    new_height = max(1, round(height * factor))
    new_width = max(1, round(width * factor))
    if mode == "pad":
        offset_x, offset_y = (size - new_width) // 2, (size - new_height) // 2
    else:
        offset_x, offset_y = -((new_width - size) // 2), -((new_height - size) // 2)
    return ResizeTransform(
        new_width / width,
        new_height / height,
        float(offset_x),
        float(offset_y),
        shape,
        (size, size),
    )


def resize_image(
    image: NDArray[Any], transform: ResizeTransform, *, nearest: bool = False
) -> NDArray[Any]:
    """Apply ``transform`` to a 2-D image; padding is filled with zeros.

    Parameters
    ----------
    image
        An array of ``transform.input_shape``.
    transform
        From :func:`fit_resize`.
    nearest
        Nearest-neighbour interpolation (for masks and labels, which must stay binary).
        Otherwise area averaging when shrinking below 3/4 of the size, where bilinear
        interpolation would alias, and bilinear interpolation for milder shrinking and for
        enlarging: its own two-pixel footprint is enough there, at a fifth of the cost of
        OpenCV's area averaging for non-integer factors (256 to 224 pixels, for example).
    """
    if transform == ResizeTransform.identity(transform.input_shape):
        return image
    new_height, new_width = transform.resized_shape
    if nearest:
        interpolation = cv2.INTER_NEAREST
    elif min(transform.scale_x, transform.scale_y) < _AREA_BELOW_SCALE:
        interpolation = cv2.INTER_AREA
    else:
        interpolation = cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_width, new_height), interpolation=interpolation)
    out_height, out_width = transform.output_shape
    offset_x, offset_y = int(transform.offset_x), int(transform.offset_y)
    if (offset_x, offset_y) == (0, 0) and (new_height, new_width) == (out_height, out_width):
        return np.asarray(resized)
    canvas = np.zeros((out_height, out_width), dtype=image.dtype)
    # Source and destination windows of the overlap: offsets > 0 pad, offsets < 0 crop.
    src_x, dst_x = max(0, -offset_x), max(0, offset_x)
    src_y, dst_y = max(0, -offset_y), max(0, offset_y)
    span_x = min(new_width - src_x, out_width - dst_x)
    span_y = min(new_height - src_y, out_height - dst_y)
    canvas[dst_y : dst_y + span_y, dst_x : dst_x + span_x] = resized[
        src_y : src_y + span_y, src_x : src_x + span_x
    ]
    return canvas
