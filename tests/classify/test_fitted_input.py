"""Prediction refuses input parameters changed by ``set_params`` after fitting."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.base import clone

from covidcxr import XRay
from covidcxr.classify import VGG19Classifier
from covidcxr.errors import ConfigurationError


@pytest.fixture(scope="module")
def fitted(train_xrays: list[XRay], tiny: dict[str, Any]) -> VGG19Classifier:
    return VGG19Classifier(**{**tiny, "epochs": 1}).fit(train_xrays)


@pytest.mark.parametrize(("option", "value"), [("input_size", 64), ("normalization", "imagenet")])
def test_input_parameters_changed_after_fit_are_refused_at_prediction(
    option: str, value: Any, fitted: VGG19Classifier, valid_xrays: list[XRay]
) -> None:
    changed = clone(fitted)
    changed.__dict__.update(
        model_=fitted.model_,
        classes_=fitted.classes_,
        fitted_normalization_=fitted.fitted_normalization_,
        preprocessing_=fitted.preprocessing_,
        input_profile_=fitted.input_profile_,
        _predict_function=None,
    )
    before = changed.predict_proba(valid_xrays)
    changed.set_params(**{option: value})
    with pytest.raises(ConfigurationError, match=option):
        changed.predict_proba(valid_xrays)
    with pytest.raises(ConfigurationError, match=option):
        changed.prepare_batch(valid_xrays)
    changed.set_params(**{option: fitted.get_params()[option]})
    np.testing.assert_array_equal(changed.predict_proba(valid_xrays), before)
