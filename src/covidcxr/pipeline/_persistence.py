"""Writing a fitted pipeline to a directory and reading it back.

A saved pipeline is a directory holding ``pipeline.json`` (component names, options,
classes, training history and fingerprint, training data, recorded evaluations,
changelog, versions), the classifier's own saved model, for a
:class:`~covidcxr.protocols.Persistable` detector the detector's, and the model card made
from the manifest (``metadata.json`` and ``model_card.md``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from covidcxr._version import __version__
from covidcxr.errors import ConfigurationError, ModelFormatError, UnknownNameError
from covidcxr.files import output_directory, recover_output_directory, write_text
from covidcxr.gate import ChestXrayGate
from covidcxr.lungs import LungCrop, LungSegmenter
from covidcxr.pipeline._card import card_files, save_entry
from covidcxr.plugins import (
    ALLOW_LIST_ENV,
    available_classifiers,
    available_detectors,
    create_detector,
)
from covidcxr.protocols import Classifier, InputGate, LesionDetector, Persistable

__all__ = [
    "GATE_NAME",
    "LUNGS_NAME",
    "MANIFEST_NAME",
    "SavedPipeline",
    "check_manifest",
    "read_pipeline",
    "write_pipeline",
]

#: The file in a saved pipeline directory that says what it holds.
MANIFEST_NAME: Final = "pipeline.json"
_FORMAT: Final = "covidcxr-pipeline"
_FORMAT_VERSION: Final = 1
#: The saved input gate, beside the classifier.
GATE_NAME: Final = "gate"
#: The saved lung segmenter of a pipeline with a lung stage.
LUNGS_NAME: Final = "lungs"


def write_pipeline(
    target: Path,
    *,
    manifest: dict[str, Any],
    classifier: Classifier,
    detector: LesionDetector | None,
    detector_entry: dict[str, Any] | None,
    gate: InputGate | None = None,
    lungs: LungSegmenter | None = None,
    overwrite: bool,
) -> Path:
    """Write a fitted pipeline to ``target`` through a staging directory and a rename.

    ``target`` is replaced only when ``overwrite`` is given and covidcxr saved a pipeline
    there (see :func:`covidcxr.files.check_output_directory`).

    ``manifest`` is completed with the format, versions and the detector entry; a
    :class:`~covidcxr.protocols.Persistable` detector saves its model (``saved: true``),
    any other is recorded by ``detector_entry`` (name and options) only. A gate is saved
    as ``gate`` (its class is recorded in ``manifest["trust"]["gate"]``).
    """
    manifest = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "covidcxr_version": __version__,
        **manifest,
        "detector": None,
    }
    # Staged beside the target and renamed into place; only a pipeline covidcxr saved
    # (never a folder holding the user's files) is replaced.
    with output_directory(target, "pipeline", overwrite=overwrite) as staging:
        classifier.save(staging / "classifier")
        saved_gate: object = gate  # any InputGate; saved if it is Persistable
        if isinstance(saved_gate, Persistable):
            saved_gate.save(staging / GATE_NAME)
        if lungs is not None:
            lungs.save(staging / LUNGS_NAME)
        if detector is not None and detector_entry is not None:
            if isinstance(detector, Persistable):
                detector.save(staging / "detector")
                manifest["detector"] = {"name": detector_entry["name"], "saved": True}
            else:
                manifest["detector"] = {**detector_entry, "saved": False}
        manifest["changelog"] = [*(manifest.get("changelog") or []), save_entry(manifest)]
        write_text(staging / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n", overwrite=False)
        # The model card travels with the model: part of the same atomic save.
        for name, text in card_files(manifest).items():
            write_text(staging / name, text, overwrite=False)
    return target


def _is_component(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("name"), str) and bool(value["name"])


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _is_object(value: Any) -> bool:
    return isinstance(value, dict)


def _is_list_of_objects(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


# The shape of every manifest field that loading reads: a damaged or hand-edited
# pipeline.json fails naming the file and field, not with a TypeError deep in load().
_MANIFEST_SHAPES: Final[dict[str, tuple[str, Callable[[Any], bool]]]] = {
    "classifier": ("an object with a 'name'", _is_component),
    "detector": ("null or an object with a 'name'", _optional(_is_component)),
    "preprocessor": ("null or an object with a 'name'", _optional(_is_component)),
    "evaluation": ("an object", _is_object),
    "history": ("null or an object", _optional(_is_object)),
    "trust": ("null or an object", _optional(_is_object)),
    "training_data_fingerprint": (
        "null or a string",
        _optional(lambda value: isinstance(value, str)),
    ),
    "classes": (
        "a list of strings",
        lambda value: isinstance(value, list) and all(isinstance(c, str) for c in value),
    ),
    "training_data": ("null or an object", _optional(_is_object)),
    "model": ("null or an object", _optional(_is_object)),
    "plugins": ("an object", _is_object),
    "evaluations": ("a list of objects", _is_list_of_objects),
    "changelog": ("a list of objects", _is_list_of_objects),
    "export": ("null or an object", _optional(_is_object)),
}

# Fields inside those objects that loading reads: (object, field) -> shape.
_NESTED_SHAPES: Final[dict[tuple[str, str], tuple[str, Callable[[Any], bool]]]] = {
    ("trust", "gate"): ("null or an object", _optional(_is_object)),
}


def check_manifest(manifest: Any, manifest_path: Path) -> None:
    """Refuse a ``pipeline.json`` of another format or version, or of a damaged shape.

    Raises
    ------
    ModelFormatError
        Naming the file and what is wrong with it.
    """
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise ModelFormatError(f"{manifest_path} is not a covidcxr pipeline manifest")
    if manifest.get("format_version") != _FORMAT_VERSION:
        raise ModelFormatError(
            f"{manifest_path} has format version {manifest.get('format_version')!r}; this "
            f"covidcxr ({__version__}) reads version {_FORMAT_VERSION}"
        )
    _check_manifest_shape(manifest, manifest_path)


def _check_manifest_shape(manifest: dict[str, Any], manifest_path: Path) -> None:
    if "classifier" not in manifest:
        raise ModelFormatError(f"{manifest_path}: field 'classifier' is missing")
    for field, (expected, matches) in _MANIFEST_SHAPES.items():
        if field in manifest and not matches(manifest[field]):
            raise ModelFormatError(
                f"{manifest_path}: field {field!r} should be {expected}, not "
                f"{type(manifest[field]).__name__} {manifest[field]!r:.60}; the file is "
                "damaged or was edited by hand: save the pipeline again"
            )
    for (outer, field), (expected, matches) in _NESTED_SHAPES.items():
        container = manifest.get(outer)
        if isinstance(container, dict) and field in container and not matches(container[field]):
            value = container[field]
            raise ModelFormatError(
                f"{manifest_path}: field '{outer}.{field}' should be {expected}, not "
                f"{type(value).__name__} {value!r:.60}; the file is damaged or was edited by "
                "hand: save the pipeline again"
            )


class SavedPipeline:
    """What :func:`read_pipeline` found: the manifest and the loaded components."""

    def __init__(
        self,
        manifest: Mapping[str, Any],
        classifier: Classifier,
        detector: LesionDetector | None,
        gate: InputGate | None = None,
        *,
        lungs: LungSegmenter | None = None,
        lung_options: dict[str, Any] | None = None,
    ) -> None:
        self.manifest = manifest
        self.classifier = classifier
        self.detector = detector
        self.gate = gate
        self.lungs = lungs
        self.lung_options = lung_options


def read_pipeline(
    directory: str | os.PathLike[str], detector_options: Mapping[str, Any]
) -> SavedPipeline:
    """Read the manifest of a saved pipeline and load its classifier and detector.

    A pipeline a killed save had moved aside is put back first, and what killed saves
    left beside the directory is removed (:func:`covidcxr.files.recover_output_directory`).

    Raises
    ------
    ModelFormatError
        If the directory is not a saved pipeline, was written by an incompatible version,
        or names a component that is not available.
    """
    root = Path(directory)
    # A save killed between its two renames may have left the previous pipeline beside
    # the path, not at it: put it back (and remove what killed saves left) first.
    recover_output_directory(root, "pipeline")
    manifest_path = root / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFormatError(
            f"{root} is not a saved covidcxr pipeline (no {MANIFEST_NAME})"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{manifest_path}: unreadable: {exc}") from exc
    check_manifest(manifest, manifest_path)
    try:
        classifier_name = manifest["classifier"]["name"]
        classifier_factory: object = available_classifiers()[classifier_name].factory
    except (KeyError, TypeError) as exc:
        raise ModelFormatError(
            f"{manifest_path}: classifier {exc} is not available"
            f"{_install_hint(manifest, 'classifier')}"
        ) from exc
    if not isinstance(classifier_factory, Persistable):
        raise ModelFormatError(
            f"{manifest_path}: classifier {classifier_name!r} is registered with a factory "
            "that has no load(); register the class itself"
        )
    classifier: object = classifier_factory.load(root / "classifier")
    if not isinstance(classifier, Classifier):
        raise ModelFormatError(
            f"{manifest_path}: {classifier_name!r}.load() did not return a fitted classifier"
        )
    detector_entry = manifest.get("detector")
    try:
        detector = (
            _load_detector(manifest_path, detector_entry, detector_options)
            if detector_entry is not None
            else None
        )
    except UnknownNameError as exc:
        raise UnknownNameError(f"{exc}{_install_hint(manifest, 'detector')}") from exc
    gate_entry = (manifest.get("trust") or {}).get("gate")
    gate = _load_gate(manifest_path, gate_entry) if gate_entry else None
    lungs, lung_options = _load_lungs(manifest_path, manifest.get("lungs"))
    return SavedPipeline(
        manifest, classifier, detector, gate, lungs=lungs, lung_options=lung_options
    )


def _install_hint(manifest: Mapping[str, Any], kind: str) -> str:
    """``"; it was saved with ... : pip install 'dist==1.0'"``, where the manifest says."""
    origin = (manifest.get("plugins") or {}).get(kind)
    if not isinstance(origin, Mapping) or not isinstance(origin.get("distribution"), str):
        return ""
    pinned = f"{origin['distribution']}=={origin.get('version', '')}".rstrip("=")
    return (
        f"; it was saved with the {kind} {origin.get('name')!r} of the plugin distribution "
        f"{origin['distribution']!r} {origin.get('version', '')}: pip install '{pinned}'"
        f" (and check that {ALLOW_LIST_ENV} allows it)"
    )


def _load_lungs(
    manifest_path: Path, entry: Any
) -> tuple[LungSegmenter | None, dict[str, Any] | None]:
    """The saved lung segmenter and the lung stage's options (``None``, ``None`` if none)."""
    if entry is None:
        return None, None
    if not isinstance(entry, Mapping) or entry.get("saved") != LUNGS_NAME:
        raise ModelFormatError(
            f"{manifest_path}: the 'lungs' entry is damaged ({entry!r:.80}); save the "
            "pipeline again"
        )
    options = {key: value for key, value in entry.items() if key != "saved"}
    try:
        LungCrop(LungSegmenter(), **options)
    except (TypeError, ConfigurationError) as exc:
        raise ModelFormatError(f"{manifest_path}: the lung stage's options: {exc}") from exc
    return LungSegmenter.load(manifest_path.parent / LUNGS_NAME), options


def _load_gate(manifest_path: Path, entry: Mapping[str, Any]) -> InputGate:
    """Load the saved gate with the class the manifest names (only covidcxr's own)."""
    name = entry.get("class")
    expected = f"{ChestXrayGate.__module__}.{ChestXrayGate.__qualname__}"
    if name != expected:
        raise ModelFormatError(
            f"{manifest_path}: the input gate is a {name!r}, which this covidcxr cannot "
            f"load (it loads {expected}); build the pipeline with gate=... yourself"
        )
    return ChestXrayGate.load(manifest_path.parent / GATE_NAME)


def _load_detector(
    manifest_path: Path, entry: Mapping[str, Any], detector_options: Mapping[str, Any]
) -> LesionDetector:
    """Rebuild the detector a manifest names: from its saved model, or by name and options.

    Raises
    ------
    ConfigurationError
        If ``detector_options`` sets ``model`` for a saved detector (the pipeline's own
        saved model is the detector), or an option the detector refuses (a saved local
        detector's network parameters, which its weights fix).
    """
    name = entry["name"]
    if not entry.get("saved"):
        options = {k: v for k, v in entry.items() if k not in ("name", "saved")}
        return create_detector(name, **{**options, **detector_options})
    registry = available_detectors()
    if name not in registry:
        raise UnknownNameError(
            f"{manifest_path}: detector {name!r} is not registered; install the plugin that "
            "provides it"
        )
    saved = manifest_path.parent / "detector"
    if "model" in detector_options:
        raise ConfigurationError(
            f"detector_options cannot set 'model': the detector of {manifest_path.parent} "
            "is its own saved model; give options of that detector (a local detector's "
            "mask_threshold, min_area_fraction, label) or build a pipeline with another"
        )
    factory: object = registry[name].factory
    if isinstance(factory, type) and isinstance(factory, Persistable):
        loaded: object = factory.load(saved)
        if not isinstance(loaded, LesionDetector):
            raise ModelFormatError(f"{manifest_path}: {name!r}.load() did not return a detector")
        return loaded
    # Detectors registered through a factory function load a saved model from the
    # ``model=path`` option (the built-in convention).
    return create_detector(name, model=str(saved), **detector_options)
