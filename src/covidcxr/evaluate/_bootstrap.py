"""The bootstrap of :func:`~covidcxr.evaluate.classification_metrics`, vectorised.

The bootstrap serves the figures that are not simple proportions: macro averages, and
each class's F1 and one-vs-rest AUC (accuracy, recall, precision and specificity are
binomial proportions and get Wilson score intervals instead, see
:mod:`covidcxr.evaluate._metrics`). Intervals come from a *stratified* percentile
bootstrap: each resample keeps the number of images of each true class, so no class
vanishes from a resample and recall, F1 and AUC stay defined. A class's *precision* is
undefined in a resample that never predicts it; macro precision is averaged over the same
classes in every resample (those the whole sample predicts, as the point figure is), a
class that a resample never predicts counting 0 there (nothing was correctly called it, as
scikit-learn's ``zero_division=0``), so that the percentiles are of one figure, not of
averages over different sets of classes. The resampling is seeded, so the
same inputs give the same intervals. A bootstrap whose percentile bounds coincide (every
resample, or nearly every one, gave the same value, as with a perfect classifier) says
nothing about the uncertainty: its bounds are reported as undefined (``nan``), never as a
zero-width interval.

scikit-learn would score the resamples one call at a time; here every function works on
a whole batch of them at once: confusion matrices of shape ``(..., k, k)``, ratios and
AUCs along the last axis. The resamples are scored in chunks of a bounded size
(:data:`_CHUNK_ELEMENTS` row indices), so memory stays flat however many resamples are
asked for (scoring all 1,000 default resamples of 2,000 images at once took 180 MB); the
draws, and so the intervals, are those of drawing every resample at once. The ratio
helpers (:func:`_divide`, :func:`_nanmean`, ...) are shared with the point figures, so both
follow the same conventions: a ratio with a zero denominator is ``nan``, and averages skip
``nan``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

__all__: list[str] = []

#: Resampled row indices scored at once. The scoring holds a few arrays of this many
#: elements per class (indices, probabilities, ranks): some 2**18 keep a chunk to tens of
#: megabytes whatever the number of resamples, and large enough that numpy's per-call
#: overhead stays negligible.
_CHUNK_ELEMENTS: Final = 2**18


def _divide(numerator: NDArray[Any], denominator: NDArray[Any]) -> NDArray[np.float64]:
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _scores_from_confusion(confusion: NDArray[np.int64]) -> dict[str, NDArray[np.float64]]:
    """Per-class ratios from confusion matrices of shape ``(..., k, k)``."""
    tp = np.diagonal(confusion, axis1=-2, axis2=-1).astype(np.float64)
    support = confusion.sum(axis=-1)
    predicted = confusion.sum(axis=-2)
    total = confusion.sum(axis=(-2, -1))[..., None]
    fp = predicted - tp
    fn = support - tp
    tn = total - tp - fp - fn
    return {
        "accuracy": _divide(tp.sum(axis=-1), total[..., 0]),
        "precision": _divide(tp, predicted),
        "recall": _divide(tp, support),
        "specificity": _divide(tn, tn + fp),
        "f1": _divide(2 * tp, 2 * tp + fp + fn),
        "support": support.astype(np.float64),
    }


def _nanmean(values: NDArray[np.float64], axis: int = -1) -> NDArray[np.float64]:
    defined = ~np.isnan(values)
    count = defined.sum(axis=axis)
    total = np.where(defined, values, 0.0).sum(axis=axis)
    return _divide(total, count)


def _weighted_mean(
    values: NDArray[np.float64], weights: NDArray[np.float64]
) -> NDArray[np.float64]:
    defined = ~np.isnan(values)
    w = np.where(defined, weights, 0.0)
    return _divide((np.where(defined, values, 0.0) * w).sum(axis=-1), w.sum(axis=-1))


def _rank_auc(scores: NDArray[np.float64], positive: NDArray[np.bool_]) -> NDArray[np.float64]:
    """One-vs-rest AUC along the last axis: P(score_pos > score_neg) + P(tie) / 2.

    Works on a batch of rows at once (the bootstrap): scores are replaced by their dense
    rank over the whole batch, and each row's positives and negatives are counted per rank.
    """
    _, dense = np.unique(scores, return_inverse=True)
    dense = dense.reshape(scores.shape)
    n_ranks = int(dense.max()) + 1
    rows = dense.reshape(-1, scores.shape[-1])
    is_pos = positive.reshape(rows.shape)
    offsets = (np.arange(rows.shape[0]) * n_ranks)[:, None]
    size = rows.shape[0] * n_ranks
    pos = np.bincount((offsets + rows)[is_pos], minlength=size).reshape(-1, n_ranks)
    neg = np.bincount((offsets + rows)[~is_pos], minlength=size).reshape(-1, n_ranks)
    below = np.cumsum(neg, axis=1) - neg
    wins = (pos * (below + 0.5 * neg)).sum(axis=1)
    n_pos = pos.sum(axis=1)
    n_neg = neg.sum(axis=1)
    auc = _divide(wins, n_pos * n_neg)
    return auc.reshape(scores.shape[:-1])


def _confusion(true_idx: NDArray[np.intp], pred_idx: NDArray[np.intp], k: int) -> NDArray[np.int64]:
    """Confusion matrices for index arrays of shape ``(..., n)``; result ``(..., k, k)``."""
    batch_shape = true_idx.shape[:-1]
    n_batches = int(np.prod(batch_shape)) if batch_shape else 1
    flat_true = true_idx.reshape(n_batches, -1)
    flat_pred = pred_idx.reshape(n_batches, -1)
    offsets = (np.arange(n_batches) * k * k)[:, None]
    codes = (offsets + flat_true * k + flat_pred).ravel()
    counts = np.bincount(codes, minlength=n_batches * k * k)
    return counts.reshape(*batch_shape, k, k).astype(np.int64)


def _stratified_resamples(
    true_idx: NDArray[np.intp], n_resamples: int, rng: np.random.Generator
) -> Iterator[NDArray[np.intp]]:
    """Row indices of ``n_resamples`` bootstrap samples, each keeping every class's count.

    Yields them in chunks of consecutive resamples (about :data:`_CHUNK_ELEMENTS` indices
    each), so memory does not grow with ``n_resamples``. The draws are those of drawing
    each class's ``(n_resamples, class size)`` block at once, class after class, from
    ``rng``: a first pass walks the stream in chunks and keeps a copy of the generator
    where each class's block starts; the second draws every chunk's rows from those
    copies. (numpy's bounded integers drawn in consecutive calls continue one stream, so
    rows drawn chunk by chunk are the rows one call would draw.)
    """
    n = true_idx.shape[0]
    chunk = max(1, _CHUNK_ELEMENTS // max(1, n))
    classes = [np.flatnonzero(true_idx == c) for c in np.unique(true_idx)]
    starts = []
    for members in classes:
        starts.append(copy.deepcopy(rng))
        for first in range(0, n_resamples, chunk):
            rng.integers(0, members.size, size=(min(chunk, n_resamples - first), members.size))
    for first in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - first)
        samples = np.empty((size, n), dtype=np.intp)
        start = 0
        for members, stream in zip(classes, starts, strict=True):
            draws = stream.integers(0, members.size, size=(size, members.size))
            samples[:, start : start + members.size] = members[draws]
            start += members.size
        yield samples


def _headline(
    true_idx: NDArray[np.intp],
    pred_idx: NDArray[np.intp],
    probabilities: NDArray[np.float64],
    classes: tuple[str, ...],
    predicted: NDArray[np.bool_],
) -> dict[str, NDArray[np.float64]]:
    """The bootstrapped figures for index arrays of shape ``(..., n)``, as arrays of ``(...)``.

    Only the figures that are not simple proportions: macro averages, per-class F1 and AUC.
    Macro precision averages the classes ``predicted`` marks (those the whole sample
    predicts), an undefined precision counting 0 (see the module's docstring).
    """
    k = len(classes)
    ratios = _scores_from_confusion(_confusion(true_idx, pred_idx, k))
    aucs = np.stack([_rank_auc(probabilities[..., c], true_idx == c) for c in range(k)], axis=-1)
    precision = np.nan_to_num(ratios["precision"][..., predicted], nan=0.0)
    figures = {
        "macro_precision": _nanmean(precision),
        "macro_recall": _nanmean(ratios["recall"]),
        "macro_f1": _nanmean(ratios["f1"]),
        "macro_auc": _nanmean(aucs),
    }
    for c, label in enumerate(classes):
        figures[f"f1[{label}]"] = ratios["f1"][..., c]
        figures[f"auc[{label}]"] = aucs[..., c]
    return figures


def _bootstrap_bounds(
    true_idx: NDArray[np.intp],
    pred_idx: NDArray[np.intp],
    probabilities: NDArray[np.float64],
    classes: tuple[str, ...],
    *,
    n_bootstrap: int,
    confidence_level: float,
    seed: int,
) -> dict[str, tuple[float, float]]:
    """``{figure: (low, high)}``: percentile bounds of the headline figures over resamples.

    Bounds are ``nan`` when no resample defines the figure, and when they coincide: a
    zero-width interval would read as certainty, while it only says the resamples did not
    vary.
    """
    rng = np.random.default_rng(seed)
    predicted = np.bincount(pred_idx, minlength=len(classes)) > 0
    chunks: dict[str, list[NDArray[np.float64]]] = {}
    for rows in _stratified_resamples(true_idx, n_bootstrap, rng):
        figures = _headline(true_idx[rows], pred_idx[rows], probabilities[rows], classes, predicted)
        for name, values in figures.items():
            chunks.setdefault(name, []).append(values)
    resampled = {name: np.concatenate(values) for name, values in chunks.items()}
    tail = (1.0 - confidence_level) / 2 * 100
    bounds: dict[str, tuple[float, float]] = {}
    for name, values in resampled.items():
        defined = values[~np.isnan(values)]
        low, high = np.percentile(defined, [tail, 100 - tail]) if defined.size else (math.nan,) * 2
        if low == high:
            low = high = math.nan
        bounds[name] = (float(low), float(high))
    return bounds
