"""Saved models: one zip file holding a Keras model and its covidcxr metadata.

The classifier and the local detector save themselves the same way. An archive holds
``model.keras`` (the Keras model) and ``covidcxr.json`` (format, format version, the
versions it was saved with, and whatever the estimator records). It is written through
:func:`covidcxr.files.atomic_write`, so a crash leaves the old file or the new one, never a
torn one. Loading checks the metadata before Keras sees the model: another format, another
format version, or another Keras major.minor version is refused, because Keras has changed
layer serialisation between minor releases and a model that loads "successfully" under
another one may not compute the same function.

TensorFlow and Keras are imported inside the functions, so importing this module is cheap.
"""

# ruff: noqa: PLC0415

from __future__ import annotations

import inspect
import json
import os
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
from attrs import frozen
from numpy.typing import NDArray

from covidcxr._version import __version__
from covidcxr.errors import ModelFormatError, OutputExistsError
from covidcxr.files import atomic_write, remove_stale_files, staged_file

__all__ = [
    "METADATA_MEMBER",
    "MODEL_MEMBER",
    "ArchiveFormat",
    "all_finite",
    "check_format",
    "check_metadata",
    "check_params",
    "is_archive_of",
    "read_model_archive",
    "runtime_versions",
    "write_model_archive",
]

MODEL_MEMBER: Final = "model.keras"
METADATA_MEMBER: Final = "covidcxr.json"

# What :mod:`zipfile` raises reading a damaged archive: BadZipFile (a bad CRC or header),
# RuntimeError (a member flagged as encrypted), NotImplementedError (an unknown compression
# method), zlib.error (corrupt deflated data), EOFError (truncated compressed data),
# OSError (a read that fails), ValueError (JSON and UTF-8 errors in the metadata).
_DAMAGED_ARCHIVE_ERRORS: Final = (
    zipfile.BadZipFile,
    RuntimeError,
    NotImplementedError,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
)


@frozen
class ArchiveFormat:
    """What kind of model an archive holds.

    Parameters
    ----------
    name
        The ``format`` written into the metadata, e.g. ``"covidcxr.classifier"``.
    version
        Bumped whenever the layout or metadata keys change incompatibly.
    description
        How messages name it, e.g. ``"covidcxr classifier"``.
    """

    name: str
    version: int
    description: str


def all_finite(arrays: Iterable[NDArray[Any]]) -> bool:
    """Whether every floating-point value in ``arrays`` is finite (no NaN, no infinity).

    What every estimator checks before it saves or resumes weights: a diverged network's
    would predict one answer for every image.
    """
    return all(
        bool(np.isfinite(array).all())
        for array in arrays
        if np.issubdtype(np.asarray(array).dtype, np.floating)
    )


def runtime_versions() -> dict[str, str]:
    """The versions of covidcxr, Keras and TensorFlow in this process."""
    import keras
    import tensorflow as tf

    return {"covidcxr": __version__, "keras": keras.__version__, "tensorflow": tf.__version__}


def is_archive_of(path: Path, archive_format: ArchiveFormat) -> bool:
    """Whether ``path`` is an archive of ``archive_format`` (and so safe to replace)."""
    try:
        with zipfile.ZipFile(path) as archive:
            metadata = json.loads(archive.read(METADATA_MEMBER))
    except (*_DAMAGED_ARCHIVE_ERRORS, KeyError):
        return False
    return isinstance(metadata, dict) and metadata.get("format") == archive_format.name


def write_model_archive(
    path: str | os.PathLike[str],
    archive_format: ArchiveFormat,
    save_model: Callable[[Path], None],
    metadata: Mapping[str, Any],
    *,
    overwrite: bool,
) -> None:
    """Write a model archive atomically, staging only beside ``path``.

    What a killed save left beside ``path`` (see :func:`covidcxr.files.staged_file`) is
    removed first.

    Parameters
    ----------
    path
        The target file.
    archive_format
        The kind of model.
    save_model
        Writes the Keras model to the ``.keras`` path it is given.
    metadata
        JSON-serialisable metadata; ``format``, ``format_version`` and ``versions`` are
        added (entries in ``metadata`` take precedence).
    overwrite
        Whether an existing archive of the same format may be replaced. Any other file is
        never replaced: it belongs to the user.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and is not an archive of this format, or ``overwrite`` is false.
    """
    target = Path(path)
    if target.exists():
        if not is_archive_of(target, archive_format):
            raise OutputExistsError(
                f"{target} exists and is not a saved {archive_format.description}; refusing "
                "to overwrite it (choose another path or remove it)"
            )
        if not overwrite:
            raise OutputExistsError(f"{target} exists; pass overwrite=True to replace it")
    document = {
        "format": archive_format.name,
        "format_version": archive_format.version,
        "versions": runtime_versions(),
        **metadata,
    }
    # Keras writes the model to a .keras path: staged beside the target (never a copy in
    # the system's temporary folder), named so that a killed save's leftover is removed
    # by the next save or load of the same path.
    with staged_file(target, ".keras") as keras_file:
        save_model(keras_file)
        with atomic_write(target) as handle, zipfile.ZipFile(handle, "w") as archive:
            archive.writestr(METADATA_MEMBER, json.dumps(document, indent=2, sort_keys=True))
            # .keras is itself a zip archive: storing it uncompressed costs nothing.
            archive.write(keras_file, MODEL_MEMBER, compress_type=zipfile.ZIP_STORED)


def read_model_archive(
    path: str | os.PathLike[str], archive_format: ArchiveFormat, scratch: Path
) -> tuple[dict[str, Any], Path]:
    """Read an archive's metadata and extract its Keras model into ``scratch``.

    Returns
    -------
    tuple[dict, Path]
        The metadata (checked with :func:`check_metadata`) and the extracted model path.

    Raises
    ------
    ModelFormatError
        If the file is missing, not an archive, lacks a member, cannot be read (a damaged
        member: a bad checksum, corrupt compressed data, an encrypted or unknown
        compression flag), or fails the checks.
    """
    source = Path(path)
    what = archive_format.description
    remove_stale_files(source)  # what a save killed part-way left beside it
    if not source.is_file():
        raise ModelFormatError(f"{source}: no saved {what} at this path")
    try:
        found = _read_members(source, scratch)
    except _DAMAGED_ARCHIVE_ERRORS as exc:
        raise ModelFormatError(
            f"{source}: corrupt or unreadable {what} archive ({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(found, set):
        raise ModelFormatError(f"{source}: not a saved {what} (missing {', '.join(sorted(found))})")
    metadata, extracted = found
    check_metadata(metadata, archive_format, source)
    return metadata, extracted


def _read_members(source: Path, scratch: Path) -> tuple[Any, Path] | set[str]:
    """The parsed metadata and the extracted model, or the names of the missing members."""
    with zipfile.ZipFile(source) as archive:
        missing = {METADATA_MEMBER, MODEL_MEMBER} - set(archive.namelist())
        if missing:
            return missing
        metadata = json.loads(archive.read(METADATA_MEMBER))
        return metadata, Path(archive.extract(MODEL_MEMBER, scratch))


def _is_str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _is_history(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(values, list)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        for values in value.values()
    )


def _is_count(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


# The shape of every metadata field a loader reads, checked once here so that a damaged
# or hand-edited covidcxr.json fails with the file and field named, not an AttributeError
# deep inside a loader. Fields may be absent (the loaders say which they require).
_FIELD_SHAPES: Final[dict[str, tuple[str, Callable[[Any], bool]]]] = {
    "versions": ("an object of version strings", _is_str_map),
    "params": ("an object", lambda value: isinstance(value, dict)),
    "classes": (
        "a list of strings",
        lambda value: isinstance(value, list) and all(isinstance(c, str) for c in value),
    ),
    "history": ("an object of lists of numbers", _is_history),
    "data_fingerprint": ("an object", lambda value: isinstance(value, dict)),
    "n_training_images": ("a count or null", _is_count),
    "preprocessing": ("null or an object", lambda value: value is None or isinstance(value, dict)),
    "input_profile": ("null or an object", lambda value: value is None or isinstance(value, dict)),
}


def check_metadata_shape(metadata: dict[str, Any], source: Path) -> None:
    """Refuse metadata whose fields have the wrong JSON type, naming the file and field.

    Raises
    ------
    ModelFormatError
        If a field that a loader reads is present with the wrong shape.
    """
    for field, (expected, matches) in _FIELD_SHAPES.items():
        if field in metadata and not matches(metadata[field]):
            raise ModelFormatError(
                f"{source}: {METADATA_MEMBER} field {field!r} should be {expected}, not "
                f"{type(metadata[field]).__name__} {metadata[field]!r:.60}; the file is damaged "
                "or was edited by hand: save the model again"
            )


def check_params(
    cls: type, metadata: Mapping[str, Any], source: str | os.PathLike[str]
) -> dict[str, Any]:
    """The saved constructor parameters of ``cls``, refused if any is not one of its own.

    A model saved by a later covidcxr may record parameters this one does not know (a
    new option of its estimator). Constructing the estimator would fail with a bare
    ``TypeError``; this says which parameters, and which covidcxr saved them.

    Parameters
    ----------
    cls
        The estimator class the archive is loaded into.
    metadata
        The archive's metadata (checked by :func:`check_metadata`): its ``params``, and
        the covidcxr version in its ``versions``.
    source
        The archive, for messages.

    Returns
    -------
    dict
        A copy of ``params``.

    Raises
    ------
    ModelFormatError
        If ``params`` is absent or not an object, or names a parameter ``cls`` does not
        take.
    """
    params = metadata.get("params")
    if not isinstance(params, dict):
        raise ModelFormatError(f"{os.fspath(source)}: metadata parameters are missing")
    accepted = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        return dict(params)  # a subclass taking **kwargs: its constructor decides
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        saved_by = metadata.get("versions", {}).get("covidcxr", "unknown")
        raise ModelFormatError(
            f"{os.fspath(source)}: saved by covidcxr {saved_by} with parameters this "
            f"covidcxr ({__version__}) does not know ({', '.join(map(repr, unknown))}); "
            "load it with the covidcxr that saved it"
        )
    return dict(params)


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def check_format(metadata: Any, archive_format: ArchiveFormat, source: Path) -> None:
    """Refuse metadata of another format or format version, or of the wrong shape.

    What every covidcxr archive checks; :func:`check_metadata` adds the Keras version of
    archives that hold a Keras model.

    Raises
    ------
    ModelFormatError
        Naming the file, the mismatch, and what to do.
    """
    what = archive_format.description
    if not isinstance(metadata, dict) or metadata.get("format") != archive_format.name:
        found = metadata.get("format") if isinstance(metadata, dict) else None
        kind = f" (its format is {found!r})" if isinstance(found, str) else ""
        raise ModelFormatError(
            f"{source}: {METADATA_MEMBER} does not describe a {what}{kind}: it is not {what} "
            "metadata"
        )
    check_metadata_shape(metadata, source)
    if metadata.get("format_version") != archive_format.version:
        saved_by = metadata.get("versions", {}).get("covidcxr", "unknown")
        raise ModelFormatError(
            f"{source}: saved in {what} format version {metadata.get('format_version')!r}, "
            f"this covidcxr reads version {archive_format.version}; load it with the covidcxr "
            f"version that saved it ({saved_by})"
        )


def check_metadata(metadata: Any, archive_format: ArchiveFormat, source: Path) -> None:
    """Refuse metadata of another format, format version, or Keras major.minor version.

    Raises
    ------
    ModelFormatError
        Naming the file, the mismatch, and what to do.
    """
    check_format(metadata, archive_format, source)
    saved = metadata.get("versions", {})
    if not isinstance(saved, dict) or "keras" not in saved:
        raise ModelFormatError(f"{source}: metadata lacks the Keras version it was saved with")
    import keras

    if _major_minor(str(saved["keras"])) != _major_minor(keras.__version__):
        raise ModelFormatError(
            f"{source}: saved with Keras {saved['keras']}, but Keras {keras.__version__} is "
            f"installed; install keras=={'.'.join(_major_minor(str(saved['keras'])))}.* to "
            "load it, or retrain"
        )
