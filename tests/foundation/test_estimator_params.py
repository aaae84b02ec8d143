"""The estimators are scikit-learn estimators: :class:`sklearn.base.BaseEstimator` subclasses.

:class:`~covidcxr.VGG19Classifier`, :class:`~covidcxr.LocalDetector`,
:class:`~covidcxr.lungs.LungSegmenter`, :class:`~covidcxr.gate.ChestXrayGate` and
:class:`~covidcxr.evaluate.TemperatureScaling` inherit it through ``covidcxr._params``
(which makes an unknown parameter a :class:`~covidcxr.errors.ConfigurationError`), so
:func:`sklearn.base.clone` must work on each. The copies of fitted estimators are checked
beside their fixtures (``tests/classify``, ``tests/detect``, ``tests/gate``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, clone

from covidcxr import LocalDetector, VGG19Classifier
from covidcxr.errors import ConfigurationError
from covidcxr.evaluate import TemperatureScaling
from covidcxr.gate import ChestXrayGate
from covidcxr.lungs import LungSegmenter

# Each with parameters away from its defaults, so that a copy built from the defaults fails.
ESTIMATORS: dict[str, Callable[[], Any]] = {
    "vgg19": lambda: VGG19Classifier(
        input_size=48, weights=None, epochs=3, class_weight={"normal": 2.0}, dropout=0.25
    ),
    "local": lambda: LocalDetector(input_size=64, epochs=2, mask_threshold=0.6, label="lesion"),
    "gate": lambda: ChestXrayGate(input_size=24, epochs=2, acceptance=0.95, seed=3),
    "calibration": lambda: TemperatureScaling(bounds=(0.1, 10.0), min_items=5),
    "lungs": lambda: LungSegmenter(input_size=64, epochs=2, threshold=0.4, seed=2),
}


def public_fitted_state(estimator: object) -> list[str]:
    """The learned attributes (scikit-learn's trailing underscore) an estimator holds."""
    return sorted(
        name for name in vars(estimator) if name.endswith("_") and not name.startswith("_")
    )


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_sklearn_clone_gives_an_unfitted_copy_with_equal_parameters(name: str) -> None:
    estimator = ESTIMATORS[name]()
    assert isinstance(estimator, BaseEstimator)
    copy = clone(estimator)
    assert type(copy) is type(estimator)
    assert copy is not estimator
    assert copy.get_params() == estimator.get_params()
    assert repr(copy) == repr(estimator)
    assert public_fitted_state(copy) == []


def test_sklearn_clone_of_a_fitted_scaler_leaves_the_fit_behind() -> None:
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet([1.0, 1.0, 1.0], size=60)
    labels = np.array([rng.choice(3, p=row) for row in probabilities])  # calibrated as drawn
    scaler = TemperatureScaling(bounds=(0.1, 10.0), min_items=5).fit(probabilities, labels)
    copy = clone(scaler)
    assert copy.get_params() == scaler.get_params()
    assert public_fitted_state(scaler) != []
    assert public_fitted_state(copy) == []
    assert not copy.is_fitted


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_set_params_sets_known_parameters_and_refuses_others(name: str) -> None:
    estimator = ESTIMATORS[name]()
    params = estimator.get_params()
    first = next(iter(params))
    assert estimator.set_params(**{first: params[first]}) is estimator
    with pytest.raises(ConfigurationError, match="no parameter 'no_such_parameter'"):
        estimator.set_params(no_such_parameter=1)
