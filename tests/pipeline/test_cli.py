"""The end-to-end commands: train, predict, evaluate, demo."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

import covidcxr
from covidcxr.phantoms import write_phantom_dataset

from .conftest import run_cli as run
from .conftest import write_cli_config

pytestmark = pytest.mark.usefixtures("test_components")


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    # More epochs than the shared one, and a bootstrap for the evaluation's intervals.
    return write_cli_config(tmp_path / "pipeline.toml", epochs=30, n_bootstrap=20)


@pytest.fixture
def phantom_dir(tmp_path: Path) -> Path:
    return write_phantom_dataset(tmp_path / "phantoms", n_per_class=6, size=64)


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
    # Class folders carry no lesion annotation: the COVID-19 phantoms' lesions are real
    # but were never drawn, so the detector is not scored against empty boxes.
    report = json.loads((report_dir / "report.json").read_text())
    assert report["detection"] is None
    assert any("Detection was not scored" in note for note in report["notes"])


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


# -- what predict reads and writes, and what an unreadable image does ------------------

BROKEN_PNG = b"\x89PNG\r\n\x1a\nnot really"
PARQUET = pytest.param(
    ".parquet",
    marks=pytest.mark.skipif(
        importlib.util.find_spec("pyarrow") is None, reason="needs the parquet extra (pyarrow)"
    ),
)


@pytest.fixture
def model_dir(
    config_file: Path, phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Path:
    model = tmp_path / "model"
    code, _, err = run(
        ["train", str(phantom_dir), "--out", str(model), "--config", str(config_file)], capsys
    )
    assert code == 0, err
    return model


@pytest.fixture
def broken_dir(tmp_path: Path) -> Path:
    root = write_phantom_dataset(tmp_path / "with-broken", n_per_class=3, size=64)
    (root / "normal" / "broken.png").write_bytes(BROKEN_PNG)
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", PARQUET])
def test_predict_writes_one_row_per_image_to_the_output_table(
    model_dir: Path,
    phantom_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    suffix: str,
) -> None:
    output = tmp_path / f"predictions{suffix}"
    code, out, err = run(
        ["predict", str(model_dir), str(phantom_dir), "--output", str(output), "--json"], capsys
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary == {
        "output": str(output),
        "n_images": 18,
        "n_skipped": 0,
        "status": summary["status"],
    }
    assert summary["status"].keys() == {"accepted", "uncertain", "rejected"}
    assert sum(summary["status"].values()) == 18
    if suffix == ".csv":
        rows: list[dict[str, Any]] = read_csv(output)
    elif suffix == ".jsonl":
        rows = [json.loads(line) for line in output.read_text().splitlines()]
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(output).to_pylist()
    assert len(rows) == 18
    assert {"id", "label", "detections"} <= rows[0].keys()
    assert rows[0]["id"].endswith(".png")


def test_predict_refuses_an_existing_output_unless_overwrite(
    model_dir: Path, phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "predictions.csv"
    output.write_text("keep me\n")
    argv = ["predict", str(model_dir), str(phantom_dir), "--output", str(output)]
    code, _, err = run(argv, capsys)
    assert code == 1
    assert "--overwrite" in err
    assert output.read_text() == "keep me\n"
    code, out, err = run([*argv, "--overwrite"], capsys)
    assert code == 0, err
    assert "wrote 18 prediction(s)" in out
    # What became of them is said with --output too, not only on the terminal.
    assert re.search(r"^18 radiograph\(s\): \d+ diagnosed, \d+ uncertain, 0 rejected$", out, re.M)
    assert len(read_csv(output)) == 18


def test_detect_with_a_whole_model_draws_the_boxes_predict_reports(
    model_dir: Path, phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["predict", str(model_dir), str(phantom_dir), "--json", "--no-progress"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    predicted = {p["id"]: (p["detections"], p["status"]) for p in json.loads(out)}
    boxes = tmp_path / "boxes"
    code, out, err = run(
        ["detect", str(phantom_dir), "--model", str(model_dir), "--out", str(boxes)], capsys
    )
    assert code == 0, err
    document = json.loads((boxes / "detections.json").read_text())
    assert document["model"] == str(model_dir)
    found = {r["id"]: (r["detections"], r["status"]) for r in document["images"]}
    assert found == predicted
    assert all(detections for detections, _ in found.values())  # its detector boxes each
    assert len(list(boxes.glob("*.png"))) == 18
    assert re.search(r"^18 radiograph\(s\): ", out, re.M)


def test_detect_with_a_whole_model_refuses_lone_detector_options_and_unknown_names(
    model_dir: Path, phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["detect", str(phantom_dir), "--out", str(tmp_path / "boxes")]
    code, _, err = run([*args, "--model", str(model_dir), "--preprocess", "gaussian-clahe"], capsys)
    assert code == 2
    assert "--preprocess does not apply to --model" in err
    code, _, err = run([*args, "--model", "no-such-model"], capsys)
    assert code == 1
    assert "--model no-such-model: no such file or folder, nor a shipped model" in err
    assert "covid-qu-ex" in err  # the shipped models are listed
    assert not (tmp_path / "boxes").exists()


@pytest.mark.filterwarnings("ignore::covidcxr.sources.SkippedItemsWarning")
def test_predict_names_the_files_a_source_left_out_without_on_error_skip(
    model_dir: Path, phantom_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for index in range(7):
        (phantom_dir / "normal" / f"scan{index}.tiff").write_bytes(b"MM\x00*")
    code, _, err = run(["predict", str(model_dir), str(phantom_dir)], capsys)
    assert code == 0, err
    left_out = [line for line in err.splitlines() if line.startswith("left out ")]
    assert left_out[0] == (
        f"left out {phantom_dir / 'normal' / 'scan0.tiff'}: TIFF images are not read: "
        "convert it to PNG (covidcxr reads PNG, JPEG, WebP and DICOM)"
    )
    assert len(left_out) == 6  # five named, then the count and where to find them all
    assert left_out[-1].startswith("left out 7 item(s) in all; --on-error skip lists every")


def test_an_unreadable_image_fails_predict_with_one_line_that_says_what_to_do(
    model_dir: Path, broken_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["predict", str(model_dir), str(broken_dir)], capsys)
    assert code == 1
    assert out == ""
    # The model was trained on a phantom folder, which predict says in a warning first.
    lines = [line for line in err.splitlines() if "trained on synthetic phantoms" not in line]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert str(broken_dir / "normal" / "broken.png") in lines[0]
    assert "--on-error skip" in lines[0]


@pytest.mark.filterwarnings("ignore::covidcxr.sources.SkippedItemsWarning")
def test_predict_on_error_skip_leaves_it_out_and_lists_it_beside_the_output(
    model_dir: Path, broken_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out" / "predictions.csv"
    args = ["predict", str(model_dir), str(broken_dir), "-o", str(output), "--on-error", "skip"]
    code, out, err = run(args, capsys)
    assert code == 0, err
    assert "wrote 9 prediction(s)" in out
    assert len(read_csv(output)) == 9
    skipped = read_csv(tmp_path / "out" / "predictions.skipped.csv")
    assert [row["path"] for row in skipped] == [str(broken_dir / "normal" / "broken.png")]
    assert "PNG" in skipped[0]["reason"]
    assert "skipped 1 item(s)" in err
    # The JSON summary on stdout says so too, and where the list is.
    code, out, err = run([*args, "--overwrite", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["n_images"] == 9
    assert summary["n_skipped"] == 1
    assert summary["skipped_file"] == str(tmp_path / "out" / "predictions.skipped.csv")


@pytest.mark.filterwarnings("ignore::covidcxr.sources.SkippedItemsWarning")
def test_predict_on_error_skip_without_an_output_lists_skips_on_stderr(
    model_dir: Path, broken_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        ["predict", str(model_dir), str(broken_dir), "--on-error", "skip", "--json"], capsys
    )
    assert code == 0, err
    assert len(json.loads(out)) == 9
    assert f"skipped {broken_dir / 'normal' / 'broken.png'}: " in err
    assert "skipped 1 item(s)" in err


@pytest.mark.filterwarnings("ignore::covidcxr.sources.SkippedItemsWarning")
def test_train_and_evaluate_on_error_skip_list_skips_in_their_output_folders(
    config_file: Path, broken_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, report = tmp_path / "model", tmp_path / "report"
    train = ["train", str(broken_dir), "--out", str(model), "--config", str(config_file)]
    code, _, err = run(train, capsys)
    assert code == 1
    assert len(err.splitlines()) == 1, err
    assert "broken.png" in err
    code, out, err = run([*train, "--on-error", "skip", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["n_train"] == 9
    assert [row["path"] for row in read_csv(model / "skipped.csv")] == [
        str(broken_dir / "normal" / "broken.png")
    ]
    code, _, err = run(
        ["evaluate", str(model), str(broken_dir), "--report", str(report), "--on-error", "skip"],
        capsys,
    )
    assert code == 0, err
    assert len(read_csv(report / "skipped.csv")) == 1
    assert "skipped 1 item(s)" in err
    # skipped.csv is covidcxr's own: the folders it is in can be replaced (they were
    # refused as holding a file covidcxr did not write).
    code, _, err = run([*train, "--on-error", "skip", "--overwrite"], capsys)
    assert code == 0, err
    code, _, err = run(
        ["evaluate", str(model), str(broken_dir), "--report", str(report), "--on-error", "skip",
         "--overwrite"],
        capsys,
    )  # fmt: skip
    assert code == 0, err


@pytest.mark.filterwarnings("ignore::covidcxr.sources.SkippedItemsWarning")
def test_demo_on_data_with_on_error_skip_lists_skips(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_phantom_dataset(tmp_path / "data", n_per_class=8, size=64)
    (data / "normal" / "broken.png").write_bytes(BROKEN_PNG)
    out_dir = tmp_path / "demo"
    argv = ["demo", "--data", str(data), "--out", str(out_dir), "--config", str(config_file)]
    code, _, err = run(argv, capsys)
    assert code == 1
    assert "--on-error skip" in err
    code, _, err = run([*argv, "--on-error", "skip"], capsys)
    assert code == 0, err
    assert len(read_csv(out_dir / "skipped.csv")) == 1
    code, _, err = run([*argv, "--on-error", "skip", "--overwrite"], capsys)
    assert code == 0, err


def test_predict_reads_a_zip_archive(
    model_dir: Path, phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = Path(shutil.make_archive(str(tmp_path / "scans"), "zip", phantom_dir))
    code, out, err = run(["predict", str(model_dir), str(archive), "--json"], capsys)
    assert code == 0, err
    assert len(json.loads(out)) == 18


def test_predict_reads_a_flat_folder_of_unlabelled_images(
    model_dir: Path, phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flat = tmp_path / "new-scans"
    flat.mkdir()
    for i, path in enumerate(sorted(phantom_dir.rglob("*.png"))[:5]):
        shutil.copy(path, flat / f"scan-{i}.png")
    code, out, err = run(["predict", str(model_dir), str(flat), "--json"], capsys)
    assert code == 0, err
    assert len(json.loads(out)) == 5


def test_predict_writes_a_csv_for_a_folder_of_unlabelled_scans(
    model_dir: Path, phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 11's "done when": `covidcxr predict MODEL some/folder --output preds.csv`.
    folder = tmp_path / "some" / "folder"
    (folder / "ward-3").mkdir(parents=True)
    scans = sorted(phantom_dir.rglob("*.png"))[:6]
    for i, path in enumerate(scans):
        shutil.copy(path, (folder / "ward-3" if i % 2 else folder) / f"scan-{i}.png")
    preds = tmp_path / "preds.csv"
    code, _, err = run(["predict", str(model_dir), str(folder), "--output", str(preds)], capsys)
    assert code == 0, err
    rows = read_csv(preds)
    assert sorted(Path(row["id"]).name for row in rows) == [f"scan-{i}.png" for i in range(6)]
    for row in rows:
        probabilities = [float(v) for k, v in row.items() if k.startswith("p_")]
        assert len(probabilities) == 3
        assert abs(sum(probabilities) - 1) < 1e-4
        assert row["label"] in covidcxr.LABELS


def test_predict_reads_a_single_image_file(
    model_dir: Path, phantom_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    single = sorted(phantom_dir.rglob("*.png"))[0]
    code, out, err = run(["predict", str(model_dir), str(single), "--json"], capsys)
    assert code == 0, err
    assert [Path(p["id"]).name for p in json.loads(out)] == [single.name]


def test_predict_reads_several_sources_in_order(
    model_dir: Path, phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = sorted(phantom_dir.rglob("*.png"))[:3]
    code, _, err = run(
        ["predict", str(model_dir), *map(str, files), "-o", str(tmp_path / "p.csv")], capsys
    )
    assert code == 0, err
    ids = [Path(row["id"]).name for row in read_csv(tmp_path / "p.csv")]
    assert ids == [f.name for f in files]


def test_predict_needs_a_source(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["predict", str(model_dir)], capsys)
    assert code == 2
    assert "SOURCE" in err


def test_predict_on_ray_refuses_a_cache_given_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Ray's workers preprocess on their own machines: the cache was accepted and ignored.
    args = ["predict", "m", str(tmp_path), "--engine", "ray", "-o", str(tmp_path / "out")]
    code, _, err = run([*args, "--cache-dir", str(tmp_path / "cache")], capsys)
    assert code == 2
    assert "--cache-dir applies to --engine local only" in err
    # Set for every command in the environment, it is not the user's request for this one.
    monkeypatch.setenv("COVIDCXR_CACHE_DIR", str(tmp_path / "cache"))
    code, _, err = run(args, capsys)
    assert "--cache-dir" not in err
