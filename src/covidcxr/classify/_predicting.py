"""Prediction for :class:`~covidcxr.VGG19Classifier`: model input, probabilities, input checks.

Radiographs stream in batches, each image converted by one function traced once per
process (``inference_batches`` in ``classify/_inputs.py``); only one batch of model
input exists at a time. The compiled predict function is kept on the estimator
(``_predict_function``) and rebuilt after ``fit`` or ``load``.
"""

# TensorFlow/Keras are imported inside functions on purpose: importing covidcxr stays fast.
# ruff: noqa: PLC0415

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from covidcxr.classify._fit_setup import input_spec
from covidcxr.classify._inputs import ScanStats
from covidcxr.errors import ConfigurationError, PreprocessingMismatchWarning
from covidcxr.preprocess._profile import InputRecorder
from covidcxr.records import XRay

if TYPE_CHECKING:
    from covidcxr.classify._vgg19 import VGG19Classifier

__all__ = [
    "average_views",
    "check_fitted",
    "check_fitted_input",
    "model_input",
    "predict_probabilities",
    "warn_if_unlike_training",
]


def check_fitted(estimator: VGG19Classifier) -> None:
    """Refuse an estimator that has no model yet.

    Raises
    ------
    ConfigurationError
        If neither ``fit`` nor ``load`` made it.
    """
    if not hasattr(estimator, "model_"):
        raise ConfigurationError(
            "this VGG19Classifier is not fitted yet; call fit() or VGG19Classifier.load()"
        )


def check_fitted_input(estimator: VGG19Classifier) -> None:
    """Refuse input parameters changed (``set_params``) since ``fit`` or ``load``.

    The model was trained on ``input_size`` images normalised as ``input_normalization``
    said then; other input would give a TensorFlow error (another size) or silently wrong
    probabilities (another normalisation).

    Raises
    ------
    ConfigurationError
        If ``input_size`` or the resolved normalisation differ from the fitted model's.
    """
    if not hasattr(estimator, "model_"):
        return
    size = estimator.model_.input_shape[1]
    normalization = getattr(estimator, "fitted_normalization_", None)
    if estimator.input_size != size or (
        normalization is not None and estimator.input_normalization != normalization
    ):
        raise ConfigurationError(
            f"this VGG19Classifier was fitted for input_size={size}, normalization "
            f"{normalization!r}, but now has input_size={estimator.input_size!r}, "
            f"normalization {estimator.input_normalization!r} (changed by set_params?); "
            "set them back, or fit again"
        )


def model_input(estimator: VGG19Classifier, xrays: Iterable[XRay]) -> NDArray[np.float32]:
    """The exact input the model receives for ``xrays`` (see ``prepare_batch``)."""
    check_fitted_input(estimator)
    stats = ScanStats()
    batches = list(estimator._inference_batches(xrays, stats))
    stats.warn(stacklevel=4)  # one frame deeper than the method that calls this
    if not batches:
        return np.zeros((0, estimator.input_size, estimator.input_size, 3), np.float32)
    return np.concatenate(batches).astype(np.float32, copy=False)


def predict_probabilities(
    estimator: VGG19Classifier, xrays: Iterable[XRay], *, stacklevel: int
) -> NDArray[np.float32]:
    """Class probabilities, one row per radiograph, columns in ``classes_`` order.

    ``stacklevel`` is what :func:`warnings.warn` called here would need to name the
    caller to blame for :func:`warn_if_unlike_training`'s warning.
    """
    import tensorflow as tf

    check_fitted(estimator)
    estimator._check_params()  # set_params may have changed test_time_rotations since
    check_fitted_input(estimator)
    if getattr(estimator, "_predict_function", None) is None:
        model = estimator.model_
        estimator._predict_function = tf.function(
            lambda x: model(x, training=False),
            input_signature=[input_spec(estimator.input_size)],
            jit_compile=estimator.jit_compile,
        )
    predict = estimator._predict_function
    assert predict is not None  # noqa: S101 - set just above; narrows the type
    stats = ScanStats(inputs=InputRecorder())
    batches = estimator._inference_batches(xrays, stats, views=True)
    parts = [average_views(predict(batch).numpy(), estimator.n_views) for batch in batches]
    stats.warn(stacklevel=4)  # one frame deeper than the method that calls this
    warn_if_unlike_training(estimator, stats, stacklevel=stacklevel + 1)
    if not parts:
        return np.zeros((0, len(estimator.classes_)), np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)


def average_views(probabilities: NDArray[np.floating], views: int) -> NDArray[np.float32]:
    """Average each image's ``views`` consecutive rows of probabilities into one row.

    Examples
    --------
    >>> average_views(np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.0, 1.0]]), 2)
    array([[0.75, 0.25],
           [0.  , 1.  ]], dtype=float32)
    """
    rows = np.asarray(probabilities, np.float32)
    if views == 1:
        return rows
    averaged: NDArray[np.float32] = rows.reshape(-1, views, rows.shape[-1]).mean(axis=1)
    return averaged


def warn_if_unlike_training(
    estimator: VGG19Classifier, stats: ScanStats, *, stacklevel: int
) -> None:
    """Warn once when the input is unlike the training input (see the errors module).

    ``stacklevel`` is passed to :func:`warnings.warn` (counted from this function).
    """
    if stats.inputs is None:
        return
    trained = estimator.preprocessing_ if isinstance(estimator.preprocessing_, Mapping) else None
    problem = stats.inputs.mismatch(
        trained, estimator.input_profile_, f"this {type(estimator).__name__}"
    )
    if problem is not None:
        warnings.warn(problem, PreprocessingMismatchWarning, stacklevel=stacklevel)
