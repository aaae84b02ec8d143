"""XRay, Box and Detection validate their data and stay immutable."""

from __future__ import annotations

import pickle
import typing

import attrs
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from covidcxr import Box, Detection, InvalidImageError, Prediction, XRay
from covidcxr.errors import CovidCXRError, InvalidRecordError, UnknownLabelError
from covidcxr.records import ACCEPTED, REJECTED, STATUSES, UNCERTAIN, PredictionStatus


def test_box_exposes_corners_and_area() -> None:
    box = Box(10, 20, 30, 40)
    assert (box.x2, box.y2, box.area) == (40.0, 60.0, 1200.0)


@pytest.mark.parametrize("field", ["x", "y", "width", "height"])
def test_box_rejects_negative_or_non_finite_fields(field: str) -> None:
    values = {"x": 0.0, "y": 0.0, "width": 1.0, "height": 1.0}
    for bad in (-1.0, float("nan"), float("inf")):
        # A covidcxr error, and a ValueError for code written against the standard library.
        with pytest.raises(InvalidRecordError, match=field) as raised:
            Box(**{**values, field: bad})
        assert isinstance(raised.value, ValueError)
        assert isinstance(raised.value, CovidCXRError)


@given(
    st.floats(0, 1e4),
    st.floats(0, 1e4),
    st.floats(0, 1e4),
    st.floats(0, 1e4),
)
def test_box_from_corners_round_trips(x: float, y: float, w: float, h: float) -> None:
    box = Box(x, y, w, h)
    again = Box.from_corners(box.x, box.y, box.x2, box.y2)
    assert again.x == box.x
    assert again.y == box.y
    assert again.width == pytest.approx(box.width, abs=1e-9)
    assert again.height == pytest.approx(box.height, abs=1e-9)


def test_box_from_corners_rejects_swapped_corners() -> None:
    with pytest.raises(ValueError, match="top-left"):
        Box.from_corners(5, 5, 1, 1)


def test_records_are_frozen() -> None:
    box = Box(0, 0, 1, 1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        box.x = 3  # type: ignore[misc]


@pytest.mark.parametrize("score", [-0.01, 1.01, float("nan")])
def test_detection_score_must_be_a_probability(score: float) -> None:
    with pytest.raises(ValueError, match="score"):
        Detection(Box(0, 0, 1, 1), "opacity", score)


def test_detection_needs_a_label() -> None:
    with pytest.raises(ValueError, match="label"):
        Detection(Box(0, 0, 1, 1), "", 0.5)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_xray_accepts_grayscale_pixels(dtype: type[np.generic]) -> None:
    xray = XRay(np.zeros((8, 12), dtype), id="a")
    assert xray.shape == (8, 12)
    assert xray.pixels.dtype == dtype


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (np.zeros((8, 8, 3), np.uint8), "2-D"),
        (np.zeros((8, 8), np.float64), "uint8, uint16 or float32"),
        (np.zeros((0, 8), np.uint8), "empty"),
        ([[0, 1], [1, 0]], "numpy array"),
    ],
)
def test_xray_rejects_unusable_pixels_with_invalid_image_error(
    pixels: object, message: str
) -> None:
    with pytest.raises(InvalidImageError, match=message) as caught:
        XRay(pixels, id="scan-7.png")
    assert isinstance(caught.value, ValueError)


def test_invalid_image_error_names_the_image() -> None:
    with pytest.raises(InvalidImageError, match=r"^scan-7\.png: "):
        XRay(np.zeros((8, 8, 3), np.uint8), id="scan-7.png")


def test_xray_pixels_are_read_only_without_copying() -> None:
    pixels = np.zeros((4, 4), np.uint8)
    xray = XRay(pixels, id="a")
    assert np.shares_memory(xray.pixels, pixels)
    with pytest.raises(ValueError, match="read-only"):
        xray.pixels[0, 0] = 1


@pytest.mark.parametrize("label", ["covid-19", "normal", "pneumonia", None])
def test_xray_accepts_canonical_labels(label: str | None) -> None:
    assert XRay(np.zeros((4, 4), np.uint8), id="a", label=label).label == label


def test_xray_rejects_non_canonical_labels_and_points_to_the_mapping() -> None:
    with pytest.raises(UnknownLabelError, match="canonical_label"):
        XRay(np.zeros((4, 4), np.uint8), id="a", label="COVID")


def test_xray_rejects_boxes_outside_the_image() -> None:
    with pytest.raises(ValueError, match="outside the 4x4 image"):
        XRay(np.zeros((4, 4), np.uint8), id="a", boxes=[Box(2, 2, 3, 1)])


def test_xray_stores_boxes_as_a_tuple_and_meta_read_only() -> None:
    xray = XRay(np.zeros((4, 4), np.uint8), id="a", boxes=[Box(0, 0, 1, 1)], meta={"k": 1})
    assert xray.boxes == (Box(0, 0, 1, 1),)
    with pytest.raises(TypeError):
        xray.meta["k"] = 2  # type: ignore[index]


def test_xray_repr_omits_pixels() -> None:
    text = repr(XRay(np.zeros((4, 4), np.uint8), id="a", label="normal"))
    assert "id='a'" in text
    assert "array" not in text


def test_xray_survives_pickling_validated_and_read_only() -> None:
    xray = XRay(
        np.arange(16, dtype=np.uint16).reshape(4, 4),
        id="a",
        label="covid-19",
        patient_id="p1",
        boxes=[Box(0, 0, 2, 2)],
        meta={"infection_mask": np.ones((4, 4), np.uint8)},
    )
    again = pickle.loads(pickle.dumps(xray))  # noqa: S301 - our own bytes
    assert (again.id, again.label, again.patient_id, again.boxes) == (
        "a",
        "covid-19",
        "p1",
        xray.boxes,
    )
    np.testing.assert_array_equal(again.pixels, xray.pixels)
    np.testing.assert_array_equal(again.meta["infection_mask"], xray.meta["infection_mask"])
    assert not again.pixels.flags.writeable
    with pytest.raises(TypeError):
        again.meta["k"] = 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.5, 1.5])
def test_prediction_probabilities_must_be_numbers_in_the_unit_interval(bad: float) -> None:
    # NaN would otherwise reach predictions.json as the invalid token NaN.
    with pytest.raises(InvalidRecordError, match="probability of 'normal'"):
        Prediction("a", "covid-19", {"covid-19": 0.5, "normal": bad})


def test_prediction_probabilities_tolerate_float32_rounding() -> None:
    rounded = float(np.float32(1.0000001))  # what a float32 softmax can give
    prediction = Prediction("a", "covid-19", {"covid-19": rounded, "normal": 0.0})
    assert prediction.probabilities["covid-19"] == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_prediction_ood_score_must_be_finite(bad: float) -> None:
    with pytest.raises(InvalidRecordError, match="ood_score"):
        Prediction("a", "normal", {"normal": 1.0}, ood_score=bad)
    assert Prediction("a", "normal", {"normal": 1.0}, ood_score=np.float32(2.5)).ood_score == 2.5


def test_prediction_status_constants_are_the_status_type() -> None:
    # STATUSES is what the validator accepts, PredictionStatus what a type checker does.
    assert set(STATUSES) == set(typing.get_args(PredictionStatus))
    assert (ACCEPTED, UNCERTAIN, REJECTED) == STATUSES


@pytest.mark.parametrize(
    ("label", "status", "probabilities", "message"),
    [
        ("normal", "acepted", {"normal": 1.0}, "status must be one of"),
        ("normal", REJECTED, {}, "label 'rejected'"),
        (REJECTED, REJECTED, {"normal": 1.0}, "no probabilities"),
        ("normal", UNCERTAIN, {"normal": 1.0}, "label 'uncertain'"),
        (UNCERTAIN, ACCEPTED, {"normal": 1.0}, "names a class"),
    ],
)
def test_prediction_status_must_agree_with_its_label(
    label: str, status: str, probabilities: dict[str, float], message: str
) -> None:
    with pytest.raises(InvalidRecordError, match=message):
        Prediction("a", label, probabilities, status=status)  # type: ignore[arg-type]
