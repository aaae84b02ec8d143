"""The class mix where a model is used: Pipeline.set_priors, estimate_priors, the CLI.

The classifier is the test plugin's softmax regression (fast), with a COVID-19 operating
point; the gate is the real :class:`~covidcxr.gate.ChestXrayGate`, made small.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from covidcxr import Pipeline, Prediction, XRay
from covidcxr.cli import cli
from covidcxr.errors import ConfigurationError, ModelFormatError
from covidcxr.evaluate import CalibrationWarning, EvaluationReport, adjust_to_priors
from covidcxr.phantoms import generate_phantoms
from covidcxr.pipeline import (
    MANIFEST_NAME,
    METADATA_NAME,
    METADATA_SCHEMA,
    MODEL_CARD_NAME,
    ClassPriors,
)
from covidcxr.pipeline._trust import TrustState
from covidcxr.records import ACCEPTED, UNCERTAIN

from .test_trust import trusted_config

CLINIC = {"covid-19": 0.05, "normal": 0.8, "pneumonia": 0.15}
CLASSES = ("covid-19", "normal", "pneumonia")

pytestmark = [
    pytest.mark.filterwarnings("ignore::covidcxr.errors.SyntheticModelWarning"),
    pytest.mark.filterwarnings("ignore::covidcxr.evaluate.CalibrationWarning"),
]


@pytest.fixture(scope="module")
def fitted(module_test_components: str, module_test_config: dict[str, Any]) -> Pipeline:
    """A fitted pipeline with a gate, calibration and a COVID-19 operating point."""
    config = trusted_config(module_test_config, sensitivity={"covid-19": 0.95})
    return Pipeline(config).fit(
        generate_phantoms(40, size=64, seed=0), validation=generate_phantoms(10, size=64, seed=2)
    )


@pytest.fixture
def pipeline(fitted: Pipeline, tmp_path: Path) -> Pipeline:
    """A fresh copy of the fitted pipeline, free to change."""
    return Pipeline.load(fitted.save(tmp_path / "fitted"))


def _rows(predictions: list[Prediction], classes: tuple[str, ...]) -> dict[str, list[float]]:
    return {
        p.id: [p.probabilities[c] for c in classes] for p in predictions if p.status == ACCEPTED
    }


def test_the_training_mix_is_the_training_data_s(pipeline: Pipeline) -> None:
    # generate_phantoms(40) gives 40 of each class.
    assert pipeline.training_priors() == pytest.approx({c: 1 / 3 for c in pipeline.classes_})


@pytest.mark.parametrize(
    ("class_weight", "expected"),
    [
        (None, [0.5, 0.25, 0.25]),
        ("balanced", [1 / 3, 1 / 3, 1 / 3]),  # the loss saw equal classes
        ({"normal": 2.0}, [0.4, 0.4, 0.2]),
    ],
)
def test_the_training_mix_is_the_one_the_class_weighted_loss_saw(
    pipeline: Pipeline, class_weight: Any, expected: list[float]
) -> None:
    # Before, a classifier trained with class_weight="balanced" on COVID-QU-Ex's mix was
    # said to have learned 0.5/0.25/0.25, and set_priors moved its probabilities wrongly.
    assert pipeline.training_data_ is not None
    pipeline.training_data_["class_counts"] = {"covid-19": 200, "normal": 100, "pneumonia": 100}
    pipeline.classifier_.class_weight = class_weight  # type: ignore[attr-defined]
    assert list(pipeline.training_priors().values()) == pytest.approx(expected)


def test_an_unreadable_class_weight_leaves_the_training_mix_unknown(pipeline: Pipeline) -> None:
    pipeline.classifier_.class_weight = {"normal": -1.0}  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="class_weight"):
        pipeline.set_priors(CLINIC)


def test_probabilities_move_to_the_mix_and_the_operating_point_keeps_its_promise(
    pipeline: Pipeline,
) -> None:
    images = generate_phantoms(6, size=64, seed=8)
    classes = tuple(pipeline.classes_)
    before = _rows(pipeline.predict(images), classes)
    assert before
    after_predictions = pipeline.set_priors(CLINIC).predict(images)
    after = _rows(after_predictions, classes)
    assert after.keys() == before.keys()
    training = pipeline.training_priors()
    points = pipeline.trust_.operating_points
    assert points is not None
    for prediction in after_predictions:
        if prediction.id not in before:
            continue
        row = np.array([before[prediction.id]])
        moved = adjust_to_priors(row, training, CLINIC, classes=classes)
        assert after[prediction.id] == pytest.approx(moved[0].tolist(), abs=1e-5)
        # The COVID-19 threshold applies at the training mix; argmax at the clinic's.
        assert prediction.label == points.apply(row, adjusted=moved)[0]
    assert pipeline.set_priors(None).trust_.priors is None
    again = _rows(pipeline.predict(images), classes)
    assert again.keys() == before.keys()
    for key, values in again.items():
        assert values == pytest.approx(before[key], abs=1e-6)


def test_a_covid_19_call_at_threshold_survives_a_low_prevalence(pipeline: Pipeline) -> None:
    points = pipeline.trust_.operating_points
    assert points is not None
    [point] = points.points
    column = pipeline.classes_.index("covid-19")
    # A row just over the COVID-19 threshold: adjusted to 1 % COVID-19 it is far below,
    # yet the operating point still calls it, as its validation sensitivity promised.
    row = np.full((1, 3), (1 - point.threshold - 1e-3) / 2)
    row[0, column] = point.threshold + 1e-3
    pipeline.set_priors({"covid-19": 0.01, "normal": 0.5, "pneumonia": 0.49})
    moved = pipeline.trust_.adjust(row)
    assert moved[0, column] < row[0, column]
    label, status, _ = pipeline.trust_.decide_rows(row, pipeline.classes_, adjusted=moved)[0]
    assert (label, status) == ("covid-19", ACCEPTED)


def test_a_class_the_mix_says_is_absent_is_not_called_by_its_threshold(
    pipeline: Pipeline,
) -> None:
    points = pipeline.trust_.operating_points
    assert points is not None
    column = pipeline.classes_.index("covid-19")
    row = np.full((1, 3), 0.05)
    row[0, column] = 0.9  # over any COVID-19 threshold
    pipeline.set_priors({"covid-19": 0, "normal": 0.5, "pneumonia": 0.5})
    moved = pipeline.trust_.adjust(row)
    label, status, _ = pipeline.trust_.decide_rows(row, pipeline.classes_, adjusted=moved)[0]
    assert moved[0, column] == 0
    assert label != "covid-19"
    assert status == ACCEPTED


def test_a_radiograph_with_no_probability_left_at_the_mix_is_uncertain() -> None:
    # The classifier is sure of classes that the mix says do not occur: Bayes' rule
    # leaves nothing; one such radiograph must not stop a whole run, nor get a class.
    trust = TrustState(priors=ClassPriors(CLASSES, [0.5, 0.25, 0.25], [1.0, 0.0, 0.0]))
    rows = np.array([[0.2, 0.8, 0.0], [0.0, 1.0, 0.0]])
    moved = trust.adjust(rows)
    assert moved.tolist() == [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    first, second = trust.decide_rows(rows, CLASSES, adjusted=moved)
    assert first == ("covid-19", ACCEPTED, None)
    assert second[:2] == (UNCERTAIN, UNCERTAIN)
    assert second[2] is not None
    assert "do not occur" in second[2]


def test_one_row_is_decided_at_the_mix_as_a_batch_is() -> None:
    trust = TrustState(priors=ClassPriors(CLASSES, [0.5, 0.25, 0.25], list(CLINIC.values())))
    row = np.array([0.6, 0.3, 0.1])
    batch = trust.decide_rows(row[None, :], CLASSES, adjusted=trust.adjust(row[None, :]))
    assert trust.decide(row, CLASSES) == batch[0] == ("normal", ACCEPTED, None)


def test_class_priors_refuse_shares_that_do_not_fit_their_classes() -> None:
    with pytest.raises(ConfigurationError, match="one value per probability column"):
        ClassPriors(CLASSES, [1, 2], [3, 4, 5])
    with pytest.raises(ConfigurationError, match="positive for every class"):
        ClassPriors(CLASSES, [0, 1, 1], [1, 1, 1])


def test_a_saved_mix_loads_back_exactly() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        priors = ClassPriors(CLASSES, rng.dirichlet(np.ones(3)), rng.dirichlet(np.ones(3)))
        saved = json.loads(json.dumps(priors.to_dict()))
        assert ClassPriors.from_dict(saved, CLASSES) == priors


def test_a_small_share_is_not_described_as_none() -> None:
    priors = ClassPriors(CLASSES, [0.5, 0.25, 0.25], [0.004, 0.8, 0.196])
    assert "covid-19 0.004, normal 0.8, pneumonia 0.196" in priors.describe()


def test_an_estimate_from_few_radiographs_warns(pipeline: Pipeline) -> None:
    with pytest.warns(CalibrationWarning, match=r"class mix may be far off: it rests on \d+"):
        pipeline.estimate_priors(generate_phantoms(3, size=64, seed=14))


def test_probabilities_that_are_not_numbers_are_refused(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NaN passes every threshold test as false: a damaged model must stop, not answer.
    def broken(images: Any) -> Any:
        return np.full((len(list(images)), 3), np.nan)

    monkeypatch.setattr(pipeline.classifier_, "predict_proba", broken)
    with pytest.raises(ModelFormatError, match="not finite numbers for 3 of 3 image"):
        pipeline.predict(generate_phantoms(1, size=64, seed=15))


def test_a_saved_pipeline_keeps_its_mix_and_its_card_says_so(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    images = generate_phantoms(3, size=64, seed=9)
    pipeline.set_priors({"covid-19": 1, "normal": 16, "pneumonia": 3})  # counts work too
    saved = pipeline.save(tmp_path / "clinic")
    loaded = Pipeline.load(saved)
    assert loaded.trust_.priors == pipeline.trust_.priors
    assert loaded.trust_.priors is not None
    assert loaded.trust_.priors.deployment == pytest.approx((0.05, 0.8, 0.15))
    assert [p.to_dict() for p in loaded.predict(images)] == [
        p.to_dict() for p in pipeline.predict(images)
    ]
    card = (saved / MODEL_CARD_NAME).read_text()
    assert "**Class mix:** the probabilities are moved by Bayes' rule to the class mix" in card
    assert "covid-19 0.050, normal 0.800, pneumonia 0.150 (given)" in card
    metadata = json.loads((saved / METADATA_NAME).read_text())
    assert metadata["class_priors"]["source"] == "given"
    assert metadata["changelog"][-2]["event"] == "class mix set"
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(metadata, METADATA_SCHEMA)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e["deployment"].pop("normal"), "missing 'normal'"),
        (lambda e: e["training"].update({"normal": 0}), "positive for every class"),
        (lambda e: e["deployment"].update({"normal": -1}), "finite and not negative"),
        (lambda e: e.pop("source"), "source"),
    ],
)
def test_a_damaged_saved_mix_is_refused_on_loading(
    pipeline: Pipeline, tmp_path: Path, change: Any, message: str
) -> None:
    saved = pipeline.set_priors(CLINIC).save(tmp_path / "clinic")
    manifest = json.loads((saved / MANIFEST_NAME).read_text())
    change(manifest["trust"]["priors"])
    (saved / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ModelFormatError, match=f"the trust entry is damaged: .*{message}"):
        Pipeline.load(saved)


def test_a_mix_set_before_the_first_save_keeps_the_training_entry(
    fitted: Pipeline, tmp_path: Path, module_test_config: dict[str, Any]
) -> None:
    config = trusted_config(module_test_config)
    fresh = Pipeline(config).fit(generate_phantoms(40, size=64, seed=0))
    saved = fresh.set_priors(CLINIC).save(tmp_path / "fresh")
    changelog = json.loads((saved / METADATA_NAME).read_text())["changelog"]
    assert [entry["event"] for entry in changelog] == ["class mix set", "saved"]
    assert changelog[1]["description"].startswith("trained on ")


def test_an_evaluation_at_a_mix_says_so(pipeline: Pipeline) -> None:
    report = pipeline.set_priors(CLINIC).evaluate(generate_phantoms(4, size=64, seed=13))
    assert isinstance(report, EvaluationReport)
    assert any(note.startswith("Pipeline.set_priors: probabilities moved") for note in report.notes)


def test_estimating_the_mix_runs_no_detector(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(images: object) -> None:
        raise AssertionError("the detector ran")

    monkeypatch.setattr(pipeline, "_detect", refuse)
    assert pipeline.estimate_priors(generate_phantoms(3, size=64, seed=14)).n_items > 0


def test_a_card_without_a_mix_says_nothing_of_one(pipeline: Pipeline, tmp_path: Path) -> None:
    saved = pipeline.save(tmp_path / "plain")
    assert "Class mix" not in (saved / MODEL_CARD_NAME).read_text()
    assert json.loads((saved / METADATA_NAME).read_text())["class_priors"] is None


def test_refitting_calibration_keeps_the_mix_and_fitting_again_drops_it(
    pipeline: Pipeline,
) -> None:
    pipeline.set_priors(CLINIC)
    pipeline.fit_trust(validation=generate_phantoms(10, size=64, seed=4))
    assert pipeline.trust_.priors is not None
    pipeline.fit(
        generate_phantoms(40, size=64, seed=5), validation=generate_phantoms(10, size=64, seed=6)
    )
    assert pipeline.trust_.priors is None


def test_em_estimates_the_mix_of_unlabelled_radiographs(pipeline: Pipeline) -> None:
    phantoms = generate_phantoms(30, size=64, seed=10)
    normal_heavy = [x for x in phantoms if x.label == "normal"] + [
        x for x in phantoms if x.label != "normal"
    ][:10]
    unlabelled = [XRay(x.pixels, x.id) for x in normal_heavy]
    estimate = pipeline.estimate_priors(unlabelled)
    shares = estimate.as_dict()
    assert estimate.converged
    assert 30 <= estimate.n_items <= 40
    assert list(shares) == list(pipeline.classes_)
    assert shares["normal"] > 0.6  # 30 of 40; the training mix says a third
    assert sum(shares.values()) == pytest.approx(1)


@pytest.mark.parametrize(
    ("priors", "message"),
    [
        ({"covid-19": 0.5, "normal": 0.5}, "missing 'pneumonia'"),
        ({**CLINIC, "tb": 0.1}, "'tb' is not a class"),
        ({"covid-19": -0.1, "normal": 0.6, "pneumonia": 0.5}, "finite and not negative"),
        ({"covid-19": 0, "normal": 0, "pneumonia": 0}, "must not all be 0"),
    ],
)
def test_unusable_mixes_are_refused(
    pipeline: Pipeline, priors: dict[str, float], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        pipeline.set_priors(priors)
    assert pipeline.trust_.priors is None


def test_a_model_without_training_class_counts_cannot_be_moved(pipeline: Pipeline) -> None:
    pipeline.training_data_ = None
    with pytest.raises(ConfigurationError, match="does not record how many training"):
        pipeline.set_priors(CLINIC)
    with pytest.raises(ConfigurationError, match="does not record how many training"):
        pipeline.estimate_priors(generate_phantoms(2, size=64, seed=1))


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    folder = tmp_path / "scans"
    folder.mkdir()
    for xray in generate_phantoms(4, size=64, seed=12):
        cv2.imwrite(str(folder / f"{xray.id}.png"), np.asarray(xray.pixels))
    return folder


def test_cli_predict_moves_probabilities_to_the_given_mix(
    fitted: Pipeline, scans: Path, tmp_path: Path
) -> None:
    model = str(fitted.save(tmp_path / "model"))
    plain = CliRunner().invoke(cli, ["predict", model, str(scans), "--json"])
    mix = "covid-19=0.05,normal=0.8,pneumonia=0.15"
    moved = CliRunner().invoke(cli, ["predict", model, str(scans), "--json", "--priors", mix])
    assert plain.exit_code == 0, plain.output
    assert moved.exit_code == 0, moved.output
    classes = tuple(fitted.classes_)
    for before, after in zip(json.loads(plain.output), json.loads(moved.output), strict=True):
        if before["status"] != ACCEPTED:
            continue
        row = np.array([[before["probabilities"][c] for c in classes]])
        expected = adjust_to_priors(row, fitted.training_priors(), CLINIC, classes=classes)
        assert [after["probabilities"][c] for c in classes] == pytest.approx(
            expected[0].tolist(), abs=1e-5
        )


def test_cli_predict_estimates_the_mix_from_the_scans(
    fitted: Pipeline, scans: Path, tmp_path: Path
) -> None:
    model = str(fitted.save(tmp_path / "model"))
    result = CliRunner().invoke(cli, ["predict", model, str(scans), "--priors", "estimate"])
    assert result.exit_code == 0, result.output
    assert "estimated class mix: covid-19 " in result.output
    assert "(EM on " in result.output


@pytest.mark.parametrize(
    "value", ["covid-19=0.5,normal", "covid-19=half,normal=0.5", "covid-19=0.5,covid-19=0.5", "=1"]
)
def test_cli_predict_refuses_a_mix_it_cannot_read(
    fitted: Pipeline, scans: Path, tmp_path: Path, value: str
) -> None:
    model = str(fitted.save(tmp_path / "model"))
    result = CliRunner().invoke(cli, ["predict", model, str(scans), "--priors", value])
    assert result.exit_code == 2
    assert "--priors" in result.output


def test_cli_predict_goes_back_to_the_training_mix(
    fitted: Pipeline, scans: Path, tmp_path: Path
) -> None:
    plain = CliRunner().invoke(cli, ["predict", str(fitted.save(tmp_path / "m")), str(scans)])
    clinic = Pipeline.load(fitted.save(tmp_path / "model")).set_priors(CLINIC)
    model = str(clinic.save(tmp_path / "clinic"))
    saved_mix = CliRunner().invoke(cli, ["predict", model, str(scans)])
    back = CliRunner().invoke(cli, ["predict", model, str(scans), "--priors", "training"])
    assert back.exit_code == 0, back.output
    assert back.output == plain.output != saved_mix.output


def test_cli_predict_refuses_a_mix_of_unknown_classes_before_reading(
    fitted: Pipeline, tmp_path: Path
) -> None:
    model = str(fitted.save(tmp_path / "model"))
    mix = "covid=0.05,normal=0.8,pneumonia=0.15"
    unreadable = tmp_path / "unreadable"  # never read: the mix is refused first
    unreadable.mkdir()
    (unreadable / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = CliRunner().invoke(cli, ["predict", model, str(unreadable), "--priors", mix])
    assert isinstance(result.exception, ConfigurationError)
    assert "'covid' is not a class" in str(result.exception)


def test_cli_predict_refuses_a_mix_on_ray(scans: Path) -> None:
    args = ["predict", "m", str(scans), "--engine", "ray", "--priors", "estimate"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "--priors applies to --engine local only" in result.output
