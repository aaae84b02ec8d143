"""Saving and loading fitted classifiers: one file, written atomically, checked on load.

A saved classifier is a :mod:`covidcxr._model_archive` archive of format
``covidcxr.classifier``: ``model.keras`` plus ``covidcxr.json`` (what it was trained on and
with). Keras loads the model in safe mode (the model holds only built-in layers). Unlike a
detector, a saved classifier is replaced by a new save without asking; any other file at
the path is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from covidcxr import _model_archive as model_archive
from covidcxr._model_archive import METADATA_MEMBER, MODEL_MEMBER, runtime_versions

__all__ = [
    "FORMAT",
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
