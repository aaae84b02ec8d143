"""All box arithmetic: scale, clip, transform and its inverse, IoU, masks to boxes and back.

Boxes are :class:`~covidcxr.Box` records in *edge* coordinates: pixel ``i`` spans
``[i, i + 1)``, so a box ``Box(2, 1, 3, 2)`` covers exactly the pixels of columns 2 to 4
and rows 1 to 2. That is the convention of :func:`cv2.resize` and of Watson Visual
Recognition's ``left``/``top``/``width``/``height``, so a box drawn on an image frames the
same anatomy after any resize that maps edges as

    x_out = x_in * scale_x + offset_x        y_out = y_in * scale_y + offset_y

A :class:`ResizeTransform` records such a map (the preprocessors store theirs in
``meta["transform"]``) and knows its inverse, in the spirit of MONAI's
``InvertibleTransform``: :func:`transform_boxes` carries boxes forward through it and
:func:`boxes_to_original` carries boxes found on the output back to the input.

Every mapping clips to the destination image and drops a box with nothing left.
This module sits right after :mod:`covidcxr.records`: it depends on nothing else in
covidcxr but its errors and private value checks, and everything that moves, compares
or rasterises boxes calls it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import cv2
import numpy as np
from attrs import field, frozen
from numpy.typing import NDArray

from covidcxr._values import is_real
from covidcxr.errors import InvalidRecordError
from covidcxr.records import Box

__all__ = [
    "ResizeTransform",
    "box_from_location",
    "box_to_location",
    "boxes_to_original",
    "clip_box",
    "clip_location",
    "corners_array",
    "fill_boxes",
    "iou",
    "iou_matrix",
    "mask_boxes",
    "mask_components",
    "pixel_corners",
    "scale_box",
    "transform_boxes",
]


def _positive_finite(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise InvalidRecordError(
            f"ResizeTransform.{attribute.name} must be finite and > 0, got {value!r}"
        )


def _finite(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not math.isfinite(value):
        raise InvalidRecordError(f"ResizeTransform.{attribute.name} must be finite, got {value!r}")


def _check_extent(what: str, height: float, width: float) -> None:
    # A transform onto or from nothing has no scale (it would divide by zero).
    if not (height > 0 and width > 0):
        raise InvalidRecordError(f"ResizeTransform: the {what} is empty ({height} x {width})")


def _clipped(x1: float, y1: float, x2: float, y2: float, shape: tuple[int, int]) -> Box | None:
    """The box with corners ``(x1, y1)``, ``(x2, y2)`` cut to ``shape``; ``None`` if empty."""
    height, width = shape
    x1, x2 = min(max(x1, 0.0), float(width)), min(max(x2, 0.0), float(width))
    y1, y2 = min(max(y1, 0.0), float(height)), min(max(y2, 0.0), float(height))
    if x2 <= x1 or y2 <= y1:
        return None
    return Box.from_corners(x1, y1, x2, y2)


@frozen
class ResizeTransform:
    """A per-axis scale and offset from an input image to an output image.

    Parameters
    ----------
    scale_x, scale_y
        Output pixels per input pixel, finite and positive.
    offset_x, offset_y
        Where the input's origin lands in the output (positive: padding, negative: crop).
    input_shape, output_shape
        ``(height, width)`` before and after.

    Examples
    --------
    A 100x200 image scaled by a quarter into the middle of a 50x50 square:

    >>> t = ResizeTransform(0.25, 0.25, 0.0, 12.0, (100, 200), (50, 50))
    >>> moved = t.map_boxes([Box(40, 8, 80, 80)])
    >>> moved
    (Box(x=10.0, y=14.0, width=20.0, height=20.0),)
    >>> t.inverse().map_boxes(moved)
    (Box(x=40.0, y=8.0, width=80.0, height=80.0),)
    """

    scale_x: float = field(converter=float, validator=_positive_finite)
    scale_y: float = field(converter=float, validator=_positive_finite)
    offset_x: float = field(converter=float, validator=_finite)
    offset_y: float = field(converter=float, validator=_finite)
    input_shape: tuple[int, int]
    output_shape: tuple[int, int]

    @classmethod
    def identity(cls, shape: tuple[int, int]) -> ResizeTransform:
        """The transform that changes nothing, for an image of ``shape``.

        Examples
        --------
        >>> ResizeTransform.identity((4, 6)).map_boxes([Box(1, 1, 2, 2)])
        (Box(x=1.0, y=1.0, width=2.0, height=2.0),)
        """
        return cls(1.0, 1.0, 0.0, 0.0, shape, shape)

    @classmethod
    def stretch(
        cls, input_shape: tuple[int, int], output_shape: tuple[int, int]
    ) -> ResizeTransform:
        """The transform that scales each axis of ``input_shape`` onto ``output_shape``.

        Examples
        --------
        >>> ResizeTransform.stretch((8, 8), (16, 32)).map_boxes([Box(1, 1, 2, 2)])
        (Box(x=4.0, y=2.0, width=8.0, height=4.0),)
        """
        (in_height, in_width), (out_height, out_width) = input_shape, output_shape
        _check_extent("input", in_height, in_width)
        _check_extent("output", out_height, out_width)
        return cls(
            out_width / in_width, out_height / in_height, 0.0, 0.0, input_shape, output_shape
        )

    @classmethod
    def crop(
        cls, window: Box, input_shape: tuple[int, int], output_shape: tuple[int, int]
    ) -> ResizeTransform:
        """The transform that cuts ``window`` out and stretches it onto ``output_shape``.

        Examples
        --------
        >>> t = ResizeTransform.crop(Box(10, 20, 40, 20), (100, 100), (10, 20))
        >>> t.map_boxes([Box(10, 20, 20, 10)])
        (Box(x=0.0, y=0.0, width=10.0, height=5.0),)
        """
        out_height, out_width = output_shape
        _check_extent("crop window", window.height, window.width)
        _check_extent("output", out_height, out_width)
        scale_x, scale_y = out_width / window.width, out_height / window.height
        return cls(
            scale_x, scale_y, -window.x * scale_x, -window.y * scale_y, input_shape, output_shape
        )

    def then(self, following: ResizeTransform) -> ResizeTransform:
        """The transform that applies this one, then ``following`` (on this one's output).

        Examples
        --------
        >>> first = ResizeTransform.stretch((100, 100), (50, 50))
        >>> both = first.then(ResizeTransform.crop(Box(10, 10, 20, 20), (50, 50), (40, 40)))
        >>> both.map_boxes([Box(20, 20, 40, 40)])
        (Box(x=0.0, y=0.0, width=40.0, height=40.0),)
        >>> both.inverse().map_boxes([Box(0, 0, 40, 40)])
        (Box(x=20.0, y=20.0, width=40.0, height=40.0),)
        """
        if tuple(following.input_shape) != tuple(self.output_shape):
            raise ValueError(
                f"cannot chain a transform from {following.input_shape} after one that "
                f"makes {self.output_shape}"
            )
        return ResizeTransform(
            self.scale_x * following.scale_x,
            self.scale_y * following.scale_y,
            self.offset_x * following.scale_x + following.offset_x,
            self.offset_y * following.scale_y + following.offset_y,
            self.input_shape,
            following.output_shape,
        )

    @property
    def resized_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the scaled image before padding or cropping.

        Examples
        --------
        >>> ResizeTransform(0.25, 0.25, 0.0, 12.0, (100, 200), (50, 50)).resized_shape
        (25, 50)
        """
        height, width = self.input_shape
        return round(height * self.scale_y), round(width * self.scale_x)

    def inverse(self) -> ResizeTransform:
        """The transform from this one's output back to its input.

        ``t.inverse().inverse()`` equals ``t`` up to floating-point rounding.

        Examples
        --------
        >>> back = ResizeTransform(0.25, 0.5, 0.0, 12.0, (100, 200), (50, 50)).inverse()
        >>> back.scale_x, back.scale_y, back.offset_x, back.offset_y
        (4.0, 2.0, 0.0, -24.0)
        >>> back.input_shape, back.output_shape
        ((50, 50), (100, 200))
        """
        return ResizeTransform(
            1.0 / self.scale_x,
            1.0 / self.scale_y,
            0.0 - self.offset_x / self.scale_x,
            0.0 - self.offset_y / self.scale_y,
            self.output_shape,
            self.input_shape,
        )

    def map_box(self, box: Box) -> Box | None:
        """``box`` carried into the output, clipped to it; ``None`` if nothing is left.

        Examples
        --------
        >>> crop = ResizeTransform(1.0, 1.0, -8.0, 0.0, (16, 32), (16, 16))
        >>> crop.map_box(Box(4, 0, 8, 8))
        Box(x=0.0, y=0.0, width=4.0, height=8.0)
        >>> crop.map_box(Box(0, 0, 8, 8)) is None
        True
        """
        return _clipped(
            box.x * self.scale_x + self.offset_x,
            box.y * self.scale_y + self.offset_y,
            box.x2 * self.scale_x + self.offset_x,
            box.y2 * self.scale_y + self.offset_y,
            self.output_shape,
        )

    def map_boxes(self, boxes: Iterable[Box]) -> tuple[Box, ...]:
        """:meth:`map_box` for each box, leaving out those cropped away entirely.

        Examples
        --------
        >>> crop = ResizeTransform(1.0, 1.0, -8.0, 0.0, (16, 32), (16, 16))
        >>> crop.map_boxes([Box(0, 0, 8, 8), Box(10, 2, 4, 4)])
        (Box(x=2.0, y=2.0, width=4.0, height=4.0),)
        """
        mapped = (self.map_box(box) for box in boxes)
        return tuple(box for box in mapped if box is not None)


def transform_boxes(boxes: Iterable[Box], transform: ResizeTransform) -> tuple[Box, ...]:
    """Map boxes from the input image into the output image.

    Boxes are clipped to the output; a box cropped away entirely is dropped. The same as
    ``transform.map_boxes(boxes)``.

    Examples
    --------
    >>> t = ResizeTransform.stretch((100, 100), (50, 50))
    >>> transform_boxes([Box(10, 20, 30, 40)], t)
    (Box(x=5.0, y=10.0, width=15.0, height=20.0),)
    """
    return transform.map_boxes(boxes)


def boxes_to_original(boxes: Iterable[Box], transform: ResizeTransform) -> tuple[Box, ...]:
    """Map boxes found on a preprocessed image back to the original image's pixels.

    Use it with the ``meta["transform"]`` of a preprocessed :class:`~covidcxr.XRay`, for
    example to draw a detector's boxes on the radiograph as it was read. Parts of a box
    lying in padding are clipped away. The same as ``transform.inverse().map_boxes(boxes)``.

    Examples
    --------
    >>> t = ResizeTransform(0.25, 0.25, 0.0, 12.0, (100, 200), (50, 50))
    >>> boxes_to_original([Box(5, 12.5, 10, 10)], t)
    (Box(x=20.0, y=2.0, width=40.0, height=40.0),)
    """
    return transform.inverse().map_boxes(boxes)


def scale_box(box: Box, factor_x: float, factor_y: float | None = None) -> Box:
    """``box`` with its x coordinates multiplied by ``factor_x`` and y by ``factor_y``.

    ``factor_y`` defaults to ``factor_x``. Nothing is clipped: use it to follow an image
    that is enlarged or shrunk as a whole (for display, say).

    Examples
    --------
    >>> scale_box(Box(1, 2, 3, 4), 2)
    Box(x=2.0, y=4.0, width=6.0, height=8.0)
    >>> scale_box(Box(1, 2, 3, 4), 2, 0.5)
    Box(x=2.0, y=1.0, width=6.0, height=2.0)
    """
    factor_y = factor_x if factor_y is None else factor_y
    return Box(box.x * factor_x, box.y * factor_y, box.width * factor_x, box.height * factor_y)


def clip_box(box: Box, shape: tuple[int, int]) -> Box | None:
    """``box`` cut to an image of ``shape`` (height, width); ``None`` if nothing is left.

    Examples
    --------
    >>> clip_box(Box(6, 2, 10, 4), (8, 8))
    Box(x=6.0, y=2.0, width=2.0, height=4.0)
    >>> clip_box(Box(9, 2, 10, 4), (8, 8)) is None
    True
    """
    return _clipped(box.x, box.y, box.x2, box.y2, shape)


def corners_array(boxes: Sequence[Box]) -> NDArray[np.float64]:
    """The boxes' corners ``(x1, y1, x2, y2)`` as a ``float64`` array of shape ``(n, 4)``.

    Examples
    --------
    >>> corners_array([Box(1, 2, 3, 4)])
    array([[1., 2., 4., 6.]])
    >>> corners_array([]).shape
    (0, 4)
    """
    if not boxes:
        return np.zeros((0, 4), np.float64)
    return np.array([(box.x, box.y, box.x2, box.y2) for box in boxes], np.float64)


def iou_matrix(first: Sequence[Box], second: Sequence[Box]) -> NDArray[np.float64]:
    """Pairwise intersection over union, shape ``(len(first), len(second))``.

    Areas are measured from the corners, as the intersection is, so a non-empty box has
    IoU exactly 1 with itself; boxes of zero area have IoU 0 with everything.

    Examples
    --------
    >>> iou_matrix([Box(0, 0, 10, 10)], [Box(0, 0, 10, 10), Box(5, 0, 10, 10)]).round(3)
    array([[1.   , 0.333]])
    """
    a, b = corners_array(first), corners_array(second)
    overlap_w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    overlap_h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    intersection = np.clip(overlap_w, 0, None) * np.clip(overlap_h, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        result = np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)
    return np.clip(result, 0.0, 1.0)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes.

    Two empty boxes (zero area) have IoU 0: they cover nothing, so nothing overlaps.

    Parameters
    ----------
    a, b
        Boxes in the same pixel coordinates.

    Returns
    -------
    float
        A value in ``[0, 1]``; 1 for identical non-empty boxes. Always equal to the
        corresponding entry of :func:`iou_matrix`.

    Examples
    --------
    >>> iou(Box(0, 0, 10, 10), Box(5, 0, 10, 10))
    0.3333333333333333
    >>> iou(Box(0, 0, 10, 10), Box(20, 20, 5, 5))
    0.0
    """
    return float(iou_matrix((a,), (b,))[0, 0])


def mask_components(
    mask: NDArray[Any], *, min_area: float = 1, connectivity: int = 8
) -> tuple[NDArray[np.int32], tuple[Box, ...]]:
    """A mask's connected components: a label image and one bounding box per component.

    Parameters
    ----------
    mask
        A 2-D mask; non-zero (or true) pixels are foreground.
    min_area
        Components with fewer pixels are left out (labelled 0, given no box).
    connectivity
        8 (diagonal neighbours touch) or 4.

    Returns
    -------
    labels : numpy.ndarray
        ``int32`` of the mask's shape: 0 for background and left-out components, ``k`` for
        the pixels of ``boxes[k - 1]``.
    boxes : tuple of Box
        Sorted top-to-bottom, then left-to-right; empty for an empty mask.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((6, 6), bool)
    >>> mask[3:5, 0:2] = mask[0:1, 3:6] = True
    >>> labels, boxes = mask_components(mask)
    >>> boxes
    (Box(x=3.0, y=0.0, width=3.0, height=1.0), Box(x=0.0, y=3.0, width=2.0, height=2.0))
    >>> int(labels[4, 1]), int(labels[0, 5])
    (2, 1)
    """
    foreground = (np.asarray(mask) > 0).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        foreground, connectivity=connectivity
    )
    kept = [
        (int(y), int(x), component, Box(int(x), int(y), int(width), int(height)))
        for component, (x, y, width, height, area) in enumerate(stats[1:count], start=1)
        if area >= min_area
    ]
    kept.sort(key=lambda item: (item[0], item[1]))
    relabel = np.zeros(count, np.int32)
    for rank, (_, _, component, _) in enumerate(kept, start=1):
        relabel[component] = rank
    return relabel[labels], tuple(box for *_, box in kept)


def mask_boxes(
    mask: NDArray[Any], *, min_area: float = 1, connectivity: int = 8
) -> tuple[Box, ...]:
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
    return mask_components(mask, min_area=min_area, connectivity=connectivity)[1]


def fill_boxes(boxes: Iterable[Box], shape: tuple[int, int]) -> NDArray[np.bool_]:
    """A mask of ``shape`` that is true on every pixel some box covers, even in part.

    The inverse of :func:`mask_boxes` for boxes on whole pixels.

    Examples
    --------
    >>> fill_boxes([Box(1, 0, 1.5, 1)], (2, 4)).astype(int).tolist()
    [[0, 1, 1, 0], [0, 0, 0, 0]]
    """
    filled = np.zeros(shape, bool)
    for box in boxes:
        x1, y1 = math.floor(box.x), math.floor(box.y)
        x2, y2 = math.ceil(box.x2), math.ceil(box.y2)
        filled[y1:y2, x1:x2] = True
    return filled


def pixel_corners(box: Box, shape: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """The first and last pixel ``(x, y)`` of ``box`` inside ``shape``, as drawing wants.

    Edges are rounded to the nearest pixel boundary; the result is at least one pixel
    and lies inside the image, the inclusive corners :func:`cv2.rectangle` takes.

    Examples
    --------
    >>> pixel_corners(Box(2, 1, 3, 2), (10, 10))
    ((2, 1), (4, 2))
    >>> pixel_corners(Box(8, 8, 5, 5), (10, 10))
    ((8, 8), (9, 9))
    """
    height, width = shape
    x1 = min(max(round(box.x), 0), width - 1)
    y1 = min(max(round(box.y), 0), height - 1)
    x2 = min(max(round(box.x2) - 1, x1), width - 1)
    y2 = min(max(round(box.y2) - 1, y1), height - 1)
    return (x1, y1), (x2, y2)


def box_from_location(location: Mapping[str, Any]) -> Box:
    """A box from a Watson ``location`` (``left``, ``top``, ``width``, ``height``).

    Raises
    ------
    KeyError, TypeError, ValueError
        For a missing key or a value that is not a non-negative finite number.

    Examples
    --------
    >>> box_from_location({"left": 5, "top": 6, "width": 7, "height": 8})
    Box(x=5.0, y=6.0, width=7.0, height=8.0)
    """
    return Box(
        float(location["left"]),
        float(location["top"]),
        float(location["width"]),
        float(location["height"]),
    )


def clip_location(location: Mapping[str, Any], shape: tuple[int, int]) -> Box | None:
    """A Watson ``location`` cut to an image of ``shape`` (``(height, width)``).

    A service may place a box partly outside the image it was sent (a ``left`` or
    ``top`` below zero, or a right edge past the width): only the part inside the image
    is kept, as :meth:`ResizeTransform.map_box` keeps it. ``None`` when nothing of the
    box is inside.

    Raises
    ------
    KeyError
        For a missing key.
    TypeError
        For a value that is not a number (booleans and text included).
    ValueError
        For a value that is not finite, or a negative ``width`` or ``height``.

    Examples
    --------
    >>> clip_location({"left": -4, "top": 6, "width": 10, "height": 8}, (32, 32))
    Box(x=0.0, y=6.0, width=6.0, height=8.0)
    >>> clip_location({"left": 40, "top": 6, "width": 10, "height": 8}, (32, 32)) is None
    True
    """
    values: dict[str, float] = {}
    for key in ("left", "top", "width", "height"):
        value = location[key]
        if not is_real(value):
            raise TypeError(f"location {key!r} should be a number, got {value!r}")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"location {key!r} should be finite, got {value!r}")
        if key in ("width", "height") and number < 0:
            raise ValueError(f"location {key!r} should be >= 0, got {value!r}")
        values[key] = number
    left, top = values["left"], values["top"]
    return _clipped(left, top, left + values["width"], top + values["height"], shape)


def box_to_location(box: Box) -> dict[str, int]:
    """The smallest whole-pixel Watson ``location`` covering ``box``, at least 1x1.

    Examples
    --------
    >>> box_to_location(Box(5.5, 6.2, 4, 4))
    {'left': 5, 'top': 6, 'width': 5, 'height': 5}
    """
    left, top = math.floor(box.x), math.floor(box.y)
    return {
        "left": left,
        "top": top,
        "width": max(1, math.ceil(box.x2) - left),
        "height": max(1, math.ceil(box.y2) - top),
    }
