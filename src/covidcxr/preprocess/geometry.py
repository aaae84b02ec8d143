"""Resizing to the model size, and carrying boxes and masks through it.

Every resize covidcxr does is a scale followed by an offset, per axis::

    x_out = x_in * scale_x + offset_x        y_out = y_in * scale_y + offset_y

in *edge* coordinates (pixel ``i`` spans ``[i, i + 1)``), which is the convention of
:func:`cv2.resize`, so a box drawn on the original image frames exactly the same anatomy
after the transform. A :class:`ResizeTransform` records the two scales and two offsets;
:func:`boxes_to_original` maps boxes found on a preprocessed image back to the original.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Literal

import cv2
import numpy as np
from attrs import frozen
from numpy.typing import NDArray

from covidcxr.errors import ConfigurationError
from covidcxr.records import Box

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


@frozen
class ResizeTransform:
    """A per-axis scale and offset from an input image to an output image.

    Parameters
    ----------
    scale_x, scale_y
        Output pixels per input pixel.
    offset_x, offset_y
        Where the input's origin lands in the output (positive: padding, negative: crop).
    input_shape, output_shape
        ``(height, width)`` before and after.

    Examples
    --------
    >>> t = fit_resize((100, 200), 50, "pad")
    >>> t.scale_x, t.offset_y, t.output_shape
    (0.25, 12.0, (50, 50))
    """

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    input_shape: tuple[int, int]
    output_shape: tuple[int, int]

    @classmethod
    def identity(cls, shape: tuple[int, int]) -> ResizeTransform:
        """The transform that changes nothing, for an image of ``shape``."""
        return cls(1.0, 1.0, 0.0, 0.0, shape, shape)

    @property
    def resized_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the scaled image before padding or cropping."""
        height, width = self.input_shape
        return round(height * self.scale_y), round(width * self.scale_x)


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
    """
    if mode not in RESIZE_MODES:
        raise ConfigurationError(f"resize_mode must be one of {list(RESIZE_MODES)}, got {mode!r}")
    if size < 1:
        raise ConfigurationError(f"output_size must be at least 1, got {size}")
    height, width = shape
    if mode == "stretch":
        return ResizeTransform(size / width, size / height, 0.0, 0.0, shape, (size, size))
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


def transform_boxes(boxes: Iterable[Box], transform: ResizeTransform) -> tuple[Box, ...]:
    """Map boxes from the input image into the output image.

    Boxes are clipped to the output; a box cropped away entirely is dropped.

    Examples
    --------
    >>> t = fit_resize((100, 100), 50, "stretch")
    >>> transform_boxes([Box(10, 20, 30, 40)], t)
    (Box(x=5.0, y=10.0, width=15.0, height=20.0),)
    """
    out_height, out_width = transform.output_shape
    mapped = []
    for box in boxes:
        x1 = min(max(box.x * transform.scale_x + transform.offset_x, 0.0), out_width)
        y1 = min(max(box.y * transform.scale_y + transform.offset_y, 0.0), out_height)
        x2 = min(max(box.x2 * transform.scale_x + transform.offset_x, 0.0), out_width)
        y2 = min(max(box.y2 * transform.scale_y + transform.offset_y, 0.0), out_height)
        if x2 > x1 and y2 > y1:
            mapped.append(Box.from_corners(x1, y1, x2, y2))
    return tuple(mapped)


def boxes_to_original(boxes: Iterable[Box], transform: ResizeTransform) -> tuple[Box, ...]:
    """Map boxes found on a preprocessed image back to the original image's pixels.

    Use it with the ``meta["transform"]`` of a preprocessed :class:`~covidcxr.XRay`, for
    example to draw a detector's boxes on the radiograph as it was read. Parts of a box
    lying in padding are clipped away.

    Examples
    --------
    >>> t = fit_resize((100, 200), 50, "pad")
    >>> boxes_to_original([Box(5, 12.5, 10, 10)], t)
    (Box(x=20.0, y=2.0, width=40.0, height=40.0),)
    """
    in_height, in_width = transform.input_shape
    mapped = []
    for box in boxes:
        x1 = (box.x - transform.offset_x) / transform.scale_x
        y1 = (box.y - transform.offset_y) / transform.scale_y
        x2 = (box.x2 - transform.offset_x) / transform.scale_x
        y2 = (box.y2 - transform.offset_y) / transform.scale_y
        x1, x2 = min(max(x1, 0.0), in_width), min(max(x2, 0.0), in_width)
        y1, y2 = min(max(y1, 0.0), in_height), min(max(y2, 0.0), in_height)
        if x2 > x1 and y2 > y1:
            mapped.append(Box.from_corners(x1, y1, x2, y2))
    return tuple(mapped)
