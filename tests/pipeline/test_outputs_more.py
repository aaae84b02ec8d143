"""Prediction, detection and skipped tables stay safe to open whatever the ids hold."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from covidcxr import Box, Detection, Prediction, XRay
from covidcxr.pipeline import detections_table, write_predictions, write_skipped
from covidcxr.sources import Skipped

PROBABILITIES = {"normal": 0.75, "covid-19": 0.25}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_predictions_csv_does_not_let_an_id_open_a_spreadsheet_formula(
    tmp_path: Path, start: str
) -> None:
    image_id = f'{start}HYPERLINK("http://evil.example","x").png'
    path = tmp_path / "predictions.csv"
    write_predictions([Prediction(image_id, "normal", PROBABILITIES)], path, note="=1+1")
    (row,) = _rows(path)
    assert row["id"] == f"'{image_id}"
    assert row["model_note"] == "'=1+1"
    assert row["probability"] == "0.75"  # numbers are left as they are


def test_plain_ids_and_negative_numbers_are_written_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    prediction = Prediction("a-1.png", "normal", PROBABILITIES, ood_score=-2.5)
    write_predictions([prediction], path)
    (row,) = _rows(path)
    assert (row["id"], row["ood_score"]) == ("a-1.png", "-2.5")


def test_detections_and_skipped_csv_guard_formula_cells(tmp_path: Path) -> None:
    path = tmp_path / "detections.csv"
    with detections_table(path) as table:
        table.add(
            XRay(np.zeros((40, 48), np.uint8), "@SUM(1+1).png"),
            [Detection(Box(4, 6, 20, 12), "opacity", 0.8)],
        )
    (row,) = _rows(path)
    assert row["id"] == "'@SUM(1+1).png"
    assert json.loads(row["detections"])[0]["label"] == "opacity"
    skipped = tmp_path / "skipped.csv"
    write_skipped([Skipped("-2+3.png", "=cmd|' /C calc'!A0")], skipped)
    (row,) = _rows(skipped)
    assert row == {"path": "'-2+3.png", "reason": "'=cmd|' /C calc'!A0"}


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_jsonl_rows_stay_one_line_whatever_the_id_holds(tmp_path: Path, separator: str) -> None:
    path = tmp_path / "predictions.jsonl"
    ids = [f"a{separator}b\n\u00e9.png", "c.png"]
    write_predictions([Prediction(i, "normal", PROBABILITIES) for i in ids], path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == ids
