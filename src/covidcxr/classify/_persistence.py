"""Saving and loading fitted classifiers: one file, written atomically, checked on load.

A saved classifier is a :mod:`covidcxr._model_archive` archive of format
``covidcxr.classifier``: ``model.keras`` plus ``covidcxr.json`` (what it was trained on and
with). Keras loads the model in safe mode (the model holds only built-in layers). Unlike a
detector, a saved classifier is replaced by a new save without asking; any other file at
the path is left alone.
"""

# Keras is imported inside functions on purpose: importing covidcxr stays fast.
# ruff: noqa: PLC0415

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from covidcxr import _model_archive as model_archive
from covidcxr._model_archive import METADATA_MEMBER, MODEL_MEMBER, all_finite, runtime_versions
from covidcxr._plain import plain_data
from covidcxr.errors import ModelFormatError, TrainingDivergedError
from covidcxr.preprocess._profile import InputProfile

if TYPE_CHECKING:
    from covidcxr.classify._vgg19 import VGG19Classifier

_Classifier = TypeVar("_Classifier", bound="VGG19Classifier")

__all__ = [
    "FORMAT",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "METADATA_MEMBER",
    "MODEL_MEMBER",
    "check_metadata",
    "is_saved_classifier",
    "load_classifier",
    "read_archive",
    "runtime_versions",
    "save_classifier",
    "write_archive",
]

FORMAT_NAME: Final = "covidcxr.classifier"
#: Bumped whenever the archive layout or metadata keys change incompatibly.
FORMAT_VERSION: Final = 1
FORMAT: Final = model_archive.ArchiveFormat(FORMAT_NAME, FORMAT_VERSION, "covidcxr classifier")


def is_saved_classifier(path: Path) -> bool:
    """Whether ``path`` is an archive written by :func:`write_archive` (safe to replace)."""
    return model_archive.is_archive_of(path, FORMAT)


def write_archive(
    path: str | os.PathLike[str],
    save_model: Callable[[Path], None],
    metadata: Mapping[str, Any],
) -> None:
    """Write a classifier archive atomically, replacing only an earlier saved classifier.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and is not a saved classifier (also a :class:`FileExistsError`).
    """
    model_archive.write_model_archive(path, FORMAT, save_model, metadata, overwrite=True)


def read_archive(path: str | os.PathLike[str], scratch: Path) -> tuple[dict[str, Any], Path]:
    """Read a classifier archive's checked metadata and extract its model into ``scratch``.

    Raises
    ------
    ModelFormatError
        If the file is missing, not an archive, lacks a member, or fails the checks.
    """
    return model_archive.read_model_archive(path, FORMAT, scratch)


def check_metadata(metadata: Any, source: Path) -> None:
    """Refuse metadata of another format, format version, or Keras major.minor version."""
    model_archive.check_metadata(metadata, FORMAT, source)


def save_classifier(estimator: VGG19Classifier, path: str | os.PathLike[str]) -> None:
    """Write a fitted classifier to one archive, atomically (``VGG19Classifier.save``).

    Raises
    ------
    TrainingDivergedError
        If the model's weights are not finite.
    """
    if not all_finite(estimator.model_.get_weights()):
        raise TrainingDivergedError(
            f"not saving to {os.fspath(path)}: the model has non-finite (NaN or infinite) "
            "weights, so training diverged; lower learning_rate and train again"
        )
    params = {
        key: value
        for key, value in estimator.get_params().items()
        if key not in ("checkpoint_dir", "on_epoch_end")
    }
    metadata = {
        "classes": list(estimator.classes_),
        "params": plain_data(params),
        "input_size": estimator.input_size,
        "input_normalization": estimator.input_normalization,
        "feature_layer_name": estimator.feature_layer_name,
        "preprocessing": estimator.preprocessing_,
        "input_profile": (
            estimator.input_profile_.to_dict() if estimator.input_profile_ is not None else None
        ),
        "versions": runtime_versions(),
        "history": estimator.history_,
        "data_fingerprint": estimator.fingerprint_,
    }
    write_archive(path, estimator.model_.save, metadata)


def load_classifier(cls: type[_Classifier], path: str | os.PathLike[str]) -> _Classifier:
    """Read a classifier written by :func:`save_classifier` (``VGG19Classifier.load``).

    Raises
    ------
    ModelFormatError
        If the file is not a saved classifier, is corrupt, was written by another format
        version or Keras major.minor version, or its model does not match its metadata.
    """
    import keras

    with tempfile.TemporaryDirectory(prefix="covidcxr-load-") as scratch:
        metadata, keras_file = read_archive(path, Path(scratch))
        params = model_archive.check_params(cls, metadata, path)
        try:
            model = keras.models.load_model(keras_file, compile=False, safe_mode=True)
        except Exception as exc:
            raise ModelFormatError(f"{path}: Keras could not load the model: {exc}") from exc
    try:
        if isinstance(params.get("test_time_rotations"), list):  # JSON has no tuples
            params["test_time_rotations"] = tuple(params["test_time_rotations"])
        estimator = cls(**params)
        classes = tuple(metadata["classes"])
        history = {key: list(values) for key, values in metadata["history"].items()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise ModelFormatError(f"{path}: metadata is incomplete ({exc!r})") from exc
    expected = (None, estimator.input_size, estimator.input_size, 3)
    if tuple(model.input_shape) != expected or model.output_shape[-1] != len(classes):
        raise ModelFormatError(
            f"{path}: model maps {model.input_shape} to {model.output_shape}, but the "
            f"metadata says {expected} to {len(classes)} classes"
        )
    estimator.model_ = model
    estimator.classes_ = classes
    estimator.fitted_normalization_ = estimator.input_normalization
    estimator.history_ = history
    estimator.fingerprint_ = metadata.get("data_fingerprint", {})
    estimator.preprocessing_ = metadata.get("preprocessing")
    profile = metadata.get("input_profile")
    # Absent from models saved before it was recorded: their input is not checked.
    estimator.input_profile_ = (
        InputProfile.from_dict(profile, os.fspath(path)) if profile is not None else None
    )
    estimator._predict_function = None
    return estimator
