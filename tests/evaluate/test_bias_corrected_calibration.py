"""Bias-corrected temperature scaling: a temperature and one bias per class."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy.optimize import check_grad

from covidcxr.errors import ConfigurationError
from covidcxr.evaluate import (
    BiasCorrectedTemperatureScaling,
    CalibrationWarning,
    TemperatureScaling,
    expected_calibration_error,
)
from covidcxr.evaluate._calibration import (
    _biased_nll,
    _log_probabilities,
    calibration_from_dict,
)


def softmax(logits: NDArray[np.float64]) -> NDArray[np.float64]:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    result: NDArray[np.float64] = shifted / shifted.sum(axis=1, keepdims=True)
    return result


def distorted(
    n: int, temperature: float, biases: tuple[float, float, float], seed: int
) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    """Labels drawn from softmax(logits); probabilities that undo a known T and biases.

    The given probabilities are ``softmax(temperature * (logits - biases))``, so
    ``softmax(log(p) / temperature + biases)`` recovers the calibrated ones exactly.
    """
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 3)) * 1.5
    labels = np.array([rng.choice(3, p=row) for row in softmax(logits)], dtype=np.intp)
    return softmax(temperature * (logits - np.asarray(biases))), labels


@pytest.mark.parametrize(
    ("temperature", "biases"), [(1.0, (0.0, -1.0, 0.5)), (2.0, (0.0, 0.8, -0.6))]
)
def test_the_fit_recovers_the_temperature_and_biases_that_distorted_the_probabilities(
    temperature: float, biases: tuple[float, float, float]
) -> None:
    probs, labels = distorted(6000, temperature, biases, seed=0)
    scaler = BiasCorrectedTemperatureScaling().fit(probs, labels)
    assert scaler.temperature_ == pytest.approx(temperature, rel=0.08)
    assert scaler.biases_[0] == 0.0
    assert scaler.biases_ == pytest.approx(biases, abs=0.12)
    assert scaler.nll_after_ < scaler.nll_before_


def test_biases_fix_what_a_temperature_cannot_on_held_out_data() -> None:
    validation, validation_labels = distorted(3000, 1.5, (0.0, -1.2, 0.9), seed=1)
    test, test_labels = distorted(3000, 1.5, (0.0, -1.2, 0.9), seed=2)
    biased = BiasCorrectedTemperatureScaling().fit(validation, validation_labels)
    plain = TemperatureScaling().fit(validation, validation_labels)

    def nll(probs: NDArray[np.float64]) -> float:
        return float(-np.log(probs[np.arange(test_labels.size), test_labels]).mean())

    assert nll(biased.transform(test)) < nll(plain.transform(test)) - 0.01
    assert expected_calibration_error(biased.transform(test), test_labels) < (
        expected_calibration_error(plain.transform(test), test_labels)
    )
    # Unlike a temperature, the biases move decisions: towards the right class here.
    accuracy_before = (test.argmax(axis=1) == test_labels).mean()
    accuracy_after = (biased.transform(test).argmax(axis=1) == test_labels).mean()
    assert accuracy_after > accuracy_before


def test_the_gradient_is_that_of_the_loss() -> None:
    probs, labels = distorted(300, 1.3, (0.0, 0.4, -0.2), seed=3)
    log_p = _log_probabilities(probs)
    for theta in ([0.0, 0.0, 0.0], [0.3, -0.5, 1.2], [-0.7, 2.0, -1.0]):
        error = check_grad(
            lambda t: _biased_nll(log_p, labels, t)[0],
            lambda t: _biased_nll(log_p, labels, t)[1],
            np.asarray(theta),
        )
        assert error < 1e-5


def test_calibrated_rows_sum_to_one_and_name_classes() -> None:
    probs, labels = distorted(500, 1.0, (0.0, 0.5, -0.5), seed=4)
    names = np.array(["covid-19", "normal", "pneumonia"])[labels].tolist()
    scaler = BiasCorrectedTemperatureScaling().fit(
        probs, names, classes=("covid-19", "normal", "pneumonia")
    )
    calibrated = scaler.transform(probs)
    assert np.allclose(calibrated.sum(axis=1), 1.0)
    assert (calibrated >= 0).all()


def test_it_round_trips_through_json_and_is_read_back_by_its_method() -> None:
    probs, labels = distorted(800, 1.0, (0.0, 0.5, -0.5), seed=5)
    scaler = BiasCorrectedTemperatureScaling().fit(probs, labels)
    saved = json.loads(json.dumps(scaler.to_dict()))
    assert saved["method"] == "bias-corrected-temperature"
    loaded = calibration_from_dict(saved)
    assert isinstance(loaded, BiasCorrectedTemperatureScaling)
    assert loaded.biases_ == scaler.biases_
    assert loaded.temperature_ == scaler.temperature_
    assert np.array_equal(loaded.transform(probs), scaler.transform(probs))
    plain = calibration_from_dict(TemperatureScaling().fit(probs, labels).to_dict())
    assert type(plain) is TemperatureScaling
    # Read as a plain temperature, the biases would be dropped without a word.
    with pytest.raises(ConfigurationError, match="not a temperature scaling"):
        TemperatureScaling.from_dict(saved)
    with pytest.raises(ConfigurationError, match="unknown calibration method"):
        calibration_from_dict({**saved, "method": "platt"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"biases": [0.0, float("nan"), 1.0]}, "finite"),
        ({"biases": [0.0]}, "two or more"),
        ({"biases": "01"}, "numeric 'biases'"),
        ({"biases": [0.0, "x", 1.0]}, "numeric 'biases'"),
        ({"temperature": -1.0}, "positive"),
    ],
)
def test_a_damaged_entry_is_refused(change: dict[str, object], message: str) -> None:
    entry = {"method": "bias-corrected-temperature", "temperature": 1.0, "biases": [0, 1, 2]}
    with pytest.raises(ConfigurationError, match=message):
        BiasCorrectedTemperatureScaling.from_dict({**entry, **change})


def test_a_class_without_labels_is_refused_rather_than_given_an_unbounded_bias() -> None:
    probs, labels = distorted(500, 1.0, (0.0, 0.0, 0.0), seed=6)
    keep = labels != 2
    with pytest.raises(ConfigurationError, match=r"column\(s\) \['pneumonia'\] have none"):
        BiasCorrectedTemperatureScaling().fit(
            probs[keep],
            np.array(["covid-19", "normal", "pneumonia"])[labels[keep]].tolist(),
            classes=("covid-19", "normal", "pneumonia"),
        )


def test_too_few_items_are_refused_and_few_are_warned_about() -> None:
    probs, labels = distorted(40, 1.0, (0.0, 0.0, 0.0), seed=7)
    with pytest.raises(ConfigurationError, match="at least 10"):
        BiasCorrectedTemperatureScaling().fit(probs[:9], labels[:9])
    with pytest.warns(CalibrationWarning, match="poorly determined"):
        BiasCorrectedTemperatureScaling().fit(probs, labels)


def test_a_bias_at_its_bound_is_warned_about() -> None:
    probs, labels = distorted(2000, 1.0, (0.0, -3.0, 0.0), seed=8)
    with pytest.warns(CalibrationWarning, match="end of its search range"):
        BiasCorrectedTemperatureScaling(max_bias=1.0).fit(probs, labels)


@pytest.mark.parametrize("max_bias", [0, -1.0, float("inf"), True, "2"])
def test_a_bad_max_bias_is_refused(max_bias: object) -> None:
    probs, labels = distorted(100, 1.0, (0.0, 0.0, 0.0), seed=9)
    with pytest.raises(ConfigurationError, match="max_bias"):
        BiasCorrectedTemperatureScaling(max_bias=max_bias).fit(probs, labels)  # type: ignore[arg-type]


def test_it_refuses_unfitted_use_and_rows_of_another_width() -> None:
    with pytest.raises(ConfigurationError, match="not fitted"):
        BiasCorrectedTemperatureScaling().transform([[0.5, 0.5]])
    with pytest.raises(ConfigurationError, match="not fitted"):
        BiasCorrectedTemperatureScaling().to_dict()
    probs, labels = distorted(200, 1.0, (0.0, 0.0, 0.0), seed=10)
    scaler = BiasCorrectedTemperatureScaling().fit(probs, labels)
    with pytest.raises(ConfigurationError, match="2 columns"):
        scaler.transform([[0.5, 0.5]])


def test_parameters_follow_scikit_learns_conventions() -> None:
    from sklearn.base import clone

    scaler = BiasCorrectedTemperatureScaling(max_bias=4.0)
    assert clone(scaler).get_params() == scaler.get_params()
    assert scaler.get_params()["max_bias"] == 4.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "biases_" not in repr(scaler)


@pytest.mark.parametrize("max_bias", [np.float32(4.0), np.int64(4)])
def test_a_numpy_max_bias_is_a_number(max_bias: object) -> None:
    probs, labels = distorted(300, 1.0, (0.0, 0.5, 0.0), seed=13)
    scaler = BiasCorrectedTemperatureScaling(max_bias=max_bias).fit(probs, labels)  # type: ignore[arg-type]
    assert json.loads(json.dumps(scaler.to_dict()))["max_bias"] == 4.0


@pytest.mark.parametrize("bounds", [(1.0,), (0.1, 2.0, 3.0), ("a", "b"), 5.0, None])
def test_malformed_bounds_are_a_configuration_error(bounds: object) -> None:
    probs, labels = distorted(100, 1.0, (0.0, 0.0, 0.0), seed=14)
    with pytest.raises(ConfigurationError, match="bounds"):
        BiasCorrectedTemperatureScaling(bounds=bounds).fit(probs, labels)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="bounds"):
        TemperatureScaling(bounds=bounds).fit(probs, labels)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_bias", [None, "x", [1.0]])
def test_a_damaged_saved_max_bias_is_a_configuration_error(max_bias: object) -> None:
    entry = {
        "method": "bias-corrected-temperature",
        "temperature": 1.0,
        "biases": [0.0, 1.0],
        "max_bias": max_bias,
    }
    with pytest.raises(ConfigurationError, match="max_bias"):
        calibration_from_dict(entry)
