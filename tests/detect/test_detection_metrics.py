"""Detection metrics against hand-computed cases, and their invariants."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from covidcxr.boxes import iou, iou_matrix
from covidcxr.evaluate import (
    COCO_IOU_THRESHOLDS,
    average_precision,
    evaluate_detections,
    match_detections,
    mean_average_precision,
)
from covidcxr.records import Box, Detection


def det(x: float, y: float, w: float, h: float, score: float) -> Detection:
    return Detection(Box(x, y, w, h), "opacity", score)


# --- IoU -------------------------------------------------------------------------------


def test_iou_of_identical_boxes_is_one() -> None:
    assert iou(Box(3, 4, 10, 6), Box(3, 4, 10, 6)) == 1.0


def test_iou_of_half_overlapping_boxes_is_one_third() -> None:
    # Intersection 50, union 150.
    assert iou(Box(0, 0, 10, 10), Box(5, 0, 10, 10)) == pytest.approx(1 / 3)


def test_iou_of_boxes_touching_at_an_edge_is_zero() -> None:
    assert iou(Box(0, 0, 10, 10), Box(10, 0, 10, 10)) == 0.0


def test_iou_of_empty_boxes_is_zero() -> None:
    assert iou(Box(5, 5, 0, 0), Box(5, 5, 0, 0)) == 0.0


def test_iou_of_contained_box_is_area_ratio() -> None:
    assert iou(Box(0, 0, 10, 10), Box(2, 2, 5, 5)) == pytest.approx(25 / 100)


def test_iou_matrix_agrees_with_iou() -> None:
    first = [Box(0, 0, 10, 10), Box(4, 4, 3, 9)]
    second = [Box(5, 0, 10, 10), Box(0, 0, 10, 10), Box(50, 50, 1, 1)]
    expected = [[iou(a, b) for b in second] for a in first]
    np.testing.assert_allclose(iou_matrix(first, second), expected)


def test_iou_matrix_of_nothing_has_zero_rows() -> None:
    assert iou_matrix([], [Box(0, 0, 1, 1)]).shape == (0, 1)


boxes = st.builds(
    Box,
    st.floats(0, 100),
    st.floats(0, 100),
    st.floats(0, 50),
    st.floats(0, 50),
)


@given(boxes, boxes)
def test_iou_is_symmetric_and_in_unit_interval(a: Box, b: Box) -> None:
    assert iou(a, b) == pytest.approx(iou(b, a))
    assert 0.0 <= iou(a, b) <= 1.0


# --- matching ---------------------------------------------------------------------------


def test_duplicate_detection_of_one_lesion_is_a_false_positive() -> None:
    match = match_detections([Box(0, 0, 10, 10)], [det(0, 0, 10, 10, 0.6), det(0, 0, 10, 10, 0.9)])
    assert match.scores.tolist() == [0.9, 0.6]
    assert match.true_positive.tolist() == [True, False]
    assert (match.n_true_positives, match.n_false_positives, match.n_false_negatives) == (1, 1, 0)


def test_higher_scoring_detection_takes_the_lesion_first() -> None:
    truths = [Box(0, 0, 10, 10)]
    # The lower-scoring detection overlaps better, but matching is greedy by score.
    match = match_detections(truths, [det(0, 0, 10, 10, 0.2), det(0, 0, 10, 7, 0.8)])
    assert match.true_positive.tolist() == [True, False]
    assert match.matched_iou[0] == pytest.approx(0.7)


def test_detection_takes_the_best_overlapping_unmatched_truth() -> None:
    truths = [Box(0, 0, 10, 10), Box(2, 0, 10, 10)]
    match = match_detections(truths, [det(2, 0, 10, 10, 0.9), det(0, 0, 10, 10, 0.8)])
    assert match.matched_truth.tolist() == [1, 0]


def test_overlap_below_threshold_does_not_match() -> None:
    match = match_detections([Box(0, 0, 10, 10)], [det(5, 0, 10, 10, 0.9)], iou_threshold=0.5)
    assert match.true_positive.tolist() == [False]


def test_iou_exactly_at_threshold_matches() -> None:
    match = match_detections([Box(0, 0, 10, 10)], [det(0, 0, 10, 5, 0.9)], iou_threshold=0.5)
    assert match.true_positive.tolist() == [True]


def test_threshold_outside_unit_interval_is_rejected() -> None:
    with pytest.raises(ValueError, match="iou_threshold"):
        match_detections([], [], iou_threshold=0.0)


# --- AP ---------------------------------------------------------------------------------


def test_perfect_detections_have_ap_one() -> None:
    truths = [[Box(0, 0, 10, 10)], [Box(5, 5, 4, 4), Box(20, 20, 8, 8)]]
    detections = [[det(0, 0, 10, 10, 0.5)], [det(5, 5, 4, 4, 0.9), det(20, 20, 8, 8, 0.3)]]
    assert average_precision(truths, detections) == 1.0
    assert mean_average_precision(truths, detections) == 1.0


def test_hand_computed_ap_with_a_false_positive_ranked_second() -> None:
    # Ranked: TP (0.9), FP (0.8), TP (0.7); two lesions.
    # Precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> interpolated 1 up to 1/2, 2/3 to 1.
    truths = [[Box(0, 0, 10, 10)], [Box(0, 0, 10, 10)]]
    detections = [[det(0, 0, 10, 10, 0.9), det(40, 40, 5, 5, 0.8)], [det(0, 0, 10, 10, 0.7)]]
    assert average_precision(truths, detections) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_hand_computed_ap_with_a_missed_lesion() -> None:
    # One of two lesions found, with nothing ranked above it: AP = 1 * 1/2.
    truths = [[Box(0, 0, 10, 10), Box(30, 30, 10, 10)]]
    assert average_precision(truths, [[det(0, 0, 10, 10, 0.9)]]) == pytest.approx(0.5)


def test_empty_predictions_give_ap_zero() -> None:
    assert average_precision([[Box(0, 0, 10, 10)], []], [[], []]) == 0.0


def test_empty_truths_give_undefined_ap() -> None:
    assert math.isnan(average_precision([[], []], [[det(0, 0, 1, 1, 0.5)], []]))
    assert math.isnan(mean_average_precision([[]], [[]]))


def test_duplicates_lower_ap() -> None:
    # TP (0.9), duplicate FP (0.8), TP (0.7): same shape as the hand-computed case above.
    truths = [[Box(0, 0, 10, 10)], [Box(0, 0, 10, 10)]]
    detections = [[det(0, 0, 10, 10, 0.9), det(0, 0, 10, 10, 0.8)], [det(0, 0, 10, 10, 0.7)]]
    assert average_precision(truths, detections) == pytest.approx(5 / 6)


def test_coco_map_averages_ap_over_ten_thresholds() -> None:
    # IoU 0.8: a hit at 0.50 ... 0.80 (7 thresholds), a miss at 0.85 ... 0.95.
    truths = [[Box(0, 0, 10, 10)]]
    assert mean_average_precision(truths, [[det(0, 0, 10, 8, 0.9)]]) == pytest.approx(0.7)


def test_misaligned_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="one entry per image"):
        average_precision([[]], [[], []])


# --- DetectionMetrics -------------------------------------------------------------------


def test_evaluate_detections_reports_counts_precision_and_recall() -> None:
    truths = [[Box(0, 0, 10, 10), Box(30, 30, 10, 10)], []]
    detections = [[det(0, 0, 10, 10, 0.9)], [det(0, 0, 5, 5, 0.4), det(9, 9, 5, 5, 0.3)]]
    metrics = evaluate_detections(truths, detections)
    assert (metrics.n_images, metrics.n_truths, metrics.n_detections) == (2, 2, 3)
    assert metrics.precision[0.5] == pytest.approx(1 / 3)
    assert metrics.recall[0.5] == pytest.approx(1 / 2)
    assert metrics.ap50 == pytest.approx(0.5)
    assert tuple(metrics.ap_by_iou) == COCO_IOU_THRESHOLDS
    first, second = metrics.per_image
    assert (first.true_positives, first.false_negatives, first.mean_matched_iou) == (1, 1, 1.0)
    assert (second.false_positives, second.n_truths) == (2, 0)
    assert math.isnan(second.average_precision)


def test_score_threshold_drops_low_scoring_detections() -> None:
    truths = [[Box(0, 0, 10, 10)]]
    detections = [[det(0, 0, 10, 10, 0.9), det(50, 50, 5, 5, 0.2)]]
    metrics = evaluate_detections(truths, detections, score_threshold=0.5)
    assert metrics.n_detections == 1
    assert metrics.precision[0.5] == 1.0


def test_precision_without_detections_is_undefined_and_serialises_as_null() -> None:
    metrics = evaluate_detections([[Box(0, 0, 10, 10)]], [[]])
    assert math.isnan(metrics.precision[0.5])
    payload = json.loads(json.dumps(metrics.to_dict(), allow_nan=False))
    assert payload["precision"]["0.50"] is None
    assert payload["recall"]["0.50"] == 0.0
    assert payload["per_image"][0]["false_negatives"] == 1


def test_metrics_record_is_frozen() -> None:
    metrics = evaluate_detections([[]], [[]])
    with pytest.raises(AttributeError):
        metrics.ap50 = 1.0  # type: ignore[misc]


def test_thresholds_without_one_half_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"include 0\.5"):
        evaluate_detections([[]], [[]], iou_thresholds=[0.75])


scores = st.floats(0, 1)
image_truths = st.lists(boxes, max_size=4)
image_detections = st.lists(st.builds(Detection, boxes, st.just("opacity"), scores), max_size=5)


@given(st.lists(st.tuples(image_truths, image_detections), min_size=1, max_size=4))
def test_metrics_are_bounded(images: list[tuple[list[Box], list[Detection]]]) -> None:
    truths = [t for t, _ in images]
    detections = [d for _, d in images]
    metrics = evaluate_detections(truths, detections)
    figures = [metrics.ap50, metrics.map_50_95, *metrics.precision.values()]
    figures += list(metrics.recall.values())
    for value in figures:
        assert math.isnan(value) or 0.0 <= value <= 1.0
    assert math.isnan(metrics.ap50) == (metrics.n_truths == 0)
    for figures_of_image in metrics.per_image:
        found = figures_of_image.true_positives
        assert found <= min(figures_of_image.n_truths, figures_of_image.n_detections)
