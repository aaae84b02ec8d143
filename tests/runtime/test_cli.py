"""`covidcxr export` and `covidcxr predict --runtime`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from covidcxr.cli import cli
from covidcxr.errors import ModelFormatError
from covidcxr.phantoms import write_phantom_dataset

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("tf2onnx", reason="the onnx extra is not installed")
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]


def test_export_then_predict_with_the_onnx_runtime(saved_pipeline: Path, tmp_path: Path) -> None:
    folder = write_phantom_dataset(tmp_path / "held-out", 2, size=48, seed=11)
    exported = tmp_path / "exported"
    result = CliRunner().invoke(
        cli,
        [
            "export",
            str(saved_pipeline),
            str(exported),
            "--validation",
            str(folder),
            "--runtime",
            "onnx",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["artifact"] == "exported/classifier.onnx"
    assert figures["guard"]["n_images"] == 6
    assert figures["guard"]["passed"] is True

    result = CliRunner().invoke(
        cli, ["predict", str(exported), str(folder), "--runtime", "onnx", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 6


def test_export_refuses_calibration_without_int8_before_loading_the_model(
    tmp_path: Path,
) -> None:
    folder = write_phantom_dataset(tmp_path / "held-out", 1, size=48, seed=11)
    result = CliRunner().invoke(
        cli,
        ["export", str(folder), str(tmp_path / "out"), "--validation", str(folder),
         "--calibration", str(folder)],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--calibration applies only to --precision int8 (not fp32)" in result.output
    assert not (tmp_path / "out").exists()


def test_export_without_runtime_writes_openvino_the_measured_default(
    saved_pipeline: Path, tmp_path: Path
) -> None:
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    folder = write_phantom_dataset(tmp_path / "held-out", 2, size=48, seed=13)
    exported = tmp_path / "exported"
    result = CliRunner().invoke(
        cli, ["export", str(saved_pipeline), str(exported), "--validation", str(folder), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["artifact"] == "exported/classifier.xml"
    result = CliRunner().invoke(cli, ["predict", str(exported), str(folder), "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 6


def test_predict_refuses_a_runtime_the_model_was_not_exported_for(
    saved_pipeline: Path, tmp_path: Path
) -> None:
    folder = write_phantom_dataset(tmp_path / "images", 1, size=48, seed=12)
    result = CliRunner().invoke(
        cli, ["predict", str(saved_pipeline), str(folder), "--runtime", "onnx"]
    )
    assert isinstance(result.exception, ModelFormatError)
    assert "was not exported for 'onnx'" in str(result.exception)


def test_runtime_is_for_the_local_engine_only(saved_pipeline: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["predict", str(saved_pipeline), str(tmp_path), "--engine", "ray", "--runtime", "onnx"],
    )
    assert result.exit_code == 2
    assert "--runtime applies to --engine local only" in result.output
