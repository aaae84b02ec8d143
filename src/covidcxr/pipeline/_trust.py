"""What a pipeline applies after its classifier: calibration, operating points, class mix.

Calibration and operating points are fitted on the validation radiographs; the class mix
of the place where the model is used (:class:`ClassPriors`) is set by its user.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeAlias

import attrs
import numpy as np
from attrs import frozen
from numpy.typing import NDArray

from covidcxr.errors import ConfigurationError, ModelFormatError
from covidcxr.evaluate._calibration import (
    BiasCorrectedTemperatureScaling,
    CalibrationWarning,
    OperatingPoints,
    TemperatureScaling,
    calibration_from_dict,
    expected_calibration_error,
)
from covidcxr.evaluate._priors import adjust_to_priors, priors_as_shares
from covidcxr.pipeline._config import TrustConfig
from covidcxr.records import ACCEPTED, UNCERTAIN, PredictionStatus

__all__ = ["ClassPriors", "TrustState", "Verdict", "fit_trust"]

#: What the trust state says about one radiograph: its label, status and reason.
Verdict: TypeAlias = tuple[str, PredictionStatus, str | None]

# Fewer labelled validation radiographs than this fit no temperature: the estimate
# would be noise.
_MIN_CALIBRATION_ITEMS: Final = 20


def _shares(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _names(values: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in values)


def _as_saved(
    saved: Mapping[str, Any], classes: Sequence[str], shares: NDArray[np.float64]
) -> list[float]:
    """The saved shares as written when they already sum to 1, else ``shares``.

    Dividing shares by their sum again can change their last bits; a saved mix must load
    back exactly as it was set.
    """
    values = [float(saved[label]) for label in classes]
    return values if abs(math.fsum(values) - 1.0) <= 1e-9 else shares.tolist()


@frozen
class ClassPriors:
    """The class mix a pipeline's probabilities are moved to, and the mix it learned.

    Set with :meth:`covidcxr.Pipeline.set_priors`. The classifier learned the class
    proportions of its training radiographs (``training``); where the classes occur in
    other proportions (``deployment``), every probability is moved there by Bayes' rule
    (:func:`~covidcxr.evaluate.adjust_to_priors`), under the label-shift assumption that
    each class's radiographs look as they did in training.

    Parameters
    ----------
    classes
        The class of each share, in the classifier's column order.
    training
        The share of each class among the training radiographs.
    deployment
        The share of each class where the model is used.
    source
        Where the deployment mix came from, in words (``"given"``, or the EM estimate
        and how many radiographs it rests on).
    """

    classes: tuple[str, ...] = attrs.field(converter=_names)
    training: tuple[float, ...] = attrs.field(converter=_shares)
    deployment: tuple[float, ...] = attrs.field(converter=_shares)
    source: str = "given"

    def __attrs_post_init__(self) -> None:
        n = len(self.classes)
        if n < 2 or len(set(self.classes)) != n:
            raise ConfigurationError(f"classes must name two or more classes, got {self.classes}")
        # The shares are applied by position: one per class, in the classes' order.
        priors_as_shares(self.training, n, self.classes, "training", zero_allowed=False)
        priors_as_shares(self.deployment, n, self.classes, "deployment", zero_allowed=True)

    def to_dict(self) -> dict[str, Any]:
        """The priors as JSON-ready data, by class name."""
        return {
            "training": dict(zip(self.classes, self.training, strict=True)),
            "deployment": dict(zip(self.classes, self.deployment, strict=True)),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], classes: Sequence[str]) -> ClassPriors:
        """The priors :meth:`to_dict` wrote, for a classifier of ``classes``.

        Raises
        ------
        ConfigurationError
            If a mix does not give one share per class (positive ones for training).
        KeyError, TypeError
            If an entry is missing or of the wrong type.
        """
        n = len(classes)
        training = priors_as_shares(data["training"], n, classes, "training", zero_allowed=False)
        deployment = priors_as_shares(
            data["deployment"], n, classes, "deployment", zero_allowed=True
        )
        return cls(
            classes,
            _as_saved(data["training"], classes, training),
            _as_saved(data["deployment"], classes, deployment),
            str(data["source"]),
        )

    def describe(self) -> str:
        """One line for people: both mixes and where the deployment one came from."""

        def mix(shares: tuple[float, ...]) -> str:
            # Three significant digits: a share of 0.004 must not read as 0.
            return ", ".join(f"{c} {v:.3g}" for c, v in zip(self.classes, shares, strict=True))

        return (
            f"probabilities moved to the class mix {mix(self.deployment)} ({self.source}) "
            f"from the training mix {mix(self.training)}"
        )


@attrs.define
class TrustState:
    """The calibration and operating points a pipeline applies after its classifier.

    Parameters
    ----------
    calibration
        Temperature scaling (with class biases, when so configured) fitted on the
        validation radiographs, or ``None``.
    operating_points
        Per-class thresholds and the abstention threshold, or ``None`` (argmax).
    validation
        What fitting measured on the validation radiographs: ``n``, and ECE before and
        after calibration.
    priors
        The class mix the probabilities are moved to, or ``None`` (the training mix).
    """

    calibration: TemperatureScaling | None = None
    operating_points: OperatingPoints | None = None
    validation: dict[str, Any] = attrs.Factory(dict)
    priors: ClassPriors | None = None

    def calibrate(self, probabilities: NDArray[Any]) -> NDArray[np.float32]:
        """The calibrated probabilities (unchanged without a calibration)."""
        if self.calibration is None:
            return np.asarray(probabilities, np.float32)
        return np.asarray(self.calibration.transform(probabilities), np.float32)

    def contradicted(self, calibrated: NDArray[Any]) -> NDArray[np.bool_]:
        """Rows that give probability only to classes the deployment mix says do not occur.

        Bayes' rule leaves such a row no probability at the mix: :meth:`adjust` gives it
        the mix itself and :meth:`decide_rows` abstains on it. All false without a mix.
        """
        rows = np.asarray(calibrated, np.float64)
        if self.priors is None:
            return np.zeros(len(rows), dtype=np.bool_)
        training = np.asarray(self.priors.training, np.float64)
        deployment = np.asarray(self.priors.deployment, np.float64)
        ratio = (deployment / deployment.sum()) / (training / training.sum())
        void: NDArray[np.bool_] = (rows * ratio).sum(axis=1) <= 0
        return void

    def adjust(self, calibrated: NDArray[Any]) -> NDArray[np.float32]:
        """Calibrated probabilities moved to the deployment class mix (unchanged without one).

        A row :meth:`contradicted` flags gets the deployment mix itself: the classifier
        says nothing about the classes that occur there.
        """
        if self.priors is None:
            return np.asarray(calibrated, np.float32)
        rows = np.asarray(calibrated, np.float64)
        void = self.contradicted(rows)
        deployment = np.asarray(self.priors.deployment, np.float64)
        moved = np.tile(deployment / deployment.sum(), (len(rows), 1))
        if not void.all():
            moved[~void] = adjust_to_priors(
                rows[~void], self.priors.training, self.priors.deployment
            )
        return np.asarray(moved, np.float32)

    def decide(self, probabilities: NDArray[Any], classes: Sequence[str]) -> Verdict:
        """The label, status and reason for one row of calibrated probabilities."""
        return self.decide_rows(np.asarray(probabilities)[None, :], classes)[0]

    def decide_rows(
        self,
        probabilities: NDArray[Any],
        classes: Sequence[str],
        *,
        adjusted: NDArray[Any] | None = None,
    ) -> list[Verdict]:
        """:meth:`decide` for each row of a ``(n, classes)`` array, in one call.

        ``adjusted`` are the same rows at the deployment class mix (:meth:`adjust`, which
        is called when they are not given): the operating points' class thresholds apply
        to ``probabilities``, the argmax and the abstention to ``adjusted`` (see
        :meth:`OperatingPoints.decide`). A row :meth:`contradicted` flags is uncertain.
        """
        rows = np.asarray(probabilities, np.float64)
        if len(rows) == 0:
            return []
        moved = np.asarray(self.adjust(rows) if adjusted is None else adjusted, np.float64)
        if self.operating_points is None:
            labels = [classes[index] for index in moved.argmax(axis=1).tolist()]
        else:
            labels = self.operating_points.apply(rows, adjusted=moved)
        below = self.operating_points.abstain_below if self.operating_points else None
        void = self.contradicted(rows).tolist()
        verdicts: list[Verdict] = []
        for label, confidence, lost in zip(labels, moved.max(axis=1).tolist(), void, strict=True):
            if lost:
                verdicts.append(
                    (
                        UNCERTAIN,
                        UNCERTAIN,
                        "the classifier gives probability only to classes that the class "
                        "mix set for this place says do not occur",
                    )
                )
            elif label == UNCERTAIN:
                verdicts.append(
                    (
                        UNCERTAIN,
                        UNCERTAIN,
                        f"confidence {confidence:.2f} is below the abstention threshold "
                        f"{below:.2f}",
                    )
                )
            else:
                verdicts.append((label, ACCEPTED, None))
        return verdicts

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``calibration``, ``operating_points`` and ``priors`` entries."""
        calibration = None
        if self.calibration is not None:
            calibration = {
                **self.calibration.to_dict(),
                "ece_before": self.validation.get("ece_before"),
                "ece_after": self.validation.get("ece_after"),
                "n_fitted": self.validation.get("n"),
            }
        points = None
        if self.operating_points is not None:
            points = self.operating_points.to_dict()
        priors = self.priors.to_dict() if self.priors is not None else None
        return {"calibration": calibration, "operating_points": points, "priors": priors}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: Path, classes: Sequence[str]) -> TrustState:
        """Read what :meth:`to_dict` wrote for a classifier of ``classes``.

        ``source`` names the file in errors.

        Raises
        ------
        ModelFormatError
            If an entry is damaged.
        """
        try:
            calibration_entry = data.get("calibration")
            calibration = calibration_from_dict(calibration_entry) if calibration_entry else None
            points_entry = data.get("operating_points")
            points = OperatingPoints.from_dict(points_entry) if points_entry else None
            priors_entry = data.get("priors")
            priors = ClassPriors.from_dict(priors_entry, classes) if priors_entry else None
        except (ConfigurationError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelFormatError(f"{source}: the trust entry is damaged: {exc}") from exc
        biases = getattr(calibration, "biases_", None)
        if biases is not None and len(biases) != len(classes):
            raise ModelFormatError(
                f"{source}: the calibration has {len(biases)} class biases, the classifier "
                f"{len(classes)} classes; the trust entry does not belong to this model"
            )
        if points is not None and points.classes != tuple(classes):
            # Thresholds apply by column: another class order would put them on the wrong
            # class's probability.
            raise ModelFormatError(
                f"{source}: the operating points are for classes {list(points.classes)}, "
                f"the classifier's are {list(classes)}; the trust entry does not belong "
                "to this model"
            )
        validation = {}
        if calibration_entry:
            validation = {
                "n": calibration_entry.get("n_fitted"),
                "ece_before": calibration_entry.get("ece_before"),
                "ece_after": calibration_entry.get("ece_after"),
            }
        return cls(calibration, points, validation, priors)


def fit_trust(
    config: TrustConfig,
    probabilities: NDArray[np.float32],
    truth: Sequence[str | None],
    classes: Sequence[str],
) -> TrustState:
    """Fit calibration and operating points on validation probabilities, as configured.

    Radiographs without a label, or with a label the classifier does not know, are left
    out. Too few labelled radiographs to calibrate give a warning, not an error, unless
    operating points were asked for.

    Raises
    ------
    ConfigurationError
        If ``config.sensitivity`` names a class the classifier does not have, or operating
        points are asked for and the validation radiographs cannot support them.
    """
    classes = tuple(classes)
    unknown = sorted(set(config.sensitivity) - set(classes))
    if unknown:
        raise ConfigurationError(
            f"[trust] sensitivity names {unknown[0]!r}, which is not one of the classes {classes}"
        )
    kept = [i for i, label in enumerate(truth) if label in classes]
    labels = [str(truth[i]) for i in kept]
    probs = np.asarray(probabilities, np.float64)[kept]
    state = TrustState(validation={"n": len(kept)})
    wants_points = bool(config.sensitivity) or config.coverage is not None
    if len(kept) < _MIN_CALIBRATION_ITEMS:
        message = (
            f"only {len(kept)} labelled validation radiographs: too few to calibrate or "
            f"set operating points (at least {_MIN_CALIBRATION_ITEMS})"
        )
        if wants_points:
            raise ConfigurationError(message)
        if config.calibration_method() is not None:
            warnings.warn(f"{message}; the probabilities are left as the classifier gives them",
                          CalibrationWarning, stacklevel=3)  # fmt: skip
        return state
    method = config.calibration_method()
    if method is not None:
        before = expected_calibration_error(probs, labels, classes=classes)
        state.calibration = _calibration(method, labels, classes).fit(
            probs, labels, classes=classes
        )
        probs = np.asarray(state.calibration.transform(probs), np.float64)
        after = expected_calibration_error(probs, labels, classes=classes)
        state.validation.update(ece_before=float(before), ece_after=float(after))
    if wants_points:
        state.operating_points = OperatingPoints.fit(
            probs,
            labels,
            classes,
            targets=dict(config.sensitivity),
            coverage=config.coverage,
        )
    return state


def _calibration(method: str, labels: Sequence[str], classes: Sequence[str]) -> TemperatureScaling:
    """An unfitted calibration of ``method``; temperature alone when a class has no label.

    A class without labelled validation radiographs leaves its bias undetermined, so
    bias-corrected calibration falls back to a temperature, with a warning.
    """
    if method != "bias-corrected":
        return TemperatureScaling()
    missing = [label for label in classes if label not in set(labels)]
    if not missing:
        return BiasCorrectedTemperatureScaling()
    warnings.warn(
        f"no labelled validation radiographs of {', '.join(map(repr, missing))}: their bias "
        "cannot be fitted, so the probabilities are calibrated by a temperature alone",
        CalibrationWarning,
        stacklevel=4,
    )
    return TemperatureScaling()
