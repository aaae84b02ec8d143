"""The registry of shipped models: manifests, checksums, cards, loading.

A shipped model is a folder ``<root>/<name>/`` inside the installed package (no download,
ever: many hospital networks block it). It holds ``shipped.json`` (:data:`SHIPPED_MANIFEST`)
and ``pipeline/``, a directory :meth:`~covidcxr.Pipeline.save` wrote, with its Keras
weights stored as float16 (see :func:`covidcxr.pretrained.package`). The manifest names
the model, says what it is in one line, how large it is, the exact command that rebuilds
it, and the SHA-256 and size of every file; :func:`load` checks them all before
TensorFlow reads a byte, and refuses a folder holding a file the manifest does not list.

This module imports neither TensorFlow nor the pipeline until :func:`load` needs them, so
:func:`available` and :func:`card` are quick.
"""

# ruff: noqa: PLC0415 - the pipeline (and TensorFlow behind it) is imported where needed

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from attrs import field, frozen

from covidcxr.errors import ConfigurationError, ModelFormatError

if TYPE_CHECKING:
    from covidcxr.pipeline import Pipeline

__all__ = [
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "PIPELINE_FOLDER",
    "SHIPPED_MANIFEST",
    "FileDigest",
    "ModelCard",
    "ModelInfo",
    "available",
    "card",
    "check_sentence",
    "default_root",
    "describe_precisions",
    "file_sha256",
    "format_size",
    "load",
    "load_pipeline",
    "model_info",
    "read_model_manifest",
    "verify",
]

#: The manifest of a shipped model, in its folder: name, summary, sizes, build command and
#: the SHA-256 and size of every file.
SHIPPED_MANIFEST: Final = "shipped.json"
#: The folder, beside the manifest, that holds the saved pipeline.
PIPELINE_FOLDER: Final = "pipeline"
#: ``shipped.json``'s ``format`` and ``format_version``: a reader checks both.
MODEL_FORMAT: Final = "covidcxr-shipped-model"
MODEL_FORMAT_VERSION: Final = 1

#: What a model's name may look like: lower-case letters, digits, ``.``, ``_`` and ``-``,
#: starting with a letter or digit (it is a folder name and a command-line word).
NAME_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_CHUNK: Final = 1 << 20
# How a shipped file's Keras weights may be stored; "mixed" summarises several.
_STORED_PRECISIONS: Final = ("float16", "float32")
MIXED_PRECISION: Final = "mixed"
_CARD_FILES: Final = ("metadata.json", "model_card.md")


def default_root() -> Path:
    """The folder of the models shipped with this installation of covidcxr.

    Examples
    --------
    >>> default_root().name, default_root().parent.name
    ('models', 'pretrained')
    """
    return Path(__file__).resolve().with_name("models")


def format_size(n_bytes: int) -> str:
    """A size for people: ``"512 B"``, ``"3.4 KiB"``, ``"12.0 MiB"``.

    Examples
    --------
    >>> format_size(512), format_size(3_500), format_size(12 * 2**20)
    ('512 B', '3.4 KiB', '12.0 MiB')
    """
    size = float(n_bytes)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{n_bytes} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def string_mapping(value: Mapping[str, str]) -> dict[str, str]:
    """A plain copy of a mapping of strings (an attrs converter)."""
    return dict(value)


def check_sentence(check: Mapping[str, Any], weights: str) -> str:
    """A manifest's packaging check, in one sentence (for the card and the docs).

    ``check`` is what :meth:`~covidcxr.pretrained.PrecisionCheck.to_dict` wrote and
    ``weights`` how the weights are stored, in words. A manifest written before covidcxr
    compared severity and lesions says nothing of them.
    """
    sentence = (
        f"Largest change of a class probability from storing the weights as {weights}: "
        f"{check.get('max_abs_probability_difference', float('nan')):.2e} on "
        f"{check.get('images')} ({check.get('n_compared')} scored); decisions changed: "
        f"{check.get('n_decisions_changed')}"
    )
    if check.get("max_abs_severity_difference") is not None:
        sentence += (
            f"; largest change of an infected share of a lung: "
            f"{check['max_abs_severity_difference']:.2e}"
        )
    if "n_lesion_counts_changed" in check:
        sentence += f"; lesion counts changed: {check['n_lesion_counts_changed']}"
    return sentence


def describe_precisions(precisions: Mapping[str, str]) -> str:
    """How a model's Keras weights are stored, in words, from each file's precision.

    One precision for every file is named alone; otherwise the precision of most files
    is named first, then each other one with its files.

    Examples
    --------
    >>> describe_precisions({"classifier": "float16", "gate": "float16"})
    'float16'
    >>> describe_precisions({"classifier": "float16", "gate": "float16", "lungs": "float32"})
    'float16 (float32: lungs)'
    >>> describe_precisions({})
    'no Keras weights'
    """
    by_precision: dict[str, list[str]] = {}
    for path, precision in sorted(precisions.items()):
        by_precision.setdefault(precision, []).append(path)
    if not by_precision:
        return "no Keras weights"
    first, *others = sorted(by_precision, key=lambda p: (-len(by_precision[p]), p))
    if not others:
        return first
    rest = "; ".join(f"{p}: {', '.join(by_precision[p])}" for p in others)
    return f"{first} ({rest})"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, as 64 hexadecimal digits."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@frozen
class FileDigest:
    """One file of a shipped model: its path in the model's folder, SHA-256 and size.

    Parameters
    ----------
    path
        POSIX path relative to the model's folder, e.g. ``"pipeline/classifier"``.
    sha256
        The SHA-256 of its bytes, 64 hexadecimal digits.
    size
        Its size in bytes.
    """

    path: str
    sha256: str
    size: int


@frozen
class ModelInfo:
    """What a shipped model's manifest says about it.

    Parameters
    ----------
    name
        The name :func:`load` takes, e.g. ``"covid-qu-ex"``.
    summary
        What the model is, in one line.
    size_bytes
        The bytes of its files as installed (its manifest aside).
    original_size_bytes
        The bytes of the saved pipeline it was packaged from (full precision, with
        optimizer state where it had any).
    precision
        How its Keras weights are stored: ``"float16"`` (loaded back as float32),
        ``"float32"``, or ``"mixed"`` when its files differ (see ``precisions``).
    build_command
        The exact command that rebuilds it from the shared data with covidcxr's own
        training code.
    covidcxr_version, keras_version
        The versions it was packaged with (Keras must match to major.minor to load it).
    check
        How far its predictions moved when its weights were stored at ``precision``:
        ``{"images": what they were, "n_images": ..., "n_compared": ...,
        "max_abs_probability_difference": ..., "n_decisions_changed": ...,
        "max_abs_severity_difference": ..., "n_severity_changed": ...,
        "n_lesion_counts_changed": ...}`` (see
        :class:`~covidcxr.pretrained.PrecisionCheck`; the last three are missing from
        models packaged before covidcxr compared severity and lesions).
    files
        Every file with its SHA-256 and size.
    path
        The model's folder.
    left_out
        Files of the saved pipeline's folder that its save had not written, so were not
        packaged (a ``skipped.csv``, say).
    aliases
        Other names :func:`load` takes for it: ``"covid-qu-ex"`` for the recommended model
        trained on COVID-QU-Ex, whatever its full name says about how it was built.
    precisions
        The precision of each file holding Keras weights, by its path in the saved
        pipeline (``{"classifier": "float16", "lungs": "float32"}``, say); empty for a
        model packaged before covidcxr recorded it, whose files all have ``precision``.
    revision
        The source revision of the covidcxr code that built it (a git commit), when its
        packager recorded one: with that code (on the same machine, thread count and
        library versions) a rebuild gives the same networks; with other code it may differ
        in detail, which ``covidcxr_version`` alone does not tell.
    """

    name: str
    summary: str
    size_bytes: int
    original_size_bytes: int
    precision: str
    build_command: str
    covidcxr_version: str
    keras_version: str
    check: Mapping[str, Any]
    files: tuple[FileDigest, ...]
    path: Path
    left_out: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    revision: str | None = None
    precisions: Mapping[str, str] = field(factory=dict, converter=string_mapping)

    @property
    def weights(self) -> str:
        """How the Keras weights are stored, in words: ``"float16 (float32: lungs)"``."""
        return describe_precisions(self.precisions) if self.precisions else self.precision

    @property
    def pipeline_dir(self) -> Path:
        """The saved pipeline's directory (what :meth:`~covidcxr.Pipeline.load` reads)."""
        return self.path / PIPELINE_FOLDER

    @property
    def size(self) -> str:
        """:attr:`size_bytes` for people, e.g. ``"12.0 MiB"``."""
        return format_size(self.size_bytes)

    def __str__(self) -> str:
        also = f" (also {', '.join(self.aliases)})" if self.aliases else ""
        return f"{self.name}{also}  {self.size}, {self.weights}  {self.summary}"


@frozen
class ModelCard:
    """A shipped model's card: the facts of ``metadata.json`` and the Markdown card.

    Parameters
    ----------
    info
        The model's manifest (:class:`ModelInfo`).
    metadata
        ``metadata.json`` (shape: :data:`covidcxr.pipeline.METADATA_SCHEMA`).
    text
        ``model_card.md``, ending with a section on how the model is shipped and rebuilt.
    """

    info: ModelInfo
    metadata: Mapping[str, Any] = field(repr=False)
    text: str = field(repr=False)

    def __str__(self) -> str:
        return self.text


def _require(manifest: Mapping[str, Any], key: str, kind: type, path: Path) -> Any:
    value = manifest.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ModelFormatError(
            f"{path}: field {key!r} is missing or not {kind.__name__}; the "
            "file is damaged: reinstall covidcxr (or package the model again)"
        )
    return value


def _digest(entry: Any, path: Path) -> FileDigest:
    if not (
        isinstance(entry, Mapping)
        and isinstance(entry.get("path"), str)
        and isinstance(entry.get("sha256"), str)
        and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
        and isinstance(entry.get("size"), int)
        and not isinstance(entry["size"], bool)
        and entry["size"] >= 0
    ):
        raise ModelFormatError(f"{path}: a 'files' entry is damaged: {entry!r:.80}")
    relative = Path(entry["path"])
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ModelFormatError(f"{path}: file path {entry['path']!r} leaves the model's folder")
    return FileDigest(entry["path"], entry["sha256"], entry["size"])


def read_model_manifest(folder: str | os.PathLike[str]) -> ModelInfo:
    """Read and check ``shipped.json`` of one model's folder (no checksum is computed).

    Raises
    ------
    ModelFormatError
        If the manifest is missing, unreadable, of another format or version, or damaged.
    """
    folder = Path(folder)
    path = folder / SHIPPED_MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFormatError(
            f"{folder} is not a shipped covidcxr model (no {SHIPPED_MANIFEST})"
        ) from None
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{path}: unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MODEL_FORMAT:
        raise ModelFormatError(f"{path} is not a covidcxr shipped-model manifest")
    if manifest.get("format_version") != MODEL_FORMAT_VERSION:
        raise ModelFormatError(
            f"{path} has format version {manifest.get('format_version')!r}; this covidcxr "
            f"reads version {MODEL_FORMAT_VERSION}"
        )
    name = _require(manifest, "name", str, path)
    if name != folder.name:
        raise ModelFormatError(
            f"{path} names the model {name!r}, but its folder is {folder.name!r}"
        )
    files = tuple(_digest(entry, path) for entry in _require(manifest, "files", list, path))
    aliases = manifest.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise ModelFormatError(f"{path}: field 'aliases' is not a list of names")
    left_out = manifest.get("left_out", [])
    if left_out is None:
        left_out = []
    if not isinstance(left_out, list) or not all(isinstance(item, str) for item in left_out):
        raise ModelFormatError(
            f"{path}: field 'left_out' is not a list of strings (it is {left_out!r:.60}); "
            "the file is damaged: reinstall covidcxr (or package the model again)"
        )
    check = manifest.get("check")
    revision = manifest.get("revision")
    if revision is not None and not isinstance(revision, str):
        raise ModelFormatError(f"{path}: field 'revision' is not a string")
    precisions = manifest.get("precisions", {})
    # precisions are by the file's path in the saved pipeline (pipeline/<path> here).
    listed = {entry.path.removeprefix(f"{PIPELINE_FOLDER}/") for entry in files}
    if not isinstance(precisions, dict) or not all(
        key in listed and value in _STORED_PRECISIONS for key, value in precisions.items()
    ):
        raise ModelFormatError(
            f"{path}: field 'precisions' is not a mapping of listed files to "
            f"{' or '.join(_STORED_PRECISIONS)}"
        )
    precision = _require(manifest, "precision", str, path)
    if precision not in (*_STORED_PRECISIONS, MIXED_PRECISION):
        raise ModelFormatError(f"{path}: field 'precision' is {precision!r}, not a precision")
    return ModelInfo(
        name=name,
        summary=_require(manifest, "summary", str, path),
        size_bytes=_require(manifest, "size_bytes", int, path),
        original_size_bytes=_require(manifest, "original_size_bytes", int, path),
        precision=precision,
        build_command=_require(manifest, "build_command", str, path),
        covidcxr_version=_require(manifest, "covidcxr_version", str, path),
        keras_version=_require(manifest, "keras_version", str, path),
        check=dict(check) if isinstance(check, Mapping) else {},
        files=files,
        path=folder,
        left_out=tuple(left_out),
        aliases=tuple(aliases),
        revision=revision,
        precisions=precisions,
    )


def _root(root: str | os.PathLike[str] | None) -> Path:
    return default_root() if root is None else Path(root)


def available(root: str | os.PathLike[str] | None = None) -> dict[str, ModelInfo]:
    """The shipped models, by name: one-line summary, size and precision of each.

    Reads the manifests only: no checksum is computed and TensorFlow is not imported.

    Parameters
    ----------
    root
        The folder of model folders; the models shipped with covidcxr by default (tests
        and packagers pass their own).

    Returns
    -------
    dict[str, ModelInfo]
        Sorted by name; empty when no model is shipped.

    Raises
    ------
    ModelFormatError
        If a model's manifest is missing or damaged (reinstall covidcxr).

    Examples
    --------
    >>> import tempfile
    >>> available(root=tempfile.mkdtemp())
    {}
    >>> for info in available().values():  # the models of this installation
    ...     print(info.name, info.size, info.summary)  # doctest: +SKIP
    """
    base = _root(root)
    if not base.is_dir():
        return {}
    # Hidden folders are a packaging run's staging, never a model.
    folders = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    return {folder.name: read_model_manifest(folder) for folder in folders}


def _known(models: Mapping[str, ModelInfo]) -> str:
    if not models:
        return "no model is shipped with this installation of covidcxr"
    return "shipped models: " + ", ".join(
        f"{name} (also {', '.join(info.aliases)})" if info.aliases else name
        for name, info in models.items()
    )


def _find(name: str, models: Mapping[str, ModelInfo]) -> ModelInfo | None:
    """The model called ``name``, by its own name first, then by an alias."""
    if name in models:
        return models[name]
    return next((info for info in models.values() if name in info.aliases), None)


def model_info(name: str, root: str | os.PathLike[str] | None = None) -> ModelInfo:
    """The manifest of the shipped model ``name`` (its own name or an alias).

    Raises
    ------
    ConfigurationError
        If no model of that name is shipped; the message lists those that are.
    """
    models = available(root)
    info = _find(name, models)
    if info is None:
        raise ConfigurationError(
            f"unknown model {name!r}: {_known(models)} (covidcxr.pretrained.available(), "
            "`python -m covidcxr.pretrained list`)"
        )
    return info


def _unlisted(folder: Path, listed: set[str]) -> list[str]:
    """What is in ``folder`` besides the listed files and the folders that hold them.

    Symbolic links (to files or folders) and folders holding no listed file count too:
    a packaged model has neither.
    """
    holding = {parent.as_posix() for path in listed for parent in Path(path).parents}
    found = []
    for directory, folders, names in os.walk(folder):
        for name in (*folders, *names):
            path = Path(directory) / name
            relative = path.relative_to(folder).as_posix()
            if relative == SHIPPED_MANIFEST:
                continue
            if path.is_symlink() or (
                relative not in listed if name in names else relative not in holding
            ):
                found.append(relative)
    return sorted(found)


def verify(name: str, root: str | os.PathLike[str] | None = None) -> ModelInfo:
    """Check every file of a shipped model against its manifest's size and SHA-256.

    Parameters
    ----------
    name
        A name :func:`available` lists, or one of its aliases.
    root
        As for :func:`available`.

    Returns
    -------
    ModelInfo
        The model's manifest, once every file matched.

    Raises
    ------
    ConfigurationError
        If no model of that name is shipped.
    ModelFormatError
        Naming the first file that is missing, of the wrong size or SHA-256, or present
        without being listed: the installation is damaged or was changed.
    """
    info = model_info(name, root)
    for entry in info.files:
        _check_file(info, entry)
    extra = _unlisted(info.path, {entry.path for entry in info.files})
    if extra:
        raise ModelFormatError(
            f"{info.path / extra[0]}: not listed in {SHIPPED_MANIFEST} of the shipped model "
            f"{info.name!r} ({len(extra)} such file(s)); refusing to load a model that was "
            "changed after packaging: reinstall covidcxr"
        )
    return info


def _check_file(info: ModelInfo, entry: FileDigest) -> None:
    path = info.path / entry.path
    advice = "the installation is damaged or was changed: reinstall covidcxr"
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ModelFormatError(
            f"{path}: missing from the shipped model {info.name!r}; {advice}"
        ) from None
    if not path.is_file() or path.is_symlink():
        raise ModelFormatError(
            f"{path}: not a plain file, but the shipped model {info.name!r} lists it as one; "
            f"{advice}"
        )
    if size != entry.size:
        raise ModelFormatError(
            f"{path}: {size} bytes, but the manifest of {info.name!r} says {entry.size}; {advice}"
        )
    actual = file_sha256(path)
    if actual != entry.sha256:
        raise ModelFormatError(
            f"{path}: SHA-256 {actual}, but the manifest of {info.name!r} says "
            f"{entry.sha256}; {advice}"
        )


def load(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    detector_options: Mapping[str, Any] | None = None,
    progress: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int = 0,
    runtime: str | None = None,
) -> Pipeline:
    """A shipped model, ready to predict: its files verified, then :meth:`Pipeline.load`.

    Parameters
    ----------
    name
        A name :func:`available` lists or one of its aliases, e.g. ``"covid-qu-ex"``.
    root
        As for :func:`available`.
    detector_options, progress, cache_dir, workers, runtime
        As for :meth:`~covidcxr.Pipeline.load`.

    Returns
    -------
    Pipeline
        The fitted pipeline, with every stage it was saved with (preprocessor, classifier,
        detector, input gate, calibration, operating points).

    Raises
    ------
    ConfigurationError
        If no model of that name is shipped; the message lists those that are.
    ModelFormatError
        If a file does not match the manifest (see :func:`verify`), or the pipeline cannot
        be loaded (another Keras major.minor version, say).

    Examples
    --------
    >>> load("no-such-model")
    Traceback (most recent call last):
    ...
    covidcxr.errors.ConfigurationError: unknown model 'no-such-model': ...
    >>> pipeline = load("covid-qu-ex")  # doctest: +SKIP
    >>> pipeline.predict("my-scans/")  # doctest: +SKIP
    """
    from covidcxr.pipeline import Pipeline

    info = verify(name, root)
    return Pipeline.load(
        info.pipeline_dir,
        detector_options=detector_options,
        progress=progress,
        cache_dir=cache_dir,
        workers=workers,
        runtime=runtime,
    )


def load_pipeline(model: str | os.PathLike[str], **kwargs: Any) -> Pipeline:
    """A saved pipeline directory, or a shipped model by name: the directory wins.

    What the command line does with its ``MODEL`` argument: ``covidcxr predict
    covid-qu-ex scans/`` loads the shipped model unless a folder ``covid-qu-ex`` exists.

    Parameters
    ----------
    model
        A directory :meth:`~covidcxr.Pipeline.save` wrote, or a name :func:`available`
        lists.
    **kwargs
        Passed to :meth:`~covidcxr.Pipeline.load`.

    Raises
    ------
    ConfigurationError
        If ``model`` is neither a directory nor a shipped model's name; the message lists
        the shipped models.
    ModelFormatError
        As for :func:`load` and :meth:`~covidcxr.Pipeline.load`.
    """
    from covidcxr.pipeline import Pipeline

    if Path(model).is_dir():
        return Pipeline.load(model, **kwargs)
    text = os.fspath(model)
    models = available()
    if _find(text, models) is not None:
        return load(text, **kwargs)
    raise ConfigurationError(
        f"{text!r} is neither a saved model directory nor the name of a shipped model; "
        f"{_known(models)}"
    )


def _read_card_file(info: ModelInfo, name: str) -> str:
    relative = f"{PIPELINE_FOLDER}/{name}"
    entry = next((e for e in info.files if e.path == relative), None)
    if entry is None:
        raise ModelFormatError(f"{info.path / SHIPPED_MANIFEST}: lists no {relative}")
    _check_file(info, entry)
    return (info.path / relative).read_text(encoding="utf-8")


def card(name: str, root: str | os.PathLike[str] | None = None) -> ModelCard:
    """A shipped model's card: ``metadata.json`` and ``model_card.md``, checksums verified.

    Parameters
    ----------
    name
        A name :func:`available` lists, or one of its aliases.
    root
        As for :func:`available`.

    Raises
    ------
    ConfigurationError
        If no model of that name is shipped.
    ModelFormatError
        If a card file is missing, does not match the manifest, or is not JSON.
    """
    info = model_info(name, root)
    metadata_text, text = (_read_card_file(info, file_name) for file_name in _CARD_FILES)
    try:
        metadata = json.loads(metadata_text)
    except ValueError as exc:
        raise ModelFormatError(f"{info.pipeline_dir / _CARD_FILES[0]}: unreadable: {exc}") from exc
    return ModelCard(info, metadata, text)
