"""Figures of an evaluation, drawn with matplotlib without a display.

Every function returns a :class:`matplotlib.figure.Figure` built directly (not through
``pyplot``), so nothing depends on a GUI backend or on pyplot's global state, and figures
are garbage-collected like any object. :func:`figure_to_png` renders one with the Agg
renderer. matplotlib is the optional ``report`` extra (``pip install covidcxr[report]``).
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from covidcxr.errors import ConfigurationError
from covidcxr.evaluate._calibration import CalibrationSummary, ReliabilityCurve, RiskCoverageCurve
from covidcxr.evaluate._detection import DetectionMetrics
from covidcxr.evaluate._metrics import ClassificationMetrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "figure_to_png",
    "plot_calibration",
    "plot_confusion_matrix",
    "plot_image_grid",
    "plot_precision_recall_curve",
    "plot_reliability_diagram",
    "plot_risk_coverage",
    "plot_roc_curves",
    "plot_training_history",
]


def _new_figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.figure import Figure  # noqa: PLC0415 - optional extra, import at use
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
        raise ConfigurationError("plots need matplotlib: pip install 'covidcxr[report]'") from exc
    return Figure(figsize=(width, height), layout="constrained")


def figure_to_png(figure: Figure, *, dpi: int = 110) -> bytes:
    r"""Render ``figure`` to PNG bytes with the Agg renderer (no display needed).

    Examples
    --------
    >>> import numpy as np
    >>> png = figure_to_png(plot_image_grid([np.zeros((8, 8, 3), np.uint8)]))
    >>> png[:8] == b"\x89PNG\r\n\x1a\n"
    True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - optional extra

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def plot_confusion_matrix(metrics: ClassificationMetrics) -> Figure:
    """The confusion matrix: colour by row share (recall), text with count and share.

    Rows are the true classes, columns the predicted ones, so the diagonal reads as each
    class's recall whatever the class sizes.

    Examples
    --------
    >>> import numpy as np
    >>> from covidcxr.evaluate import classification_metrics
    >>> m = classification_metrics(["a", "b"], np.eye(2), ["a", "b"], n_bootstrap=0)
    >>> plot_confusion_matrix(m).axes[0].get_xlabel()
    'Predicted class'
    """
    counts = np.asarray(metrics.confusion_matrix, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    k = len(metrics.classes)
    figure = _new_figure(1.6 + 1.3 * k, 1.2 + 1.2 * k)
    axes = figure.add_subplot()
    image = axes.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="Share of the true class")
    for i in range(k):
        for j in range(k):
            colour = "white" if share[i, j] > 0.6 else "black"
            axes.text(
                j, i, f"{int(counts[i, j])}\n{share[i, j]:.0%}", ha="center", va="center",
                color=colour, fontsize=10,
            )  # fmt: skip
    axes.set_xticks(range(k), metrics.classes, rotation=20)
    axes.set_yticks(range(k), metrics.classes)
    axes.set_xlabel("Predicted class")
    axes.set_ylabel("True class")
    axes.set_title(f"Confusion matrix (n = {metrics.n_images}, accuracy {metrics.accuracy:.1%})")
    return figure


_HISTORY_PANELS = (("loss", "Loss"), ("accuracy", "Accuracy"))


def plot_training_history(history: Mapping[str, Sequence[float]]) -> Figure:
    """Training curves: loss and accuracy per epoch, training and validation.

    Parameters
    ----------
    history
        Keras-style history: ``{"loss": [...], "val_loss": [...], "accuracy": [...],
        "val_accuracy": [...]}``. Any of the four may be missing; other keys are ignored.

    Raises
    ------
    ConfigurationError
        If the history has neither ``loss`` nor ``accuracy`` curves.

    Examples
    --------
    >>> figure = plot_training_history({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]})
    >>> [axes.get_title() for axes in figure.axes]
    ['Loss']
    """
    panels = [
        (key, title)
        for key, title in _HISTORY_PANELS
        if history.get(key) or history.get(f"val_{key}")
    ]
    if not panels:
        raise ConfigurationError(
            f"training history has no 'loss' or 'accuracy' curve (keys: {sorted(history)})"
        )
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415 - optional extra

    figure = _new_figure(4.2 * len(panels), 3.4)
    for index, (key, title) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        for name, style, label in ((key, "-o", "training"), (f"val_{key}", "--s", "validation")):
            values = [float(v) for v in history.get(name, ())]
            if values:
                epochs = range(1, len(values) + 1)
                axes.plot(epochs, values, style, markersize=3, label=label)
        axes.set_title(title)
        axes.set_xlabel("Epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if key == "accuracy":
            axes.set_ylim(0.0, 1.02)
        axes.grid(alpha=0.3)
        axes.legend()
    return figure


def plot_roc_curves(metrics: ClassificationMetrics) -> Figure:
    """One-vs-rest ROC curves with their AUC, and the chance diagonal.

    Examples
    --------
    >>> import numpy as np
    >>> from covidcxr.evaluate import classification_metrics
    >>> probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    >>> m = classification_metrics(["a", "b", "b"], probs, ["a", "b"], n_bootstrap=0)
    >>> len(plot_roc_curves(m).axes[0].lines)  # two classes and the diagonal
    3
    """
    figure = _new_figure(4.6, 4.2)
    axes = figure.add_subplot()
    for curve in metrics.roc_curves:
        axes.plot(
            curve.false_positive_rate,
            curve.true_positive_rate,
            drawstyle="steps-post",
            label=f"{curve.label} (AUC {curve.auc:.3f})",
        )
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.set_aspect("equal")
    axes.set_xlabel("False-positive rate (1 - specificity)")
    axes.set_ylabel("True-positive rate (sensitivity)")
    axes.set_title("ROC, one class against the rest")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    return figure


def plot_precision_recall_curve(metrics: DetectionMetrics) -> Figure:
    """The detection precision-recall curve at IoU 0.5, and the envelope its AP integrates.

    Each step is one more detection kept, from the highest score down (the pooled ranking
    of :func:`~covidcxr.evaluate.evaluate_detections`); the dashed envelope is the
    all-point interpolation whose area is AP@0.5.

    Raises
    ------
    ConfigurationError
        If ``metrics`` carries no curve (made by hand without ``pr_curve``).

    Examples
    --------
    >>> from covidcxr import Box, Detection
    >>> from covidcxr.evaluate import evaluate_detections
    >>> lesion = Box(0, 0, 10, 10)
    >>> metrics = evaluate_detections(
    ...     [[lesion], [lesion]],
    ...     [[Detection(lesion, "opacity", 0.9)], [Detection(Box(20, 20, 5, 5), "opacity", 0.8)]])
    >>> plot_precision_recall_curve(metrics).axes[0].get_title()
    'Detection precision-recall at IoU 0.5 (AP 0.500)'
    """
    curve = metrics.pr_curve
    if curve is None:
        raise ConfigurationError(
            "these detection metrics carry no precision-recall curve; compute them with "
            "covidcxr.evaluate.evaluate_detections"
        )
    figure = _new_figure(4.6, 4.2)
    axes = figure.add_subplot()
    ap = "n/a" if math.isnan(curve.average_precision) else f"{curve.average_precision:.3f}"
    if curve.n_truths and curve.scores:
        # The curve starts at recall 0 with the first detection's precision.
        recall = [0.0, *curve.recall]
        axes.plot(
            recall, [curve.precision[0], *curve.precision], drawstyle="steps-post",
            marker="o", markersize=3, label="precision at each score threshold",
        )  # fmt: skip
        axes.plot(
            recall, [curve.interpolated_precision[0], *curve.interpolated_precision],
            drawstyle="steps-post", linestyle="--", color="tab:red",
            label="interpolated (area = AP)",
        )  # fmt: skip
        axes.legend(loc="lower left", fontsize=8)
    else:
        why = "no ground-truth boxes" if not curve.n_truths else "no detections"
        axes.text(0.5, 0.5, f"{why}: no curve", ha="center", va="center")
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.set_xlabel(f"Recall (of {curve.n_truths} lesion boxes)")
    axes.set_ylabel("Precision")
    axes.set_title(f"Detection precision-recall at IoU {curve.iou_threshold:g} (AP {ap})")
    axes.grid(alpha=0.3)
    return figure


def plot_reliability_diagram(metrics: ClassificationMetrics) -> Figure:
    """Reliability diagram: accuracy against confidence per bin, with the bin counts below.

    Bars below the diagonal mean over-confidence; the gap is what the expected calibration
    error averages.

    Examples
    --------
    >>> import numpy as np
    >>> from covidcxr.evaluate import classification_metrics
    >>> m = classification_metrics(["a", "b"], np.eye(2), ["a", "b"], n_bootstrap=0)
    >>> len(plot_reliability_diagram(m).axes)
    2
    """
    calibration = metrics.calibration
    bins = calibration.bins
    lowers = np.array([b.lower for b in bins])
    widths = np.array([b.upper - b.lower for b in bins])
    accuracy = np.array([0.0 if math.isnan(b.accuracy) else b.accuracy for b in bins])
    confidence = np.array([b.mean_confidence for b in bins])
    counts = np.array([b.count for b in bins])
    figure = _new_figure(4.6, 5.2)
    grid = figure.add_gridspec(2, 1, height_ratios=(3, 1))
    top = figure.add_subplot(grid[0])
    top.bar(
        lowers, accuracy, width=widths, align="edge", color="tab:blue", alpha=0.75,
        edgecolor="black", label="accuracy",
    )  # fmt: skip
    filled = counts > 0
    top.bar(
        lowers[filled],
        confidence[filled] - accuracy[filled],
        bottom=accuracy[filled],
        width=widths[filled],
        align="edge",
        facecolor="none",
        edgecolor="tab:red",
        hatch="//",
        label="gap to mean confidence",
    )
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("Accuracy")
    top.set_title(
        f"Reliability (ECE {calibration.expected_calibration_error:.3f}, "
        f"Brier {calibration.brier_score:.3f})"
    )
    top.legend(loc="upper left", fontsize=8)
    bottom = figure.add_subplot(grid[1], sharex=top)
    bottom.bar(lowers, counts, width=widths, align="edge", color="grey", edgecolor="black")
    bottom.set_xlabel("Confidence of the predicted class")
    bottom.set_ylabel("Images")
    return figure


def _curve_points(curve: ReliabilityCurve) -> tuple[list[float], list[float], list[int]]:
    """Mean confidence, accuracy and count of the non-empty bins."""
    filled = [i for i, count in enumerate(curve.counts) if count]
    return (
        [curve.mean_confidence[i] for i in filled],
        [curve.accuracy[i] for i in filled],
        [curve.counts[i] for i in filled],
    )


def plot_calibration(summary: CalibrationSummary) -> Figure:
    """Reliability before and after calibration on one plot, with the diagonal.

    Each point is a non-empty confidence bin: its mean confidence against its accuracy,
    its area proportional to its count. Points below the diagonal are over-confident.
    The curve before calibration is drawn only when ``summary.before`` is given.

    Examples
    --------
    >>> from covidcxr.evaluate import CalibrationSummary, reliability_curve
    >>> probs, labels = [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [0, 1, 1]
    >>> summary = CalibrationSummary(after=reliability_curve(probs, labels),
    ...                              before=reliability_curve(probs, labels))
    >>> [line.get_label() for line in plot_calibration(summary).axes[0].lines]
    ['before calibration (ECE 0.300)', 'after calibration (ECE 0.300)', 'perfect calibration']
    """
    figure = _new_figure(4.8, 4.6)
    axes = figure.add_subplot()
    drawn = [
        (name, curve, colour, style)
        for name, curve, colour, style in (
            ("before calibration", summary.before, "tab:red", "--s"),
            ("after calibration", summary.after, "tab:blue", "-o"),
        )
        if curve is not None
    ]
    biggest = max(max(curve.counts) for _, curve, _, _ in drawn) or 1
    for name, curve, colour, style in drawn:
        confidence, accuracy, counts = _curve_points(curve)
        axes.plot(
            confidence, accuracy, style, color=colour, markersize=3,
            label=f"{name} (ECE {curve.expected_calibration_error:.3f})",
        )  # fmt: skip
        axes.scatter(
            confidence, accuracy, s=[12 + 150 * c / biggest for c in counts], color=colour,
            alpha=0.35,
        )  # fmt: skip
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    axes.set_xlim(0, 1.01)
    axes.set_ylim(0, 1.01)
    axes.set_aspect("equal")
    axes.set_xlabel("Mean confidence of the predicted class (per bin)")
    axes.set_ylabel("Accuracy (per bin)")
    n_bins = len(summary.after.counts)
    title = "Reliability before and after calibration" if summary.before else "Reliability"
    axes.set_title(f"{title}\n({n_bins} equal-width bins; marker area: images)", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
    return figure


def plot_risk_coverage(curve: RiskCoverageCurve) -> Figure:
    """Selective risk against coverage, abstaining on the least confident first.

    Examples
    --------
    >>> from covidcxr.evaluate import risk_coverage_curve
    >>> curve = risk_coverage_curve([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]], [0, 1, 0])
    >>> plot_risk_coverage(curve).axes[0].get_xlabel()
    'Coverage (share of images answered)'
    """
    figure = _new_figure(4.8, 4.0)
    axes = figure.add_subplot()
    axes.plot(
        [0.0, *curve.coverage], [curve.risk[0], *curve.risk], drawstyle="steps-pre",
        color="tab:blue", label=f"selective risk (AURC {curve.aurc:.3f})",
    )  # fmt: skip
    axes.axhline(
        curve.full_coverage_risk, color="grey", linestyle=":",
        label=f"error rate answering all ({curve.full_coverage_risk:.1%})",
    )  # fmt: skip
    axes.set_xlim(0, 1.01)
    axes.set_ylim(0, max(0.05, max(curve.risk) * 1.1))
    axes.set_xlabel("Coverage (share of images answered)")
    axes.set_ylabel("Error rate among the answered")
    axes.set_title(f"Risk-coverage (n = {curve.n_items})")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
    return figure


def plot_image_grid(
    images: Sequence[NDArray[np.uint8]],
    titles: Sequence[str] | None = None,
    *,
    columns: int = 4,
    tile_inches: float = 2.6,
    legend: Mapping[str, tuple[int, int, int]] | None = None,
) -> Figure:
    """A grid of already-drawn images (for example radiographs with their detections).

    Captions are wrapped to the width of their tile, so none runs past the edge.

    Parameters
    ----------
    images
        RGB ``uint8`` arrays of shape ``(height, width, 3)``; sizes may differ.
    titles
        One caption per image.
    columns
        Images per row.
    tile_inches
        The size of each tile.
    legend
        What each box colour means, shown under the grid: ``{"ground truth": (0, 220, 90),
        "detection": (255, 140, 0)}`` for images drawn by
        :func:`~covidcxr.detect.draw_detections` (its ``TRUTH_COLOR`` and
        ``DETECTION_COLOR``).

    Raises
    ------
    ConfigurationError
        If there are no images, an image is not RGB ``uint8``, or titles do not match.

    Examples
    --------
    >>> import numpy as np
    >>> figure = plot_image_grid([np.zeros((8, 8, 3), np.uint8)] * 5, columns=2)
    >>> sum(axes.get_visible() for axes in figure.axes)
    5
    >>> figure = plot_image_grid([np.zeros((8, 8, 3), np.uint8)], legend={"truth": (0, 220, 90)})
    >>> [text.get_text() for text in figure.legends[0].get_texts()]
    ['truth']
    """
    if not images:
        raise ConfigurationError("plot_image_grid needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ConfigurationError(f"{len(titles)} titles were given for {len(images)} images")
    for index, image in enumerate(images):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ConfigurationError(
                f"image {index} must be an RGB uint8 array (height, width, 3), got "
                f"{image.dtype} {image.shape}"
            )
    if columns < 1:
        raise ConfigurationError(f"columns must be >= 1, got {columns}")
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    font_size = 8 if tile_inches < 4 else 11
    # At most about 0.6 em per character of the default sans-serif font.
    line_chars = max(8, int(tile_inches * 72 / (font_size * 0.6)))
    wrapped = [textwrap.fill(t, line_chars) for t in titles] if titles is not None else None
    title_lines = max((t.count("\n") + 1 for t in wrapped), default=0) if wrapped else 0
    # Room for the caption lines (1.4 line heights each) and the legend, so that the
    # layout engine never has to squeeze them off the page.
    caption_inches = 0.15 + title_lines * font_size * 1.4 / 72
    legend_inches = (0.3 + 2 * font_size * 1.4 / 72) if legend else 0.0
    figure = _new_figure(
        tile_inches * columns, (tile_inches + caption_inches) * rows + legend_inches
    )
    for index in range(rows * columns):
        axes: Any = figure.add_subplot(rows, columns, index + 1)
        axes.set_axis_off()
        if index >= len(images):
            axes.set_visible(False)
            continue
        axes.imshow(images[index], interpolation="nearest")
        if wrapped is not None:
            axes.set_title(wrapped[index], fontsize=font_size)
    if legend:
        from matplotlib.patches import Patch  # noqa: PLC0415 - optional extra

        handles = [
            Patch(facecolor="none", edgecolor=(r / 255, g / 255, b / 255), linewidth=2.5,
                  label=label)
            for label, (r, g, b) in legend.items()
        ]  # fmt: skip
        figure.legend(
            handles=handles, loc="outside lower center", ncols=len(handles), fontsize=font_size,
            title="Boxes", title_fontsize=font_size, frameon=False,
        )  # fmt: skip
    return figure
