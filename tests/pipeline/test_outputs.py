"""Prediction and detection tables: CSV, JSON Lines and Parquet, written as rows arrive."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from covidcxr import Box, Detection, Prediction, XRay
from covidcxr.errors import ConfigurationError, OutputExistsError
from covidcxr.pipeline import (
    detections_table,
    output_format,
    skipped_path_for,
    write_predictions,
    write_skipped,
)
from covidcxr.sources import Skipped

NEEDS_PYARROW = pytest.mark.skipif(
    importlib.util.find_spec("pyarrow") is None, reason="needs the parquet extra (pyarrow)"
)
PARQUET = pytest.param(".parquet", marks=NEEDS_PYARROW)
CLASSES = ("covid-19", "normal", "pneumonia")
LESION = Detection(Box(4, 6, 20, 12), "opacity", 0.8)
LESION_DICT = {
    "label": "opacity",
    "score": 0.8,
    "box": {"x": 4.0, "y": 6.0, "width": 20.0, "height": 12.0},
}


def prediction(i: int) -> Prediction:
    probabilities = dict(zip(CLASSES, np.roll([0.7, 0.2, 0.1], i % 3), strict=True))
    label = max(probabilities, key=probabilities.__getitem__)
    return Prediction(f"scans/{i}.png", label, probabilities, [LESION] if i % 2 else [])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_csv_has_one_flat_row_per_image_with_every_class_probability(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    assert write_predictions((prediction(i) for i in range(3)), path) == 3
    rows = read_csv(path)
    assert list(rows[0]) == [
        "id", "label", "status", "probability", "p_covid-19", "p_normal", "p_pneumonia",
        "ood_score", "reason", "n_lesions", "detections",
    ]  # fmt: skip
    assert [row["id"] for row in rows] == ["scans/0.png", "scans/1.png", "scans/2.png"]
    second = rows[1]
    assert second["label"] == "normal"
    assert float(second["probability"]) == pytest.approx(0.7)
    assert float(second["p_covid-19"]) == pytest.approx(0.1)
    assert second["n_lesions"] == "1"
    assert json.loads(second["detections"]) == [LESION_DICT]
    assert json.loads(rows[0]["detections"]) == []


def test_jsonl_lines_are_the_records_json_form(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    predictions = [prediction(i) for i in range(4)]
    assert write_predictions(predictions, path) == 4
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [p.to_dict() for p in predictions]


@NEEDS_PYARROW
def test_parquet_keeps_boxes_as_nested_records(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "predictions.parquet"
    assert write_predictions((prediction(i) for i in range(5)), path) == 5
    table = pq.read_table(path)
    assert table.column_names[:7] == [
        "id", "label", "status", "probability", "p_covid-19", "p_normal", "p_pneumonia",
    ]  # fmt: skip
    rows = table.to_pylist()
    assert rows[1]["detections"] == [LESION_DICT]
    assert rows[1]["p_normal"] == pytest.approx(0.7)
    assert [row["n_lesions"] for row in rows] == [0, 1, 0, 1, 0]


@NEEDS_PYARROW
def test_a_rejected_radiograph_has_null_lesions_in_parquet(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from covidcxr.records import REJECTED

    rejected = Prediction("r.png", REJECTED, {}, status=REJECTED, reason="blank image")
    path = tmp_path / "predictions.parquet"
    assert write_predictions([prediction(1), rejected], path) == 2
    rows = pq.read_table(path).to_pylist()
    assert [(row["n_lesions"], row["detections"]) for row in rows] == [
        (1, [LESION_DICT]),
        (None, None),
    ]


@NEEDS_PYARROW
def test_parquet_is_written_in_row_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    from covidcxr.pipeline import _outputs

    monkeypatch.setattr(_outputs, "_ROW_GROUP", 4)
    path = tmp_path / "predictions.parquet"
    write_predictions((prediction(i) for i in range(10)), path)
    metadata = pq.ParquetFile(path).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [4, 4, 2]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", PARQUET])
def test_rows_are_written_as_they_come_not_held(tmp_path: Path, suffix: str) -> None:
    alive: list[weakref.ref[Prediction]] = []
    most_alive = 0

    def stream() -> Iterator[Prediction]:
        nonlocal most_alive
        for i in range(300):
            made = prediction(i)
            alive.append(weakref.ref(made))
            most_alive = max(most_alive, sum(ref() is not None for ref in alive))
            yield made
            del made

    assert write_predictions(stream(), tmp_path / f"p{suffix}") == 300
    assert most_alive <= 3


def test_an_existing_file_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    path.write_text("mine\n")
    read: list[int] = []

    def stream() -> Iterator[Prediction]:
        read.append(1)
        yield prediction(0)

    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_predictions(stream(), path)
    assert read == []
    assert path.read_text() == "mine\n"
    assert write_predictions(stream(), path, overwrite=True) == 1
    assert len(read_csv(path)) == 1


@NEEDS_PYARROW
def test_a_failure_half_way_leaves_no_file_behind(tmp_path: Path) -> None:
    def stream() -> Iterator[Prediction]:
        yield prediction(0)
        raise RuntimeError("the model fell over")

    with pytest.raises(RuntimeError):
        write_predictions(stream(), tmp_path / "predictions.parquet")
    assert list(tmp_path.iterdir()) == []


def test_the_format_comes_from_the_suffix_or_is_named() -> None:
    assert output_format("a.CSV") == "csv"
    assert output_format("a.ndjson") == "jsonl"
    assert output_format("a.out", "parquet") == "parquet"
    with pytest.raises(ConfigurationError, match=r"\.csv, \.jsonl or \.parquet"):
        output_format("a.txt")
    with pytest.raises(ConfigurationError, match="xlsx"):
        output_format("a.csv", "xlsx")


def test_parquet_without_pyarrow_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ConfigurationError, match=r"covidcxr\[parquet\]"):
        write_predictions([prediction(0)], tmp_path / "p.parquet")
    assert list(tmp_path.iterdir()) == []


def test_predictions_over_other_classes_are_refused(tmp_path: Path) -> None:
    odd = Prediction("x.png", "normal", {"normal": 0.6, "pneumonia": 0.4})
    with pytest.raises(ConfigurationError, match=r"x\.png"):
        write_predictions([prediction(0), odd], tmp_path / "p.csv")


def test_no_predictions_make_a_table_with_only_the_given_columns(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    assert write_predictions([], path, classes=CLASSES) == 0
    assert path.read_text().splitlines() == [
        "id,label,status,probability,p_covid-19,p_normal,p_pneumonia,ood_score,reason,"
        "n_lesions,detections"
    ]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", PARQUET])
def test_detections_table_has_one_row_per_radiograph(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"detections{suffix}"
    image = XRay(np.zeros((40, 48), np.uint8), "a.png", meta={"path": "/data/a.png"})
    with detections_table(path) as table:
        table.add(image, [LESION])
        table.add(XRay(np.zeros((30, 30), np.uint8), "b.png"), [])
        assert table.rows == 2
    rows: list[dict[str, Any]]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    elif suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    else:
        rows = [
            {
                **row,
                "detections": json.loads(row["detections"]),
                "width": int(row["width"]),
                "height": int(row["height"]),
                "path": row["path"] or None,  # CSV has no null: an empty field
            }
            for row in read_csv(path)
        ]
    assert [(r["id"], r["path"], r["width"], r["height"]) for r in rows] == [
        ("a.png", "/data/a.png", 48, 40),
        ("b.png", None, 30, 30),
    ]
    assert rows[0]["detections"] == [LESION_DICT]


def test_skipped_items_are_listed_with_their_reasons(tmp_path: Path) -> None:
    path = skipped_path_for(tmp_path / "predictions.parquet")
    assert path == tmp_path / "predictions.skipped.csv"
    items = [Skipped("COVID/a.png", "truncated PNG"), Skipped("b, c.png", 'say "no"')]
    assert write_skipped(items, path) == 2
    assert read_csv(path) == [
        {"path": "COVID/a.png", "reason": "truncated PNG"},
        {"path": "b, c.png", "reason": 'say "no"'},
    ]


def test_rejected_and_uncertain_predictions_have_their_status_and_reason(tmp_path: Path) -> None:
    """A radiograph the gate refused has no probabilities; an abstention keeps them."""
    from covidcxr.records import REJECTED, UNCERTAIN

    rejected = Prediction("r.png", REJECTED, {}, status=REJECTED, ood_score=4.2,
                          reason="blank image")  # fmt: skip
    uncertain = Prediction("u.png", UNCERTAIN, {"covid-19": 0.4, "normal": 0.35,
                           "pneumonia": 0.25}, status=UNCERTAIN, ood_score=0.1,
                           reason="confidence 0.40 is below 0.55")  # fmt: skip
    path = tmp_path / "p.csv"
    # The classes come from the first prediction that has probabilities.
    assert write_predictions([rejected, uncertain], path) == 2
    rows = read_csv(path)
    assert [r["status"] for r in rows] == ["rejected", "uncertain"]
    assert rows[0]["p_normal"] == ""
    assert rows[0]["probability"] == ""
    assert rows[0]["reason"] == "blank image"
    assert float(rows[0]["ood_score"]) == 4.2
    assert float(rows[1]["probability"]) == pytest.approx(0.4)
    assert list(rows[0])[4:7] == ["p_covid-19", "p_normal", "p_pneumonia"]
    # The detector never saw the rejected radiograph: no lesion count, rather than 0.
    assert (rows[0]["n_lesions"], rows[0]["detections"]) == ("", "")
    assert (rows[1]["n_lesions"], rows[1]["detections"]) == ("0", "[]")
