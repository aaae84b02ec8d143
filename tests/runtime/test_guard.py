"""The accuracy guard's arithmetic: limits in percentage points, per class and overall."""

from __future__ import annotations

import numpy as np
import pytest

from covidcxr.errors import ConfigurationError
from covidcxr.runtime import measure_guard

CLASSES = ("covid-19", "normal")


def _one_hot(indices: list[int]) -> np.ndarray:
    return np.eye(len(CLASSES), dtype=np.float32)[indices] * 0.8 + 0.1


def _flipped(truth: list[int], positions: list[int]) -> list[int]:
    return [1 - label if i in positions else label for i, label in enumerate(truth)]


TRUTH = [0] * 200 + [1] * 200
LABELS = [CLASSES[i] for i in TRUTH]


def test_identical_predictions_pass_with_no_drop() -> None:
    report = measure_guard(LABELS, _one_hot(TRUTH), _one_hot(TRUTH), CLASSES)
    assert report.passed
    assert report.accuracy_drop == 0.0
    assert report.recall_drops == {"covid-19": 0.0, "normal": 0.0}
    assert report.n_labels_changed == 0


def test_a_drop_of_half_a_point_is_allowed() -> None:
    # Two of 400 images (one of 200 per class): accuracy -0.5, recalls -0.5 each.
    exported = _one_hot(_flipped(TRUTH, [0, 200]))
    report = measure_guard(LABELS, _one_hot(TRUTH), exported, CLASSES)
    assert report.accuracy_drop == 0.5
    assert report.passed


def test_more_than_half_a_point_of_accuracy_is_refused() -> None:
    exported = _one_hot(_flipped(TRUTH, [0, 200, 201]))
    report = measure_guard(LABELS, _one_hot(TRUTH), exported, CLASSES)
    assert report.accuracy_drop == 0.75
    assert not report.passed
    assert report.failures[0].startswith("accuracy dropped by 0.75 points")


def test_a_class_losing_recall_is_refused_even_when_accuracy_holds() -> None:
    # Three covid-19 images lost, three normal images gained: accuracy unchanged.
    reference = _one_hot(_flipped(TRUTH, [200, 201, 202]))
    exported = _one_hot(_flipped(TRUTH, [0, 1, 2]))
    report = measure_guard(LABELS, reference, exported, CLASSES)
    assert report.accuracy_drop == 0.0
    assert report.recall_drops == {"covid-19": 1.5, "normal": -1.5}
    assert report.failures == ["recall of 'covid-19' dropped by 1.50 points (limit 1)"]


def test_the_limits_can_be_set() -> None:
    exported = _one_hot(_flipped(TRUTH, [0, 1, 2]))
    report = measure_guard(
        LABELS, _one_hot(TRUTH), exported, CLASSES, max_accuracy_drop=1, max_recall_drop=2
    )
    assert report.passed


def test_a_class_absent_from_the_images_has_no_recall() -> None:
    report = measure_guard(["a", "a"], [[1, 0], [1, 0]], [[1, 0], [0, 1]], ["a", "b"])
    assert report.exported_recall == {"a": 0.5, "b": None}
    assert report.recall_drops == {"a": 50.0}
    assert report.to_dict()["passed"] is False


def test_a_label_the_model_does_not_know_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"\['pneumonia'\] are not among"):
        measure_guard(["pneumonia"], [[1, 0]], [[1, 0]], CLASSES)


def test_probabilities_of_different_shapes_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="probability arrays"):
        measure_guard(["covid-19"], [[1, 0]], [[1, 0, 0]], CLASSES)
