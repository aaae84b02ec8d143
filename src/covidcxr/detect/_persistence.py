"""Saving fitted detectors: one zip file, written atomically, checked before Keras reads it.

A saved detector holds ``model.keras`` and ``covidcxr.json`` (format, parameters,
versions). It is written to a temporary file beside the target, flushed and fsynced, then
renamed over the target, and the folder is fsynced: a crash leaves the old file or the new
one, never a torn one. Keras loads the model in safe mode (no arbitrary code).
"""

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

MODEL_MEMBER: Final = "model.keras"
METADATA_MEMBER: Final = "covidcxr.json"


def runtime_versions() -> dict[str, str]:
    """The versions of covidcxr, Keras and TensorFlow in this process."""
    import keras  # noqa: PLC0415 - only when saving
    import tensorflow as tf  # noqa: PLC0415

    return {"covidcxr": __version__, "keras": keras.__version__, "tensorflow": tf.__version__}


def _is_archive_of(path: Path, format_name: str) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(json.loads(archive.read(METADATA_MEMBER)).get("format") == format_name)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False


def write_archive(
    path: str | os.PathLike[str],
    format_name: str,
    save_model: Callable[[Path], None],
    metadata: Mapping[str, Any],
    *,
    overwrite: bool,
) -> None:
    """Write a detector archive atomically.

    An existing file is replaced only with ``overwrite=True``, and never when it is not
    an archive of the same format (it belongs to the user).
    """
    target = Path(path)
    if target.exists():
        if not _is_archive_of(target, format_name):
            raise OutputExistsError(
                f"{target} exists and is not a saved {format_name}; refusing to overwrite it"
            )
        if not overwrite:
            raise OutputExistsError(f"{target} exists; pass overwrite=True to replace it")
    document = {"format": format_name, "versions": runtime_versions(), **metadata}
    with tempfile.TemporaryDirectory(prefix="covidcxr-save-") as scratch:
        keras_file = Path(scratch) / MODEL_MEMBER
        save_model(keras_file)
        with atomic_write(target) as handle, zipfile.ZipFile(handle, "w") as archive:
            archive.writestr(METADATA_MEMBER, json.dumps(document, indent=2, sort_keys=True))
            archive.write(keras_file, MODEL_MEMBER, compress_type=zipfile.ZIP_STORED)


def read_archive(
    path: str | os.PathLike[str], format_name: str, format_version: int, scratch: Path
) -> tuple[dict[str, Any], Path]:
    """Check an archive's metadata and extract its Keras model into ``scratch``."""
    source = Path(path)
    if not source.is_file():
        raise ModelFormatError(f"{source}: no saved {format_name} at this path")
    try:
        with zipfile.ZipFile(source) as archive:
            missing = {METADATA_MEMBER, MODEL_MEMBER} - set(archive.namelist())
            if missing:
                raise ModelFormatError(
                    f"{source}: not a saved {format_name} (missing {', '.join(sorted(missing))})"
                )
            metadata = json.loads(archive.read(METADATA_MEMBER))
            extracted = Path(archive.extract(MODEL_MEMBER, scratch))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise ModelFormatError(f"{source}: corrupt archive ({exc})") from exc
    if not isinstance(metadata, dict) or metadata.get("format") != format_name:
        raise ModelFormatError(f"{source}: {METADATA_MEMBER} does not describe a {format_name}")
    if metadata.get("format_version") != format_version:
        raise ModelFormatError(
            f"{source}: saved in {format_name} format version "
            f"{metadata.get('format_version')!r}; this covidcxr reads version {format_version}"
        )
    saved_keras = str(metadata.get("versions", {}).get("keras", ""))
    import keras  # noqa: PLC0415

    if saved_keras.split(".")[:1] != keras.__version__.split(".")[:1]:
        raise ModelFormatError(
            f"{source}: saved with Keras {saved_keras or 'unknown'}, this is Keras "
            f"{keras.__version__}; load it with a matching Keras major version"
        )
    return metadata, extracted
