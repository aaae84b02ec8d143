"""Every constructor parameter of VGG19Classifier is checked, with a typed error, before fit works.

Values that Keras, NumPy or Python would refuse deep inside training (with a ValueError,
TypeError or OverflowError that names no parameter), and values they would silently
accept (``True`` epochs, an infinite learning rate), are refused by ``fit`` up front as a
:class:`~covidcxr.errors.ConfigurationError` naming the parameter, however they were set.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from covidcxr import XRay
from covidcxr.classify import VGG19Classifier
from covidcxr.classify._parameters import check_params
from covidcxr.errors import ConfigurationError

INVALID: list[tuple[str, Any]] = [
    ("momentum", -0.5),
    ("momentum", 1.5),
    ("momentum", float("nan")),
    ("dense_units", 0),
    ("dense_units", -3),
    ("dense_units", 8.5),
    ("seed", -1),
    ("seed", "a"),
    ("learning_rate", "0.1"),
    ("learning_rate", float("inf")),
    ("learning_rate", float("nan")),
    ("epochs", True),
    ("epochs", -1),
    ("batch_size", True),
    ("batch_size", 0),
    ("augmentation", "15"),
    ("width_multiplier", float("inf")),
    ("dropout", "x"),
    ("augmentation_views", True),
    ("weight_averaging", "0.5"),
    ("weights", 3),
    ("class_weight", ["normal"]),
    ("class_weight", {"bogus": 2.0}),
    ("class_weight", {"normal": True}),
    ("batch_norm", "false"),
    ("feature_cache", 0),
    ("verbose", -1),
    ("verbose", "loud"),
]


@pytest.mark.parametrize(("option", "value"), INVALID)
def test_fit_refuses_an_invalid_value_naming_the_parameter(
    option: str, value: Any, train_xrays: list[XRay], tiny: dict[str, Any]
) -> None:
    classifier = VGG19Classifier(**{**tiny, "epochs": 1})
    classifier.set_params(**{option: value})  # scikit-learn style: checked by fit
    with pytest.raises(ConfigurationError, match=option):
        classifier.fit(train_xrays)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("seed", np.int64(3)),
        ("momentum", np.float32(0.9)),
        ("learning_rate", np.float64(0.01)),
        ("dense_units", np.int32(16)),
        ("epochs", np.int64(2)),
        ("class_weight", {"normal": np.float32(2.0)}),
    ],
)
def test_numpy_scalars_from_a_parameter_search_are_accepted(option: str, value: Any) -> None:
    check_params(VGG19Classifier(weights=None, **{option: value}).get_params())
