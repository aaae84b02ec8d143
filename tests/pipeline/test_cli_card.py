"""The model card on the command line: evaluate --record, and predict with a phantom model."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from covidcxr import Pipeline, XRay
from covidcxr.phantoms import write_phantom_dataset
from covidcxr.pipeline import METADATA_NAME, MODEL_CARD_NAME

from .conftest import run_cli as run

pytestmark = pytest.mark.usefixtures("test_components")


@pytest.fixture
def phantom_dir(tmp_path: Path) -> Path:
    return write_phantom_dataset(tmp_path / "phantoms", n_per_class=4, size=64)


@pytest.fixture
def phantom_model(test_config: dict[str, Any], phantom_train: list[XRay], tmp_path: Path) -> Path:
    """A model trained on phantoms drawn in memory (so they carry their synthetic mark)."""
    config = {**test_config, "detector": None}
    return Pipeline(config).fit(phantom_train).save(tmp_path / "model")


def test_evaluate_record_twice_accumulates_two_evaluations_on_the_card(
    phantom_model: Path, phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for attempt in ("first", "second"):
        code, out, err = run(
            ["evaluate", str(phantom_model), str(phantom_dir), "--record",
             "--report", str(tmp_path / f"report-{attempt}")],
            capsys,
        )  # fmt: skip
        assert code == 0, err
        assert "recorded:" in out
    metadata = json.loads((phantom_model / METADATA_NAME).read_text())
    assert len(metadata["evaluations"]) == 2
    first, second = metadata["evaluations"]
    assert first["data_fingerprint"] == second["data_fingerprint"]
    assert first["n_images"] == 12
    assert "FolderSource" in first["source"]
    events = [entry["event"] for entry in metadata["changelog"]]
    assert events == ["saved", "evaluation recorded", "evaluation recorded"]
    card = (phantom_model / MODEL_CARD_NAME).read_text()
    assert card.count("evaluation recorded: evaluated on FolderSource") == 2
    # The report of a phantom model says what it was trained on, too.
    assert "synthetic phantoms" in (tmp_path / "report-first" / "report.md").read_text()


def test_evaluate_without_record_leaves_the_card_alone(
    phantom_model: Path, phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (phantom_model / METADATA_NAME).read_text()
    code, _, err = run(
        ["evaluate", str(phantom_model), str(phantom_dir), "--report", str(tmp_path / "r")],
        capsys,
    )
    assert code == 0, err
    assert (phantom_model / METADATA_NAME).read_text() == before


def test_predict_with_a_phantom_model_says_so_on_stderr_and_on_every_row(
    phantom_model: Path, phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "predictions.csv"
    code, _, err = run(
        ["predict", str(phantom_model), str(phantom_dir), "--output", str(output)], capsys
    )
    assert code == 0, err
    notices = [line for line in err.splitlines() if "trained on synthetic phantoms" in line]
    assert len(notices) == 1
    with output.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12
    assert all("synthetic phantoms" in row["model_note"] for row in rows)

    code, out, err = run(["predict", str(phantom_model), str(phantom_dir), "--json"], capsys)
    assert code == 0, err
    assert all("synthetic phantoms" in p["model_note"] for p in json.loads(out))


def test_a_model_trained_on_a_phantom_folder_written_to_disk_is_marked_too(
    phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text(
        '[preprocessor]\nname = "test-shrink"\n[classifier]\nname = "test-softmax"\n'
        '[detector]\nname = "none"\n'
    )
    model = tmp_path / "model"
    code, _, err = run(
        ["train", str(phantom_dir), "--out", str(model), "--config", str(config)], capsys
    )
    assert code == 0, err
    assert json.loads((model / METADATA_NAME).read_text())["synthetic"] is True
    code, _, err = run(["predict", str(model), str(phantom_dir)], capsys)
    assert code == 0, err
    assert "warning: This model was trained on synthetic phantoms" in err


def test_predict_with_a_model_trained_on_image_files_adds_no_note(
    test_config: dict[str, Any],
    phantom_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (phantom_dir / "README.txt").unlink()  # now just a folder of PNG images
    model = Pipeline({**test_config, "detector": None}).fit(phantom_dir).save(tmp_path / "m")
    output = tmp_path / "predictions.csv"
    code, _, err = run(["predict", str(model), str(phantom_dir), "--output", str(output)], capsys)
    assert code == 0, err
    assert "synthetic" not in err
    assert "model_note" not in output.read_text().splitlines()[0]
