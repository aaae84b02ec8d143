"""The default :class:`~covidcxr.Evaluator` and the report it produces."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from attrs import field, frozen
from numpy.typing import NDArray

from covidcxr.errors import ConfigurationError
from covidcxr.evaluate.detection import DetectionMetrics, evaluate_detections
from covidcxr.evaluate.metrics import ClassificationMetrics, classification_metrics
from covidcxr.evaluate.provenance import data_fingerprint, software_versions
from covidcxr.files import write_text
from covidcxr.records import Detection, XRay

__all__ = ["ClassificationEvaluator", "EvaluationReport"]


def _frozen_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


def _json_ready(value: Any) -> Any:
    """Plain JSON data: nan and infinities become ``None``, numpy scalars Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


@frozen
class EvaluationReport:
    """The result of one evaluation, with what is needed to compare it with another.

    Parameters
    ----------
    classification
        The classification figures, or ``None`` when only detections were evaluated.
    detection
        The detection figures (see :func:`covidcxr.evaluate.detection.evaluate_detections`),
        or ``None`` when no detections were evaluated.
    configuration
        How the predictions were made (component names and options), as plain data.
    data_fingerprint
        :func:`~covidcxr.evaluate.provenance.data_fingerprint` of the evaluated images.
    versions
        :func:`~covidcxr.evaluate.provenance.software_versions` at evaluation time.
    created
        When the report was made, ISO 8601 in UTC.

    Examples
    --------
    >>> import numpy as np
    >>> from covidcxr import XRay
    >>> truths = [XRay(np.zeros((8, 8), np.uint8), id=str(i), label=label)
    ...           for i, label in enumerate(["normal", "pneumonia"])]
    >>> report = ClassificationEvaluator(n_bootstrap=0).evaluate(
    ...     truths, probabilities=np.array([[0.8, 0.2], [0.4, 0.6]]),
    ...     classes=["normal", "pneumonia"])
    >>> report.classification.accuracy
    1.0
    >>> report.to_dict()["classification"]["confusion_matrix"]
    [[1, 0], [0, 1]]
    """

    classification: ClassificationMetrics | None
    detection: DetectionMetrics | None
    configuration: Mapping[str, Any] = field(factory=dict, converter=_frozen_mapping)
    data_fingerprint: str | None = None
    versions: Mapping[str, str] = field(factory=dict, converter=_frozen_mapping)
    created: str = field(factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        """Every figure and the provenance, as JSON-ready data."""
        return {
            "created": self.created,
            "data_fingerprint": self.data_fingerprint,
            "versions": dict(self.versions),
            "configuration": _json_ready(self.configuration),
            "classification": (
                self.classification.to_dict() if self.classification is not None else None
            ),
            "detection": (
                _json_ready(self.detection.to_dict()) if self.detection is not None else None
            ),
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The report as a JSON document (strict JSON: no ``NaN``)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def write_json(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write :meth:`to_json` to ``path`` atomically.

        Raises
        ------
        OutputExistsError
            If ``path`` exists and ``overwrite`` is false.
        """
        target = Path(path)
        write_text(target, self.to_json() + "\n", overwrite=overwrite)
        return target


@frozen
class ClassificationEvaluator:
    """The default :class:`~covidcxr.Evaluator`: classification and detection figures.

    Parameters
    ----------
    n_bootstrap
        Bootstrap resamples for the 95 % confidence intervals (0 skips them).
    confidence_level
        Coverage of the intervals.
    n_bins
        Bins of the reliability diagram.
    seed
        Seeds the bootstrap.
    configuration
        Copied into every report, so a report says how its predictions were made.

    Examples
    --------
    >>> from covidcxr import Evaluator
    >>> isinstance(ClassificationEvaluator(), Evaluator)
    True
    """

    n_bootstrap: int = 1000
    confidence_level: float = 0.95
    n_bins: int = 10
    seed: int = 0
    configuration: Mapping[str, Any] = field(factory=dict, converter=_frozen_mapping)

    def evaluate(
        self,
        truths: Sequence[XRay],
        *,
        probabilities: NDArray[np.floating[Any]] | None = None,
        classes: Sequence[str] = (),
        detections: Sequence[Sequence[Detection]] | None = None,
    ) -> EvaluationReport:
        """Score predictions against the labels and boxes of ``truths``.

        Parameters
        ----------
        truths
            The labelled radiographs; their ``label`` and ``boxes`` are the ground truth.
        probabilities
            One row per radiograph, columns in ``classes`` order.
        classes
            The labels of the probability columns.
        detections
            One list of detections per radiograph, scored against its ``boxes`` (an image
            without boxes counts every detection on it as a false positive).

        Returns
        -------
        EvaluationReport

        Raises
        ------
        ConfigurationError
            If neither probabilities nor detections are given, the shapes disagree, or a
            radiograph has no label while probabilities are scored.
        """
        truths = list(truths)
        if probabilities is None and detections is None:
            raise ConfigurationError("nothing to evaluate: give probabilities, detections or both")
        classification = None
        if probabilities is not None:
            unlabelled = [t.id for t in truths if t.label is None]
            if unlabelled:
                raise ConfigurationError(
                    f"{len(unlabelled)} radiograph(s) have no label, so their predicted class "
                    f"cannot be scored (first: {unlabelled[0]!r})"
                )
            classification = classification_metrics(
                [str(t.label) for t in truths],
                probabilities,
                classes,
                n_bootstrap=self.n_bootstrap,
                confidence_level=self.confidence_level,
                n_bins=self.n_bins,
                seed=self.seed,
            )
        detection = None
        if detections is not None:
            if len(detections) != len(truths):
                raise ConfigurationError(
                    f"detections has {len(detections)} entries but there are {len(truths)} "
                    "radiographs; give one (possibly empty) list per radiograph"
                )
            detection = evaluate_detections([t.boxes for t in truths], detections)
        return EvaluationReport(
            classification=classification,
            detection=detection,
            configuration=self.configuration,
            data_fingerprint=data_fingerprint(truths),
            versions=software_versions(),
        )
