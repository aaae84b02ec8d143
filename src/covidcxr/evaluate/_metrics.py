"""Classification figures: confusion matrix, per-class and averaged scores, ROC, calibration.

Everything here works on plain arrays (true class indices and a probability matrix), so it
can be used without :class:`~covidcxr.XRay` records; :class:`ClassificationEvaluator` in
:mod:`covidcxr.evaluate` wraps it for the pipeline.

Conventions, chosen to be honest about what is measured:

- A ratio whose denominator is zero is *undefined*, stored as ``nan`` and written as
  ``null`` in JSON (precision of a class that is never predicted; recall, specificity and
  AUC of a class absent from the ground truth). Averages skip undefined values. F1 is
  ``2 TP / (2 TP + FP + FN)``, defined (and 0) whenever the class is either present or
  predicted, so a classifier that never predicts a present class scores F1 = 0 on it.
- Confidence intervals depend on what the figure is. Accuracy and each class's recall,
  precision and specificity are binomial proportions (successes out of a known number of
  images: all images, the class's images, the images predicted as the class, the images
  of the other classes): they get Wilson score intervals (scipy's
  :meth:`~scipy.stats._result_classes.BinomTestResult.proportion_ci`), which stay inside
  ``[0, 1]`` and do not collapse at 0 % or 100 %: 60 of 60 correct gives 94.0 % to 100 %,
  not 100 % to 100 %. The figures that are not proportions (macro averages, per-class F1
  and AUC) get a *stratified* percentile bootstrap: each resample keeps the number of
  images of each true class, so no class vanishes from a resample and every figure stays
  defined; the resampling is seeded, so the same inputs give the same intervals. It is
  computed in :mod:`covidcxr.evaluate._bootstrap`. A bootstrap whose resamples do not
  vary (a perfect classifier) has no interval: its bounds are ``nan``, never a zero-width
  interval that would read as certainty.
- Calibration is measured on the top-label confidence (the largest probability of each
  row) against whether that label was right, in equal-width bins.

Where the figures come from: the point estimates are scikit-learn's
(:func:`~sklearn.metrics.confusion_matrix`, :func:`~sklearn.metrics.accuracy_score`,
:func:`~sklearn.metrics.precision_recall_fscore_support` with ``zero_division=nan``,
:func:`~sklearn.metrics.roc_auc_score` and :func:`~sklearn.metrics.roc_curve`, one class
against the rest). Computed here by hand, because scikit-learn has no equivalent: the
specificity; the class averages, which skip undefined values (scikit-learn's weighted
average instead falls back to an unweighted mean when every defined value has zero
support, and its multi-class AUC refuses a class absent from the truth); the calibration
bins and the Brier score (multi-class ``brier_score_loss`` needs scikit-learn 1.7); and
the bootstrap, which scores all resamples at once on arrays rather than calling
scikit-learn once per resample.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs
import numpy as np
from attrs import field, frozen
from numpy.typing import NDArray
from scipy.stats import binomtest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from covidcxr.errors import ConfigurationError
from covidcxr.evaluate._bootstrap import (
    _bootstrap_bounds,
    _nanmean,
    _scores_from_confusion,
    _weighted_mean,
)
from covidcxr.evaluate._calibration import _bin_confidences, _floats, _nan_to_none

__all__ = [
    "AveragedScores",
    "Calibration",
    "ClassScores",
    "ClassificationMetrics",
    "ConfidenceInterval",
    "ReliabilityBin",
    "RocCurve",
    "classification_metrics",
]

# Probability rows may sum to 1 only up to float32 rounding (softmax outputs).
_ROW_SUM_TOLERANCE = 1e-3


@frozen
class ClassScores:
    """The one-vs-rest scores of one class.

    Parameters
    ----------
    label
        The class.
    support
        How many images truly belong to it.
    precision, recall, specificity, f1, auc
        The scores in ``[0, 1]``; ``nan`` where undefined (see the module notes). Recall is
        the sensitivity.
    """

    label: str
    support: int
    precision: float
    recall: float
    specificity: float
    f1: float
    auc: float

    def to_dict(self) -> dict[str, Any]:
        """The scores as JSON-ready data (``nan`` becomes ``None``)."""
        return attrs.asdict(self, value_serializer=_nan_to_none)


@frozen
class AveragedScores:
    """Scores averaged over classes: ``macro`` (plain mean) or ``weighted`` (by support)."""

    precision: float
    recall: float
    specificity: float
    f1: float
    auc: float

    def to_dict(self) -> dict[str, float | None]:
        """The averages as JSON-ready data (``nan`` becomes ``None``)."""
        return attrs.asdict(self, value_serializer=_nan_to_none)


@frozen
class RocCurve:
    """A one-vs-rest ROC curve: false- and true-positive rates at decreasing thresholds."""

    label: str
    false_positive_rate: tuple[float, ...] = field(converter=_floats)
    true_positive_rate: tuple[float, ...] = field(converter=_floats)
    auc: float

    def to_dict(self) -> dict[str, Any]:
        """The curve as JSON-ready data."""
        return attrs.asdict(self, value_serializer=_nan_to_none)


@frozen
class ReliabilityBin:
    """One bin of a reliability diagram: confidences in ``(lower, upper]``.

    ``mean_confidence`` and ``accuracy`` are ``nan`` for an empty bin.
    """

    lower: float
    upper: float
    count: int
    mean_confidence: float
    accuracy: float

    def to_dict(self) -> dict[str, Any]:
        """The bin as JSON-ready data."""
        return attrs.asdict(self, value_serializer=_nan_to_none)


@frozen
class Calibration:
    """How well the top-label confidence matches the observed accuracy.

    Parameters
    ----------
    expected_calibration_error
        ``sum(count_b / n * |accuracy_b - confidence_b|)`` over the bins: 0 for a perfectly
        calibrated classifier.
    maximum_calibration_error
        The largest ``|accuracy_b - confidence_b|`` over non-empty bins.
    brier_score
        The multi-class Brier score, ``mean(sum((p - onehot)**2))``, in ``[0, 2]``.
    bins
        The reliability-diagram bins.
    """

    expected_calibration_error: float
    maximum_calibration_error: float
    brier_score: float
    bins: tuple[ReliabilityBin, ...]

    def to_dict(self) -> dict[str, Any]:
        """The calibration figures as JSON-ready data."""
        return attrs.asdict(self, value_serializer=_nan_to_none)


#: :attr:`ConfidenceInterval.method` of a Wilson score interval (binomial proportions).
_WILSON: Final = "wilson"
#: :attr:`ConfidenceInterval.method` of a stratified percentile bootstrap interval.
_BOOTSTRAP: Final = "bootstrap"


@frozen
class ConfidenceInterval:
    """A point estimate with an interval ``[low, high]`` and how it was computed.

    Parameters
    ----------
    estimate
        The figure itself.
    low, high
        The bounds; ``nan`` when there is no interval: the figure is undefined, or (for a
        bootstrap) the resamples did not vary, so the data say nothing about the
        uncertainty (see :attr:`degenerate`).
    level
        The coverage, 0.95 for a 95 % interval.
    method
        ``"wilson"`` (Wilson score interval of a binomial proportion) or ``"bootstrap"``
        (stratified percentile bootstrap).
    """

    estimate: float
    low: float
    high: float
    level: float
    method: str = _BOOTSTRAP

    @property
    def degenerate(self) -> bool:
        """Whether the figure is defined but has no interval (resamples that did not vary)."""
        return not math.isnan(self.estimate) and (math.isnan(self.low) or math.isnan(self.high))

    def to_dict(self) -> dict[str, float | None]:
        """The interval as JSON-ready data."""
        return attrs.asdict(self, value_serializer=_nan_to_none)


@frozen
class ClassificationMetrics:
    """Every classification figure of one evaluation.

    Parameters
    ----------
    classes
        The class labels, in the order of the confusion matrix rows and columns.
    n_images
        How many images were evaluated.
    accuracy
        The fraction of images whose most probable class is the true one.
    per_class
        One :class:`ClassScores` per class, in ``classes`` order.
    macro, weighted
        Class-averaged scores.
    confusion_matrix
        ``confusion_matrix[i][j]`` counts images of true class ``classes[i]`` predicted as
        ``classes[j]``.
    roc_curves
        One-vs-rest ROC curves, one per class with both positives and negatives.
    calibration
        Top-label calibration figures.
    intervals
        Confidence intervals of the headline figures, by name. Wilson score intervals for
        the proportions ``"accuracy"``, ``"recall[<class>]"``, ``"precision[<class>]"``
        and ``"specificity[<class>]"``; bootstrap intervals (when ``n_bootstrap > 0``) for
        ``"macro_precision"``, ``"macro_recall"``, ``"macro_f1"``, ``"macro_auc"``,
        ``"f1[<class>]"`` and ``"auc[<class>]"``. Each says its ``method``.
    n_bootstrap, seed
        How the bootstrap intervals were computed.
    """

    classes: tuple[str, ...]
    n_images: int
    accuracy: float
    per_class: tuple[ClassScores, ...]
    macro: AveragedScores
    weighted: AveragedScores
    confusion_matrix: tuple[tuple[int, ...], ...]
    roc_curves: tuple[RocCurve, ...]
    calibration: Calibration
    intervals: Mapping[str, ConfidenceInterval]
    n_bootstrap: int
    seed: int

    def scores(self, label: str) -> ClassScores:
        """The scores of class ``label``.

        Raises
        ------
        KeyError
            If ``label`` is not one of :attr:`classes`.
        """
        for scores in self.per_class:
            if scores.label == label:
                return scores
        raise KeyError(f"no class {label!r} in this evaluation (classes: {self.classes})")

    def to_dict(self) -> dict[str, Any]:
        """All figures as JSON-ready data."""
        return attrs.asdict(self, value_serializer=_nan_to_none)


def _proportion_interval(successes: int, trials: int, level: float) -> ConfidenceInterval:
    """The Wilson score interval of ``successes / trials`` (undefined when ``trials == 0``)."""
    if trials == 0:
        return ConfidenceInterval(math.nan, math.nan, math.nan, level, _WILSON)
    bounds = binomtest(successes, trials).proportion_ci(confidence_level=level, method="wilson")
    return ConfidenceInterval(
        successes / trials, float(bounds.low), float(bounds.high), level, _WILSON
    )


def _proportion_intervals(
    confusion: NDArray[np.int64], classes: tuple[str, ...], level: float
) -> dict[str, ConfidenceInterval]:
    """Wilson intervals of accuracy and each class's recall, precision and specificity."""
    tp = np.diagonal(confusion)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    total = int(confusion.sum())
    negatives = total - support
    true_negatives = negatives - (predicted - tp)
    intervals = {"accuracy": _proportion_interval(int(tp.sum()), total, level)}
    for c, label in enumerate(classes):
        intervals[f"recall[{label}]"] = _proportion_interval(int(tp[c]), int(support[c]), level)
        intervals[f"precision[{label}]"] = _proportion_interval(
            int(tp[c]), int(predicted[c]), level
        )
        intervals[f"specificity[{label}]"] = _proportion_interval(
            int(true_negatives[c]), int(negatives[c]), level
        )
    return intervals


def _calibration(
    probabilities: NDArray[np.float64], true_idx: NDArray[np.intp], n_bins: int
) -> Calibration:
    k = probabilities.shape[1]
    # The bins of covidcxr.evaluate.reliability_curve, so the two ECE figures agree.
    curve = _bin_confidences(
        probabilities.max(axis=1), probabilities.argmax(axis=1) == true_idx, n_bins
    )
    edges = curve.bin_edges
    bins = tuple(
        ReliabilityBin(edges[b], edges[b + 1], count, confidence, accuracy)
        for b, (count, confidence, accuracy) in enumerate(
            zip(curve.counts, curve.mean_confidence, curve.accuracy, strict=True)
        )
    )
    onehot = np.eye(k)[true_idx]
    brier = float(((probabilities - onehot) ** 2).sum(axis=1).mean())
    return Calibration(
        curve.expected_calibration_error, curve.maximum_calibration_error, brier, bins
    )


def _check_inputs(
    true_labels: Sequence[str], probabilities: Any, classes: Sequence[str]
) -> tuple[NDArray[np.intp], NDArray[np.float64], tuple[str, ...]]:
    classes = tuple(classes)
    if len(classes) < 2:
        raise ConfigurationError(f"classes must name at least two classes, got {classes!r}")
    if len(set(classes)) != len(classes):
        raise ConfigurationError(f"classes must be distinct, got {classes!r}")
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise ConfigurationError(
            f"probabilities must have shape (n_images, {len(classes)}) for classes "
            f"{classes}, got {probs.shape}"
        )
    if probs.shape[0] != len(true_labels):
        raise ConfigurationError(
            f"probabilities has {probs.shape[0]} rows but there are {len(true_labels)} "
            "true labels; they are aligned by position"
        )
    if probs.shape[0] == 0:
        raise ConfigurationError("nothing to evaluate: no images were given")
    if not np.isfinite(probs).all() or (probs < 0).any() or (probs > 1).any():
        raise ConfigurationError("probabilities must be finite and in [0, 1]")
    row_sums = probs.sum(axis=1)
    worst = int(np.argmax(np.abs(row_sums - 1.0)))
    if abs(row_sums[worst] - 1.0) > _ROW_SUM_TOLERANCE:
        raise ConfigurationError(
            f"probability rows must sum to 1; row {worst} sums to {row_sums[worst]:.6f}"
        )
    index = {label: i for i, label in enumerate(classes)}
    try:
        true_idx = np.array([index[label] for label in true_labels], dtype=np.intp)
    except KeyError as exc:
        raise ConfigurationError(
            f"true label {exc.args[0]!r} is not one of the evaluated classes {classes}"
        ) from None
    return true_idx, probs, classes


def classification_metrics(
    true_labels: Sequence[str],
    probabilities: Any,
    classes: Sequence[str],
    *,
    n_bootstrap: int = 1000,
    confidence_level: float = 0.95,
    n_bins: int = 10,
    seed: int = 0,
) -> ClassificationMetrics:
    """Compute every classification figure from true labels and predicted probabilities.

    Parameters
    ----------
    true_labels
        The true class of each image.
    probabilities
        An ``(n_images, n_classes)`` array whose rows sum to 1, columns in ``classes``
        order. The predicted class is each row's most probable one (the first on ties).
    classes
        The class labels of the probability columns.
    n_bootstrap
        Bootstrap resamples for the intervals of the figures that are not proportions
        (macro averages, per-class F1 and AUC); 0 skips them. The proportions (accuracy,
        per-class recall, precision, specificity) always get Wilson score intervals.
    confidence_level
        The interval's coverage, 0.95 for 95 % intervals.
    n_bins
        Equal-width bins of the reliability diagram.
    seed
        Seeds the bootstrap, so the same inputs give the same intervals.

    Returns
    -------
    ClassificationMetrics

    Raises
    ------
    ConfigurationError
        If the shapes disagree, a probability row is not a distribution, a true label is not
        one of ``classes``, or an option is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    >>> m = classification_metrics(["a", "b", "b", "b"], probs, ["a", "b"], n_bootstrap=0)
    >>> m.accuracy, m.scores("b").recall, m.scores("a").precision
    (0.75, 0.6666666666666666, 0.5)
    >>> m.confusion_matrix
    ((1, 0), (1, 2))
    """
    if n_bootstrap < 0:
        raise ConfigurationError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    if not 0.0 < confidence_level < 1.0:
        raise ConfigurationError(f"confidence_level must be in (0, 1), got {confidence_level}")
    if n_bins < 1:
        raise ConfigurationError(f"n_bins must be >= 1, got {n_bins}")
    true_idx, probs, classes = _check_inputs(true_labels, probabilities, classes)
    k = len(classes)
    labels = np.arange(k)
    pred_idx = probs.argmax(axis=1)
    confusion = confusion_matrix(true_idx, pred_idx, labels=labels)
    # zero_division=nan gives this module's conventions: precision of a class never
    # predicted and recall of a class absent from the truth are nan, and F1 is
    # 2 TP / (2 TP + FP + FN), nan only when the class is neither present nor predicted.
    precision, recall, f1, support = precision_recall_fscore_support(
        true_idx, pred_idx, labels=labels, average=None, zero_division=np.nan
    )
    ratios = {
        "precision": np.asarray(precision, dtype=np.float64),
        "recall": np.asarray(recall, dtype=np.float64),
        "specificity": _scores_from_confusion(confusion)["specificity"],
        "f1": np.asarray(f1, dtype=np.float64),
    }
    support = np.asarray(support, dtype=np.float64)

    per_class: list[ClassScores] = []
    curves: list[RocCurve] = []
    aucs = np.full(k, np.nan)
    for c, label in enumerate(classes):
        positive = true_idx == c
        if 0 < positive.sum() < positive.size:
            fpr, tpr, _ = roc_curve(positive, probs[:, c])
            aucs[c] = float(roc_auc_score(positive, probs[:, c]))
            curves.append(RocCurve(label, fpr, tpr, aucs[c]))
        per_class.append(
            ClassScores(
                label=label,
                support=int(support[c]),
                precision=float(ratios["precision"][c]),
                recall=float(ratios["recall"][c]),
                specificity=float(ratios["specificity"][c]),
                f1=float(ratios["f1"][c]),
                auc=float(aucs[c]),
            )
        )

    def average(weights: NDArray[np.float64] | None) -> AveragedScores:
        def avg(values: NDArray[np.float64]) -> float:
            return float(_nanmean(values) if weights is None else _weighted_mean(values, weights))

        return AveragedScores(
            precision=avg(ratios["precision"]),
            recall=avg(ratios["recall"]),
            specificity=avg(ratios["specificity"]),
            f1=avg(ratios["f1"]),
            auc=avg(aucs),
        )

    accuracy = float(accuracy_score(true_idx, pred_idx))
    macro = average(None)
    intervals = _proportion_intervals(confusion, classes, confidence_level)
    if n_bootstrap:
        # The intervals' estimates are the figures reported above; only the resamples are
        # scored by the vectorised _headline.
        point = {
            "macro_precision": macro.precision,
            "macro_recall": macro.recall,
            "macro_f1": macro.f1,
            "macro_auc": macro.auc,
        }
        for scores in per_class:
            point[f"f1[{scores.label}]"] = scores.f1
            point[f"auc[{scores.label}]"] = scores.auc
        bounds = _bootstrap_bounds(
            true_idx,
            pred_idx,
            probs,
            classes,
            n_bootstrap=n_bootstrap,
            confidence_level=confidence_level,
            seed=seed,
        )
        for name, (low, high) in bounds.items():
            intervals[name] = ConfidenceInterval(
                point[name], low, high, confidence_level, _BOOTSTRAP
            )

    return ClassificationMetrics(
        classes=classes,
        n_images=int(true_idx.size),
        accuracy=accuracy,
        per_class=tuple(per_class),
        macro=macro,
        weighted=average(support),
        confusion_matrix=tuple(tuple(int(v) for v in row) for row in confusion),
        roc_curves=tuple(curves),
        calibration=_calibration(probs, true_idx, n_bins),
        intervals=intervals,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
