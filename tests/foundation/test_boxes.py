"""Box arithmetic: the invariants of transforms, IoU, clipping and masks, over many cases."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from covidcxr.boxes import (
    ResizeTransform,
    box_from_location,
    box_to_location,
    boxes_to_original,
    clip_box,
    fill_boxes,
    iou,
    iou_matrix,
    mask_boxes,
    mask_components,
    pixel_corners,
    scale_box,
    transform_boxes,
)
from covidcxr.errors import InvalidRecordError
from covidcxr.records import Box

sides = st.integers(1, 400)
shapes = st.tuples(sides, sides)
boxes = st.builds(Box, st.floats(0, 100), st.floats(0, 100), st.floats(0, 50), st.floats(0, 50))
non_empty_boxes = st.builds(
    Box, st.floats(0, 100), st.floats(0, 100), st.floats(0.01, 50), st.floats(0.01, 50)
)
scales = st.floats(0.05, 20)
offsets = st.floats(-300, 300)


@st.composite
def transforms(draw: st.DrawFn) -> ResizeTransform:
    """Any scale and offset (padding or cropping) between two image shapes."""
    return ResizeTransform(
        draw(scales), draw(scales), draw(offsets), draw(offsets), draw(shapes), draw(shapes)
    )


def _visible_span(extent: int, scale: float, offset: float, out_extent: int) -> tuple[float, float]:
    """The input interval along one axis that lands inside the output."""
    return max(0.0, -offset / scale), min(float(extent), (out_extent - offset) / scale)


@st.composite
def transforms_and_visible_boxes(draw: st.DrawFn) -> tuple[ResizeTransform, Box]:
    """A transform and a box of its input that it does not crop (not even in part)."""
    transform = draw(transforms())
    (in_h, in_w), (out_h, out_w) = transform.input_shape, transform.output_shape
    x_lo, x_hi = _visible_span(in_w, transform.scale_x, transform.offset_x, out_w)
    y_lo, y_hi = _visible_span(in_h, transform.scale_y, transform.offset_y, out_h)
    # Room for a box of at least a thousandth of a pixel on the output.
    assume((x_hi - x_lo) * transform.scale_x > 1e-3 and (y_hi - y_lo) * transform.scale_y > 1e-3)
    fractions = st.floats(0, 1)
    u1, u2 = sorted((draw(fractions), draw(fractions)))
    v1, v2 = sorted((draw(fractions), draw(fractions)))
    assume(u2 - u1 > 1e-3 and v2 - v1 > 1e-3)
    x1, x2 = x_lo + u1 * (x_hi - x_lo), x_lo + u2 * (x_hi - x_lo)
    y1, y2 = y_lo + v1 * (y_hi - y_lo), y_lo + v2 * (y_hi - y_lo)
    return transform, Box.from_corners(x1, y1, x2, y2)


def _close(a: float, b: float, extent: float) -> bool:
    """Equal within 1e-6 relative to the image extent the coordinates live in."""
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6 * extent)


# --- ResizeTransform ----------------------------------------------------------------------


@given(transforms_and_visible_boxes())
def test_transform_then_inverse_returns_the_box(case: tuple[ResizeTransform, Box]) -> None:
    transform, box = case
    (moved,) = transform.map_boxes([box])
    (back,) = transform.inverse().map_boxes([moved])
    extent = max(transform.input_shape)
    assert _close(back.x, box.x, extent)
    assert _close(back.y, box.y, extent)
    assert _close(back.x2, box.x2, extent)
    assert _close(back.y2, box.y2, extent)


@given(transforms_and_visible_boxes())
def test_boxes_to_original_undoes_transform_boxes(case: tuple[ResizeTransform, Box]) -> None:
    transform, box = case
    (back,) = boxes_to_original(transform_boxes([box], transform), transform)
    extent = max(transform.input_shape)
    assert _close(back.x, box.x, extent)
    assert _close(back.x2, box.x2, extent)
    assert _close(back.y, box.y, extent)
    assert _close(back.y2, box.y2, extent)


@given(transforms())
def test_inverse_of_inverse_is_the_transform(transform: ResizeTransform) -> None:
    twice = transform.inverse().inverse()
    assert twice.input_shape == transform.input_shape
    assert twice.output_shape == transform.output_shape
    assert twice.scale_x == pytest.approx(transform.scale_x, rel=1e-12)
    assert twice.scale_y == pytest.approx(transform.scale_y, rel=1e-12)
    assert twice.offset_x == pytest.approx(transform.offset_x, rel=1e-9, abs=1e-9)
    assert twice.offset_y == pytest.approx(transform.offset_y, rel=1e-9, abs=1e-9)


@given(transforms(), boxes)
def test_mapped_boxes_lie_inside_the_output(transform: ResizeTransform, box: Box) -> None:
    out_height, out_width = transform.output_shape
    for moved in transform.map_boxes([box]):
        assert 0.0 <= moved.x < moved.x2 <= out_width
        assert 0.0 <= moved.y < moved.y2 <= out_height


def test_a_box_cropped_away_entirely_is_dropped() -> None:
    crop = ResizeTransform(1.0, 1.0, -16.0, 0.0, (32, 64), (32, 32))
    assert crop.map_boxes([Box(0, 0, 8, 8)]) == ()


def test_parts_of_a_box_in_the_padding_are_clipped_on_the_way_back() -> None:
    pad = ResizeTransform(1.0, 1.0, 0.0, 8.0, (16, 32), (32, 32))
    assert boxes_to_original([Box(0, 0, 4, 16)], pad) == (Box(0, 0, 4, 8),)


def test_identity_changes_no_box() -> None:
    box = Box(1.5, 2, 3, 4.25)
    assert ResizeTransform.identity((10, 10)).map_boxes([box]) == (box,)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.inf, math.nan])
def test_transform_refuses_a_scale_it_could_not_invert(scale: float) -> None:
    with pytest.raises(InvalidRecordError, match="scale_x"):
        ResizeTransform(scale, 1.0, 0.0, 0.0, (4, 4), (4, 4))


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda: ResizeTransform.stretch((0, 8), (4, 4)), "input"),
        (lambda: ResizeTransform.stretch((8, 8), (4, 0)), "output"),
        (lambda: ResizeTransform.crop(Box(1, 1, 0, 3), (8, 8), (4, 4)), "crop window"),
        (lambda: ResizeTransform.crop(Box(1, 1, 2, 3), (8, 8), (0, 4)), "output"),
    ],
)
def test_a_transform_onto_or_from_nothing_is_refused(make: Any, what: str) -> None:
    with pytest.raises(InvalidRecordError, match=f"the {what} is empty"):
        make()


# --- scaling and clipping -----------------------------------------------------------------


@given(boxes, shapes)
def test_clipping_keeps_boxes_inside_the_shape(box: Box, shape: tuple[int, int]) -> None:
    clipped = clip_box(box, shape)
    if clipped is not None:
        height, width = shape
        assert 0.0 <= clipped.x < clipped.x2 <= width
        assert 0.0 <= clipped.y < clipped.y2 <= height


@given(non_empty_boxes)
def test_clipping_a_box_inside_the_shape_changes_nothing(box: Box) -> None:
    clipped = clip_box(box, (200, 200))
    assert clipped is not None
    assert (clipped.x, clipped.y) == (box.x, box.y)
    assert (clipped.x2, clipped.y2) == (box.x2, box.y2)


@given(boxes, scales, scales)
def test_scaling_multiplies_every_coordinate(box: Box, factor_x: float, factor_y: float) -> None:
    scaled = scale_box(box, factor_x, factor_y)
    assert scaled.x == pytest.approx(box.x * factor_x)
    assert scaled.width == pytest.approx(box.width * factor_x)
    assert scaled.y == pytest.approx(box.y * factor_y)
    assert scaled.height == pytest.approx(box.height * factor_y)


# --- IoU ----------------------------------------------------------------------------------


@given(boxes, boxes)
def test_iou_is_symmetric(a: Box, b: Box) -> None:
    assert iou(a, b) == iou(b, a)


@given(boxes, boxes)
def test_iou_lies_in_the_unit_interval(a: Box, b: Box) -> None:
    assert 0.0 <= iou(a, b) <= 1.0


@given(non_empty_boxes)
def test_iou_of_a_non_empty_box_with_itself_is_one(box: Box) -> None:
    assert iou(box, box) == 1.0


@given(st.lists(boxes, max_size=5), st.lists(boxes, max_size=5))
def test_iou_matrix_agrees_with_iou(first: list[Box], second: list[Box]) -> None:
    matrix = iou_matrix(first, second)
    assert matrix.shape == (len(first), len(second))
    for i, a in enumerate(first):
        for j, b in enumerate(second):
            assert matrix[i, j] == iou(a, b)


# --- masks --------------------------------------------------------------------------------


@st.composite
def rectangles_on_shapes(draw: st.DrawFn) -> tuple[Box, tuple[int, int]]:
    """A whole-pixel rectangle of at least one pixel inside an image."""
    height, width = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    x1, y1 = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
    x2, y2 = draw(st.integers(x1 + 1, width)), draw(st.integers(y1 + 1, height))
    return Box.from_corners(x1, y1, x2, y2), (height, width)


@given(rectangles_on_shapes())
def test_mask_boxes_of_a_drawn_rectangle_returns_it(case: tuple[Box, tuple[int, int]]) -> None:
    box, shape = case
    mask = np.zeros(shape, np.uint8)
    mask[int(box.y) : int(box.y2), int(box.x) : int(box.x2)] = 255
    assert mask_boxes(mask) == (box,)


@given(rectangles_on_shapes())
def test_mask_boxes_inverts_fill_boxes(case: tuple[Box, tuple[int, int]]) -> None:
    box, shape = case
    assert mask_boxes(fill_boxes([box], shape)) == (box,)


def test_mask_boxes_are_sorted_top_to_bottom_then_left_to_right() -> None:
    mask = np.zeros((10, 10), np.uint8)
    mask[6:8, 0:2] = mask[0:2, 6:8] = mask[0:2, 0:2] = 1
    assert [(b.x, b.y) for b in mask_boxes(mask)] == [(0, 0), (6, 0), (0, 6)]


def test_mask_boxes_ignores_components_below_min_area() -> None:
    mask = np.zeros((10, 10), np.uint8)
    mask[0, 0] = 1
    mask[4:8, 4:8] = 1
    assert mask_boxes(mask, min_area=2) == (Box(4, 4, 4, 4),)


def test_component_labels_follow_the_box_order() -> None:
    mask = np.zeros((10, 10), bool)
    mask[6:8, 0:2] = mask[0:2, 6:8] = True
    labels, found = mask_components(mask)
    for rank, box in enumerate(found, start=1):
        assert fill_boxes([box], mask.shape).tolist() == (labels == rank).tolist()


def test_fill_boxes_covers_every_pixel_a_box_touches() -> None:
    filled = fill_boxes([Box(0.5, 0.5, 1, 1)], (3, 3))
    assert filled.astype(int).tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 0]]


# --- pixels for drawing, Watson locations -------------------------------------------------


@given(boxes, shapes)
def test_pixel_corners_lie_inside_the_image(box: Box, shape: tuple[int, int]) -> None:
    (x1, y1), (x2, y2) = pixel_corners(box, shape)
    height, width = shape
    assert 0 <= x1 <= x2 < width
    assert 0 <= y1 <= y2 < height


@given(boxes)
def test_watson_location_covers_the_box(box: Box) -> None:
    covering = box_from_location(box_to_location(box))
    assert covering.x <= box.x
    assert covering.y <= box.y
    assert covering.x2 >= box.x2
    assert covering.y2 >= box.y2
    assert min(covering.width, covering.height) >= 1


def test_a_whole_pixel_box_survives_the_watson_round_trip() -> None:
    box = Box(5, 6, 7, 8)
    assert box_from_location(box_to_location(box)) == box
