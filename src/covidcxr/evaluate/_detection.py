"""Detection metrics: IoU, matching, VOC-style AP and COCO-style mAP.

Lesion detection is scored as a single-class problem: every :class:`~covidcxr.Box` of an
image's ground truth is a lesion, and every :class:`~covidcxr.Detection` is a claim that a
lesion is there, whatever its ``label`` says. Images are aligned by position:
``truths[i]`` and ``detections[i]`` belong to the same radiograph.

Matching follows COCO: within each image, detections are visited from the highest score
down and each takes the not-yet-matched truth it overlaps most, if that overlap reaches
the IoU threshold; otherwise (including a second detection of an already-matched lesion)
it is a false positive. Average precision pools the ranked detections of all images and
integrates the precision-recall curve with all-point interpolation (PASCAL VOC 2010 and
later); the COCO figure averages it over the IoU thresholds 0.50, 0.55, ..., 0.95.

Overlap is measured by :func:`~covidcxr.boxes.iou` and :func:`~covidcxr.boxes.iou_matrix`,
which live in :mod:`covidcxr.boxes` with the rest of the box arithmetic and are
re-exported here.

When the ground truth holds no box at all, recall, and with it AP, is undefined: those
functions return ``nan`` rather than a number that would look like a measurement.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np
from attrs import field, frozen
from numpy.typing import NDArray

from covidcxr.boxes import iou, iou_matrix
from covidcxr.records import Box, Detection

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "DetectionMetrics",
    "ImageDetectionFigures",
    "ImageMatch",
    "PrecisionRecallCurve",
    "average_precision",
    "evaluate_detections",
    "iou",
    "iou_matrix",
    "match_detections",
    "mean_average_precision",
]

#: The ten IoU thresholds of COCO's mAP@[.5:.95]: 0.50, 0.55, ..., 0.95.
COCO_IOU_THRESHOLDS: Final[tuple[float, ...]] = tuple(
    round(0.5 + 0.05 * step, 2) for step in range(10)
)


@frozen
class ImageMatch:
    """How one image's detections matched its ground truth at one IoU threshold.

    Parameters
    ----------
    scores
        The detections' scores, in descending order (the order matching visited them).
    true_positive
        For each detection in that order, whether it matched a lesion.
    matched_truth
        For each detection, the index of the truth box it matched, or ``-1``.
    matched_iou
        For each detection, the IoU with the matched truth box (0 when unmatched).
    n_truths
        The number of ground-truth boxes.
    """

    scores: NDArray[np.float64] = field(eq=False)
    true_positive: NDArray[np.bool_] = field(eq=False)
    matched_truth: NDArray[np.intp] = field(eq=False)
    matched_iou: NDArray[np.float64] = field(eq=False)
    n_truths: int

    @property
    def n_true_positives(self) -> int:
        """Detections that matched a lesion."""
        return int(self.true_positive.sum())

    @property
    def n_false_positives(self) -> int:
        """Detections that matched nothing (including duplicates)."""
        return int(self.true_positive.size - self.true_positive.sum())

    @property
    def n_false_negatives(self) -> int:
        """Lesions no detection matched."""
        return self.n_truths - self.n_true_positives


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _check_threshold(iou_threshold: float) -> None:
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")


def match_detections(
    truths: Sequence[Box], detections: Sequence[Detection], iou_threshold: float = 0.5
) -> ImageMatch:
    """Match one image's detections to its ground-truth boxes (COCO-style greedy matching).

    Detections are visited in descending score (ties keep their given order); each takes
    the unmatched truth box it overlaps most if that IoU is at least ``iou_threshold``.

    Parameters
    ----------
    truths
        The image's ground-truth lesion boxes.
    detections
        The image's detections, in any order.
    iou_threshold
        The least IoU that counts as finding a lesion, in ``(0, 1]``.

    Returns
    -------
    ImageMatch
        Per-detection outcome, in descending-score order.

    Examples
    --------
    >>> truth = [Box(0, 0, 10, 10)]
    >>> found = [Detection(Box(0, 0, 10, 10), "opacity", 0.9),
    ...          Detection(Box(1, 0, 10, 10), "opacity", 0.8)]
    >>> match = match_detections(truth, found)
    >>> match.true_positive.tolist(), match.n_false_positives
    ([True, False], 1)
    """
    _check_threshold(iou_threshold)
    scores = np.array([d.score for d in detections], np.float64)
    order = np.argsort(-scores, kind="stable")
    overlaps = iou_matrix([detections[i].box for i in order], truths)
    taken = np.zeros(len(truths), bool)
    matched = np.full(len(detections), -1, np.intp)
    matched_iou = np.zeros(len(detections), np.float64)
    for rank in range(len(detections)):
        if not len(truths):
            break
        candidates = np.where(taken, -1.0, overlaps[rank])
        best = int(np.argmax(candidates))
        # A tiny tolerance so that an IoU of exactly the threshold, computed in floating
        # point, is not lost to rounding.
        if candidates[best] >= iou_threshold - 1e-12:
            taken[best] = True
            matched[rank] = best
            matched_iou[rank] = candidates[best]
    return ImageMatch(
        scores=scores[order],
        true_positive=matched >= 0,
        matched_truth=matched,
        matched_iou=matched_iou,
        n_truths=len(truths),
    )


def _check_aligned(
    truths: Sequence[Sequence[Box]], detections: Sequence[Sequence[Detection]]
) -> None:
    if len(truths) != len(detections):
        raise ValueError(
            f"truths and detections must hold one entry per image, got {len(truths)} "
            f"truth lists and {len(detections)} detection lists"
        )


@frozen
class PrecisionRecallCurve:
    """The detection precision-recall curve at one IoU threshold, pooled over images.

    The pooled detections are ranked by descending score; point ``i`` is the precision
    and recall of keeping the ``i + 1`` best (the operating point of score threshold
    ``scores[i]``). :attr:`interpolated_precision` is the all-point interpolation (the
    best precision at any recall at least as high), whose area is the AP.

    Parameters
    ----------
    iou_threshold
        The least IoU that counted as finding a lesion.
    scores
        The detections' scores, in descending order.
    precision, recall
        At each rank.
    interpolated_precision
        The precision envelope the AP integrates.
    n_truths
        Ground-truth boxes, the denominator of recall.
    average_precision
        The area under the interpolated curve (``nan`` without ground-truth boxes).
    """

    iou_threshold: float
    scores: tuple[float, ...] = field(converter=_floats)
    precision: tuple[float, ...] = field(converter=_floats)
    recall: tuple[float, ...] = field(converter=_floats)
    interpolated_precision: tuple[float, ...] = field(converter=_floats)
    n_truths: int
    average_precision: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable curve (``nan`` becomes ``None``)."""
        return {
            "iou_threshold": self.iou_threshold,
            "scores": list(self.scores),
            "precision": list(self.precision),
            "recall": [_json_number(r) for r in self.recall],
            "interpolated_precision": list(self.interpolated_precision),
            "n_truths": self.n_truths,
            "average_precision": _json_number(self.average_precision),
        }


def _precision_recall_curve(
    matches: Sequence[ImageMatch], iou_threshold: float
) -> PrecisionRecallCurve:
    """Rank the pooled detections of ``matches`` and integrate the all-point AP."""
    n_truths = sum(match.n_truths for match in matches)
    if matches and any(match.scores.size for match in matches):
        scores = np.concatenate([match.scores for match in matches])
        hits = np.concatenate([match.true_positive for match in matches])
    else:
        scores, hits = np.zeros(0), np.zeros(0, bool)
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], hits[order]
    true_positives = np.cumsum(hits)
    false_positives = np.cumsum(~hits)
    precision = true_positives / np.maximum(true_positives + false_positives, 1)
    recall = true_positives / n_truths if n_truths else np.full(scores.size, np.nan)
    # All-point interpolation: the precision at recall r is the best precision at any
    # recall >= r; the area is then a sum of rectangles where recall steps up.
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if precision.size else precision
    if n_truths == 0:
        ap = math.nan
    elif scores.size == 0:
        ap = 0.0
    else:
        edges = np.concatenate(([0.0], recall, [1.0]))
        heights = np.concatenate(([0.0], envelope, [0.0]))
        steps = np.flatnonzero(edges[1:] != edges[:-1])
        ap = float(np.sum((edges[steps + 1] - edges[steps]) * heights[steps + 1]))
    return PrecisionRecallCurve(
        iou_threshold=iou_threshold,
        scores=scores,
        precision=precision,
        recall=recall,
        interpolated_precision=envelope,
        n_truths=n_truths,
        average_precision=ap,
    )


def _all_point_ap(matches: Sequence[ImageMatch]) -> float:
    return _precision_recall_curve(matches, math.nan).average_precision


def _matches(
    truths: Sequence[Sequence[Box]],
    detections: Sequence[Sequence[Detection]],
    iou_threshold: float,
) -> list[ImageMatch]:
    _check_aligned(truths, detections)
    return [
        match_detections(image_truths, image_detections, iou_threshold)
        for image_truths, image_detections in zip(truths, detections, strict=True)
    ]


def average_precision(
    truths: Sequence[Sequence[Box]],
    detections: Sequence[Sequence[Detection]],
    iou_threshold: float = 0.5,
) -> float:
    """VOC-style average precision over a data set, with all-point interpolation.

    Parameters
    ----------
    truths
        One sequence of ground-truth boxes per image.
    detections
        One sequence of detections per image, aligned with ``truths``.
    iou_threshold
        The least IoU that counts as finding a lesion.

    Returns
    -------
    float
        AP in ``[0, 1]``; ``nan`` when ``truths`` holds no box at all (recall undefined).

    Raises
    ------
    ValueError
        If ``truths`` and ``detections`` have different lengths, or the threshold is not
        in ``(0, 1]``.

    Examples
    --------
    >>> truths = [[Box(0, 0, 10, 10)], [Box(0, 0, 8, 8)]]
    >>> detections = [[Detection(Box(0, 0, 10, 10), "opacity", 0.9)],
    ...               [Detection(Box(30, 30, 8, 8), "opacity", 0.8)]]
    >>> average_precision(truths, detections)
    0.5
    """
    return _all_point_ap(_matches(truths, detections, iou_threshold))


def mean_average_precision(
    truths: Sequence[Sequence[Box]],
    detections: Sequence[Sequence[Detection]],
    iou_thresholds: Iterable[float] = np.arange(0.5, 0.96, 0.05),
) -> float:
    """COCO-style mAP: :func:`average_precision` averaged over IoU thresholds.

    COCO's thresholds, but each AP integrates the precision-recall curve at every point
    (as :func:`average_precision` does), where pycocotools samples it at 101 recall levels:
    the two can differ in the third decimal.

    Parameters
    ----------
    truths, detections
        As for :func:`average_precision`.
    iou_thresholds
        The IoU thresholds to average over; COCO's 0.50:0.05:0.95 by default.

    Returns
    -------
    float
        The mean AP in ``[0, 1]``, or ``nan`` when ``truths`` holds no box.

    Examples
    --------
    >>> truths = [[Box(0, 0, 10, 10)]]
    >>> mean_average_precision(truths, [[Detection(Box(0, 0, 10, 10), "opacity", 0.7)]])
    1.0
    >>> mean_average_precision(truths, [[Detection(Box(0, 0, 10, 8), "opacity", 0.7)]])
    0.7
    """
    thresholds = [float(t) for t in iou_thresholds]
    if not thresholds:
        raise ValueError("iou_thresholds must not be empty")
    values = [average_precision(truths, detections, t) for t in thresholds]
    return float(np.mean(values))


@frozen
class ImageDetectionFigures:
    """Counts for one image at IoU 0.5, counting every detection given.

    Parameters
    ----------
    index
        The image's position in the evaluated sequences.
    n_truths, n_detections
        Ground-truth boxes and detections in the image.
    true_positives, false_positives, false_negatives
        Matching outcome at IoU 0.5.
    mean_matched_iou
        Mean IoU of the matched pairs (``nan`` when nothing matched).
    average_precision
        The image's own AP@0.5 (``nan`` when it has no ground-truth box).
    id
        The radiograph's id, when the caller gave ids (the evaluator does): ``index``
        counts only the images scored, so the id is what names the image.
    """

    index: int
    n_truths: int
    n_detections: int
    true_positives: int
    false_positives: int
    false_negatives: int
    mean_matched_iou: float
    average_precision: float
    id: str | None = None


@frozen
class DetectionMetrics:
    """Detection figures for a data set, from :func:`evaluate_detections`.

    ``nan`` marks a figure that is undefined for the data (AP or recall without any
    ground-truth box, precision without any detection); :meth:`to_dict` writes it as
    ``None`` (JSON ``null``).

    Parameters
    ----------
    ap50
        VOC-style AP at IoU 0.5.
    map_50_95
        COCO-style mAP over IoU 0.50:0.05:0.95.
    ap_by_iou
        AP at each IoU threshold.
    precision, recall
        At each IoU threshold, counting every detection given (apply a score threshold
        before evaluating, or pass ``score_threshold``, to pick an operating point).
    n_images, n_truths, n_detections
        Totals.
    per_image
        One :class:`ImageDetectionFigures` per image, in input order.
    pr_curve
        The precision-recall curve at IoU 0.5, from the same matching as ``ap50``.
    """

    ap50: float
    map_50_95: float
    ap_by_iou: Mapping[float, float]
    precision: Mapping[float, float]
    recall: Mapping[float, float]
    n_images: int
    n_truths: int
    n_detections: int
    per_image: tuple[ImageDetectionFigures, ...] = field(repr=False)
    pr_curve: PrecisionRecallCurve | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable figures (``nan`` becomes ``None``).

        Examples
        --------
        >>> metrics = evaluate_detections([[Box(0, 0, 4, 4)]], [[]])
        >>> metrics.to_dict()["ap50"], metrics.to_dict()["n_truths"]
        (0.0, 1)
        """

        def by_iou(values: Mapping[float, float]) -> dict[str, float | None]:
            return {f"{t:.2f}": _json_number(v) for t, v in values.items()}

        return {
            "ap50": _json_number(self.ap50),
            "map_50_95": _json_number(self.map_50_95),
            "ap_by_iou": by_iou(self.ap_by_iou),
            "precision": by_iou(self.precision),
            "recall": by_iou(self.recall),
            "n_images": self.n_images,
            "n_truths": self.n_truths,
            "n_detections": self.n_detections,
            "per_image": [
                {
                    "index": fig.index,
                    "id": fig.id,
                    "n_truths": fig.n_truths,
                    "n_detections": fig.n_detections,
                    "true_positives": fig.true_positives,
                    "false_positives": fig.false_positives,
                    "false_negatives": fig.false_negatives,
                    "mean_matched_iou": _json_number(fig.mean_matched_iou),
                    "average_precision": _json_number(fig.average_precision),
                }
                for fig in self.per_image
            ],
            "pr_curve": self.pr_curve.to_dict() if self.pr_curve is not None else None,
        }


def evaluate_detections(
    truths: Sequence[Sequence[Box]],
    detections: Sequence[Sequence[Detection]],
    *,
    iou_thresholds: Iterable[float] = COCO_IOU_THRESHOLDS,
    score_threshold: float = 0.0,
    ids: Sequence[str] | None = None,
) -> DetectionMetrics:
    """Compute AP@0.5, mAP@[.5:.95], precision/recall per IoU and per-image figures.

    Parameters
    ----------
    truths
        One sequence of ground-truth boxes per image (``[xray.boxes for xray in xrays]``).
    detections
        One sequence of detections per image, aligned with ``truths``.
    iou_thresholds
        Thresholds for :attr:`DetectionMetrics.ap_by_iou`, precision and recall; the
        mAP averages over them. Must include 0.5 (for ``ap50``).
    score_threshold
        Detections scoring below this are dropped before anything is computed.
    ids
        The images' ids, aligned with ``truths``: they name the per-image rows.

    Returns
    -------
    DetectionMetrics

    Examples
    --------
    >>> truths = [[Box(0, 0, 10, 10)], []]
    >>> detections = [[Detection(Box(0, 0, 10, 10), "opacity", 0.9)],
    ...               [Detection(Box(0, 0, 5, 5), "opacity", 0.4)]]
    >>> metrics = evaluate_detections(truths, detections)
    >>> metrics.ap50, metrics.precision[0.5], metrics.recall[0.5]
    (1.0, 0.5, 1.0)
    """
    _check_aligned(truths, detections)
    if ids is not None and len(ids) != len(truths):
        raise ValueError(f"ids must hold one id per image: {len(ids)} ids, {len(truths)} images")
    thresholds = tuple(sorted({round(float(t), 6) for t in iou_thresholds}))
    if 0.5 not in thresholds:
        raise ValueError(f"iou_thresholds must include 0.5, got {thresholds}")
    kept = [[d for d in image if d.score >= score_threshold] for image in detections]
    n_truths = sum(len(image) for image in truths)
    n_detections = sum(len(image) for image in kept)

    ap_by_iou: dict[float, float] = {}
    precision: dict[float, float] = {}
    recall: dict[float, float] = {}
    matches_at_half: list[ImageMatch] = []
    for threshold in thresholds:
        matches = _matches(truths, kept, threshold)
        if threshold == 0.5:
            matches_at_half = matches
        found = sum(match.n_true_positives for match in matches)
        ap_by_iou[threshold] = _all_point_ap(matches)
        precision[threshold] = found / n_detections if n_detections else math.nan
        recall[threshold] = found / n_truths if n_truths else math.nan

    per_image = tuple(
        ImageDetectionFigures(
            index=index,
            n_truths=match.n_truths,
            n_detections=int(match.scores.size),
            true_positives=match.n_true_positives,
            false_positives=match.n_false_positives,
            false_negatives=match.n_false_negatives,
            mean_matched_iou=(
                float(match.matched_iou[match.true_positive].mean())
                if match.n_true_positives
                else math.nan
            ),
            average_precision=_all_point_ap([match]),
            id=None if ids is None else str(ids[index]),
        )
        for index, match in enumerate(matches_at_half)
    )
    return DetectionMetrics(
        ap50=ap_by_iou[0.5],
        map_50_95=float(np.mean(list(ap_by_iou.values()))),
        ap_by_iou=ap_by_iou,
        precision=precision,
        recall=recall,
        n_images=len(truths),
        n_truths=n_truths,
        n_detections=n_detections,
        per_image=per_image,
        pr_curve=_precision_recall_curve(matches_at_half, 0.5),
    )
