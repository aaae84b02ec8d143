"""The gate checks parameters changed by ``set_params`` after fitting, with a typed error."""

from __future__ import annotations

import numpy as np
import pytest

from covidcxr import XRay
from covidcxr.errors import ConfigurationError
from covidcxr.gate import ChestXrayGate, n_versions


def _fitted_stand_in() -> ChestXrayGate:
    """A gate with a fitted state whose network is replaced by a constant answer."""
    gate = ChestXrayGate(mirror=False)
    gate.model_ = object()
    gate.threshold_ = 1.0
    gate.holdout_scores_ = np.zeros(20)
    gate.n_fitted_ = 100
    gate.history_ = {}
    gate.mirror_model_ = None
    gate.mirror_ = None

    def scores(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seen = np.zeros((len(images), n_versions()), np.float32)
        seen[:, 0] = 1.0
        return np.zeros(len(images)), seen

    gate._scores = scores  # type: ignore[method-assign]
    return gate


def _radiograph() -> XRay:
    return XRay(np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint8), id="r")


def test_the_stand_in_accepts_a_radiograph() -> None:
    assert _fitted_stand_in().assess([_radiograph()])[0].accepted


@pytest.mark.parametrize(
    "bad", [{"min_contrast": "high"}, {"min_contrast": -1.0}, {"mirror": "yes"}, {"acceptance": 2}]
)
def test_parameters_set_after_fitting_are_checked_when_assessing(bad: dict[str, object]) -> None:
    gate = _fitted_stand_in().set_params(**bad)
    with pytest.raises(ConfigurationError):
        gate.assess([_radiograph()])
    with pytest.raises(ConfigurationError):
        gate.score([_radiograph()])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_score_that_is_not_a_finite_number_is_refused_not_taken_as_low(bad: float) -> None:
    gate = _fitted_stand_in()
    gate._scores = lambda images: (  # type: ignore[method-assign]
        np.full(len(images), bad),
        np.eye(1, n_versions(), dtype=np.float32).repeat(len(images), axis=0),
    )
    [decision] = gate.assess([_radiograph()])
    assert not decision.accepted
    assert decision.score == float("inf")
    assert decision.reason is not None
    assert "could not score it" in decision.reason
