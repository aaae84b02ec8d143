"""The model card: metadata.json and model_card.md with every saved pipeline."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import Any

import attrs
import cv2
import jsonschema
import numpy as np
import pytest

import covidcxr
from covidcxr import Pipeline, XRay
from covidcxr.errors import ConfigurationError, ModelFormatError, SyntheticModelWarning
from covidcxr.evaluate import EvaluationReport
from covidcxr.files import MARKER_NAME
from covidcxr.pipeline import (
    METADATA_NAME,
    METADATA_SCHEMA,
    MODEL_CARD_NAME,
    card_metadata,
    evaluation_entry,
    model_note,
    record_evaluation,
    render_model_card,
    write_predictions,
)

pytestmark = pytest.mark.usefixtures("test_components")

SECTIONS = (
    "## Task and intended use",
    "## Training data",
    "## Preprocessing and input format",
    "## Architecture and training recipe",
    "## Metrics",
    "## Calibration",
    "## Input gate",
    "## Operating points",
    "## Limitations",
    "## Changelog",
)


def without_synthetic_flag(xrays: list[XRay]) -> list[XRay]:
    """The same images as radiographs read from files would come (no ``synthetic`` mark)."""
    return [
        attrs.evolve(x, meta={k: v for k, v in x.meta.items() if k != "synthetic"}) for x in xrays
    ]


@pytest.fixture
def phantom_model(
    test_config: dict[str, Any], phantom_train: list[XRay], tmp_path: Path
) -> tuple[Pipeline, Path]:
    pipeline = Pipeline(test_config).fit(phantom_train)
    return pipeline, pipeline.save(tmp_path / "model")


def read_metadata(model: Path) -> dict[str, Any]:
    metadata: dict[str, Any] = json.loads((model / METADATA_NAME).read_text(encoding="utf-8"))
    return metadata


def evaluate(pipeline: Pipeline, data: list[XRay]) -> EvaluationReport:
    report = pipeline.evaluate(data)
    assert isinstance(report, EvaluationReport)
    return report


def test_save_writes_metadata_that_validates_against_its_documented_schema(
    phantom_model: tuple[Pipeline, Path],
) -> None:
    _, model = phantom_model
    metadata = read_metadata(model)
    jsonschema.validate(metadata, METADATA_SCHEMA)
    assert (metadata["format"], metadata["format_version"]) == ("covidcxr-model-card", 1)
    assert metadata["classes"] == ["covid-19", "normal", "pneumonia"]
    assert metadata["training_data"]["n_items"] == 36
    assert metadata["training_data"]["class_counts"] == {
        "covid-19": 12, "normal": 12, "pneumonia": 12,
    }  # fmt: skip
    assert metadata["architecture"]["classifier"]["name"] == "test-softmax"
    assert metadata["architecture"]["classifier"]["options"]["epochs"] == 40
    assert metadata["training"]["epochs_run"] == 40
    # The card files are listed in the marker: part of the save, replaceable with it.
    marker = json.loads((model / MARKER_NAME).read_text())
    assert {METADATA_NAME, MODEL_CARD_NAME} <= set(marker["files"])


def test_model_card_has_every_section_and_says_it_is_not_a_medical_device(
    phantom_model: tuple[Pipeline, Path],
) -> None:
    _, model = phantom_model
    card = (model / MODEL_CARD_NAME).read_text(encoding="utf-8")
    positions = [card.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert "not a medical device" in card
    assert "not for diagnosis" in card
    assert "paediatric" in card  # the shortcut risks of public COVID-19 collections
    # Nothing is fitted yet: the trust sections say so rather than vanish.
    assert card.count("Not fitted") == 3


def test_a_model_trained_on_phantoms_says_so_in_bold_in_the_first_lines_of_its_card(
    phantom_model: tuple[Pipeline, Path],
) -> None:
    pipeline, model = phantom_model
    first_lines = (model / MODEL_CARD_NAME).read_text(encoding="utf-8").splitlines()[:3]
    assert first_lines[2].startswith("**This model was trained on synthetic phantoms")
    assert first_lines[2].endswith("**")
    assert pipeline.training_data_ is not None
    assert pipeline.training_data_["synthetic"] is True
    assert read_metadata(model)["synthetic"] is True


def test_training_data_is_synthetic_when_any_image_is_a_phantom(
    test_config: dict[str, Any], phantom_train: list[XRay]
) -> None:
    real_looking = without_synthetic_flag(phantom_train)
    clean = Pipeline(test_config).fit(real_looking)
    assert clean.training_data_ is not None
    assert clean.training_data_["synthetic"] is False
    mixed = Pipeline(test_config).fit([*real_looking[:-1], phantom_train[-1]])
    assert mixed.training_data_ is not None
    assert mixed.training_data_["synthetic"] is True


def test_training_data_survives_save_and_load_and_a_second_save_keeps_the_changelog(
    phantom_model: tuple[Pipeline, Path], tmp_path: Path
) -> None:
    pipeline, model = phantom_model
    loaded = Pipeline.load(model)
    assert loaded.training_data_ == pipeline.training_data_
    loaded.save(tmp_path / "again")
    changelog = read_metadata(tmp_path / "again")["changelog"]
    assert [entry["event"] for entry in changelog] == ["saved", "saved"]
    assert changelog[0]["description"].startswith("trained on 36 radiographs given in memory")
    assert changelog[1]["description"] == "saved again"


def test_an_older_manifest_without_card_fields_still_loads_and_saves(
    phantom_model: tuple[Pipeline, Path], tmp_path: Path
) -> None:
    _, model = phantom_model
    manifest_path = model / "pipeline.json"
    manifest = json.loads(manifest_path.read_text())
    for key in ("training_data", "model", "evaluations", "changelog"):
        manifest.pop(key, None)
    manifest_path.write_text(json.dumps(manifest))
    loaded = Pipeline.load(model)
    assert loaded.training_data_ is None
    loaded.save(tmp_path / "resaved")
    metadata = read_metadata(tmp_path / "resaved")
    jsonschema.validate(metadata, METADATA_SCHEMA)
    assert metadata["training_data"] is None
    assert "Not recorded" in (tmp_path / "resaved" / MODEL_CARD_NAME).read_text()


@pytest.mark.parametrize(
    ("field", "value"),
    [("training_data", ["not", "an", "object"]), ("evaluations", {"not": "a list"})],
)
def test_a_damaged_card_field_in_the_manifest_is_refused_naming_it(
    phantom_model: tuple[Pipeline, Path], field: str, value: Any
) -> None:
    _, model = phantom_model
    manifest_path = model / "pipeline.json"
    manifest = json.loads(manifest_path.read_text())
    manifest[field] = value
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ModelFormatError, match=field):
        Pipeline.load(model)


def test_a_covid_qu_ex_source_is_described_cited_and_its_split_recorded(
    test_config: dict[str, Any], phantom_train: list[XRay], tmp_path: Path
) -> None:
    folders = {"covid-19": "COVID-19", "normal": "Normal", "pneumonia": "Non-COVID"}
    for index, xray in enumerate(phantom_train):
        images = tmp_path / "qu-ex" / "Train" / folders[str(xray.label)] / "images"
        images.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(images / f"{index}.png"), np.asarray(xray.pixels))
    source = covidcxr.open_source(tmp_path / "qu-ex", layout="covid-qu-ex", split="Train")
    pipeline = Pipeline({**test_config, "detector": None}).fit(source)
    data = pipeline.training_data_
    assert data is not None
    assert data["source"] == repr(source)
    assert data["split"] == ["Train"]
    assert "Tahir et al." in data["citation"]
    assert "Computers in Biology and Medicine 139:105002" in data["citation"]
    assert "Kaggle" in data["terms"]
    card = (pipeline.save(tmp_path / "model") / "model_card.md").read_text()
    assert "- Terms: Published by its authors" in card
    # Decoded from PNG files, the phantoms no longer carry their mark.
    assert data["synthetic"] is False


class ListSource:
    """A plugin-style source without a ``__repr__`` of its own."""

    def __init__(self, xrays: list[XRay]) -> None:
        self.xrays = xrays
        self.classes = ("covid-19", "normal", "pneumonia")

    def __iter__(self) -> Any:
        return iter(self.xrays)

    def __len__(self) -> int:
        return len(self.xrays)


def test_a_source_without_a_repr_is_named_by_its_class_not_its_address(
    test_config: dict[str, Any], phantom_train: list[XRay]
) -> None:
    pipeline = Pipeline({**test_config, "detector": None}).fit(ListSource(phantom_train))
    data = pipeline.training_data_
    assert data is not None
    assert " at 0x" not in data["source"]
    assert data["source"].startswith("a tests.pipeline.test_card.ListSource")


def test_predict_warns_once_per_call_for_a_phantom_trained_model(
    phantom_model: tuple[Pipeline, Path], phantom_test: list[XRay]
) -> None:
    pipeline, _ = phantom_model
    for predict in (pipeline.predict, lambda data: list(pipeline.iter_predict(data))):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            predict(phantom_test)
        synthetic = [w for w in caught if issubclass(w.category, SyntheticModelWarning)]
        assert len(synthetic) == 1
        assert "synthetic phantoms" in str(synthetic[0].message)


def test_predict_does_not_warn_for_a_model_trained_on_radiographs(
    test_config: dict[str, Any], phantom_train: list[XRay], phantom_test: list[XRay]
) -> None:
    pipeline = Pipeline(test_config).fit(without_synthetic_flag(phantom_train))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SyntheticModelWarning)
        pipeline.predict(phantom_test)
    assert model_note(pipeline.training_data_) is None


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_prediction_tables_of_a_phantom_model_carry_the_note_on_every_row(
    phantom_model: tuple[Pipeline, Path], phantom_test: list[XRay], tmp_path: Path, suffix: str
) -> None:
    pipeline, _ = phantom_model
    note = model_note(pipeline.training_data_)
    assert note is not None
    path = tmp_path / f"predictions{suffix}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntheticModelWarning)
        write_predictions(pipeline.iter_predict(phantom_test), path, note=note)
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            rows: list[dict[str, Any]] = list(csv.DictReader(handle))
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == len(phantom_test)
    assert all(row["model_note"] == note for row in rows)
    plain = tmp_path / f"plain{suffix}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntheticModelWarning)
        write_predictions(pipeline.iter_predict(phantom_test), plain)
    assert "model_note" not in plain.read_text()


def test_recording_an_evaluation_twice_keeps_two_entries_and_two_changelog_lines(
    phantom_model: tuple[Pipeline, Path], phantom_test: list[XRay]
) -> None:
    pipeline, model = phantom_model
    report = evaluate(pipeline, phantom_test)
    record_evaluation(model, report, source="phantoms, seed 1")
    record_evaluation(model, report, source="phantoms, seed 1")
    metadata = read_metadata(model)
    jsonschema.validate(metadata, METADATA_SCHEMA)
    assert len(metadata["evaluations"]) == 2
    entry = metadata["evaluations"][0]
    assert entry["data_fingerprint"] == report.data_fingerprint
    assert entry["n_images"] == len(phantom_test)
    accuracy = entry["accuracy"]
    assert accuracy["method"] == "wilson"
    assert accuracy["low"] <= accuracy["estimate"] <= accuracy["high"]
    assert set(entry["per_class"]) == {"covid-19", "normal", "pneumonia"}
    assert entry["per_class"]["normal"]["recall"]["method"] == "wilson"
    recorded = [e for e in metadata["changelog"] if e["event"] == "evaluation recorded"]
    assert len(recorded) == 2
    manifest = json.loads((model / "pipeline.json").read_text())
    assert manifest["evaluations"] == metadata["evaluations"]
    card = (model / MODEL_CARD_NAME).read_text()
    assert "| 1 |" in card
    assert "| 2 |" in card
    assert "Evaluation 2, by class:" in card
    # The recorded model still loads, and a later save keeps its evaluations.
    assert len(Pipeline.load(model).save(model, overwrite=True).joinpath(METADATA_NAME)
               .read_text().split('"recorded_at"')) == 3  # fmt: skip


def test_an_evaluation_on_the_training_data_is_marked_on_the_card(
    phantom_model: tuple[Pipeline, Path], phantom_train: list[XRay]
) -> None:
    pipeline, model = phantom_model
    record_evaluation(model, evaluate(pipeline, phantom_train), source="the training set")
    card = (model / MODEL_CARD_NAME).read_text()
    assert "(**the training data**)" in card
    assert "made on the training data itself" in card


def test_recording_refuses_a_folder_that_is_not_a_saved_pipeline(
    phantom_model: tuple[Pipeline, Path], phantom_test: list[XRay], tmp_path: Path
) -> None:
    pipeline, _ = phantom_model
    report = evaluate(pipeline, phantom_test)
    (tmp_path / "photos").mkdir()
    with pytest.raises(ModelFormatError, match="not a saved covidcxr pipeline"):
        record_evaluation(tmp_path / "photos", report, source="x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "pipeline.json").write_text('{"format": "something-else"}')
    with pytest.raises(ModelFormatError, match="not a covidcxr pipeline manifest"):
        record_evaluation(tmp_path / "other", report, source="x")
    assert not (tmp_path / "other" / METADATA_NAME).exists()


def test_recording_refuses_a_report_of_another_evaluator(
    phantom_model: tuple[Pipeline, Path],
) -> None:
    # Typed as any Report (what Pipeline.evaluate returns), checked when called: a plugin
    # evaluator's report has no figures the card knows how to read.
    class OtherReport:
        def to_dict(self) -> dict[str, Any]:
            return {"accuracy": 1.0}

    _, model = phantom_model
    before = (model / METADATA_NAME).read_bytes()
    with pytest.raises(ConfigurationError, match="needs an EvaluationReport"):
        record_evaluation(model, OtherReport(), source="x")
    assert (model / METADATA_NAME).read_bytes() == before


@pytest.mark.parametrize("with_marker", [True, False], ids=["marked", "before-markers"])
def test_recording_into_an_older_save_keeps_the_folder_replaceable(
    phantom_model: tuple[Pipeline, Path], phantom_test: list[XRay], with_marker: bool
) -> None:
    pipeline, model = phantom_model
    # A save from before model cards: no card files, none in the marker (or no marker).
    for name in (METADATA_NAME, MODEL_CARD_NAME):
        (model / name).unlink()
    marker = json.loads((model / MARKER_NAME).read_text())
    marker["files"] = [f for f in marker["files"] if f not in (METADATA_NAME, MODEL_CARD_NAME)]
    (model / MARKER_NAME).write_text(json.dumps(marker))
    if not with_marker:
        (model / MARKER_NAME).unlink()
    record_evaluation(model, evaluate(pipeline, phantom_test), source="phantoms")
    assert (model / MODEL_CARD_NAME).is_file()
    pipeline.save(model, overwrite=True)  # would refuse files it did not write


def test_credentials_in_a_source_description_are_masked(
    phantom_model: tuple[Pipeline, Path], phantom_test: list[XRay]
) -> None:
    pipeline, _ = phantom_model
    entry = evaluation_entry(
        evaluate(pipeline, phantom_test),
        source="COSSource('cos://alice:s3cr3t@host/bucket', apikey='k3y-value', items=18)",
    )
    assert "s3cr3t" not in entry["source"]
    assert "k3y-value" not in entry["source"]
    assert "cos://***@host/bucket" in entry["source"]


TRUST: dict[str, Any] = {
    "gate": {
        "method": "mahalanobis",
        "threshold": 41.25,
        "validation_acceptance": 0.987,
        "n_fitted": 3728,
    },
    "calibration": {
        "method": "temperature",
        "temperature": 1.734,
        "ece_before": 0.061,
        "ece_after": 0.018,
        "n_fitted": 1000,
    },
    "operating_points": {
        "thresholds": {"covid-19": 0.214},
        "targets": {"covid-19": 0.95},
        "validation": {"covid-19": {"sensitivity": 0.953, "specificity": 0.871}},
        "abstain_below": 0.55,
    },
}


def test_a_card_from_a_manifest_with_trust_sections_renders_them(
    phantom_model: tuple[Pipeline, Path],
) -> None:
    _, model = phantom_model
    manifest = {**json.loads((model / "pipeline.json").read_text()), "trust": TRUST}
    metadata = card_metadata(manifest)
    jsonschema.validate(metadata, METADATA_SCHEMA)
    assert metadata["calibration"]["temperature"] == 1.734
    card = render_model_card(metadata)
    assert "Not fitted" not in card
    assert "temperature 1.734" in card
    assert "0.061 before, 0.018 after" in card
    assert "threshold 41.2500" in card
    assert "98.7%" in card
    assert "| covid-19 | 0.214 | 0.950 | 0.953 | 0.871 |" in card
    assert "below a confidence of 0.550" in card
    assert "No input gate" not in card


def test_a_save_with_trust_sections_renders_them_and_says_so_in_the_changelog(
    phantom_model: tuple[Pipeline, Path], tmp_path: Path
) -> None:
    _, model = phantom_model
    manifest = {**json.loads((model / "pipeline.json").read_text()), "trust": TRUST}
    manifest.pop("changelog")
    entry = card_metadata(
        {**manifest, "changelog": [covidcxr.pipeline._card.save_entry(manifest)]}
    )["changelog"][0]
    assert entry["description"].endswith("fitted: gate, calibration, operating points")


def test_non_finite_figures_in_the_manifest_become_null_in_metadata(
    phantom_model: tuple[Pipeline, Path],
) -> None:
    _, model = phantom_model
    calibration = {**TRUST["calibration"], "ece_before": float("nan")}
    manifest = {**json.loads((model / "pipeline.json").read_text()), "trust": {
        **TRUST, "calibration": calibration}}  # fmt: skip
    text = covidcxr.pipeline._card.card_files(manifest)[METADATA_NAME]
    metadata = json.loads(text)  # strict JSON: NaN would not be valid
    assert metadata["calibration"]["ece_before"] is None
    jsonschema.validate(metadata, METADATA_SCHEMA)


def test_the_trust_sections_render_from_the_estimators_own_shapes_too(
    phantom_model: tuple[Pipeline, Path],
) -> None:
    _, model = phantom_model
    trust = {
        "gate": {"method": "rotation prediction", "threshold": 2.5, "holdout_acceptance": 0.99,
                 "n_fitted": 300},
        "calibration": None,
        "operating_points": {
            "classes": ["covid-19", "normal", "pneumonia"],
            "points": [{"label": "covid-19", "target_sensitivity": 0.95, "threshold": 0.3,
                        "sensitivity": 0.96, "specificity": 0.8}],
            "abstain_below": None,
        },
    }  # fmt: skip
    manifest = {**json.loads((model / "pipeline.json").read_text()), "trust": trust}
    card = render_model_card(card_metadata(manifest))
    assert "Acceptance rate on held-out training images: 99.0%" in card
    assert "| covid-19 | 0.300 | 0.950 | 0.960 | 0.800 |" in card
    assert "No abstention" in card
    assert card.count("Not fitted") == 1  # calibration
