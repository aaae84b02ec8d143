"""Calibration, operating points, abstention and risk-coverage, on plain probability arrays.

Everything here reads an ``(n_items, n_classes)`` probability matrix (rows sum to 1) and,
where something is fitted or scored, the true class of each row: integer indices into
the columns, or class names together with ``classes``. Nothing here knows about
:class:`~covidcxr.XRay` records or models, so any :class:`~covidcxr.Classifier` can be
calibrated and given operating points; the :class:`~covidcxr.Pipeline` fits them on its
validation data and applies them in ``predict``.

Definitions, written once so that the report, the docs and the tests agree:

- **Top-label confidence** of a row: its largest probability. It is *right* when that
  column (the first on ties) is the true class.
- **Reliability bins**: ``n_bins`` equal-width bins of the confidence, ``(lower, upper]``
  (a confidence of exactly 0 joins the first bin). **Expected calibration error (ECE)**:
  ``sum_b (n_b / n) * |accuracy_b - mean_confidence_b|`` over the non-empty bins
  (Naeini et al. 2015; Guo et al. 2017), 0 for a perfectly calibrated classifier.
- **Temperature scaling** (Guo et al. 2017): ``softmax(log(p) / T)`` with one ``T > 0``
  fitted by minimising the negative log-likelihood on held-out data. Logits are the
  log-probabilities up to a constant per row, which the softmax ignores, so working from
  probabilities loses nothing but the probabilities that rounded to 0: those are clipped
  at :data:`_EPSILON` (``1e-12``) before the logarithm. ``T`` changes no row's order, so
  the predicted class never changes.
- **Selective risk** at coverage ``c``: the error rate among the most confident share
  ``c`` of the items. The **risk-coverage curve** has one point per distinct confidence
  (ties are kept or dropped together); **AURC** is the area under that step curve,
  ``sum_g (coverage_g - coverage_{g-1}) * risk_g``, which without ties is the mean of the
  selective risk over coverages ``1/n, 2/n, ..., 1`` (Geifman & El-Yaniv 2017).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs
import numpy as np
from attrs import field, frozen
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax

from covidcxr._params import Estimator
from covidcxr.errors import ConfigurationError

# The label of a prediction the model declined to make (its confidence was below the
# abstention threshold of OperatingPoints); defined with Prediction, re-exported here.
from covidcxr.records import UNCERTAIN

__all__ = [
    "BIAS_CORRECTED",
    "UNCERTAIN",
    "BiasCorrectedTemperatureScaling",
    "CalibrationSummary",
    "CalibrationWarning",
    "ClassOperatingPoint",
    "DecisionScores",
    "OperatingPoints",
    "ReliabilityCurve",
    "RiskCoverageCurve",
    "TemperatureScaling",
    "calibration_from_dict",
    "decision_scores",
    "expected_calibration_error",
    "reliability_curve",
    "risk_coverage_curve",
]


# Probabilities are clipped here before their logarithm is taken.
_EPSILON: Final = 1e-12
# Probability rows may sum to 1 only up to float32 rounding (softmax outputs).
_ROW_SUM_TOLERANCE: Final = 1e-3
# Below this many labelled items temperature scaling is refused; below the second a
# CalibrationWarning says the temperature is poorly determined.
_MIN_CALIBRATION_ITEMS: Final = 10
_FEW_CALIBRATION_ITEMS: Final = 50
# A target sensitivity met only with this specificity or less calls nearly everything
# the class: OperatingPoints.fit warns.
_NEARLY_EVERYTHING_SPECIFICITY: Final = 0.1


class CalibrationWarning(UserWarning):
    """A calibration or an operating point was fitted, but on data that say little.

    Issued by :meth:`TemperatureScaling.fit` for a small or single-class fitting set or a
    temperature at the edge of its search range, and by :meth:`OperatingPoints.fit` when a
    target sensitivity is met only by calling nearly every item that class.
    """


def _nan_to_none(instance: object, attribute: attrs.Attribute[Any] | None, value: Any) -> Any:
    # attrs.asdict's value_serializer: undefined figures (nan) become JSON null.
    return None if isinstance(value, float) and math.isnan(value) else value


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _ints(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _float_or_nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def _check_probabilities(probabilities: ArrayLike) -> NDArray[np.float64]:
    """``probabilities`` as a float matrix whose rows are distributions, or an error."""
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ConfigurationError(
            f"probabilities must have shape (n_items, n_classes) with at least two classes, "
            f"got {probs.shape}"
        )
    if probs.shape[0] == 0:
        raise ConfigurationError("probabilities has no rows: nothing to work on")
    if not np.isfinite(probs).all():
        row = int(np.argwhere(~np.isfinite(probs))[0, 0])
        raise ConfigurationError(f"probabilities must be finite; row {row} is not")
    if (probs < 0).any() or (probs > 1).any():
        raise ConfigurationError("probabilities must be in [0, 1]")
    row_sums = probs.sum(axis=1)
    worst = int(np.argmax(np.abs(row_sums - 1.0)))
    if abs(row_sums[worst] - 1.0) > _ROW_SUM_TOLERANCE:
        raise ConfigurationError(
            f"probability rows must sum to 1; row {worst} sums to {row_sums[worst]:.6f}"
        )
    return probs


def _label_indices(
    labels: ArrayLike | Sequence[str], n_rows: int, n_classes: int, classes: Sequence[str] | None
) -> NDArray[np.intp]:
    """The true class of each row as column indices, or an error naming the bad label."""
    if classes is not None:
        classes = tuple(classes)
        if len(classes) != n_classes:
            raise ConfigurationError(
                f"{len(classes)} classes were given for {n_classes} probability columns"
            )
        index = {label: i for i, label in enumerate(classes)}
        names: list[Any] = list(labels)  # type: ignore[arg-type]
        unknown = [label for label in names if label not in index]
        if unknown:
            raise ConfigurationError(f"label {unknown[0]!r} is not one of the classes {classes}")
        result = np.array([index[label] for label in names], dtype=np.intp)
    else:
        raw = np.asarray(labels)
        if raw.ndim != 1 or (raw.size and not np.issubdtype(raw.dtype, np.integer)):
            raise ConfigurationError(
                "labels must be integer column indices (or class names with classes=...), "
                f"got an array of {raw.dtype} with shape {raw.shape}"
            )
        result = raw.astype(np.intp)
        outside = (result < 0) | (result >= n_classes)
        if outside.any():
            raise ConfigurationError(
                f"label {int(result[outside][0])} is outside the {n_classes} classes "
                f"(indices 0 to {n_classes - 1})"
            )
    if result.shape != (n_rows,):
        raise ConfigurationError(
            f"{result.size} labels were given for {n_rows} probability rows; they are "
            "aligned by position"
        )
    return result


def _check_n_bins(n_bins: int) -> None:
    if n_bins < 1:
        raise ConfigurationError(f"n_bins must be >= 1, got {n_bins}")


# ---------------------------------------------------------------------------------------
# Calibration measures


@frozen
class ReliabilityCurve:
    """Top-label confidence against accuracy in equal-width bins, and the ECE it gives.

    Parameters
    ----------
    bin_edges
        ``n_bins + 1`` edges from 0 to 1; bin ``b`` holds confidences in
        ``(bin_edges[b], bin_edges[b + 1]]`` (a confidence of 0 joins the first bin).
    counts
        Items per bin.
    mean_confidence, accuracy
        Per bin, the mean top-label confidence and the share of right answers; ``nan``
        for an empty bin.
    expected_calibration_error
        ``sum_b (counts[b] / n) * |accuracy[b] - mean_confidence[b]|`` over non-empty bins.
    maximum_calibration_error
        The largest ``|accuracy[b] - mean_confidence[b]|`` over non-empty bins.
    """

    bin_edges: tuple[float, ...] = field(converter=_floats)
    counts: tuple[int, ...] = field(converter=_ints)
    mean_confidence: tuple[float, ...] = field(converter=_floats)
    accuracy: tuple[float, ...] = field(converter=_floats)
    expected_calibration_error: float
    maximum_calibration_error: float

    @property
    def n_items(self) -> int:
        """How many items were binned."""
        return sum(self.counts)

    def to_dict(self) -> dict[str, Any]:
        """The curve as JSON-ready data (``nan`` becomes ``None``)."""
        return {
            "bin_edges": list(self.bin_edges),
            "counts": list(self.counts),
            "mean_confidence": [_nan_to_none(None, None, v) for v in self.mean_confidence],
            "accuracy": [_nan_to_none(None, None, v) for v in self.accuracy],
            "expected_calibration_error": self.expected_calibration_error,
            "maximum_calibration_error": self.maximum_calibration_error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReliabilityCurve:
        """The curve :meth:`to_dict` wrote."""
        return cls(
            bin_edges=data["bin_edges"],
            counts=data["counts"],
            mean_confidence=[_float_or_nan(v) for v in data["mean_confidence"]],
            accuracy=[_float_or_nan(v) for v in data["accuracy"]],
            expected_calibration_error=float(data["expected_calibration_error"]),
            maximum_calibration_error=float(data["maximum_calibration_error"]),
        )


def _bin_confidences(
    confidence: NDArray[np.float64], correct: NDArray[np.bool_], n_bins: int
) -> ReliabilityCurve:
    """The reliability curve of top-label ``confidence`` and whether each was ``correct``."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bins are (lower, upper]; a confidence of exactly 0 joins the first bin.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    filled = counts > 0
    sums = np.bincount(which, weights=confidence, minlength=n_bins)
    hits = np.bincount(which, weights=correct.astype(np.float64), minlength=n_bins)
    mean_confidence = np.full(n_bins, np.nan)
    accuracy = np.full(n_bins, np.nan)
    mean_confidence[filled] = sums[filled] / counts[filled]
    accuracy[filled] = hits[filled] / counts[filled]
    gaps = np.abs(accuracy[filled] - mean_confidence[filled])
    n = confidence.size
    return ReliabilityCurve(
        bin_edges=edges,
        counts=counts,
        mean_confidence=mean_confidence,
        accuracy=accuracy,
        expected_calibration_error=float((counts[filled] / n * gaps).sum()),
        maximum_calibration_error=float(gaps.max()) if gaps.size else 0.0,
    )


def reliability_curve(
    probabilities: ArrayLike,
    labels: ArrayLike | Sequence[str],
    n_bins: int = 15,
    *,
    classes: Sequence[str] | None = None,
) -> ReliabilityCurve:
    """Bin the top-label confidence of each row against whether its argmax is right.

    Parameters
    ----------
    probabilities
        ``(n_items, n_classes)``; rows sum to 1.
    labels
        The true class of each row: column indices, or names when ``classes`` is given.
    n_bins
        Equal-width confidence bins on ``[0, 1]``.
    classes
        The class of each column, to read ``labels`` as names.

    Returns
    -------
    ReliabilityCurve

    Raises
    ------
    ConfigurationError
        If the probabilities are not distributions, a label is not a class, the lengths
        differ, or ``n_bins < 1``.

    Examples
    --------
    >>> curve = reliability_curve([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]], [0, 1, 1], n_bins=2)
    >>> curve.counts, curve.accuracy
    ((0, 3), (nan, 0.6666666666666666))
    """
    _check_n_bins(n_bins)
    probs = _check_probabilities(probabilities)
    truth = _label_indices(labels, probs.shape[0], probs.shape[1], classes)
    return _bin_confidences(probs.max(axis=1), probs.argmax(axis=1) == truth, n_bins)


def expected_calibration_error(
    probabilities: ArrayLike,
    labels: ArrayLike | Sequence[str],
    n_bins: int = 15,
    *,
    classes: Sequence[str] | None = None,
) -> float:
    """The top-label expected calibration error in ``n_bins`` equal-width bins.

    ``ECE = sum_b (n_b / n) * |accuracy_b - mean_confidence_b|``, where bin ``b`` holds the
    rows whose largest probability lies in ``(b / n_bins, (b + 1) / n_bins]``,
    ``accuracy_b`` is the share of those rows whose most probable class is the true one
    and ``mean_confidence_b`` their mean largest probability. The parameters are those of
    :func:`reliability_curve`.

    Examples
    --------
    Two rows at confidence 0.9 (one right) and two at 0.6 (both right):
    ``ECE = 0.5 * |0.5 - 0.9| + 0.5 * |1.0 - 0.6| = 0.4``.

    >>> probs = [[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]]
    >>> round(expected_calibration_error(probs, [0, 0, 0, 1], n_bins=10), 6)
    0.4
    """
    return reliability_curve(
        probabilities, labels, n_bins, classes=classes
    ).expected_calibration_error


@frozen
class CalibrationSummary:
    """The calibration section of an :class:`~covidcxr.evaluate.EvaluationReport`.

    Parameters
    ----------
    after
        The reliability curve of the probabilities that were evaluated (calibrated, when
        the model carries a calibration).
    before
        The reliability curve of the same items before calibration, when the caller
        supplies it (the :class:`~covidcxr.Pipeline` does); ``None`` otherwise.
    temperature
        The temperature that turned ``before`` into ``after``, when known.
    biases
        The class biases added with the temperature, by class, when the calibration has
        them (:class:`BiasCorrectedTemperatureScaling`).
    """

    after: ReliabilityCurve
    before: ReliabilityCurve | None = None
    temperature: float | None = None
    biases: Mapping[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Both curves and their ECE as JSON-ready data (``biases`` only when there are some)."""
        data: dict[str, Any] = {
            "after": self.after.to_dict(),
            "before": self.before.to_dict() if self.before is not None else None,
            "temperature": self.temperature,
        }
        if self.biases is not None:
            data["biases"] = dict(self.biases)
        return data


# ---------------------------------------------------------------------------------------
# Temperature scaling


def _log_probabilities(probs: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.log(np.clip(probs, _EPSILON, 1.0))


def _search_bounds(bounds: object) -> tuple[float, float]:
    """``bounds`` as two floats ``0 < low < high``, or a :class:`ConfigurationError`."""
    try:
        low, high = (float(b) for b in bounds)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"bounds must be two numbers 0 < low < high, got {bounds!r}"
        ) from None
    if not 0.0 < low < high or not math.isfinite(high):
        raise ConfigurationError(f"bounds must satisfy 0 < low < high, got {bounds}")
    return low, high


def _positive_number(value: object) -> bool:
    """Whether ``value`` is a finite number above 0 (a NumPy scalar too; not a bool)."""
    return (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(float(value))
        and float(value) > 0
    )


def _nll(log_p: NDArray[np.float64], truth: NDArray[np.intp], temperature: float) -> float:
    scaled = log_softmax(log_p / temperature, axis=1)
    return float(-scaled[np.arange(truth.size), truth].mean())


class TemperatureScaling(Estimator):
    """Temperature scaling (Guo et al. 2017): one temperature that calibrates every row.

    ``transform`` returns ``softmax(log(p) / T)``: ``T > 1`` softens over-confident
    probabilities, ``T < 1`` sharpens under-confident ones, and no row's most probable
    class changes. It works from probabilities (clipped at ``1e-12`` before the
    logarithm), so any classifier can be calibrated; see the module notes.

    Parameters
    ----------
    bounds
        The range searched for ``T``. A fitted temperature at either end is warned about
        (:class:`CalibrationWarning`): the data wanted a more extreme one.
    min_items
        Refuse to fit on fewer labelled items than this.

    Attributes
    ----------
    temperature_ : float
        The fitted temperature.
    n_items_ : int
        How many items it was fitted on.
    nll_before_, nll_after_ : float
        The mean negative log-likelihood of the fitting data at ``T = 1`` and at
        ``temperature_``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> logits = rng.normal(size=(2000, 3)) * 2.0
    >>> labels = np.array([rng.choice(3, p=np.exp(r) / np.exp(r).sum()) for r in logits])
    >>> over_confident = np.exp(3 * logits) / np.exp(3 * logits).sum(axis=1, keepdims=True)
    >>> scaler = TemperatureScaling().fit(over_confident, labels)
    >>> round(scaler.temperature_, 1)
    3.0
    >>> calibrated = scaler.transform(over_confident)
    >>> bool((calibrated.argmax(axis=1) == over_confident.argmax(axis=1)).all())
    True
    """

    temperature_: float
    n_items_: int
    nll_before_: float
    nll_after_: float

    def __init__(
        self,
        *,
        bounds: tuple[float, float] = (0.05, 20.0),
        min_items: int = _MIN_CALIBRATION_ITEMS,
    ) -> None:
        self.bounds = bounds
        self.min_items = min_items

    def __repr__(self) -> str:
        fitted = f", temperature_={self.temperature_:.4g}" if self.is_fitted else ""
        return f"TemperatureScaling(bounds={self.bounds!r}, min_items={self.min_items}{fitted})"

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`from_dict`) has set ``temperature_``."""
        return hasattr(self, "temperature_")

    def fit(
        self,
        probabilities: ArrayLike,
        labels: ArrayLike | Sequence[str],
        *,
        classes: Sequence[str] | None = None,
    ) -> TemperatureScaling:
        """Fit the temperature that minimises the negative log-likelihood of ``labels``.

        The search is over ``log T`` (bounded, :func:`scipy.optimize.minimize_scalar`).

        Parameters
        ----------
        probabilities
            ``(n_items, n_classes)`` held-out probabilities (never the training data's:
            a network is over-confident on what it was trained on); rows sum to 1.
        labels
            The true class of each row: column indices, or names when ``classes`` is
            given.
        classes
            The class of each column, to read ``labels`` as names.

        Returns
        -------
        TemperatureScaling
            ``self``, fitted.

        Raises
        ------
        ConfigurationError
            If there are fewer than ``min_items`` rows, a probability is not finite or a
            row is not a distribution, a label is not one of the classes, or ``bounds``
            is not ``0 < low < high``.

        Warns
        -----
        CalibrationWarning
            If fewer than 50 items or only one class were given (the temperature is
            poorly determined), or the fitted temperature is at an end of ``bounds``.
        """
        low, high = _search_bounds(self.bounds)
        probs = _check_probabilities(probabilities)
        truth = _label_indices(labels, probs.shape[0], probs.shape[1], classes)
        n = truth.size
        if n < self.min_items:
            raise ConfigurationError(
                f"temperature scaling needs at least {self.min_items} labelled items, got "
                f"{n}; calibrate on a larger validation set or skip calibration"
            )
        present = np.unique(truth).size
        if n < _FEW_CALIBRATION_ITEMS or present < 2:
            warnings.warn(
                f"temperature scaling fitted on {n} item(s) of {present} class(es): the "
                "temperature is poorly determined; calibrate on a larger validation set "
                "holding every class",
                CalibrationWarning,
                stacklevel=2,
            )
        log_p = _log_probabilities(probs)
        result = minimize_scalar(
            lambda log_t: _nll(log_p, truth, math.exp(log_t)),
            bounds=(math.log(low), math.log(high)),
            method="bounded",
            options={"xatol": 1e-6},
        )
        temperature = math.exp(float(result.x))
        if min(temperature / low, high / temperature) < 1.001:
            warnings.warn(
                f"the fitted temperature {temperature:.4g} is at the end of the search "
                f"range {self.bounds}; the probabilities may be degenerate (all 0 and 1)",
                CalibrationWarning,
                stacklevel=2,
            )
        self.temperature_ = temperature
        self.n_items_ = int(n)
        self.nll_before_ = _nll(log_p, truth, 1.0)
        self.nll_after_ = _nll(log_p, truth, temperature)
        return self

    def transform(self, probabilities: ArrayLike) -> NDArray[np.float64]:
        """``softmax(log(p) / temperature_)`` of each row: calibrated probabilities.

        Rows keep their order of classes (so their argmax) and sum to 1.

        Raises
        ------
        ConfigurationError
            If the scaler is not fitted or ``probabilities`` are not distributions.
        """
        if not self.is_fitted:
            raise ConfigurationError(
                "this TemperatureScaling is not fitted; call fit() or from_dict() first"
            )
        probs = _check_probabilities(probabilities)
        scaled: NDArray[np.float64] = np.exp(
            log_softmax(_log_probabilities(probs) / self.temperature_, axis=1)
        )
        return scaled

    def to_dict(self) -> dict[str, Any]:
        """The fitted state as JSON-ready data (see :meth:`from_dict`).

        Raises
        ------
        ConfigurationError
            If the scaler is not fitted.
        """
        if not self.is_fitted:
            raise ConfigurationError("this TemperatureScaling is not fitted; nothing to save")
        return {
            "method": "temperature",
            "temperature": self.temperature_,
            "n_items": self.n_items_,
            "nll_before": self.nll_before_,
            "nll_after": self.nll_after_,
            "bounds": list(self.bounds),
            "min_items": self.min_items,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TemperatureScaling:
        """The fitted scaler :meth:`to_dict` wrote.

        Raises
        ------
        ConfigurationError
            If ``data`` is not a temperature scaling or its temperature is not a
            positive finite number.

        Examples
        --------
        >>> scaler = TemperatureScaling.from_dict({"method": "temperature", "temperature": 2.0})
        >>> scaler.transform([[0.8, 0.2]]).round(3).tolist()
        [[0.667, 0.333]]
        """
        if data.get("method", "temperature") != "temperature":
            raise ConfigurationError(f"not a temperature scaling: method is {data.get('method')!r}")
        try:
            temperature = float(data["temperature"])
        except (KeyError, TypeError, ValueError):
            raise ConfigurationError(
                f"a temperature scaling needs a numeric 'temperature', got {data!r}"
            ) from None
        if not (math.isfinite(temperature) and temperature > 0):
            raise ConfigurationError(f"temperature must be positive and finite, got {temperature}")
        bounds = data.get("bounds", (0.05, 20.0))
        scaler = cls(
            bounds=(float(bounds[0]), float(bounds[1])),
            min_items=int(data.get("min_items", _MIN_CALIBRATION_ITEMS)),
        )
        scaler.temperature_ = temperature
        scaler.n_items_ = int(data.get("n_items", 0))
        scaler.nll_before_ = _float_or_nan(data.get("nll_before"))
        scaler.nll_after_ = _float_or_nan(data.get("nll_after"))
        return scaler


def _biased_nll(
    log_p: NDArray[np.float64], truth: NDArray[np.intp], theta: NDArray[np.float64]
) -> tuple[float, NDArray[np.float64]]:
    """The NLL of ``softmax(log_p / exp(theta[0]) + [0, *theta[1:]])`` and its gradient."""
    temperature = math.exp(float(theta[0]))
    scaled = log_softmax(log_p / temperature + np.concatenate(([0.0], theta[1:])), axis=1)
    rows = np.arange(truth.size)
    residual = np.exp(scaled)
    residual[rows, truth] -= 1.0
    residual /= truth.size
    d_log_t = float(-(residual * log_p).sum() / temperature)
    gradient = np.concatenate(([d_log_t], residual.sum(axis=0)[1:]))
    return float(-scaled[rows, truth].mean()), gradient


class BiasCorrectedTemperatureScaling(TemperatureScaling):
    """Bias-corrected temperature scaling (Alexandari et al. 2020): a temperature and class biases.

    ``transform`` returns ``softmax(log(p) / T + b)``: one temperature ``T`` as in
    :class:`TemperatureScaling`, plus one bias per class, all fitted together by minimising
    the negative log-likelihood on held-out data. The biases correct a network that gives
    a class systematically too much or too little probability, which a temperature cannot
    (it only sharpens or softens every row). Because of them, **the most probable class of
    a row can change**: this calibration moves decisions, where temperature scaling never
    does. Alexandari, Kundaje and Shrikumar (2020, *Maximum Likelihood with
    Bias-Corrected Calibration is Hard-To-Beat at Label Shift Adaptation*) found, in their
    experiments, better calibrated probabilities than with a temperature alone, and the
    probabilities that estimating a new class mix
    (:func:`~covidcxr.evaluate.estimate_priors`) needs; on COVID-QU-Ex it helped some of
    covidcxr's models and not others (see the trust docs).

    The biases are identified up to a constant (which the softmax ignores): they are
    reported with the first class's at 0. Fitting needs labelled items of every class, or
    the bias of a missing class would only grow.

    Parameters
    ----------
    bounds
        The range searched for ``T`` (warned about when the fit ends at either end).
    max_bias
        The largest bias searched, in either direction (log-odds); a fit at the bound is
        warned about.
    min_items
        Refuse to fit on fewer labelled items than this.

    Attributes
    ----------
    temperature_ : float
        The fitted temperature.
    biases_ : tuple of float
        The fitted bias of each column, the first 0.
    n_items_ : int
        How many items it was fitted on.
    nll_before_, nll_after_ : float
        The mean negative log-likelihood of the fitting data before and after.

    Examples
    --------
    A network that gives the first class too little probability, and the fit that finds it:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> logits = rng.normal(size=(3000, 3)) * 2.0
    >>> labels = np.array([rng.choice(3, p=np.exp(r) / np.exp(r).sum()) for r in logits])
    >>> shifted = logits - [1.0, 0.0, 0.0]
    >>> probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    >>> scaler = BiasCorrectedTemperatureScaling().fit(probabilities, labels)
    >>> [round(b) for b in scaler.biases_]
    [0, -1, -1]
    >>> round(scaler.temperature_, 1)
    1.0
    """

    biases_: tuple[float, ...]

    def __init__(
        self,
        *,
        bounds: tuple[float, float] = (0.05, 20.0),
        max_bias: float = 10.0,
        min_items: int = _MIN_CALIBRATION_ITEMS,
    ) -> None:
        super().__init__(bounds=bounds, min_items=min_items)
        self.max_bias = max_bias

    def __repr__(self) -> str:
        fitted = ""
        if self.is_fitted:
            biases = ", ".join(f"{b:.4g}" for b in self.biases_)
            fitted = f", temperature_={self.temperature_:.4g}, biases_=({biases})"
        return (
            f"BiasCorrectedTemperatureScaling(bounds={self.bounds!r}, "
            f"max_bias={self.max_bias!r}, min_items={self.min_items}{fitted})"
        )

    def fit(
        self,
        probabilities: ArrayLike,
        labels: ArrayLike | Sequence[str],
        *,
        classes: Sequence[str] | None = None,
    ) -> BiasCorrectedTemperatureScaling:
        """Fit the temperature and biases that minimise the negative log-likelihood.

        The search is over ``log T`` and the biases of the second class on
        (:func:`scipy.optimize.minimize`, L-BFGS-B with the exact gradient), from
        ``T = 1`` and no bias.

        Parameters
        ----------
        probabilities
            ``(n_items, n_classes)`` held-out probabilities; rows sum to 1.
        labels
            The true class of each row: column indices, or names when ``classes`` is
            given.
        classes
            The class of each column, to read ``labels`` as names.

        Returns
        -------
        BiasCorrectedTemperatureScaling
            ``self``, fitted.

        Raises
        ------
        ConfigurationError
            As :meth:`TemperatureScaling.fit`; also if a column's class has no labelled
            item (its bias would be unbounded) or ``max_bias`` is not a positive number.

        Warns
        -----
        CalibrationWarning
            If fewer than 50 items were given, or the fit ends at a bound.
        """
        low, high = _search_bounds(self.bounds)
        if not _positive_number(self.max_bias):
            raise ConfigurationError(f"max_bias must be a positive number, got {self.max_bias!r}")
        max_bias = float(self.max_bias)
        probs = _check_probabilities(probabilities)
        truth = _label_indices(labels, probs.shape[0], probs.shape[1], classes)
        n, n_classes = truth.size, probs.shape[1]
        if n < self.min_items:
            raise ConfigurationError(
                f"bias-corrected temperature scaling needs at least {self.min_items} labelled "
                f"items, got {n}; calibrate on a larger validation set or skip calibration"
            )
        missing = sorted(set(range(n_classes)) - set(truth.tolist()))
        if missing:
            names = [classes[i] if classes is not None else i for i in missing]
            raise ConfigurationError(
                f"bias-corrected temperature scaling needs labelled items of every class; "
                f"column(s) {names} have none, so their bias is undetermined: calibrate on "
                "a validation set holding every class, or use TemperatureScaling"
            )
        if n < _FEW_CALIBRATION_ITEMS:
            warnings.warn(
                f"bias-corrected temperature scaling fitted on {n} item(s): the temperature "
                "and biases are poorly determined; calibrate on a larger validation set",
                CalibrationWarning,
                stacklevel=2,
            )
        log_p = _log_probabilities(probs)
        limits = [(math.log(low), math.log(high))] + [(-max_bias, max_bias)] * (n_classes - 1)
        start = np.zeros(n_classes)
        start[0] = min(max(0.0, limits[0][0]), limits[0][1])
        result = minimize(
            lambda theta: _biased_nll(log_p, truth, theta),
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=limits,
        )
        theta = np.asarray(result.x, np.float64)
        temperature = math.exp(float(theta[0]))
        at_bound = min(temperature / low, high / temperature) < 1.001 or bool(
            (np.abs(theta[1:]) > max_bias * 0.999).any()
        )
        if at_bound:
            warnings.warn(
                f"the fitted temperature {temperature:.4g} or a bias "
                f"{np.round(theta[1:], 3).tolist()} is at the end of its search range; the "
                "probabilities may be degenerate (all 0 and 1)",
                CalibrationWarning,
                stacklevel=2,
            )
        self.temperature_ = temperature
        self.biases_ = (0.0, *(float(b) for b in theta[1:]))
        self.n_items_ = int(n)
        self.nll_before_ = _nll(log_p, truth, 1.0)
        self.nll_after_ = _biased_nll(log_p, truth, theta)[0]
        return self

    def transform(self, probabilities: ArrayLike) -> NDArray[np.float64]:
        """``softmax(log(p) / temperature_ + biases_)`` of each row: calibrated probabilities.

        Rows sum to 1; their most probable class may differ from the input's.

        Raises
        ------
        ConfigurationError
            If the scaler is not fitted, or ``probabilities`` are not distributions with
            one column per bias.
        """
        if not self.is_fitted:
            raise ConfigurationError(
                "this BiasCorrectedTemperatureScaling is not fitted; call fit() or "
                "from_dict() first"
            )
        probs = _check_probabilities(probabilities)
        if probs.shape[1] != len(self.biases_):
            raise ConfigurationError(
                f"probabilities have {probs.shape[1]} columns; this calibration was fitted "
                f"on {len(self.biases_)}"
            )
        logits = _log_probabilities(probs) / self.temperature_ + np.asarray(self.biases_)
        scaled: NDArray[np.float64] = np.exp(log_softmax(logits, axis=1))
        return scaled

    def to_dict(self) -> dict[str, Any]:
        """The fitted state as JSON-ready data (see :meth:`from_dict`).

        Raises
        ------
        ConfigurationError
            If the scaler is not fitted.
        """
        if not self.is_fitted:
            raise ConfigurationError(
                "this BiasCorrectedTemperatureScaling is not fitted; nothing to save"
            )
        return {
            **super().to_dict(),
            "method": BIAS_CORRECTED,
            "biases": list(self.biases_),
            "max_bias": float(self.max_bias),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BiasCorrectedTemperatureScaling:
        """The fitted scaler :meth:`to_dict` wrote.

        Raises
        ------
        ConfigurationError
            If ``data`` is not a bias-corrected temperature scaling, its temperature is not
            a positive finite number or its biases are not finite numbers.

        Examples
        --------
        >>> scaler = BiasCorrectedTemperatureScaling.from_dict(
        ...     {"method": "bias-corrected-temperature", "temperature": 1.0, "biases": [0.0, 1.0]})
        >>> scaler.transform([[0.5, 0.5]]).round(3).tolist()
        [[0.269, 0.731]]
        """
        if data.get("method") != BIAS_CORRECTED:
            raise ConfigurationError(
                f"not a bias-corrected temperature scaling: method is {data.get('method')!r}"
            )
        temperature = TemperatureScaling.from_dict({**data, "method": "temperature"})
        listed = data.get("biases")
        biases: tuple[float, ...] | None = None
        if isinstance(listed, list | tuple):  # a string would be read character by character
            try:
                biases = tuple(float(b) for b in listed)
            except (TypeError, ValueError):
                biases = None
        if biases is None:
            raise ConfigurationError(
                f"a bias-corrected temperature scaling needs numeric 'biases', got {data!r}"
            )
        if len(biases) < 2 or not all(math.isfinite(b) for b in biases):
            raise ConfigurationError(f"biases must be two or more finite numbers, got {biases}")
        max_bias = data.get("max_bias", 10.0)
        if not _positive_number(max_bias):
            raise ConfigurationError(
                f"a bias-corrected temperature scaling needs a positive 'max_bias', got "
                f"{max_bias!r}"
            )
        scaler = cls(
            bounds=temperature.bounds,
            max_bias=float(max_bias),
            min_items=temperature.min_items,
        )
        scaler.temperature_ = temperature.temperature_
        scaler.biases_ = biases
        scaler.n_items_ = temperature.n_items_
        scaler.nll_before_ = temperature.nll_before_
        scaler.nll_after_ = temperature.nll_after_
        return scaler


#: The ``method`` of a saved :class:`BiasCorrectedTemperatureScaling`.
BIAS_CORRECTED: Final = "bias-corrected-temperature"


def calibration_from_dict(data: Mapping[str, Any]) -> TemperatureScaling:
    """The calibration that ``to_dict`` of either kind wrote, by its ``method``.

    A :class:`BiasCorrectedTemperatureScaling` is a :class:`TemperatureScaling` with class
    biases, so either is returned as the latter.

    Raises
    ------
    ConfigurationError
        If the method is unknown or the entry is damaged.
    """
    method = data.get("method", "temperature")
    if method == BIAS_CORRECTED:
        return BiasCorrectedTemperatureScaling.from_dict(data)
    if method == "temperature":
        return TemperatureScaling.from_dict(data)
    raise ConfigurationError(
        f"unknown calibration method {method!r}; known: 'temperature', {BIAS_CORRECTED!r}"
    )


# ---------------------------------------------------------------------------------------
# Operating points and abstention


@frozen
class ClassOperatingPoint:
    """The threshold of one class, chosen for a target sensitivity, and what it costs.

    Parameters
    ----------
    label
        The class.
    target_sensitivity
        The sensitivity (recall) asked for.
    threshold
        The largest ``t`` such that the rule ``p[label] >= t`` reaches
        ``target_sensitivity`` on the fitting data.
    n_positives, n_negatives
        Fitting items of the class and of the other classes.
    sensitivity, specificity
        Of the class under :meth:`OperatingPoints.apply` (thresholds, then argmax; without
        abstention) on the fitting data.
    argmax_sensitivity, argmax_specificity
        The same under plain argmax, for comparison: the specificity given up is
        ``argmax_specificity - specificity``.
    """

    label: str
    target_sensitivity: float
    threshold: float
    n_positives: int
    n_negatives: int
    sensitivity: float
    specificity: float
    argmax_sensitivity: float
    argmax_specificity: float

    def to_dict(self) -> dict[str, Any]:
        """The operating point as JSON-ready data (``nan`` becomes ``None``)."""
        return attrs.asdict(self, value_serializer=_nan_to_none)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassOperatingPoint:
        """The operating point :meth:`to_dict` wrote."""
        return cls(
            label=str(data["label"]),
            target_sensitivity=float(data["target_sensitivity"]),
            threshold=float(data["threshold"]),
            n_positives=int(data["n_positives"]),
            n_negatives=int(data["n_negatives"]),
            sensitivity=_float_or_nan(data["sensitivity"]),
            specificity=_float_or_nan(data["specificity"]),
            argmax_sensitivity=_float_or_nan(data["argmax_sensitivity"]),
            argmax_specificity=_float_or_nan(data["argmax_specificity"]),
        )


def _strs(values: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in values)


def _point_tuple(values: Any) -> tuple[ClassOperatingPoint, ...]:
    return tuple(values)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def _sensitivity_specificity(
    decided: NDArray[np.intp], truth: NDArray[np.intp], c: int
) -> tuple[float, float]:
    positive = truth == c
    called = decided == c
    return (
        _ratio(int((called & positive).sum()), int(positive.sum())),
        _ratio(int((~called & ~positive).sum()), int((~positive).sum())),
    )


def _threshold_for(scores: NDArray[np.float64], target: float) -> float:
    """The largest ``t`` with ``mean(scores >= t) >= target`` (``scores`` non-empty)."""
    ranked = np.sort(scores)[::-1]
    # At t = ranked[m - 1] at least m positives are kept; above it at most m - 1 are.
    needed = max(1, math.ceil(target * ranked.size - 1e-9))
    return float(ranked[needed - 1])


def _decide(
    probs: NDArray[np.float64],
    columns: NDArray[np.intp],
    thresholds: NDArray[np.float64],
    abstain_below: float | None,
    adjusted: NDArray[np.float64] | None = None,
) -> NDArray[np.intp]:
    """Column index of each row's decision; ``-1`` for an abstention.

    The thresholds apply to ``probs``; the argmax and the abstention to ``adjusted``
    (the same rows at another class mix) when given. A class with no probability left in
    ``adjusted`` (its prior there is 0) is never chosen by its threshold.
    """
    chosen = probs if adjusted is None else adjusted
    decided: NDArray[np.intp] = chosen.argmax(axis=1).astype(np.intp)
    any_reached: NDArray[np.bool_] = np.zeros(len(decided), dtype=np.bool_)
    if columns.size:
        scores = probs[:, columns]
        reached = scores >= thresholds
        if adjusted is not None:
            reached &= adjusted[:, columns] > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(
                thresholds > 0, scores / np.where(thresholds > 0, thresholds, 1), np.inf
            )
        ratio = np.where(reached, ratio, -np.inf)
        any_reached = np.asarray(reached.any(axis=1), dtype=np.bool_)
        decided[any_reached] = columns[ratio[any_reached].argmax(axis=1)]
    if abstain_below is not None:
        # A row that reaches a targeted class's threshold is that class, however unsure
        # the model is overall: the sensitivity the threshold was fitted for is what the
        # decisions deliver (abstaining on it would miss the cases it is there to catch).
        decided[(chosen.max(axis=1) < abstain_below) & ~any_reached] = -1
    return decided


@frozen
class OperatingPoints:
    """Per-class thresholds for target sensitivities, and an abstention threshold.

    Made by :meth:`fit` on validation probabilities (calibrated ones, when the model is
    calibrated) and applied by :meth:`apply`. The decision for each row:

    1. if the probability of a targeted class reaches that class's threshold, that class
       (if several do, the one with the largest ``p[c] / threshold[c]``);
    2. otherwise, if its top-label confidence is below :attr:`abstain_below`,
       :data:`UNCERTAIN`;
    3. otherwise the most probable class (argmax).

    A threshold comes before the abstention, so that the sensitivity recorded for it is
    the sensitivity of the decisions, abstention or not.

    Parameters
    ----------
    classes
        The class of each probability column.
    points
        One :class:`ClassOperatingPoint` per targeted class.
    abstain_below
        Abstain on rows whose largest probability is below this; ``None`` never abstains.
    target_coverage
        The coverage ``abstain_below`` was chosen for, when it was.
    fitted_coverage
        The share of the fitting items kept (not abstained on), when abstaining.
    fitted_accuracy
        Accuracy of the decisions on the kept fitting items.
    n_items
        How many items it was fitted on.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[0.7, 0.3], [0.4, 0.6], [0.45, 0.55], [0.2, 0.8], [0.9, 0.1]])
    >>> points = OperatingPoints.fit(probs, ["covid-19", "covid-19", "covid-19", "normal",
    ...                              "normal"], ["covid-19", "normal"], targets={"covid-19": 1.0})
    >>> points.thresholds
    {'covid-19': 0.4}
    >>> points.apply(probs)
    ['covid-19', 'covid-19', 'covid-19', 'normal', 'covid-19']
    >>> points.points[0].sensitivity, points.points[0].argmax_sensitivity
    (1.0, 0.3333333333333333)
    """

    classes: tuple[str, ...] = field(converter=_strs)
    points: tuple[ClassOperatingPoint, ...] = field(default=(), converter=_point_tuple)
    abstain_below: float | None = None
    target_coverage: float | None = None
    fitted_coverage: float | None = None
    fitted_accuracy: float | None = None
    n_items: int = 0

    def __attrs_post_init__(self) -> None:
        if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
            raise ConfigurationError(
                f"classes must name at least two distinct classes, got {self.classes}"
            )
        unknown = [p.label for p in self.points if p.label not in self.classes]
        if unknown:
            raise ConfigurationError(
                f"operating point for {unknown[0]!r}, which is not one of {self.classes}"
            )
        if self.abstain_below is not None and not 0.0 <= self.abstain_below <= 1.0:
            raise ConfigurationError(f"abstain_below must be in [0, 1], got {self.abstain_below}")

    @property
    def thresholds(self) -> dict[str, float]:
        """The threshold of each targeted class."""
        return {p.label: p.threshold for p in self.points}

    @classmethod
    def fit(
        cls,
        probabilities: ArrayLike,
        labels: Sequence[str],
        classes: Sequence[str],
        *,
        targets: Mapping[str, float] | None = None,
        coverage: float | None = None,
        abstain_below: float | None = None,
    ) -> OperatingPoints:
        """Choose the thresholds on ``probabilities`` (validation data) and ``labels``.

        Parameters
        ----------
        probabilities
            ``(n_items, n_classes)``, columns in ``classes`` order; rows sum to 1.
        labels
            The true class name of each row.
        classes
            The class of each column.
        targets
            Target sensitivity (recall) per class, in ``(0, 1]``: the threshold of class
            ``c`` is the largest ``t`` such that the rule ``p[c] >= t`` catches at least
            that share of the class's items. ``None`` or empty: no thresholds.
        coverage
            Choose :attr:`abstain_below` so that at least this share of the items is kept:
            the smallest top-label confidence of the kept items, after dropping the
            ``floor((1 - coverage) * n)`` least confident ones (ties are kept together,
            so the coverage on these data may be higher). ``coverage=0.95`` puts the
            threshold at about the 5 % quantile of the top-label confidence.
        abstain_below
            Give the abstention threshold directly instead (not with ``coverage``).

        Returns
        -------
        OperatingPoints

        Raises
        ------
        ConfigurationError
            If a target names no class or is outside ``(0, 1]``, a targeted class has no
            item in ``labels``, ``coverage`` is outside ``(0, 1]``, both ``coverage`` and
            ``abstain_below`` are given, or the inputs are inconsistent.

        Warns
        -----
        CalibrationWarning
            If a target is met only with a specificity of 10 % or less: the threshold
            calls nearly every item that class.
        """
        classes = tuple(classes)
        probs = _check_probabilities(probabilities)
        truth = _label_indices(labels, probs.shape[0], probs.shape[1], classes)
        targets = dict(targets or {})
        if coverage is not None and abstain_below is not None:
            raise ConfigurationError("give coverage or abstain_below, not both")
        for label, target in targets.items():
            if label not in classes:
                raise ConfigurationError(
                    f"target for {label!r}, which is not one of the classes {classes}"
                )
            if not 0.0 < float(target) <= 1.0:
                raise ConfigurationError(
                    f"target sensitivity for {label!r} must be in (0, 1], got {target}"
                )
            if not (truth == classes.index(label)).any():
                raise ConfigurationError(
                    f"no item of class {label!r} in the fitting data, so no threshold can "
                    "reach a sensitivity for it"
                )
        columns = np.array([classes.index(label) for label in targets], dtype=np.intp)
        thresholds = np.array(
            [_threshold_for(probs[truth == c, c], float(targets[classes[c]])) for c in columns],
            dtype=np.float64,
        )
        decided = _decide(probs, columns, thresholds, None)
        argmax = probs.argmax(axis=1)
        points: list[ClassOperatingPoint] = []
        for c, threshold in zip(columns, thresholds, strict=True):
            label = classes[c]
            sensitivity, specificity = _sensitivity_specificity(decided, truth, int(c))
            base_sensitivity, base_specificity = _sensitivity_specificity(argmax, truth, int(c))
            n_positives = int((truth == c).sum())
            if specificity <= _NEARLY_EVERYTHING_SPECIFICITY:
                warnings.warn(
                    f"the target sensitivity {targets[label]} for {label!r} is met only at "
                    f"threshold {threshold:.4g}, which calls {1 - specificity:.0%} of the "
                    f"other classes' items {label!r}; the classifier cannot separate it at "
                    "that sensitivity",
                    CalibrationWarning,
                    stacklevel=2,
                )
            points.append(
                ClassOperatingPoint(
                    label=label,
                    target_sensitivity=float(targets[label]),
                    threshold=float(threshold),
                    n_positives=n_positives,
                    n_negatives=int(truth.size - n_positives),
                    sensitivity=sensitivity,
                    specificity=specificity,
                    argmax_sensitivity=base_sensitivity,
                    argmax_specificity=base_specificity,
                )
            )
        if coverage is not None:
            if not 0.0 < coverage <= 1.0:
                raise ConfigurationError(f"coverage must be in (0, 1], got {coverage}")
            confidence = np.sort(probs.max(axis=1))
            dropped = math.floor((1.0 - coverage) * confidence.size + 1e-9)
            abstain_below = float(confidence[dropped]) if dropped else None
        if abstain_below is not None:
            decided = _decide(probs, columns, thresholds, abstain_below)
        kept = decided >= 0
        return cls(
            classes=classes,
            points=points,
            abstain_below=abstain_below,
            target_coverage=coverage,
            fitted_coverage=(
                float(kept.mean()) if abstain_below is not None or coverage is not None else None
            ),
            fitted_accuracy=(
                float((decided[kept] == truth[kept]).mean()) if kept.any() else math.nan
            ),
            n_items=int(truth.size),
        )

    def decide(
        self, probabilities: ArrayLike, *, adjusted: ArrayLike | None = None
    ) -> NDArray[np.intp]:
        """The column index of each row's decision, ``-1`` where it abstains.

        Parameters
        ----------
        probabilities
            Rows at the class mix the operating points were fitted at.
        adjusted
            The same rows at another class mix
            (:func:`~covidcxr.evaluate.adjust_to_priors`), for a model used where the
            classes occur in other proportions. The class thresholds still apply to
            ``probabilities``: a class's sensitivity at a threshold depends only on how
            its own radiographs score, not on how common it is, so the threshold keeps its
            promise at any mix. The argmax and the abstention, which weigh the classes
            against each other, use ``adjusted``; a class with no probability left there
            (prior 0: it does not occur) is not chosen by its threshold either.

        Raises
        ------
        ConfigurationError
            If ``probabilities`` (or ``adjusted``) are not distributions over
            :attr:`classes`, or the two differ in shape.
        """
        probs = self._checked(probabilities)
        other = None
        if adjusted is not None:
            other = self._checked(adjusted)
            if other.shape != probs.shape:
                raise ConfigurationError(
                    f"adjusted has shape {other.shape}, the probabilities {probs.shape}: "
                    "they must be the same rows"
                )
        columns = np.array([self.classes.index(p.label) for p in self.points], dtype=np.intp)
        thresholds = np.array([p.threshold for p in self.points], dtype=np.float64)
        return _decide(probs, columns, thresholds, self.abstain_below, other)

    def _checked(self, probabilities: ArrayLike) -> NDArray[np.float64]:
        probs = _check_probabilities(probabilities)
        if probs.shape[1] != len(self.classes):
            raise ConfigurationError(
                f"probabilities have {probs.shape[1]} columns but these operating points "
                f"are for {len(self.classes)} classes {self.classes}"
            )
        return probs

    def apply(self, probabilities: ArrayLike, *, adjusted: ArrayLike | None = None) -> list[str]:
        """The decision for each row: a class name or :data:`UNCERTAIN` (see the class notes).

        ``adjusted`` is as for :meth:`decide`.

        Raises
        ------
        ConfigurationError
            If ``probabilities`` are not distributions over :attr:`classes`.
        """
        decided = self.decide(probabilities, adjusted=adjusted)
        return [UNCERTAIN if c < 0 else self.classes[c] for c in decided]

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to apply the operating points again, as JSON-ready data."""
        return {
            "classes": list(self.classes),
            "points": [p.to_dict() for p in self.points],
            "abstain_below": self.abstain_below,
            "target_coverage": self.target_coverage,
            "fitted_coverage": self.fitted_coverage,
            "fitted_accuracy": _nan_to_none(None, None, self.fitted_accuracy),
            "n_items": self.n_items,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OperatingPoints:
        """The operating points :meth:`to_dict` wrote.

        Raises
        ------
        ConfigurationError
            If a field is missing or inconsistent.
        """
        try:
            return cls(
                classes=[str(c) for c in data["classes"]],
                points=[ClassOperatingPoint.from_dict(p) for p in data.get("points", ())],
                abstain_below=(
                    None if data.get("abstain_below") is None else float(data["abstain_below"])
                ),
                target_coverage=(
                    None if data.get("target_coverage") is None else float(data["target_coverage"])
                ),
                fitted_coverage=(
                    None if data.get("fitted_coverage") is None else float(data["fitted_coverage"])
                ),
                fitted_accuracy=_float_or_nan(data.get("fitted_accuracy")),
                n_items=int(data.get("n_items", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"not valid operating points: {exc!r}") from None


# ---------------------------------------------------------------------------------------
# Risk-coverage


@frozen
class RiskCoverageCurve:
    """Selective risk against coverage, keeping the most confident items first.

    Parameters
    ----------
    coverage
        The share of items kept at each distinct top-label confidence, increasing to 1.
    risk
        The error rate among the kept items at each coverage.
    thresholds
        The confidence at each point: items at or above it are kept.
    aurc
        The area under the step curve (see the module notes); lower is better.
    n_items
        How many items were ranked.
    """

    coverage: tuple[float, ...] = field(converter=_floats)
    risk: tuple[float, ...] = field(converter=_floats)
    thresholds: tuple[float, ...] = field(converter=_floats)
    aurc: float
    n_items: int

    @property
    def full_coverage_risk(self) -> float:
        """The error rate when nothing is abstained on."""
        return self.risk[-1]

    def risk_at(self, coverage: float) -> float:
        """The selective risk at the first point whose coverage reaches ``coverage``."""
        index = int(np.searchsorted(np.asarray(self.coverage), coverage - 1e-12, side="left"))
        return self.risk[min(index, len(self.risk) - 1)]

    def to_dict(self) -> dict[str, Any]:
        """The curve as JSON-ready data."""
        return attrs.asdict(self)


def risk_coverage_curve(
    probabilities: ArrayLike,
    labels: ArrayLike | Sequence[str],
    *,
    classes: Sequence[str] | None = None,
) -> RiskCoverageCurve:
    """The risk-coverage curve of abstaining on the least confident items first.

    Items are ranked by their top-label confidence; at each distinct confidence the items
    at or above it are kept, and the selective risk is the share of them whose most
    probable class is wrong.

    Parameters
    ----------
    probabilities
        ``(n_items, n_classes)``; rows sum to 1.
    labels
        The true class of each row: column indices, or names when ``classes`` is given.
    classes
        The class of each column, to read ``labels`` as names.

    Returns
    -------
    RiskCoverageCurve

    Raises
    ------
    ConfigurationError
        If the probabilities are not distributions, a label is not a class, or the lengths
        differ.

    Examples
    --------
    Confidences 0.9, 0.8, 0.7, 0.6 with the second and fourth wrong: risks 0, 1/2, 1/3,
    1/2 at coverages 1/4 to 1, so ``AURC = (0 + 1/2 + 1/3 + 1/2) / 4 = 1/3``.

    >>> probs = [[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]]
    >>> curve = risk_coverage_curve(probs, [0, 1, 0, 1])
    >>> curve.coverage, round(curve.aurc, 6)
    ((0.25, 0.5, 0.75, 1.0), 0.333333)
    """
    probs = _check_probabilities(probabilities)
    truth = _label_indices(labels, probs.shape[0], probs.shape[1], classes)
    confidence = probs.max(axis=1)
    wrong = (probs.argmax(axis=1) != truth).astype(np.float64)
    order = np.argsort(-confidence, kind="stable")
    confidence, wrong = confidence[order], wrong[order]
    n = confidence.size
    # The last item of each run of equal confidences closes a point of the curve.
    ends = np.flatnonzero(np.append(confidence[1:] != confidence[:-1], True))
    kept = ends + 1
    coverage = kept / n
    risk = np.cumsum(wrong)[ends] / kept
    widths = np.diff(np.concatenate(([0.0], coverage)))
    return RiskCoverageCurve(
        coverage=coverage,
        risk=risk,
        thresholds=confidence[ends],
        aurc=float((widths * risk).sum()),
        n_items=int(n),
    )


# ---------------------------------------------------------------------------------------
# Scoring the decisions as made (operating points, abstentions)


def _mapping(value: Mapping[str, float]) -> Mapping[str, float]:
    return {str(k): float(v) for k, v in value.items()}


@frozen
class DecisionScores:
    """How the labels a model gave score, abstentions (:data:`UNCERTAIN`) included.

    The classification figures of an evaluation score each radiograph's most probable
    class; these score the label each prediction carries, which operating points may
    have moved off the argmax and abstention may have replaced by :data:`UNCERTAIN`.

    Parameters
    ----------
    n_items
        How many predictions were scored.
    n_abstained
        How many were :data:`UNCERTAIN`.
    coverage
        The share that were not: ``1 - n_abstained / n_items``.
    accuracy_covered
        The share of right labels among the predictions that were not abstentions
        (``nan`` when every one was).
    accuracy_overall
        The share of right labels among all predictions, abstentions counted wrong.
    sensitivity, specificity
        Per class, over all predictions: an abstention on an item of the class is a miss
        (lowers its sensitivity); on an item of another class it does not call the class
        (counts towards its specificity). ``nan`` where the class has no item, or every
        item is of the class.
    n_differing_from_argmax
        Labels (not abstentions) that are not the prediction's most probable class: the
        work of the operating points.
    """

    n_items: int
    n_abstained: int
    coverage: float
    accuracy_covered: float
    accuracy_overall: float
    sensitivity: Mapping[str, float] = field(converter=_mapping)
    specificity: Mapping[str, float] = field(converter=_mapping)
    n_differing_from_argmax: int = 0

    @property
    def differs_from_argmax(self) -> bool:
        """Whether any label is an abstention or not the most probable class."""
        return bool(self.n_abstained or self.n_differing_from_argmax)

    def to_dict(self) -> dict[str, Any]:
        """The figures as JSON-ready data (``nan`` becomes ``None``)."""
        return {
            "n_items": self.n_items,
            "n_abstained": self.n_abstained,
            "coverage": self.coverage,
            "accuracy_covered": _nan_to_none(None, None, self.accuracy_covered),
            "accuracy_overall": self.accuracy_overall,
            "sensitivity": {k: _nan_to_none(None, None, v) for k, v in self.sensitivity.items()},
            "specificity": {k: _nan_to_none(None, None, v) for k, v in self.specificity.items()},
            "n_differing_from_argmax": self.n_differing_from_argmax,
        }


def decision_scores(
    true_labels: Sequence[str],
    predicted_labels: Sequence[str],
    classes: Sequence[str],
    *,
    probabilities: ArrayLike | None = None,
) -> DecisionScores:
    """Score predicted labels that may include abstentions (:data:`UNCERTAIN`).

    Parameters
    ----------
    true_labels
        The true class of each item.
    predicted_labels
        The label given to each item: one of ``classes`` or :data:`UNCERTAIN`.
    classes
        The classes.
    probabilities
        ``(n_items, n_classes)`` in ``classes`` order, to count the labels that are not
        the most probable class; ``None`` leaves that count at 0.

    Returns
    -------
    DecisionScores

    Raises
    ------
    ConfigurationError
        If the lengths differ, there are no items, or a label is neither a class nor
        :data:`UNCERTAIN` (a true label may not be :data:`UNCERTAIN`).

    Examples
    --------
    >>> scores = decision_scores(["a", "a", "b", "b"], ["a", UNCERTAIN, "b", "a"], ["a", "b"])
    >>> scores.coverage, round(scores.accuracy_covered, 3), scores.accuracy_overall
    (0.75, 0.667, 0.5)
    >>> dict(scores.sensitivity)
    {'a': 0.5, 'b': 0.5}
    """
    classes = tuple(classes)
    truth = list(true_labels)
    given = list(predicted_labels)
    if len(truth) != len(given):
        raise ConfigurationError(
            f"{len(truth)} true label(s) but {len(given)} predicted label(s); they are "
            "aligned by position"
        )
    if not truth:
        raise ConfigurationError("nothing to score: no labels were given")
    unknown = [label for label in truth if label not in classes]
    if unknown:
        raise ConfigurationError(f"true label {unknown[0]!r} is not one of {classes}")
    unknown = [label for label in given if label not in classes and label != UNCERTAIN]
    if unknown:
        raise ConfigurationError(
            f"predicted label {unknown[0]!r} is neither one of {classes} nor {UNCERTAIN!r}"
        )
    index = {label: i for i, label in enumerate(classes)}
    true_idx = np.array([index[label] for label in truth], dtype=np.intp)
    decided = np.array([index.get(label, -1) for label in given], dtype=np.intp)
    covered = decided >= 0
    right = decided == true_idx
    n = true_idx.size
    differing = 0
    if probabilities is not None:
        probs = _check_probabilities(probabilities)
        if probs.shape != (n, len(classes)):
            raise ConfigurationError(
                f"probabilities must have shape ({n}, {len(classes)}), got {probs.shape}"
            )
        differing = int((covered & (decided != probs.argmax(axis=1))).sum())
    sensitivity: dict[str, float] = {}
    specificity: dict[str, float] = {}
    for c, label in enumerate(classes):
        sensitivity[label], specificity[label] = _sensitivity_specificity(decided, true_idx, c)
    return DecisionScores(
        n_items=int(n),
        n_abstained=int(n - covered.sum()),
        coverage=float(covered.mean()),
        accuracy_covered=float(right[covered].mean()) if covered.any() else math.nan,
        accuracy_overall=float(right.mean()),
        sensitivity=sensitivity,
        specificity=specificity,
        n_differing_from_argmax=differing,
    )
