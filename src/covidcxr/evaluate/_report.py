"""Write an evaluation as a self-contained HTML page, a Markdown page and JSON.

The HTML page embeds its figures as base64 PNG, so it can be mailed or archived as one
file; the Markdown page links the same figures, written beside it under ``figures/``; the
JSON holds every number. All three carry the configuration, the data fingerprint and the
software versions, so two runs can be compared.

Every interval says how it was computed (Wilson score for proportions, bootstrap for the
rest), and a missing figure or interval is written ``n/a``, never as a number or as a
zero-width interval.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import numpy as np
from attrs import field, frozen
from numpy.typing import NDArray

from covidcxr.detect import DETECTION_COLOR, TRUTH_COLOR
from covidcxr.errors import ConfigurationError
from covidcxr.evaluate._calibration import (
    UNCERTAIN,
    CalibrationSummary,
    DecisionScores,
    ReliabilityCurve,
    RiskCoverageCurve,
)
from covidcxr.evaluate._evaluator import EvaluationReport
from covidcxr.evaluate._metrics import ClassificationMetrics
from covidcxr.evaluate._plots import (
    figure_to_png,
    plot_calibration,
    plot_confusion_matrix,
    plot_image_grid,
    plot_precision_recall_curve,
    plot_reliability_diagram,
    plot_risk_coverage,
    plot_roc_curves,
    plot_training_history,
)
from covidcxr.files import output_directory, write_bytes, write_text

__all__ = ["DRAWN_BOX_LEGEND", "ReportFiles", "write_report"]

_FIGURES_DIR = "figures"

#: What the box colours of :func:`~covidcxr.detect.draw_detections` mean: the default
#: legend of the report's annotated images.
DRAWN_BOX_LEGEND: Final[Mapping[str, tuple[int, int, int]]] = MappingProxyType(
    {"ground truth": TRUTH_COLOR, "detection (with its score)": DETECTION_COLOR}
)


@frozen
class ReportFiles:
    """The files :func:`write_report` wrote."""

    html: Path
    markdown: Path
    json: Path
    figures: tuple[Path, ...]


@frozen
class _Figure:
    name: str
    caption: str
    png: bytes
    legend: Mapping[str, tuple[int, int, int]] = field(factory=dict)


@frozen
class _Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


# Marks an interval the bootstrap could not give; explained under the table.
_NO_SPREAD = "†"
_METHOD_NAMES: Final = {"wilson": "Wilson score", "bootstrap": "bootstrap"}


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1%}"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _with_interval(
    metrics: ClassificationMetrics,
    name: str,
    value: float,
    show: Callable[[float | None], str] = _pct,
) -> str:
    """``value (low to high)``; ``n/a`` for a missing interval, never a zero-width one."""
    interval = metrics.intervals.get(name)
    if interval is None or math.isnan(value):
        return show(value)
    if interval.degenerate:
        return f"{show(value)} (CI n/a{_NO_SPREAD})"
    return f"{show(value)} ({show(interval.low)} to {show(interval.high)})"


def _method(metrics: ClassificationMetrics, name: str) -> str:
    interval = metrics.intervals.get(name)
    return "none" if interval is None else _METHOD_NAMES.get(interval.method, interval.method)


def _interval_note(metrics: ClassificationMetrics) -> str:
    level = next(iter(metrics.intervals.values())).level if metrics.intervals else 0.95
    bootstrap = (
        f"{level:.0%} stratified percentile bootstrap intervals ({metrics.n_bootstrap} "
        f"resamples, seed {metrics.seed})"
        if metrics.n_bootstrap
        else "no interval (the bootstrap was switched off: n_bootstrap = 0)"
    )
    return (
        f"Intervals: accuracy, precision, recall and specificity are proportions of images "
        f"and carry {level:.0%} Wilson score intervals (denominators: all images, the "
        f"images predicted as the class, the images of the class, the images of the other "
        f"classes); macro averages, F1 and AUC carry {bootstrap}. "
        f"CI n/a{_NO_SPREAD}: every bootstrap resample gave (nearly) the same value, so the "
        "resampling says nothing about the uncertainty; no interval is shown rather than a "
        "zero-width one. n/a alone: the figure is undefined for these data."
    )


def _classification_tables(metrics: ClassificationMetrics) -> list[_Table]:
    level = next(iter(metrics.intervals.values())).level if metrics.intervals else None
    ci = f" ({level:.0%} CI)" if level is not None else ""
    macro = metrics.macro
    calibration = metrics.calibration
    figures: list[tuple[str, str, float, Callable[[float | None], str]]] = [
        ("Accuracy", "accuracy", metrics.accuracy, _pct),
        ("Macro precision", "macro_precision", macro.precision, _pct),
        ("Macro recall (sensitivity)", "macro_recall", macro.recall, _pct),
        ("Macro F1", "macro_f1", macro.f1, _pct),
        ("Macro one-vs-rest AUC", "macro_auc", macro.auc, _num),
        ("Weighted F1", "weighted_f1", metrics.weighted.f1, _pct),
        ("Expected calibration error", "ece", calibration.expected_calibration_error, _num),
        ("Brier score", "brier", calibration.brier_score, _num),
    ]
    summary = [["Images", str(metrics.n_images), "none"]]
    summary += [
        [title, _with_interval(metrics, name, value, show), _method(metrics, name)]
        for title, name, value, show in figures
    ]
    per_class = [
        [
            s.label,
            str(s.support),
            _with_interval(metrics, f"precision[{s.label}]", s.precision),
            _with_interval(metrics, f"recall[{s.label}]", s.recall),
            _with_interval(metrics, f"specificity[{s.label}]", s.specificity),
            _with_interval(metrics, f"f1[{s.label}]", s.f1),
            _with_interval(metrics, f"auc[{s.label}]", s.auc, _num),
        ]
        for s in metrics.per_class
    ]
    note = _interval_note(metrics)
    return [
        _Table("Classification summary", ["Figure", f"Value{ci}", "Interval"], summary),
        _Table(
            "Per class",
            ["Class", "Support", *(f"{h}{ci}" for h in ("Precision", "Recall", "Specificity")),
             f"F1{ci}", f"AUC{ci}"],
            per_class,
            note,
        ),
    ]  # fmt: skip


def _calibration_table(summary: CalibrationSummary) -> _Table:
    def column(curve: ReliabilityCurve | None) -> list[str]:
        if curve is None:
            return ["n/a", "n/a", "n/a"]
        return [
            _num(curve.expected_calibration_error),
            _num(curve.maximum_calibration_error),
            str(curve.n_items),
        ]

    before, after = column(summary.before), column(summary.after)
    names = ["Expected calibration error (ECE)", "Maximum calibration error", "Images"]
    rows = [[name, b, a] for name, b, a in zip(names, before, after, strict=True)]
    temperature = "n/a" if summary.temperature is None else f"{summary.temperature:.3f}"
    rows.append(["Temperature", "1 (none)", temperature])
    if summary.biases is not None:
        biases = ", ".join(f"{label} {bias:+.3f}" for label, bias in summary.biases.items())
        rows.append(["Class biases", "0 (none)", biases])
    missing = (
        " Before: n/a, the probabilities before calibration were not supplied with this "
        "evaluation (an uncalibrated model, or a report made by the evaluator alone)."
        if summary.before is None
        else ""
    )
    return _Table(
        "Calibration",
        ["Figure", "Before calibration", "After calibration (as evaluated)"],
        rows,
        f"Top-label calibration in {len(summary.after.counts)} equal-width confidence bins: "
        "ECE is the mean gap between confidence and accuracy over the bins, weighted by "
        "their images; 0 is perfect. Point figures, no interval." + missing,
    )


def _risk_coverage_table(curve: RiskCoverageCurve) -> _Table:
    rows = [
        ["Area under the risk-coverage curve (AURC)", _num(curve.aurc)],
        ["Error rate answering every image", _pct(curve.full_coverage_risk)],
    ]
    rows += [
        [f"Error rate answering the {share:.0%} most confident", _pct(curve.risk_at(share))]
        for share in (0.95, 0.9, 0.8)
    ]
    return _Table(
        "Risk and coverage",
        ["Figure", "Value"],
        rows,
        "Selective risk: the error rate of the most probable class among the images kept "
        "when the least confident are set aside first (ties kept together). Lower AURC: "
        "the confidence ranks the errors last. Point figures, no interval.",
    )


def _decisions_table(decisions: DecisionScores, metrics: ClassificationMetrics | None) -> _Table:
    def argmax_accuracy() -> str:
        return "n/a" if metrics is None else _pct(metrics.accuracy)

    def argmax_class(label: str, figure: str) -> str:
        return "n/a" if metrics is None else _pct(getattr(metrics.scores(label), figure))

    rows = [
        ["Images", str(decisions.n_items), str(decisions.n_items)],
        [f"Abstained ({UNCERTAIN!r})", str(decisions.n_abstained), "0"],
        ["Coverage (answered)", _pct(decisions.coverage), _pct(1.0)],
        ["Accuracy on the answered images", _pct(decisions.accuracy_covered), argmax_accuracy()],
        ["Accuracy overall (abstentions counted wrong)", _pct(decisions.accuracy_overall),
         argmax_accuracy()],
        ["Labels other than the most probable class",
         str(decisions.n_differing_from_argmax), "0"],
    ]  # fmt: skip
    for label in decisions.sensitivity:
        rows.append(
            [f"Sensitivity [{label}]", _pct(decisions.sensitivity[label]),
             argmax_class(label, "recall")]
        )  # fmt: skip
        rows.append(
            [f"Specificity [{label}]", _pct(decisions.specificity[label]),
             argmax_class(label, "specificity")]
        )  # fmt: skip
    return _Table(
        "Decisions as given",
        ["Figure", "As given (operating points, abstention)", "Most probable class"],
        rows,
        "The labels the predictions carry, after operating points and abstention, next to "
        "the most probable class of every image (the figures of the tables above): the "
        "difference is what the operating points and abstention cost or gain. An abstention "
        "on an image of a class is a miss for its sensitivity and does not call any class. "
        "Point figures, no interval.",
    )


# The report lists at most this many refused radiographs by id (the JSON lists all).
_MAX_LISTED_REJECTED: Final = 50


def _rejected_table(rejected: Sequence[str]) -> _Table:
    rows = [[str(i), image_id] for i, image_id in enumerate(rejected[:_MAX_LISTED_REJECTED], 1)]
    more = len(rejected) - _MAX_LISTED_REJECTED
    if more > 0:
        rows.append(["…", f"and {more} more (every id is in report.json)"])
    return _Table(
        f"Refused by the input gate ({len(rejected)})",
        ["#", "Radiograph"],
        rows,
        "These inputs did not look like the frontal chest radiographs the model was trained "
        "on: they got no diagnosis and are in none of the figures above.",
    )


def _severity_table(report: EvaluationReport) -> _Table:
    rows = [
        [
            row.label,
            str(row.n_images),
            f"{row.mean_total:.1%}",
            f"{row.median_score:g}",
            " ".join(str(count) for count in row.score_counts),
        ]
        for row in report.severity
    ]
    return _Table(
        "Severity by true class",
        ["True class", "Measured", "Mean infected share", "Median score", "Score 0 … 8 counts"],
        rows,
        "The infected share of both lungs and the extent score (0 to 8: each lung 0 to 4 "
        "by quartile of its infected share) that the lung stage and the detector's "
        "infection maps measured; radiographs without lungs found are left out. A model's "
        "measurement, not a radiologist's reading.",
    )


def _config_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return json.dumps(value, sort_keys=True, default=str)


def _configuration_table(configuration: Mapping[str, Any]) -> _Table:
    rows: list[list[str]] = []
    for part, value in configuration.items():
        if isinstance(value, Mapping) and value:
            rows += [[part, str(key), _config_value(option)] for key, option in value.items()]
        else:
            rows.append([part, "", _config_value(value)])
    return _Table(
        "Configuration",
        ["Part", "Parameter", "Value"],
        rows,
        "As given with the evaluation. A Pipeline's report lists the effective value of "
        "every parameter of each component as it was built, defaults included, and of "
        "the evaluator; options that look like credentials are left out.",
    )


def _tables(report: EvaluationReport) -> list[_Table]:
    """Every table in the report, for both HTML and Markdown."""
    tables: list[_Table] = []
    if report.classification is not None:
        tables += _classification_tables(report.classification)
    if report.calibration is not None:
        tables.append(_calibration_table(report.calibration))
    if report.decisions is not None and report.decisions.differs_from_argmax:
        tables.append(_decisions_table(report.decisions, report.classification))
    if report.risk_coverage is not None:
        tables.append(_risk_coverage_table(report.risk_coverage))
    if report.rejected:
        tables.append(_rejected_table(report.rejected))
    if report.severity:
        tables.append(_severity_table(report))
    detection = report.detection
    if detection is not None:
        tables.append(
            _Table(
                "Detection",
                ["Figure", "Value"],
                [
                    ["Images", str(detection.n_images)],
                    ["Ground-truth boxes", str(detection.n_truths)],
                    ["Detections", str(detection.n_detections)],
                    ["AP@0.5 (VOC, all points)", _num(detection.ap50)],
                    ["mAP@[0.5:0.95] (COCO thresholds, all-point AP)", _num(detection.map_50_95)],
                    ["Precision at IoU 0.5", _pct(detection.precision.get(0.5))],
                    ["Recall at IoU 0.5", _pct(detection.recall.get(0.5))],
                ],
                "Point figures, no interval. Precision and recall count every detection "
                "given; the precision-recall curve below shows every score threshold.",
            )
        )
    tables.append(
        _Table(
            "Provenance",
            ["Item", "Value"],
            [
                ["Created (UTC)", report.created],
                ["Data fingerprint", report.data_fingerprint or "n/a"],
                *[[f"Version of {name}", version] for name, version in report.versions.items()],
            ],
        )
    )
    tables.append(_configuration_table(report.to_dict()["configuration"]))
    return tables


def _file_stem(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("._") or "class"


def _figures(
    report: EvaluationReport,
    history: Mapping[str, Sequence[float]] | None,
    images: Sequence[NDArray[np.uint8]] | None,
    image_titles: Sequence[str] | None,
    *,
    image_classes: Sequence[str] | None = None,
    image_legend: Mapping[str, tuple[int, int, int]] | None = None,
) -> list[_Figure]:
    figures: list[_Figure] = []
    metrics = report.classification
    if metrics is not None:
        figures.append(
            _Figure(
                "confusion_matrix",
                "Confusion matrix",
                figure_to_png(plot_confusion_matrix(metrics)),
            )
        )
        if metrics.roc_curves:
            figures.append(
                _Figure("roc_curves", "ROC curves", figure_to_png(plot_roc_curves(metrics)))
            )
        figures.append(
            _Figure(
                "reliability",
                "Reliability diagram",
                figure_to_png(plot_reliability_diagram(metrics)),
            )
        )
    if report.calibration is not None and report.calibration.before is not None:
        figures.append(
            _Figure(
                "calibration",
                "Reliability before and after calibration (each point a confidence bin, "
                "its area the images in it; below the diagonal: over-confident)",
                figure_to_png(plot_calibration(report.calibration)),
            )
        )
    if report.risk_coverage is not None:
        figures.append(
            _Figure(
                "risk_coverage",
                "Risk-coverage: the error rate among the images answered, setting aside the "
                "least confident first",
                figure_to_png(plot_risk_coverage(report.risk_coverage)),
            )
        )
    if report.detection is not None and report.detection.pr_curve is not None:
        figures.append(
            _Figure(
                "precision_recall",
                "Detection precision-recall curve at IoU 0.5 (each step: one more detection "
                "kept, from the highest score down; dashed: the envelope whose area is AP@0.5)",
                figure_to_png(plot_precision_recall_curve(report.detection)),
            )
        )
    if history:
        figures.append(
            _Figure(
                "training_history", "Training curves", figure_to_png(plot_training_history(history))
            )
        )
    if images:
        legend = dict(image_legend or {})
        figures.append(
            _Figure(
                "annotated_images",
                "Annotated images",
                figure_to_png(plot_image_grid(images, image_titles, legend=legend)),
                legend,
            )
        )
        figures += _class_examples(images, image_titles, image_classes, legend)
    return figures  # fmt: skip


def _class_examples(
    images: Sequence[NDArray[np.uint8]],
    titles: Sequence[str] | None,
    classes: Sequence[str] | None,
    legend: Mapping[str, tuple[int, int, int]],
) -> list[_Figure]:
    """The first image of each class again, large enough to see its boxes."""
    if classes is None:
        return []
    if len(classes) != len(images):
        raise ConfigurationError(
            f"{len(classes)} image classes were given for {len(images)} images"
        )
    first = {label: index for index, label in reversed(list(enumerate(classes)))}
    stems: set[str] = set()
    examples: list[_Figure] = []
    for label in sorted(first, key=lambda label: first[label]):
        index = first[label]
        stem = _file_stem(label)
        while stem in stems:
            stem += "_"
        stems.add(stem)
        title = [titles[index]] if titles is not None else None
        grid = plot_image_grid([images[index]], title, columns=1, tile_inches=6.0, legend=legend)
        examples.append(
            _Figure(f"example_{stem}", f"Example: {label}", figure_to_png(grid), legend)
        )
    return examples


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #1b1b1b; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f1f3f5; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5rem 1rem; }
.table-note { font-size: 0.9em; color: #444; margin-top: -1rem; }
.swatch { display: inline-block; width: 1.4em; height: 0.8em; border: 3px solid;
          vertical-align: middle; margin: 0 0.3em 0 0.8em; }
pre { background: #f6f8fa; padding: 0.75rem; overflow-x: auto; }
"""


def _hex(colour: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def _legend_text(legend: Mapping[str, tuple[int, int, int]]) -> str:
    return "; ".join(f"{label}: {_hex(colour)} outline" for label, colour in legend.items())


def _html(
    report: EvaluationReport, title: str, notes: Sequence[str], figures: Sequence[_Figure]
) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    parts += [f'<p class="note">{esc(note)}</p>' for note in notes]
    tables = _tables(report)
    configuration = tables.pop()  # after the figures: the figures matter more
    for table in tables:
        parts += _html_table(table)
    if figures:
        parts.append("<h2>Figures</h2>")
    for figure in figures:
        data = base64.b64encode(figure.png).decode("ascii")
        legend = "".join(
            f'<span class="swatch" style="border-color: {_hex(colour)}"></span>{esc(label)}'
            for label, colour in figure.legend.items()
        )
        parts.append(
            f'<figure><img alt="{esc(figure.caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(figure.caption)}"
            f"{f'<br>Boxes: {legend}' if legend else ''}</figcaption></figure>"
        )
    parts += _html_table(configuration)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_table(table: _Table) -> list[str]:
    esc = html.escape
    parts = [f"<h2>{esc(table.title)}</h2><table><thead><tr>"]
    parts += [f"<th>{esc(cell)}</th>" for cell in table.header]
    parts.append("</tr></thead><tbody>")
    for row in table.rows:
        parts.append("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>")
    parts.append("</tbody></table>")
    if table.note:
        parts.append(f'<p class="table-note">{esc(table.note)}</p>')
    return parts


# Every character a Markdown reader may take for a line break.
_LINE_BREAK = re.compile(r"\r\n|[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")


def _md_text(text: str) -> str:
    """``text`` as one line of Markdown that shows as written, never as HTML.

    Line breaks become spaces (a carriage return in an image id would end a table row),
    and backslashes, ``<`` and ``>`` are backslash-escaped, so an id or a label such as
    ``<img onerror=...>`` shows as text instead of passing into the rendered page as HTML.
    """
    flat = _LINE_BREAK.sub(" ", text)
    return flat.replace("\\", "\\\\").replace("<", "\\<").replace(">", "\\>")


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|")


def _markdown(
    report: EvaluationReport, title: str, notes: Sequence[str], figures: Sequence[_Figure]
) -> str:
    lines = [f"# {_md_text(title)}", ""]
    for note in notes:
        lines += [f"> {_md_text(note)}", ""]
    tables = _tables(report)
    configuration = tables.pop()
    for table in tables:
        lines += _markdown_table(table)
    if figures:
        lines += ["## Figures", ""]
    for figure in figures:
        caption = _md_text(figure.caption)
        alt = caption.replace("[", "\\[").replace("]", "\\]")
        lines += [f"![{alt}]({_FIGURES_DIR}/{figure.name}.png)", ""]
        legend = _md_text(_legend_text(figure.legend))
        lines += [f"*{caption}.*" + (f" Boxes: {legend}." if figure.legend else ""), ""]
    lines += _markdown_table(configuration)
    return "\n".join(lines)


def _markdown_table(table: _Table) -> list[str]:
    lines = [f"## {_md_text(table.title)}", ""]
    lines.append("| " + " | ".join(_md_cell(c) for c in table.header) + " |")
    lines.append("|" + "---|" * len(table.header))
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    lines.append("")
    if table.note:
        lines += [f"*{_md_text(table.note)}*", ""]
    return lines


def write_report(
    report: EvaluationReport,
    directory: str | os.PathLike[str],
    *,
    history: Mapping[str, Sequence[float]] | None = None,
    images: Sequence[NDArray[np.uint8]] | None = None,
    image_titles: Sequence[str] | None = None,
    image_classes: Sequence[str] | None = None,
    image_legend: Mapping[str, tuple[int, int, int]] | None = DRAWN_BOX_LEGEND,
    title: str = "covidcxr evaluation",
    notes: Sequence[str] = (),
    overwrite: bool = False,
) -> ReportFiles:
    """Write ``report.html``, ``report.md``, ``report.json`` and ``figures/*.png``.

    Parameters
    ----------
    report
        The evaluation to present.
    directory
        Where to write; created if missing.
    history
        Keras-style training history to plot (see
        :func:`~covidcxr.evaluate.plot_training_history`).
    images
        Already-annotated RGB ``uint8`` images to show in a grid.
    image_titles
        One caption per image.
    image_classes
        The true class of each image: the report then shows the first image of each class
        again, large enough to read its boxes.
    image_legend
        What the box colours of ``images`` mean, shown with the grid and the examples; the
        default is :data:`DRAWN_BOX_LEGEND`, the colours of
        :func:`~covidcxr.detect.draw_detections`. ``None`` for no legend.
    title
        The page title.
    notes
        Paragraphs shown prominently at the top (what the data is, what it is not),
        followed by the report's own :attr:`~EvaluationReport.notes` (a note given both
        ways is shown once).
    overwrite
        Replace a report covidcxr wrote in ``directory`` earlier. The folder is written as
        a unit (staged, then renamed into place); without ``overwrite`` it must be new or
        empty, and a folder holding anything covidcxr did not write is never replaced.

    Returns
    -------
    ReportFiles

    Raises
    ------
    OutputExistsError
        If ``directory`` holds a report and ``overwrite`` is false, or holds anything
        covidcxr did not write (see :func:`covidcxr.files.check_output_directory`).
    ConfigurationError
        If ``image_titles`` or ``image_classes`` do not match ``images`` one for one.

    Examples
    --------
    >>> import tempfile
    >>> from covidcxr import GroundTruth, Prediction
    >>> from covidcxr.evaluate import ClassificationEvaluator
    >>> truths = [GroundTruth("a", "normal"), GroundTruth("b", "pneumonia")]
    >>> predictions = [Prediction("a", "normal", {"normal": 1.0, "pneumonia": 0.0}),
    ...                Prediction("b", "pneumonia", {"normal": 0.0, "pneumonia": 1.0})]
    >>> report = ClassificationEvaluator(n_bootstrap=0).evaluate(
    ...     truths, predictions, classes=["normal", "pneumonia"], detections=False)
    >>> files = write_report(report, tempfile.mkdtemp())
    >>> files.html.name, [f.name for f in files.figures][:1]
    ('report.html', ['confusion_matrix.png'])
    """
    target = Path(directory)
    notes = list(dict.fromkeys([*notes, *report.notes]))
    figures = _figures(
        report, history, images, image_titles, image_classes=image_classes,
        image_legend=image_legend,
    )  # fmt: skip
    paths = {
        "html": target / "report.html",
        "markdown": target / "report.md",
        "json": target / "report.json",
    }
    figure_paths = [target / _FIGURES_DIR / f"{f.name}.png" for f in figures]
    # The report folder is written as a unit: staged, then renamed into place, replacing
    # only a report covidcxr wrote (never a folder holding the user's files).
    with output_directory(target, "report", overwrite=overwrite) as staging:
        for figure in figures:
            write_bytes(staging / _FIGURES_DIR / f"{figure.name}.png", figure.png)
        write_text(staging / "report.json", report.to_json() + "\n")
        write_text(staging / "report.md", _markdown(report, title, notes, figures))
        write_text(staging / "report.html", _html(report, title, notes, figures))
    return ReportFiles(
        html=paths["html"],
        markdown=paths["markdown"],
        json=paths["json"],
        figures=tuple(figure_paths),
    )
