"""Batch inference on a local Ray cluster: the same answers as one process, every image once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip(
    "ray", reason="the Ray engine needs the extra: pip install 'covidcxr[ray]'"
)

import pyarrow.csv as pa_csv  # noqa: E402
import pyarrow.json as pa_json  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import covidcxr.ray  # noqa: E402
from covidcxr import InvalidImageError, Pipeline  # noqa: E402
from covidcxr.cli import main  # noqa: E402
from covidcxr.errors import ConfigurationError, OutputExistsError  # noqa: E402
from covidcxr.pipeline._prepared import SourceLike  # noqa: E402
from covidcxr.ray._cluster import connected  # noqa: E402
from covidcxr.records import detection_to_dict  # noqa: E402
from covidcxr.sources import Entry, FolderSource, RawItem  # noqa: E402

pytestmark = pytest.mark.usefixtures("ray_cluster")

# The slow reader below is defined here; Ray's workers cannot import this test module, so
# it travels by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _run(command: Callable[[list[str]], object], argv: list[str]) -> int:
    try:
        command(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def _rows(folder: Path, fmt: str) -> list[dict[str, Any]]:
    reader: Callable[[Path], Any] = {
        "parquet": pq.read_table,
        "csv": pa_csv.read_csv,
        "jsonl": pa_json.read_json,
    }[fmt]
    suffix = {"parquet": ".parquet", "csv": ".csv", "jsonl": ".json"}[fmt]
    parts = sorted(
        p for p in folder.iterdir() if p.suffix == suffix and not p.name.startswith(("_", "."))
    )
    assert parts, f"no {fmt} partitions in {folder}"
    rows = [row for part in parts for row in reader(part).to_pylist()]
    return sorted(rows, key=lambda row: row["position"])


def _scans_with_a_broken_one(phantom_folder: Path, folder: Path, n: int, name: str) -> Path:
    """Copy the first ``n`` phantom scans into ``folder``, add ``COVID/name`` broken."""
    for path in sorted(phantom_folder.rglob("*.png"))[:n]:
        target = folder / path.relative_to(phantom_folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    broken = folder / "COVID" / name
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return broken


def _assert_same_as_single_process(
    rows: list[dict[str, Any]], model: Path, source: SourceLike
) -> None:
    expected = Pipeline.load(model).predict(source)
    assert [row["id"] for row in rows] == [p.id for p in expected]
    assert [row["position"] for row in rows] == list(range(len(expected)))
    for row, prediction in zip(rows, expected, strict=True):
        assert row["label"] == prediction.label
        assert row["status"] == prediction.status
        for name, value in prediction.probabilities.items():
            assert row[f"p_{name}"] == pytest.approx(value, abs=1e-5)
        assert json.loads(row["detections"]) == [
            detection_to_dict(detection) for detection in prediction.detections
        ]


def test_two_workers_write_what_one_process_predicts(
    tiny_model: Path, phantom_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "predictions"
    result = covidcxr.ray.predict(tiny_model, phantom_folder, out, workers=2, batch_size=4)
    assert result.workers == 2
    assert result.n_images == 12
    assert result.skipped == ()
    rows = _rows(out, "parquet")
    _assert_same_as_single_process(rows, tiny_model, FolderSource(phantom_folder))
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["n_images"] == 12
    assert summary["n_skipped"] == 0
    # The whole folder reads as one table: the summary's leading _ keeps it out.
    assert pq.read_table(out).num_rows == 12
    assert not list(tmp_path.glob(".predictions.*"))  # no partial folder left behind


def test_unreadable_items_are_reported_not_retried(
    tiny_model: Path, phantom_folder: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "scans"
    broken = _scans_with_a_broken_one(phantom_folder, folder, 5, "broken.png")
    out = tmp_path / "predictions.csv"
    result = covidcxr.ray.predict(
        tiny_model,
        folder,
        out,
        format="csv",
        workers=1,
        batch_size=2,
        source_options={"on_error": "skip", "layout": "classes"},
    )
    assert result.n_images == 5
    assert [item.path for item in result.skipped] == [str(broken)]
    rows = _rows(out, "csv")
    assert str(broken) not in [row["id"] for row in rows]
    assert len(rows) == 5
    skipped = (out / "_skipped.csv").read_text().splitlines()
    assert skipped[0] == "path,reason"
    assert skipped[1].startswith(f"{broken},")
    assert skipped[1].count(broken.name) == 1  # the reason does not repeat the path

    # With on_error="raise" the first unreadable item stops the job with its own error,
    # and nothing is written.
    stopped = tmp_path / "stopped"
    with pytest.raises(InvalidImageError, match=r"broken\.png"):
        covidcxr.ray.predict(
            tiny_model, folder, stopped, workers=1, source_options={"layout": "classes"}
        )
    assert not stopped.exists()
    assert not list(tmp_path.glob(".stopped.*"))


def test_on_error_raise_still_raises_where_ray_wraps_worker_errors(
    tiny_model: Path, phantom_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Ray without raise_original_map_exception: the workers report the item, and the
    # driver raises its error once the job is done; nothing is written either way.
    @contextlib.contextmanager
    def wrapped(data: Any) -> Iterator[bool]:
        del data
        yield False

    monkeypatch.setattr("covidcxr.ray._predict._original_worker_errors", wrapped)
    folder = tmp_path / "scans"
    (folder / "COVID").mkdir(parents=True)
    first = sorted(phantom_folder.rglob("*.png"))[0]
    (folder / "COVID" / "a.png").write_bytes(first.read_bytes())
    (folder / "COVID" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    stopped = tmp_path / "stopped"
    with pytest.raises(InvalidImageError, match=r"broken\.png"):
        covidcxr.ray.predict(
            tiny_model, folder, stopped, workers=1, source_options={"layout": "classes"}
        )
    assert not stopped.exists()
    assert not list(tmp_path.glob(".stopped.*"))


def test_existing_output_is_refused_before_anything_runs(
    tiny_model: Path, phantom_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "predictions"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="not written by covidcxr"):
        covidcxr.ray.predict(tiny_model, phantom_folder, out)
    assert (out / "mine.txt").read_text() == "keep me"
    (out / "mine.txt").unlink()  # an empty folder made for the output is free
    covidcxr.ray.predict(tiny_model, phantom_folder, out, workers=1)
    with pytest.raises(OutputExistsError, match="overwrite"):  # a finished one is not
        covidcxr.ray.predict(tiny_model, phantom_folder, out)
    with pytest.raises(ConfigurationError, match="format"):
        covidcxr.ray.predict(tiny_model, phantom_folder, tmp_path / "x", format="xlsx")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="workers"):
        covidcxr.ray.predict(tiny_model, phantom_folder, tmp_path / "x", workers=0)
    with pytest.raises(ConfigurationError, match="cannot be read by Ray workers"):
        covidcxr.ray.predict(tiny_model, [], tmp_path / "x")


def test_overwrite_replaces_only_a_predictions_folder_never_your_files(
    tiny_model: Path, phantom_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "predictions"
    covidcxr.ray.predict(tiny_model, phantom_folder, out, workers=1)
    first = json.loads((out / "_summary.json").read_text())
    covidcxr.ray.predict(tiny_model, phantom_folder, out, workers=1, overwrite=True)
    assert json.loads((out / "_summary.json").read_text())["seconds"] != first["seconds"]
    assert pq.read_table(out).num_rows == 12
    # A folder of the user's (here: the very folder being predicted) is never replaced,
    # overwrite or not; it once was, and deleted.
    with pytest.raises(OutputExistsError, match="not written by covidcxr"):
        covidcxr.ray.predict(tiny_model, phantom_folder, phantom_folder, overwrite=True)
    assert len(list(phantom_folder.rglob("*.png"))) == 12
    assert not list(tmp_path.glob(".predictions.*"))


def test_an_output_that_appears_during_the_job_is_not_replaced(
    tiny_model: Path, phantom_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "predictions"

    def meanwhile(*args: Any, **kwargs: Any) -> Any:
        out.mkdir()  # another run, or a person, puts something there while this one runs
        (out / "mine.txt").write_text("keep me")
        return connected(*args, **kwargs)

    monkeypatch.setattr("covidcxr.ray._predict.connected", meanwhile)
    with pytest.raises(OutputExistsError):
        covidcxr.ray.predict(tiny_model, phantom_folder, out, workers=1)
    assert [path.name for path in out.iterdir()] == ["mine.txt"]
    assert not list(tmp_path.glob(".predictions.*"))


def test_a_source_read_before_keeps_its_positions_and_reports_what_it_left_out(
    tiny_model: Path, phantom_folder: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "scans"
    # The broken file's name sorts first in its class folder.
    broken = _scans_with_a_broken_one(phantom_folder, folder, 4, "aaa-broken.png")
    source = FolderSource(folder, on_error="skip", layout="classes")
    with pytest.warns(UserWarning, match="unreadable"):
        assert len(list(source)) == 4  # an earlier pass found the broken file
    out = tmp_path / "predictions"
    result = covidcxr.ray.predict(tiny_model, source, out, workers=1)
    assert result.n_images == 4
    assert [skipped.path for skipped in result.skipped] == [str(broken)]
    assert (out / "_skipped.csv").read_text().count(broken.name) == 1
    rows = sorted(_rows(out, "parquet"), key=lambda row: int(row["position"]))
    names = [source.record_id(entry) for entry in source.entries]
    assert [names[int(row["position"])] for row in rows] == [row["id"] for row in rows]
    assert str(broken) not in [row["id"] for row in rows]


class _SlowSource(FolderSource):
    """A folder whose workers take a while per image and leave a mark for each read."""

    def __init__(self, root: Path, marks: Path) -> None:
        super().__init__(root)
        self.marks = marks

    def remote_reader(self) -> Callable[[Entry], RawItem] | None:
        inner = super().remote_reader()
        assert inner is not None
        return _MarkingReader(inner, str(self.marks))


class _MarkingReader:
    def __init__(self, inner: Callable[[Entry], RawItem], marks: str) -> None:
        self.inner, self.marks = inner, marks

    def __call__(self, entry: Entry) -> RawItem:
        time.sleep(0.4)
        name = entry.name.replace("/", "_")
        Path(self.marks, f"{os.getpid()}-{name}-{time.monotonic_ns()}").touch()
        return self.inner(entry)


def test_a_killed_worker_loses_no_image_and_duplicates_none(
    tiny_model: Path, phantom_folder: Path, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    source = _SlowSource(phantom_folder, marks)
    out = tmp_path / "predictions"
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = covidcxr.ray.predict(
                tiny_model, source, out, workers=2, batch_size=2
            )
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test below
            outcome["error"] = exc

    job = threading.Thread(target=run)
    job.start()
    deadline = time.monotonic() + 300
    while not list(marks.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    first = sorted(marks.iterdir())
    assert first, "no worker read anything"
    victim = int(first[0].name.split("-")[0])
    os.kill(victim, signal.SIGKILL)  # the actor's process, in the middle of its batch
    reads_before_kill = len(first)
    job.join(timeout=600)
    assert not job.is_alive()
    if "error" in outcome:
        raise outcome["error"]
    assert reads_before_kill < 12  # the kill came before the job was done
    rows = _rows(out, "parquet")
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids)) == 12  # every image exactly once
    assert outcome["result"].n_images == 12
    readers = {mark.name.split("-")[0] for mark in marks.iterdir()}
    assert str(victim) in readers
    assert len(readers) >= 2  # another process (a restarted actor, the other one) went on
    _assert_same_as_single_process(rows, tiny_model, FolderSource(phantom_folder))


def test_cli_predict_engine_ray_on_a_zip_archive(
    tiny_model: Path, phantom_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "scans.zip"
    with zipfile.ZipFile(archive, "w") as written:
        for path in sorted(phantom_folder.rglob("*.png")):
            written.write(path, path.relative_to(phantom_folder).as_posix())
        # Last in the listing, so the other items keep their positions.
        written.writestr("pneumonia/zz-broken.png", b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "preds.jsonl"  # the folder's suffix gives the format
    main_args = ["predict", str(tiny_model), str(archive), "--output", str(out)]
    ray_args = [*main_args, "--engine", "ray", "--workers", "2", "--on-error", "skip", "--json"]
    assert _run(main, ray_args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {
        "output": str(out.absolute()),
        "format": "jsonl",
        "n_images": 12,
        "n_skipped": 1,
        "workers": 2,
        "skipped_file": str(out.absolute() / "_skipped.csv"),
    }
    assert "zz-broken.png" in Path(summary["skipped_file"]).read_text()
    rows = _rows(out, "jsonl")
    assert all(row["id"].startswith(f"{archive}!/") for row in rows)
    _assert_same_as_single_process(rows, tiny_model, covidcxr.open_source(archive, on_error="skip"))
    assert _run(main, [*main_args, "--workers", "2"]) == 2
    assert "--workers applies to --engine ray only" in capsys.readouterr().err


def test_a_rejected_row_has_empty_lesions_as_in_a_local_table() -> None:
    from covidcxr.ray._predict import _table_row
    from covidcxr.records import REJECTED, Box, Detection, Prediction

    classes = ["covid-19", "normal"]
    rejected = Prediction("r.png", REJECTED, {}, status=REJECTED, reason="blank image")
    row = _table_row(rejected, classes, severity=False, note=None)
    assert (row["n_lesions"], row["detections"]) == (None, None)  # not the text "null"
    found = Prediction(
        "a.png", "covid-19", {"covid-19": 0.9, "normal": 0.1},
        detections=(Detection(Box(1, 2, 3, 4), "opacity", 0.5),),
    )  # fmt: skip
    row = _table_row(found, classes, severity=False, note=None)
    assert row["n_lesions"] == 1
    assert json.loads(row["detections"]) == [detection_to_dict(d) for d in found.detections]
