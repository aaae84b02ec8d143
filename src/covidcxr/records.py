"""The immutable records that flow through the pipeline: XRay, Box, Detection.

Records carry data and check it on construction; behaviour lives in functions and in the
estimator classes. All coordinates are pixels of the :class:`XRay` a box belongs to, with
the origin at the top-left corner, ``x`` to the right and ``y`` down: the same convention
as Watson Visual Recognition's ``left``/``top``/``width``/``height``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias

import attrs
import numpy as np
from attrs import field, frozen
from numpy.typing import NDArray

from covidcxr.errors import InvalidImageError, InvalidRecordError, UnknownLabelError
from covidcxr.labels import LABELS

__all__ = [
    "ACCEPTED",
    "PIXEL_DTYPES",
    "REJECTED",
    "STATUSES",
    "UNCERTAIN",
    "Box",
    "Detection",
    "GateDecision",
    "GroundTruth",
    "Prediction",
    "PredictionStatus",
    "Severity",
    "XRay",
    "detection_to_dict",
]

#: The pixel dtypes an :class:`XRay` accepts: raw 8- and 16-bit radiographs, and float32
#: after preprocessing.
PIXEL_DTYPES: tuple[np.dtype[Any], ...] = (
    np.dtype(np.uint8),
    np.dtype(np.uint16),
    np.dtype(np.float32),
)

# Boxes computed in floating point (after a resize, say) may overshoot the image edge by
# rounding; anything beyond this many pixels is a real error.
_EDGE_TOLERANCE = 1e-3


def _number(value: Any, owner: str) -> float:
    """``float(value)``, refusing booleans with an error that names ``owner``.

    ``float(True)`` is ``1.0``: a flag passed where a coordinate, score or share belongs
    is a mistake, not a number.
    """
    if isinstance(value, bool | np.bool_):
        raise InvalidRecordError(f"{owner} must be a number, got the boolean {value!r}")
    return float(value)


# Named converters, one per record, as the attrs mypy plugin wants them.
def _box_number(value: Any) -> float:
    return _number(value, "Box coordinates and sizes")


def _score_number(value: Any) -> float:
    return _number(value, "Detection.score")


def _share_number(value: Any) -> float:
    return _number(value, "Severity shares")


def _ood_score_number(value: Any) -> float | None:
    return None if value is None else _number(value, "Prediction.ood_score")


def _finite_non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise InvalidRecordError(f"Box.{attribute.name} must be finite and >= 0, got {value!r}")


@frozen
class Box:
    """An axis-aligned rectangle in pixel coordinates, origin at the top-left corner.

    Parameters
    ----------
    x, y
        The top-left corner (Watson's ``left`` and ``top``).
    width, height
        The size, non-negative.

    Examples
    --------
    >>> box = Box(10, 20, width=30, height=40)
    >>> box.x2, box.y2, box.area
    (40.0, 60.0, 1200.0)
    """

    x: float = field(converter=_box_number, validator=_finite_non_negative)
    y: float = field(converter=_box_number, validator=_finite_non_negative)
    width: float = field(converter=_box_number, validator=_finite_non_negative)
    height: float = field(converter=_box_number, validator=_finite_non_negative)

    @property
    def x2(self) -> float:
        """The right edge, ``x + width``."""
        return self.x + self.width

    @property
    def y2(self) -> float:
        """The bottom edge, ``y + height``."""
        return self.y + self.height

    @property
    def area(self) -> float:
        """``width * height`` in square pixels."""
        return self.width * self.height

    @classmethod
    def from_corners(cls, x1: float, y1: float, x2: float, y2: float) -> Box:
        """Build a box from its top-left ``(x1, y1)`` and bottom-right ``(x2, y2)`` corners.

        Examples
        --------
        >>> Box.from_corners(1, 2, 4, 8)
        Box(x=1.0, y=2.0, width=3.0, height=6.0)
        """
        if x2 < x1 or y2 < y1:
            raise InvalidRecordError(
                f"corners ({x1}, {y1}) and ({x2}, {y2}) are not top-left, bottom-right"
            )
        return cls(x1, y1, x2 - x1, y2 - y1)


def _score_in_unit_interval(
    instance: object, attribute: attrs.Attribute[float], value: float
) -> None:
    if not 0.0 <= value <= 1.0:
        raise InvalidRecordError(f"Detection.score must be in [0, 1], got {value!r}")


def _non_empty(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value:
        raise InvalidRecordError(f"{type(instance).__name__}.{attribute.name} must not be empty")


@frozen
class Detection:
    """One detected lesion: where, what, and how sure the detector is.

    Parameters
    ----------
    box
        The lesion's bounding box in the coordinates of the :class:`XRay` it was found in.
    label
        What was found, for example ``"opacity"``.
    score
        Confidence in ``[0, 1]``.

    Examples
    --------
    >>> Detection(Box(0, 0, 5, 5), "opacity", 0.9).score
    0.9
    """

    box: Box = field(validator=attrs.validators.instance_of(Box))
    label: str = field(validator=[attrs.validators.instance_of(str), _non_empty])
    score: float = field(converter=_score_number, validator=_score_in_unit_interval)


def detection_to_dict(detection: Detection) -> dict[str, Any]:
    """The JSON-ready form of a detection, as the CLI and predictions write it.

    Box coordinates are rounded to a thousandth of a pixel: a box mapped back to the
    original image (``21.8046875`` times a scale) carries floating-point noise in its last
    digits (``21.804687500000004``), which a table should not show as if it meant
    something.

    Examples
    --------
    >>> detection_to_dict(Detection(Box(1, 2, 3, 4), "opacity", 0.5))
    {'label': 'opacity', 'score': 0.5, 'box': {'x': 1.0, 'y': 2.0, 'width': 3.0, 'height': 4.0}}
    >>> detection_to_dict(Detection(Box(21.804687500000004, 2, 3, 4), "opacity", 0.5))["box"]
    {'x': 21.805, 'y': 2.0, 'width': 3.0, 'height': 4.0}
    """
    fields = attrs.asdict(detection)
    fields["box"] = {key: round(value, _BOX_DECIMALS) for key, value in fields["box"].items()}
    return {key: fields[key] for key in _DETECTION_JSON_ORDER}


_BOX_DECIMALS = 3  # a thousandth of a pixel


# The key order JSON readers have always seen; the fields are declared box, label, score.
_DETECTION_JSON_ORDER = ("label", "score", "box")


def _prediction_json_value(
    instance: object, attribute: attrs.Attribute[Any] | None, value: Any
) -> Any:
    # attrs.asdict copies dicts but leaves a read-only MappingProxyType as it is, and it
    # would write detections in field order; both get their JSON form here.
    if isinstance(value, MappingProxyType):
        return dict(value)
    if attribute is not None and attribute.name == "detections":
        return [detection_to_dict(detection) for detection in value]
    if isinstance(value, Severity):
        return value.to_dict()
    return value


def _as_readonly_pixels(value: Any) -> NDArray[Any]:
    if not isinstance(value, np.ndarray):
        raise InvalidImageError(f"pixels must be a numpy array, got {type(value).__name__}")
    view = value.view()
    view.flags.writeable = False
    return view


def _check_pixels(
    instance: XRay, attribute: attrs.Attribute[NDArray[Any]], value: NDArray[Any]
) -> None:
    where = str(instance.id) if instance.id else None
    if value.ndim != 2:
        raise InvalidImageError(
            f"pixels must be a 2-D grayscale array, got shape {value.shape}", where
        )
    if value.dtype not in PIXEL_DTYPES:
        raise InvalidImageError(
            f"pixels must be uint8, uint16 or float32, got {value.dtype}", where
        )
    if value.size == 0:
        raise InvalidImageError("pixels must not be empty", where)


def _check_label(
    instance: XRay | GroundTruth, attribute: attrs.Attribute[str | None], value: str | None
) -> None:
    if value is not None and value not in LABELS:
        raise UnknownLabelError(
            f"XRay {instance.id!r}: label must be None or one of {LABELS}, got {value!r} "
            "(use covidcxr.labels.canonical_label to map dataset spellings)"
        )


def _check_boxes(
    instance: XRay, attribute: attrs.Attribute[tuple[Box, ...]], value: tuple[Box, ...]
) -> None:
    height, width = instance.pixels.shape
    for box in value:
        if not isinstance(box, Box):
            raise TypeError(
                f"XRay {instance.id!r}: boxes must be Box records, got {type(box).__name__}"
            )
        if box.x2 > width + _EDGE_TOLERANCE or box.y2 > height + _EDGE_TOLERANCE:
            raise InvalidRecordError(
                f"XRay {instance.id!r}: {box} lies outside the {width}x{height} image"
            )


def _freeze_meta(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


def _as_box_tuple(value: Iterable[Box]) -> tuple[Box, ...]:
    return tuple(value)


@frozen(eq=False)
class XRay:
    """One chest radiograph with what is known about it.

    Instances compare and hash by identity: two radiographs with equal pixels are still two
    images (the near-duplicate guard in :mod:`covidcxr.split` is the place to compare
    content). The pixel array is stored as a read-only view, without a copy: it shares
    memory with the array given, as :func:`numpy.asarray` would. Pass an array that is
    not changed afterwards (a buffer reused for the next image would change this one
    too), or ``array.copy()``. The view's read-only flag guards against accidents, not
    against setting it back on purpose.

    Parameters
    ----------
    pixels
        A 2-D grayscale array: ``uint8`` or ``uint16`` as decoded, ``float32`` after
        preprocessing.
    id
        A stable identifier, usually the file path or object key it was read from.
    label
        ``None`` (unknown) or one of the canonical labels ``"covid-19"``, ``"normal"``,
        ``"pneumonia"``.
    patient_id
        The patient the image belongs to, when the dataset says; splits keep one patient's
        images together.
    boxes
        Known lesion boxes (ground truth), in this image's pixel coordinates.
    meta
        Anything else: masks, DICOM tags, provenance. Stored as a read-only mapping.

    Raises
    ------
    InvalidImageError
        If ``pixels`` is not a non-empty 2-D array of an accepted dtype.
    ValueError
        If ``label`` is not canonical or a box lies outside the image.

    Examples
    --------
    >>> import numpy as np
    >>> xray = XRay(np.zeros((64, 64), np.uint8), id="phantom-1", label="normal")
    >>> xray.pixels.shape, xray.label
    ((64, 64), 'normal')
    """

    pixels: NDArray[Any] = field(converter=_as_readonly_pixels, validator=_check_pixels, repr=False)
    id: str = field(converter=str)
    label: str | None = field(default=None, validator=_check_label)
    patient_id: str | None = field(default=None)
    boxes: tuple[Box, ...] = field(default=(), converter=_as_box_tuple, validator=_check_boxes)
    meta: Mapping[str, Any] = field(factory=dict, converter=_freeze_meta, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the image in pixels."""
        height, width = self.pixels.shape
        return int(height), int(width)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickle through __init__, so that an unpickled XRay is validated and read-only
        # like any other (a read-only mapping proxy cannot be pickled as it is). This is
        # what lets XRays cross process boundaries (multiprocessing, joblib).
        return (
            type(self),
            (self.pixels, self.id, self.label, self.patient_id, self.boxes, dict(self.meta)),
        )


@frozen
class GroundTruth:
    """What is known about one radiograph, without its pixels: what an evaluator scores.

    Parameters
    ----------
    id
        The radiograph's id.
    label
        The true class, or ``None`` when unknown.
    boxes
        The true lesion boxes, in the coordinates the predictions' boxes are given in.
    annotated
        ``False`` when the radiograph's lesions were never annotated (COVID-QU-Ex's Test
        split has no infection masks): then an empty ``boxes`` means "unknown", not "no
        lesion", and detections cannot be scored.

    Examples
    --------
    >>> import numpy as np
    >>> GroundTruth.of(XRay(np.zeros((8, 8), np.uint8), id="a", label="normal"))
    GroundTruth(id='a', label='normal', boxes=(), annotated=True)
    """

    id: str = field(converter=str)
    label: str | None = field(default=None, validator=_check_label)
    boxes: tuple[Box, ...] = field(default=(), converter=_as_box_tuple)
    annotated: bool = True

    @classmethod
    def of(cls, xray: XRay) -> GroundTruth:
        """The ground truth an :class:`XRay` carries (``meta["annotated"]`` included)."""
        return cls(xray.id, xray.label, xray.boxes, xray.meta.get("annotated") is not False)


def _probabilities(value: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType(
        {str(k): _number(v, f"Prediction.probabilities[{str(k)!r}]") for k, v in value.items()}
    )


#: How far a probability may stray outside [0, 1] by float32 rounding (softmax, sums).
_PROBABILITY_SLACK: Final = 1e-6


def _check_probabilities(
    instance: object, attribute: attrs.Attribute[Mapping[str, float]], value: Mapping[str, float]
) -> None:
    for name, probability in value.items():
        if not -_PROBABILITY_SLACK <= probability <= 1.0 + _PROBABILITY_SLACK:
            raise InvalidRecordError(
                f"Prediction {getattr(instance, 'id', '?')!r}: the probability of {name!r} "
                f"must be a number in [0, 1], got {probability!r}"
            )


def _check_optional_finite(
    instance: object, attribute: attrs.Attribute[float | None], value: float | None
) -> None:
    if value is not None and not math.isfinite(value):
        raise InvalidRecordError(
            f"Prediction {getattr(instance, 'id', '?')!r}: {attribute.name} must be a finite "
            f"number or None, got {value!r}"
        )


def _as_detection_tuple(value: Iterable[Detection]) -> tuple[Detection, ...]:
    return tuple(value)


#: The type of :attr:`Prediction.status`: one of three plain strings, so that a type checker
#: catches a misspelt comparison and the value is written to JSON and CSV as it is.
PredictionStatus: TypeAlias = Literal["accepted", "uncertain", "rejected"]
#: :attr:`Prediction.status` of a radiograph the pipeline diagnosed.
ACCEPTED: Final = "accepted"
#: :attr:`Prediction.status` (and label) of an input the input gate refused: no diagnosis.
REJECTED: Final = "rejected"
#: :attr:`Prediction.status` (and label) of a radiograph the pipeline is not sure enough
#: about to name a class (it abstains; the probabilities are still given).
UNCERTAIN: Final = "uncertain"
#: Every :data:`PredictionStatus`, in order of how much the pipeline says.
STATUSES: Final[tuple[PredictionStatus, ...]] = (ACCEPTED, UNCERTAIN, REJECTED)


def _as_flag(value: Any) -> Any:
    return bool(value) if isinstance(value, np.bool_) else value


def _check_flag(instance: object, attribute: attrs.Attribute[bool], value: bool) -> None:
    # bool("False") is True: only a real flag says whether an image was accepted.
    if not isinstance(value, bool):
        raise InvalidRecordError(f"GateDecision.{attribute.name} must be a bool, got {value!r}")


def _gate_number(value: Any) -> float:
    return _number(value, "GateDecision scores")


def _not_nan(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if math.isnan(value):
        raise InvalidRecordError(f"GateDecision.{attribute.name} must be a number, got nan")


@frozen
class GateDecision:
    """What the input gate says about one image, before any diagnosis.

    Parameters
    ----------
    accepted
        Whether the image looks like the frontal chest radiographs the model was trained on.
    score
        The out-of-distribution score: higher is more unusual; the image is refused above
        ``threshold``.
    threshold
        The score above which the gate refuses an image.
    reason
        Why the image was refused (``None`` when accepted), e.g. ``"blank image"`` or
        ``"not a frontal chest radiograph: it looks upside down"``.

    Examples
    --------
    >>> GateDecision(False, 2.5, 0.4, "blank image").to_dict()["reason"]
    'blank image'
    """

    accepted: bool = field(converter=_as_flag, validator=_check_flag)
    score: float = field(converter=_gate_number, validator=_not_nan)
    threshold: float = field(converter=_gate_number, validator=_not_nan)
    reason: str | None = None

    def __attrs_post_init__(self) -> None:
        # An accepted image has a score at or under the threshold; a verdict that says
        # otherwise would report one thing and do another.
        if self.accepted and not self.score <= self.threshold:
            raise InvalidRecordError(
                f"GateDecision accepts an image scored {self.score!r} above its threshold "
                f"{self.threshold!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return attrs.asdict(self)


def _share(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise InvalidRecordError(
            f"Severity.{attribute.name} must be a share in [0, 1], got {value!r}"
        )


def _extent_grade(share: float) -> int:
    # Each lung 0 (none), 1 (under a quarter), 2, 3, 4 (three quarters or more).
    if share <= 0.0:
        return 0
    return min(4, 1 + int(share * 4.0))


@frozen
class Severity:
    """How much of each lung is infected, and the extent score that follows from it.

    The shares are of each lung field's area, as the lung segmenter drew it, covered by the
    lesion detector's infection mask. "Right" and "left" are the patient's, for a frontal
    radiograph displayed in the usual way (the patient's right lung on the image's left);
    a radiograph stored mirrored swaps them.

    The score follows the extent part of the RALE score (Warren et al., Thorax 2018) as
    adapted for COVID-19 by Wong et al. (Radiology 2020): each lung scores 0 (no
    involvement), 1 (under 25 %), 2 (25-50 %), 3 (50-75 %) or 4 (75 % or more), and the
    score is their sum, 0 to 8. It is computed from a model's masks, not read by a
    radiologist: a measurement to track, not a grade to act on alone.

    Parameters
    ----------
    right, left
        The infected share of the right and the left lung, in ``[0, 1]``.
    total
        The infected share of both lungs together.

    Examples
    --------
    >>> s = Severity(right=0.30, left=0.05, total=0.18)
    >>> s.right_grade, s.left_grade, s.score
    (2, 1, 3)
    >>> s.to_dict()["score"]
    3
    """

    right: float = field(converter=_share_number, validator=_share)
    left: float = field(converter=_share_number, validator=_share)
    total: float = field(converter=_share_number, validator=_share)

    @property
    def right_grade(self) -> int:
        """The right lung's extent grade, 0 to 4."""
        return _extent_grade(self.right)

    @property
    def left_grade(self) -> int:
        """The left lung's extent grade, 0 to 4."""
        return _extent_grade(self.left)

    @property
    def score(self) -> int:
        """The extent score, 0 to 8: the sum of the two lungs' grades."""
        return self.right_grade + self.left_grade

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data: the shares, each lung's grade and the score."""
        return {
            **attrs.asdict(self),
            "right_grade": self.right_grade,
            "left_grade": self.left_grade,
            "score": self.score,
        }


def _check_status(
    instance: Prediction, attribute: attrs.Attribute[PredictionStatus], value: PredictionStatus
) -> None:
    if value not in STATUSES:
        raise InvalidRecordError(f"status must be one of {STATUSES}, got {value!r}")
    if value == REJECTED and (instance.label != REJECTED or instance.probabilities):
        raise InvalidRecordError("a rejected prediction has label 'rejected' and no probabilities")
    if value == UNCERTAIN and instance.label != UNCERTAIN:
        raise InvalidRecordError("an uncertain prediction has label 'uncertain'")
    if value == ACCEPTED and instance.label in (REJECTED, UNCERTAIN):
        raise InvalidRecordError(f"an accepted prediction names a class, not {instance.label!r}")


@frozen
class Prediction:
    """What a fitted pipeline says about one radiograph.

    Parameters
    ----------
    id
        The radiograph's id.
    label
        The predicted class; :data:`REJECTED` when the input gate refused the image (it
        gets no diagnosis), :data:`UNCERTAIN` when the pipeline abstains.
    probabilities
        Every class's probability, in the classifier's class order (read-only; calibrated
        when the pipeline was); empty for a rejected image.
    detections
        Lesions found, in the pixel coordinates of the radiograph as read from the source.
    status
        :data:`ACCEPTED`, :data:`UNCERTAIN` or :data:`REJECTED` (a
        :data:`PredictionStatus`).
    ood_score
        The input gate's out-of-distribution score (``None`` without a gate).
    reason
        Why the image was rejected or the pipeline abstained (``None`` otherwise).
    severity
        The infected share of each lung and the extent score (``None`` unless the
        pipeline has a lung stage and a detector that draws infection masks).

    Examples
    --------
    >>> p = Prediction("a", "normal", {"normal": 0.75, "pneumonia": 0.25})
    >>> p.to_dict()["probabilities"], p.to_dict()["detections"], p.status
    ({'normal': 0.75, 'pneumonia': 0.25}, [], 'accepted')
    >>> Prediction("b", REJECTED, {}, status=REJECTED, reason="blank image").label
    'rejected'
    """

    id: str = field(converter=str)
    label: str
    probabilities: Mapping[str, float] = field(
        converter=_probabilities, validator=_check_probabilities
    )
    detections: tuple[Detection, ...] = field(default=(), converter=_as_detection_tuple)
    status: PredictionStatus = field(default=ACCEPTED, validator=_check_status, kw_only=True)
    ood_score: float | None = field(
        default=None,
        converter=_ood_score_number,
        validator=_check_optional_finite,
        kw_only=True,
    )
    reason: str | None = field(default=None, kw_only=True)
    severity: Severity | None = field(default=None, kw_only=True)

    @property
    def accepted(self) -> bool:
        """Whether the pipeline named a class (neither rejected nor uncertain)."""
        return self.status == ACCEPTED

    @property
    def confidence(self) -> float | None:
        """The probability of the predicted class (the largest one when uncertain)."""
        if not self.probabilities:
            return None
        if self.label in self.probabilities:
            return self.probabilities[self.label]
        return max(self.probabilities.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data, detections as :func:`~covidcxr.records.detection_to_dict` gives them."""
        return attrs.asdict(self, value_serializer=_prediction_json_value)
