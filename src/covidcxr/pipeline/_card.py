"""Model cards: ``metadata.json`` and ``model_card.md`` beside every saved pipeline.

Every :meth:`~covidcxr.Pipeline.save` writes, from the pipeline's manifest
(``pipeline.json``), a machine-readable ``metadata.json`` (in the spirit of a MONAI bundle's
``configs/metadata.json``: versioned format, task, data, input and output format,
figures, changelog) and a ``model_card.md`` for people. Both are part of the atomic save.

The card says what the model is for (research, never diagnosis), what it was trained on
(source, citation, fingerprint, split, class counts, whether the images were synthetic),
how its input must be prepared, how it was trained, every evaluation recorded with it
(with confidence intervals), its calibration, input gate and operating points (``not
fitted`` when absent), its limitations, and a changelog with one entry per save and per
recorded evaluation. :func:`record_evaluation` (``covidcxr evaluate MODEL SOURCE
--record``) appends an evaluation to a saved model, so external validations accumulate
with it.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from covidcxr._contracts import who
from covidcxr._version import __version__
from covidcxr.errors import ConfigurationError, ModelFormatError
from covidcxr.evaluate._evaluator import EvaluationReport
from covidcxr.evaluate._metrics import ConfidenceInterval
from covidcxr.files import MARKER_NAME, recover_output_directory, write_text
from covidcxr.labels import LABELS
from covidcxr.phantoms import is_phantom_dataset
from covidcxr.pipeline._config import _SECRET_WORDS
from covidcxr.protocols import DatasetSource, Report
from covidcxr.records import XRay
from covidcxr.sources import FolderSource

__all__ = [
    "CARD_FORMAT",
    "CARD_FORMAT_VERSION",
    "METADATA_NAME",
    "METADATA_SCHEMA",
    "MODEL_CARD_NAME",
    "card_files",
    "card_metadata",
    "evaluation_entry",
    "model_note",
    "record_evaluation",
    "render_model_card",
]

#: The machine-readable card in a saved pipeline directory.
METADATA_NAME: Final = "metadata.json"
#: The card for people in a saved pipeline directory.
MODEL_CARD_NAME: Final = "model_card.md"
#: ``metadata.json``'s ``format`` and ``format_version``: a reader checks both.
CARD_FORMAT: Final = "covidcxr-model-card"
CARD_FORMAT_VERSION: Final = 1

_MANIFEST_NAME: Final = "pipeline.json"  # as _persistence.MANIFEST_NAME (imported there)
_NOT_FITTED: Final = "not fitted"
_INTENDED_USE: Final = (
    "Research software, not a medical device: not for diagnosis, triage or any clinical "
    "decision. For research on chest X-ray classification and for teaching; every "
    "figure holds only for data like the data it was measured on."
)
_SYNTHETIC_NOTE: Final = (
    "This model was trained on synthetic phantoms (covidcxr.phantoms), not on "
    "radiographs: its outputs show that the software runs and say nothing about any "
    "real chest X-ray."
)
# Shortcut risks documented for the public COVID-19 chest X-ray collections (DeGrave et
# al. 2021, Nature Machine Intelligence; Roberts et al. 2021, Nature Machine
# Intelligence): a model can score well by recognising where an image came from.
_GENERAL_LIMITATIONS: Final = (
    "Public COVID-19 chest X-ray collections mix sources: normal images often come from "
    "paediatric collections while COVID-19 images come from adults, so a model can learn "
    "age and body size instead of disease.",
    "Text markers, annotations, arrows and hospital-specific borders, collimation and "
    "exposure differ between the classes' source hospitals and can be learnt as "
    "shortcuts.",
    "Trained and measured on one collection: figures on its own test split overstate "
    "what to expect elsewhere. External validation on data from other hospitals, "
    "scanners and populations is needed before any research conclusion.",
    "Portable (AP) and fixed (PA) projections, lateral views, children and devices "
    "(tubes, lines) are unevenly represented.",
)

_URL_USER_INFO: Final = re.compile(r"(?<=://)[^/@\s'\"]+@")
# A credential-like key (bare, or quoted as in a dict's repr: ``'api_key': ...``) and its
# whole value: a quoted string (spaces and commas included), a bracketed tuple or list, or
# a bare word.
_SECRET_VALUE: Final = re.compile(
    rf"(?i)(\b\w*(?:{'|'.join(_SECRET_WORDS)})\w*['\"]?\s*[=:]\s*)"
    r"(?:'[^']*'|\"[^\"]*\"|\([^)]*\)|\[[^\]]*\]|[^'\"\s,&)}\]]+)"
)


@runtime_checkable
class _Split(Protocol):
    """A source that reads chosen split folders of a dataset."""

    split: str | Sequence[str] | None


def _mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else an empty one (a section the manifest lacks)."""
    return value if isinstance(value, Mapping) else {}


#: What ``object.__repr__`` ends with: a memory address, not a description.
_DEFAULT_REPR: Final = re.compile(r" object at 0x[0-9a-fA-F]+>$")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _home_shortened(text: str) -> str:
    """``text`` with the user's home folder written ``~``: a card names no user account."""
    try:
        home = str(Path.home())
    except (RuntimeError, KeyError):  # no home folder known
        return text
    if len(home.strip("/\\")) == 0:
        return text
    return re.sub(re.escape(home) + r"(?=[/\\'\"\s,)]|$)", "~", text)


def _redacted(text: str) -> str:
    """``text`` without credentials or the user's home folder.

    URL user info and values of credential-like ``key=value`` (or ``'key': value``) pairs
    become ``***``; the home folder is written ``~``.
    """
    return _home_shortened(_SECRET_VALUE.sub(r"\1***", _URL_USER_INFO.sub("***@", text)))


def _describe_source(source: object) -> str:
    if isinstance(source, DatasetSource):
        text = repr(source)
        if _DEFAULT_REPR.search(text):
            # "<... object at 0x7f...>" says nothing a reader of the card could use.
            return f"a {who(source)} (it has no __repr__ naming what it reads)"
        return _redacted(text)
    if isinstance(source, Sequence):
        return f"{len(source)} radiographs given in memory"
    return _redacted(f"a {type(source).__name__}")


def _text_attribute(source: object, name: str) -> str | None:
    """``source.<name>`` when it is a non-empty string, else ``None``."""
    value = getattr(source, name, None)
    return value if isinstance(value, str) and value else None


def training_data_facts(
    source: object, prepared: Iterable[XRay], fingerprint: str
) -> dict[str, Any]:
    """What a model card says about the training data, as plain JSON data.

    ``synthetic`` is true when *any* prepared image carries ``meta["synthetic"] = True``
    (as :mod:`covidcxr.phantoms` sets it), or the source is a folder
    :func:`~covidcxr.phantoms.write_phantom_dataset` wrote: one phantom in the training
    set already makes the model's figures say nothing certain about radiographs.
    """
    counts: Counter[str] = Counter()
    n_items = 0
    synthetic = isinstance(source, FolderSource) and is_phantom_dataset(source.root)
    for xray in prepared:
        n_items += 1
        counts[str(xray.label)] += 1
        synthetic = synthetic or xray.meta.get("synthetic") is True
    order = [label for label in LABELS if label in counts]
    order += sorted(set(counts) - set(order))
    split = source.split if isinstance(source, _Split) else None
    return {
        "source": _describe_source(source),
        # Each on its own: a source that knows its citation but not its terms is cited.
        "citation": _text_attribute(source, "citation"),
        "terms": _text_attribute(source, "terms"),
        "split": [split] if isinstance(split, str) else (list(split) if split else None),
        "fingerprint": fingerprint,
        "n_items": n_items,
        "class_counts": {label: counts[label] for label in order},
        "synthetic": synthetic,
    }


def model_facts(components: Mapping[str, Any], classifier: object) -> dict[str, Any]:
    """The effective components and the classifier's input format, as plain JSON data.

    ``components`` is what the pipeline's components were built with (every parameter's
    effective value); the classifier says its input size, normalisation and the
    preprocessing its training images recorded, when it keeps them.
    """
    size = getattr(classifier, "input_size", None)
    normalization = getattr(classifier, "input_normalization", None)
    preprocessing = getattr(classifier, "preprocessing_", None)
    return {
        "components": dict(components),
        "input": {
            "size": size if isinstance(size, int) else None,
            "normalization": normalization if isinstance(normalization, str) else None,
            "preprocessing": preprocessing if isinstance(preprocessing, dict) else None,
        },
    }


def model_note(training_data: Mapping[str, Any] | None) -> str | None:
    """The notice every output of a model trained on synthetic images carries, or ``None``.

    Examples
    --------
    >>> model_note({"synthetic": True})[:40]
    'This model was trained on synthetic phan'
    >>> model_note({"synthetic": False}) is None
    True
    """
    return _SYNTHETIC_NOTE if training_data and training_data.get("synthetic") is True else None


# -- evaluations --------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) or math.isinf(value) else float(value)


def _interval(
    estimate: float, interval: ConfidenceInterval | None
) -> dict[str, float | str | None]:
    if interval is None:
        return {"estimate": _number(estimate), "low": None, "high": None, "level": None,
                "method": None}  # fmt: skip
    return {
        "estimate": _number(interval.estimate),
        "low": _number(interval.low),
        "high": _number(interval.high),
        "level": _number(interval.level),
        "method": interval.method,
    }


def evaluation_entry(
    report: EvaluationReport, *, source: str, recorded_at: str | None = None
) -> dict[str, Any]:
    """One evaluation as a model card records it: data, size and figures with intervals.

    Parameters
    ----------
    report
        What :meth:`~covidcxr.Pipeline.evaluate` returned.
    source
        What was evaluated, in words (a source's ``repr``); credentials in it (URL user
        info, ``apikey=...``) are masked.
    recorded_at
        When the entry is recorded, ISO 8601; now by default.

    Returns
    -------
    dict
        ``recorded_at``, ``evaluated_at``, ``source``, ``data_fingerprint``,
        ``covidcxr_version``, ``n_images``, ``accuracy``, ``macro_f1`` (each
        ``{estimate, low, high, level, method}``, bounds ``None`` without an interval),
        ``per_class`` (``{class: {support, recall, precision, specificity}}``), ``ece``
        and ``notes``.

    Examples
    --------
    >>> from covidcxr import ClassificationEvaluator, GroundTruth, Prediction
    >>> report = ClassificationEvaluator(n_bootstrap=0).evaluate(
    ...     [GroundTruth("a", "normal"), GroundTruth("b", "pneumonia")],
    ...     [Prediction("a", "normal", {"normal": 0.8, "pneumonia": 0.2}),
    ...      Prediction("b", "normal", {"normal": 0.6, "pneumonia": 0.4})],
    ...     classes=["normal", "pneumonia"], detections=False)
    >>> entry = evaluation_entry(report, source="two scans", recorded_at="2026-01-01")
    >>> entry["n_images"], entry["accuracy"]["estimate"], entry["accuracy"]["method"]
    (2, 0.5, 'wilson')
    """
    metrics = report.classification
    entry: dict[str, Any] = {
        "recorded_at": recorded_at or _now(),
        "evaluated_at": report.created,
        "source": _redacted(source),
        "data_fingerprint": report.data_fingerprint,
        "covidcxr_version": report.versions.get("covidcxr", __version__),
        "n_images": None,
        "accuracy": None,
        "macro_f1": None,
        "per_class": {},
        "ece": None,
        "notes": list(report.notes),
    }
    if metrics is None:
        return entry
    intervals = metrics.intervals
    entry["n_images"] = metrics.n_images
    entry["accuracy"] = _interval(metrics.accuracy, intervals.get("accuracy"))
    entry["macro_f1"] = _interval(metrics.macro.f1, intervals.get("macro_f1"))
    entry["per_class"] = {
        scores.label: {
            "support": scores.support,
            **{
                name: _interval(getattr(scores, name), intervals.get(f"{name}[{scores.label}]"))
                for name in ("recall", "precision", "specificity")
            },
        }
        for scores in metrics.per_class
    }
    entry["ece"] = _number(metrics.calibration.expected_calibration_error)
    return entry


def changelog_entry(event: str, description: str, *, date: str | None = None) -> dict[str, str]:
    """One changelog line: when, which covidcxr, what happened."""
    return {
        "date": date or _now(),
        "covidcxr_version": __version__,
        "event": event,
        "description": description,
    }


def save_entry(manifest: Mapping[str, Any]) -> dict[str, str]:
    """The changelog entry of a save of ``manifest`` (its earlier changelog is kept)."""
    # A change logged before the first save (a class mix set) is not a save.
    earlier = [e for e in manifest.get("changelog") or [] if e.get("event") == "saved"]
    trust = manifest.get("trust") or {}
    fitted = [name.replace("_", " ") for name in ("gate", "calibration", "operating_points")
              if isinstance(trust, Mapping) and trust.get(name)]  # fmt: skip
    with_trust = f"; fitted: {', '.join(fitted)}" if fitted else ""
    if earlier:
        return changelog_entry("saved", f"saved again{with_trust}")
    data = manifest.get("training_data")
    history = manifest.get("history") or {}
    epochs = max((len(v) for v in history.values() if isinstance(v, list)), default=0)
    if isinstance(data, Mapping):
        trained = f"trained on {data.get('source')} ({data.get('n_items')} images"
        trained += f", {epochs} epochs)" if epochs else ")"
        return changelog_entry("saved", f"{trained} and saved{with_trust}")
    return changelog_entry("saved", f"saved{with_trust}")


# -- metadata.json ------------------------------------------------------------------


def _training(manifest: Mapping[str, Any], classifier_options: Mapping[str, Any]) -> dict[str, Any]:
    history = manifest.get("history") or {}
    series = {k: v for k, v in history.items() if isinstance(v, list) and v}
    epochs = max((len(v) for v in series.values()), default=None)
    monitor = "val_loss" if "val_loss" in series else ("loss" if "loss" in series else None)
    best = None
    if monitor is not None:
        values = [v if _number(v) is not None else math.inf for v in series[monitor]]
        best = values.index(min(values)) + 1
    # An ensemble's history is its members' mean curve; each member kept its own weights.
    member = classifier_options.get("member")
    options = member if isinstance(member, Mapping) else classifier_options
    early = options.get("early_stopping")
    kept = None
    if epochs is not None:
        kept = "best epoch" if early is not None and monitor is not None else "last epoch"
        if isinstance(member, Mapping):
            kept = f"each member's own {kept} (the curves here are the members' mean)"
    return {
        "epochs_run": epochs,
        "best_epoch": best,
        "monitor": monitor,
        "weights_kept": kept,
        "final": {k: _number(v[-1]) for k, v in sorted(series.items())},
    }


def _component(entry: Any) -> dict[str, Any] | None:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
        return None
    options = {k: v for k, v in entry.items() if k not in ("name", "saved")}
    return {"name": entry["name"], "options": options}


def _input_format(
    model: Mapping[str, Any], classes: Sequence[str], preprocessing: Mapping[str, Any] | None
) -> dict[str, Any]:
    facts = _mapping(model.get("input"))
    size = facts.get("size")
    normalization = facts.get("normalization")
    value_range: list[float] | None = {"symmetric": [-1.0, 1.0]}.get(str(normalization))
    return {
        "inputs": {
            "image": {
                "type": "image",
                "format": "greyscale frontal chest radiograph (PNG, JPEG, WebP or DICOM)",
                "preprocessing": preprocessing,
                "num_channels": 3 if size is not None else None,
                "spatial_shape": [size, size] if size is not None else None,
                "dtype": "float32",
                "value_range": value_range,
                "normalization": normalization,
            }
        },
        "outputs": {
            "probabilities": {
                "type": "probabilities",
                "num_channels": len(classes),
                "channel_def": {str(i): name for i, name in enumerate(classes)},
            }
        },
    }


def _limitations(manifest: Mapping[str, Any], data: Mapping[str, Any] | None) -> list[str]:
    specific: list[str] = []
    if data is None:
        specific.append("The training data were not recorded (saved by an older covidcxr).")
    elif data.get("synthetic"):
        specific.append(_SYNTHETIC_NOTE)
    trust = _mapping(manifest.get("trust"))
    if not trust.get("gate"):
        specific.append(
            "No input gate: the model answers for any image, including images that are "
            "not chest radiographs."
        )
    if not trust.get("calibration"):
        specific.append("Probabilities are not calibrated: do not read them as risks.")
    evaluations = [e for e in manifest.get("evaluations") or [] if isinstance(e, Mapping)]
    if not evaluations:
        specific.append("No evaluation is recorded with this model.")
    if data is not None and any(
        e.get("data_fingerprint") == data.get("fingerprint") for e in evaluations
    ):
        specific.append("An evaluation recorded here was made on the training data itself.")
    return [*specific, *_GENERAL_LIMITATIONS]


def card_metadata(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The machine-readable model card (``metadata.json``) of a pipeline manifest.

    Parameters
    ----------
    manifest
        The content of a saved pipeline's ``pipeline.json``. Sections it lacks (a
        manifest written before model cards, a pipeline without an input gate) are
        ``None`` (rendered "not fitted" in the Markdown card).

    Returns
    -------
    dict
        JSON-ready data in the shape :data:`METADATA_SCHEMA` describes.
    """
    classes = [str(c) for c in manifest.get("classes") or []]
    data = _mapping(manifest.get("training_data")) or None
    model = _mapping(manifest.get("model"))
    components = _mapping(model.get("components"))
    # The effective options where the component reports them, else what the manifest names.
    preprocessor, classifier, detector = (
        _component(components.get(key)) or _component(manifest.get(key))
        for key in ("preprocessor", "classifier", "detector")
    )
    recorded = _mapping(model.get("input")).get("preprocessing")
    trust = _mapping(manifest.get("trust"))
    changelog = [dict(e) for e in manifest.get("changelog") or [] if isinstance(e, Mapping)]
    evaluations = [dict(e) for e in manifest.get("evaluations") or [] if isinstance(e, Mapping)]
    task = "Classify a frontal chest radiograph as " + ", ".join(classes or ["its classes"])
    if detector is not None:
        task += ", and box the lesions (opacities) in it"
    citation = data.get("citation") if data else None
    return {
        "format": CARD_FORMAT,
        "format_version": CARD_FORMAT_VERSION,
        "name": "covidcxr chest X-ray classifier",
        "covidcxr_version": str(manifest.get("covidcxr_version", __version__)),
        "created": changelog[0]["date"] if changelog else None,
        "updated": changelog[-1]["date"] if changelog else None,
        "synthetic": bool(data and data.get("synthetic")),
        "notice": model_note(data),
        "task": task + ".",
        "intended_use": _INTENDED_USE,
        "classes": classes,
        "training_data": dict(data) if data else None,
        "preprocessing": {**preprocessor, "recorded": recorded} if preprocessor else None,
        "network_data_format": _input_format(model, classes, recorded),
        "architecture": {"classifier": classifier, "detector": detector},
        "training": _training(manifest, (classifier or {}).get("options", {})),
        "evaluations": evaluations,
        "calibration": trust.get("calibration") or None,
        "gate": trust.get("gate") or None,
        "operating_points": trust.get("operating_points") or None,
        "class_priors": trust.get("priors") or None,
        "limitations": _limitations(manifest, data),
        "references": [citation] if citation else [],
        "changelog": changelog,
    }


def _nullable(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"anyOf": [{"type": "null"}, dict(schema)]}


_INTERVAL_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["estimate", "low", "high", "level", "method"],
    "properties": {
        "estimate": {"type": ["number", "null"]},
        "low": {"type": ["number", "null"]},
        "high": {"type": ["number", "null"]},
        "level": {"type": ["number", "null"]},
        "method": {"type": ["string", "null"]},
    },
}
_COMPONENT_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["name", "options"],
    "properties": {"name": {"type": "string"}, "options": {"type": "object"}},
}

#: The shape of ``metadata.json`` (format version 1), as JSON Schema (draft 2020-12).
#: Every key is always present; a section the model lacks is ``null`` (``evaluations``,
#: ``limitations``, ``references`` and ``changelog`` are lists, possibly empty). Only
#: ``class_priors`` (the deployment class mix, :meth:`covidcxr.Pipeline.set_priors`) may be
#: absent, from cards written before covidcxr recorded one.
METADATA_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "covidcxr model card metadata",
    "type": "object",
    "required": [
        "format",
        "format_version",
        "name",
        "covidcxr_version",
        "created",
        "updated",
        "synthetic",
        "notice",
        "task",
        "intended_use",
        "classes",
        "training_data",
        "preprocessing",
        "network_data_format",
        "architecture",
        "training",
        "evaluations",
        "calibration",
        "gate",
        "operating_points",
        "limitations",
        "references",
        "changelog",
    ],
    "properties": {
        "format": {"const": CARD_FORMAT},
        "format_version": {"const": CARD_FORMAT_VERSION},
        "name": {"type": "string"},
        "covidcxr_version": {"type": "string"},
        "created": {"type": ["string", "null"]},
        "updated": {"type": ["string", "null"]},
        "synthetic": {"type": "boolean"},
        "notice": {"type": ["string", "null"]},
        "task": {"type": "string"},
        "intended_use": {"type": "string"},
        "classes": {"type": "array", "items": {"type": "string"}},
        "training_data": _nullable(
            {
                "type": "object",
                "required": [
                    "source",
                    "citation",
                    "split",
                    "fingerprint",
                    "n_items",
                    "class_counts",
                    "synthetic",
                ],
                "properties": {
                    "source": {"type": "string"},
                    "citation": {"type": ["string", "null"]},
                    "terms": {"type": ["string", "null"]},
                    "split": {"type": ["array", "null"], "items": {"type": "string"}},
                    "fingerprint": {"type": ["string", "null"]},
                    "n_items": {"type": "integer", "minimum": 0},
                    "class_counts": {
                        "type": "object",
                        "additionalProperties": {"type": "integer", "minimum": 0},
                    },
                    "synthetic": {"type": "boolean"},
                },
            }
        ),
        "preprocessing": _nullable(
            {
                **_COMPONENT_SCHEMA,
                "required": ["name", "options", "recorded"],
                "properties": {
                    **_COMPONENT_SCHEMA["properties"],
                    "recorded": {"type": ["object", "null"]},
                },
            }
        ),
        "network_data_format": {
            "type": "object",
            "required": ["inputs", "outputs"],
            "properties": {
                "inputs": {"type": "object", "required": ["image"]},
                "outputs": {"type": "object", "required": ["probabilities"]},
            },
        },
        "architecture": {
            "type": "object",
            "required": ["classifier", "detector"],
            "properties": {
                "classifier": _nullable(_COMPONENT_SCHEMA),
                "detector": _nullable(_COMPONENT_SCHEMA),
            },
        },
        "training": {
            "type": "object",
            "required": ["epochs_run", "best_epoch", "monitor", "weights_kept", "final"],
            "properties": {
                "epochs_run": {"type": ["integer", "null"]},
                "best_epoch": {"type": ["integer", "null"]},
                "monitor": {"type": ["string", "null"]},
                "weights_kept": {"type": ["string", "null"]},
                "final": {"type": "object"},
            },
        },
        "evaluations": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "recorded_at",
                    "source",
                    "data_fingerprint",
                    "n_images",
                    "accuracy",
                    "macro_f1",
                    "per_class",
                    "ece",
                ],
                "properties": {
                    "recorded_at": {"type": "string"},
                    "source": {"type": "string"},
                    "data_fingerprint": {"type": ["string", "null"]},
                    "n_images": {"type": ["integer", "null"]},
                    "accuracy": _nullable(_INTERVAL_SCHEMA),
                    "macro_f1": _nullable(_INTERVAL_SCHEMA),
                    "per_class": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "required": ["support", "recall", "precision", "specificity"],
                            "properties": {
                                "support": {"type": "integer"},
                                "recall": _INTERVAL_SCHEMA,
                                "precision": _INTERVAL_SCHEMA,
                                "specificity": _INTERVAL_SCHEMA,
                            },
                        },
                    },
                    "ece": {"type": ["number", "null"]},
                },
            },
        },
        "calibration": {"type": ["object", "null"]},
        "gate": {"type": ["object", "null"]},
        "operating_points": {"type": ["object", "null"]},
        # Written since covidcxr recorded a deployment class mix; absent from older cards.
        "class_priors": {
            "type": ["object", "null"],
            "properties": {
                "training": {"type": "object"},
                "deployment": {"type": "object"},
                "source": {"type": "string"},
            },
        },
        "limitations": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "references": {"type": "array", "items": {"type": "string"}},
        "changelog": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["date", "covidcxr_version", "event", "description"],
                "properties": {
                    k: {"type": "string"}
                    for k in ("date", "covidcxr_version", "event", "description")
                },
            },
        },
    },
}


# -- model_card.md ------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    number = _number(value)
    if number is None:
        return "n/a" if value is None else str(value)
    return str(int(number)) if isinstance(value, int) else f"{number:.{digits}f}"


def _with_interval(interval: Any) -> str:
    if not isinstance(interval, Mapping):
        return "n/a"
    text = _fmt(interval.get("estimate"))
    if interval.get("low") is not None and interval.get("high") is not None:
        level = _number(interval.get("level"))
        percent = f"{level * 100:.0f} % CI " if level is not None else ""
        text += f" ({percent}{_fmt(interval['low'])} to {_fmt(interval['high'])})"
    return text


def _options(options: Mapping[str, Any]) -> str:
    if not options:
        return "defaults"
    return ", ".join(f"`{k}={json.dumps(v)}`" for k, v in sorted(options.items()))


def _short(fingerprint: Any) -> str:
    text = str(fingerprint) if fingerprint else "n/a"
    return f"`{text[:19]}…`" if len(text) > 20 else f"`{text}`"


def _data_lines(data: Mapping[str, Any] | None) -> list[str]:
    if data is None:
        return ["Not recorded (this model was saved by an older covidcxr)."]
    counts = data.get("class_counts") or {}
    lines = [
        f"- Source: {data.get('source')}",
        f"- Citation: {data.get('citation') or 'none known'}",
        f"- Terms: {data.get('terms') or 'none known: check them with whoever published the data'}",
        f"- Split: {', '.join(data['split']) if data.get('split') else 'as given'}",
        f"- Images: {data.get('n_items')}; by class: "
        + (", ".join(f"{k} {v}" for k, v in counts.items()) or "n/a"),
        f"- Fingerprint: `{data.get('fingerprint')}`",
        f"- Synthetic: {'**yes** (phantoms, not radiographs)' if data.get('synthetic') else 'no'}",
    ]
    return lines


def _input_lines(metadata: Mapping[str, Any]) -> list[str]:
    pre = metadata.get("preprocessing")
    image = metadata["network_data_format"]["inputs"]["image"]
    working = pre["options"].get("working_size") if pre else None
    if working:
        size = f"any size (enhanced with its longer side at {working} px, the training scale)"
    elif pre and pre.get("name") == "gaussian-clahe":
        size = (
            "any size, but blurred and equalised at its own: a radiograph much larger or "
            "smaller than the training ones is enhanced at another scale (set "
            "`working_size`)"
        )
    else:
        size = "any size"
    lines = [
        f"- Input: {image['format']}, {size}.",
        f"- Preprocessor: `{pre['name']}` with {_options(pre['options'])}"
        if pre
        else "- Preprocessor: none (images reach the classifier as read).",
    ]
    if pre and pre.get("name") == "gaussian-clahe":
        lines.append(_bit_depth_line(pre["options"]))
    if image.get("spatial_shape"):
        height, width = image["spatial_shape"]
        lines.append(
            f"- Network input: {height} x {width} pixels, {image['num_channels']} channels "
            "(the grey level repeated), float32."
        )
    if image.get("normalization"):
        value_range = image.get("value_range")
        shown = f", values in [{value_range[0]:g}, {value_range[1]:g}]" if value_range else ""
        lines.append(
            f"- Normalisation: `{image['normalization']}`{shown} (preprocessed pixels in "
            "[0, 1] before it)."
        )
    return lines


def _bit_depth_line(options: Mapping[str, Any]) -> str:
    low_pct, high_pct = options.get("percentile_window", (0.5, 99.5))
    window = f"its {low_pct:g}th to {high_pct:g}th percentiles"
    levels = options.get("window_levels")
    if levels and tuple(levels) != (0, 255):
        return (
            f"- 16-bit input (DICOM, 16-bit PNG): {window} mapped onto grey levels "
            f"{levels[0]} to {levels[1]}, where the 8-bit training radiographs have them; "
            "8-bit input is used as it is."
        )
    return (
        f"- 16-bit input (DICOM, 16-bit PNG): {window} mapped onto 0 to 255. A model "
        "trained on 8-bit radiographs may have learned other levels there (COVID-QU-Ex: "
        "0 to 228): measure yours with `covidcxr.preprocess.window_levels_of` and set "
        "`window_levels`."
    )


def _training_lines(metadata: Mapping[str, Any]) -> list[str]:
    architecture = metadata["architecture"]
    classifier = architecture.get("classifier")
    detector = architecture.get("detector")
    training = metadata["training"]
    lines = [
        f"- Classifier: `{classifier['name']}` with {_options(classifier['options'])}"
        if classifier
        else "- Classifier: not recorded",
        f"- Detector: `{detector['name']}` with {_options(detector['options'])}"
        if detector
        else "- Detector: none",
    ]
    if training["epochs_run"] is None:
        lines.append("- Training history: not recorded.")
        return lines
    lines.append(f"- Epochs run: {training['epochs_run']}")
    if training["best_epoch"] is not None:
        lines.append(
            f"- Best epoch (lowest `{training['monitor']}`): {training['best_epoch']}; "
            f"weights kept: {training['weights_kept']}"
        )
    final = ", ".join(f"{k} {_fmt(v)}" for k, v in training["final"].items())
    if final:
        lines.append(f"- Last epoch: {final}")
    return lines


def _metric_lines(metadata: Mapping[str, Any]) -> list[str]:
    evaluations = metadata["evaluations"]
    if not evaluations:
        return [
            "No evaluation recorded. Record one with "
            "`covidcxr evaluate MODEL SOURCE --record --report DIR`."
        ]
    training = metadata.get("training_data") or {}
    lines = [
        "| # | recorded | data | fingerprint | n | accuracy | macro F1 | ECE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for number, entry in enumerate(evaluations, start=1):
        data = str(entry.get("source", "n/a")).replace("|", "\\|")
        if training and entry.get("data_fingerprint") == training.get("fingerprint"):
            data += " (**the training data**)"
        lines.append(
            f"| {number} | {str(entry.get('recorded_at', 'n/a'))[:10]} | {data} | "
            f"{_short(entry.get('data_fingerprint'))} | {_fmt(entry.get('n_images'))} | "
            f"{_with_interval(entry.get('accuracy'))} | "
            f"{_with_interval(entry.get('macro_f1'))} | {_fmt(entry.get('ece'))} |"
        )
    for number, entry in enumerate(evaluations, start=1):
        per_class = entry.get("per_class") or {}
        if not per_class:
            continue
        lines += [
            "",
            f"Evaluation {number}, by class:",
            "",
            "| class | support | recall (sensitivity) | precision | specificity |",
            "|---|---|---|---|---|",
        ]
        for label, scores in per_class.items():
            lines.append(
                f"| {label} | {_fmt(scores.get('support'))} | "
                f"{_with_interval(scores.get('recall'))} | "
                f"{_with_interval(scores.get('precision'))} | "
                f"{_with_interval(scores.get('specificity'))} |"
            )
    return lines


def _calibration_lines(calibration: Any, classes: Any) -> list[str]:
    if not isinstance(calibration, Mapping):
        return [_NOT_FITTED.capitalize() + ": probabilities are the network's softmax."]
    biases = calibration.get("biases")
    bias_text = ""
    if isinstance(biases, list) and isinstance(classes, list) and len(classes) == len(biases):
        bias_text = "; class biases " + ", ".join(
            f"{label} {_fmt(b)}" for label, b in zip(classes, biases, strict=True)
        )
    return [
        f"- Method: {calibration.get('method', 'n/a')}; temperature "
        f"{_fmt(calibration.get('temperature'))}{bias_text}",
        f"- ECE on validation: {_fmt(calibration.get('ece_before'))} before, "
        f"{_fmt(calibration.get('ece_after'))} after",
        f"- Fitted on {_fmt(calibration.get('n_fitted'))} images",
    ]


def _gate_lines(gate: Any) -> list[str]:
    if not isinstance(gate, Mapping):
        return [_NOT_FITTED.capitalize() + ": every input is classified, whatever it shows."]
    # Measured on validation images, or on training images held out from the gate's fit.
    measured = [
        (f"- Acceptance rate on {where}: {rate:.1%}", rate)
        for key, where in (
            ("validation_acceptance", "validation"),
            ("holdout_acceptance", "held-out training images"),
        )
        if (rate := _number(gate.get(key))) is not None
    ]
    return [
        f"- Method: {gate.get('method', 'n/a')}; threshold {_fmt(gate.get('threshold'), 4)}",
        *([line for line, _ in measured] or ["- Acceptance rate: not measured"]),
        f"- Fitted on {_fmt(gate.get('n_fitted'))} images",
        _mirror_line(gate.get("mirror")),
    ]


def _mirror_line(mirror: Any) -> str:
    """The card's line on the gate's mirror check (films mirrored left to right)."""
    if not isinstance(mirror, Mapping):
        return "- Mirrored films (left to right): not checked; they pass the gate"
    if mirror.get("threshold") is None:
        return f"- Mirrored films (left to right): no check ({mirror.get('note') or 'not kept'})"
    if mirror.get("active") is False:
        return "- Mirrored films (left to right): the gate's mirror check is switched off"
    refused, accepted = (
        _number(mirror.get("holdout_mirrored_refused")),
        _number(mirror.get("holdout_accepted")),
    )
    if refused is None or accepted is None:
        return "- Mirrored films (left to right): refused by the gate's mirror check"
    return (
        f"- Mirrored films (left to right): the gate's mirror check refused {refused:.1%} of "
        f"held-out training images mirrored, and accepted {accepted:.1%} of them as they are"
    )


def _operating_point_lines(points: Any) -> list[str]:
    if not isinstance(points, Mapping):
        return [_NOT_FITTED.capitalize() + ": each image gets its most probable class."]
    thresholds = dict(points.get("thresholds") or {})
    targets = dict(points.get("targets") or {})
    validation = dict(points.get("validation") or {})
    # The same facts as a list of per-class points (OperatingPoints.to_dict()).
    for point in points.get("points") or []:
        if isinstance(point, Mapping) and "label" in point:
            label = str(point["label"])
            thresholds[label] = point.get("threshold")
            targets[label] = point.get("target_sensitivity")
            validation[label] = point
    lines = [
        "| class | threshold | target sensitivity | validation sensitivity | "
        "validation specificity |",
        "|---|---|---|---|---|",
    ]
    for label, threshold in thresholds.items():
        measured = validation.get(label) or {}
        lines.append(
            f"| {label} | {_fmt(threshold)} | {_fmt(targets.get(label))} | "
            f"{_fmt(measured.get('sensitivity'))} | {_fmt(measured.get('specificity'))} |"
        )
    abstain = points.get("abstain_below")
    lines += [
        "",
        f'Abstains ("uncertain") below a confidence of {_fmt(abstain)}.'
        if abstain is not None
        else "No abstention: every accepted image gets a class.",
    ]
    return lines


def _class_prior_lines(priors: Any) -> list[str]:
    """The deployment class mix, when one is set (nothing otherwise)."""
    if not isinstance(priors, Mapping):
        return []

    def mix(shares: Any) -> str:
        if not isinstance(shares, Mapping):
            return "not recorded"
        return ", ".join(f"{label} {_fmt(share)}" for label, share in shares.items())

    return [
        "",
        f"**Class mix:** the probabilities are moved by Bayes' rule to the class mix "
        f"{mix(priors.get('deployment'))} ({priors.get('source')}), from the training mix "
        f"{mix(priors.get('training'))}; the decision is the most probable class there, "
        "class thresholds applying at the training mix. The figures above were measured "
        "before, at the evaluation data's own mix.",
    ]


def render_model_card(metadata: Mapping[str, Any]) -> str:
    """The Markdown model card (``model_card.md``) of :func:`card_metadata`'s output."""
    lines = [f"# Model card: {metadata['name']}", ""]
    if metadata.get("notice"):
        lines += [f"**{metadata['notice']}**", ""]
    lines += [
        f"> {metadata['intended_use']}",
        "",
        "## Task and intended use",
        "",
        f"{metadata['task']} Classes, in output order: "
        + ", ".join(f"`{c}`" for c in metadata["classes"])
        + ".",
        "",
        metadata["intended_use"],
        "",
        "## Training data",
        "",
        *_data_lines(metadata.get("training_data")),
        "",
        "## Preprocessing and input format",
        "",
        *_input_lines(metadata),
        "",
        "## Architecture and training recipe",
        "",
        *_training_lines(metadata),
        "",
        "## Metrics",
        "",
        *_metric_lines(metadata),
        "",
        "## Calibration",
        "",
        *_calibration_lines(metadata.get("calibration"), metadata.get("classes")),
        "",
        "## Input gate",
        "",
        *_gate_lines(metadata.get("gate")),
        "",
        "## Operating points",
        "",
        *_operating_point_lines(metadata.get("operating_points")),
        *_class_prior_lines(metadata.get("class_priors")),
        "",
        "## Limitations",
        "",
        *(f"- {item}" for item in metadata["limitations"]),
        "",
    ]
    if metadata.get("references"):
        lines += ["## References", "", *(f"- {ref}" for ref in metadata["references"]), ""]
    lines += ["## Changelog", ""]
    lines += [
        f"- {entry['date']} (covidcxr {entry['covidcxr_version']}): {entry['event']}: "
        f"{entry['description']}"
        for entry in metadata["changelog"]
    ] or ["- (none)"]
    lines += [
        "",
        f"Generated by covidcxr {__version__} from `{_MANIFEST_NAME}`; the same facts, "
        f"machine-readable, are in `{METADATA_NAME}`.",
        "",
    ]
    return "\n".join(lines)


def _strict_json(value: Any) -> Any:
    """``value`` with every non-finite number as ``None``: ``metadata.json`` is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(v) for v in value]
    return value


def card_files(manifest: Mapping[str, Any]) -> dict[str, str]:
    """The card files of ``manifest``: ``{file name: text}`` for ``metadata.json`` and the card."""
    metadata = _strict_json(card_metadata(manifest))
    return {
        METADATA_NAME: json.dumps(metadata, indent=2, allow_nan=False) + "\n",
        MODEL_CARD_NAME: render_model_card(metadata),
    }


# -- recording an evaluation with a saved model ----------------------------------------


def _read_manifest(root: Path) -> dict[str, Any]:
    from covidcxr.pipeline._persistence import check_manifest  # noqa: PLC0415 - cycle

    # As loading does: a save killed between its renames may have left the model aside.
    recover_output_directory(root, "pipeline")
    path = root / _MANIFEST_NAME
    if not root.is_dir() or not path.is_file():
        raise ModelFormatError(
            f"{root} is not a saved covidcxr pipeline (no {_MANIFEST_NAME}); record "
            "evaluations with a folder that Pipeline.save or `covidcxr train` wrote"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{path}: unreadable: {exc}") from exc
    check_manifest(manifest, path)
    return dict(manifest)


def _register_files(root: Path, names: Iterable[str]) -> None:
    """Add ``names`` to the folder's covidcxr marker, so it stays replaceable as ours."""
    marker_path = root / MARKER_NAME
    if not marker_path.is_file():
        return
    try:
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # not ours to repair: the folder is simply not replaceable without it
    files = marker.get("files") if isinstance(marker, dict) else None
    if not isinstance(files, list) or set(names) <= set(files):
        return
    marker["files"] = sorted({*files, *names})
    write_text(marker_path, json.dumps(marker, indent=2) + "\n", overwrite=True)


def record_evaluation(model_dir: str | os.PathLike[str], report: Report, *, source: str) -> None:
    """Append an evaluation to a saved model's card, so validations accumulate with it.

    The entry (:func:`evaluation_entry`) is added to ``evaluations`` in ``pipeline.json``
    with a changelog entry, and ``metadata.json`` and ``model_card.md`` are written again
    from it. Each file is replaced atomically (written beside it and renamed), the
    manifest first: a crash in between leaves a card one evaluation behind, which the next
    save or record brings up to date. Recording the same data twice adds a second entry:
    it is a second evaluation (another covidcxr version, other settings, a deliberate
    repeat), and the card marks entries by data fingerprint so repeats show. Two records
    into the same folder at the same moment may lose one of them.

    Parameters
    ----------
    model_dir
        A folder :meth:`~covidcxr.Pipeline.save` wrote.
    report
        What :meth:`~covidcxr.Pipeline.evaluate` returned for that model.
    source
        What was evaluated, in words (a source's ``repr``); credentials are masked.

    Raises
    ------
    ModelFormatError
        If ``model_dir`` is not a saved pipeline, or its ``pipeline.json`` is damaged.
    ConfigurationError
        If ``report`` is not an :class:`~covidcxr.evaluate.EvaluationReport`.
    """
    if not isinstance(report, EvaluationReport):
        raise ConfigurationError(
            f"record_evaluation needs an EvaluationReport (what Pipeline.evaluate returns "
            f"with the default evaluator), not {type(report).__name__}"
        )
    root = Path(model_dir)
    manifest = _read_manifest(root)
    entry = evaluation_entry(report, source=source)
    accuracy = (entry["accuracy"] or {}).get("estimate")
    summary = f"evaluated on {entry['source']}: {entry['n_images']} images"
    if accuracy is not None:
        summary += f", accuracy {accuracy:.3f}"
    manifest["evaluations"] = [*(manifest.get("evaluations") or []), entry]
    manifest["changelog"] = [
        *(manifest.get("changelog") or []),
        changelog_entry("evaluation recorded", summary, date=entry["recorded_at"]),
    ]
    write_text(root / _MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n", overwrite=True)
    files = card_files(manifest)
    for name, text in files.items():
        write_text(root / name, text, overwrite=True)
    _register_files(root, files)
