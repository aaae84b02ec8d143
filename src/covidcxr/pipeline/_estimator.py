"""The end-to-end job: source → preprocessor → classifier → detector → evaluator."""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Self

import attrs
import numpy as np
from numpy.typing import NDArray

from covidcxr._contracts import checked_detection_batch, checked_detections, who
from covidcxr._unet import RunsNetwork
from covidcxr.boxes import ResizeTransform
from covidcxr.classify._runtime import (
    RuntimeFallbackWarning,
    exported_network,
    resolve_runtime,
    with_runtime,
)
from covidcxr.errors import (
    ComponentOutputError,
    ConfigurationError,
    ModelFormatError,
    SyntheticModelWarning,
    WeightsUnavailableError,
)
from covidcxr.evaluate._calibration import CalibrationWarning
from covidcxr.evaluate._evaluator import (
    ClassificationEvaluator,
    EvaluationReport,
    OneClassPredictionWarning,
    one_class_warning,
)
from covidcxr.evaluate._priors import PriorEstimate, estimate_priors, priors_as_shares
from covidcxr.evaluate._provenance import DataFingerprint
from covidcxr.evaluate._report import ReportFiles, write_report
from covidcxr.files import check_output_directory, output_directory, write_text
from covidcxr.gate import ChestXrayGate
from covidcxr.lungs import (
    LUNG_CROP_KEY,
    LUNGS_FOUND_KEY,
    LUNGS_KEY,
    LungCrop,
    LungFields,
    inside_lungs,
    lung_severity,
)
from covidcxr.pipeline._card import (
    changelog_entry,
    model_facts,
    model_note,
    training_data_facts,
)
from covidcxr.pipeline._config import (
    COMPONENT_KEYS,
    ComponentSpec,
    PipelineConfig,
    TrustConfig,
    object_options,
    plain_options,
    registered_name,
)
from covidcxr.pipeline._persistence import LUNGS_NAME, MANIFEST_NAME, read_pipeline, write_pipeline
from covidcxr.pipeline._prepared import (
    DataPass,
    PreparedSet,
    SourceLike,
    ahead,
    as_source,
    chunks,
    prepare,
)
from covidcxr.pipeline._report import annotate, round_robin
from covidcxr.pipeline._trust import ClassPriors, TrustState, Verdict, fit_trust
from covidcxr.plugins import (
    available_classifiers,
    available_detectors,
    available_preprocessors,
    create_classifier,
    create_detector,
    create_preprocessor,
    provenance,
)
from covidcxr.preprocess._profile import describe_preprocessing, preprocessing_differences
from covidcxr.protocols import (
    BatchDetector,
    Classifier,
    DatasetSource,
    DescribedPreprocessor,
    EpochCallback,
    Evaluator,
    InputGate,
    LesionDetector,
    Persistable,
    Preprocessor,
    RecordsPreprocessing,
    Report,
    ReportsEpochs,
    SegmentsLesions,
    TrainableDetector,
)
from covidcxr.records import (
    REJECTED,
    UNCERTAIN,
    Detection,
    GateDecision,
    GroundTruth,
    Prediction,
    Severity,
    XRay,
)

__all__ = ["Pipeline"]

_SHOWN_LOGS: Final = frozenset({"loss", "accuracy", "val_loss", "val_accuracy"})
# Prepared radiographs handed to the gate, the classifier and the detector at once while
# streaming. Each call into a model has a set-up cost, so a chunk is several batches; while
# one chunk is scored the next is read and preprocessed in a thread (``ahead``), so chunks
# are small enough for the two to overlap: 256 images, or 16 M pixels (64 MB as float32,
# 334 images of 224 px), keeping memory bounded whatever the size of the source.
_CHUNK_PIXELS: Final = 16 * 2**20
_CHUNK_ITEMS: Final = 256
# Fewer radiographs than this give a class-mix estimate too rough to rely on unwarned.
_FEW_FOR_PRIORS: Final = 100
# How far a classifier's probability row may stray from summing to 1 (float32 softmax, a
# quantised network): as far as calibration and the evaluator allow.
_ROW_SUM_TOLERANCE: Final = 1e-3
_NO_LUNGS_REASON: Final = (
    "no lung fields found: classified on the whole frame, which the classifier was not trained on"
)


def _labelled(data: Iterable[XRay], what: str) -> Iterable[XRay]:
    """``data``, refused before any pass when it is a source that holds no labels."""
    if isinstance(data, DatasetSource) and not data.classes:
        reason = getattr(data, "layout_reason", None)
        why = f" ({reason})" if isinstance(reason, str) and reason else ""
        raise ConfigurationError(
            f"{what}: {data!r} has no labels{why}, and training and evaluation need them; open "
            "a folder with one subfolder per class (COVID/, Normal/, Pneumonia/), a known "
            "dataset layout (layout='covid-qu-ex', split='Val' ...), or map class folders "
            "with label_aliases=; predict and detect read unlabelled scans"
        )
    return data


def _has_lesion_annotation(xray: XRay) -> bool:
    """Whether ``xray`` shows a detector a lesion: boxes, or a non-empty infection mask."""
    mask = xray.meta.get("infection_mask")
    return bool(xray.boxes) or (mask is not None and bool(np.any(np.asarray(mask))))


def _default_classifier_spec(default: ComponentSpec) -> ComponentSpec:
    """The default classifier, or the from-scratch recipe when ImageNet weights are out of reach.

    The fallback (offline machines) comes with a one-line notice.
    """
    from covidcxr.classify._vgg19 import FROM_SCRATCH  # noqa: PLC0415 - light, but lazy
    from covidcxr.classify._weights import resolve_imagenet_weights  # noqa: PLC0415

    try:
        resolve_imagenet_weights()
    except WeightsUnavailableError:
        warnings.warn(
            "VGG19's ImageNet weights cannot be downloaded, so the default classifier "
            "trains from scratch (covidcxr.classify.FROM_SCRATCH: 64 px, 24 epochs); "
            "configure [classifier] weights to choose.",
            UserWarning,
            stacklevel=4,
        )
        return ComponentSpec(default.name, dict(FROM_SCRATCH))
    return default


def _weighted_counts(counts: Mapping[str, float], class_weight: object) -> dict[str, float]:
    """Training ``counts`` as the loss saw them, under a classifier's ``class_weight``.

    Examples
    --------
    >>> _weighted_counts({"a": 30.0, "b": 10.0}, "balanced")
    {'a': 20.0, 'b': 20.0}
    >>> _weighted_counts({"a": 30.0, "b": 10.0}, {"b": 3})
    {'a': 30.0, 'b': 30.0}
    """
    if class_weight is None:
        return dict(counts)
    if class_weight == "balanced":
        mean = sum(counts.values()) / len(counts)
        return dict.fromkeys(counts, mean)
    if isinstance(class_weight, Mapping):
        weights = {c: class_weight.get(c, 1.0) for c in counts}
        if all(
            isinstance(w, int | float) and not isinstance(w, bool) and 0 < w < math.inf
            for w in weights.values()
        ):
            return {c: counts[c] * float(weights[c]) for c in counts}
    raise ConfigurationError(
        "the classifier's class_weight is neither None, 'balanced' nor positive weights by "
        f"class ({class_weight!r}), so the class mix it learned is unknown"
    )


def _without_boxes(xray: XRay) -> XRay:
    # The detector must not see the ground truth it is scored against.
    return attrs.evolve(xray, boxes=()) if xray.boxes else xray


def _to_original(detections: Sequence[Detection], prepared: XRay) -> tuple[Detection, ...]:
    """Map detections on a prepared radiograph back onto the radiograph as read.

    The preprocessor records its geometry in ``meta["transform"]`` (a
    :class:`~covidcxr.boxes.ResizeTransform`); a preprocessor that records none must
    leave the geometry alone.
    """
    transform = prepared.meta.get("transform")
    if transform is None:
        return tuple(detections)
    if not isinstance(transform, ResizeTransform):
        raise ConfigurationError(
            f"{prepared.id}: meta['transform'] is a {type(transform).__name__}, not a "
            "ResizeTransform, so detections cannot be mapped back to the original image"
        )
    return tuple(_mapped_back(detections, transform))


def _mapped_back(detections: Sequence[Detection], transform: ResizeTransform) -> list[Detection]:
    """Detections carried back through ``transform``'s inverse; those wholly outside drop."""
    if not detections:
        return []  # most radiographs: no inverse to build
    inverse = transform.inverse()
    mapped = []
    for detection in detections:
        box = inverse.map_box(detection.box)
        if box is not None:  # a detection lying wholly in padding has nothing to frame
            mapped.append(attrs.evolve(detection, box=box))
    return mapped


def _out_of_lung_crop(detections: Sequence[Detection], xray: XRay) -> list[Detection]:
    """Detections on a lung crop, mapped onto the prepared radiograph it was cut from."""
    crop = xray.meta.get(LUNG_CROP_KEY)
    if not isinstance(crop, ResizeTransform):
        return list(detections)
    return _mapped_back(detections, crop)


@attrs.define
class _Scored:
    """One prepared radiograph of a scored chunk.

    The gate's decision and, if it was let through, the classifier's probabilities
    (uncalibrated, calibrated, and calibrated then moved to the deployment class mix: the
    same as calibrated without one), the verdict on them (label, status, reason), the
    detections and the severity. ``frame`` is the prepared radiograph; ``xray`` is what
    the models saw (its lung crop, with a lung stage).
    """

    xray: XRay
    decision: GateDecision | None
    probabilities: NDArray[np.float32] | None = None
    calibrated: list[float] | None = None
    adjusted: list[float] | None = None
    verdict: Verdict | None = None
    detections: list[Detection] = attrs.Factory(list)
    severity: Severity | None = None
    frame: XRay | None = None


def _preprocessor_text(preprocessor: object | None) -> str:
    """A preprocessor named with its options, for messages."""
    if preprocessor is None:
        return "none"
    try:
        options = object_options(preprocessor, "preprocessor")
    except ConfigurationError:
        return type(preprocessor).__name__
    shown = ", ".join(f"{key}={value!r}" for key, value in options.items())
    return f"{type(preprocessor).__name__}({shown})"


def _configured_gate(config: PipelineConfig) -> InputGate | None:
    options = config.trust.gate_options()
    if options is None:
        return None
    try:
        gate = ChestXrayGate(**options)
    except TypeError as exc:
        known = ", ".join(ChestXrayGate().get_params())
        raise ConfigurationError(f"[trust] gate: {exc}; the gate's options are {known}") from exc
    try:
        # Checked now, when the pipeline is built: the gate is fitted after the classifier,
        # and a value of the wrong kind would otherwise fail only after hours of training.
        gate._check_params()
    except ConfigurationError as exc:
        raise ConfigurationError(f"[trust] gate: {exc}") from None
    return gate


def _damaged_manifest(manifest_path: Path, exc: Exception) -> ModelFormatError:
    """A saved option a component refuses: the manifest is damaged or was edited by hand."""
    return ModelFormatError(
        f"{manifest_path}: a saved option is refused ({exc}); the file is damaged or was "
        "edited by hand: save the pipeline again"
    )


def _saved_trust_config(manifest: Mapping[str, Any], has_gate: bool) -> TrustConfig:
    """The ``[trust]`` table a saved pipeline was fitted with; its gate only if one was saved."""
    saved = (manifest.get("trust") or {}).get("config") or {}
    try:
        config = TrustConfig.from_dict(saved)
    except ConfigurationError as exc:
        raise ModelFormatError(
            f"{MANIFEST_NAME}: the trust configuration is damaged: {exc}"
        ) from exc
    return config if has_gate else attrs.evolve(config, gate=False)


@attrs.define
class _Evaluation:
    """What an evaluation pass collected, aligned by position."""

    truths: list[GroundTruth] = attrs.Factory(list)
    predictions: list[Prediction] = attrs.Factory(list)
    fingerprint: DataFingerprint = attrs.Factory(DataFingerprint)
    # The first prepared images of each true class, for the report's examples.
    examples: dict[str | None, list[tuple[int, XRay]]] = attrs.Factory(dict)
    # The classifier's probabilities before calibration, for the gated-in radiographs.
    uncalibrated: list[NDArray[np.float32]] = attrs.Factory(list)


class Pipeline:
    """Source → preprocessor → classifier → detector → evaluator, as one estimator.

    Each call reads and preprocesses every item of its source once, through
    :func:`~covidcxr.preprocess.preprocess_batch` and, with ``cache_dir``, its cache:
    :meth:`fit` keeps the prepared radiographs in an indexable
    :class:`~covidcxr.pipeline.PreparedSet` (so training permutes them fully every epoch,
    whatever order the source yields) and trains the detector on the same set;
    :meth:`predict` and :meth:`evaluate` stream them through the classifier and the
    detector in chunks, in bounded memory.

    Parameters
    ----------
    config
        A :class:`PipelineConfig` (or a plain mapping of one); defaults to the library's
        defaults: ``gaussian-clahe`` → ``vgg19`` → ``local``.
    preprocessor, classifier, detector
        Component objects to use instead of building the configured ones. Objects are used
        as given: ``fit`` trains them in place. To switch a stage off, configure it as
        ``None`` (``Pipeline({"detector": None})``).
    gate
        An :class:`~covidcxr.protocols.InputGate` to use instead of the configured one
        (``[trust] gate``; by default a :class:`~covidcxr.gate.ChestXrayGate`).
    lungs
        A :class:`~covidcxr.lungs.LungCrop` to use instead of the configured one
        (``[lungs]``; by default none). With a lung stage, the classifier and the detector
        see each radiograph cut down to its lung fields, and predictions carry each
        lung's infected share (:class:`~covidcxr.Severity`) when the detector draws
        infection maps.
    evaluator
        An :class:`~covidcxr.Evaluator`; defaults to
        :class:`~covidcxr.ClassificationEvaluator` with the configured options.
    progress
        Show progress bars on long steps.
    cache_dir
        A folder for the preprocessing cache: a second call on the same files (a second
        evaluation, the next training run) reads the prepared images from it instead of
        decoding and preprocessing again. ``None`` (the default) caches nothing.
    workers
        Worker processes for preprocessing; 0 (the default) preprocesses in this
        process. Workers pay off only where preprocessing, not the model, is the cost
        (large images, a cold cache before a long training run); they compete with
        TensorFlow's threads for the same cores while a model predicts, and, as with any
        :mod:`multiprocessing` code, a script that uses them needs an
        ``if __name__ == "__main__":`` guard. The processes are kept for the next call
        (starting them costs about a second) and exit after two minutes unused, or at
        :func:`covidcxr.preprocess.release_workers`.

    Attributes
    ----------
    preprocessor_, classifier_, detector_
        The components in use after :meth:`fit` or :meth:`load`; :attr:`classes_` is the
        classifier's classes.
    gate_
        The fitted input gate, or ``None``: radiographs it refuses get no diagnosis.
    lungs_
        The lung stage, or ``None``.
    trust_
        The calibration and operating points fitted on the validation radiographs
        (a :class:`~covidcxr.pipeline.TrustState`; empty without validation data).
    history_
        The classifier's training history (``{}`` if it keeps none).
    training_fingerprint_
        The data fingerprint of the prepared training set.
    training_data_
        What the model card says about the training data (``None`` for a model saved
        before covidcxr recorded it): ``source`` (its ``repr``, without credentials),
        ``citation``, ``split``, ``fingerprint``, ``n_items``, ``class_counts`` and
        ``synthetic`` (true when any training image was a phantom; then :meth:`predict`
        warns with :class:`~covidcxr.errors.SyntheticModelWarning`).
    data_stats_
        How the last call's pass over its source went (items, reads, cache hits, and the
        items the source skipped, with reasons); for :meth:`fit`, over the training
        source.
    validation_data_stats_
        The same for :meth:`fit`'s validation source.

    Notes
    -----
    One pipeline serves one call at a time. :meth:`predict`, :meth:`iter_predict` and
    :meth:`evaluate` replace :attr:`data_stats_` at the start of each pass, and the
    components may keep per-call state (progress callbacks, the classifier's feature
    cache), so concurrent calls on one pipeline are not supported. To predict from
    several threads, :meth:`load` one pipeline per thread (that costs memory, not
    disk). :meth:`fit` is never thread-safe.

    Examples
    --------
    >>> pipeline = Pipeline.from_dict({"classifier": {"name": "vgg19", "input_size": 64}})
    >>> pipeline.config.classifier.options["input_size"]
    64
    """

    preprocessor_: Preprocessor | None
    classifier_: Classifier
    detector_: LesionDetector | None
    gate_: InputGate | None
    lungs_: LungCrop | None
    trust_: TrustState
    history_: dict[str, list[float]]
    training_fingerprint_: str | None
    training_data_: dict[str, Any] | None
    # The evaluations and changelog a loaded model's card had, kept by the next save.
    _card_records: dict[str, list[Any]]
    # A loaded pipeline's registered component names, from its manifest.
    _loaded_names: dict[str, str]
    # The runtime and precision of the export a pipeline was loaded from (a save drops it).
    _loaded_export: dict[str, str] | None
    # The configuration a fit started from, and the one it left: a fit drops a default
    # stage its data cannot train (the gate, the detector) from ``config``, and the next
    # fit starts again from the configuration as given, unless ``config`` was set since.
    _fit_configs: tuple[PipelineConfig, PipelineConfig]
    data_stats_: DataPass
    validation_data_stats_: DataPass

    def __init__(
        self,
        config: PipelineConfig | Mapping[str, Any] | None = None,
        *,
        preprocessor: Preprocessor | None = None,
        classifier: Classifier | None = None,
        detector: LesionDetector | None = None,
        gate: InputGate | None = None,
        lungs: LungCrop | None = None,
        evaluator: Evaluator | None = None,
        progress: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        workers: int = 0,
    ) -> None:
        if config is None:
            config = PipelineConfig()
        elif not isinstance(config, PipelineConfig):
            config = PipelineConfig.from_dict(config)
        self.config = config
        self.preprocessor = preprocessor
        self.classifier = classifier
        self.detector = detector
        self.gate = gate
        self.lungs = lungs
        self.evaluator = evaluator
        self.progress = progress
        self.cache_dir = cache_dir
        self.workers = workers

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **kwargs: Any) -> Self:
        """Build from a configuration mapping (see :class:`PipelineConfig`)."""
        return cls(PipelineConfig.from_dict(data), **kwargs)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], **kwargs: Any) -> Self:
        """Build from a TOML configuration file (see :class:`PipelineConfig`)."""
        return cls(PipelineConfig.from_toml(path), **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"

    # -- building ---------------------------------------------------------------------

    def _configured_preprocessor(self) -> Preprocessor | None:
        """The preprocessor :attr:`preprocessor` or :attr:`config` names, built now."""
        if self.preprocessor is not None:
            return self.preprocessor
        spec = self.config.preprocessor
        return None if spec is None else create_preprocessor(spec.name, **spec.options)

    def _build(self) -> None:
        config = self.config
        self.preprocessor_ = self._configured_preprocessor()
        if self.classifier is not None:
            self.classifier_ = self.classifier
        else:
            if config.classifier == PipelineConfig().classifier:
                # Left at the library default: ImageNet transfer learning where the
                # weights can be had, a recipe that learns offline where not.
                config = attrs.evolve(
                    config, classifier=_default_classifier_spec(config.classifier)
                )
                self.config = config
            self.classifier_ = create_classifier(
                config.classifier.name, **config.classifier.options
            )
        if self.detector is not None:
            self.detector_ = self.detector
        elif config.detector is not None:
            self.detector_ = create_detector(config.detector.name, **config.detector.options)
        else:
            self.detector_ = None
        self.gate_ = self.gate if self.gate is not None else _configured_gate(config)
        if self.lungs is not None:
            self.lungs_ = self.lungs
        elif config.lungs is not None:
            self.lungs_ = LungCrop.from_options(config.lungs)
        else:
            self.lungs_ = None
        self.trust_ = TrustState()

    @contextlib.contextmanager
    def _epoch_progress(self, component: object, desc: str) -> Iterator[None]:
        """Show a bar of training epochs, for a classifier or detector that reports them."""
        if not self.progress or not isinstance(component, ReportsEpochs):
            yield
            return
        from tqdm.auto import tqdm  # noqa: PLC0415 - only when a progress bar is asked for

        epochs = getattr(component, "epochs", None)
        bar = tqdm(
            total=epochs if isinstance(epochs, int) else None,
            desc=desc,
            unit="epoch",
            leave=False,
        )
        previous = component.on_epoch_end

        def on_epoch_end(epoch: int, logs: Mapping[str, float]) -> None:
            shown = {k: f"{v:.3f}" for k, v in logs.items() if k in _SHOWN_LOGS}
            bar.set_postfix(shown, refresh=False)
            bar.update(1)
            if previous is not None:
                previous(epoch, logs)

        reporter: EpochCallback = on_epoch_end
        component.on_epoch_end = reporter
        try:
            yield
        finally:
            # The callback is not part of the configuration and is never saved.
            component.on_epoch_end = previous
            bar.close()

    def _check_fitted(self) -> None:
        if not hasattr(self, "classifier_"):
            raise ConfigurationError(
                "this Pipeline is not fitted yet: call fit() or Pipeline.load()"
            )

    def _check_preprocessing(self) -> None:
        """Refuse a classifier, detector or lung segmenter trained on images prepared otherwise.

        Certain mismatches only: a component that recorded its training images'
        preprocessing, and a preprocessor that describes its own (or, without one, two
        components that recorded different ones). Anything less certain (no preprocessor,
        or one that describes nothing) is left to the components, which warn when their
        input does not look like their training input.

        Raises
        ------
        ConfigurationError
            Naming the component, both preprocessings and how they differ.
        """
        recorded: list[tuple[str, Mapping[str, Any]]] = []
        components: tuple[tuple[str, object], ...] = (
            ("classifier", self.classifier_),
            ("detector", self.detector_),
        )
        for role, component in components:
            if isinstance(component, RecordsPreprocessing) and isinstance(
                component.preprocessing_, Mapping
            ):
                recorded.append((f"{role} {type(component).__name__}", component.preprocessing_))
        preprocessor: object = self.preprocessor_
        segmenter: object = self.lungs_.segmenter if self.lungs_ is not None else None
        if isinstance(preprocessor, DescribedPreprocessor):
            frames = preprocessor.describe()
            given = frames
            if self.lungs_ is not None:  # the crop is part of how the input is prepared
                given = {**given, "lung_crop": self.lungs_.get_params()}
            checks = [(what, trained, given) for what, trained in recorded]
            if isinstance(segmenter, RecordsPreprocessing) and isinstance(
                segmenter.preprocessing_, Mapping
            ):
                # The segmenter sees the whole prepared frame, before the crop.
                name = f"lung segmenter {type(segmenter).__name__}"
                checks.append((name, segmenter.preprocessing_, frames))
            for what, trained, given in checks:
                differences = preprocessing_differences(trained, given)
                if differences:
                    raise ConfigurationError(
                        f"the {what} was trained on {describe_preprocessing(trained)}, but "
                        f"this pipeline prepares its images with "
                        f"{describe_preprocessing(given)} ({'; '.join(differences)}); a model "
                        "fed images prepared otherwise predicts worse without saying so. Use "
                        "the preprocessor it was trained with (Pipeline.load restores it), or "
                        "train it again"
                    )
        elif len(recorded) == 2:
            (first, one), (second, other) = recorded
            differences = preprocessing_differences(one, other)
            if differences:
                raise ConfigurationError(
                    f"the {first} and the {second} were trained on differently prepared "
                    f"images ({'; '.join(differences)}), so no input suits both; train them "
                    "on the same preprocessing"
                )

    @property
    def measures_severity(self) -> bool:
        """Whether predictions carry :attr:`~covidcxr.Prediction.severity`.

        True for a fitted pipeline with a lung stage and a detector that draws lesion
        maps (:class:`~covidcxr.protocols.SegmentsLesions`).
        """
        self._check_fitted()
        detector: object = self.detector_
        return self.lungs_ is not None and isinstance(detector, SegmentsLesions)

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
            Raise :class:`~covidcxr.errors.ConfigurationError` for an option JSON cannot hold,
            instead of showing its ``repr``.
        """
        described: dict[str, Any] = {
            key: self._describe_component(key, strict=strict) for key in COMPONENT_KEYS
        }
        described["evaluation"] = dict(self.config.evaluation)
        described["lungs"] = self._describe_lungs()
        return described

    def _describe_lungs(self) -> dict[str, Any] | None:
        stage = self.lungs if self.lungs is not None else getattr(self, "lungs_", None)
        if stage is not None:
            return plain_options(stage.describe(), "lungs", strict=False)
        if self.config.lungs is None:
            return None
        return plain_options(self.config.lungs, "lungs", strict=False)

    def _describe_component(self, key: str, *, strict: bool) -> dict[str, Any] | None:
        obj = getattr(self, key)
        spec: ComponentSpec | None = getattr(self.config, key)
        if obj is None:
            if spec is None:
                return None
            return {"name": spec.name, **plain_options(spec.options, key, strict=strict)}
        registry = {
            "preprocessor": available_preprocessors,
            "classifier": available_classifiers,
            "detector": available_detectors,
        }[key]()
        try:
            # A loaded pipeline's components were built by the names its manifest gives
            # (a factory such as "local"'s is not the class itself, so the type alone
            # would not find it).
            name = getattr(self, "_loaded_names", {}).get(key) or registered_name(
                obj, registry, key
            )
            return {"name": name, **plain_options(object_options(obj, key), key, strict=strict)}
        except ConfigurationError:
            if strict:
                raise
            return {"object": f"{type(obj).__module__}.{type(obj).__qualname__}"}

    def _describe_built(self, evaluator: Evaluator) -> dict[str, Any]:
        """What the fitted pipeline is made of: every parameter's effective value.

        :meth:`describe` shows the options that were set; a report needs the values the
        components were built with, defaults included, so it reads each built component's
        own parameters (``get_params()`` or its attrs fields), as :meth:`describe` does
        for components given as objects.
        """
        described: dict[str, Any] = {}
        for key in COMPONENT_KEYS:
            built = getattr(self, f"{key}_", None)
            given = self._describe_component(key, strict=False)
            if built is None:
                described[key] = given
                continue
            try:
                options = plain_options(object_options(built, key), key, strict=False)
            except ConfigurationError:  # neither get_params() nor attrs: the options set
                described[key] = given
                continue
            named = {"name": given["name"]} if given and "name" in given else (given or {})
            described[key] = {**named, **options}
        try:
            settings = object_options(evaluator, "evaluator")
        except ConfigurationError:
            settings = dict(self.config.evaluation)
        settings.pop("configuration", None)  # the evaluator's copy of this very mapping
        described["evaluation"] = plain_options(settings, "evaluation", strict=False)
        described["lungs"] = self._describe_lungs()
        return described

    # -- the data path ----------------------------------------------------------------

    def _prepared(self, source: Iterable[XRay]) -> Iterator[XRay]:
        """The prepared radiographs of ``source``, each item read once (see data_stats_)."""
        workers: object = self.workers  # checked here: callers may pass anything
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ConfigurationError(
                f"Pipeline: workers must be a whole number >= 0, got {self.workers!r}"
            )
        self.data_stats_ = DataPass()
        return prepare(
            source,
            self.preprocessor_,
            cache_dir=self.cache_dir,
            workers=self.workers,
            progress=self.progress,
            stats=self.data_stats_,
        )

    def _collect(self, source: SourceLike, what: str) -> PreparedSet:
        return PreparedSet.collect(self._prepared(_labelled(as_source(source, what), what)))

    def _lung_crops(self, prepared: PreparedSet) -> PreparedSet:
        """The lung crops of prepared radiographs (themselves, without a lung stage)."""
        if self.lungs_ is None:
            return prepared
        stage = self.lungs_
        return PreparedSet.collect(
            cropped
            for chunk in chunks(prepared, max_pixels=_CHUNK_PIXELS, max_items=512)
            for cropped in stage.apply(chunk)
        )

    def _fit_lungs(self, train_set: PreparedSet, validation_set: PreparedSet | None) -> None:
        """Train the lung segmenter on the radiographs' lung masks, unless it is fitted."""
        stage = self.lungs_
        if stage is None or stage.fitted:
            return
        with self._epoch_progress(stage.segmenter, "lungs"):
            stage.segmenter.fit(train_set, validation=validation_set)

    def _detect(
        self, prepared: Sequence[XRay]
    ) -> tuple[list[list[Detection]], list[Severity | None]]:
        """Detections on each prepared radiograph (in its coordinates) and its severity.

        With a lung stage and a detector that draws lesion maps, the maps are kept inside
        the lungs (if the stage says so) before boxing, and each lung's infected share is
        measured on them; otherwise there is no severity.
        """
        detector = self.detector_
        no_severity: list[Severity | None] = [None] * len(prepared)
        if detector is None:
            return [[] for _ in prepared], no_severity
        images = [_without_boxes(xray) for xray in prepared]
        if self.lungs_ is not None and isinstance(detector, SegmentsLesions):
            maps = np.asarray(detector.predict_masks(images), np.float32)
            severities: list[Severity | None] = []
            for index, xray in enumerate(images):
                fields = xray.meta.get(LUNGS_KEY)
                if not isinstance(fields, LungFields):
                    severities.append(None)
                    continue
                if self.lungs_.constrain_detections:
                    maps[index] = inside_lungs(maps[index], fields)
                severities.append(lung_severity(maps[index], fields, detector.mask_threshold))
            found = detector.masks_to_detections(maps, images)
            return checked_detection_batch(found, images, detector), severities
        if isinstance(detector, BatchDetector):
            # One network call or service request per chunk instead of one per image.
            answer = checked_detection_batch(detector.detect_batch(images), images, detector)
        else:
            answer = [checked_detections(detector.detect(x), x, detector) for x in images]
        return answer, no_severity

    def _classify(self, prepared: Sequence[XRay]) -> NDArray[np.float32]:
        probabilities = np.asarray(self.classifier_.predict_proba(prepared), np.float32)
        if probabilities.shape != (len(prepared), len(self.classes_)):
            raise ConfigurationError(
                f"the classifier returned probabilities of shape {probabilities.shape} for "
                f"{len(prepared)} images and {len(self.classes_)} classes"
            )
        broken = ~np.isfinite(probabilities).all(axis=1)
        if broken.any():
            # NaN would pass every threshold test as false and every difference as 0.
            first = prepared[int(np.argmax(broken))].id
            raise ModelFormatError(
                f"the classifier returned probabilities that are not finite numbers for "
                f"{int(broken.sum())} of {len(prepared)} image(s) (the first: {first!r}): its "
                "weights are damaged or overflowed; load it again from a verified copy"
            )
        sums = probabilities.sum(axis=1, dtype=np.float64)
        negative = (probabilities < -_ROW_SUM_TOLERANCE).any(axis=1)
        off = negative | (np.abs(sums - 1.0) > _ROW_SUM_TOLERANCE)
        if off.any():
            # Scores (a sigmoid per class, say) read as probabilities would give wrong
            # confidences and thresholds; evaluation and calibration refuse them too.
            row = int(np.argmax(off))
            raise ComponentOutputError(
                f"{who(self.classifier_)} returned rows that are not probabilities for "
                f"{int(off.sum())} of {len(prepared)} image(s) (the first, "
                f"{prepared[row].id!r}: {probabilities[row].tolist()}); predict_proba "
                "must give each image probabilities of 0 to 1 that sum to 1. This is a bug in "
                "that component: report it to its authors"
            )
        return probabilities

    def _score_chunk(self, prepared: Sequence[XRay], *, detect: bool = True) -> list[_Scored]:
        """Gate, classify and detect a chunk; refused images are neither classified nor searched.

        ``detect=False`` leaves the detector out (every admitted image gets no lesions and
        no severity): for what needs the probabilities only.
        """
        decisions: list[GateDecision | None] = (
            list(self.gate_.assess(prepared)) if self.gate_ is not None else [None] * len(prepared)
        )
        if len(decisions) != len(prepared):
            raise ConfigurationError(
                f"the input gate returned {len(decisions)} decisions for {len(prepared)} images"
            )
        kept = [i for i, d in enumerate(decisions) if d is None or d.accepted]
        admitted = [prepared[i] for i in kept]
        if self.lungs_ is not None and admitted:
            admitted = self.lungs_.apply(admitted)
        probabilities = self._classify(admitted) if admitted else None
        if admitted and detect:
            found, severities = self._detect(admitted)
        else:
            found, severities = [[] for _ in admitted], [None] * len(admitted)
        scored = [
            _Scored(xray, decision, frame=xray)
            for xray, decision in zip(prepared, decisions, strict=True)
        ]
        if probabilities is not None:
            # Calibrated and decided for the whole chunk at once, not row by row.
            calibrated = self.trust_.calibrate(probabilities)
            adjusted = self.trust_.adjust(calibrated)
            verdicts = self.trust_.decide_rows(calibrated, self.classes_, adjusted=adjusted)
            rows, moved = calibrated.tolist(), adjusted.tolist()
        for position, index in enumerate(kept):
            assert probabilities is not None  # noqa: S101 - kept is not empty
            scored[index].xray = admitted[position]
            scored[index].probabilities = probabilities[position]
            scored[index].calibrated = rows[position]
            scored[index].adjusted = moved[position]
            scored[index].verdict = verdicts[position]
            scored[index].detections = found[position]
            scored[index].severity = severities[position]
        return scored

    def _prediction(self, scored: _Scored, detections: Sequence[Detection]) -> Prediction:
        decision = scored.decision
        ood_score = None if decision is None else decision.score
        if scored.adjusted is None or scored.verdict is None:  # refused by the gate
            reason = decision.reason if decision is not None else None
            return Prediction(
                scored.xray.id, REJECTED, {}, status=REJECTED, ood_score=ood_score, reason=reason
            )
        label, status, reason = scored.verdict
        if scored.xray.meta.get(LUNGS_FOUND_KEY) is False:
            label, status, reason = UNCERTAIN, UNCERTAIN, _NO_LUNGS_REASON
        return Prediction(
            id=scored.xray.id,
            label=label,
            probabilities=dict(zip(self.classes_, scored.adjusted, strict=True)),
            detections=detections,
            status=status,
            ood_score=ood_score,
            reason=reason,
            severity=scored.severity,
        )

    # -- learning and predicting ------------------------------------------------------

    def classifier_inputs(self, source: SourceLike) -> PreparedSet:
        """The radiographs of ``source`` as the classifier receives them.

        Read once, preprocessed (through the cache, if any) and, with a lung stage, cropped
        to the lungs; the input gate is not applied. What exporting a classifier (or
        explaining one, or calibrating a quantised copy) must feed it.

        Parameters
        ----------
        source
            As for :meth:`predict`; labels are kept when present.

        Returns
        -------
        PreparedSet
            An indexable sequence of the prepared radiographs, in source order.
        """
        return self.crop_to_lungs(self.preprocessed(source))

    def preprocessed(self, source: SourceLike) -> PreparedSet:
        """The radiographs of ``source``, read once and preprocessed (through the cache).

        What the input gate and the lung segmenter see: the whole prepared frame, before
        any lung crop. With :meth:`crop_to_lungs`, what exporting the lung and lesion
        networks feeds them.

        Parameters
        ----------
        source
            As for :meth:`predict`; labels are kept when present.

        Returns
        -------
        PreparedSet
            An indexable sequence of the prepared radiographs, in source order.
        """
        return PreparedSet.collect(self._prepared(as_source(source, "source")))

    def crop_to_lungs(self, prepared: Sequence[XRay]) -> PreparedSet:
        """Prepared radiographs cropped to their lungs by the fitted lung stage.

        Without a lung stage, the radiographs themselves. The crops are what the classifier
        and the lesion detector see.

        Parameters
        ----------
        prepared
            Radiographs as :meth:`preprocessed` returns them.
        """
        kept = prepared if isinstance(prepared, PreparedSet) else PreparedSet.collect(prepared)
        return self._lung_crops(kept)

    def fit(self, train: SourceLike, validation: SourceLike | None = None) -> Self:
        """Train the classifier (and the detector, if it learns) on ``train``.

        Each source is read and preprocessed once; the classifier and a
        :class:`~covidcxr.protocols.TrainableDetector` train on the same prepared set.

        Parameters
        ----------
        train
            Labelled radiographs: a :class:`~covidcxr.DatasetSource`, a path or URI for
            :func:`covidcxr.open_source`, or a sequence of :class:`~covidcxr.XRay`, in any
            order (training permutes them every epoch).
        validation
            Radiographs for monitoring only (the classifier's validation curves, and the
            epoch it keeps when it stops early).

        Returns
        -------
        Pipeline
            ``self``.

        Raises
        ------
        ConfigurationError
            Before any work, if ``[trust]`` asks for operating points (``sensitivity`` or
            ``coverage``), which are set on the validation radiographs, and there are none.
        """
        configured = self._configuration_as_given()
        self.config = configured
        try:
            return self._fit(train, validation)
        finally:
            self._fit_configs = (configured, self.config)

    def _configuration_as_given(self) -> PipelineConfig:
        """The configuration before the last fit dropped a default stage for its data.

        A fit on a toy data set drops the default input gate, and one on radiographs
        without lesion annotations the default detector, recording that in
        :attr:`config`; a fit on other data decides afresh, as a new pipeline would. A
        configuration set since the last fit is the user's own, and is kept.
        """
        fitted: tuple[PipelineConfig, PipelineConfig] | None = getattr(self, "_fit_configs", None)
        if fitted is not None and self.config is fitted[1]:
            return fitted[0]
        return self.config

    def _fit(self, train: SourceLike, validation: SourceLike | None) -> Self:
        """:meth:`fit`, from the configuration as given."""
        trust = self.config.trust
        if validation is None and (trust.sensitivity or trust.coverage is not None):
            raise ConfigurationError(
                "[trust] sensitivity and coverage set operating points on the validation "
                "radiographs, and fit was given none: pass validation=..., or configure "
                "no operating points (without them the most probable class is the answer)"
            )
        self._build()
        self._warn_if_unsavable()
        train = as_source(train, "train")
        train_set = self._collect(train, "train")
        train_stats = self.data_stats_
        validation_set = None
        if validation is not None:
            validation_set = self._collect(validation, "validation")
            self.validation_data_stats_ = self.data_stats_
        self.data_stats_ = train_stats
        self.training_fingerprint_ = train_set.fingerprint
        self.training_data_ = training_data_facts(train, train_set, train_set.fingerprint)
        self._card_records = {}  # a new model starts a new card
        self._check_detector_data(train_set)
        # The gate judges whole prepared frames (is this a chest radiograph at all?); the
        # models learn from the lung crops, when there is a lung stage.
        self._fit_lungs(train_set, validation_set)
        self._fit_gate(train_set)
        train_set = self._lung_crops(train_set)
        if validation_set is not None:
            validation_set = self._lung_crops(validation_set)
        with self._epoch_progress(self.classifier_, "train"):
            self.classifier_.fit(train_set, validation=validation_set)
        history = getattr(self.classifier_, "history_", None) or {}
        self.history_ = {k: [float(v) for v in vs] for k, vs in dict(history).items()}
        if validation_set is not None:
            self._fit_validation_trust(validation_set)
        detector: object = self.detector_
        if isinstance(detector, TrainableDetector):
            with self._epoch_progress(detector, "detector"):
                detector.fit(train_set, validation=validation_set)
        return self

    def _warn_if_unsavable(self) -> None:
        """Say before training, not after it, when :meth:`save` will refuse this pipeline.

        A component given as an object is saved by its registered name and options (or,
        for a :class:`~covidcxr.protocols.Persistable` detector, its own files); one
        without a registered name or readable options cannot be.
        """
        for key in ("preprocessor", "classifier", "detector"):
            given = getattr(self, key)
            if given is None:
                continue
            try:
                # As save() records them: the classifier and a persistable detector by
                # name (their own files), anything else by name and options.
                if key == "classifier" or (key == "detector" and isinstance(given, Persistable)):
                    self._component_name(key)
                else:
                    self._describe_component(key, strict=True)
            except ConfigurationError as exc:
                warnings.warn(
                    f"this pipeline will train and predict, but save() will refuse it: {exc}. "
                    f"To save it, register the {key}'s class under a name (a plugin, or "
                    "covidcxr.plugins.register_plugin) and give it get_params() or make it "
                    "an attrs class",
                    UserWarning,
                    stacklevel=3,
                )

    def fit_trust(
        self,
        train: SourceLike | None = None,
        validation: SourceLike | None = None,
        *,
        trust: TrustConfig | Mapping[str, Any] | None = None,
    ) -> Self:
        """Fit the input gate, calibration and operating points of a fitted pipeline.

        The classifier and the detector are left as they are: this is how a pipeline
        saved before it had a gate gets one, and how operating points are chosen again
        for another target sensitivity without training again. :meth:`fit` does the same
        after training.

        Parameters
        ----------
        train
            The training radiographs, to fit the input gate on (no gate is fitted without
            them; the one the pipeline has is kept).
        validation
            Labelled radiographs the classifier was not trained on, to fit calibration and
            operating points on (those are kept as they are without them).
        trust
            The ``[trust]`` options to use from now on: a
            :class:`~covidcxr.pipeline.TrustConfig` replaces the configured ones; a mapping
            changes only the options it names (``{"calibrate": "bias-corrected"}`` keeps
            the gate and the operating points' targets as configured). By default the
            configured ones.

        Returns
        -------
        Pipeline
            ``self``.
        """
        self._check_fitted()
        if trust is not None:
            if not isinstance(trust, TrustConfig):
                trust = TrustConfig.from_dict({**self.config.trust.to_dict(), **trust})
            self.config = attrs.evolve(self.config, trust=trust)
        if train is not None:
            if self.gate is None:
                self.gate_ = _configured_gate(self.config)
            self._fit_gate(self._collect(train, "train"))
        if validation is not None:
            validation_set = self._lung_crops(self._collect(validation, "validation"))
            self._fit_validation_trust(validation_set)
            self.validation_data_stats_ = self.data_stats_
        return self

    def add_mirror_check(self, train: SourceLike) -> Self:
        """Teach a fitted pipeline's input gate to refuse mirrored films, changing nothing else.

        Gates fitted before the check existed let a film mirrored left to right through,
        and the classifier, which learns where the heart is, changes its answer on many of
        them. This fits the gate's mirror check
        (:meth:`~covidcxr.gate.ChestXrayGate.fit_mirror`) on the training radiographs,
        prepared as the pipeline prepares them; the gate's version network and threshold,
        the classifier, calibration and detector stay as they are.

        Parameters
        ----------
        train
            The labelled radiographs the pipeline was trained on (read as :meth:`fit`
            reads them; the labels themselves are not used).

        Returns
        -------
        Pipeline
            ``self``.

        Raises
        ------
        ConfigurationError
            If the pipeline is not fitted or its gate has no mirror check to fit.
        """
        self._check_fitted()
        gate = self.gate_
        fit_mirror = getattr(gate, "fit_mirror", None)
        if gate is None or not callable(fit_mirror):
            raise ConfigurationError(
                f"add_mirror_check needs a ChestXrayGate input gate; this pipeline has {gate!r}"
            )
        prepared = self._collect(train, "train")
        trained_on = getattr(self, "training_fingerprint_", None)
        if trained_on is not None and prepared.fingerprint != trained_on:
            warnings.warn(
                "add_mirror_check: these are not the radiographs the pipeline was trained on "
                "(their data fingerprint differs); the check is fitted on them all the same, "
                "and its held-out figures are theirs",
                stacklevel=2,
            )
        fit_mirror(prepared)
        options = self.config.trust.gate
        if isinstance(options, Mapping) and options.get("mirror") is False:
            # A gate fitted again from the configuration (fit_trust) keeps the check.
            trust = attrs.evolve(self.config.trust, gate={**options, "mirror": True})
            self.config = attrs.evolve(self.config, trust=trust)
        mirror = getattr(gate, "mirror_", None) or {}
        if mirror.get("threshold") is None:
            self._log_card_change(
                "mirror check not kept", f"the gate's mirror check was {mirror.get('note')}"
            )
            return self
        description = (
            "the input gate refuses films mirrored left to right: on held-out training "
            f"radiographs it refused {mirror['holdout_mirrored_refused']:.1%} of their "
            f"mirror images and accepted {mirror['holdout_accepted']:.1%} of them as they are"
        )
        self._log_card_change("mirror check added", description)
        return self

    def _fit_validation_trust(self, validation_set: PreparedSet) -> None:
        """Calibrate and set operating points on the validation radiographs."""
        probabilities = self._classify(validation_set)
        truth = [xray.label for xray in validation_set]
        priors = self.trust_.priors  # the classifier is unchanged: so is its training mix
        one_class = one_class_warning(
            truth, [self.classes_[i] for i in probabilities.argmax(axis=1)], what="validation"
        )
        if one_class is not None:
            warnings.warn(one_class, OneClassPredictionWarning, stacklevel=3)
        self.trust_ = fit_trust(self.config.trust, probabilities, truth, self.classes_)
        self.trust_.priors = priors

    # -- the class mix where the model is used -------------------------------------------

    def training_priors(self) -> dict[str, float]:
        """The class mix the classifier learned, which :meth:`set_priors` moves away from.

        It is the share of each class among the radiographs the classifier was trained
        on, weighted by the classifier's ``class_weight`` where it has one: a loss that
        counts a class twice teaches the mix in which it is twice as common, and
        ``"balanced"`` teaches equal shares.

        Raises
        ------
        ConfigurationError
            If the pipeline is not fitted, or was saved by a covidcxr that did not record
            its training data's class counts, or its classifier's ``class_weight`` is
            neither ``None``, ``"balanced"`` nor a mapping of class to weight.
        """
        self._check_fitted()
        facts = getattr(self, "training_data_", None) or {}
        counts = facts.get("class_counts") if isinstance(facts, Mapping) else None
        if not isinstance(counts, Mapping) or not all(
            isinstance(counts.get(c), int | float) and counts[c] > 0 for c in self.classes_
        ):
            raise ConfigurationError(
                "this pipeline does not record how many training radiographs each class had "
                f"(training data: {counts!r}), so its probabilities cannot be moved to another "
                "class mix; fit it again with this covidcxr"
            )
        weighted = _weighted_counts(
            {c: float(counts[c]) for c in self.classes_},
            getattr(self.classifier_, "class_weight", None),
        )
        total = sum(weighted.values())
        return {c: weighted[c] / total for c in self.classes_}

    def set_working_size(self, size: int) -> Self:
        """Enhance every radiograph at one scale, whatever its size, without training again.

        Sets the :class:`~covidcxr.preprocess.GaussianClahePreprocessor`'s
        ``working_size`` and records it as part of what the classifier, detector and lung
        segmenter were trained on. That record is true only for a model whose training
        radiographs all had ``size`` as their longer side (COVID-QU-Ex: 256): at that
        size the working scale changes none of them. For a model trained on radiographs
        of other sizes, train again with ``[preprocessor] working_size`` instead.

        Parameters
        ----------
        size
            The training radiographs' longer side, in pixels.

        Returns
        -------
        Pipeline
            ``self``.

        Raises
        ------
        ConfigurationError
            If the pipeline is not fitted, its preprocessor is not a
            ``GaussianClahePreprocessor``, or already enhances at another working size.
        """
        preprocessor = self._gaussian_clahe("set_working_size")
        if preprocessor.working_size not in (None, size):
            raise ConfigurationError(
                f"this pipeline enhances at working size {preprocessor.working_size} already; "
                "a model trained so cannot be moved to another without training again"
            )
        self._set_preprocessing(preprocessor, "working_size", size)
        self._log_card_change(
            "working size set",
            f"every radiograph enhanced with its longer side at {size} px, the training "
            "radiographs' size",
        )
        return self

    def set_window_levels(self, levels: tuple[int, int]) -> Self:
        """Window 16-bit radiographs onto the grey levels of 8-bit training radiographs.

        Sets the :class:`~covidcxr.preprocess.GaussianClahePreprocessor`'s
        ``window_levels``, the grey levels that a 16-bit radiograph's 0.5th and 99.5th
        percentiles (its ``percentile_window``) map to, and records them as part of what
        the classifier, detector and lung segmenter were trained on. 8-bit radiographs are
        not windowed, so that record is true for a model trained on 8-bit radiographs
        only: measure their levels with :func:`~covidcxr.preprocess.window_levels_of`
        (COVID-QU-Ex: ``(0, 228)``). A model trained on 16-bit radiographs learned the
        window it was trained with; train it again with ``[preprocessor] window_levels``
        instead.

        Parameters
        ----------
        levels
            ``(low, high)``, ``0 <= low < high <= 255``.

        Returns
        -------
        Pipeline
            ``self``.

        Raises
        ------
        ConfigurationError
            If the pipeline is not fitted, its preprocessor is not a
            ``GaussianClahePreprocessor``, or the levels are invalid.
        """
        preprocessor = self._gaussian_clahe("set_window_levels")
        checked = attrs.evolve(preprocessor, window_levels=levels).window_levels
        self._set_preprocessing(preprocessor, "window_levels", list(checked))
        low, high = checked
        self._log_card_change(
            "window levels set",
            "16-bit radiographs windowed onto grey levels 0 to 255, the default"
            if checked == (0, 255)
            else f"16-bit radiographs windowed onto grey levels {low} to {high}, where the "
            "8-bit training radiographs have their window's percentiles",
        )
        return self

    def _gaussian_clahe(self, method: str) -> Any:
        """The fitted ``GaussianClahePreprocessor``, or a typed error naming ``method``."""
        from covidcxr.preprocess import GaussianClahePreprocessor  # noqa: PLC0415

        self._check_fitted()
        preprocessor = self.preprocessor_
        if not isinstance(preprocessor, GaussianClahePreprocessor):
            raise ConfigurationError(
                f"{method} needs a gaussian-clahe preprocessor, not {preprocessor!r}"
            )
        return preprocessor

    def _set_preprocessing(self, preprocessor: Any, name: str, value: Any) -> None:
        """Set an option of this pipeline's ``preprocessor``, recorded as trained with.

        All or nothing: if a record cannot be written, or the result fails the
        preprocessing check, the pipeline is left as it was.
        """
        updated = attrs.evolve(preprocessor, **{name: value})
        # Recorded as the preprocessor describes itself: a value that leaves every output
        # as it was (window_levels (0, 255)) is not in its description, nor recorded.
        described = updated.describe()
        segmenter = self.lungs_.segmenter if self.lungs_ is not None else None
        recording = [
            component
            for component in (self.classifier_, self.detector_, segmenter)
            if isinstance(component, RecordsPreprocessing)
            and isinstance(component.preprocessing_, Mapping)
        ]
        saved = (
            self.preprocessor_,
            self.preprocessor,
            self.config,
            [component.preprocessing_ for component in recording],
        )
        try:
            self.preprocessor_ = updated
            if self.preprocessor is not None:
                self.preprocessor = updated
            elif self.config.preprocessor is not None:
                spec = self.config.preprocessor
                options = {k: v for k, v in spec.options.items() if k != name}
                if name in described:
                    options[name] = value
                self.config = attrs.evolve(
                    self.config, preprocessor=ComponentSpec(spec.name, options)
                )
            for component in recording:
                recorded = {k: v for k, v in component.preprocessing_.items() if k != name}
                if name in described:
                    recorded[name] = described[name]
                component.preprocessing_ = recorded
            self._check_preprocessing()
        except BaseException:
            self.preprocessor_, self.preprocessor, self.config, records = saved
            for component, record in zip(recording, records, strict=True):
                with contextlib.suppress(Exception):
                    component.preprocessing_ = record
            raise

    def set_priors(self, priors: Mapping[str, float] | None, *, source: str = "given") -> Self:
        """Use the model where the classes occur in other proportions than in training.

        The classifier learned its training radiographs' class mix (COVID-QU-Ex: half
        COVID-19); where most radiographs are normal, a model taken as is calls too many
        of them COVID-19 or pneumonia, and its probabilities are too high for those. With
        the mix of the place set here, every probability is moved to it by Bayes' rule
        (:func:`~covidcxr.evaluate.adjust_to_priors`), and the decision is the most
        probable class at that mix. Operating points keep their promise: a class
        threshold set for a target sensitivity still applies to the probability at the
        training mix, since a class's sensitivity does not depend on how common it is; the
        abstention threshold applies to the moved probabilities. This holds under label
        shift only (each class's radiographs look as they did in training): radiographs of
        another hospital also look different, which no reweighting corrects.

        The mix is saved with the pipeline, and its model card says the probabilities are
        moved. Unknown? :meth:`estimate_priors` estimates it from unlabelled radiographs.

        Parameters
        ----------
        priors
            The share (or count) of each class where the model is used, by class name; a
            class may be 0 (it does not occur there). ``None`` goes back to the training
            mix.
        source
            Where the mix comes from, in words, for the model card (``"given"``).

        Returns
        -------
        Pipeline
            ``self``.

        Raises
        ------
        ConfigurationError
            If the pipeline is not fitted or does not record its training class counts,
            or ``priors`` do not give one share of 0 or more per class (all 0 is refused).

        Examples
        --------
        >>> import covidcxr.pretrained
        >>> pipeline = covidcxr.pretrained.load("covid-qu-ex")
        >>> clinic = {"covid-19": 0.05, "normal": 0.75, "pneumonia": 0.20}
        >>> print(pipeline.set_priors(clinic).trust_.priors.describe())
        probabilities moved to the class mix covid-19 0.05, normal 0.75, pneumonia 0.2
        (given) from the training mix covid-19 0.5, normal 0.25, pneumonia 0.25
        """
        if priors is None:
            self._check_fitted()
            if self.trust_.priors is not None:
                self._log_card_change("class mix reset", "probabilities at the training mix")
            self.trust_.priors = None
            return self
        training = self.training_priors()
        classes = tuple(self.classes_)
        shares = priors_as_shares(priors, len(classes), classes, "priors", zero_allowed=True)
        self.trust_.priors = ClassPriors(
            classes, [training[c] for c in classes], shares.tolist(), source
        )
        self._log_card_change("class mix set", self.trust_.priors.describe())
        return self

    def estimate_priors(
        self,
        source: SourceLike,
        *,
        tolerance: float = 1e-6,
        max_iterations: int = 1000,
    ) -> PriorEstimate:
        """Estimate the class mix of unlabelled radiographs from the model's probabilities.

        Classifies ``source`` (the input gate's refusals are left out; the detector is not
        run) and runs the EM of
        :func:`~covidcxr.evaluate.estimate_priors` on the calibrated probabilities at the
        training mix (whatever mix is set). Give the result to :meth:`set_priors`::

            estimate = pipeline.estimate_priors("our_scans/")
            pipeline.set_priors(estimate.as_dict(), source=f"EM on {estimate.n_items} scans")

        It needs a few hundred radiographs representative of the place, and rests on the
        same label-shift assumption as :meth:`set_priors`.

        Parameters
        ----------
        source
            Radiographs of the place, labelled or not (labels are not read).
        tolerance, max_iterations
            When EM stops (see :func:`~covidcxr.evaluate.estimate_priors`).

        Returns
        -------
        PriorEstimate
            The estimated share of each class, by class name with
            :meth:`~covidcxr.evaluate.PriorEstimate.as_dict`.

        Raises
        ------
        ConfigurationError
            If the pipeline does not record its training class counts, or the input gate
            refused every radiograph.

        Warns
        -----
        CalibrationWarning
            If the estimate rests on fewer than 100 radiographs, on probabilities that are
            not calibrated, or on EM steps that did not converge: it may be far off.
        """
        training = self.training_priors()
        self._check_preprocessing()
        rows: list[list[float]] = []
        prepared = self._prepared(as_source(source, "source"))
        for chunk in ahead(chunks(prepared, max_pixels=_CHUNK_PIXELS, max_items=_CHUNK_ITEMS)):
            scored = self._score_chunk(chunk, detect=False)
            rows += [s.calibrated for s in scored if s.calibrated is not None]
        if not rows:
            raise ConfigurationError(
                "no radiograph was admitted by the input gate: nothing to estimate the class "
                "mix from; are these frontal chest radiographs?"
            )
        estimate = estimate_priors(
            np.asarray(rows),
            training,
            classes=self.classes_,
            tolerance=tolerance,
            max_iterations=max_iterations,
        )
        doubts = []
        if estimate.n_items < _FEW_FOR_PRIORS:
            doubts.append(f"it rests on {estimate.n_items} radiograph(s), not a few hundred")
        if self.trust_.calibration is None:
            doubts.append("the probabilities are not calibrated ([trust] calibrate)")
        if not estimate.converged:
            doubts.append(f"EM did not converge in {estimate.n_iterations} steps")
        if doubts:
            warnings.warn(
                f"the estimated class mix may be far off: {'; '.join(doubts)}",
                CalibrationWarning,
                stacklevel=2,
            )
        return estimate

    def _log_card_change(self, event: str, description: str) -> None:
        """Add a changelog entry for the model card, kept with the next save."""
        records = getattr(self, "_card_records", None)
        if records is None:
            records = self._card_records = {}
        records.setdefault("changelog", []).append(changelog_entry(event, description))

    def _fit_gate(self, train_set: PreparedSet) -> None:
        """Fit the input gate on the training radiographs alone: it never sees an outlier.

        The default gate is dropped, with a notice, when there are too few radiographs to
        fit it (a toy data set); a gate that was asked for is fitted or fails.
        """
        gate = self.gate_
        if gate is None:
            return
        too_few = isinstance(gate, ChestXrayGate) and len(train_set) < gate.min_images
        if too_few and self.gate is None and self.config.trust.gate is True:
            warnings.warn(
                f"only {len(train_set)} training radiographs: too few to fit the input gate "
                f"(at least {ChestXrayGate.min_images}), so this pipeline does not refuse "
                "images that are not chest radiographs",
                UserWarning,
                stacklevel=3,
            )
            self.config = attrs.evolve(
                self.config, trust=attrs.evolve(self.config.trust, gate=False)
            )
            self.gate_ = None
            return
        gate.fit(train_set)

    def _check_detector_data(self, train_set: PreparedSet) -> None:
        """Refuse to train a detector on radiographs that show it no lesion.

        A detector left at the library default is dropped instead, with a notice.
        """
        detector: object = self.detector_
        if not isinstance(detector, TrainableDetector) or any(
            _has_lesion_annotation(xray) for xray in train_set
        ):
            return
        if self.detector is None and self.config.detector == PipelineConfig().detector:
            warnings.warn(
                "the training radiographs carry no lesion boxes or masks, so the pipeline "
                "classifies only (the default lesion detector needs them to learn)",
                UserWarning,
                stacklevel=3,
            )
            self.config = attrs.evolve(self.config, detector=None)
            self.detector_ = None
            return
        raise ConfigurationError(
            f"the detector {type(detector).__name__} learns from lesion boxes or "
            f"infection masks, and none of the {len(train_set)} training radiographs has "
            'any: drop the detector (detector=None; [detector] name = "none" in a TOML '
            "file) or train on data with lesion masks or boxes (a COVID-QU-Ex checkout, "
            'layout="covid-qu-ex")'
        )

    def iter_predict(self, source: SourceLike) -> Iterator[Prediction]:
        """Like :meth:`predict`, one prediction at a time, in bounded memory.

        Yields
        ------
        Prediction
            In source order; detection boxes in the coordinates of the source's images.
        """
        self._check_fitted()
        self._check_preprocessing()
        note = model_note(getattr(self, "training_data_", None))
        if note is not None:
            warnings.warn(note, SyntheticModelWarning, stacklevel=2)
        prepared = self._prepared(as_source(source, "source"))
        for chunk in ahead(chunks(prepared, max_pixels=_CHUNK_PIXELS, max_items=_CHUNK_ITEMS)):
            for scored in self._score_chunk(chunk):
                yield self._prediction(scored, _to_original(scored.detections, scored.xray))

    def predict(self, source: SourceLike) -> list[Prediction]:
        """Classify each radiograph and, with a detector, box its lesions.

        Parameters
        ----------
        source
            Radiographs, labelled or not (see :meth:`fit` for what is accepted).

        Returns
        -------
        list of Prediction
            In source order; detection boxes in the coordinates of the source's images
            (mapped back through the preprocessor's recorded ``meta["transform"]``).
        """
        return list(self.iter_predict(source))

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
        """Predict on labelled radiographs and score the predictions, in one pass.

        Detections are scored in the preprocessed images' coordinates, where the ground
        truth boxes are transformed by the preprocessor too, and only when every image's
        lesions were annotated (an image with ``meta["annotated"] = False`` has unknown,
        not absent, lesions). The evaluator receives
        :class:`~covidcxr.GroundTruth` and :class:`~covidcxr.Prediction` records, not
        pixels, so evaluating a large set stays in bounded memory; the report's data
        fingerprint is taken from the prepared images.

        Parameters
        ----------
        source
            Labelled radiographs (see :meth:`fit`).
        report_dir
            Where to write the HTML/Markdown/JSON report, if anywhere.
        overwrite
            Replace a report covidcxr wrote in ``report_dir`` earlier (a folder holding
            other files is never replaced).
        n_examples
            How many annotated images the report shows (spread over the classes).
        title, notes
            The report's title and the notes shown at its top.

        Returns
        -------
        Report
            An :class:`~covidcxr.evaluate.EvaluationReport` with the default evaluator.

        Raises
        ------
        OutputExistsError
            Before any work, if ``report_dir`` holds a report and ``overwrite`` is false,
            or holds anything covidcxr did not write (see
            :func:`covidcxr.files.check_output_directory`).
        """
        self._check_fitted()
        self._check_preprocessing()
        if report_dir is not None:  # fail before the work, not after
            check_output_directory(report_dir, "report", overwrite=overwrite)
        keep = n_examples if report_dir is not None else 0
        collected = self._evaluation_pass(_labelled(as_source(source, "source"), "source"), keep)
        evaluator = self._evaluator()
        # Radiographs the input gate refused have no diagnosis: the evaluator leaves them
        # out of the figures and lists them.
        if collected.predictions and all(p.status == REJECTED for p in collected.predictions):
            raise ConfigurationError(
                f"the input gate refused all {len(collected.predictions)} radiographs, so "
                "there is nothing to score (first reason: "
                f"{collected.predictions[0].reason}); are these frontal chest radiographs?"
            )
        report = evaluator.evaluate(
            collected.truths,
            collected.predictions,
            classes=self.classes_,
            detections=self.detector_ is not None,
        )
        if isinstance(report, EvaluationReport):
            note = model_note(getattr(self, "training_data_", None))
            report = attrs.evolve(
                report,
                notes=(*report.notes, note) if note is not None else report.notes,
                configuration={
                    **self._describe_built(evaluator),
                    "training_data_fingerprint": self.training_fingerprint_,
                },
                data_fingerprint=collected.fingerprint.hexdigest(),
            )
            report = self._with_trust(report, collected)
        if report_dir is not None:
            self._write_report(
                report, report_dir, collected,
                overwrite=overwrite, n_examples=n_examples, title=title, notes=notes,
            )  # fmt: skip
        return report

    def _with_trust(self, report: EvaluationReport, collected: _Evaluation) -> EvaluationReport:
        """Add the class mix, why the gate refused what it did, and the calibration before."""
        if self.trust_.priors is not None:
            # The figures (calibration "after" among them) are of the moved probabilities.
            moved = f"Pipeline.set_priors: {self.trust_.priors.describe()}."
            report = attrs.evolve(report, notes=(*report.notes, moved))
        reasons = Counter(p.reason for p in collected.predictions if p.status == REJECTED)
        if reasons:
            listed = "; ".join(f"{reason} ({n})" for reason, n in reasons.most_common())
            report = attrs.evolve(
                report, notes=(*report.notes, f"Why the input gate refused them: {listed}.")
            )
        calibrator = self.trust_.calibration
        if report.calibration is not None and calibrator is not None and collected.uncalibrated:
            labels = [
                str(truth.label)
                for truth, prediction in zip(collected.truths, collected.predictions, strict=True)
                if prediction.status != REJECTED
            ]
            report = report.with_calibration_before(
                np.stack(collected.uncalibrated),
                labels,
                classes=self.classes_,
                temperature=calibrator.temperature_,
                biases=getattr(calibrator, "biases_", None),
            )
        return report

    def _evaluator(self) -> Evaluator:
        return self.evaluator or ClassificationEvaluator(**self.config.evaluation)

    def _evaluation_pass(self, source: Iterable[XRay], n_examples: int) -> _Evaluation:
        collected = _Evaluation()
        prepared = self._prepared(source)
        index = 0
        for chunk in ahead(chunks(prepared, max_pixels=_CHUNK_PIXELS, max_items=_CHUNK_ITEMS)):
            for scored in self._score_chunk(chunk):
                xray = scored.frame if scored.frame is not None else scored.xray
                collected.fingerprint.update(xray)
                collected.truths.append(GroundTruth.of(xray))
                # Scored where the truth boxes are: in the prepared frame (out of the lung
                # crop, so a lesion the crop cut off still counts as missed).
                in_frame = _out_of_lung_crop(scored.detections, scored.xray)
                collected.predictions.append(self._prediction(scored, in_frame))
                if scored.probabilities is not None:
                    collected.uncalibrated.append(scored.probabilities)
                examples = collected.examples.setdefault(xray.label, [])
                if len(examples) < n_examples:
                    examples.append((index, xray))
                index += 1
        return collected

    def _write_report(
        self,
        report: Report,
        report_dir: str | os.PathLike[str],
        collected: _Evaluation,
        *,
        overwrite: bool,
        n_examples: int,
        title: str,
        notes: Sequence[str],
    ) -> ReportFiles | Path:
        """Write ``report`` with the training curves and the annotated examples."""
        if not isinstance(report, EvaluationReport):
            text = json.dumps(report.to_dict(), indent=2) + "\n"
            with output_directory(report_dir, "report", overwrite=overwrite) as staging:
                write_text(staging / "report.json", text)
            return Path(report_dir) / "report.json"
        images: list[NDArray[np.uint8]] = []
        titles: list[str] = []
        classes: list[str] = []
        for index, xray in round_robin(collected.examples, n_examples):
            prediction = collected.predictions[index]
            images.append(annotate(xray, prediction.detections, collected.truths[index].boxes))
            confidence = prediction.confidence
            shown = "" if confidence is None else f" ({confidence:.2f})"
            titles.append(f"true {xray.label} / predicted {prediction.label}{shown}")
            classes.append(str(xray.label))
        return write_report(
            report, report_dir, history=self.history_ or None, images=images or None,
            image_titles=titles or None, image_classes=classes or None, title=title,
            notes=notes, overwrite=overwrite,
        )  # fmt: skip

    # -- persistence ------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the fitted pipeline to ``directory`` (created; replaced only if asked).

        The directory holds ``pipeline.json`` (component names, options, classes, training
        history and fingerprint, versions) and the classifier's and a
        :class:`~covidcxr.protocols.Persistable` detector's own saved models, with the
        model card (``metadata.json`` and ``model_card.md``, see :doc:`/model-cards`),
        whose changelog gains an entry for this save. It is written
        next to ``directory`` first and renamed into place, so a crash never leaves a
        half-written model where a good one was. Options that look like credentials
        (``apikey``, ``password``, ``token`` …) are never written.

        A save writes the Keras models only. A pipeline loaded from a folder that
        :func:`covidcxr.runtime.export` wrote is saved without its exported networks
        (loading the saved copy runs TensorFlow): the save warns, and the card's
        changelog gains an "export dropped" line; export the saved copy again to run it
        with that runtime.

        Warns
        -----
        RuntimeFallbackWarning
            If the pipeline was loaded from an export, which the save leaves out.

        Raises
        ------
        OutputExistsError
            If ``directory`` exists and ``overwrite`` is false, or it is anything but a
            pipeline covidcxr saved (a folder holding other files, a file, a symbolic
            link): that is never replaced.
        ConfigurationError
            If a component given as an object is not registered under a name.
        """
        self._check_fitted()
        self._check_preprocessor_unchanged()
        records = dict(getattr(self, "_card_records", {}))
        dropped = self._dropped_export(records.get("changelog") or [])
        if dropped is not None:
            records["changelog"] = [*(records.get("changelog") or []), dropped]
        detector_entry = None
        if self.detector_ is not None:
            # A persistable detector saves its model; any other is rebuilt by name and
            # options (a remote service, say), so those are recorded instead.
            described = (
                {}
                if isinstance(self.detector_, Persistable)
                else self._describe_component("detector", strict=True) or {}
            )
            detector_entry = {**described, "name": self._component_name("detector")}
        preprocessor_entry = self._describe_component("preprocessor", strict=True)
        names = {
            "classifier": self._component_name("classifier"),
            "detector": detector_entry["name"] if detector_entry else None,
            # Given by name or as an object, a saved preprocessor has a registered name.
            "preprocessor": preprocessor_entry["name"] if preprocessor_entry else None,
        }
        manifest: dict[str, Any] = {
            "preprocessor": preprocessor_entry,
            "classifier": {"name": self._component_name("classifier")},
            "evaluation": dict(self.config.evaluation),
            "classes": list(self.classes_),
            "history": self.history_,
            "training_data_fingerprint": self.training_fingerprint_,
            "lungs": (
                {**self.lungs_.get_params(), "saved": LUNGS_NAME}
                if self.lungs_ is not None
                else None
            ),
            "trust": {
                "config": self.config.trust.to_dict(),
                "gate": self._gate_summary(),
                **self.trust_.to_dict(),
            },
            # For the model card: what it learnt from, how, and what it has been through.
            "training_data": getattr(self, "training_data_", None),
            "model": model_facts(self._describe_built(self._evaluator()), self.classifier_),
            # Which plugin distributions the components came from: loading elsewhere
            # without them then says what to install.
            "plugins": self._plugin_provenance(names),
            **records,
        }
        return write_pipeline(
            Path(directory),
            manifest=manifest,
            classifier=self.classifier_,
            detector=self.detector_,
            detector_entry=detector_entry,
            gate=self.gate_,
            lungs=self.lungs_.segmenter if self.lungs_ is not None else None,
            overwrite=overwrite,
        )

    def _check_preprocessor_unchanged(self) -> None:
        """Refuse to save a preprocessor other than the one the pipeline was fitted with.

        A save records the preprocessor from :attr:`preprocessor` or :attr:`config`,
        while predictions use :attr:`preprocessor_`; set since the fit to another, it
        would be saved in place of the fitted one and the loaded copy would be another
        model, not always detectably (a classifier that records its preprocessing is
        checked at load; another is not).
        """
        fitted = self.preprocessor_
        given = self._configured_preprocessor()
        if given is fitted:
            return
        same = given is not None and fitted is not None and type(given) is type(fitted)
        if same:
            try:
                same = object_options(given, "preprocessor") == object_options(
                    fitted, "preprocessor"
                )
            except ConfigurationError:  # neither get_params() nor attrs: compare as objects
                same = given == fitted
        if not same:
            raise ConfigurationError(
                f"the preprocessor was changed since the fit ({_preprocessor_text(fitted)} "
                f"then, {_preprocessor_text(given)} now): a save would record one the model "
                "was not trained with. Fit again, or set back the preprocessor it was "
                "fitted with"
            )

    def _dropped_export(self, changelog: Sequence[Any]) -> dict[str, str] | None:
        """The changelog line of a save that leaves out the export it was loaded from.

        A save writes the Keras models only: the exported networks of a pipeline loaded
        from :func:`covidcxr.runtime.export`'s folder are not carried over, so the saved
        copy runs TensorFlow. While the card still says "exported" (a fit starts a new
        card), the save warns (:class:`~covidcxr.runtime.RuntimeFallbackWarning`) and
        its changelog says that the export was dropped; ``None`` otherwise.
        """
        loaded = getattr(self, "_loaded_export", None)
        if loaded is None:
            return None
        events = [
            entry.get("event")
            for entry in changelog
            if isinstance(entry, Mapping) and entry.get("event") in ("exported", "export dropped")
        ]
        if not events or events[-1] != "exported":
            return None
        runtime, precision = loaded.get("runtime"), loaded.get("precision")
        warnings.warn(
            f"this pipeline was loaded from an export for {runtime} ({precision}), but a save "
            "writes the Keras models only: the saved copy holds no exported network and "
            "loading it runs TensorFlow (float32). Export the saved copy again with "
            f"covidcxr.runtime.export(..., runtime={runtime!r}) to run it with {runtime}",
            RuntimeFallbackWarning,
            stacklevel=3,
        )
        return changelog_entry(
            "export dropped",
            f"saved without the {runtime} ({precision}) export it was loaded from: the "
            "exported networks were not carried over and loading runs the Keras models "
            "in TensorFlow; export it again to run it with that runtime",
        )

    @staticmethod
    def _plugin_provenance(names: Mapping[str, str | None]) -> dict[str, dict[str, str]]:
        """``{kind: {"plugin", "distribution", "version"}}`` for components from plugins."""
        found: dict[str, dict[str, str]] = {}
        for kind, name in names.items():
            if name is None:
                continue
            origin = provenance(kind, name)
            if origin is not None:
                found[kind] = {"name": name, **origin}
        return found

    def _gate_summary(self) -> dict[str, Any] | None:
        """The gate's entry in the manifest: what it is and how it was set."""
        gate = self.gate_
        if gate is None:
            return None
        if not isinstance(gate, Persistable):
            raise ConfigurationError(
                f"the input gate {type(gate).__name__} cannot be saved (it has no save() and "
                "load()); save the pipeline without it (gate=None) or make it persistable"
            )
        summary = gate.summary() if isinstance(gate, ChestXrayGate) else {}
        return {**summary, "class": f"{type(gate).__module__}.{type(gate).__qualname__}"}

    def _component_name(self, kind: str) -> str:
        given = getattr(self, kind)
        registry = {"classifier": available_classifiers, "detector": available_detectors}[kind]()
        spec: ComponentSpec | None = getattr(self.config, kind)
        if given is not None:
            try:
                return registered_name(given, registry, kind)
            except ConfigurationError:
                # A factory function (not the class) registered it: the configured name
                # still builds the same kind of component.
                if spec is None:
                    raise
                return spec.name
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
        cache_dir: str | os.PathLike[str] | None = None,
        workers: int = 0,
        runtime: str | None = None,
    ) -> Self:
        """Read a pipeline written by :meth:`save`.

        Parameters
        ----------
        directory
            The saved pipeline.
        detector_options
            Options for a detector that was saved by name only (such as credentials,
            which are never saved).
        progress, cache_dir, workers
            As for the constructor.
        runtime
            What runs the networks: ``"tensorflow"`` (the Keras models), ``"onnx"``,
            ``"openvino"`` or ``"litert"`` (the classifier, lung and lesion networks
            :func:`covidcxr.runtime.export` wrote, see :doc:`/export`). ``None`` (the
            default) or ``"auto"`` (as in ``covidcxr predict --runtime auto``) picks the
            runtime the pipeline was exported for, or TensorFlow (with a
            :class:`~covidcxr.runtime.RuntimeFallbackWarning` when the exported runtime's
            package is missing).

        Raises
        ------
        ModelFormatError
            If the directory is not a saved pipeline, or was written by an incompatible
            version, or was not exported for ``runtime``; the message says which file
            and what is wrong.
        ConfigurationError
            If ``runtime`` is unknown or its package is not installed.
        """
        saved = read_pipeline(directory, detector_options or {})
        manifest = saved.manifest
        manifest_path = Path(directory) / MANIFEST_NAME
        export_entry = manifest.get("export")
        resolved = resolve_runtime(Path(directory), export_entry, runtime)
        classifier = with_runtime(saved.classifier, Path(directory), export_entry, resolved)
        preprocessor_entry = manifest.get("preprocessor")
        detector_entry = manifest.get("detector")
        try:
            config = PipelineConfig(
                preprocessor=ComponentSpec.parse(preprocessor_entry, "preprocessor")
                if preprocessor_entry
                else None,
                classifier=ComponentSpec(manifest["classifier"]["name"]),
                detector=ComponentSpec(detector_entry["name"]) if detector_entry else None,
                evaluation=manifest.get("evaluation", {}),
                trust=_saved_trust_config(manifest, saved.gate is not None),
                lungs=saved.lung_options,
            )
        except (ConfigurationError, TypeError) as exc:
            raise _damaged_manifest(manifest_path, exc) from exc
        pipeline = cls(
            config,
            classifier=classifier,
            detector=saved.detector,
            gate=saved.gate,
            lungs=(
                LungCrop(saved.lungs, **(saved.lung_options or {}))
                if saved.lungs is not None
                else None
            ),
            progress=progress,
            cache_dir=cache_dir,
            workers=workers,
        )
        pipeline._loaded_names = {
            key: spec.name
            for key, spec in (("classifier", config.classifier), ("detector", config.detector))
            if spec is not None
        }
        try:
            # The saved component options (the preprocessor's) are checked here.
            pipeline._build()
        except (ConfigurationError, TypeError) as exc:
            raise _damaged_manifest(manifest_path, exc) from exc
        for name, network in (
            ("lungs", pipeline.lungs_.segmenter if pipeline.lungs_ is not None else None),
            ("detector", pipeline.detector_),
        ):
            exported = exported_network(Path(directory), export_entry, resolved, name)
            if exported is not None:
                if not isinstance(network, RunsNetwork):
                    raise ModelFormatError(
                        f"{Path(directory) / MANIFEST_NAME}: an exported {name} network, but "
                        f"the pipeline's {name} stage ({type(network).__name__}) cannot run it"
                    )
                network.exported_ = exported
        try:
            pipeline._check_preprocessing()
        except ConfigurationError as exc:
            raise ModelFormatError(f"{Path(directory) / 'pipeline.json'}: {exc}") from None
        pipeline.history_ = dict(manifest.get("history") or {})
        pipeline.training_fingerprint_ = manifest.get("training_data_fingerprint")
        pipeline.trust_ = TrustState.from_dict(
            manifest.get("trust") or {}, Path(directory) / MANIFEST_NAME, pipeline.classes_
        )
        pipeline.training_data_ = manifest.get("training_data")
        pipeline._card_records = {
            key: list(manifest.get(key) or []) for key in ("evaluations", "changelog")
        }
        # A save writes the Keras models only: it says so while the card claims the export.
        pipeline._loaded_export = (
            {
                "runtime": str(export_entry.get("runtime")),
                "precision": str(export_entry.get("precision")),
            }
            if export_entry is not None
            else None
        )
        expected = tuple(manifest.get("classes", ()))
        if expected and tuple(pipeline.classes_) != expected:
            raise ModelFormatError(
                f"{Path(directory) / 'pipeline.json'}: the classifier's classes "
                f"{pipeline.classes_} differ from the manifest's {expected}"
            )
        return pipeline
