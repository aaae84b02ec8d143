"""The default Evaluator: report contents, provenance, detection figures, safe writing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from covidcxr import Box, Detection, Evaluator, XRay
from covidcxr.errors import ConfigurationError, OutputExistsError
from covidcxr.evaluate.evaluator import ClassificationEvaluator
from covidcxr.evaluate.provenance import data_fingerprint, software_versions

CLASSES = ("covid-19", "normal", "pneumonia")


def xray(label: str | None, i: int = 0, boxes: tuple[Box, ...] = ()) -> XRay:
    pixels = np.full((16, 16), i, np.uint8)
    return XRay(pixels, id=f"img-{i}.png", label=label, boxes=boxes)


def test_evaluator_satisfies_the_protocol() -> None:
    assert isinstance(ClassificationEvaluator(), Evaluator)


def test_report_carries_classification_figures_and_provenance() -> None:
    truths = [xray("covid-19", 0), xray("normal", 1), xray("pneumonia", 2)]
    evaluator = ClassificationEvaluator(n_bootstrap=10, configuration={"classifier": "toy"})
    report = evaluator.evaluate(truths, probabilities=np.eye(3), classes=CLASSES)
    assert report.classification is not None
    assert report.classification.accuracy == 1.0
    assert report.detection is None
    assert report.configuration == {"classifier": "toy"}
    assert report.data_fingerprint == data_fingerprint(truths)
    assert report.versions["numpy"] == np.__version__
    data = json.loads(report.to_json())
    assert data["classification"]["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert data["configuration"] == {"classifier": "toy"}


def test_detections_are_scored_against_the_truth_boxes() -> None:
    lesion = Box(2, 2, 6, 6)
    truths = [xray("covid-19", 0, (lesion,)), xray("normal", 1)]
    detections = [[Detection(lesion, "opacity", 0.9)], [Detection(Box(0, 0, 4, 4), "opacity", 0.3)]]
    report = ClassificationEvaluator().evaluate(truths, detections=detections)
    assert report.classification is None
    assert report.detection is not None
    assert report.detection.ap50 == 1.0
    assert report.detection.precision[0.5] == 0.5  # the box on the normal image is a false positive
    assert json.loads(report.to_json())["detection"]["n_truths"] == 1


def test_detections_must_align_with_truths() -> None:
    with pytest.raises(ConfigurationError, match="one \\(possibly empty\\) list per radiograph"):
        ClassificationEvaluator().evaluate([xray("normal")], detections=[[], []])


def test_nothing_to_evaluate_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="nothing to evaluate"):
        ClassificationEvaluator().evaluate([xray("normal")])


def test_unlabelled_truth_is_named_in_the_error() -> None:
    with pytest.raises(ConfigurationError, match=r"img-4\.png"):
        ClassificationEvaluator().evaluate(
            [xray(None, 4)], probabilities=np.array([[1.0, 0.0, 0.0]]), classes=CLASSES
        )


def test_fingerprint_changes_with_pixels_labels_and_boxes_but_not_ids() -> None:
    base = data_fingerprint([xray("normal", 1)])
    assert data_fingerprint([xray("normal", 2)]) != base
    assert data_fingerprint([xray("pneumonia", 1)]) != base
    assert data_fingerprint([xray("normal", 1, (Box(0, 0, 2, 2),))]) != base
    moved = XRay(np.full((16, 16), 1, np.uint8), id="elsewhere.png", label="normal")
    assert data_fingerprint([moved]) == base


def test_fingerprint_depends_on_order() -> None:
    a, b = xray("normal", 1), xray("normal", 2)
    assert data_fingerprint([a, b]) != data_fingerprint([b, a])


def test_versions_name_python_and_the_numerical_stack() -> None:
    versions = software_versions()
    assert {"python", "covidcxr", "numpy", "scikit-learn"} <= versions.keys()


def test_write_json_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    report = ClassificationEvaluator(n_bootstrap=0).evaluate(
        [xray("normal"), xray("covid-19", 1)], probabilities=np.eye(3)[[1, 0]], classes=CLASSES
    )
    target = tmp_path / "report.json"
    target.write_text("precious")
    with pytest.raises(OutputExistsError, match=r"report\.json"):
        report.write_json(target)
    assert target.read_text() == "precious"
    report.write_json(target, overwrite=True)
    assert json.loads(target.read_text())["classification"]["accuracy"] == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary left behind
