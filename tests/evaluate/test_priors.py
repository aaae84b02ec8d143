"""Class priors: Bayes' rule to another class mix, and the mix estimated by EM."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.typing import NDArray

from covidcxr.errors import ConfigurationError
from covidcxr.evaluate import adjust_to_priors, estimate_priors

CLASSES = ("covid-19", "normal", "pneumonia")
TRAINED = np.array([0.5, 0.25, 0.25])
# One feature per radiograph, Gaussian around a mean of its class: the exact posterior at
# any class mix is known, so a "model" here is perfectly calibrated by construction.
MEANS = np.array([-1.5, 0.0, 1.5])


def _sample(priors: NDArray[np.float64], n: int, seed: int) -> NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    truth = rng.choice(len(priors), size=n, p=priors)
    return rng.normal(MEANS[truth], 1.0)


def _posterior(x: NDArray[np.float64], priors: NDArray[np.float64]) -> NDArray[np.float64]:
    likelihood = np.exp(-0.5 * (x[:, None] - MEANS[None, :]) ** 2)
    joint = likelihood * priors
    posterior: NDArray[np.float64] = joint / joint.sum(axis=1, keepdims=True)
    return posterior


def test_adjusting_gives_the_exact_posterior_at_the_new_mix() -> None:
    clinic = np.array([0.05, 0.8, 0.15])
    x = _sample(clinic, 500, seed=0)
    adjusted = adjust_to_priors(_posterior(x, TRAINED), TRAINED, clinic)
    np.testing.assert_allclose(adjusted, _posterior(x, clinic), atol=1e-12)


def test_priors_by_name_and_counts_are_the_same_priors() -> None:
    probs = _posterior(_sample(TRAINED, 20, seed=1), TRAINED)
    by_share = adjust_to_priors(probs, TRAINED, [0.2, 0.6, 0.2])
    by_name = adjust_to_priors(
        probs,
        {"pneumonia": 932, "covid-19": 1864, "normal": 932},
        {"normal": 3, "covid-19": 1, "pneumonia": 1},
        classes=CLASSES,
    )
    np.testing.assert_allclose(by_name, by_share)


def test_the_same_mix_changes_nothing() -> None:
    probs = _posterior(_sample(TRAINED, 20, seed=2), TRAINED)
    np.testing.assert_allclose(adjust_to_priors(probs, TRAINED, TRAINED), probs)


def test_a_class_absent_at_the_new_place_gets_no_probability() -> None:
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    adjusted = adjust_to_priors(probs, TRAINED, [0.0, 0.5, 0.5])
    assert (adjusted[:, 0] == 0).all()
    np.testing.assert_allclose(adjusted.sum(axis=1), 1)
    with pytest.raises(ConfigurationError, match="row 0 gives probability only to classes"):
        adjust_to_priors(np.array([[1.0, 0.0, 0.0]]), TRAINED, [0.0, 0.5, 0.5])


@settings(max_examples=50, deadline=None)
@given(
    rows=arrays(np.float64, (6, 3), elements=st.floats(0.01, 1.0)),
    target=arrays(np.float64, 3, elements=st.floats(0.01, 1.0)),
)
def test_adjusting_there_and_back_gives_the_probabilities_again(
    rows: NDArray[np.float64], target: NDArray[np.float64]
) -> None:
    probs = rows / rows.sum(axis=1, keepdims=True)
    there = adjust_to_priors(probs, TRAINED, target)
    np.testing.assert_allclose(adjust_to_priors(there, target, TRAINED), probs, atol=1e-9)


@pytest.mark.parametrize(
    "clinic", [np.array([0.05, 0.8, 0.15]), np.array([0.5, 0.25, 0.25]), np.array([0.1, 0.3, 0.6])]
)
def test_em_finds_the_mix_of_unlabelled_radiographs(clinic: NDArray[np.float64]) -> None:
    x = _sample(clinic, 6000, seed=3)
    estimate = estimate_priors(_posterior(x, TRAINED), TRAINED, classes=CLASSES)
    assert estimate.converged
    assert estimate.n_items == 6000
    np.testing.assert_allclose(estimate.priors, clinic, atol=0.03)
    assert sum(estimate.priors) == pytest.approx(1.0)
    assert list(estimate.as_dict()) == list(CLASSES)


def test_em_reports_when_it_did_not_converge() -> None:
    x = _sample(np.array([0.05, 0.8, 0.15]), 500, seed=4)
    estimate = estimate_priors(_posterior(x, TRAINED), TRAINED, max_iterations=1)
    assert not estimate.converged
    assert estimate.n_iterations == 1
    assert estimate.as_dict().keys() == {"0", "1", "2"}


@pytest.mark.parametrize(
    ("source", "target", "kwargs", "message"),
    [
        ({"covid-19": 1, "normal": 1, "pneumonia": 1}, TRAINED, {}, "needs classes="),
        ({"covid-19": 1, "normal": 1}, TRAINED, {"classes": CLASSES}, "missing 'pneumonia'"),
        (
            {"covid-19": 1, "normal": 1, "pneumonia": 1, "tb": 1},
            TRAINED,
            {"classes": CLASSES},
            "'tb' is not a class",
        ),
        ([0.5, 0.5], TRAINED, {}, "one value per probability column"),
        ([0.5, 0.0, 0.5], TRAINED, {}, "must be positive for every class"),
        (TRAINED, [0.5, -0.1, 0.6], {}, "finite and not negative"),
        (TRAINED, [0.0, 0.0, 0.0], {}, "must not all be 0"),
        (TRAINED, [np.nan, 0.5, 0.5], {}, "finite and not negative"),
        (
            {"covid": 0.5, "normal": 0.25, "pneumonia": 0.25},
            TRAINED,
            {"classes": CLASSES},
            "'covid' is not a class",  # the typo is named, not the class it missed
        ),
        ({"covid-19": "x", "normal": 1, "pneumonia": 1}, TRAINED, {"classes": CLASSES}, "numbers"),
        (TRAINED, [None, 0.5, 0.5], {}, "finite and not negative"),
        ([1e-320, 1.0, 1.0], TRAINED, {}, "too small to divide by"),
        (TRAINED, TRAINED, {"classes": CLASSES[:2]}, "classes names 2 classes"),
    ],
)
def test_unusable_priors_are_refused(
    source: Any, target: Any, kwargs: dict[str, Any], message: str
) -> None:
    probs = np.array([[0.2, 0.3, 0.5]])
    with pytest.raises(ConfigurationError, match=message):
        adjust_to_priors(probs, source, target, **kwargs)


def test_unusable_em_settings_and_probabilities_are_refused() -> None:
    probs = np.array([[0.2, 0.3, 0.5]])
    with pytest.raises(ConfigurationError, match="tolerance must be a positive number"):
        estimate_priors(probs, TRAINED, tolerance=0)
    with pytest.raises(ConfigurationError, match="max_iterations must be at least 1"):
        estimate_priors(probs, TRAINED, max_iterations=0)
    with pytest.raises(ConfigurationError, match="rows must sum to 1"):
        estimate_priors(np.array([[0.2, 0.3, 0.6]]), TRAINED)
