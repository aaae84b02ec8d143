"""The default Evaluator: report contents, provenance, detection figures, safe writing."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from covidcxr import Box, Detection, Evaluator, GroundTruth, Prediction, XRay
from covidcxr.errors import ConfigurationError, OutputExistsError
from covidcxr.evaluate import (
    UNCERTAIN,
    ClassificationEvaluator,
    data_fingerprint,
    software_versions,
    truth_fingerprint,
)
from covidcxr.records import REJECTED

CLASSES = ("covid-19", "normal", "pneumonia")


def xray(label: str | None, i: int = 0, boxes: tuple[Box, ...] = ()) -> XRay:
    pixels = np.full((16, 16), i, np.uint8)
    return XRay(pixels, id=f"img-{i}.png", label=label, boxes=boxes)


def truth(
    label: str | None, i: int = 0, boxes: tuple[Box, ...] = (), *, annotated: bool = True
) -> GroundTruth:
    return GroundTruth(f"img-{i}.png", label, boxes, annotated)


def prediction(
    i: int, probabilities: Sequence[float], detections: Sequence[Detection] = ()
) -> Prediction:
    """A prediction for ``img-{i}.png``, ``probabilities`` in :data:`CLASSES` order."""
    label = CLASSES[int(np.argmax(probabilities))]
    return Prediction(
        f"img-{i}.png", label, dict(zip(CLASSES, probabilities, strict=True)), detections
    )


def test_evaluator_satisfies_the_protocol() -> None:
    assert isinstance(ClassificationEvaluator(), Evaluator)


def test_report_carries_classification_figures_and_provenance() -> None:
    truths = [truth("covid-19", 0), truth("normal", 1), truth("pneumonia", 2)]
    predictions = [prediction(i, row) for i, row in enumerate(np.eye(3).tolist())]
    evaluator = ClassificationEvaluator(n_bootstrap=10, configuration={"classifier": "toy"})
    report = evaluator.evaluate(truths, predictions, classes=CLASSES, detections=False)
    assert report.classification is not None
    assert report.classification.accuracy == 1.0
    assert report.detection is None
    assert report.notes == ()
    assert report.configuration == {"classifier": "toy"}
    assert report.data_fingerprint == truth_fingerprint(truths)
    assert report.versions["numpy"] == np.__version__
    data = json.loads(report.to_json())
    assert data["classification"]["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert data["configuration"] == {"classifier": "toy"}
    assert data["notes"] == []


def test_probabilities_are_read_in_classes_order() -> None:
    # The predictions hold their classes in another order than ``classes``.
    truths = [truth("pneumonia", 0), truth("normal", 1)]
    predictions = [
        Prediction("img-0.png", "pneumonia", {"pneumonia": 0.7, "normal": 0.3}),
        Prediction("img-1.png", "normal", {"pneumonia": 0.4, "normal": 0.6}),
    ]
    report = ClassificationEvaluator(n_bootstrap=0).evaluate(
        truths, predictions, classes=("normal", "pneumonia"), detections=False
    )
    assert report.classification is not None
    assert report.classification.confusion_matrix == ((1, 0), (0, 1))


def test_detections_are_scored_against_the_truth_boxes() -> None:
    lesion = Box(2, 2, 6, 6)
    truths = [truth("covid-19", 0, (lesion,)), truth("normal", 1)]
    predictions = [
        prediction(0, [0.8, 0.1, 0.1], [Detection(lesion, "opacity", 0.9)]),
        prediction(1, [0.1, 0.8, 0.1], [Detection(Box(0, 0, 4, 4), "opacity", 0.3)]),
    ]
    report = ClassificationEvaluator(n_bootstrap=0).evaluate(truths, predictions, classes=CLASSES)
    assert report.classification is not None
    assert report.classification.accuracy == 1.0
    assert report.detection is not None
    assert report.detection.ap50 == 1.0
    assert report.detection.precision[0.5] == 0.5  # the box on the normal image is a false positive
    assert report.notes == ()
    assert json.loads(report.to_json())["detection"]["n_truths"] == 1


def test_detections_alone_are_scored_when_no_classes_are_given() -> None:
    lesion = Box(2, 2, 6, 6)
    truths = [truth(None, 0, (lesion,)), truth(None, 1)]  # unlabelled: no class is scored
    predictions = [
        Prediction("img-0.png", "", {}, [Detection(lesion, "opacity", 0.9)]),
        Prediction("img-1.png", "", {}),
    ]
    report = ClassificationEvaluator().evaluate(truths, predictions, classes=())
    assert report.classification is None
    assert report.detection is not None
    assert (report.detection.ap50, report.detection.precision[0.5]) == (1.0, 1.0)


def test_unannotated_truths_skip_detection_with_a_note() -> None:
    lesion = Box(2, 2, 6, 6)
    truths = [truth("covid-19", 0, (lesion,)), truth("covid-19", 1, annotated=False)]
    predictions = [
        prediction(0, [0.8, 0.1, 0.1], [Detection(lesion, "opacity", 0.9)]),
        prediction(1, [0.8, 0.1, 0.1], [Detection(Box(0, 0, 4, 4), "opacity", 0.3)]),
    ]
    report = ClassificationEvaluator(n_bootstrap=0).evaluate(truths, predictions, classes=CLASSES)
    assert report.classification is not None
    assert report.detection is None
    [note] = report.notes
    assert note.startswith("Detection was not scored: 1 of 2 radiograph(s)")
    assert "'img-1.png'" in note
    assert json.loads(report.to_json())["notes"] == [note]


def test_no_note_when_detections_are_not_asked_for() -> None:
    truths = [truth("covid-19", 0, annotated=False), truth("normal", 1)]
    predictions = [prediction(0, [1, 0, 0]), prediction(1, [0, 1, 0])]
    report = ClassificationEvaluator(n_bootstrap=0).evaluate(
        truths, predictions, classes=CLASSES, detections=False
    )
    assert (report.detection, report.notes) == (None, ())


def test_truths_and_predictions_must_have_the_same_length() -> None:
    with pytest.raises(ConfigurationError, match=r"1 truth\(s\) but 2 prediction\(s\)"):
        ClassificationEvaluator().evaluate(
            [truth("normal", 0)],
            [prediction(0, [0, 1, 0]), prediction(1, [0, 1, 0])],
            classes=CLASSES,
        )


def test_the_first_id_mismatch_is_named() -> None:
    truths = [truth("normal", 0), truth("normal", 1), truth("normal", 2)]
    predictions = [prediction(0, [0, 1, 0]), prediction(2, [0, 1, 0]), prediction(1, [0, 1, 0])]
    with pytest.raises(
        ConfigurationError,
        match=r"position 1 the truth is 'img-1\.png' but the prediction is 'img-2\.png'",
    ):
        ClassificationEvaluator().evaluate(truths, predictions, classes=CLASSES)


def test_a_prediction_without_a_class_is_named() -> None:
    predictions = [
        prediction(0, [0, 1, 0]),
        Prediction("img-1.png", "normal", {"covid-19": 0.0, "normal": 1.0}),
    ]
    with pytest.raises(
        ConfigurationError,
        match=r"prediction 'img-1\.png' has no probability for class 'pneumonia'",
    ):
        ClassificationEvaluator().evaluate(
            [truth("normal", 0), truth("normal", 1)], predictions, classes=CLASSES
        )


def test_a_prediction_with_a_class_outside_classes_is_named() -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"prediction 'img-0\.png' has a probability for class 'covid-19', which is not",
    ):
        ClassificationEvaluator().evaluate(
            [truth("normal", 0)], [prediction(0, [0, 1, 0])], classes=("normal", "pneumonia")
        )


def test_nothing_to_evaluate_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="nothing to evaluate: no truths"):
        ClassificationEvaluator().evaluate([], [], classes=CLASSES)
    with pytest.raises(ConfigurationError, match=r"nothing to evaluate.*detections=False"):
        ClassificationEvaluator().evaluate(
            [truth("normal")], [prediction(0, [0, 1, 0])], classes=(), detections=False
        )
    with pytest.raises(ConfigurationError, match=r"nothing to evaluate.*not annotated"):
        ClassificationEvaluator().evaluate(
            [truth("normal", annotated=False)], [prediction(0, [0, 1, 0])], classes=()
        )


def test_unlabelled_truth_is_named_in_the_error() -> None:
    with pytest.raises(ConfigurationError, match=r"img-4\.png"):
        ClassificationEvaluator().evaluate(
            [truth(None, 4)], [prediction(4, [1.0, 0.0, 0.0])], classes=CLASSES
        )


def test_truth_fingerprint_changes_with_ids_labels_boxes_annotation_and_order() -> None:
    base = truth_fingerprint([truth("normal", 1)])
    assert truth_fingerprint([truth("normal", 1)]) == base
    assert truth_fingerprint([truth("normal", 2)]) != base
    assert truth_fingerprint([truth("pneumonia", 1)]) != base
    assert truth_fingerprint([truth("normal", 1, (Box(0, 0, 2, 2),))]) != base
    assert truth_fingerprint([truth("normal", 1, annotated=False)]) != base
    a, b = truth("normal", 1), truth("normal", 2)
    assert truth_fingerprint([a, b]) != truth_fingerprint([b, a])


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
        [truth("normal", 0), truth("covid-19", 1)],
        [prediction(0, [0, 1, 0]), prediction(1, [1, 0, 0])],
        classes=CLASSES,
        detections=False,
    )
    target = tmp_path / "report.json"
    target.write_text("precious")
    with pytest.raises(OutputExistsError, match=r"report\.json"):
        report.write_json(target)
    assert target.read_text() == "precious"
    report.write_json(target, overwrite=True)
    assert json.loads(target.read_text())["classification"]["accuracy"] == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary left behind


def test_cli_summary_writes_missing_figures_as_n_a_not_none() -> None:
    from covidcxr.cli import _summary_lines

    # No lesion anywhere: AP is undefined. Every image right: the bootstrap cannot vary.
    truths = [truth("normal", 0), truth("pneumonia", 1)]
    predictions = [prediction(0, [0.0, 1.0, 0.0]), prediction(1, [0.0, 0.0, 1.0])]
    report = ClassificationEvaluator(n_bootstrap=20).evaluate(
        truths, predictions, classes=("covid-19", "normal", "pneumonia")
    )
    lines = _summary_lines(report)
    assert "detection:   AP@0.5 n/a, mAP@[.5:.95] n/a" in lines
    assert not [line for line in lines if "None" in line or "nan" in line]
    assert "macro F1:    1.000 (95% CI n/a, bootstrap)" in lines
    (accuracy,) = [line for line in lines if line.startswith("accuracy:")]
    assert accuracy.startswith("accuracy:    1.000 (95% CI 0.342-1.000, wilson)")


# --- calibration, risk-coverage and abstentions (issue 13) ---------------------------------


def abstaining_set() -> tuple[list[GroundTruth], list[Prediction]]:
    """Four radiographs: two right, one wrong, one abstained on (its argmax is right)."""
    truths = [truth("covid-19", 0), truth("normal", 1), truth("pneumonia", 2), truth("normal", 3)]
    predictions = [
        prediction(0, [0.9, 0.05, 0.05]),
        prediction(1, [0.1, 0.8, 0.1]),
        prediction(2, [0.1, 0.7, 0.2]),  # wrong: normal for pneumonia
        Prediction(
            "img-3.png",
            UNCERTAIN,
            dict(zip(CLASSES, [0.3, 0.4, 0.3], strict=True)),
            status=UNCERTAIN,
        ),
    ]
    return truths, predictions


def test_abstentions_are_counted_and_scored_covered_and_overall() -> None:
    truths, predictions = abstaining_set()
    report = ClassificationEvaluator(n_bootstrap=0).evaluate(
        truths, predictions, classes=CLASSES, detections=False
    )
    decisions = report.decisions
    assert decisions is not None
    assert decisions.n_abstained == 1
    assert decisions.coverage == 0.75
    assert decisions.accuracy_covered == pytest.approx(2 / 3)
    assert decisions.accuracy_overall == 0.5
    assert decisions.sensitivity["normal"] == 0.5  # the abstention on a normal is a miss
    # The classification figures still score every radiograph's most probable class.
    assert report.classification is not None
    assert report.classification.accuracy == 0.75
    assert report.classification.confusion_matrix == ((1, 0, 0), (0, 2, 0), (0, 1, 0))
    note = next(n for n in report.notes if "abstained" in n)
    assert "1 of 4 prediction(s) abstained" in note
    assert "overall (abstentions counted wrong) 50.0%" in note
    assert report.to_dict()["decisions"]["n_abstained"] == 1


def test_labels_moved_off_the_argmax_by_operating_points_are_scored_as_given() -> None:
    truths = [truth("covid-19", 0), truth("normal", 1)]
    predictions = [
        Prediction("img-0.png", "covid-19", dict(zip(CLASSES, [0.4, 0.5, 0.1], strict=True))),
        prediction(1, [0.1, 0.8, 0.1]),
    ]
    report = ClassificationEvaluator(n_bootstrap=0).evaluate(
        truths, predictions, classes=CLASSES, detections=False
    )
    assert report.decisions is not None
    assert report.decisions.n_differing_from_argmax == 1
    assert report.decisions.accuracy_overall == 1.0
    assert report.classification is not None
    assert report.classification.accuracy == 0.5
    assert any("operating points" in n for n in report.notes)


def test_plain_predictions_get_no_decision_note() -> None:
    truths = [truth("covid-19", 0), truth("normal", 1)]
    predictions = [prediction(0, [0.9, 0.05, 0.05]), prediction(1, [0.1, 0.8, 0.1])]
    report = ClassificationEvaluator(n_bootstrap=0).evaluate(
        truths, predictions, classes=CLASSES, detections=False
    )
    assert report.notes == ()
    assert report.decisions is not None
    assert not report.decisions.differs_from_argmax


def test_report_carries_the_calibration_and_risk_coverage_of_its_probabilities() -> None:
    truths, predictions = abstaining_set()
    report = ClassificationEvaluator(n_bootstrap=0, n_bins=10).evaluate(
        truths, predictions, classes=CLASSES, detections=False
    )
    assert report.classification is not None
    assert report.calibration is not None
    assert report.calibration.before is None
    assert report.calibration.after.expected_calibration_error == pytest.approx(
        report.classification.calibration.expected_calibration_error
    )
    assert report.risk_coverage is not None
    assert report.risk_coverage.full_coverage_risk == 0.25
    data = json.loads(report.to_json())
    assert data["calibration"]["before"] is None
    assert data["risk_coverage"]["coverage"][-1] == 1.0


def test_detections_only_report_has_no_calibration_section() -> None:
    truths = [truth(None, 0, (Box(1, 1, 4, 4),))]
    predictions = [Prediction("img-0.png", "normal", {}, [Detection(Box(1, 1, 4, 4), "o", 0.9)])]
    report = ClassificationEvaluator(n_bootstrap=0).evaluate(truths, predictions, classes=())
    assert report.calibration is None
    assert report.risk_coverage is None
    assert report.decisions is None


def test_the_uncalibrated_curve_is_binned_like_the_calibrated_one() -> None:
    truths, predictions = abstaining_set()
    report = ClassificationEvaluator(n_bootstrap=0, n_bins=4).evaluate(
        truths, predictions, classes=CLASSES, detections=False
    )
    sharp = np.eye(3)[[0, 1, 1, 1]]
    labels = [t.label or "" for t in truths]
    report = report.with_calibration_before(sharp, labels, classes=CLASSES, temperature=1.5)
    assert report.calibration is not None
    assert report.calibration.before is not None
    assert len(report.calibration.before.counts) == 4
    assert report.calibration.before.expected_calibration_error == pytest.approx(0.25)
    assert report.calibration.temperature == 1.5
    assert report.to_dict()["calibration"]["before"]["counts"] == [0, 0, 0, 4]


def test_an_uncalibrated_curve_of_other_radiographs_is_refused() -> None:
    truths, predictions = abstaining_set()
    report = ClassificationEvaluator(n_bootstrap=0).evaluate(
        truths, predictions, classes=CLASSES, detections=False
    )
    with pytest.raises(ConfigurationError, match="3 uncalibrated row\\(s\\) for a report of 4"):
        report.with_calibration_before(np.eye(3), ["normal"] * 3, classes=CLASSES)


def test_abstaining_on_most_radiographs_is_not_called_answering_one_class() -> None:
    truths = [truth(CLASSES[i % 3], i) for i in range(30)]
    unsure = dict(zip(CLASSES, [0.34, 0.33, 0.33], strict=True))
    predictions = [
        Prediction(f"img-{i}.png", UNCERTAIN, unsure, status=UNCERTAIN) for i in range(29)
    ]
    predictions += [prediction(i, np.eye(3)[i % 3].tolist()) for i in range(29, 30)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = ClassificationEvaluator(n_bootstrap=0).evaluate(
            truths, predictions, classes=CLASSES, detections=False
        )
    assert not any("whatever it sees" in n for n in report.notes)
    assert report.decisions is not None
    assert report.decisions.n_abstained == 29


def test_radiographs_refused_by_the_gate_are_listed_not_scored() -> None:
    truths, predictions = abstaining_set()
    truths.append(truth("covid-19", 4))
    predictions.append(Prediction("img-4.png", REJECTED, {}, status=REJECTED, reason="blank"))
    report = ClassificationEvaluator(n_bootstrap=0).evaluate(
        truths, predictions, classes=CLASSES, detections=False
    )
    assert report.rejected == ("img-4.png",)
    assert report.classification is not None
    assert report.classification.n_images == 4
    assert report.decisions is not None
    assert report.decisions.n_items == 4
    assert report.risk_coverage is not None
    assert report.risk_coverage.n_items == 4
    assert any("1 of 5 radiograph(s) were refused by the input gate" in n for n in report.notes)
    assert report.to_dict()["rejected"] == ["img-4.png"]


def test_radiographs_refused_by_the_gate_are_left_out_of_the_detection_figures() -> None:
    lesion = Box(2, 2, 4, 4)
    found = Detection(lesion, "opacity", 0.9)
    truths = [truth("covid-19", 0, (lesion,)), truth("covid-19", 1, (lesion,))]
    predictions = [
        prediction(0, [0.8, 0.1, 0.1], detections=[found]),
        # Refused: its lesion was never looked for, so it is no missed lesion.
        Prediction("img-1.png", REJECTED, {}, status=REJECTED, reason="blank"),
    ]
    report = ClassificationEvaluator(n_bootstrap=0).evaluate(truths, predictions, classes=CLASSES)
    assert report.detection is not None
    assert report.detection.n_images == 1
    assert report.detection.n_truths == 1
    assert report.detection.recall[0.5] == 1.0
    assert [row.id for row in report.detection.per_image] == ["img-0.png"]
    assert report.to_dict()["detection"]["per_image"][0]["id"] == "img-0.png"
    assert any("detection figures cover the other 1" in n for n in report.notes)


def test_an_unannotated_radiograph_the_gate_refused_does_not_stop_detection_scoring() -> None:
    truths = [truth("normal", 0), truth("covid-19", 1, annotated=False)]
    predictions = [
        prediction(0, [0.1, 0.8, 0.1]),
        Prediction("img-1.png", REJECTED, {}, status=REJECTED, reason="blank"),
    ]
    report = ClassificationEvaluator(n_bootstrap=0).evaluate(truths, predictions, classes=CLASSES)
    assert report.detection is not None
    assert report.detection.n_images == 1


def test_a_set_the_gate_refused_entirely_has_no_classification_figures() -> None:
    truths = [truth("normal", 0)]
    predictions = [Prediction("img-0.png", REJECTED, {}, status=REJECTED)]
    report = ClassificationEvaluator(n_bootstrap=0).evaluate(
        truths, predictions, classes=CLASSES, detections=False
    )
    assert report.classification is None
    assert report.calibration is None
    assert report.rejected == ("img-0.png",)


def test_the_report_repr_is_one_line_of_headline_figures() -> None:
    truths = [truth("normal", 0), truth("pneumonia", 1)]
    predictions = [prediction(0, [0.1, 0.8, 0.1]), prediction(1, [0.1, 0.1, 0.8])]
    report = ClassificationEvaluator(n_bootstrap=0).evaluate(
        truths, predictions, classes=CLASSES, detections=False
    )
    text = repr(report)
    # The full figures (ROC curves, per-image rows) live in to_dict, not in a REPL echo.
    assert "\n" not in text
    assert len(text) < 200
    assert text.startswith("EvaluationReport(n_images=2, accuracy=1.0000, macro_f1=")
