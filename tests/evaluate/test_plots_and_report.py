"""Figures and the HTML/Markdown/JSON report."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import attrs
import numpy as np
import pytest

from covidcxr import Box, Detection, GroundTruth, Prediction
from covidcxr.errors import ConfigurationError, OutputExistsError
from covidcxr.evaluate import (
    ClassificationEvaluator,
    EvaluationReport,
    classification_metrics,
    figure_to_png,
    plot_confusion_matrix,
    plot_image_grid,
    plot_reliability_diagram,
    plot_roc_curves,
    plot_training_history,
    write_report,
)

CLASSES = ("covid-19", "normal", "pneumonia")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HISTORY = {"loss": [1.0, 0.7, 0.5], "val_loss": [1.1, 0.9, 0.8], "accuracy": [0.4, 0.6, 0.8]}


def small_report(detections: bool = True) -> EvaluationReport:
    rng = np.random.default_rng(1)
    truth = [0, 0, 1, 1, 2, 2, 0, 1, 2]
    probs = rng.dirichlet([1, 1, 1], len(truth))
    probs[np.arange(len(truth)), truth] += 1.0
    probs /= probs.sum(axis=1, keepdims=True)
    lesion = Box(2, 2, 5, 5)
    truths = [
        GroundTruth(f"{i}.png", CLASSES[t], (lesion,) if t == 0 else ())
        for i, t in enumerate(truth)
    ]
    predictions = [
        Prediction(
            f"{i}.png",
            CLASSES[int(np.argmax(row))],
            dict(zip(CLASSES, row.tolist(), strict=True)),
            [Detection(lesion, "opacity", 0.9)] if t == 0 else [],
        )
        for i, (t, row) in enumerate(zip(truth, probs, strict=True))
    ]
    return ClassificationEvaluator(
        n_bootstrap=50, configuration={"classifier": {"name": "toy <b>"}}
    ).evaluate(truths, predictions, classes=CLASSES, detections=detections)


def test_confusion_matrix_figure_writes_count_and_row_share_in_each_cell() -> None:
    m = classification_metrics(
        ["covid-19", "covid-19", "normal"], np.eye(3)[[0, 1, 1]], CLASSES, n_bootstrap=0
    )
    texts = sorted(t.get_text() for t in plot_confusion_matrix(m).axes[0].texts)
    assert "1\n50%" in texts
    assert "1\n100%" in texts
    assert len(texts) == 9


def test_training_history_plots_training_and_validation_curves() -> None:
    figure = plot_training_history(HISTORY)
    loss, accuracy = figure.axes[0], figure.axes[1]
    assert [line.get_label() for line in loss.lines] == ["training", "validation"]
    assert np.asarray(loss.lines[1].get_ydata()).tolist() == HISTORY["val_loss"]
    assert [line.get_label() for line in accuracy.lines] == ["training"]


def test_training_history_without_curves_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="lr"):
        plot_training_history({"lr": [0.1]})


def test_roc_and_reliability_figures_render_to_png() -> None:
    report = small_report()
    assert report.classification is not None
    for figure in (
        plot_roc_curves(report.classification),
        plot_reliability_diagram(report.classification),
    ):
        assert figure_to_png(figure).startswith(PNG_MAGIC)


def test_image_grid_rejects_grayscale_images_by_index() -> None:
    with pytest.raises(ConfigurationError, match="image 1 must be an RGB uint8"):
        plot_image_grid([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8)])


def test_report_writes_html_markdown_json_and_figures(tmp_path: Path) -> None:
    report = small_report()
    images = [np.zeros((12, 12, 3), np.uint8), np.full((12, 12, 3), 200, np.uint8)]
    files = write_report(
        report, tmp_path / "out", history=HISTORY, images=images, notes=["Synthetic."]
    )
    names = {
        "confusion_matrix",
        "roc_curves",
        "reliability",
        "training_history",
        "annotated_images",
    }
    assert {p.stem for p in files.figures} == names
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in files.figures)
    assert json.loads(files.json.read_text()) == report.to_dict()
    markdown = files.markdown.read_text()
    assert "![Confusion matrix](figures/confusion_matrix.png)" in markdown
    assert report.data_fingerprint is not None
    assert report.data_fingerprint in markdown


def test_html_report_is_self_contained_and_escapes_text(tmp_path: Path) -> None:
    files = write_report(small_report(), tmp_path, history=HISTORY)
    page = files.html.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4
    assert all(base64.b64decode(data).startswith(PNG_MAGIC) for data in images)
    assert 'src="http' not in page
    assert "toy &lt;b&gt;" in page  # configuration text is escaped, not interpreted
    assert "mAP@[0.5:0.95]" in page
    assert "Accuracy" in page


def test_report_without_detections_has_no_detection_section(tmp_path: Path) -> None:
    files = write_report(small_report(detections=False), tmp_path)
    assert "Detection" not in files.markdown.read_text()


def test_the_reports_own_notes_follow_the_callers_and_are_shown_once(tmp_path: Path) -> None:
    report = attrs.evolve(small_report(detections=False), notes=["Evaluator note.", "Shared."])
    files = write_report(report, tmp_path, notes=["Caller note.", "Shared."])
    markdown = files.markdown.read_text()
    assert markdown.count("> Shared.") == 1
    positions = [markdown.index(f"> {n}") for n in ("Caller note.", "Shared.", "Evaluator note.")]
    assert positions == sorted(positions)
    assert markdown.index("> Evaluator note.") < markdown.index("## Classification summary")
    assert files.html.read_text().count('<p class="note">') == 3


def test_existing_report_is_not_overwritten_unless_asked(tmp_path: Path) -> None:
    (tmp_path / "report.html").write_text("a colleague's report")
    with pytest.raises(OutputExistsError, match=r"report\.html"):
        write_report(small_report(), tmp_path)
    assert (tmp_path / "report.html").read_text() == "a colleague's report"
    assert not (tmp_path / "report.json").exists()  # nothing half-written
    write_report(small_report(), tmp_path, overwrite=True)
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")
