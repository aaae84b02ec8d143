"""The end-to-end commands: train, predict, evaluate, demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from covidcxr.cli import main
from covidcxr.phantoms import write_phantom_dataset

pytestmark = pytest.mark.usefixtures("test_components")

TEST_TOML = """
[preprocessor]
name = "test-shrink"
output_size = 32

[classifier]
name = "test-softmax"
epochs = 30

[detector]
# Not trained: the class folders of a phantom dataset carry no lesion boxes to learn from.
name = "test-fixed"

[evaluation]
n_bootstrap = 20
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(TEST_TOML)
    return path


@pytest.fixture
def phantom_dir(tmp_path: Path) -> Path:
    return write_phantom_dataset(tmp_path / "phantoms", n_per_class=6, size=64)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    else:
        code = 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_predict_evaluate_round_trip(
    config_file: Path, phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    code, out, _ = run(
        ["train", str(phantom_dir), "--out", str(model), "--config", str(config_file), "--json"],
        capsys,
    )
    assert code == 0
    summary = json.loads(out)
    assert summary["classes"] == ["covid-19", "normal", "pneumonia"]
    assert summary["n_train"] == 18
    assert (model / "pipeline.json").is_file()

    code, out, _ = run(["predict", str(model), str(phantom_dir), "--json"], capsys)
    assert code == 0
    predictions = json.loads(out)
    assert len(predictions) == 18
    assert {"id", "label", "probabilities", "detections"} <= predictions[0].keys()

    report_dir = tmp_path / "report"
    code, out, _ = run(
        ["evaluate", str(model), str(phantom_dir), "--report", str(report_dir)], capsys
    )
    assert code == 0
    assert "accuracy:" in out
    assert (report_dir / "report.html").is_file()


def test_cache_dir_serves_a_second_prediction_from_the_cache(
    config_file: Path,
    phantom_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, cache = tmp_path / "model", tmp_path / "cache"
    run(["train", str(phantom_dir), "--out", str(model), "--config", str(config_file)], capsys)
    monkeypatch.setenv("COVIDCXR_CACHE_DIR", str(cache))
    code, first, _ = run(["predict", str(model), str(phantom_dir), "--json"], capsys)
    assert code == 0
    assert (cache / "CACHEDIR.TAG").is_file()
    entries = sorted(p.name for p in cache.rglob("*.cxrpack"))
    assert entries
    code, second, _ = run(["predict", str(model), str(phantom_dir), "--json"], capsys)
    assert code == 0
    assert json.loads(second) == json.loads(first)
    # Served from the cache: nothing new was written.
    assert sorted(p.name for p in cache.rglob("*.cxrpack")) == entries


def test_train_refuses_an_existing_model_directory_before_training(
    config_file: Path, phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "model").mkdir()
    code, _, err = run(
        ["train", str(phantom_dir), "--out", str(tmp_path / "model"), "--config", str(config_file)],
        capsys,
    )
    assert code == 1
    assert "already exists" in err
    assert "--overwrite" in err


def test_predict_on_a_missing_source_fails_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["predict", str(tmp_path), str(tmp_path / "nowhere")], capsys)
    assert code == 1
    assert err.startswith("error:")


def test_bad_source_option_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["predict", str(tmp_path), str(tmp_path), "-s", "layout"], capsys)
    assert code == 2
    assert "KEY=VALUE" in err


def test_demo_runs_end_to_end_on_phantoms_and_writes_a_report(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "demo"
    argv = [
        "demo",
        "--out",
        str(out_dir),
        "--config",
        str(config_file),
        "--size",
        "64",
        "--n-per-class",
        "8",
    ]
    code, out, _ = run(argv, capsys)
    assert code == 0, out
    assert "images:      24 train, 12 validation, 12 test" in out
    page = (out_dir / "report" / "report.html").read_text()
    assert "synthetic phantoms" in page
    assert (out_dir / "model" / "pipeline.json").is_file()
    code, _, err = run(argv, capsys)
    assert code == 1
    assert "already holds a demo" in err
