"""Class priors: a model's probabilities at another hospital's class mix.

A classifier's probabilities, calibrated or not, are for the class mix it was trained and
calibrated on. COVID-QU-Ex is half COVID-19 and a quarter each normal and pneumonia; a
clinic where most radiographs are normal sees a quite different mix, and there a model
taken as is over-calls COVID-19 and pneumonia. When only the mix changes (the "label
shift" assumption: each class's radiographs look as they did in training), Bayes' rule
gives the probabilities at the new mix exactly (Saerens, Latinne & Decaestecker, Neural
Computation 14(1), 2002)::

    p_new(c | x)  proportional to  p(c | x) * new_prior(c) / old_prior(c)

and the new mix itself, when unknown, can be estimated from the model's probabilities on
unlabelled radiographs of the new place by the expectation-maximisation procedure of the
same paper. Both need calibrated probabilities (see :class:`TemperatureScaling`) and are
only as good as the label-shift assumption: radiographs from another hospital also look
different (other machines, other patients), which no reweighting of classes corrects.

Priors are given in the order of the probability columns, or as a mapping from class to
prior together with ``classes``; counts work as well as shares (they are normalised), so
a training set's class counts are its priors.

Done by hand (ten lines of NumPy) rather than with a quantification library such as
QuaPy, whose EM is the same procedure, to avoid its dependencies (pandas among them) for
this.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
from attrs import frozen
from numpy.typing import ArrayLike, NDArray

from covidcxr.errors import ConfigurationError
from covidcxr.evaluate._calibration import _check_probabilities

__all__ = ["PriorEstimate", "adjust_to_priors", "estimate_priors"]

# EM stops when no prior moves by more than this in one step.
_DEFAULT_TOLERANCE: Final = 1e-6
_DEFAULT_MAX_ITERATIONS: Final = 1000


def priors_as_shares(
    priors: ArrayLike | Mapping[str, float],
    n_classes: int,
    classes: Sequence[str] | None,
    what: str,
    *,
    zero_allowed: bool,
) -> NDArray[np.float64]:
    """``priors`` as shares in column order, or an error naming what is wrong."""
    if isinstance(priors, Mapping):
        if classes is None:
            raise ConfigurationError(f"{what} given by class name needs classes=...")
        missing = [label for label in classes if label not in priors]
        extra = [label for label in priors if label not in classes]
        if missing or extra:
            raise ConfigurationError(
                f"{what} must give one value per class of {tuple(classes)}: "
                + (f"{extra[0]!r} is not a class" if extra else f"missing {missing[0]!r}")
            )
    if classes is not None and len(classes) != n_classes:
        raise ConfigurationError(
            f"classes names {len(classes)} classes, but there are {n_classes} probability columns"
        )
    try:
        if isinstance(priors, Mapping):
            by_name = [priors[label] for label in classes or ()]
            values = np.array([float(value) for value in by_name], dtype=np.float64)
        else:
            values = np.asarray(priors, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{what} must be numbers, got {priors!r}") from exc
    if values.shape != (n_classes,):
        raise ConfigurationError(
            f"{what} must have one value per probability column ({n_classes}), got shape "
            f"{values.shape}"
        )
    if not np.isfinite(values).all() or (values < 0).any():
        raise ConfigurationError(f"{what} must be finite and not negative, got {values.tolist()}")
    if not zero_allowed and (values == 0).any():
        raise ConfigurationError(
            f"{what} must be positive for every class (a class never seen in training "
            f"cannot be reweighted), got {values.tolist()}"
        )
    if values.sum() <= 0:
        raise ConfigurationError(f"{what} must not all be 0")
    shares: NDArray[np.float64] = values / values.sum()
    return shares


def _ratio(target: NDArray[np.float64], source: NDArray[np.float64]) -> NDArray[np.float64]:
    with np.errstate(over="ignore"):
        ratio: NDArray[np.float64] = target / source
    if not np.isfinite(ratio).all():
        raise ConfigurationError(
            f"source_priors {source.tolist()} hold a share too small to divide by: give "
            "each class's share of the training data"
        )
    return ratio


def _reweighted(probs: NDArray[np.float64], ratio: NDArray[np.float64]) -> NDArray[np.float64]:
    weighted = probs * ratio
    totals = weighted.sum(axis=1, keepdims=True)
    if (totals <= 0).any():
        row = int(np.argwhere(totals[:, 0] <= 0)[0, 0])
        raise ConfigurationError(
            f"row {row} gives probability only to classes whose new prior is 0: it has no "
            "probability left at the new class mix"
        )
    adjusted: NDArray[np.float64] = weighted / totals
    return adjusted


def adjust_to_priors(
    probabilities: ArrayLike,
    source_priors: ArrayLike | Mapping[str, float],
    target_priors: ArrayLike | Mapping[str, float],
    *,
    classes: Sequence[str] | None = None,
) -> NDArray[np.float64]:
    """The probabilities at another class mix, by Bayes' rule.

    Each row is multiplied by ``target_priors / source_priors`` and renormalised. The
    predicted class can change, and with more than two classes so can the order of the
    items by one class's probability: a threshold chosen on one class's probability at
    the old mix (an operating point) does not carry over to the adjusted probabilities.

    Parameters
    ----------
    probabilities
        ``(n_items, n_classes)``, rows summing to 1: what the model gives, calibrated at
        the class mix of its training (or calibration) data.
    source_priors
        That class mix: shares or counts, per column or by class name.
    target_priors
        The class mix where the model is used. A class may have prior 0 (it does not
        occur there); every row must keep some probability on the others.
    classes
        The class of each column, for priors given by class name.

    Returns
    -------
    numpy.ndarray
        ``(n_items, n_classes)`` float64, rows summing to 1.

    Raises
    ------
    ConfigurationError
        If the probabilities are not a matrix of distributions, or a prior is negative,
        not finite, of the wrong length, names an unknown class, or (for
        ``source_priors``) is 0.

    Examples
    --------
    A model trained on COVID-QU-Ex's mix, used where four radiographs in five are normal:

    >>> import numpy as np
    >>> probs = np.array([[0.6, 0.3, 0.1]])
    >>> classes = ("covid-19", "normal", "pneumonia")
    >>> trained = {"covid-19": 1864, "normal": 932, "pneumonia": 932}
    >>> clinic = {"covid-19": 0.05, "normal": 0.8, "pneumonia": 0.15}
    >>> adjust_to_priors(probs, trained, clinic, classes=classes).round(3)
    array([[0.056, 0.889, 0.056]])
    """
    probs = _check_probabilities(probabilities)
    n_classes = probs.shape[1]
    source = priors_as_shares(
        source_priors, n_classes, classes, "source_priors", zero_allowed=False
    )
    target = priors_as_shares(target_priors, n_classes, classes, "target_priors", zero_allowed=True)
    return _reweighted(probs, _ratio(target, source))


@frozen
class PriorEstimate:
    """The class mix :func:`estimate_priors` found, and how it got there.

    Parameters
    ----------
    priors
        The estimated share of each class, in column order (they sum to 1).
    classes
        The class of each column, when they were given.
    n_items
        How many radiographs the estimate rests on.
    n_iterations
        EM steps taken.
    converged
        Whether the last step moved no share by more than the tolerance.
    """

    priors: tuple[float, ...]
    classes: tuple[str, ...] | None
    n_items: int
    n_iterations: int
    converged: bool

    def as_dict(self) -> dict[str, float]:
        """The priors by class name (by column index as text when no classes were given)."""
        names = self.classes or tuple(str(i) for i in range(len(self.priors)))
        return dict(zip(names, self.priors, strict=True))


def estimate_priors(
    probabilities: ArrayLike,
    source_priors: ArrayLike | Mapping[str, float],
    *,
    classes: Sequence[str] | None = None,
    tolerance: float = _DEFAULT_TOLERANCE,
    max_iterations: int = _DEFAULT_MAX_ITERATIONS,
) -> PriorEstimate:
    """Estimate the class mix of unlabelled radiographs from a model's probabilities.

    Expectation-maximisation (Saerens, Latinne & Decaestecker 2002): start from
    ``source_priors``; adjust every row to the current estimate (:func:`adjust_to_priors`);
    take the mean adjusted row as the next estimate; stop when no share moves by more
    than ``tolerance``. It maximises the likelihood of the radiographs under label shift.
    It needs calibrated probabilities and enough radiographs (a few hundred): a small or
    unrepresentative batch gives an estimate as rough as its size.

    Parameters
    ----------
    probabilities
        ``(n_items, n_classes)`` probabilities of the new place's radiographs, rows
        summing to 1, calibrated at ``source_priors``.
    source_priors
        The class mix the probabilities are calibrated at (shares or counts, per column or
        by class name; each positive).
    classes
        The class of each column, for priors by class name and for
        :meth:`PriorEstimate.as_dict`.
    tolerance
        The largest change of any share at which EM stops.
    max_iterations
        The most EM steps.

    Returns
    -------
    PriorEstimate
        The estimated mix, the number of steps and whether they converged.

    Raises
    ------
    ConfigurationError
        If the probabilities or priors are unusable (see :func:`adjust_to_priors`), or
        ``tolerance`` or ``max_iterations`` is not positive.

    Examples
    --------
    Rows that are each one class for sure give that class's share at once:

    >>> import numpy as np
    >>> probs = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    >>> estimate = estimate_priors(probs, [0.5, 0.5], classes=("covid-19", "normal"))
    >>> estimate.as_dict(), estimate.converged
    ({'covid-19': 0.25, 'normal': 0.75}, True)
    """
    if not (math.isfinite(tolerance) and tolerance > 0):
        raise ConfigurationError(f"tolerance must be a positive number, not {tolerance!r}")
    if max_iterations < 1:
        raise ConfigurationError(f"max_iterations must be at least 1, not {max_iterations!r}")
    probs = _check_probabilities(probabilities)
    n_classes = probs.shape[1]
    source = priors_as_shares(
        source_priors, n_classes, classes, "source_priors", zero_allowed=False
    )
    current = source.copy()
    converged = False
    iterations = 0
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - read after the loop
        updated = _reweighted(probs, _ratio(current, source)).mean(axis=0)
        step = float(np.abs(updated - current).max())
        current = updated
        if step <= tolerance:
            converged = True
            break
    return PriorEstimate(
        priors=tuple(float(v) for v in current),
        classes=tuple(classes) if classes is not None else None,
        n_items=int(probs.shape[0]),
        n_iterations=iterations,
        converged=converged,
    )
