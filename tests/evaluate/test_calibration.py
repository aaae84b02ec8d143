"""Temperature scaling, calibration error, operating points, abstention and risk-coverage."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from sklearn.calibration import calibration_curve

from covidcxr.errors import ConfigurationError
from covidcxr.evaluate import (
    UNCERTAIN,
    CalibrationWarning,
    ClassOperatingPoint,
    OperatingPoints,
    ReliabilityCurve,
    TemperatureScaling,
    classification_metrics,
    expected_calibration_error,
    reliability_curve,
    risk_coverage_curve,
)

CLASSES = ("covid-19", "normal", "pneumonia")


def softmax(logits: NDArray[np.float64]) -> NDArray[np.float64]:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    result: NDArray[np.float64] = shifted / shifted.sum(axis=1, keepdims=True)
    return result


def over_confident(
    n: int, temperature: float, seed: int
) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    """Labels drawn from softmax(logits); probabilities softmax(logits * temperature).

    The true probabilities are calibrated by construction, so dividing the log of the
    given ones by ``temperature`` recovers them: the fitted temperature must be it.
    """
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 3)) * 1.5
    truth = softmax(logits)
    labels = np.array([rng.choice(3, p=row) for row in truth], dtype=np.intp)
    return softmax(logits * temperature), labels


# --- calibration error -------------------------------------------------------------------


def test_ece_of_a_hand_computed_example() -> None:
    # Bin (0.8, 0.9]: confidences 0.85, 0.85, 0.9 with one right answer -> gap |1/3 - 0.8667|.
    # Bin (0.6, 0.7]: confidence 0.65, right -> gap 0.35. n = 4.
    probs = [[0.85, 0.15], [0.15, 0.85], [0.9, 0.1], [0.35, 0.65]]
    labels = [0, 0, 1, 1]
    expected = 3 / 4 * abs(1 / 3 - (0.85 + 0.85 + 0.9) / 3) + 1 / 4 * abs(1.0 - 0.65)
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(expected)
    curve = reliability_curve(probs, labels, n_bins=10)
    assert curve.counts == (0, 0, 0, 0, 0, 0, 1, 0, 3, 0)
    assert curve.maximum_calibration_error == pytest.approx(abs(1 / 3 - 2.6 / 3))
    assert math.isnan(curve.accuracy[0])
    assert math.isnan(curve.mean_confidence[0])


def test_reliability_bins_agree_with_scikit_learns_calibration_curve() -> None:
    probs, labels = over_confident(500, 2.0, seed=3)
    curve = reliability_curve(probs, labels, n_bins=15)
    correct = probs.argmax(axis=1) == labels
    accuracy, confidence = calibration_curve(
        correct, probs.max(axis=1), n_bins=15, strategy="uniform"
    )
    filled = np.array(curve.counts) > 0
    np.testing.assert_allclose(np.array(curve.accuracy)[filled], accuracy)
    np.testing.assert_allclose(np.array(curve.mean_confidence)[filled], confidence)
    ece = sum(
        c / len(labels) * abs(a - m)
        for c, a, m in zip(np.array(curve.counts)[filled], accuracy, confidence, strict=True)
    )
    assert curve.expected_calibration_error == pytest.approx(ece)


def test_reliability_curve_matches_the_evaluators_calibration_figures() -> None:
    probs, labels = over_confident(300, 2.0, seed=4)
    names = [CLASSES[i] for i in labels]
    metrics = classification_metrics(names, probs, CLASSES, n_bootstrap=0, n_bins=10)
    curve = reliability_curve(probs, names, n_bins=10, classes=CLASSES)
    assert curve.expected_calibration_error == pytest.approx(
        metrics.calibration.expected_calibration_error
    )
    assert curve.counts == tuple(b.count for b in metrics.calibration.bins)


def test_reliability_curve_round_trips_through_json() -> None:
    curve = reliability_curve([[0.9, 0.1], [0.2, 0.8]], [0, 0], n_bins=4)
    data = json.loads(json.dumps(curve.to_dict(), allow_nan=False))
    assert data["accuracy"][0] is None
    again = ReliabilityCurve.from_dict(data)
    assert again.counts == curve.counts
    assert again.expected_calibration_error == curve.expected_calibration_error


@pytest.mark.parametrize(
    ("probs", "labels", "message"),
    [
        ([[0.5, 0.5]], [2], "outside the 2 classes"),
        ([[0.5, 0.5]], [0, 1], "1 probability rows"),
        ([[0.5, 0.6]], [0], "sum to 1"),
        ([[math.nan, 1.0]], [0], "finite"),
        ([0.5, 0.5], [0], "shape"),
    ],
)
def test_calibration_error_refuses_bad_input(probs: object, labels: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        expected_calibration_error(probs, labels)  # type: ignore[arg-type]


def test_labels_given_by_name_need_known_classes() -> None:
    with pytest.raises(ConfigurationError, match="'covid' is not one of the classes"):
        expected_calibration_error([[0.5, 0.5]], ["covid"], classes=["covid-19", "normal"])


# --- temperature scaling -----------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.5, 2.5])
def test_temperature_scaling_recovers_the_temperature_that_distorted_the_probabilities(
    temperature: float,
) -> None:
    probs, labels = over_confident(4000, temperature, seed=0)
    scaler = TemperatureScaling().fit(probs, labels)
    assert scaler.temperature_ == pytest.approx(temperature, rel=0.08)
    assert scaler.nll_after_ < scaler.nll_before_
    assert expected_calibration_error(scaler.transform(probs), labels) < (
        expected_calibration_error(probs, labels)
    )


def test_temperature_fitted_on_one_split_lowers_the_ece_of_another() -> None:
    validation, validation_labels = over_confident(1500, 3.0, seed=1)
    test, test_labels = over_confident(1500, 3.0, seed=2)
    scaler = TemperatureScaling().fit(validation, validation_labels)
    before = expected_calibration_error(test, test_labels)
    after = expected_calibration_error(scaler.transform(test), test_labels)
    assert before > 0.1
    assert after < 0.03
    assert after < before / 3


def test_transform_keeps_each_rows_class_and_sums_to_one() -> None:
    rng = np.random.default_rng(5)
    probs = rng.dirichlet([0.3, 0.3, 0.3, 0.3], 500)
    probs[:5] = np.eye(4)[[0, 1, 2, 3, 0]]  # exact zeros and ones are clipped, not lost
    for temperature in (0.1, 0.7, 4.0, 19.0):
        scaled = TemperatureScaling.from_dict({"temperature": temperature}).transform(probs)
        np.testing.assert_array_equal(scaled.argmax(axis=1), probs.argmax(axis=1))
        np.testing.assert_allclose(scaled.sum(axis=1), 1.0)
        assert np.isfinite(scaled).all()


def test_temperature_scaling_accepts_class_names() -> None:
    probs, labels = over_confident(200, 2.0, seed=6)
    by_name = TemperatureScaling().fit(probs, [CLASSES[i] for i in labels], classes=CLASSES)
    by_index = TemperatureScaling().fit(probs, labels)
    assert by_name.temperature_ == pytest.approx(by_index.temperature_)


def test_temperature_scaling_round_trips_through_json() -> None:
    probs, labels = over_confident(300, 2.0, seed=7)
    scaler = TemperatureScaling().fit(probs, labels)
    again = TemperatureScaling.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert again.temperature_ == scaler.temperature_
    assert again.n_items_ == 300
    np.testing.assert_array_equal(again.transform(probs), scaler.transform(probs))


def test_temperature_scaling_refuses_too_few_items() -> None:
    probs, labels = over_confident(9, 2.0, seed=8)
    with pytest.raises(ConfigurationError, match="at least 10 labelled items, got 9"):
        TemperatureScaling().fit(probs, labels)


def test_temperature_scaling_refuses_labels_outside_the_classes() -> None:
    probs, labels = over_confident(20, 2.0, seed=8)
    labels[3] = 3
    with pytest.raises(ConfigurationError, match="label 3 is outside the 3 classes"):
        TemperatureScaling().fit(probs, labels)


def test_temperature_scaling_refuses_non_finite_probabilities() -> None:
    probs, labels = over_confident(20, 2.0, seed=8)
    probs[4, 1] = np.inf
    with pytest.raises(ConfigurationError, match="row 4"):
        TemperatureScaling().fit(probs, labels)


@pytest.mark.filterwarnings("ignore:the fitted temperature:covidcxr.evaluate.CalibrationWarning")
def test_one_class_validation_set_still_fits_but_warns() -> None:
    probs, _ = over_confident(30, 2.0, seed=9)
    with pytest.warns(CalibrationWarning, match="30 item\\(s\\) of 1 class"):
        scaler = TemperatureScaling().fit(probs, np.zeros(30, dtype=np.intp))
    assert 0.05 <= scaler.temperature_ <= 20.0


def test_a_large_two_class_set_fits_without_warning() -> None:
    probs, labels = over_confident(400, 2.0, seed=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TemperatureScaling().fit(probs, labels)


def test_scaler_parameters_follow_scikit_learns_conventions() -> None:
    scaler = TemperatureScaling(min_items=20)
    assert scaler.get_params() == {"bounds": (0.05, 20.0), "min_items": 20}
    assert scaler.set_params(min_items=5).min_items == 5
    with pytest.raises(ConfigurationError, match="no parameter 'temperature'"):
        scaler.set_params(temperature=2.0)
    assert "temperature_" not in repr(scaler)
    probs, labels = over_confident(60, 2.0, seed=18)
    assert "temperature_=" in repr(scaler.fit(probs, labels))


def test_a_coverage_too_high_to_drop_anything_keeps_everything() -> None:
    probs, labels = three_class_set(19, n=20)
    points = OperatingPoints.fit(probs, labels, CLASSES, coverage=0.99)
    assert points.abstain_below is None
    assert points.fitted_coverage == 1.0
    assert UNCERTAIN not in points.apply(probs)


def test_unfitted_scaler_refuses_to_transform() -> None:
    with pytest.raises(ConfigurationError, match="not fitted"):
        TemperatureScaling().transform([[0.5, 0.5]])


@pytest.mark.filterwarnings("ignore:temperature scaling fitted on")
def test_a_temperature_at_the_edge_of_the_range_is_warned_about() -> None:
    # Always right, and under-confident: the likelihood keeps improving as T -> 0.
    probs = np.tile([[0.6, 0.4]], (60, 1))
    with pytest.warns(CalibrationWarning, match="end of the search range"):
        TemperatureScaling().fit(probs, np.zeros(60, dtype=np.intp))


# --- operating points --------------------------------------------------------------------


def three_class_set(seed: int, n: int = 600) -> tuple[NDArray[np.float64], list[str]]:
    probs, labels = over_confident(n, 1.0, seed=seed)
    return probs, [CLASSES[i] for i in labels]


def test_threshold_is_the_largest_that_reaches_the_target_sensitivity() -> None:
    probs, labels = three_class_set(11)
    points = OperatingPoints.fit(probs, labels, CLASSES, targets={"covid-19": 0.95})
    threshold = points.thresholds["covid-19"]
    covid = probs[np.array(labels) == "covid-19", 0]
    assert np.mean(covid >= threshold) >= 0.95
    above = covid[covid > threshold].min()  # the next candidate up
    assert np.mean(covid >= above) < 0.95
    point = points.points[0]
    assert point.sensitivity >= 0.95 > point.argmax_sensitivity
    assert point.specificity < point.argmax_specificity  # what the sensitivity costs
    assert point.n_positives == len(covid)


def test_applied_thresholds_reach_the_target_on_the_fitting_data() -> None:
    probs, labels = three_class_set(12)
    targets = {"covid-19": 0.9, "pneumonia": 0.9}
    points = OperatingPoints.fit(probs, labels, CLASSES, targets=targets)
    decided = np.array(points.apply(probs))
    truth = np.array(labels)
    for label in targets:
        recall = np.mean(decided[truth == label] == label)
        assert recall == pytest.approx(points.points[list(targets).index(label)].sensitivity)


@pytest.mark.filterwarnings("ignore::covidcxr.evaluate.CalibrationWarning")
def test_a_row_reaching_several_thresholds_goes_to_the_largest_ratio() -> None:
    points = OperatingPoints.fit(
        [[0.3, 0.2, 0.5], [0.4, 0.1, 0.5]],
        ["covid-19", "pneumonia"],
        CLASSES,
        targets={"covid-19": 1.0, "pneumonia": 1.0},
    )
    assert points.thresholds == {"covid-19": 0.3, "pneumonia": 0.5}
    # Both reached: 0.36 / 0.3 = 1.2 < 0.64 / 0.5 = 1.28, so pneumonia.
    assert points.apply([[0.36, 0.0, 0.64]]) == ["pneumonia"]
    # Both reached: 0.45 / 0.3 = 1.5 > 0.55 / 0.5 = 1.1, so covid-19, not the argmax.
    assert points.apply([[0.45, 0.0, 0.55]]) == ["covid-19"]
    # Only covid-19 reached.
    assert points.apply([[0.3, 0.4, 0.3]]) == ["covid-19"]
    # None reached: the argmax.
    assert points.apply([[0.2, 0.6, 0.2]]) == ["normal"]


def test_without_targets_the_decision_is_the_argmax() -> None:
    probs, labels = three_class_set(13)
    points = OperatingPoints.fit(probs, labels, CLASSES)
    assert points.apply(probs) == [CLASSES[i] for i in probs.argmax(axis=1)]


def test_a_target_met_only_by_calling_everything_the_class_warns() -> None:
    rng = np.random.default_rng(14)
    probs = rng.dirichlet([1, 1, 1], 200)  # no information at all
    labels = [CLASSES[i] for i in rng.integers(0, 3, 200)]
    with pytest.warns(CalibrationWarning, match="calls .* of the other classes' items"):
        OperatingPoints.fit(probs, labels, CLASSES, targets={"covid-19": 1.0})


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ({"covid": 0.9}, "not one of the classes"),
        ({"covid-19": 0.0}, "must be in \\(0, 1\\]"),
        ({"covid-19": 1.2}, "must be in \\(0, 1\\]"),
    ],
)
def test_bad_targets_are_refused(targets: dict[str, float], message: str) -> None:
    probs, labels = three_class_set(15, n=50)
    with pytest.raises(ConfigurationError, match=message):
        OperatingPoints.fit(probs, labels, CLASSES, targets=targets)


def test_a_target_for_a_class_absent_from_the_fitting_data_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="no item of class 'pneumonia'"):
        OperatingPoints.fit(
            [[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]],
            ["covid-19", "normal"],
            CLASSES,
            targets={"pneumonia": 0.9},
        )


def test_coverage_sets_the_abstention_threshold_at_the_quantile() -> None:
    probs, labels = three_class_set(16, n=1000)
    points = OperatingPoints.fit(probs, labels, CLASSES, coverage=0.9)
    confidence = probs.max(axis=1)
    assert points.abstain_below == pytest.approx(np.sort(confidence)[100])
    decided = points.apply(probs)
    assert decided.count(UNCERTAIN) == 100
    assert points.fitted_coverage == pytest.approx(0.9)
    kept = np.array(decided) != UNCERTAIN
    accuracy = np.mean(np.array(decided)[kept] == np.array(labels)[kept])
    assert points.fitted_accuracy == pytest.approx(accuracy)
    assert accuracy > np.mean(probs.argmax(axis=1) == [CLASSES.index(x) for x in labels])


def test_a_threshold_comes_before_the_abstention() -> None:
    points = OperatingPoints.fit(
        [[0.5, 0.3, 0.2], [0.1, 0.8, 0.1]],
        ["covid-19", "normal"],
        CLASSES,
        targets={"covid-19": 1.0},
        abstain_below=0.45,
    )
    assert points.thresholds == {"covid-19": 0.5}
    # Unsure overall, but at the COVID-19 threshold: COVID-19. Unsure and below it:
    # uncertain.
    rows = [[0.44, 0.35, 0.21], [0.5, 0.3, 0.2], [0.40, 0.44, 0.16]]
    assert points.apply(rows) == [UNCERTAIN, "covid-19", UNCERTAIN]
    assert points.apply([[0.44, 0.35, 0.21], [0.5, 0.3, 0.2]]) == [UNCERTAIN, "covid-19"]
    unsure_covid = OperatingPoints.fit(
        [[0.42, 0.3, 0.28], [0.1, 0.8, 0.1]],
        ["covid-19", "normal"],
        CLASSES,
        targets={"covid-19": 1.0},
        abstain_below=0.45,
    )
    assert unsure_covid.apply([[0.42, 0.3, 0.28]]) == ["covid-19"]
    assert unsure_covid.decide([[0.40, 0.44, 0.16]]).tolist() == [-1]


def test_the_recorded_sensitivity_is_that_of_the_decisions_with_abstention() -> None:
    # Abstention once overrode the thresholds: fitted for 0.9, the decisions on the same
    # data called only 69 % of COVID-19 radiographs COVID-19, the rest "uncertain".
    probs, labels = three_class_set(21, n=2000)
    points = OperatingPoints.fit(probs, labels, CLASSES, targets={"covid-19": 0.9}, coverage=0.8)
    decided = np.array(points.apply(probs))
    covid = np.array(labels) == "covid-19"
    delivered = float(np.mean(decided[covid] == "covid-19"))
    assert delivered == pytest.approx(points.points[0].sensitivity)
    assert delivered >= 0.9
    assert points.fitted_coverage is not None
    assert points.fitted_coverage >= 0.8


def test_coverage_and_abstain_below_together_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        OperatingPoints.fit([[0.6, 0.4]], ["a"], ["a", "b"], coverage=0.9, abstain_below=0.5)


def test_operating_points_round_trip_through_json() -> None:
    probs, labels = three_class_set(17)
    points = OperatingPoints.fit(probs, labels, CLASSES, targets={"covid-19": 0.95}, coverage=0.95)
    again = OperatingPoints.from_dict(json.loads(json.dumps(points.to_dict(), allow_nan=False)))
    assert again == points
    assert again.apply(probs) == points.apply(probs)


def test_operating_points_refuse_probabilities_of_other_classes() -> None:
    points = OperatingPoints.fit([[0.6, 0.4]], ["a"], ["a", "b"])
    with pytest.raises(ConfigurationError, match="for 2 classes"):
        points.apply([[0.2, 0.3, 0.5]])


def test_invalid_saved_operating_points_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="not valid operating points"):
        OperatingPoints.from_dict({"points": []})


# --- risk-coverage -----------------------------------------------------------------------


def test_aurc_of_a_hand_computed_example() -> None:
    probs = [[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]]
    curve = risk_coverage_curve(probs, [0, 1, 0, 1])
    assert curve.coverage == (0.25, 0.5, 0.75, 1.0)
    assert curve.risk == pytest.approx((0.0, 0.5, 1 / 3, 0.5))
    assert curve.aurc == pytest.approx((0 + 0.5 + 1 / 3 + 0.5) / 4)
    assert curve.full_coverage_risk == 0.5
    assert curve.risk_at(0.5) == 0.5


def test_tied_confidences_are_kept_or_dropped_together() -> None:
    # Two items at 0.8 (one wrong) then one at 0.6 (right).
    curve = risk_coverage_curve([[0.8, 0.2], [0.2, 0.8], [0.6, 0.4]], [0, 0, 0])
    assert curve.coverage == pytest.approx((2 / 3, 1.0))
    assert curve.risk == pytest.approx((0.5, 1 / 3))
    assert curve.aurc == pytest.approx(2 / 3 * 0.5 + 1 / 3 * 1 / 3)


def test_a_perfect_ranking_has_lower_aurc_than_a_reversed_one() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    good = risk_coverage_curve(probs, [0, 0, 1, 1])  # the wrong ones are least confident
    bad = risk_coverage_curve(probs, [1, 1, 0, 0])
    assert good.full_coverage_risk == bad.full_coverage_risk == 0.5
    assert good.aurc < bad.aurc
    assert json.loads(json.dumps(good.to_dict()))["aurc"] == good.aurc


# --- properties ----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 60),
    k=st.integers(2, 5),
    temperature=st.floats(0.05, 20.0),
)
def test_scaling_keeps_argmax_and_measures_stay_in_bounds(
    seed: int, n: int, k: int, temperature: float
) -> None:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(k, 0.5), n)
    labels = rng.integers(0, k, n)
    scaled = TemperatureScaling.from_dict({"temperature": temperature}).transform(probs)
    np.testing.assert_array_equal(scaled.argmax(axis=1), probs.argmax(axis=1))
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0)
    curve = reliability_curve(scaled, labels, n_bins=7)
    assert 0.0 <= curve.expected_calibration_error <= curve.maximum_calibration_error + 1e-12
    assert curve.maximum_calibration_error <= 1.0
    assert curve.n_items == n
    risk = risk_coverage_curve(probs, labels)
    assert risk.coverage[-1] == 1.0
    assert 0.0 <= risk.aurc <= 1.0
    assert risk.full_coverage_risk == pytest.approx(np.mean(probs.argmax(axis=1) != labels))


def test_operating_points_threshold_at_the_fitted_mix_and_argmax_at_another() -> None:
    probs = np.array([[0.45, 0.55], [0.2, 0.8], [0.6, 0.4]])
    points = OperatingPoints(
        ("covid-19", "normal"),
        [ClassOperatingPoint("covid-19", 0.95, 0.4, 1, 2, 1.0, 0.5, 0.0, 1.0)],
    )
    # Moved to a mix where COVID-19 is rare: the third row's argmax becomes normal, but
    # its COVID-19 probability at the fitted mix (0.6) still reaches the threshold.
    adjusted = np.array([[0.1, 0.9], [0.02, 0.98], [0.3, 0.7]])
    assert points.apply(probs) == ["covid-19", "normal", "covid-19"]
    assert points.apply(probs, adjusted=adjusted) == ["covid-19", "normal", "covid-19"]
    lenient = OperatingPoints(("covid-19", "normal"), abstain_below=0.75)
    assert lenient.apply(probs, adjusted=adjusted) == ["normal", "normal", UNCERTAIN]
    assert lenient.apply(probs) == [UNCERTAIN, "normal", UNCERTAIN]
    with pytest.raises(ConfigurationError, match="they must be the same rows"):
        points.apply(probs, adjusted=adjusted[:2])


def test_a_class_absent_at_the_mix_is_never_called_by_its_threshold() -> None:
    points = OperatingPoints(
        ("covid-19", "normal"),
        [ClassOperatingPoint("covid-19", 0.95, 0.4, 1, 2, 1.0, 0.5, 0.0, 1.0)],
    )
    probs = np.array([[0.6, 0.4], [0.7, 0.3]])
    # Where COVID-19 does not occur (prior 0) its adjusted probability is 0: its
    # threshold, met at the fitted mix, must not call it anyway.
    adjusted = np.array([[0.0, 1.0], [0.2, 0.8]])
    assert points.apply(probs, adjusted=adjusted) == ["normal", "covid-19"]
