"""Write an evaluation as a self-contained HTML page, a Markdown page and JSON.

The HTML page embeds its figures as base64 PNG, so it can be mailed or archived as one
file; the Markdown page links the same figures, written beside it under ``figures/``; the
JSON holds every number. All three carry the configuration, the data fingerprint and the
software versions, so two runs can be compared.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from attrs import frozen
from numpy.typing import NDArray

from covidcxr.evaluate._evaluator import EvaluationReport
from covidcxr.evaluate._plots import (
    figure_to_png,
    plot_confusion_matrix,
    plot_image_grid,
    plot_reliability_diagram,
    plot_roc_curves,
    plot_training_history,
)
from covidcxr.files import output_directory, write_bytes, write_text

__all__ = ["ReportFiles", "write_report"]

_FIGURES_DIR = "figures"


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


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1%}"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _with_interval(
    report: EvaluationReport,
    name: str,
    value: float,
    show: Callable[[float | None], str] = _pct,
) -> str:
    interval = report.classification.intervals.get(name) if report.classification else None
    if interval is None:
        return show(value)
    return f"{show(value)} ({show(interval.low)} to {show(interval.high)})"


def _tables(report: EvaluationReport) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table in the report, for both HTML and Markdown."""
    tables: list[tuple[str, list[str], list[list[str]]]] = []
    metrics = report.classification
    if metrics is not None:
        level = next(iter(metrics.intervals.values())).level if metrics.intervals else None
        ci = f" ({level:.0%} CI)" if level is not None else ""
        macro = metrics.macro
        summary = [
            ["Images", str(metrics.n_images)],
            ["Accuracy", _with_interval(report, "accuracy", metrics.accuracy)],
            ["Macro precision", _with_interval(report, "macro_precision", macro.precision)],
            ["Macro recall (sensitivity)", _with_interval(report, "macro_recall", macro.recall)],
            ["Macro F1", _with_interval(report, "macro_f1", macro.f1)],
            ["Macro one-vs-rest AUC", _with_interval(report, "macro_auc", macro.auc, _num)],
            ["Weighted F1", _pct(metrics.weighted.f1)],
            ["Expected calibration error", _num(metrics.calibration.expected_calibration_error)],
            ["Brier score", _num(metrics.calibration.brier_score)],
        ]
        tables.append(("Classification summary", ["Figure", f"Value{ci}"], summary))
        tables.append(
            (
                "Per class",
                ["Class", "Support", "Precision", f"Recall{ci}", f"Specificity{ci}", "F1", "AUC"],
                [
                    [
                        s.label,
                        str(s.support),
                        _pct(s.precision),
                        _with_interval(report, f"recall[{s.label}]", s.recall),
                        _with_interval(report, f"specificity[{s.label}]", s.specificity),
                        _pct(s.f1),
                        _num(s.auc),
                    ]
                    for s in metrics.per_class
                ],
            )
        )
    detection = report.detection
    if detection is not None:
        tables.append(
            (
                "Detection",
                ["Figure", "Value"],
                [
                    ["Images", str(detection.n_images)],
                    ["Ground-truth boxes", str(detection.n_truths)],
                    ["Detections", str(detection.n_detections)],
                    ["AP@0.5 (VOC, all points)", _num(detection.ap50)],
                    ["mAP@[0.5:0.95] (COCO)", _num(detection.map_50_95)],
                    ["Precision at IoU 0.5", _pct(detection.precision.get(0.5))],
                    ["Recall at IoU 0.5", _pct(detection.recall.get(0.5))],
                ],
            )
        )
    tables.append(
        (
            "Provenance",
            ["Item", "Value"],
            [
                ["Created (UTC)", report.created],
                ["Data fingerprint", report.data_fingerprint or "n/a"],
                *[[f"Version of {name}", version] for name, version in report.versions.items()],
            ],
        )
    )
    return tables


def _figures(
    report: EvaluationReport,
    history: Mapping[str, Sequence[float]] | None,
    images: Sequence[NDArray[np.uint8]] | None,
    image_titles: Sequence[str] | None,
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
    if history:
        figures.append(
            _Figure(
                "training_history", "Training curves", figure_to_png(plot_training_history(history))
            )
        )
    if images:
        figures.append(
            _Figure(
                "annotated_images",
                "Annotated images",
                figure_to_png(plot_image_grid(images, image_titles)),
            )
        )
    return figures  # fmt: skip


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #1b1b1b; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f1f3f5; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5rem 1rem; }
pre { background: #f6f8fa; padding: 0.75rem; overflow-x: auto; }
"""


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
    for heading, header, rows in _tables(report):
        parts.append(f"<h2>{esc(heading)}</h2><table><thead><tr>")
        parts += [f"<th>{esc(cell)}</th>" for cell in header]
        parts.append("</tr></thead><tbody>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>")
        parts.append("</tbody></table>")
    if figures:
        parts.append("<h2>Figures</h2>")
    for figure in figures:
        data = base64.b64encode(figure.png).decode("ascii")
        parts.append(
            f'<figure><img alt="{esc(figure.caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(figure.caption)}</figcaption></figure>"
        )
    configuration = json.dumps(report.to_dict()["configuration"], indent=2, sort_keys=True)
    parts.append(f"<h2>Configuration</h2><pre>{esc(configuration)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(
    report: EvaluationReport, title: str, notes: Sequence[str], figures: Sequence[_Figure]
) -> str:
    lines = [f"# {title}", ""]
    for note in notes:
        lines += [f"> {note}", ""]
    for heading, header, rows in _tables(report):
        lines += [f"## {heading}", ""]
        lines.append("| " + " | ".join(_md_cell(c) for c in header) + " |")
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
        lines.append("")
    if figures:
        lines += ["## Figures", ""]
    for figure in figures:
        lines += [f"![{figure.caption}]({_FIGURES_DIR}/{figure.name}.png)", ""]
    configuration = json.dumps(report.to_dict()["configuration"], indent=2, sort_keys=True)
    lines += ["## Configuration", "", "```json", configuration, "```", ""]
    return "\n".join(lines)


def write_report(
    report: EvaluationReport,
    directory: str | os.PathLike[str],
    *,
    history: Mapping[str, Sequence[float]] | None = None,
    images: Sequence[NDArray[np.uint8]] | None = None,
    image_titles: Sequence[str] | None = None,
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
    figures = _figures(report, history, images, image_titles)
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
