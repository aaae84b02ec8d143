"""Saving and loading fitted classifiers: one file, written atomically, checked on load.

A saved classifier is a single zip archive holding ``model.keras`` (the Keras model) and
``covidcxr.json`` (what it was trained on and with). It is written to a temporary file
beside the target, flushed and fsynced, then renamed over the target, and the folder is
fsynced: a crash at any moment leaves either the old file or the new one, never a torn
one. Loading checks the metadata before Keras sees the model, and Keras loads it in safe
mode (no deserialisation of arbitrary code: the model holds only built-in layers).
"""

# TensorFlow/Keras are imported inside functions on purpose: importing covidcxr stays fast.
# ruff: noqa: PLC0415

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from covidcxr._version import __version__
from covidcxr.errors import ModelFormatError, OutputExistsError
from covidcxr.files import atomic_write

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "METADATA_MEMBER",
    "MODEL_MEMBER",
    "check_metadata",
    "is_saved_classifier",
    "read_archive",
    "runtime_versions",
    "write_archive",
]

FORMAT_NAME: Final = "covidcxr.classifier"
#: Bumped whenever the archive layout or metadata keys change incompatibly.
FORMAT_VERSION: Final = 1
MODEL_MEMBER: Final = "model.keras"
METADATA_MEMBER: Final = "covidcxr.json"


def runtime_versions() -> dict[str, str]:
    """The versions of covidcxr, Keras and TensorFlow in this process."""
    import keras
    import tensorflow as tf

    return {"covidcxr": __version__, "keras": keras.__version__, "tensorflow": tf.__version__}


def is_saved_classifier(path: Path) -> bool:
    """Whether ``path`` is an archive written by :func:`write_archive` (safe to replace)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return METADATA_MEMBER in archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def write_archive(
    path: str | os.PathLike[str],
    save_model: Callable[[Path], None],
    metadata: Mapping[str, Any],
) -> None:
    """Write a classifier archive atomically.

    Parameters
    ----------
    path
        The target file. An existing file is replaced only if it is itself a saved
        classifier; anything else the user owns is left alone.
    save_model
        Writes the Keras model to the ``.keras`` path it is given.
    metadata
        JSON-serialisable metadata; ``format`` and ``format_version`` are added.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and is not a saved classifier (also a :class:`FileExistsError`).
    """
    target = Path(path)
    if target.exists() and not is_saved_classifier(target):
        raise OutputExistsError(
            f"{target} exists and is not a saved covidcxr classifier; refusing to overwrite "
            "it (choose another path or remove it)"
        )
    document = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **metadata}
    with tempfile.TemporaryDirectory(prefix="covidcxr-save-") as scratch:
        keras_file = Path(scratch) / MODEL_MEMBER
        save_model(keras_file)
        with atomic_write(target) as handle, zipfile.ZipFile(handle, "w") as archive:
            archive.writestr(METADATA_MEMBER, json.dumps(document, indent=2, sort_keys=True))
            # .keras is itself a zip archive: storing it uncompressed costs nothing.
            archive.write(keras_file, MODEL_MEMBER, compress_type=zipfile.ZIP_STORED)


def read_archive(path: str | os.PathLike[str], scratch: Path) -> tuple[dict[str, Any], Path]:
    """Read an archive's metadata and extract its Keras model into ``scratch``.

    Returns
    -------
    tuple[dict, Path]
        The metadata (checked with :func:`check_metadata`) and the extracted model path.

    Raises
    ------
    ModelFormatError
        If the file is missing, not an archive, lacks a member, or fails the checks.
    """
    source = Path(path)
    if not source.is_file():
        raise ModelFormatError(f"{source}: no saved classifier at this path")
    try:
        with zipfile.ZipFile(source) as archive:
            names = set(archive.namelist())
            missing = {METADATA_MEMBER, MODEL_MEMBER} - names
            if missing:
                raise ModelFormatError(
                    f"{source}: not a covidcxr classifier (missing {', '.join(sorted(missing))})"
                )
            metadata = json.loads(archive.read(METADATA_MEMBER))
            extracted = Path(archive.extract(MODEL_MEMBER, scratch))
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{source}: corrupt classifier archive ({exc})") from exc
    check_metadata(metadata, source)
    return metadata, extracted


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def check_metadata(metadata: Any, source: Path) -> None:
    """Refuse metadata of another format, format version, or Keras major.minor version.

    Raises
    ------
    ModelFormatError
        Naming the file, the mismatch, and what to do.
    """
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise ModelFormatError(f"{source}: {METADATA_MEMBER} is not covidcxr classifier metadata")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(
            f"{source}: saved in classifier format version {metadata.get('format_version')!r}, "
            f"this covidcxr reads version {FORMAT_VERSION}; load it with the covidcxr version "
            f"that saved it ({metadata.get('versions', {}).get('covidcxr', 'unknown')})"
        )
    saved = metadata.get("versions", {})
    if not isinstance(saved, dict) or "keras" not in saved:
        raise ModelFormatError(f"{source}: metadata lacks the Keras version it was saved with")
    import keras

    # Keras has changed layer serialisation between minor releases; a model that loads
    # "successfully" under another minor version may not compute the same function.
    if _major_minor(str(saved["keras"])) != _major_minor(keras.__version__):
        raise ModelFormatError(
            f"{source}: saved with Keras {saved['keras']}, but Keras {keras.__version__} is "
            f"installed; install keras=={'.'.join(_major_minor(str(saved['keras'])))}.* to "
            "load it, or retrain"
        )
