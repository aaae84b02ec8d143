"""What a pipeline fits on its validation radiographs: calibration and operating points."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import numpy as np
from numpy.typing import NDArray

from covidcxr.errors import ConfigurationError, ModelFormatError
from covidcxr.evaluate._calibration import (
    CalibrationWarning,
    OperatingPoints,
    TemperatureScaling,
    expected_calibration_error,
)
from covidcxr.pipeline._config import TrustConfig
from covidcxr.records import ACCEPTED, UNCERTAIN

__all__ = ["TrustState", "fit_trust"]

# Fewer labelled validation radiographs than this fit no temperature: the estimate
# would be noise.
_MIN_CALIBRATION_ITEMS: Final = 20


@attrs.define
class TrustState:
    """The calibration and operating points a pipeline applies after its classifier.

    Parameters
    ----------
    calibration
        Temperature scaling fitted on the validation radiographs, or ``None``.
    operating_points
        Per-class thresholds and the abstention threshold, or ``None`` (argmax).
    validation
        What fitting measured on the validation radiographs: ``n``, and ECE before and
        after calibration.
    """

    calibration: TemperatureScaling | None = None
    operating_points: OperatingPoints | None = None
    validation: dict[str, Any] = attrs.Factory(dict)

    def calibrate(self, probabilities: NDArray[Any]) -> NDArray[np.float32]:
        """The calibrated probabilities (unchanged without a calibration)."""
        if self.calibration is None:
            return np.asarray(probabilities, np.float32)
        return np.asarray(self.calibration.transform(probabilities), np.float32)

    def decide(
        self, probabilities: NDArray[Any], classes: Sequence[str]
    ) -> tuple[str, str, str | None]:
        """The label, status and reason for one row of calibrated probabilities."""
        return self.decide_rows(np.asarray(probabilities)[None, :], classes)[0]

    def decide_rows(
        self, probabilities: NDArray[Any], classes: Sequence[str]
    ) -> list[tuple[str, str, str | None]]:
        """:meth:`decide` for each row of a ``(n, classes)`` array, in one call."""
        rows = np.asarray(probabilities, np.float64)
        if len(rows) == 0:
            return []
        if self.operating_points is None:
            return [(classes[index], ACCEPTED, None) for index in rows.argmax(axis=1).tolist()]
        labels = self.operating_points.apply(rows)
        below = self.operating_points.abstain_below
        return [
            (
                UNCERTAIN,
                UNCERTAIN,
                f"confidence {confidence:.2f} is below the abstention threshold {below:.2f}",
            )
            if label == UNCERTAIN
            else (label, ACCEPTED, None)
            for label, confidence in zip(labels, rows.max(axis=1).tolist(), strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``calibration`` and ``operating_points`` entries."""
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
        return {"calibration": calibration, "operating_points": points}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: Path) -> TrustState:
        """Read what :meth:`to_dict` wrote (``source`` names the file in errors).

        Raises
        ------
        ModelFormatError
            If an entry is damaged.
        """
        try:
            calibration_entry = data.get("calibration")
            calibration = (
                TemperatureScaling.from_dict(calibration_entry) if calibration_entry else None
            )
            points_entry = data.get("operating_points")
            points = OperatingPoints.from_dict(points_entry) if points_entry else None
        except (ConfigurationError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelFormatError(f"{source}: the trust entry is damaged: {exc}") from exc
        validation = {}
        if calibration_entry:
            validation = {
                "n": calibration_entry.get("n_fitted"),
                "ece_before": calibration_entry.get("ece_before"),
                "ece_after": calibration_entry.get("ece_after"),
            }
        return cls(calibration, points, validation)


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
        if config.calibrate:
            warnings.warn(f"{message}; the probabilities are left as the classifier gives them",
                          CalibrationWarning, stacklevel=3)  # fmt: skip
        return state
    if config.calibrate:
        before = expected_calibration_error(probs, labels, classes=classes)
        state.calibration = TemperatureScaling().fit(probs, labels, classes=classes)
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
