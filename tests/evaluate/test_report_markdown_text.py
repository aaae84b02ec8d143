"""The Markdown report shows ids, labels and notes as text, one table row per line."""

from __future__ import annotations

from pathlib import Path

from covidcxr import GroundTruth, Prediction
from covidcxr.evaluate import ClassificationEvaluator, write_report

HOSTILE = "<img src=x onerror=alert(1)>|a\r\nb\rc"


def _markdown(tmp_path: Path) -> str:
    truths = [
        GroundTruth("a", "normal"),
        GroundTruth("b", "pneumonia"),
        GroundTruth(HOSTILE, "normal"),
    ]
    predictions = [
        Prediction("a", "normal", {"normal": 0.9, "pneumonia": 0.1}),
        Prediction("b", "pneumonia", {"normal": 0.2, "pneumonia": 0.8}),
        Prediction(HOSTILE, "rejected", {}, status="rejected", reason="not a radiograph"),
    ]
    report = ClassificationEvaluator(n_bootstrap=0).evaluate(
        truths, predictions, classes=["normal", "pneumonia"], detections=False
    )
    files = write_report(
        report, tmp_path / "report", notes=["<script>x()</script>\n# not a heading"], title="T<i>"
    )
    return files.markdown.read_bytes().decode("utf-8")


def test_markdown_report_passes_no_raw_html_from_ids_notes_or_title(tmp_path: Path) -> None:
    markdown = _markdown(tmp_path)
    assert "<img" not in markdown.replace("\\<img", "")
    assert "<script>" not in markdown.replace("\\<script\\>", "")
    assert "# T\\<i\\>" in markdown
    assert "\n# not a heading" not in markdown


def test_markdown_table_row_of_an_id_with_line_breaks_stays_one_line(tmp_path: Path) -> None:
    markdown = _markdown(tmp_path)
    assert "\r" not in markdown
    (row,) = [line for line in markdown.split("\n") if "onerror" in line and line.startswith("|")]
    assert row == "| 1 | \\<img src=x onerror=alert(1)\\>\\|a b c |"
