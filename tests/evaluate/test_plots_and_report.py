"""Figures and the HTML/Markdown/JSON report."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import attrs
import numpy as np
import pytest
from matplotlib.colors import to_rgb

from covidcxr import Box, Detection, GroundTruth, Prediction
from covidcxr.detect import DETECTION_COLOR, TRUTH_COLOR
from covidcxr.errors import ConfigurationError, OutputExistsError
from covidcxr.evaluate import (
    UNCERTAIN,
    CalibrationSummary,
    ClassificationEvaluator,
    EvaluationReport,
    ReportFiles,
    classification_metrics,
    figure_to_png,
    plot_calibration,
    plot_confusion_matrix,
    plot_image_grid,
    plot_precision_recall_curve,
    plot_reliability_diagram,
    plot_risk_coverage,
    plot_roc_curves,
    plot_training_history,
    reliability_curve,
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
        report,
        tmp_path / "out",
        history=HISTORY,
        images=images,
        image_classes=["covid-19", "normal"],
        notes=["Synthetic."],
    )
    names = {
        "confusion_matrix",
        "roc_curves",
        "reliability",
        "risk_coverage",
        "precision_recall",
        "training_history",
        "annotated_images",
        "example_covid-19",
        "example_normal",
    }
    assert {p.stem for p in files.figures} == names
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in files.figures)
    assert json.loads(files.json.read_text()) == report.to_dict()
    markdown = files.markdown.read_text()
    assert "![Confusion matrix](figures/confusion_matrix.png)" in markdown
    assert report.data_fingerprint is not None
    assert report.data_fingerprint in markdown


@pytest.fixture(scope="module")
def small_report_files(tmp_path_factory: pytest.TempPathFactory) -> ReportFiles:
    """``small_report()`` written with :data:`HISTORY`, once for the tests that only read it.

    Drawing a report's figures costs seconds; tests that change or rewrite a report write
    their own.
    """
    return write_report(small_report(), tmp_path_factory.mktemp("report"), history=HISTORY)


@pytest.fixture(scope="module")
def undetected_report_files(tmp_path_factory: pytest.TempPathFactory) -> ReportFiles:
    """``small_report(detections=False)`` written once, for the tests that only read it."""
    return write_report(small_report(detections=False), tmp_path_factory.mktemp("report"))


def test_html_report_is_self_contained_and_escapes_text(small_report_files: ReportFiles) -> None:
    files = small_report_files
    page = files.html.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # three classification figures, risk-coverage, the PR curve, the history
    assert len(images) == 6
    assert all(base64.b64decode(data).startswith(PNG_MAGIC) for data in images)
    assert 'src="http' not in page
    assert "toy &lt;b&gt;" in page  # configuration text is escaped, not interpreted
    assert "mAP@[0.5:0.95]" in page
    assert "Accuracy" in page


def test_report_without_detections_has_no_detection_section(
    undetected_report_files: ReportFiles,
) -> None:
    files = undetected_report_files
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


def test_image_grid_wraps_captions_inside_the_figure() -> None:
    # The old grid let a long caption in the last column run past the right edge.
    caption = "true pneumonia / predicted covid-19 (0.87), a caption longer than its tile"
    figure = plot_image_grid([np.zeros((64, 64, 3), np.uint8)] * 3, [caption] * 3, columns=3)
    figure_to_png(figure)  # lays the figure out
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    for axes in figure.axes:
        extent = axes.title.get_window_extent(renderer)
        assert figure.bbox.x0 <= extent.x0
        assert extent.x1 <= figure.bbox.x1
        assert extent.y1 <= figure.bbox.y1
    assert "\n" in figure.axes[2].get_title()
    large = plot_image_grid([np.zeros((64, 64, 3), np.uint8)], [caption], tile_inches=6.0)
    figure_to_png(large)
    extent = large.axes[0].title.get_window_extent(large.canvas.get_renderer())  # type: ignore[attr-defined]
    assert extent.y1 <= large.bbox.y1


def test_image_grid_legend_names_each_box_colour() -> None:
    legend = {"ground truth": TRUTH_COLOR, "detection": DETECTION_COLOR}
    figure = plot_image_grid([np.zeros((8, 8, 3), np.uint8)], legend=legend)
    (shown,) = figure.legends
    assert [t.get_text() for t in shown.get_texts()] == ["ground truth", "detection"]
    edges = [tuple(round(c * 255) for c in to_rgb(p.get_edgecolor())) for p in shown.get_patches()]
    assert edges == [TRUTH_COLOR, DETECTION_COLOR]


def test_report_shows_the_box_legend_and_one_large_example_per_class(tmp_path: Path) -> None:
    images = [np.full((12, 12, 3), v, np.uint8) for v in (0, 60, 120, 180)]
    files = write_report(
        small_report(),
        tmp_path,
        images=images,
        image_titles=["a", "b", "c", "d"],
        image_classes=["covid-19", "normal", "covid-19", "pneumonia"],
    )
    examples = sorted(p.stem for p in files.figures if p.stem.startswith("example_"))
    assert examples == ["example_covid-19", "example_normal", "example_pneumonia"]
    page = files.html.read_text()
    assert '<span class="swatch" style="border-color: #00dc5a"></span>ground truth' in page
    assert '<span class="swatch" style="border-color: #ff8c00"></span>detection' in page
    assert "<figcaption>Example: normal" in page
    markdown = files.markdown.read_text()
    assert "![Example: pneumonia](figures/example_pneumonia.png)" in markdown
    assert "Boxes: ground truth: #00dc5a outline; detection (with its score): #ff8c00" in markdown


def test_report_refuses_image_classes_that_do_not_match_the_images(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="1 image classes were given for 2 images"):
        write_report(
            small_report(),
            tmp_path,
            images=[np.zeros((8, 8, 3), np.uint8)] * 2,
            image_classes=["normal"],
        )


def test_precision_recall_curve_follows_the_ranked_detections() -> None:
    report = small_report()
    assert report.detection is not None
    curve = report.detection.pr_curve
    assert curve is not None
    assert curve.average_precision == report.detection.ap50
    axes = plot_precision_recall_curve(report.detection).axes[0]
    recall = np.asarray(axes.lines[0].get_xdata()).tolist()
    assert recall == [0.0, *curve.recall]
    assert axes.get_title() == "Detection precision-recall at IoU 0.5 (AP 1.000)"


def test_report_has_the_precision_recall_figure(small_report_files: ReportFiles) -> None:
    files = small_report_files
    assert "precision_recall" in {p.stem for p in files.figures}
    assert "](figures/precision_recall.png)" in files.markdown.read_text()
    assert "Detection precision-recall curve at IoU 0.5" in files.html.read_text()


def perfect_report(n_per_class: int = 20) -> EvaluationReport:
    truths = [GroundTruth(f"{c}-{i}.png", c) for c in CLASSES for i in range(n_per_class)]
    predictions = [
        Prediction(t.id, str(t.label), {c: float(c == t.label) for c in CLASSES}) for t in truths
    ]
    return ClassificationEvaluator(n_bootstrap=100).evaluate(
        truths, predictions, classes=CLASSES, detections=False
    )


def test_report_never_prints_a_zero_width_interval_and_names_each_method(
    tmp_path: Path,
) -> None:
    # 60 of 60 right: the old report said "100.0% (100.0% to 100.0%)".
    files = write_report(perfect_report(), tmp_path)
    for text in (files.html.read_text(), files.markdown.read_text()):
        assert "(100.0% to 100.0%)" not in text
        assert "(1.000 to 1.000)" not in text
        assert "100.0% (94.0% to 100.0%)" in text  # accuracy, Wilson
        assert "100.0% (CI n/a†)" in text  # macro F1: the bootstrap did not vary
        assert "Wilson score" in text
        assert "stratified percentile bootstrap intervals (100 resamples, seed 0)" in text
    markdown = files.markdown.read_text()
    assert "| Accuracy | 100.0% (94.0% to 100.0%) | Wilson score |" in markdown
    assert "| Macro F1 | 100.0% (CI n/a†) | bootstrap |" in markdown
    assert "| Brier score | 0.000 | none |" in markdown


def test_report_writes_missing_figures_as_n_a(tmp_path: Path) -> None:
    truths = [GroundTruth("a.png", "normal", ()), GroundTruth("b.png", "normal", ())]
    predictions = [Prediction(t.id, "normal", {"normal": 1.0, "pneumonia": 0.0}) for t in truths]
    report = ClassificationEvaluator(n_bootstrap=0).evaluate(
        truths, predictions, classes=("normal", "pneumonia")
    )
    assert report.detection is not None
    files = write_report(report, tmp_path)
    for text in (files.html.read_text(), files.markdown.read_text()):
        assert re.search(r"\b(None|nan|NaN|null)\b", text) is None
    assert "| AP@0.5 (VOC, all points) | n/a |" in files.markdown.read_text()


def test_configuration_table_lists_every_value(tmp_path: Path) -> None:
    report = attrs.evolve(
        small_report(detections=False),
        configuration={
            "classifier": {"name": "vgg19", "epochs": 30, "weights": None},
            "training_data_fingerprint": None,
        },
    )
    markdown = write_report(report, tmp_path).markdown.read_text()
    assert "| classifier | epochs | 30 |" in markdown
    assert "| classifier | weights | none |" in markdown
    assert "| training_data_fingerprint |  | none |" in markdown


# --- calibration, risk-coverage and abstentions (issue 13) ---------------------------------


def calibrated_report() -> EvaluationReport:
    """``small_report`` with an uncalibrated "before" curve, as the Pipeline adds it."""
    report = small_report(detections=False)
    assert report.calibration is not None
    sharp = np.eye(3)[[0, 1, 1, 1, 2, 0, 0, 1, 2]]  # over-confident and partly wrong
    truth = [0, 0, 1, 1, 2, 2, 0, 1, 2]
    before = reliability_curve(sharp, truth, n_bins=10)
    return attrs.evolve(
        report, calibration=attrs.evolve(report.calibration, before=before, temperature=1.7)
    )


def test_calibration_figure_draws_before_after_and_the_diagonal() -> None:
    report = calibrated_report()
    assert report.calibration is not None
    labels = [str(line.get_label()) for line in plot_calibration(report.calibration).axes[0].lines]
    assert labels[0].startswith("before calibration (ECE ")
    assert labels[1].startswith("after calibration (ECE ")
    assert labels[2] == "perfect calibration"
    only_after = CalibrationSummary(after=report.calibration.after)
    assert len(plot_calibration(only_after).axes[0].lines) == 2


def test_risk_coverage_figure_follows_the_curve() -> None:
    report = small_report(detections=False)
    assert report.risk_coverage is not None
    axes = plot_risk_coverage(report.risk_coverage).axes[0]
    assert np.asarray(axes.lines[0].get_xdata()).tolist()[1:] == list(report.risk_coverage.coverage)
    assert figure_to_png(axes.figure).startswith(PNG_MAGIC)  # type: ignore[arg-type]


def test_report_shows_ece_before_and_after_calibration(tmp_path: Path) -> None:
    report = calibrated_report()
    files = write_report(report, tmp_path / "out")
    assert {"calibration", "risk_coverage"} <= {p.stem for p in files.figures}
    markdown = files.markdown.read_text()
    assert report.calibration is not None
    assert report.calibration.before is not None
    before = f"{report.calibration.before.expected_calibration_error:.3f}"
    after = f"{report.calibration.after.expected_calibration_error:.3f}"
    assert f"| Expected calibration error (ECE) | {before} | {after} |" in markdown
    assert "| Temperature | 1 (none) | 1.700 |" in markdown
    assert "## Risk and coverage" in markdown
    assert "Reliability before and after calibration" in files.html.read_text()
    data = json.loads(files.json.read_text())
    assert data["calibration"]["temperature"] == 1.7
    assert data["calibration"]["before"]["counts"] == list(report.calibration.before.counts)


def test_report_shows_the_class_biases_of_a_bias_corrected_calibration(tmp_path: Path) -> None:
    report = small_report(detections=False)
    assert report.calibration is not None
    classes = ["covid-19", "normal", "pneumonia"]
    rows = np.full((report.calibration.after.n_items, 3), 1 / 3)
    labels = [classes[i % 3] for i in range(len(rows))]
    biased = report.with_calibration_before(
        rows, labels, classes=classes, temperature=1.2, biases=[0.0, -0.52, 0.25]
    )
    assert biased.calibration is not None
    assert biased.calibration.biases == {"covid-19": 0.0, "normal": -0.52, "pneumonia": 0.25}
    files = write_report(biased, tmp_path / "out")
    markdown = files.markdown.read_text()
    assert "| Class biases | 0 (none) | covid-19 +0.000, normal -0.520, pneumonia +0.250 |" in (
        markdown
    )
    assert json.loads(files.json.read_text())["calibration"]["biases"]["normal"] == -0.52
    # A plain temperature adds no biases entry to the JSON.
    assert "biases" not in report.to_dict()["calibration"]
    with pytest.raises(ConfigurationError, match="2 class bias"):
        report.with_calibration_before(rows, labels, classes=classes, biases=[0.0, 1.0])


def test_report_without_a_before_curve_says_so_and_draws_no_comparison(
    undetected_report_files: ReportFiles,
) -> None:
    files = undetected_report_files
    assert "calibration" not in {p.stem for p in files.figures}
    markdown = files.markdown.read_text()
    assert "| Expected calibration error (ECE) | n/a |" in markdown
    assert "were not supplied" in markdown


def test_report_without_the_new_sections_still_renders(tmp_path: Path) -> None:
    report = attrs.evolve(small_report(), calibration=None, risk_coverage=None, decisions=None)
    files = write_report(report, tmp_path / "out")
    stems = {p.stem for p in files.figures}
    assert not stems & {"calibration", "risk_coverage"}
    markdown = files.markdown.read_text()
    assert "## Calibration" not in markdown
    assert "## Risk and coverage" not in markdown
    assert json.loads(files.json.read_text())["calibration"] is None


def test_report_shows_abstentions_covered_and_overall(tmp_path: Path) -> None:
    report = small_report(detections=False)
    truths = [GroundTruth("a", "normal"), GroundTruth("b", "pneumonia"), GroundTruth("c", "normal")]
    predictions = [
        Prediction("a", "normal", {"covid-19": 0.1, "normal": 0.8, "pneumonia": 0.1}),
        Prediction("b", "normal", {"covid-19": 0.1, "normal": 0.6, "pneumonia": 0.3}),
        Prediction(
            "c",
            UNCERTAIN,
            {"covid-19": 0.3, "normal": 0.4, "pneumonia": 0.3},
            status=UNCERTAIN,
        ),
    ]
    report = ClassificationEvaluator(n_bootstrap=0).evaluate(
        truths, predictions, classes=CLASSES, detections=False
    )
    markdown = write_report(report, tmp_path / "out").markdown.read_text()
    assert "## Decisions as given" in markdown
    # As given, then the most probable class (argmax: normal, normal, normal).
    assert "| Abstained ('uncertain') | 1 | 0 |" in markdown
    assert "| Accuracy on the answered images | 50.0% | 66.7% |" in markdown
    assert "| Accuracy overall (abstentions counted wrong) | 33.3% | 66.7% |" in markdown
    assert "| Sensitivity [normal] | 50.0% | 100.0% |" in markdown
    assert "| Specificity [normal] | 0.0% | 0.0% |" in markdown
    assert "1 of 3 prediction(s) abstained" in markdown


def test_plain_report_has_no_decisions_table(small_report_files: ReportFiles) -> None:
    markdown = small_report_files.markdown.read_text()
    assert "Decisions as given" not in markdown


def test_report_lists_the_radiographs_the_gate_refused(tmp_path: Path) -> None:
    report = attrs.evolve(small_report(), rejected=[f"noise-{i}.png" for i in range(52)])
    markdown = write_report(report, tmp_path / "out").markdown.read_text()
    assert "## Refused by the input gate (52)" in markdown
    assert "| 1 | noise-0.png |" in markdown
    assert "| 50 | noise-49.png |" in markdown
    assert "noise-50.png" not in markdown
    assert "and 2 more (every id is in report.json)" in markdown


def test_report_without_refusals_has_no_gate_table(small_report_files: ReportFiles) -> None:
    markdown = small_report_files.markdown.read_text()
    assert "Refused by the input gate" not in markdown
