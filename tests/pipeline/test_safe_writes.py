"""--overwrite replaces only what covidcxr wrote: the user's files survive every command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from covidcxr import XRay
from covidcxr.errors import OutputExistsError
from covidcxr.files import MARKER_NAME
from covidcxr.pipeline import MANIFEST_NAME, Pipeline

from ..conftest import assert_untouched, users_folder
from .conftest import run_cli as run

pytestmark = pytest.mark.usefixtures("test_components")


@pytest.fixture
def pipeline(test_config: dict[str, Any], phantom_train: list[XRay]) -> Pipeline:
    return Pipeline(test_config).fit(phantom_train)


# -- Pipeline.save and covidcxr train ----------------------------------------------------


def test_save_with_overwrite_leaves_a_folder_of_the_users_files_alone(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    target = users_folder(tmp_path / "results")
    with pytest.raises(OutputExistsError, match=r"results .*not written by covidcxr"):
        pipeline.save(target, overwrite=True)
    assert_untouched(target)
    assert sorted(p.name for p in target.iterdir()) == ["sub", "thesis.txt"]


def test_a_pipeline_saved_before_markers_is_replaced_with_overwrite(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    target = pipeline.save(tmp_path / "model")
    (target / MARKER_NAME).unlink()  # as saved by covidcxr before this change
    pipeline.save(target, overwrite=True)
    assert json.loads((target / MARKER_NAME).read_text())["kind"] == "pipeline"
    assert Pipeline.load(target).classes_ == pipeline.classes_


def test_train_overwrite_refuses_a_folder_of_the_users_files_before_training(
    config_file: Path, phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = users_folder(tmp_path / "results")
    argv = ["train", str(phantom_dir), "--out", str(target), "--config", str(config_file)]
    code, _, err = run([*argv, "--overwrite"], capsys)
    assert code == 1
    assert "not written by covidcxr" in err
    assert "epoch" not in err  # refused before training
    assert_untouched(target)


def test_train_overwrite_replaces_a_model_it_saved(
    config_file: Path, phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "model"
    argv = ["train", str(phantom_dir), "--out", str(target), "--config", str(config_file)]
    assert run(argv, capsys)[0] == 0
    first = (target / MANIFEST_NAME).stat().st_ino
    code, _, err = run([*argv, "--overwrite"], capsys)
    assert code == 0, err
    assert (target / MANIFEST_NAME).stat().st_ino != first


# -- reports: Pipeline.evaluate and covidcxr evaluate -------------------------------------


def test_evaluate_overwrite_leaves_a_folder_of_the_users_files_alone(
    pipeline: Pipeline, phantom_test: list[XRay], tmp_path: Path
) -> None:
    target = users_folder(tmp_path / "results")
    with pytest.raises(OutputExistsError, match=r"results .*not written by covidcxr"):
        pipeline.evaluate(phantom_test, target, overwrite=True)
    assert_untouched(target)


def test_a_report_written_before_markers_is_replaced_with_overwrite(
    pipeline: Pipeline, phantom_test: list[XRay], tmp_path: Path
) -> None:
    target = tmp_path / "report"
    pipeline.evaluate(phantom_test, target)
    (target / MARKER_NAME).unlink()  # as written by covidcxr before this change
    (target / "figures" / "stale.png").write_bytes(b"a figure an older version drew")
    pipeline.evaluate(phantom_test, target, overwrite=True)
    assert (target / "report.html").is_file()
    assert not (target / "figures" / "stale.png").exists()  # replaced as a whole


def test_cli_evaluate_overwrite_leaves_a_folder_of_the_users_files_alone(
    config_file: Path, phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    train = ["train", str(phantom_dir), "--out", str(model), "--config", str(config_file)]
    assert run(train, capsys)[0] == 0
    target = users_folder(tmp_path / "results")
    argv = ["evaluate", str(model), str(phantom_dir), "--report", str(target), "--overwrite"]
    code, _, err = run(argv, capsys)
    assert code == 1
    assert "not written by covidcxr" in err
    assert_untouched(target)


# -- covidcxr demo ------------------------------------------------------------------------


def test_demo_overwrite_leaves_a_folder_of_the_users_files_alone_and_replaces_its_own(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = ["demo", "--config", str(config_file), "--size", "64", "--n-per-class", "4"]
    target = users_folder(tmp_path / "results")
    code, _, err = run([*demo, "--out", str(target), "--overwrite"], capsys)
    assert code == 1
    assert "not written by covidcxr" in err
    assert_untouched(target)

    own = tmp_path / "demo"
    assert run([*demo, "--out", str(own)], capsys)[0] == 0
    first = (own / "report" / "report.html").stat().st_ino
    code, _, err = run([*demo, "--out", str(own), "--overwrite"], capsys)
    assert code == 0, err
    assert (own / "report" / "report.html").stat().st_ino != first
    assert sorted(p.name for p in own.iterdir()) == [MARKER_NAME, "model", "report"]


# -- covidcxr detect ----------------------------------------------------------------------


def detect_args(source: Path, out: Path) -> list[str]:
    return ["detect", str(source), "--out", str(out), "--detector", "test-fixed", "--no-progress"]


def test_detect_overwrite_replaces_its_own_files_and_no_others(
    phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = users_folder(tmp_path / "results")
    assert run(detect_args(phantom_dir, out), capsys)[0] == 0
    code, _, err = run([*detect_args(phantom_dir, out), "--overwrite"], capsys)
    assert code == 0, err
    assert_untouched(out)
    document = json.loads((out / "detections.json").read_text())
    assert len(document["images"]) == 9
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_detect_with_one_clashing_name_writes_nothing_at_all(
    phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = users_folder(tmp_path / "results")
    (out / "normal__phantom-normal-0-0001.png").write_bytes(b"the user's picture")
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    code, _, err = run(detect_args(phantom_dir, out), capsys)
    assert code == 1  # an existing file is not a usage error
    assert "normal__phantom-normal-0-0001.png already exists" in err
    assert "--overwrite" in err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    assert (out / "normal__phantom-normal-0-0001.png").read_bytes() == b"the user's picture"
