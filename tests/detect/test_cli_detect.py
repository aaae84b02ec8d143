"""`covidcxr detect`: annotated PNGs and detections.json from a folder of radiographs."""

from __future__ import annotations

import csv
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

import covidcxr.detect as detect_package
from covidcxr import cli as cli_module
from covidcxr.cli import cli, main
from covidcxr.detect import LoopbackWatsonServer
from covidcxr.errors import OutputExistsError

pytestmark = pytest.mark.filterwarnings("ignore::covidcxr.detect.ServiceRetiredWarning")

APIKEY = "cli-test-apikey"
PARQUET = pytest.param(
    ".parquet",
    marks=pytest.mark.skipif(
        importlib.util.find_spec("pyarrow") is None, reason="needs the parquet extra (pyarrow)"
    ),
)


@pytest.fixture
def server() -> Iterator[LoopbackWatsonServer]:
    with LoopbackWatsonServer(apikey=APIKEY) as running:
        running.objects_for = lambda filename, png, cid: [
            {
                "object": "opacity",
                "score": 0.8,
                "location": {"left": 4, "top": 6, "width": 20, "height": 12},
            }
        ]
        yield running


@pytest.fixture
def radiographs(tmp_path: Path) -> Path:
    root = tmp_path / "cxr"
    rng = np.random.default_rng(0)
    for folder, names in (("COVID", ["a", "b"]), ("NORMAL", ["a"])):
        (root / folder).mkdir(parents=True)
        for name in names:
            pixels = rng.integers(0, 255, (40, 48), dtype=np.uint8)
            cv2.imwrite(str(root / folder / f"{name}.png"), pixels)
    return root


def watson_args(server: LoopbackWatsonServer) -> list[str]:
    return [
        "--detector",
        "watson",
        "-d",
        f"url={server.url}",
        "-d",
        f"iam_url={server.url}",
        "-d",
        f"apikey={APIKEY}",
        "-d",
        f"collection_ids={server.add_collection()}",
    ]


def run(args: list[str]) -> Any:
    return CliRunner().invoke(cli, args)


def test_detect_writes_one_png_per_radiograph_and_a_json_of_detections(
    server: LoopbackWatsonServer, radiographs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run(["detect", str(radiographs), "--out", str(out), *watson_args(server)])
    assert result.exit_code == 0, result.output
    assert "3 lesion(s) in 3 image(s)" in result.output
    document = json.loads((out / "detections.json").read_text())
    assert document["detector"] == "watson"
    pngs = [image["png"] for image in document["images"]]
    # The names keep the folders, so the two a.png stay apart and say where they came from.
    assert pngs == ["COVID__a.png", "COVID__b.png", "NORMAL__a.png"]
    first = document["images"][0]
    assert (first["width"], first["height"]) == (48, 40)
    assert first["detections"] == [
        {
            "label": "opacity",
            "score": 0.8,
            "box": {"x": 4.0, "y": 6.0, "width": 20.0, "height": 12.0},
        }
    ]
    drawn = cv2.imread(str(out / "COVID__a.png"), cv2.IMREAD_COLOR)
    assert drawn is not None
    assert drawn.shape == (40, 48, 3)


def test_detect_refuses_to_replace_earlier_output(
    server: LoopbackWatsonServer,
    radiographs: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    args = ["detect", str(radiographs), "--out", str(out), *watson_args(server)]
    assert run(args).exit_code == 0
    # An existing output is not a usage error: exit status 1, one line, in CLI words.
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 1
    assert err.startswith("error: ")
    assert "already exist; pass --overwrite to replace" in err
    assert "Usage" not in err
    assert "overwrite=True" not in err
    assert run([*args, "--overwrite"]).exit_code == 0


def stop_at_second_drawing(monkeypatch: pytest.MonkeyPatch, stop: type[BaseException]) -> None:
    """Make ``detect`` raise ``stop`` when it draws its second radiograph."""
    drawing = detect_package.draw_detections  # detect imports it when it runs
    calls = 0

    def draw_then_stop(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise stop("stopped part-way")
        return drawing(*args, **kwargs)

    monkeypatch.setattr(detect_package, "draw_detections", draw_then_stop)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_detect_that_stops_part_way_leaves_the_out_folder_as_it_was(
    server: LoopbackWatsonServer,
    radiographs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stop: type[BaseException],
) -> None:
    out = tmp_path / "out"
    args = ["detect", str(radiographs), "--out", str(out), *watson_args(server)]
    assert run(args).exit_code == 0
    (out / "mine.txt").write_text("the user's own file")
    server.objects_for = lambda filename, png, cid: [
        {
            "object": "opacity",
            "score": 0.5,
            "location": {"left": 1, "top": 1, "width": 9, "height": 9},
        }
    ]  # so that a replaced PNG would differ
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    stop_at_second_drawing(monkeypatch, stop)  # the first PNG is written by then
    result = run([*args, "--overwrite"])
    assert result.exit_code != 0
    after = {path.name: path.read_bytes() for path in out.iterdir()}
    assert after == before  # no new PNG, nothing replaced, no staging folder left


def test_detect_into_a_new_folder_that_fails_part_way_leaves_no_folder(
    server: LoopbackWatsonServer,
    radiographs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stop_at_second_drawing(monkeypatch, RuntimeError)
    out = tmp_path / "new" / "out"
    result = run(["detect", str(radiographs), "--out", str(out), *watson_args(server)])
    assert result.exit_code != 0
    assert not out.exists()


def test_detect_shows_a_progress_bar_on_a_terminal_unless_told_not_to(
    server: LoopbackWatsonServer,
    radiographs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = ["detect", str(radiographs), *watson_args(server)]
    # stderr to a file or pipe (CliRunner's): a log gets no bar redrawn line by line.
    logged = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "log")])
    assert logged.exit_code == 0, logged.output
    assert "3/3" not in logged.stderr
    # As on a terminal:
    monkeypatch.setattr(cli_module, "_show_progress", lambda no_progress=False: not no_progress)
    shown = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a")])
    assert "3/3" in shown.stderr
    hidden = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "b"), "--no-progress"])
    assert "3/3" not in hidden.stderr


def test_local_detector_needs_a_model(radiographs: Path, tmp_path: Path) -> None:
    result = run(["detect", str(radiographs), "--out", str(tmp_path), "--detector", "local"])
    assert result.exit_code != 0
    assert "--model" in result.output


def test_a_model_file_for_a_detector_that_loads_none_says_what_model_is_for(
    radiographs: Path, tmp_path: Path
) -> None:
    # The example plugin's detector takes options, not a saved model.
    pytest.importorskip("covidcxr_example_plugin")
    model = tmp_path / "weights.keras"
    model.write_bytes(b"not a model")
    out = tmp_path / "out"
    args = ["detect", str(radiographs), "--out", str(out), "--detector", "bright-region"]
    result = run([*args, "--model", str(model)])
    assert result.exit_code != 0
    assert "detector 'bright-region' takes no model file" in result.output
    assert "--detector-option" in result.output


def test_detect_accepts_a_single_radiograph_file(
    server: LoopbackWatsonServer, radiographs: Path, tmp_path: Path
) -> None:
    single = radiographs / "COVID" / "b.png"
    result = run(["detect", str(single), "--out", str(tmp_path / "one"), *watson_args(server)])
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "one" / "detections.json").read_text())
    assert [image["png"] for image in document["images"]] == ["b.png"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", PARQUET])
def test_detect_also_writes_a_table_with_one_row_per_radiograph(
    server: LoopbackWatsonServer, radiographs: Path, tmp_path: Path, suffix: str
) -> None:
    table = tmp_path / f"detections{suffix}"
    args = ["detect", str(radiographs), "--out", str(tmp_path / "out"), "-o", str(table)]
    result = run([*args, *watson_args(server)])
    assert result.exit_code == 0, result.output
    if suffix == ".csv":
        with table.open(newline="") as handle:
            rows: list[dict[str, Any]] = list(csv.DictReader(handle))
        for row in rows:
            row["detections"] = json.loads(row["detections"])
    elif suffix == ".jsonl":
        rows = [json.loads(line) for line in table.read_text().splitlines()]
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(table).to_pylist()
    assert [Path(row["path"]).name for row in rows] == ["a.png", "b.png", "a.png"]
    assert rows[0]["detections"][0]["box"] == {"x": 4.0, "y": 6.0, "width": 20.0, "height": 12.0}
    written = table.read_bytes()
    again = run(
        ["detect", str(radiographs), "--out", str(tmp_path / "elsewhere"), "-o", str(table),
         *watson_args(server)]
    )  # fmt: skip
    # Refused, naming the table, before anything is written.
    assert isinstance(again.exception, OutputExistsError)
    assert str(table) in str(again.exception)
    assert not (tmp_path / "elsewhere").exists()
    assert table.read_bytes() == written


@pytest.mark.filterwarnings("ignore::covidcxr.sources.SkippedItemsWarning")
def test_detect_on_error_skip_leaves_an_unreadable_file_out_and_lists_it(
    server: LoopbackWatsonServer, radiographs: Path, tmp_path: Path
) -> None:
    broken = radiographs / "NORMAL" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "out"
    failed = run(["detect", str(radiographs), "--out", str(out), *watson_args(server)])
    assert failed.exit_code == 1
    result = run(
        ["detect", str(radiographs), "--out", str(out), "--on-error", "skip", "--overwrite",
         *watson_args(server)]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "3 lesion(s) in 3 image(s)" in result.output
    assert "skipped 1 item(s)" in result.stderr
    with (out / "skipped.csv").open(newline="") as handle:
        assert [row["path"] for row in csv.DictReader(handle)] == [str(broken)]


def test_detect_accepts_several_radiograph_files(
    server: LoopbackWatsonServer, radiographs: Path, tmp_path: Path
) -> None:
    files = [radiographs / "COVID" / "b.png", radiographs / "NORMAL" / "a.png"]
    out = tmp_path / "two"
    result = run(["detect", *map(str, files), "--out", str(out), *watson_args(server)])
    assert result.exit_code == 0, result.output
    document = json.loads((out / "detections.json").read_text())
    assert [image["png"] for image in document["images"]] == ["COVID__b.png", "NORMAL__a.png"]


def test_output_names_are_unique_per_radiograph_whatever_the_file_names(
    server: LoopbackWatsonServer, tmp_path: Path
) -> None:
    # Issue 12, item 10: COVID/1.png, Normal/1.png and Normal/1-1.png once mapped to
    # colliding names ("1.png", "1-1.png", "1-1.png").
    root = tmp_path / "scans"
    for index, name in enumerate(("COVID/1.png", "Normal/1.png", "Normal/1-1.png")):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        pixels = np.full((40, 48), 40 + 60 * index, np.uint8)
        pixels[5:15, 5:20] = 250
        cv2.imwrite(str(root / name), pixels)
    out = tmp_path / "out"
    for attempt in ("first", "again"):
        flags = ["--overwrite"] if attempt == "again" else []
        result = run(["detect", str(root), "--out", str(out), *flags, *watson_args(server)])
        assert result.exit_code == 0, result.output
        document = json.loads((out / "detections.json").read_text())
        pngs = [image["png"] for image in document["images"]]
        assert len(set(pngs)) == 3
        assert sorted(p.name for p in out.glob("*.png")) == sorted(pngs)


def test_a_saved_local_detector_gets_the_preprocessing_it_was_trained_with(
    tmp_path: Path,
) -> None:
    """Issue 12, item 6: raw radiographs are prepared as the detector's training images."""
    from covidcxr.detect import LocalDetector
    from covidcxr.phantoms import generate_phantoms, write_phantom_dataset
    from covidcxr.preprocess import GaussianClahePreprocessor, recorded_preprocessor
    from covidcxr.sources import FolderSource

    clahe = GaussianClahePreprocessor(output_size=48)
    # Trained enough that its maps depend on the input; a low threshold makes every map
    # one component, scored by its mean probability.
    detector = LocalDetector(
        input_size=32,
        base_filters=4,
        depth=1,
        epochs=10,
        learning_rate=1e-2,
        augment=False,
        threads=2,
        mask_threshold=0.01,
    )
    detector.fit([clahe(x) for x in generate_phantoms(4, size=64, seed=40)])
    model = tmp_path / "detector.zip"
    detector.save(model)
    data = write_phantom_dataset(tmp_path / "cxr", 2, size=64, seed=41)
    out = tmp_path / "out"
    result = run(["detect", str(data), "--out", str(out), "--model", str(model), "--no-progress"])
    assert result.exit_code == 0, result.output
    written = json.loads((out / "detections.json").read_text())
    loaded = LocalDetector.load(model)
    prepare = recorded_preprocessor(loaded)
    assert prepare is not None
    xrays = list(FolderSource(data))
    expected = loaded.detect_batch([prepare(x) for x in xrays])
    raw = loaded.detect_batch(xrays)
    by_id = {record["id"]: record for record in written["images"]}
    for xray, found, unprepared in zip(xrays, expected, raw, strict=True):
        scores = [d["score"] for d in by_id[xray.id]["detections"]]
        assert scores == pytest.approx([d.score for d in found])
        assert scores != pytest.approx([d.score for d in unprepared])
        assert (by_id[xray.id]["height"], by_id[xray.id]["width"]) == xray.shape


def test_a_whole_model_writes_the_gates_verdict_and_no_lesions_for_a_rejected_radiograph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The shipped model, offline: a blank frame is refused by its input gate.
    scans = tmp_path / "scans"
    scans.mkdir()
    cv2.imwrite(str(scans / "blank.png"), np.full((64, 64), 128, np.uint8))
    table = tmp_path / "boxes.csv"
    main(["detect", str(scans), "--model", "covid-qu-ex", "--out", str(tmp_path / "out"),
          "-o", str(table)])  # fmt: skip
    [row] = list(csv.DictReader(table.open(encoding="utf-8")))
    assert row["status"] == "rejected"
    assert row["reason"].startswith("blank image")
    assert (row["n_lesions"], row["detections"]) == ("", "")
    document = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert document["images"][0]["status"] == "rejected"
    assert "1 radiograph(s): 0 diagnosed, 0 uncertain, 1 rejected" in capsys.readouterr().out


def test_a_mistyped_detector_file_is_not_taken_for_a_whole_model(
    radiographs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["detect", str(radiographs), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--detector", "gradcam", "--model", str(tmp_path / "typo.keras")])
    err = capsys.readouterr().err
    assert exit_.value.code == 1
    assert "typo.keras: no such file or folder, nor a shipped model" in err
    assert "does not apply" not in err
