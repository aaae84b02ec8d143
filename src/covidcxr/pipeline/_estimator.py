"""The end-to-end job: source → preprocessor → classifier → detector → evaluator.

A :class:`Pipeline` names its components (looked up in the plugin registry, so a plugin's
detector or classifier is used exactly like a built-in one) or takes them as objects, and
is configured from Python or from a TOML file::

    # pipeline.toml
    [preprocessor]
    name = "gaussian-clahe"
    output_size = 128

    [classifier]
    name = "vgg19"
    input_size = 128
    weights = "none"        # TOML has no null; "none" means None for any option
    epochs = 20

    [detector]              # leave the table out, or name = "none", for no detector
    name = "local"

    [evaluation]
    n_bootstrap = 1000
    seed = 0

Every key of a component's table other than ``name`` is passed to its factory. The
preprocessor runs on every image before the classifier and the detector see it, in
training and in prediction alike, so a model always sees images prepared the same way.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Self, TypeVar

import attrs
import numpy as np
from attrs import field, frozen
from numpy.typing import NDArray

from covidcxr._version import __version__
from covidcxr.errors import ConfigurationError, ModelFormatError, OutputExistsError
from covidcxr.evaluate.evaluator import (
    ClassificationEvaluator,
    EvaluationReport,
)
from covidcxr.evaluate.provenance import DataFingerprint, data_fingerprint
from covidcxr.evaluate.report import ReportFiles, write_report
from covidcxr.files import write_text
from covidcxr.labels import LABELS
from covidcxr.plugins import (
    Registration,
    available_classifiers,
    available_detectors,
    available_preprocessors,
    create_classifier,
    create_detector,
    create_preprocessor,
    open_source,
)
from covidcxr.protocols import Classifier, Evaluator, LesionDetector, Preprocessor, Report
from covidcxr.records import Box, Detection, XRay, detection_to_dict

__all__ = [
    "MANIFEST_NAME",
    "ComponentSpec",
    "Pipeline",
    "PipelineConfig",
    "Prediction",
]

#: The file in a saved pipeline directory that says what it holds.
MANIFEST_NAME: Final = "pipeline.json"
_FORMAT: Final = "covidcxr-pipeline"
_FORMAT_VERSION: Final = 1
_NONE: Final = "none"
# Options that look like secrets are never written into a saved pipeline.
_SECRET_WORDS: Final = ("apikey", "api_key", "password", "secret", "token", "credential", "auth")
_COMPONENT_KEYS: Final = ("preprocessor", "classifier", "detector")
_CONFIG_KEYS: Final = frozenset({*_COMPONENT_KEYS, "evaluation"})
_EVALUATION_KEYS: Final = frozenset({"n_bootstrap", "confidence_level", "n_bins", "seed"})

_T = TypeVar("_T")
SourceLike = Any  # a DatasetSource, a URI or path, or any iterable of XRay records


def _none_strings(value: Any) -> Any:
    # TOML has no null: the string "none" stands for None in option values.
    return None if isinstance(value, str) and value.lower() == _NONE else value


def _frozen_options(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return dict(value)


@frozen
class ComponentSpec:
    """A component chosen by its registered name, with the options for its factory.

    Examples
    --------
    >>> ComponentSpec.parse({"name": "vgg19", "epochs": 3, "weights": "none"}, "classifier")
    ComponentSpec(name='vgg19', options={'epochs': 3, 'weights': None})
    """

    name: str
    options: Mapping[str, Any] = field(factory=dict, converter=_frozen_options)

    @classmethod
    def parse(cls, table: Mapping[str, Any], where: str) -> Self:
        """Read ``{"name": ..., **options}``; ``where`` names the table in errors."""
        if not isinstance(table, Mapping):
            raise ConfigurationError(f"[{where}] must be a table, got {type(table).__name__}")
        name = table.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"[{where}] needs a 'name' (a registered {where} name)")
        options = {k: _none_strings(v) for k, v in table.items() if k != "name"}
        return cls(name, options)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a table: ``{"name": ..., **options}``."""
        return {"name": self.name, **self.options}


@frozen
class PipelineConfig:
    """What a :class:`Pipeline` is made of, as plain data (from TOML, JSON or Python).

    Parameters
    ----------
    preprocessor
        ``None`` for no preprocessing.
    classifier
        Required.
    detector
        ``None`` for classification only.
    evaluation
        Options of :class:`~covidcxr.evaluate.ClassificationEvaluator`: ``n_bootstrap``,
        ``confidence_level``, ``n_bins``, ``seed``.

    Examples
    --------
    >>> config = PipelineConfig.from_dict({
    ...     "classifier": {"name": "vgg19", "epochs": 2},
    ...     "detector": {"name": "none"},
    ... })
    >>> config.preprocessor.name, config.classifier.options, config.detector
    ('gaussian-clahe', {'epochs': 2}, None)
    """

    preprocessor: ComponentSpec | None = ComponentSpec("gaussian-clahe")
    classifier: ComponentSpec = ComponentSpec("vgg19")
    detector: ComponentSpec | None = ComponentSpec("local")
    evaluation: Mapping[str, Any] = field(factory=dict, converter=_frozen_options)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Read a configuration; missing tables keep their defaults.

        Raises
        ------
        ConfigurationError
            For an unknown table or evaluation option, or a table without ``name``.
        """
        unknown = sorted(set(data) - _CONFIG_KEYS)
        if unknown:
            raise ConfigurationError(
                f"unknown configuration table(s) {unknown}; expected {sorted(_CONFIG_KEYS)}"
            )
        defaults = cls()
        specs: dict[str, ComponentSpec | None] = {}
        for key in _COMPONENT_KEYS:
            if key not in data:
                specs[key] = getattr(defaults, key)
                continue
            table = data[key]
            if table is None or (isinstance(table, Mapping) and table.get("name") == _NONE):
                if key == "classifier":
                    raise ConfigurationError("[classifier] cannot be 'none': a pipeline classifies")
                specs[key] = None
            else:
                specs[key] = ComponentSpec.parse(table, key)
        evaluation = dict(data.get("evaluation", {}))
        bad = sorted(set(evaluation) - _EVALUATION_KEYS)
        if bad:
            raise ConfigurationError(
                f"unknown [evaluation] option(s) {bad}; expected {sorted(_EVALUATION_KEYS)}"
            )
        classifier = specs["classifier"]
        if classifier is None:  # pragma: no cover - refused above
            raise ConfigurationError("[classifier] is required")
        return cls(specs["preprocessor"], classifier, specs["detector"], evaluation)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> Self:
        """Read a TOML configuration file.

        Raises
        ------
        ConfigurationError
            If the file cannot be read or parsed, naming the file.
        """
        try:
            with Path(path).open("rb") as handle:
                data = tomllib.load(handle)
        except OSError as exc:
            raise ConfigurationError(f"{path}: cannot read the configuration: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{path}: invalid TOML: {exc}") from exc
        try:
            return cls.from_dict(data)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain data (``None`` for absent components)."""
        return {
            "preprocessor": self.preprocessor.to_dict() if self.preprocessor else None,
            "classifier": self.classifier.to_dict(),
            "detector": self.detector.to_dict() if self.detector else None,
            "evaluation": dict(self.evaluation),
        }


@frozen
class Prediction:
    """What the pipeline says about one radiograph.

    Parameters
    ----------
    id
        The radiograph's id.
    label
        The most probable class.
    probabilities
        Every class's probability, in the classifier's class order.
    detections
        Lesions found, in the pixel coordinates of the radiograph as read from the source
        (mapped back through the preprocessor's resizing).
    """

    id: str
    label: str
    probabilities: Mapping[str, float]
    detections: tuple[Detection, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {
            "id": self.id,
            "label": self.label,
            "probabilities": dict(self.probabilities),
            "detections": [detection_to_dict(d) for d in self.detections],
        }


class _Preprocessed:
    """A re-iterable, lazy view of a source with the preprocessor applied to each image."""

    def __init__(self, source: Iterable[XRay], preprocessor: Preprocessor | None) -> None:
        self._source = source
        self._preprocessor = preprocessor

    @property
    def classes(self) -> tuple[str, ...]:
        classes = getattr(self._source, "classes", None)
        if classes is not None:
            return tuple(classes)
        present = {x.label for x in self._source}
        return tuple(label for label in LABELS if label in present)

    def __len__(self) -> int:
        return len(self._source)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[XRay]:
        if self._preprocessor is None:
            yield from self._source
            return
        for xray in self._source:
            yield self._preprocessor(xray)


_SHOWN_LOGS: Final = frozenset({"loss", "accuracy", "val_loss", "val_accuracy"})
# Images handed to a detector's detect_batch at once: amortises a network call without
# holding more than this many preprocessed images.
_DETECTION_CHUNK: Final = 32


def _accepts(factory: Callable[..., Any], parameter: str) -> bool:
    try:
        return parameter in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins and some C extensions have no signature
        return False


def _as_source(source: SourceLike, what: str) -> Iterable[XRay]:
    if isinstance(source, str | os.PathLike):
        return open_source(source)
    if isinstance(source, Iterator):
        # A generator would be exhausted after the first pass; training needs several.
        return list(source)
    if not isinstance(source, Iterable):
        raise ConfigurationError(
            f"{what} must be a dataset source, a path or URI, or radiographs; got "
            f"{type(source).__name__}"
        )
    return source


def _count(source: Iterable[XRay]) -> int | None:
    try:
        return len(source)  # type: ignore[arg-type]
    except TypeError:
        return None


def _progress(
    iterable: Iterable[_T], *, total: int | None, desc: str, enabled: bool
) -> Iterable[_T]:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm  # noqa: PLC0415 - only when a progress bar is asked for

    bar: Iterable[_T] = tqdm(iterable, total=total, desc=desc, unit="img", leave=False)
    return bar


def _registered_name(obj: object, registry: Mapping[str, Registration], kind: str) -> str:
    for registration in registry.values():
        if registration.factory is type(obj):
            return registration.name
    raise ConfigurationError(
        f"the {kind} {type(obj).__name__} is not registered under any name, so a saved "
        f"pipeline could not build it again; register it through a plugin "
        f"(covidcxr_register_{kind}s) or pass it by name"
    )


def _object_options(obj: object, kind: str) -> dict[str, Any]:
    get_params = getattr(obj, "get_params", None)
    if callable(get_params):
        return dict(get_params())
    if attrs.has(type(obj)):
        return attrs.asdict(obj, recurse=False)  # type: ignore[arg-type]
    raise ConfigurationError(
        f"cannot read the options of the {kind} {type(obj).__name__} (it has neither "
        "get_params() nor attrs fields); pass it by name with options instead"
    )


def _plain_options(options: Mapping[str, Any], where: str, *, strict: bool) -> dict[str, Any]:
    """Options as JSON data, without anything that looks like a credential.

    ``strict``: a value JSON cannot hold is an error (saving); otherwise its ``repr`` is
    shown instead (describing, for reports).
    """
    kept: dict[str, Any] = {}
    for key, value in options.items():
        if any(word in key.lower() for word in _SECRET_WORDS):
            continue
        plain = list(value) if isinstance(value, tuple) else value
        try:
            json.dumps(plain)
        except TypeError as exc:
            if not strict:
                plain = repr(plain)
            else:
                raise ConfigurationError(
                    f"{where} option {key!r} = {plain!r} cannot be saved as JSON; pass a "
                    "plain value (number, string, list, table)"
                ) from exc
        kept[key] = plain
    return kept


def _inverse_box_mapping(
    preprocessor: Preprocessor, xray: XRay
) -> tuple[XRay, tuple[float, float, float, float] | None]:
    """Preprocess ``xray`` and learn how to map boxes of the result back onto ``xray``.

    The Preprocessor contract transforms boxes with the pixels; resizing, padding and
    centre-cropping are affine per axis, so one probe box in the middle of the image
    (inside any centre crop) tells the scale and offset. Returns the preprocessed image
    (without the probe) and ``(scale_x, offset_x, scale_y, offset_y)``, or ``None`` when
    the preprocessor dropped or collapsed the probe.
    """
    height, width = xray.shape
    probe = Box(width * 0.4, height * 0.4, width * 0.2, height * 0.2)
    prepared = preprocessor(attrs.evolve(xray, boxes=(probe,)))
    mapping = None
    if len(prepared.boxes) == 1 and prepared.boxes[0].width > 0 and prepared.boxes[0].height > 0:
        moved = prepared.boxes[0]
        sx, sy = probe.width / moved.width, probe.height / moved.height
        mapping = (sx, probe.x - sx * moved.x, sy, probe.y - sy * moved.y)
    return attrs.evolve(prepared, boxes=()), mapping


def _map_back(
    detection: Detection, mapping: tuple[float, float, float, float], shape: tuple[int, int]
) -> Detection:
    sx, ox, sy, oy = mapping
    height, width = shape
    box = detection.box
    x1 = min(max(box.x * sx + ox, 0.0), float(width))
    y1 = min(max(box.y * sy + oy, 0.0), float(height))
    x2 = min(max(box.x2 * sx + ox, x1), float(width))
    y2 = min(max(box.y2 * sy + oy, y1), float(height))
    # Rounded to a thousandth of a pixel: the affine map leaves float noise (17.999999…).
    corners = (round(x1, 3), round(y1, 3), round(x2, 3), round(y2, 3))
    return attrs.evolve(detection, box=Box.from_corners(*corners))


_IDENTITY: Final = (1.0, 0.0, 1.0, 0.0)


@attrs.define
class _Pass:
    """What one pass over a source produced, aligned by position."""

    probabilities: NDArray[np.float32]
    truths: list[XRay] = attrs.Factory(list)
    originals: list[XRay] = attrs.Factory(list)
    detections: list[list[Detection]] = attrs.Factory(list)
    # False when some image says its lesions were not annotated (COVID-QU-Ex's Test split
    # has no infection masks): an empty box list there means "unknown", not "no lesion".
    annotated: bool = True
    fingerprint: DataFingerprint = attrs.Factory(DataFingerprint)
    # The first preprocessed images of each true class, for the report's examples.
    examples: dict[str | None, list[tuple[int, XRay]]] = attrs.Factory(dict)


def _truth_stub(xray: XRay) -> XRay:
    """The ground truth of ``xray`` without its pixels: a zero-stride image of its shape."""
    pixels = np.broadcast_to(np.zeros((), np.uint8), xray.shape)
    return XRay(pixels, id=xray.id, label=xray.label, patient_id=xray.patient_id, boxes=xray.boxes)


# Small model inputs (64 px) are drawn at this size at least, so that captions and box
# outlines stay legible in the report.
_DISPLAY_SIDE: Final = 256


def _scaled_box(box: Box, factor: float) -> Box:
    return Box(box.x * factor, box.y * factor, box.width * factor, box.height * factor)


def _annotate(
    xray: XRay, detections: Sequence[Detection], truths: Sequence[Box]
) -> NDArray[np.uint8]:
    """An RGB rendering of ``xray`` with its detections over the ground-truth boxes."""
    # Drawing lives with the detectors; the pipeline is the one module right of both.
    import cv2  # noqa: PLC0415 - only when a report is drawn

    from covidcxr.detect import draw_detections  # noqa: PLC0415 - imports OpenCV drawing

    factor = max(1, -(-_DISPLAY_SIDE // min(xray.shape)))
    if factor > 1:
        height, width = xray.shape
        pixels = cv2.resize(
            np.asarray(xray.pixels),
            (width * factor, height * factor),
            interpolation=cv2.INTER_CUBIC,
        )
        if xray.pixels.dtype == np.float32:
            pixels = np.clip(pixels, 0.0, 1.0)
        xray = XRay(np.asarray(pixels, xray.pixels.dtype), id=xray.id, label=xray.label)
        detections = [attrs.evolve(d, box=_scaled_box(d.box, factor)) for d in detections]
        truths = [_scaled_box(b, factor) for b in truths]
    return np.asarray(draw_detections(xray, list(detections), truths=list(truths)), np.uint8)


class Pipeline:
    """Source → preprocessor → classifier → detector → evaluator, as one estimator.

    Parameters
    ----------
    config
        A :class:`PipelineConfig` (or a plain mapping of one); defaults to the library's
        defaults: ``gaussian-clahe`` → ``vgg19`` → ``local``.
    preprocessor, classifier, detector
        Component objects to use instead of building the configured ones. Objects are used
        as given: ``fit`` trains them in place. To switch a stage off, configure it as
        ``None`` (``Pipeline({"detector": None})``).
    evaluator
        An :class:`~covidcxr.Evaluator`; defaults to
        :class:`~covidcxr.evaluate.ClassificationEvaluator` with the configured options.
    progress
        Show progress bars on long steps.

    Attributes
    ----------
    preprocessor_, classifier_, detector_
        The components in use after :meth:`fit` or :meth:`load`; :attr:`classes_` is the
        classifier's classes.
    history_
        The classifier's training history (``{}`` if it keeps none).
    training_fingerprint_
        The data fingerprint of the training set.

    Examples
    --------
    >>> pipeline = Pipeline.from_dict({"classifier": {"name": "vgg19", "input_size": 64}})
    >>> pipeline.config.classifier.options["input_size"]
    64
    """

    preprocessor_: Preprocessor | None
    classifier_: Classifier
    detector_: LesionDetector | None
    history_: dict[str, list[float]]
    training_fingerprint_: str | None
    _epoch_bar: Any = None

    def __init__(
        self,
        config: PipelineConfig | Mapping[str, Any] | None = None,
        *,
        preprocessor: Preprocessor | None = None,
        classifier: Classifier | None = None,
        detector: LesionDetector | None = None,
        evaluator: Evaluator | None = None,
        progress: bool = False,
    ) -> None:
        if config is None:
            config = PipelineConfig()
        elif not isinstance(config, PipelineConfig):
            config = PipelineConfig.from_dict(config)
        self.config = config
        self.preprocessor = preprocessor
        self.classifier = classifier
        self.detector = detector
        self.evaluator = evaluator
        self.progress = progress

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **kwargs: Any) -> Self:
        """Build from a configuration mapping (see :class:`PipelineConfig`)."""
        return cls(PipelineConfig.from_dict(data), **kwargs)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], **kwargs: Any) -> Self:
        """Build from a TOML configuration file (see the module documentation)."""
        return cls(PipelineConfig.from_toml(path), **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"

    # -- building ---------------------------------------------------------------------

    def _build(self) -> None:
        config = self.config
        if self.preprocessor is not None:
            self.preprocessor_ = self.preprocessor
        elif config.preprocessor is not None:
            self.preprocessor_ = create_preprocessor(
                config.preprocessor.name, **config.preprocessor.options
            )
        else:
            self.preprocessor_ = None
        if self.classifier is not None:
            self.classifier_ = self.classifier
        else:
            options = dict(config.classifier.options)
            self._epoch_bar = None
            if self.progress and "on_epoch_end" not in options:
                # Classifiers that report epochs (the built-in VGG19 does) get a progress
                # bar; the callback is not part of the configuration and is never saved.
                factory = available_classifiers().get(config.classifier.name)
                if factory is not None and _accepts(factory.factory, "on_epoch_end"):
                    options["on_epoch_end"] = self._epoch_progress(options.get("epochs"))
            self.classifier_ = create_classifier(config.classifier.name, **options)
        if self.detector is not None:
            self.detector_ = self.detector
        elif config.detector is not None:
            self.detector_ = create_detector(config.detector.name, **config.detector.options)
        else:
            self.detector_ = None

    def _epoch_progress(self, total: object) -> Callable[[int, Mapping[str, float]], None]:
        from tqdm.auto import tqdm  # noqa: PLC0415 - only when a progress bar is asked for

        def on_epoch_end(epoch: int, logs: Mapping[str, float]) -> None:
            if self._epoch_bar is None:
                self._epoch_bar = tqdm(
                    total=total if isinstance(total, int) else None,
                    desc="train",
                    unit="epoch",
                    leave=False,
                )
            shown = {k: f"{v:.3f}" for k, v in logs.items() if k in _SHOWN_LOGS}
            self._epoch_bar.set_postfix(shown, refresh=False)
            self._epoch_bar.update(1)

        return on_epoch_end

    def _check_fitted(self) -> None:
        if not hasattr(self, "classifier_"):
            raise ConfigurationError(
                "this Pipeline is not fitted yet: call fit() or Pipeline.load()"
            )

    @property
    def classes_(self) -> tuple[str, ...]:
        """The classes of the fitted classifier, in probability-column order."""
        self._check_fitted()
        return tuple(self.classifier_.classes_)

    def describe(self, *, strict: bool = False) -> dict[str, Any]:
        """What this pipeline is made of, as plain data: names and options.

        Components given as objects are described by their registered name and options
        when they have them. Options that look like credentials are left out.

        Parameters
        ----------
        strict
            Raise :class:`~covidcxr.ConfigurationError` for an option JSON cannot hold,
            instead of showing its ``repr``.
        """
        described: dict[str, Any] = {
            key: self._describe_component(key, strict=strict) for key in _COMPONENT_KEYS
        }
        described["evaluation"] = dict(self.config.evaluation)
        return described

    def _describe_component(self, key: str, *, strict: bool) -> dict[str, Any] | None:
        obj = getattr(self, key)
        spec: ComponentSpec | None = getattr(self.config, key)
        if obj is None:
            if spec is None:
                return None
            return {"name": spec.name, **_plain_options(spec.options, key, strict=strict)}
        registry = {
            "preprocessor": available_preprocessors,
            "classifier": available_classifiers,
            "detector": available_detectors,
        }[key]()
        try:
            name = _registered_name(obj, registry, key)
            return {"name": name, **_plain_options(_object_options(obj, key), key, strict=strict)}
        except ConfigurationError:
            if strict:
                raise
            return {"object": f"{type(obj).__module__}.{type(obj).__qualname__}"}

    # -- learning and predicting ------------------------------------------------------

    def fit(self, train: SourceLike, validation: SourceLike | None = None) -> Self:
        """Train the classifier (and the detector, if it learns) on ``train``.

        Parameters
        ----------
        train
            Labelled radiographs: a :class:`~covidcxr.DatasetSource`, a path or URI for
            :func:`covidcxr.open_source`, or a sequence of :class:`~covidcxr.XRay`.
        validation
            Radiographs for monitoring only (the classifier's validation curves).

        Returns
        -------
        Pipeline
            ``self``.
        """
        self._build()
        train_source = _as_source(train, "train")
        self.training_fingerprint_ = data_fingerprint(
            _progress(
                train_source, total=_count(train_source), desc="fingerprint", enabled=self.progress
            )
        )
        prepared = _Preprocessed(train_source, self.preprocessor_)
        prepared_validation = (
            _Preprocessed(_as_source(validation, "validation"), self.preprocessor_)
            if validation is not None
            else None
        )
        try:
            self.classifier_.fit(prepared, validation=prepared_validation)
        finally:
            if getattr(self, "_epoch_bar", None) is not None:
                self._epoch_bar.close()
                self._epoch_bar = None
        self.history_ = {
            k: [float(v) for v in vs]
            for k, vs in dict(getattr(self.classifier_, "history_", None) or {}).items()
        }
        fit_detector = getattr(self.detector_, "fit", None)
        if callable(fit_detector):
            accepts_validation = "validation" in inspect.signature(fit_detector).parameters
            if accepts_validation and prepared_validation is not None:
                fit_detector(prepared, validation=prepared_validation)
            else:
                fit_detector(prepared)
        return self

    def _run(
        self, source: Iterable[XRay], *, evaluating: bool, desc: str, n_examples: int = 0
    ) -> _Pass:
        """One pass over ``source``: probabilities, detections, ground truth, fingerprint.

        ``n_examples``: keep up to this many preprocessed images of each true class.
        """
        self._check_fitted()
        probabilities = np.asarray(
            self.classifier_.predict_proba(_Preprocessed(source, self.preprocessor_)), np.float32
        )
        result = _Pass(probabilities)
        mapping: tuple[float, float, float, float] | None
        pending: list[tuple[XRay, tuple[float, float, float, float], tuple[int, int]]] = []

        def flush() -> None:
            # Detectors with detect_batch (the built-ins) run one network call or service
            # request per chunk instead of one per image.
            if not pending or self.detector_ is None:
                return
            images = [prepared for prepared, _, _ in pending]
            detect_batch = getattr(self.detector_, "detect_batch", None)
            if callable(detect_batch):
                found_lists = list(detect_batch(images))
            else:
                found_lists = [self.detector_.detect(image) for image in images]
            for (_, frame, shape), found in zip(pending, found_lists, strict=True):
                result.detections.append([_map_back(d, frame, shape) for d in found])
            pending.clear()

        progress = _progress(source, total=_count(source), desc=desc, enabled=self.progress)
        for index, xray in enumerate(progress):
            result.originals.append(_truth_stub(xray))
            result.fingerprint.update(xray)
            if xray.meta.get("annotated") is False:
                result.annotated = False
            if self.preprocessor_ is None:
                prepared, mapping = xray, _IDENTITY
            elif evaluating:
                # Scored where the truth boxes are: in the preprocessed frame.
                prepared, mapping = self.preprocessor_(xray), _IDENTITY
            elif self.detector_ is not None:
                prepared, mapping = _inverse_box_mapping(self.preprocessor_, xray)
            else:
                continue
            result.truths.append(_truth_stub(prepared))
            examples = result.examples.setdefault(xray.label, [])
            if len(examples) < n_examples:
                examples.append((index, prepared))
            if self.detector_ is None:
                continue
            if mapping is None:
                raise ConfigurationError(
                    f"the preprocessor dropped the probe box of {xray.id!r}, so detections "
                    "cannot be mapped back to the original image; its boxes must follow "
                    "the pixels (see the Preprocessor contract)"
                )
            # The detector must not see the ground truth it is scored against.
            pending.append((attrs.evolve(prepared, boxes=()), mapping, xray.shape))
            if len(pending) >= _DETECTION_CHUNK:
                flush()
        flush()
        if probabilities.shape[0] != len(result.originals):
            raise ConfigurationError(
                f"the classifier returned {probabilities.shape[0]} rows for "
                f"{len(result.originals)} images"
            )
        return result

    def predict(self, source: SourceLike) -> list[Prediction]:
        """Classify each radiograph and, with a detector, box its lesions.

        Returns
        -------
        list of Prediction
            In source order; detection boxes in the coordinates of the source's images.
        """
        source = _as_source(source, "source")
        result = self._run(source, evaluating=False, desc="predict")
        probabilities = result.probabilities
        classes = self.classes_
        predictions = []
        for row, stub in enumerate(result.originals):
            found = tuple(result.detections[row]) if self.detector_ is not None else ()
            predictions.append(
                Prediction(
                    id=stub.id,
                    label=classes[int(np.argmax(probabilities[row]))],
                    probabilities={
                        c: float(p) for c, p in zip(classes, probabilities[row], strict=True)
                    },
                    detections=found,
                )
            )
        return predictions

    def evaluate(
        self,
        source: SourceLike,
        report_dir: str | os.PathLike[str] | None = None,
        *,
        overwrite: bool = False,
        n_examples: int = 8,
        title: str = "covidcxr evaluation",
        notes: Sequence[str] = (),
    ) -> Report:
        """Predict on labelled radiographs and score the predictions.

        Detections are scored in the preprocessed images' coordinates, where the ground
        truth boxes are transformed by the preprocessor too, and only when every image's
        lesions were annotated (an image with ``meta["annotated"] = False`` has unknown,
        not absent, lesions). The evaluator receives the
        truths' labels, ids, boxes and shapes, but not their pixels (so evaluating a large
        set stays in bounded memory); the report's data fingerprint is taken from the
        images as read from the source.

        Parameters
        ----------
        source
            Labelled radiographs (see :meth:`fit`).
        report_dir
            Where to write the HTML/Markdown/JSON report, if anywhere.
        overwrite
            Replace a report already in ``report_dir``.
        n_examples
            How many annotated images the report shows (spread over the classes).
        title, notes
            The report's title and the notes shown at its top.

        Returns
        -------
        Report
            An :class:`~covidcxr.evaluate.EvaluationReport` with the default evaluator.
        """
        source = _as_source(source, "source")
        if report_dir is not None and not overwrite and (Path(report_dir) / "report.html").exists():
            raise OutputExistsError(
                f"{report_dir} already holds a report; choose another directory or pass "
                "overwrite=True (--overwrite)"
            )
        result = self._run(
            source, evaluating=True, desc="evaluate", n_examples=n_examples if report_dir else 0
        )
        evaluator = self.evaluator or ClassificationEvaluator(**self.config.evaluation)
        score_detections = self.detector_ is not None and result.annotated
        if self.detector_ is not None and not result.annotated:
            notes = [
                *notes,
                "Detection was not scored: some images carry no lesion annotation "
                "(meta['annotated'] is false), so their missing boxes are unknown, not absent.",
            ]
        report = evaluator.evaluate(
            result.truths,
            probabilities=result.probabilities,
            classes=self.classes_,
            detections=result.detections if score_detections else None,
        )
        if isinstance(report, EvaluationReport):
            report = attrs.evolve(
                report,
                configuration={
                    **self.describe(),
                    "training_data_fingerprint": self.training_fingerprint_,
                },
                data_fingerprint=result.fingerprint.hexdigest(),
            )
        if report_dir is not None:
            self._write_report(
                report, report_dir, result,
                overwrite=overwrite, n_examples=n_examples, title=title, notes=notes,
            )  # fmt: skip
        return report

    def _write_report(
        self,
        report: Report,
        report_dir: str | os.PathLike[str],
        result: _Pass,
        *,
        overwrite: bool,
        n_examples: int,
        title: str,
        notes: Sequence[str],
    ) -> ReportFiles | Path:
        """Write ``report`` with the training curves and the annotated examples of ``result``."""
        if not isinstance(report, EvaluationReport):
            path = Path(report_dir) / "report.json"
            text = json.dumps(report.to_dict(), indent=2) + "\n"
            write_text(path, text, overwrite=overwrite)
            return path
        classes = self.classes_
        probabilities = result.probabilities
        detections = result.detections
        predicted = probabilities.argmax(axis=1)
        images: list[NDArray[np.uint8]] = []
        titles: list[str] = []
        for index, xray in _round_robin(result.examples, n_examples):
            found = detections[index] if self.detector_ is not None else []
            images.append(_annotate(xray, found, result.truths[index].boxes))
            label = classes[int(predicted[index])]
            confidence = probabilities[index, predicted[index]]
            titles.append(f"true {xray.label} / predicted {label} ({confidence:.2f})")
        return write_report(
            report, report_dir, history=self.history_ or None, images=images or None,
            image_titles=titles or None, title=title, notes=notes, overwrite=overwrite,
        )  # fmt: skip

    # -- persistence ------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the fitted pipeline to ``directory`` (created; replaced only if asked).

        The directory holds ``pipeline.json`` (component names, options, classes, training
        history and fingerprint, versions) and the classifier's and detector's own saved
        models. It is written next to ``directory`` first and renamed into place, so a
        crash never leaves a half-written model where a good one was. Options that look
        like credentials (``apikey``, ``password``, ``token`` …) are never written.

        Raises
        ------
        OutputExistsError
            If ``directory`` exists and ``overwrite`` is false.
        ConfigurationError
            If a component given as an object is not registered under a name.
        """
        self._check_fitted()
        target = Path(directory)
        if target.exists() and not overwrite:
            raise OutputExistsError(f"{target} already exists; pass overwrite=True to replace it")
        manifest: dict[str, Any] = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "covidcxr_version": __version__,
            "preprocessor": self._describe_component("preprocessor", strict=True),
            "classifier": {"name": self._component_name("classifier")},
            "detector": None,
            "evaluation": dict(self.config.evaluation),
            "classes": list(self.classes_),
            "history": self.history_,
            "training_data_fingerprint": self.training_fingerprint_,
        }
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            self.classifier_.save(staging / "classifier")
            if self.detector_ is not None:
                name = self._component_name("detector")
                save = getattr(self.detector_, "save", None)
                if callable(save):
                    save(staging / "detector")
                    manifest["detector"] = {"name": name, "saved": True}
                else:
                    described = self._describe_component("detector", strict=True) or {}
                    manifest["detector"] = {**described, "name": name, "saved": False}
            write_text(
                staging / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n", overwrite=False
            )
            staging.chmod(0o755)
            if target.exists():
                backup = target.with_name(f".{target.name}.old")
                target.replace(backup)
                staging.replace(target)
                shutil.rmtree(backup) if backup.is_dir() else backup.unlink()
            else:
                staging.replace(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    def _component_name(self, kind: str) -> str:
        given = getattr(self, kind)
        registry = {"classifier": available_classifiers, "detector": available_detectors}[kind]()
        spec_given: ComponentSpec | None = getattr(self.config, kind)
        if given is not None:
            try:
                return _registered_name(given, registry, kind)
            except ConfigurationError:
                # A factory function (not the class) registered it: the configured name
                # still builds the same kind of component.
                if spec_given is None:
                    raise
                return spec_given.name
        spec: ComponentSpec | None = getattr(self.config, kind)
        if spec is None:  # pragma: no cover - only called for components in use
            raise ConfigurationError(f"this pipeline has no {kind}")
        return spec.name

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        detector_options: Mapping[str, Any] | None = None,
        progress: bool = False,
    ) -> Self:
        """Read a pipeline written by :meth:`save`.

        Parameters
        ----------
        directory
            The saved pipeline.
        detector_options
            Options for a detector that was saved by name only (such as credentials,
            which are never saved).
        progress
            Show progress bars.

        Raises
        ------
        ModelFormatError
            If the directory is not a saved pipeline, or was written by an incompatible
            version; the message says which file and what is wrong.
        """
        root = Path(directory)
        manifest_path = root / MANIFEST_NAME
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelFormatError(
                f"{root} is not a saved covidcxr pipeline (no {MANIFEST_NAME})"
            ) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelFormatError(f"{manifest_path}: unreadable: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
            raise ModelFormatError(f"{manifest_path} is not a covidcxr pipeline manifest")
        if manifest.get("format_version") != _FORMAT_VERSION:
            raise ModelFormatError(
                f"{manifest_path} has format version {manifest.get('format_version')!r}; this "
                f"covidcxr ({__version__}) reads version {_FORMAT_VERSION}"
            )
        try:
            classifier_name = manifest["classifier"]["name"]
            classifier_factory = available_classifiers()[classifier_name].factory
        except (KeyError, TypeError) as exc:
            raise ModelFormatError(f"{manifest_path}: classifier {exc} is not available") from exc
        load_classifier = getattr(classifier_factory, "load", None)
        if not callable(load_classifier):
            raise ModelFormatError(
                f"{manifest_path}: classifier {classifier_name!r} is registered with a factory "
                "that has no load(); register the class itself"
            )
        classifier = load_classifier(root / "classifier")
        detector_entry = manifest.get("detector")
        detector = (
            _load_detector(manifest_path, detector_entry, detector_options or {})
            if detector_entry is not None
            else None
        )
        preprocessor_entry = manifest.get("preprocessor")
        config = PipelineConfig(
            preprocessor=ComponentSpec.parse(preprocessor_entry, "preprocessor")
            if preprocessor_entry
            else None,
            classifier=ComponentSpec(classifier_name),
            detector=ComponentSpec(detector_entry["name"]) if detector_entry else None,
            evaluation=manifest.get("evaluation", {}),
        )
        pipeline = cls(config, classifier=classifier, detector=detector, progress=progress)
        pipeline._build()
        pipeline.history_ = dict(manifest.get("history") or {})
        pipeline.training_fingerprint_ = manifest.get("training_data_fingerprint")
        expected = tuple(manifest.get("classes", ()))
        if expected and tuple(pipeline.classes_) != expected:
            raise ModelFormatError(
                f"{manifest_path}: the classifier's classes {pipeline.classes_} differ from "
                f"the manifest's {expected}"
            )
        return pipeline


def _load_detector(
    manifest_path: Path, entry: Mapping[str, Any], detector_options: Mapping[str, Any]
) -> LesionDetector:
    """Rebuild the detector a manifest names: from its saved model, or by name and options."""
    name = entry["name"]
    if not entry.get("saved"):
        options = {k: v for k, v in entry.items() if k not in ("name", "saved")}
        return create_detector(name, **{**options, **detector_options})
    registry = available_detectors()
    if name not in registry:
        raise ModelFormatError(
            f"{manifest_path}: detector {name!r} is not registered; install the plugin that "
            "provides it"
        )
    saved = manifest_path.parent / "detector"
    load_detector = getattr(registry[name].factory, "load", None)
    if callable(load_detector):
        loaded: LesionDetector = load_detector(saved)
        return loaded
    # Detectors registered through a factory function load a saved model from the
    # ``model=path`` option (the built-in convention).
    return create_detector(name, model=str(saved), **detector_options)


def _round_robin(
    examples: Mapping[str | None, Sequence[tuple[int, XRay]]], n_examples: int
) -> list[tuple[int, XRay]]:
    """Up to ``n_examples`` examples, taken in turn from each true class, in index order."""
    queues = [list(examples[label]) for label in sorted(examples, key=str)]
    chosen: list[tuple[int, XRay]] = []
    while len(chosen) < n_examples and any(queues):
        for queue in queues:
            if queue and len(chosen) < n_examples:
                chosen.append(queue.pop(0))
    return sorted(chosen, key=lambda item: item[0])
