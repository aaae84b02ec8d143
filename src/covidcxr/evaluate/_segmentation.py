"""Segmentation scores: Dice and IoU (Jaccard) of predicted masks against true ones."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
import numpy as np
from attrs import frozen
from numpy.typing import NDArray

__all__ = ["SegmentationScores", "SeverityByClass", "segmentation_scores", "severity_by_class"]


@frozen
class SegmentationScores:
    """Dice and IoU over a set of images, two ways.

    Parameters
    ----------
    n_images
        Images scored.
    dice, iou
        The mean over images of each image's Dice and IoU (an image where both masks are
        empty scores 1: nothing to find, nothing found).
    pooled_dice, pooled_iou
        Dice and IoU of all pixels of all images together (large masks weigh more).
    dice_std, iou_std
        The spread (standard deviation) of the per-image scores.
    """

    n_images: int
    dice: float
    iou: float
    pooled_dice: float
    pooled_iou: float
    dice_std: float
    iou_std: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return attrs.asdict(self)


def segmentation_scores(
    pairs: Iterable[tuple[NDArray[Any], NDArray[Any]]],
) -> SegmentationScores:
    """Score ``(predicted, true)`` mask pairs (anything non-zero is inside the mask).

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.zeros((4, 4), bool)
    >>> truth[:2] = True
    >>> predicted = np.zeros((4, 4), bool)
    >>> predicted[:1] = True
    >>> scores = segmentation_scores([(predicted, truth), (truth, truth)])
    >>> round(scores.dice, 3), round(scores.iou, 3), round(scores.pooled_dice, 3)
    (0.833, 0.75, 0.857)
    """
    dices: list[float] = []
    ious: list[float] = []
    intersection_total = predicted_total = true_total = 0
    for predicted, true in pairs:
        p, t = np.asarray(predicted) != 0, np.asarray(true) != 0
        if p.shape != t.shape:
            raise ValueError(f"mask shapes differ: predicted {p.shape}, true {t.shape}")
        intersection = int(np.count_nonzero(p & t))
        n_p, n_t = int(np.count_nonzero(p)), int(np.count_nonzero(t))
        union = n_p + n_t - intersection
        dices.append(2.0 * intersection / (n_p + n_t) if n_p + n_t else 1.0)
        ious.append(intersection / union if union else 1.0)
        intersection_total += intersection
        predicted_total += n_p
        true_total += n_t
    if not dices:
        raise ValueError("no masks to score")
    union_total = predicted_total + true_total - intersection_total
    both = predicted_total + true_total
    return SegmentationScores(
        n_images=len(dices),
        dice=float(np.mean(dices)),
        iou=float(np.mean(ious)),
        pooled_dice=2.0 * intersection_total / both if both else 1.0,
        pooled_iou=intersection_total / union_total if union_total else 1.0,
        dice_std=float(np.std(dices)),
        iou_std=float(np.std(ious)),
    )


@frozen
class SeverityByClass:
    """The severity the predictions measured, for the radiographs of one true class.

    Parameters
    ----------
    label
        The true class.
    n_images
        Radiographs of the class with a severity (diagnosed, lungs found).
    mean_total
        Mean infected share of both lungs.
    score_counts
        How many radiographs had each extent score, 0 to 8 (nine counts).
    """

    label: str
    n_images: int
    mean_total: float
    score_counts: tuple[int, ...]

    @property
    def median_score(self) -> float:
        """The median extent score."""
        scores = np.repeat(np.arange(len(self.score_counts)), self.score_counts)
        return float(np.median(scores)) if scores.size else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {**attrs.asdict(self), "median_score": self.median_score}


def severity_by_class(
    labels: Iterable[str | None], severities: Iterable[Any]
) -> tuple[SeverityByClass, ...]:
    """Summarise :class:`~covidcxr.Severity` measurements by true class.

    Radiographs without a severity (or a label) are left out; classes with none at all
    are not listed.

    Examples
    --------
    >>> from covidcxr import Severity
    >>> rows = severity_by_class(
    ...     ["covid-19", "covid-19", "normal"],
    ...     [Severity(0.5, 0.3, 0.4), Severity(0.1, 0.0, 0.05), Severity(0, 0, 0)],
    ... )
    >>> [(r.label, r.n_images, round(r.mean_total, 3), r.median_score) for r in rows]
    [('covid-19', 2, 0.225, 3.0), ('normal', 1, 0.0, 0.0)]
    """
    grouped: dict[str, list[Any]] = {}
    for label, severity in zip(labels, severities, strict=True):
        if severity is not None and label is not None:
            grouped.setdefault(str(label), []).append(severity)
    rows = []
    for label in sorted(grouped):
        measured = grouped[label]
        counts = np.bincount([s.score for s in measured], minlength=9)[:9]
        rows.append(
            SeverityByClass(
                label=label,
                n_images=len(measured),
                mean_total=float(np.mean([s.total for s in measured])),
                score_counts=tuple(int(c) for c in counts),
            )
        )
    return tuple(rows)
