"""The default :class:`~covidcxr.Evaluator` and the report it produces."""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs
import numpy as np
from attrs import field, frozen
from numpy.typing import NDArray

from covidcxr._plain import plain_data
from covidcxr.errors import ConfigurationError
from covidcxr.evaluate._calibration import (
    UNCERTAIN,
    CalibrationSummary,
    DecisionScores,
    RiskCoverageCurve,
    decision_scores,
    reliability_curve,
    risk_coverage_curve,
)
from covidcxr.evaluate._detection import DetectionMetrics, evaluate_detections
from covidcxr.evaluate._metrics import ClassificationMetrics, classification_metrics
from covidcxr.evaluate._provenance import software_versions, truth_fingerprint
from covidcxr.evaluate._segmentation import SeverityByClass, severity_by_class
from covidcxr.files import write_text
from covidcxr.records import REJECTED, GroundTruth, Prediction

__all__ = [
    "ClassificationEvaluator",
    "EvaluationReport",
    "OneClassPredictionWarning",
    "one_class_warning",
]

# A model "answers one class" when this share of at least this many predictions is one
# class while the truths hold two classes or more.
_ONE_CLASS_SHARE = 0.95
_ONE_CLASS_MIN_PREDICTIONS = 20


class OneClassPredictionWarning(UserWarning):
    """A model predicted one class for (nearly) every radiograph of a set holding several.

    Issued by :meth:`ClassificationEvaluator.evaluate` (which also adds the message to
    the report's notes) and by :meth:`covidcxr.Pipeline.fit` on its validation set. The
    usual causes: a backbone that did not train (a frozen *random* base), too few
    epochs, or mis-scaled pixels (see :class:`~covidcxr.classify.PixelRangeWarning`).
    """


def one_class_warning(
    truths: Sequence[str | None], predicted: Sequence[str], *, what: str
) -> str | None:
    """Say so when ``predicted`` is (nearly) one class although ``truths`` are not.

    Parameters
    ----------
    truths
        The true labels (``None`` for unlabelled radiographs, which are not counted).
    predicted
        The predicted labels, aligned with ``truths``.
    what
        Names the set in the message (``"test"``, ``"validation"``).

    Returns
    -------
    str or None
        The message, or ``None`` when at least 5 % of at least 20 predictions differ from
        the most common one, or the truths hold fewer than two classes.

    Examples
    --------
    >>> one_class_warning(["normal", "pneumonia"] * 10, ["normal"] * 20, what="test")[:58]
    "The model predicted 'normal' for 20 of 20 test radiographs"
    >>> one_class_warning(["normal", "pneumonia"] * 10, ["normal", "pneumonia"] * 10, what="test")
    """
    true_classes = {label for label in truths if label is not None}
    if len(predicted) < _ONE_CLASS_MIN_PREDICTIONS or len(true_classes) < 2:
        return None
    label, count = Counter(predicted).most_common(1)[0]
    if count < _ONE_CLASS_SHARE * len(predicted):
        return None
    return (
        f"The model predicted {label!r} for {count} of {len(predicted)} {what} radiographs, "
        f"which hold {len(true_classes)} classes: it answers one class whatever it sees. "
        "Usual causes: a backbone that did not learn (weights=None with a frozen base: "
        "train it from scratch, see covidcxr.classify.FROM_SCRATCH), too few epochs, or "
        "mis-scaled pixels."
    )


def _frozen_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(str(v) for v in value)


def _severity_rows(rows: Iterable[SeverityByClass]) -> tuple[SeverityByClass, ...]:
    return tuple(rows)


@frozen
class EvaluationReport:
    """The result of one evaluation, with what is needed to compare it with another.

    Parameters
    ----------
    classification
        The classification figures, or ``None`` when only detections were evaluated.
    detection
        The detection figures (see :func:`covidcxr.evaluate.evaluate_detections`),
        or ``None`` when no detections were evaluated.
    configuration
        How the predictions were made (component names and options), as plain data.
    data_fingerprint
        What was evaluated, as ``"sha256:"`` and 64 hexadecimal digits:
        :func:`~covidcxr.evaluate.truth_fingerprint` of the ground truth when the report
        comes straight from :meth:`~covidcxr.ClassificationEvaluator.evaluate` (it sees no
        pixels); a caller that read the images, such as the :class:`~covidcxr.Pipeline`,
        replaces it with their :func:`~covidcxr.evaluate.data_fingerprint`.
    versions
        :func:`~covidcxr.evaluate.software_versions` at evaluation time.
    created
        When the report was made, ISO 8601 in UTC.
    notes
        What the evaluator wants the reader to know about the figures, above all why one
        is missing (detections not scored because some radiographs are not annotated).
        :func:`~covidcxr.evaluate.write_report` shows them at the top of the report.
    calibration
        ECE and reliability curve of the evaluated probabilities (``after``) and, when a
        caller supplies them (the :class:`~covidcxr.Pipeline` of a calibrated model
        does, with :func:`attrs.evolve`), those of the same items before calibration
        (``before``); ``None`` when classification was not scored.
    risk_coverage
        The risk-coverage curve of abstaining on the least confident radiographs first
        (see :func:`~covidcxr.evaluate.risk_coverage_curve`); ``None`` when
        classification was not scored.
    decisions
        The labels the predictions carry, scored as given: abstentions
        (:data:`~covidcxr.evaluate.UNCERTAIN`), coverage, accuracy on the covered
        radiographs and overall, and per-class sensitivity and specificity of the
        decisions (after operating points). ``classification`` instead scores each
        radiograph's most probable class. ``None`` when classification was not scored
        or a label is neither a class nor :data:`~covidcxr.evaluate.UNCERTAIN`.
    rejected
        The ids of the radiographs the input gate refused (``status`` :data:`REJECTED
        <covidcxr.records.REJECTED>`): they have no diagnosis and are left out of the
        classification, calibration, risk-coverage and decision figures.
    severity
        The severity the predictions measured, by true class (see
        :func:`~covidcxr.evaluate.severity_by_class`); empty when no prediction carries
        one.

    Examples
    --------
    >>> from covidcxr import GroundTruth, Prediction
    >>> truths = [GroundTruth("a", "normal"), GroundTruth("b", "pneumonia")]
    >>> predictions = [Prediction("a", "normal", {"normal": 0.8, "pneumonia": 0.2}),
    ...                Prediction("b", "pneumonia", {"normal": 0.4, "pneumonia": 0.6})]
    >>> report = ClassificationEvaluator(n_bootstrap=0).evaluate(
    ...     truths, predictions, classes=["normal", "pneumonia"], detections=False)
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
    notes: tuple[str, ...] = field(default=(), converter=_str_tuple)
    calibration: CalibrationSummary | None = None
    risk_coverage: RiskCoverageCurve | None = None
    decisions: DecisionScores | None = None
    rejected: tuple[str, ...] = field(default=(), converter=_str_tuple)
    severity: tuple[SeverityByClass, ...] = field(default=(), converter=_severity_rows)

    def __repr__(self) -> str:
        """The headline figures on one line; :meth:`to_dict` and :meth:`to_json` hold all.

        Examples
        --------
        >>> EvaluationReport(None, None, created="2026-01-01T00:00:00+00:00")
        EvaluationReport(classification=None, detection=None, created='2026-01-01T00:00:00+00:00')
        """
        parts = []
        metrics = self.classification
        if metrics is None:
            parts.append("classification=None")
        else:
            parts.append(
                f"n_images={metrics.n_images}, accuracy={metrics.accuracy:.4f}, "
                f"macro_f1={metrics.macro.f1:.4f}"
            )
        found = self.detection
        if found is None:
            parts.append("detection=None")
        else:
            parts.append(f"ap50={found.ap50:.4f}, detection_images={found.n_images}")
        if self.rejected:
            parts.append(f"rejected={len(self.rejected)}")
        if self.notes:
            parts.append(f"notes={len(self.notes)}")
        parts.append(f"created={self.created!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def to_dict(self) -> dict[str, Any]:
        """Every figure, the notes and the provenance, as JSON-ready data."""
        return {
            "created": self.created,
            "data_fingerprint": self.data_fingerprint,
            "versions": dict(self.versions),
            "configuration": plain_data(self.configuration),
            "notes": list(self.notes),
            "classification": (
                plain_data(self.classification.to_dict())
                if self.classification is not None
                else None
            ),
            "detection": (
                plain_data(self.detection.to_dict()) if self.detection is not None else None
            ),
            "calibration": (
                plain_data(self.calibration.to_dict()) if self.calibration is not None else None
            ),
            "risk_coverage": (
                plain_data(self.risk_coverage.to_dict()) if self.risk_coverage is not None else None
            ),
            "decisions": (
                plain_data(self.decisions.to_dict()) if self.decisions is not None else None
            ),
            "rejected": list(self.rejected),
            "severity": [plain_data(row.to_dict()) for row in self.severity],
        }

    def with_calibration_before(
        self,
        probabilities: NDArray[np.float64] | Sequence[Sequence[float]],
        true_labels: Sequence[str],
        *,
        classes: Sequence[str],
        temperature: float | None = None,
        biases: Sequence[float] | None = None,
    ) -> EvaluationReport:
        """A copy with the reliability curve of the same items before calibration added.

        The curve is binned like :attr:`calibration`'s ``after``, so the two ECEs compare.

        Parameters
        ----------
        probabilities
            The uncalibrated probabilities, one row per evaluated radiograph, in the
            report's order, columns in ``classes`` order.
        true_labels
            The true class of each row.
        classes
            The class of each column.
        temperature
            The calibration's temperature, shown in the report.
        biases
            The calibration's class biases, one per class in ``classes`` order, when it
            has them; shown in the report.

        Raises
        ------
        ConfigurationError
            If the report has no calibration section (classification was not scored),
            or the rows do not match the evaluated radiographs.

        Examples
        --------
        >>> from covidcxr import GroundTruth, Prediction
        >>> truths = [GroundTruth("a", "normal"), GroundTruth("b", "pneumonia")]
        >>> calibrated = [Prediction("a", "normal", {"normal": 0.7, "pneumonia": 0.3}),
        ...               Prediction("b", "normal", {"normal": 0.6, "pneumonia": 0.4})]
        >>> report = ClassificationEvaluator(n_bootstrap=0).evaluate(
        ...     truths, calibrated, classes=["normal", "pneumonia"], detections=False)
        >>> report = report.with_calibration_before(
        ...     [[0.9, 0.1], [0.8, 0.2]], ["normal", "pneumonia"],
        ...     classes=["normal", "pneumonia"], temperature=2.0)
        >>> round(report.calibration.before.expected_calibration_error, 3)
        0.45
        """
        if self.calibration is None:
            raise ConfigurationError(
                "this report has no calibration section (classification was not scored), "
                "so there is nothing to compare the uncalibrated probabilities with"
            )
        after = self.calibration.after
        if len(true_labels) != after.n_items:
            raise ConfigurationError(
                f"{len(true_labels)} uncalibrated row(s) for a report of {after.n_items} "
                "radiograph(s); give one row per evaluated radiograph, in order"
            )
        before = reliability_curve(probabilities, true_labels, len(after.counts), classes=classes)
        by_class = None
        if biases is not None:
            if len(biases) != len(classes):
                raise ConfigurationError(
                    f"{len(biases)} class bias(es) for {len(classes)} classes; give one per class"
                )
            by_class = {str(c): float(b) for c, b in zip(classes, biases, strict=True)}
        return attrs.evolve(
            self,
            calibration=attrs.evolve(
                self.calibration, before=before, temperature=temperature, biases=by_class
            ),
        )

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
        Bootstrap resamples for the intervals of the figures that are not proportions
        (macro averages, per-class F1 and AUC; 0 skips them). Accuracy and per-class
        recall, precision and specificity always get Wilson score intervals.
    confidence_level
        Coverage of the intervals (0.95 for 95 % intervals).
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
        truths: Sequence[GroundTruth],
        predictions: Sequence[Prediction],
        *,
        classes: Sequence[str],
        detections: bool = True,
    ) -> EvaluationReport:
        """Score ``predictions`` against ``truths``, radiograph by radiograph.

        Classification is scored when ``classes`` is non-empty: the probability matrix is
        built from each prediction's ``probabilities``, which must hold exactly the classes
        of ``classes`` (in any order), columns in ``classes`` order. With ``classes=()``
        the probabilities are not read and only detections are scored.

        Detections are scored when ``detections`` is true and every truth is
        ``annotated``: each prediction's ``detections`` against its truth's ``boxes`` (a
        truth without boxes counts every detection on it as a false positive). When some
        truths are not annotated their empty ``boxes`` mean "unknown", so the detection
        figures are left out (``report.detection is None``) and a note in
        ``report.notes`` says why, rather than counting possibly real lesions as false
        positives. Detections are scored even when no prediction has any (every true
        box is then missed), so pass ``detections=False`` to score classification only.

        The report's ``data_fingerprint`` is
        :func:`~covidcxr.evaluate.truth_fingerprint` of ``truths``: a SHA-256
        over their ids, labels, boxes and ``annotated`` flags, in order (the evaluator sees
        no pixels; a caller that read the images may replace it with their
        :func:`~covidcxr.evaluate.data_fingerprint`).

        Parameters
        ----------
        truths
            The ground truth, one per radiograph.
        predictions
            One per radiograph, aligned with ``truths`` by position and sharing their ids.
        classes
            The classes to score, in the order of the report's columns; every prediction
            has a probability for each and for no other. Empty for detections only.
        detections
            Score the predictions' detections too (when every truth is annotated).

        Returns
        -------
        EvaluationReport

        Raises
        ------
        ConfigurationError
            If ``truths`` is empty; ``truths`` and ``predictions`` differ in length or, at
            some position, in id (the first mismatch is named); a prediction's
            probabilities lack one of ``classes`` or hold another class; a truth has no
            label while classification is scored; or there is nothing to score (no
            ``classes``, and detections not asked for or not scorable).

        Examples
        --------
        >>> from covidcxr import Box, Detection, GroundTruth, Prediction
        >>> lesion = Box(2, 2, 4, 4)
        >>> truths = [GroundTruth("a", "covid-19", boxes=[lesion]), GroundTruth("b", "normal")]
        >>> predictions = [
        ...     Prediction("a", "covid-19", {"covid-19": 0.9, "normal": 0.1},
        ...                detections=[Detection(lesion, "opacity", 0.8)]),
        ...     Prediction("b", "normal", {"covid-19": 0.3, "normal": 0.7}),
        ... ]
        >>> evaluator = ClassificationEvaluator(n_bootstrap=0)
        >>> report = evaluator.evaluate(truths, predictions, classes=["covid-19", "normal"])
        >>> report.classification.accuracy, report.detection.ap50
        (1.0, 1.0)

        Truths whose lesions were never annotated leave the detection figures out:

        >>> unknown = [GroundTruth("a", "covid-19", annotated=False), truths[1]]
        >>> report = evaluator.evaluate(unknown, predictions, classes=["covid-19", "normal"])
        >>> report.detection is None, report.notes[0].startswith("Detection was not scored")
        (True, True)
        """
        truths = list(truths)
        predictions = list(predictions)
        _check_alignment(truths, predictions)
        classes = tuple(classes)
        notes: list[str] = []
        # Images the input gate refused carry no diagnosis (no probabilities, no
        # detections): they are listed in the report, not scored as if the model had
        # answered, in any figure.
        rejected = tuple(p.id for p in predictions if p.status == REJECTED)
        scored = [(t, p) for t, p in zip(truths, predictions, strict=True) if p.status != REJECTED]
        unannotated = [t.id for t, _ in scored if not t.annotated]
        score_detections = detections and bool(scored) and not unannotated
        if detections and unannotated:
            notes.append(
                f"Detection was not scored: {len(unannotated)} of {len(scored)} radiograph(s) "
                f"carry no lesion annotation (first: {unannotated[0]!r}), so their missing "
                "boxes are unknown, not absent."
            )
        if not classes and not score_detections:
            why = (
                f"{len(unannotated)} radiograph(s) are not annotated (first: {unannotated[0]!r})"
                if unannotated
                else "the input gate refused every radiograph"
                if detections
                else "detections=False"
            )
            raise ConfigurationError(
                f"nothing to evaluate: no classes were given, and detections are not scored: {why}"
            )
        classification = None
        calibration = risk_coverage = decisions = None
        if rejected:
            notes.append(
                f"{len(rejected)} of {len(predictions)} radiograph(s) were refused by the "
                f"input gate (first: {rejected[0]!r}): they get no diagnosis, so the "
                "classification, calibration, decision and detection figures cover the "
                f"other {len(scored)}."
            )
        if classes and scored:
            scored_truths = [t for t, _ in scored]
            scored_predictions = [p for _, p in scored]
            # Abstentions are not an answer: "uncertain" for most radiographs is not "one
            # class whatever it sees".
            answered = [(t.label, p.label) for t, p in scored if p.label != UNCERTAIN]
            one_class = one_class_warning(
                [label for label, _ in answered],
                [label for _, label in answered],
                what="evaluated",
            )
            if one_class is not None:
                notes.append(one_class)
                warnings.warn(one_class, OneClassPredictionWarning, stacklevel=2)
            unlabelled = [t.id for t in scored_truths if t.label is None]
            if unlabelled:
                raise ConfigurationError(
                    f"{len(unlabelled)} radiograph(s) have no label, so their predicted class "
                    f"cannot be scored (first: {unlabelled[0]!r})"
                )
            true_labels = [str(t.label) for t in scored_truths]
            probabilities = _probability_matrix(scored_predictions, classes)
            classification = classification_metrics(
                true_labels,
                probabilities,
                classes,
                n_bootstrap=self.n_bootstrap,
                confidence_level=self.confidence_level,
                n_bins=self.n_bins,
                seed=self.seed,
            )
            calibration = CalibrationSummary(
                after=reliability_curve(probabilities, true_labels, self.n_bins, classes=classes)
            )
            risk_coverage = risk_coverage_curve(probabilities, true_labels, classes=classes)
            decisions, note = _decisions(true_labels, scored_predictions, classes, probabilities)
            if note:
                notes.append(note)
        detection = None
        if score_detections:
            detection = evaluate_detections(
                [t.boxes for t, _ in scored],
                [p.detections for _, p in scored],
                ids=[t.id for t, _ in scored],
            )
        return EvaluationReport(
            classification=classification,
            detection=detection,
            configuration=self.configuration,
            data_fingerprint=truth_fingerprint(truths),
            versions=software_versions(),
            notes=notes,
            calibration=calibration,
            risk_coverage=risk_coverage,
            decisions=decisions,
            rejected=rejected,
            severity=severity_by_class(
                [t.label for t in truths], [p.severity for p in predictions]
            ),
        )


def _decisions(
    true_labels: Sequence[str],
    predictions: Sequence[Prediction],
    classes: Sequence[str],
    probabilities: NDArray[np.float64],
) -> tuple[DecisionScores | None, str | None]:
    """The predictions' own labels scored, and a note when they are not the argmax."""
    given = [p.label for p in predictions]
    if any(label not in classes and label != UNCERTAIN for label in given):
        return None, None
    scores = decision_scores(true_labels, given, classes, probabilities=probabilities)
    if not scores.differs_from_argmax:
        return scores, None
    parts = []
    if scores.n_abstained:
        parts.append(
            f"{scores.n_abstained} of {scores.n_items} prediction(s) abstained "
            f"({UNCERTAIN!r}; coverage {scores.coverage:.1%})"
        )
    if scores.n_differing_from_argmax:
        parts.append(
            f"{scores.n_differing_from_argmax} label(s) differ from the most probable class "
            "(operating points)"
        )
    return scores, (
        "; ".join(parts).capitalize()
        + ". The classification figures score each radiograph's most probable class, "
        "abstentions included; the decision figures score the labels as given: accuracy "
        f"on the covered radiographs {scores.accuracy_covered:.1%}, overall (abstentions "
        f"counted wrong) {scores.accuracy_overall:.1%}."
    )


def _check_alignment(truths: Sequence[GroundTruth], predictions: Sequence[Prediction]) -> None:
    """Raise unless ``truths`` and ``predictions`` are non-empty and agree id by id."""
    if len(truths) != len(predictions):
        raise ConfigurationError(
            f"{len(truths)} truth(s) but {len(predictions)} prediction(s); give one "
            "prediction per truth, in the same order"
        )
    if not truths:
        raise ConfigurationError("nothing to evaluate: no truths were given")
    for position, (truth, prediction) in enumerate(zip(truths, predictions, strict=True)):
        if truth.id != prediction.id:
            raise ConfigurationError(
                f"truths and predictions are not aligned: at position {position} the truth "
                f"is {truth.id!r} but the prediction is {prediction.id!r}"
            )


def _probability_matrix(
    predictions: Sequence[Prediction], classes: Sequence[str]
) -> NDArray[np.float64]:
    """One row per prediction, its probabilities in ``classes`` order."""
    for prediction in predictions:
        missing = [c for c in classes if c not in prediction.probabilities]
        if missing:
            raise ConfigurationError(
                f"prediction {prediction.id!r} has no probability for class {missing[0]!r} "
                f"(it has {sorted(prediction.probabilities)}); every prediction needs one "
                f"for each of {list(classes)}"
            )
        extra = [c for c in prediction.probabilities if c not in classes]
        if extra:
            raise ConfigurationError(
                f"prediction {prediction.id!r} has a probability for class {extra[0]!r}, "
                f"which is not one of {list(classes)}; pass every class the classifier "
                "predicts"
            )
    return np.array([[p.probabilities[c] for c in classes] for p in predictions], dtype=np.float64)
