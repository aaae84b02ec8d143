"""Packaging a saved pipeline as a shipped model: small files, a manifest, checksums.

:func:`package` copies every file of a saved pipeline directory (whatever stages it has:
the copy is generic, not a list of components) into ``<root>/<name>/pipeline/``, storing
the weights of every Keras model in it as float16 (or float32, for all of them or for the
files named) and without optimizer state (:func:`write_shippable_copy`), loads the copy
back, measures how far its predictions, lesions and severity moved
(:func:`compare_predictions`), adds a "packaged" entry to the model card, and writes
``shipped.json`` with the SHA-256 and size of every file. The folder appears in one rename,
complete, or not at all.

Keras weights are found by content, not by a list of components: a file that is a
``.keras`` archive (``config.json`` and ``model.weights.h5``), a covidcxr model archive
holding one (:mod:`covidcxr._model_archive`: ``covidcxr.json`` and ``model.keras``), a
covidcxr archive holding such archives (an ensemble classifier's), or an HDF5 file named
``*.weights.h5`` (``Model.save_weights``) is rewritten; every other file is copied byte
for byte. Keras casts float16 values to the float32 of its
variables when it loads them, so a shipped model computes in float32 as it was trained.
"""

# ruff: noqa: PLC0415 - TensorFlow (behind the pipeline) is imported only when it is used

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import secrets
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import attrs
import numpy as np
from attrs import field, frozen

from covidcxr._version import __version__
from covidcxr.errors import ConfigurationError, ModelFormatError, OutputExistsError
from covidcxr.files import MARKER_NAME
from covidcxr.pretrained._registry import (
    MIXED_PRECISION,
    MODEL_FORMAT,
    MODEL_FORMAT_VERSION,
    NAME_PATTERN,
    PIPELINE_FOLDER,
    SHIPPED_MANIFEST,
    ModelInfo,
    available,
    check_sentence,
    default_root,
    describe_precisions,
    file_sha256,
    format_size,
    read_model_manifest,
    string_mapping,
    verify,
)
from covidcxr.sources._layouts import CITATIONS, TERMS

if TYPE_CHECKING:
    from covidcxr.pipeline import Pipeline
    from covidcxr.records import XRay

__all__ = [
    "DEFAULT_TOLERANCE",
    "PrecisionCheck",
    "ShippableCopy",
    "check_packaging",
    "compare_predictions",
    "package",
    "set_aliases",
    "write_shippable_copy",
]

Precision = Literal["float16", "float32"]
#: One precision for every file holding Keras weights, or one per file by its path in the
#: saved pipeline (a file not named keeps float32).
PrecisionSpec: TypeAlias = Precision | Mapping[str, Precision]
_PRECISIONS: Final = ("float16", "float32")

#: The largest change of any class probability, or of any infected share of a lung, that
#: :func:`package` accepts from storing the weights as float16; beyond it, keep the file
#: that moved them at float32.
DEFAULT_TOLERANCE: Final = 0.01

_KERAS_CONFIG: Final = "config.json"
_KERAS_WEIGHTS: Final = "model.weights.h5"
_ARCHIVE_MODEL: Final = "model.keras"
_ARCHIVE_METADATA: Final = "covidcxr.json"
_OPTIMIZER_GROUP: Final = "optimizer"
_WEIGHTS_SUFFIX: Final = ".weights.h5"
_HDF5_SIGNATURE: Final = b"\x89HDF\r\n\x1a\n"
# How many phantoms of each class check a packaging that is given no images of its own.
_CHECK_PHANTOMS_PER_CLASS: Final = 3
_CHECK_PHANTOM_SIZE: Final = 128
_CARD_NAME: Final = "model_card.md"

_log = logging.getLogger(__name__)


@frozen
class ShippableCopy:
    """What :func:`write_shippable_copy` wrote.

    Parameters
    ----------
    original_bytes, shipped_bytes
        The bytes of every file before and after.
    converted
        The files whose Keras weights were rewritten (POSIX paths relative to the copy).
    left_out
        Files in the folder that the save did not write (not copied).
    precisions
        The precision each converted file's weights were stored at, by its path.
    """

    original_bytes: int
    shipped_bytes: int
    converted: tuple[str, ...]
    left_out: tuple[str, ...] = ()
    precisions: Mapping[str, str] = field(factory=dict, converter=string_mapping)


@frozen
class PrecisionCheck:
    """How the shipped copy's predictions differ from the original's.

    Parameters
    ----------
    images
        What the images were, in words.
    n_images
        How many were predicted.
    n_compared
        How many got class probabilities from both (an image the input gate refuses gets
        none).
    max_abs_probability_difference
        The largest absolute difference of any class probability of any image.
    n_decisions_changed
        Images whose label or status (accepted, uncertain, rejected) differs.
    max_abs_severity_difference
        The largest absolute difference of any infected share of a lung (right, left,
        total) of any image both gave a severity; ``None`` when neither measures severity.
    n_severity_changed
        Images that got a severity from one and not the other.
    n_lesion_counts_changed
        Images whose number of lesion boxes differs.
    n_admission_changed
        Images that got class probabilities from one pipeline only: the input gate, itself
        a network stored at the new precision, admitted them in one and refused them in
        the other.
    """

    images: str
    n_images: int
    n_compared: int
    max_abs_probability_difference: float
    n_decisions_changed: int
    max_abs_severity_difference: float | None = None
    n_severity_changed: int = 0
    n_lesion_counts_changed: int = 0
    n_admission_changed: int = 0

    def exceeds(self, tolerance: float) -> str | None:
        """What moved by more than ``tolerance``, in words; ``None`` if nothing did.

        Class probabilities and infected shares are both in ``[0, 1]`` and both read by
        users, so one tolerance holds for both; so does a severity that appeared or went.
        Lesion counts are reported, not judged: a box from a thresholded mask appears or
        goes at a cut-off. An image the input gate admits in one pipeline only is judged:
        its user gets a diagnosis from one and a refusal from the other.

        Raises
        ------
        ConfigurationError
            If ``tolerance`` is not a number in ``[0, 1)``.
        """
        check_tolerance(tolerance)
        if self.n_admission_changed:
            return f"whether the input gate admitted {self.n_admission_changed} image(s) at all"
        if self.max_abs_probability_difference > tolerance:
            return f"a class probability by {self.max_abs_probability_difference:.3g}"
        severity = self.max_abs_severity_difference
        if severity is not None and severity > tolerance:
            return f"an infected share of a lung by {severity:.3g}"
        if self.n_severity_changed:
            return f"whether {self.n_severity_changed} image(s) got a severity at all"
        return None

    def to_dict(self) -> dict[str, Any]:
        """The check as JSON-ready data (as ``shipped.json`` records it)."""
        return {
            "images": self.images,
            "n_images": self.n_images,
            "n_compared": self.n_compared,
            "max_abs_probability_difference": self.max_abs_probability_difference,
            "n_decisions_changed": self.n_decisions_changed,
            "max_abs_severity_difference": self.max_abs_severity_difference,
            "n_severity_changed": self.n_severity_changed,
            "n_lesion_counts_changed": self.n_lesion_counts_changed,
            "n_admission_changed": self.n_admission_changed,
        }


def check_tolerance(tolerance: float) -> None:
    """Refuse a tolerance that is not a number in ``[0, 1)`` (NaN would accept anything)."""
    if not 0.0 <= tolerance < 1.0:  # False for NaN too
        raise ConfigurationError(
            f"tolerance must be a number in [0, 1) (a change of a probability), not {tolerance!r}"
        )


# -- weights as float16 ------------------------------------------------------------------


def _float16_weights(data: bytes, *, precision: Precision) -> bytes:
    """A Keras ``model.weights.h5`` with float32 arrays at ``precision``, no optimizer."""
    import h5py

    def copy(source: h5py.Group, target: h5py.Group) -> None:
        target.attrs.update(source.attrs)
        for key, item in source.items():
            if isinstance(item, h5py.Group):
                if source.name == "/" and key == _OPTIMIZER_GROUP:
                    continue  # training state: a shipped model is not trained further as is
                copy(item, target.create_group(key))
                continue
            values = item[()]
            if precision == "float16" and getattr(values, "dtype", None) == np.float32:
                if np.any(np.abs(values[np.isfinite(values)]) > np.finfo(np.float16).max):
                    raise ModelFormatError(
                        f"weights {item.name} exceed the float16 range; package this model "
                        'with precision="float32"'
                    )
                values = values.astype(np.float16)
            target.create_dataset(key, data=values).attrs.update(item.attrs)

    output = io.BytesIO()
    with h5py.File(io.BytesIO(data), "r") as source, h5py.File(output, "w") as target:
        copy(source, target)
    return output.getvalue()


def _without_compile_config(data: bytes) -> bytes:
    """``config.json`` of a ``.keras`` file without its optimizer and loss settings."""
    config = json.loads(data)
    if isinstance(config, dict) and config.get("compile_config") is not None:
        config["compile_config"] = None
    return json.dumps(config).encode("utf-8")


def _is_hdf5(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE


def _is_keras_file(names: Iterable[str]) -> bool:
    return {_KERAS_CONFIG, _KERAS_WEIGHTS} <= set(names)


def _is_model_archive(names: Iterable[str]) -> bool:
    return {_ARCHIVE_MODEL, _ARCHIVE_METADATA} <= set(names)


def _shippable_keras(data: bytes, *, precision: Precision) -> bytes:
    """A ``.keras`` file's bytes with its weights at ``precision`` and no optimizer state."""
    output = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(output, "w") as target:
        for info in source.infolist():
            member = source.read(info)
            if info.filename == _KERAS_WEIGHTS:
                member = _float16_weights(member, precision=precision)
            elif info.filename == _KERAS_CONFIG:
                member = _without_compile_config(member)
            target.writestr(info, member)
    return output.getvalue()


def _shippable_archive(data: bytes, *, precision: Precision) -> bytes:
    """A covidcxr model archive's bytes with its Keras model made shippable."""
    output = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(output, "w") as target:
        for info in source.infolist():
            member = source.read(info)
            if info.filename == _ARCHIVE_MODEL:
                member = _shippable_keras(member, precision=precision)
            elif info.filename == _ARCHIVE_METADATA:
                metadata = json.loads(member)
                metadata["weights_stored_as"] = precision
                member = json.dumps(metadata, indent=2, sort_keys=True).encode("utf-8")
            target.writestr(info, member)
    return output.getvalue()


def _shippable_bytes(path: Path, *, precision: Precision) -> bytes | None:
    """The file's shippable bytes when it holds Keras weights, else ``None`` (copy as is)."""
    if path.name.endswith(_WEIGHTS_SUFFIX) and _is_hdf5(path):
        # What Keras's Model.save_weights writes: the weights alone, as in a .keras file.
        try:
            return _float16_weights(path.read_bytes(), precision=precision)
        except (OSError, ValueError) as exc:
            raise ModelFormatError(f"{path}: could not rewrite its Keras weights: {exc}") from exc
    if not zipfile.is_zipfile(path):
        return None
    try:
        return _shippable_zip(path.read_bytes(), precision=precision)
    except (zipfile.BadZipFile, ValueError, OSError, KeyError) as exc:
        raise ModelFormatError(f"{path}: could not rewrite its Keras weights: {exc}") from exc


def _shippable_zip(data: bytes, *, precision: Precision) -> bytes | None:
    """A zip file's shippable bytes when it holds Keras weights, else ``None``."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        inner = archive.read(_ARCHIVE_MODEL) if _is_model_archive(names) else None
    if inner is not None and zipfile.is_zipfile(io.BytesIO(inner)):
        with zipfile.ZipFile(io.BytesIO(inner)) as model:
            if _is_keras_file(model.namelist()):
                return _shippable_archive(data, precision=precision)
    elif _is_keras_file(names):
        return _shippable_keras(data, precision=precision)
    elif _ARCHIVE_METADATA in names:
        return _shippable_archive_of_models(data, precision=precision)
    return None


def _shippable_archive_of_models(data: bytes, *, precision: Precision) -> bytes | None:
    """A covidcxr archive of saved models (an ensemble classifier's), each made shippable.

    ``None`` when none of the models it holds has Keras weights.
    """
    members: list[tuple[zipfile.ZipInfo, bytes]] = []
    rewritten = False
    with zipfile.ZipFile(io.BytesIO(data)) as source:
        for info in source.infolist():
            member = source.read(info)
            if info.filename != _ARCHIVE_METADATA and zipfile.is_zipfile(io.BytesIO(member)):
                shippable = _shippable_zip(member, precision=precision)
                if shippable is not None:
                    member, rewritten = shippable, True
            members.append((info, member))
    if not rewritten:
        return None
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w") as target:
        for info, member in members:
            written = member
            if info.filename == _ARCHIVE_METADATA:
                metadata = json.loads(member)
                metadata["weights_stored_as"] = precision
                written = json.dumps(metadata, indent=2, sort_keys=True).encode("utf-8")
            target.writestr(info, written)
    return output.getvalue()


def _saved_files(source: Path) -> set[str] | None:
    """The files the save wrote, as its covidcxr marker lists them; ``None`` without one."""
    try:
        marker = json.loads((source / MARKER_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{source / MARKER_NAME}: unreadable: {exc}") from exc
    files = marker.get("files") if isinstance(marker, dict) else None
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        raise ModelFormatError(f"{source / MARKER_NAME}: no list of the files the save wrote")
    return set(files)


def write_shippable_copy(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    precision: PrecisionSpec = "float16",
) -> ShippableCopy:
    """Copy a saved pipeline directory with its Keras weights made small for shipping.

    Every file the save wrote is copied, whatever the pipeline's stages are: those its
    covidcxr marker lists (:data:`covidcxr.files.MARKER_NAME`), or every file of a folder
    saved without one. What else is in the folder (a ``skipped.csv`` listing the
    builder's own file paths, notes) is left out and listed in the result. A file holding
    Keras weights (a ``.keras`` file, a covidcxr model archive around one, or a
    ``*.weights.h5`` file) is rewritten with its float32 weights stored at its precision
    and its optimizer state and compile settings dropped; Keras loads such weights back
    into float32 variables. Every other file is copied byte for byte.

    Not every network takes float16 equally: a segmentation mask thresholded at 0.5 can
    flip pixels and move a crop that a classifier then reads. ``precision`` may therefore
    name each file's precision, leaving the sensitive ones at float32.

    Parameters
    ----------
    source
        A directory :meth:`~covidcxr.Pipeline.save` wrote.
    target
        A directory that does not exist yet; the copy is written beside it and renamed
        into place when complete.
    precision
        ``"float16"`` (half the bytes) or ``"float32"`` (only the optimizer state goes)
        for every file holding Keras weights; or a mapping from such files' paths in the
        saved pipeline (``"classifier"``, ``"lungs"``) to their precision, where a file
        not named keeps float32.

    Returns
    -------
    ShippableCopy
        The bytes before and after, which files were rewritten (at which precision) and
        which left out.

    Raises
    ------
    ConfigurationError
        If a precision is neither ``"float16"`` nor ``"float32"``, or the mapping names a
        file that holds no Keras weights (nothing is left at ``target``).
    ModelFormatError
        If a file the save wrote is missing or is a symbolic link, or holds weights that
        cannot be rewritten.
    OutputExistsError
        If ``target`` exists.
    """
    _check_precision_spec(precision)
    source, target = Path(source), Path(target)
    if target.exists():
        raise OutputExistsError(f"{target} exists; the shippable copy needs a new folder")
    saved = _saved_files(source)
    present = sorted(
        (Path(directory) / name).relative_to(source).as_posix()
        for directory, _, names in os.walk(source)
        for name in names
    )
    missing = sorted(saved - set(present)) if saved is not None else []
    if missing:
        raise ModelFormatError(
            f"{source / missing[0]}: written by the save but missing; save the pipeline again"
        )
    chosen = [name for name in present if name != MARKER_NAME and (saved is None or name in saved)]
    left_out = tuple(name for name in present if name != MARKER_NAME and name not in chosen)
    if not isinstance(precision, str):
        _check_named_files(precision, chosen, where=source)
    # The copy is written beside target and renamed into place when whole: a killed run
    # leaves no half copy at target; a refused one leaves no folder it made either.
    created = target
    while not created.parent.exists():
        created = created.parent
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _staged(target) as staging:
            copy = _copy_files(source, staging, chosen, precision)
    except BaseException:
        if created != target:
            shutil.rmtree(created, ignore_errors=True)
        raise
    return attrs.evolve(copy, left_out=left_out)


def _check_precision_spec(precision: object) -> None:
    values = [precision] if isinstance(precision, str) else None
    if isinstance(precision, Mapping):
        values = list(precision.values())
    if values is None or any(value not in _PRECISIONS for value in values):
        raise ConfigurationError(
            "precision must be 'float16' or 'float32', or a mapping of files to one of "
            f"them, not {precision!r}"
        )


def _check_named_files(precision: Mapping[str, Precision], chosen: list[str], where: Path) -> None:
    unknown = sorted(set(precision) - set(chosen))
    if unknown:
        raise ConfigurationError(
            f"precision names {unknown[0]!r}, which is not a file of the saved pipeline "
            f"{where} (its files: {', '.join(chosen)})"
        )


def _copy_files(
    source: Path, target: Path, chosen: list[str], precision: PrecisionSpec
) -> ShippableCopy:
    original = shipped = 0
    precisions: dict[str, Precision] = {}
    for relative in chosen:
        path = source / relative
        if path.is_symlink():
            raise ModelFormatError(f"{path}: a symbolic link; a shipped model holds files only")
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        chosen_precision: Precision = (
            precision if isinstance(precision, str) else precision.get(relative, "float32")
        )
        rewritten = _shippable_bytes(path, precision=chosen_precision)
        if rewritten is None:
            if not isinstance(precision, str) and relative in precision:
                raise ConfigurationError(
                    f"precision names {relative!r}, which holds no Keras weights"
                )
            shutil.copyfile(path, destination)
        else:
            destination.write_bytes(rewritten)
            precisions[relative] = chosen_precision
        original += path.stat().st_size
        shipped += destination.stat().st_size
    return ShippableCopy(original, shipped, tuple(precisions), precisions=precisions)


# -- how far the predictions moved -------------------------------------------------------


def _default_check_images() -> tuple[list[XRay], str]:
    from covidcxr.phantoms import generate_phantoms

    images = generate_phantoms(_CHECK_PHANTOMS_PER_CLASS, size=_CHECK_PHANTOM_SIZE, seed=0)
    described = (
        f"{len(images)} synthetic phantoms (covidcxr.phantoms.generate_phantoms("
        f"{_CHECK_PHANTOMS_PER_CLASS}, size={_CHECK_PHANTOM_SIZE}, seed=0))"
    )
    return images, described


def compare_predictions(
    original: Pipeline, shipped: Pipeline, images: Any, *, description: str | None = None
) -> PrecisionCheck:
    """Predict ``images`` with both pipelines and measure how far the shipped one moved.

    Parameters
    ----------
    original, shipped
        The pipeline as saved, and its shippable copy loaded back.
    images
        Anything :meth:`~covidcxr.Pipeline.predict` takes; read once, predicted by both.
    description
        What the images are, in words (``repr(images)`` by default).

    Returns
    -------
    PrecisionCheck
        The largest absolute difference of any class probability and of any infected
        share of a lung, and how many images changed label or status, were admitted by
        one input gate only, got a severity from one only, or got another number of
        lesion boxes.

    Raises
    ------
    ConfigurationError
        If ``images`` holds no image, or none that both pipelines gave probabilities
        (the input gate refused them all).
    """
    from covidcxr.errors import SyntheticModelWarning
    from covidcxr.pipeline._prepared import as_source

    xrays = list(as_source(images, "images"))
    if not xrays:
        raise ConfigurationError("compare_predictions needs at least one image")
    with warnings.catch_warnings():
        # Both say it once each when trained on phantoms; packaging reports it elsewhere.
        warnings.simplefilter("ignore", SyntheticModelWarning)
        before, after = original.predict(xrays), shipped.predict(xrays)
    largest = 0.0
    changed = compared = lesion_counts = severity_changed = admission = 0
    severity: float | None = None
    for first, second in zip(before, after, strict=True):
        changed += (first.label, first.status) != (second.label, second.status)
        lesion_counts += len(first.detections) != len(second.detections)
        admission += bool(first.probabilities) != bool(second.probabilities)
        labels = set(first.probabilities) & set(second.probabilities)
        compared += bool(labels)
        for label in labels:
            largest = max(largest, abs(first.probabilities[label] - second.probabilities[label]))
        if first.severity is not None and second.severity is not None:
            shares = zip(
                (first.severity.right, first.severity.left, first.severity.total),
                (second.severity.right, second.severity.left, second.severity.total),
                strict=True,
            )
            severity = max(severity or 0.0, *(abs(a - b) for a, b in shares))
        else:
            severity_changed += (first.severity is None) != (second.severity is None)
    described = description or repr(images)[:200]
    if not compared:
        # A figure of 0 from no comparison at all would be a silent wrong answer.
        raise ConfigurationError(
            f"no image of {described} got class probabilities from both pipelines (the "
            "input gate refused them?): compare on radiographs like the training ones"
        )
    return PrecisionCheck(
        described,
        len(xrays),
        compared,
        float(largest),
        changed,
        max_abs_severity_difference=severity,
        n_severity_changed=severity_changed,
        n_lesion_counts_changed=lesion_counts,
        n_admission_changed=admission,
    )


# -- packaging ---------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigurationError(
            f"model name {name!r} is not allowed: use lower-case letters, digits, '.', '_' "
            "and '-', starting with a letter or digit (at most 64 characters)"
        )


def _check_aliases_free(name: str, aliases: tuple[str, ...], base: Path) -> None:
    """Refuse a name or alias that would make one name load two models."""
    if name in aliases:
        raise ConfigurationError(f"{name!r} is the model's own name; it needs no alias")
    taken = {
        other: info.name
        for info in (available(base) if base.is_dir() else {}).values()
        if info.name != name
        for other in (info.name, *info.aliases)
    }
    for wanted in (name, *aliases):
        if wanted in taken:
            raise ConfigurationError(
                f"{wanted!r} already names the shipped model {taken[wanted]!r}; choose "
                "another name or alias"
            )


def _shipping_section(name: str, manifest: Mapping[str, Any]) -> str:
    check = manifest["check"]
    weights = _weights(manifest)
    return "\n".join(
        [
            "## Shipped with covidcxr",
            "",
            f"- Name: `{name}` (`covidcxr.pretrained.load({name!r})`, "
            f"`covidcxr predict {name} SCANS --output preds.csv`)"
            + "".join(f"; also `{alias}`" for alias in manifest.get("aliases", ())),
            f"- Summary: {manifest['summary']}",
            f"- Size: about {format_size(manifest['size_bytes'])} as installed "
            f"({format_size(manifest['original_size_bytes'])} as saved); Keras weights "
            f"stored as {weights}, loaded as float32; no optimizer state",
            f"- {check_sentence(check, weights)}",
            f"- Packaged with covidcxr {manifest['covidcxr_version']}, Keras "
            f"{manifest['keras_version']} (loading needs Keras of the same major.minor)",
            *(
                [f"- Built by covidcxr at source revision `{manifest['revision']}`"]
                if manifest.get("revision")
                else []
            ),
            "- Every file's SHA-256 is in `shipped.json` beside this folder and is checked "
            "before the model is loaded.",
            "",
            "Rebuild it from the shared data with covidcxr's own training code; run as "
            "recorded, the command replaces this model with the rebuilt one:",
            "",
            "```console",
            f"$ {manifest['build_command']}",
            "```",
            "",
        ]
    )


def _fill_known_terms(training_data: Any) -> None:
    """Give a card saved before covidcxr recorded terms the terms of its known dataset.

    A pipeline saved by an older covidcxr names its training data's citation but not its
    terms; when the citation is a dataset's covidcxr knows (a layout's), its terms are
    added, so that every shipped card states them.
    """
    if not isinstance(training_data, dict) or training_data.get("terms"):
        return
    for layout, citation in CITATIONS.items():
        if training_data.get("citation") == citation and layout in TERMS:
            training_data["terms"] = TERMS[layout]


def _record_packaging(pipeline_dir: Path, name: str, manifest: Mapping[str, Any]) -> None:
    """Add a "packaged" changelog entry to the copy's card, and the shipping section."""
    _record_shipping(
        pipeline_dir,
        name,
        manifest,
        event="packaged",
        description=(
            f"packaged as the shipped model {name!r}, Keras weights as "
            f"{_weights(manifest)}; rebuild with: {manifest['build_command']}"
        ),
    )


def _weights(manifest: Mapping[str, Any]) -> str:
    """How a manifest's weights are stored, in words (one precision before "precisions")."""
    precisions = manifest.get("precisions")
    return describe_precisions(precisions) if precisions else str(manifest["precision"])


def _record_shipping(
    pipeline_dir: Path, name: str, manifest: Mapping[str, Any], *, event: str, description: str
) -> None:
    """Add a changelog entry to a shipped copy's card and write its shipping section anew."""
    from covidcxr.pipeline._card import card_files, changelog_entry
    from covidcxr.pipeline._persistence import MANIFEST_NAME

    manifest_path = pipeline_dir / MANIFEST_NAME
    saved = json.loads(manifest_path.read_text(encoding="utf-8"))
    _fill_known_terms(saved.get("training_data"))
    saved["changelog"] = [
        *(saved.get("changelog") or []),
        changelog_entry(event, description),
    ]
    manifest_path.write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")
    for file_name, text in card_files(saved).items():
        written = text
        if file_name == _CARD_NAME:
            # Before the closing "Generated by covidcxr ..." line.
            body, footer, tail = text.rpartition("\nGenerated by covidcxr ")
            section = _shipping_section(name, manifest)
            written = f"{body}\n{section}{footer}{tail}" if footer else f"{text}\n{section}"
        (pipeline_dir / file_name).write_text(written, encoding="utf-8")


def _digests(folder: Path) -> list[dict[str, Any]]:
    return [
        {
            "path": path.relative_to(folder).as_posix(),
            "sha256": file_sha256(path),
            "size": path.stat().st_size,
        }
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != SHIPPED_MANIFEST
    ]


def _keras_version() -> str:
    import keras

    return str(keras.__version__)


@contextlib.contextmanager
def _staged(target: Path) -> Iterator[Path]:
    """A fresh folder beside ``target`` to fill; renamed into its place if the block ends well.

    If the block raises (or is interrupted), the folder is removed and ``target`` is as it was.
    """
    staging = _new_folder(target.parent, f".{target.name}.staging-")
    try:
        yield staging
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _new_folder(parent: Path, prefix: str) -> Path:
    """A new, uniquely named folder in ``parent``, with the permissions ``mkdir`` gives.

    Not :func:`tempfile.mkdtemp`, whose folder only its owner may read: renamed into the
    package, it would hide the model from every other user of a shared installation.
    """
    while True:
        folder = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder


def _recover_interrupted(target: Path) -> None:
    """Put back a model that a killed replacement left aside, and drop dead staging.

    :func:`_swap_in` moves the old model into a ``.NAME.replaced-*`` folder before it
    renames the new one into place; killed between the two renames, it leaves no model
    at ``target``. The newest such model is moved back; staging folders of ``target``
    (a killed packaging's half-written copies) are removed.
    """
    parent = target.parent
    if not parent.is_dir():
        return
    aside = sorted(
        (folder / target.name for folder in parent.glob(f".{target.name}.replaced-*")),
        key=lambda path: path.stat().st_mtime if path.exists() else 0.0,
    )
    if not target.exists() and aside and aside[-1].is_dir():
        aside[-1].rename(target)
        _log.warning("put back %s, which an interrupted packaging had moved aside", target)
    for leftover in (
        *parent.glob(f".{target.name}.replaced-*"),
        *parent.glob(f".{target.name}.staging-*"),
    ):
        shutil.rmtree(leftover, ignore_errors=True)


def _swap_in(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``, replacing what is there; the old one is removed after."""
    if not target.exists():
        staging.rename(target)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.replaced-", dir=target.parent))
    old = aside / target.name
    target.rename(old)
    try:
        staging.rename(target)
    except OSError:
        old.rename(target)
        raise
    shutil.rmtree(aside)


def package(
    name: str,
    pipeline_dir: str | os.PathLike[str],
    *,
    build_command: str,
    summary: str | None = None,
    root: str | os.PathLike[str] | None = None,
    force: bool = False,
    precision: PrecisionSpec = "float16",
    check_images: Any = None,
    check_description: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    aliases: Sequence[str] = (),
    revision: str | None = None,
) -> ModelInfo:
    """Add a saved pipeline to the shipped models as ``name``.

    The pipeline is copied into ``<root>/<name>/pipeline/`` with its Keras weights as
    ``precision`` and no optimizer state (:func:`write_shippable_copy`); the copy is
    loaded back and its predictions compared with the original's on ``check_images``
    (:func:`compare_predictions`); its card gets a "packaged" changelog entry and a
    section saying how it is shipped and rebuilt; ``shipped.json`` records the name,
    summary, sizes, precision, check, versions, ``build_command`` and the SHA-256 and
    size of every file. The folder is staged beside its target and renamed into place.

    Parameters
    ----------
    name
        The model's name: lower-case letters, digits, ``.``, ``_``, ``-``.
    pipeline_dir
        A directory :meth:`~covidcxr.Pipeline.save` wrote.
    build_command
        The exact command that rebuilds the model from the shared data with covidcxr's own
        training code; it goes into the manifest and the card, so it must carry no
        credentials (they are refused, see :func:`check_packaging`). :func:`package`
        checks its arguments before any work; a build that trains first calls
        :func:`check_packaging` before training.
    summary
        What the model is, in one line; by default the card's task and training data.
    root
        Where the models live; covidcxr's own models folder by default (in a source
        checkout, ``src/covidcxr/pretrained/models``).
    force
        Replace a model of the same name. A folder at ``root/name`` that holds no shipped
        model (no ``shipped.json``) is never replaced.
    precision
        ``"float16"`` (default) or ``"float32"`` for every file holding Keras weights, or
        a mapping of such files (by their path in the saved pipeline) to their precision,
        where a file not named keeps float32: ``{"classifier": "float16", "gate":
        "float16"}`` halves those two and keeps the U-Nets, whose thresholded masks
        float16 would move, at float32.
    check_images
        Images to compare predictions on (anything :meth:`~covidcxr.Pipeline.predict`
        takes); nine synthetic phantoms by default.
    check_description
        What ``check_images`` are, in words, for the manifest and card.
    tolerance
        The largest change of a class probability, or of an infected share of a lung,
        accepted from storing the weights at ``precision``.
    aliases
        Other names it loads by (``"covid-qu-ex"`` for the recommended COVID-QU-Ex model);
        each must be free: no other model in ``root`` has it as name or alias.
    revision
        The source revision of the code that trained it (a git commit, say), for the
        manifest and card: the code with which the build command reproduces the model.

    Returns
    -------
    ModelInfo
        The new model's manifest.

    Raises
    ------
    ConfigurationError
        If the name, the build command (more than one line, or carrying credentials) or
        the precision is unusable, or the predictions moved by more than ``tolerance``.
    OutputExistsError
        If a model of that name exists and ``force`` is false, or ``root/name`` is a
        folder that holds no shipped model.
    ModelFormatError
        If ``pipeline_dir`` is not a saved pipeline this covidcxr can load, or the shipped
        copy predicts numbers that are not finite.
    """
    from covidcxr.pipeline import Pipeline

    aliases = tuple(dict.fromkeys(aliases))
    target = check_packaging(
        name,
        build_command=build_command,
        root=root,
        force=force,
        aliases=aliases,
        revision=revision,
    )
    check_tolerance(tolerance)
    base = target.parent
    original = Pipeline.load(pipeline_dir)
    if check_images is None:
        check_images, check_description = _default_check_images()
    base.mkdir(parents=True, exist_ok=True)
    with _staged(target) as staging:
        _fill_staging(
            staging,
            name,
            pipeline_dir=Path(pipeline_dir),
            original=original,
            build_command=build_command.strip(),
            summary=summary,
            precision=precision,
            check_images=check_images,
            check_description=check_description,
            tolerance=tolerance,
            aliases=aliases,
            revision=revision.strip() if revision is not None else None,
        )
    return read_model_manifest(target)


def check_packaging(
    name: str,
    *,
    build_command: str,
    root: str | os.PathLike[str] | None = None,
    force: bool = False,
    aliases: Sequence[str] = (),
    revision: str | None = None,
) -> Path:
    """Refuse, before any work, what :func:`package` would refuse of these arguments.

    A build that trains a model for hours calls it first (``build_pretrained.py`` does),
    so that a name already taken, an alias of another model, a missing ``force`` or a
    build command carrying credentials is refused before training, not after it. It puts
    back a model that a killed replacement left aside (as :func:`package` does).

    Parameters
    ----------
    name, build_command, root, force, aliases, revision
        As for :func:`package`.

    Returns
    -------
    Path
        The model's folder, ``root/name``.

    Raises
    ------
    ConfigurationError
        If the name, an alias, the build command or the revision is unusable: the build
        command must be one line and carry no credentials (``user:password@`` in a URL, a
        ``token=``, ``password=`` or ``apikey=`` value): it is written into
        ``shipped.json`` and the model card.
    OutputExistsError
        If a model of that name exists and ``force`` is false, or ``root/name`` is a
        folder that holds no shipped model.
    """
    from covidcxr.pipeline._card import _redacted

    _check_name(name)
    aliases = tuple(dict.fromkeys(aliases))
    for alias in aliases:
        _check_name(alias)
    if not build_command.strip() or "\n" in build_command:
        raise ConfigurationError(
            "build_command must be the one-line command that rebuilds the model"
        )
    if _redacted(build_command) != build_command:
        # Never repeated: the message names what kind of text is refused, not the text.
        raise ConfigurationError(
            "build_command must not carry credentials (user:password@ in a URL, or a "
            "token=, password=, apikey= value): it is written into shipped.json and the "
            "model card; pass them through environment variables instead"
        )
    if revision is not None and (not revision.strip() or "\n" in revision):
        raise ConfigurationError("revision must be one line, such as a git commit")
    base = Path(root) if root is not None else default_root()
    target = base / name
    _recover_interrupted(target)
    if target.exists() and not (target / SHIPPED_MANIFEST).is_file():
        # force replaces a model, never a folder of someone's own files.
        raise OutputExistsError(
            f"{target} exists and is not a shipped model (no {SHIPPED_MANIFEST}); covidcxr "
            "replaces only a model it packaged: choose another name or move that folder"
        )
    _check_aliases_free(name, aliases, base)
    if target.exists() and not force:
        raise OutputExistsError(
            f"{target}: a model named {name!r} is already there; pass force=True (--force) "
            "to replace it"
        )
    return target


def _fill_staging(
    staging: Path,
    name: str,
    *,
    pipeline_dir: Path,
    original: Pipeline,
    build_command: str,
    summary: str | None,
    precision: PrecisionSpec,
    check_images: Any,
    check_description: str | None,
    tolerance: float,
    aliases: tuple[str, ...],
    revision: str | None,
) -> None:
    """Write the shipped model's folder, complete with its manifest, into ``staging``."""
    from covidcxr.pipeline import METADATA_NAME, Pipeline

    copy = write_shippable_copy(pipeline_dir, staging / PIPELINE_FOLDER, precision=precision)
    shipped = Pipeline.load(staging / PIPELINE_FOLDER)
    check = compare_predictions(original, shipped, check_images, description=check_description)
    weights = describe_precisions(copy.precisions)
    moved = check.exceeds(tolerance)
    if moved is not None:
        raise ConfigurationError(
            f"storing {name!r} as {weights} changed {moved} (more than {tolerance:g}) on "
            f"{check.images}; package it with precision='float32', or keep the sensitive "
            "network at float32 by naming each file's precision"
        )
    card = json.loads((staging / PIPELINE_FOLDER / METADATA_NAME).read_text("utf-8"))
    manifest: dict[str, Any] = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "name": name,
        "aliases": list(aliases),
        "summary": summary or _default_summary(card),
        "build_command": build_command,
        **({"revision": revision} if revision is not None else {}),
        "precision": (
            precision if isinstance(precision, str) else _summary_precision(copy.precisions)
        ),
        "precisions": dict(copy.precisions),
        "original_size_bytes": copy.original_bytes,
        "size_bytes": copy.shipped_bytes,
        "covidcxr_version": __version__,
        "keras_version": _keras_version(),
        "check": check.to_dict(),
        "converted": list(copy.converted),
        "left_out": list(copy.left_out),
        "files": [],
    }
    # The card gives the size of the copied files (it cannot include itself).
    _record_packaging(staging / PIPELINE_FOLDER, name, manifest)
    _write_manifest(staging, manifest)


def _summary_precision(precisions: Mapping[str, str]) -> str:
    """The manifest's one-word ``precision``: the files' one precision, or ``"mixed"``."""
    found = set(precisions.values())
    if len(found) == 1:
        return found.pop()
    return MIXED_PRECISION if found else "float32"  # a mapping and no Keras weights


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write ``shipped.json`` into a model's folder, with the SHA-256 and size of every file."""
    manifest["files"] = _digests(folder)
    manifest["size_bytes"] = sum(entry["size"] for entry in manifest["files"])
    (folder / SHIPPED_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def set_aliases(
    name: str, aliases: Sequence[str], *, root: str | os.PathLike[str] | None = None
) -> ModelInfo:
    """Give the shipped model ``name`` exactly these other names; ``()`` takes them all away.

    An alias names a role rather than one model: ``"covid-qu-ex"`` loads the recommended
    COVID-QU-Ex model. When a better one ships, the alias moves: take it from the old
    model, then give it to the new one, so that no name ever loads two models::

        set_aliases("covidqu-lungs-vgg19-64", ())
        set_aliases("covidqu-lungs-vgg19-128", ["covid-qu-ex"])

    The model's files are verified first. Its weights are not touched: the card gets a
    changelog entry and its "Shipped with covidcxr" section anew, and ``shipped.json`` the
    new names and every file's SHA-256 again. The folder is staged beside the model and
    renamed into place, as :func:`package` does.

    Parameters
    ----------
    name
        The model's own name (not one of its aliases).
    aliases
        Its other names, each free: no other model in ``root`` has it as name or alias.
    root
        Where the models live; covidcxr's own models folder by default.

    Returns
    -------
    ModelInfo
        The model's new manifest.

    Raises
    ------
    ConfigurationError
        If ``name`` is an alias or no shipped model, or an alias is malformed or names
        another model.
    ModelFormatError
        If a file of the model does not match its manifest.
    """
    base = Path(root) if root is not None else default_root()
    info = verify(name, base)
    if info.name != name:
        raise ConfigurationError(
            f"{name!r} is an alias of {info.name!r}; set the aliases of the model by its own name"
        )
    wanted = tuple(dict.fromkeys(aliases))
    for alias in wanted:
        _check_name(alias)
    _check_aliases_free(name, wanted, base)
    if wanted == info.aliases:
        return info
    target = info.path
    with _staged(target) as staging:
        shutil.copytree(target, staging, dirs_exist_ok=True)
        manifest = json.loads((staging / SHIPPED_MANIFEST).read_text(encoding="utf-8"))
        manifest["aliases"] = list(wanted)
        _record_shipping(
            staging / PIPELINE_FOLDER,
            name,
            manifest,
            event="aliases set",
            description=(
                f"also called: {', '.join(wanted)}" if wanted else "no other name than its own"
            )
            + (f" (before: {', '.join(info.aliases)})" if info.aliases else ""),
        )
        _write_manifest(staging, manifest)
    return read_model_manifest(target)


def _default_summary(card: Mapping[str, Any]) -> str:
    data = card.get("training_data") or {}
    trained = f" Trained on {data.get('source')}." if data else ""
    synthetic = " Synthetic training images." if card.get("synthetic") else ""
    return f"{card.get('task', 'A covidcxr pipeline.')}{trained}{synthetic}"
