"""Exporting a saved pipeline's networks to ONNX Runtime, OpenVINO or LiteRT, guarded.

:func:`export` copies a saved pipeline (every file its save wrote, Keras weights kept as
float32 without optimizer state: :func:`covidcxr.pretrained.write_shippable_copy`), adds
the classifier's network (and the lung segmenter's and local detector's U-Nets, where the
pipeline has them) exported through Keras's own :meth:`keras.Model.export`
(``exported/classifier.onnx``, OpenVINO's ``exported/classifier.xml`` and ``.bin``, or
``exported/classifier.tflite``), quantised to int8 when asked (ONNX Runtime's static
quantisation, the TFLite converter's full-integer quantisation, or NNCF's for OpenVINO),
and measures each exported network against its Keras model on held-out images
(:func:`measure_guard`, :func:`measure_mask_guard`). The folder is written beside its
target and renamed into place only when every guard holds.
"""

# Keras, TensorFlow and the runtime packages are imported inside functions on purpose.
# ruff: noqa: PLC0415

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from attrs import field, frozen
from numpy.typing import NDArray

from covidcxr._unet import maps_in_chunks
from covidcxr._version import __version__
from covidcxr.classify._runtime import (
    EXPORT_RUNTIMES,
    PRECISIONS,
    Network,
    RuntimeClassifier,
    open_network,
    openvino_offers_bf16,
    runtime_available,
)
from covidcxr.classify._vgg19 import VGG19Classifier
from covidcxr.detect._local import LocalDetector
from covidcxr.errors import (
    AccuracyGuardError,
    ConfigurationError,
    InvalidImageError,
    SyntheticModelWarning,
)
from covidcxr.files import check_output_directory, output_directory
from covidcxr.lungs._segmenter import LungSegmenter
from covidcxr.pipeline import MANIFEST_NAME, MODEL_CARD_NAME, Pipeline
from covidcxr.pipeline._card import card_files, changelog_entry
from covidcxr.pipeline._prepared import SourceLike, as_source
from covidcxr.pretrained._shipping import write_shippable_copy
from covidcxr.runtime._guard import (
    MAX_ACCURACY_DROP,
    MAX_RECALL_DROP,
    MIN_MASK_DICE,
    GuardReport,
    MaskGuardReport,
    measure_guard,
    measure_mask_guard,
)
from covidcxr.sources import CatalogSource, decode_item

if TYPE_CHECKING:
    import keras

    from covidcxr.records import XRay

__all__ = ["EXPORTED_FOLDER", "ExportReport", "cpu_features", "export"]

#: The folder of an exported pipeline that holds the exported networks.
EXPORTED_FOLDER: Final = "exported"
#: The exported file's suffix for each runtime (OpenVINO's ``.bin`` sits beside its ``.xml``).
_SUFFIX: Final = {"onnx": ".onnx", "openvino": ".xml", "litert": ".tflite"}
#: Images per batch fed to ONNX Runtime's calibration.
_CALIBRATION_BATCH: Final = 8
# The instruction-set extensions that decide int8 and bf16 speed on x86 CPUs.
_CPU_FEATURES: Final = (
    "AVX2",
    "FMA3",
    "AVX512F",
    "AVX512_VNNI",
    "AVX512_BF16",
    "AVX512_FP16",
    "AVX_VNNI",
    "AMX_TILE",
    "AMX_INT8",
    "AMX_BF16",
)


@frozen
class ExportReport:
    """What :func:`export` wrote and measured.

    Parameters
    ----------
    path
        The exported pipeline's folder.
    runtime, precision
        What the network was exported for.
    artifact
        The exported classifier's file, relative to ``path``.
    guard
        The exported classifier against the Keras model on the held-out images.
    n_calibration_images
        How many images calibrated the int8 quantisation (0 for other precisions).
    artifacts
        Every exported network's file, by network (``"classifier"``, ``"lungs"``,
        ``"detector"``), relative to ``path``.
    mask_guards
        The lung and lesion networks' masks against the Keras networks', by network.
    """

    path: Path
    runtime: str
    precision: str
    artifact: str
    guard: GuardReport
    n_calibration_images: int
    artifacts: Mapping[str, str] = field(factory=dict)
    mask_guards: Mapping[str, MaskGuardReport] = field(factory=dict)


def cpu_features() -> list[str]:
    """The int8/bf16-relevant x86 extensions this CPU has (as NumPy detected them).

    Examples
    --------
    >>> isinstance(cpu_features(), list)
    True
    """
    try:
        # NumPy's own dispatch table of the extensions it detected (NumPy 2 names it so).
        found = importlib.import_module("numpy._core._multiarray_umath").__cpu_features__
    except (ImportError, AttributeError):  # pragma: no cover - older NumPy
        return []
    return [name for name in _CPU_FEATURES if found.get(name)]


def _check_request(runtime: str, precision: str, calibration: object) -> None:
    if runtime not in EXPORT_RUNTIMES:
        raise ConfigurationError(
            f"runtime must be one of {', '.join(map(repr, EXPORT_RUNTIMES))}, not {runtime!r}"
        )
    if precision not in PRECISIONS:
        raise ConfigurationError(
            f"precision must be one of {', '.join(map(repr, PRECISIONS))}, not {precision!r}"
        )
    if not runtime_available(runtime):
        raise ConfigurationError(
            f"exporting for {runtime!r} needs the {EXPORT_RUNTIMES[runtime]!r} package; "
            f"install it with pip install 'covidcxr[{runtime}]'"
        )
    if precision == "int8":
        if runtime == "openvino" and importlib.util.find_spec("nncf") is None:
            raise ConfigurationError(
                "OpenVINO's int8 export needs NNCF (its post-training quantisation): "
                "pip install 'covidcxr[openvino]'"
            )
        if runtime == "onnx" and importlib.util.find_spec("onnx") is None:
            raise ConfigurationError(
                "int8 export needs the 'onnx' package: pip install 'covidcxr[onnx]'"
            )
        if calibration is None:
            raise ConfigurationError(
                "precision='int8' needs calibration images: pass calibration= a few hundred "
                "training radiographs (a source, a path or a list of XRay)"
            )
    elif calibration is not None:
        raise ConfigurationError(
            f"calibration images are only used by precision='int8', not {precision!r}: "
            "leave calibration out, or ask for int8"
        )
    if precision == "bf16" and (runtime != "openvino" or not openvino_offers_bf16()):
        raise ConfigurationError(
            "bf16 is offered by runtime='openvino' on CPUs with AVX-512 BF16 or AMX; "
            f"{'this CPU has neither' if runtime == 'openvino' else f'not by {runtime!r}'}"
        )


def _export_network(model: keras.Model, runtime: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # tf2onnx probes NumPy's removed aliases; not ours to fix.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        model.export(os.fspath(target), format=runtime, verbose=False)


class _CalibrationBatches:
    """ONNX Runtime's ``CalibrationDataReader``: the calibration input, a batch at a time."""

    def __init__(self, input_name: str, images: NDArray[np.float32]) -> None:
        self._batches: Iterator[dict[str, NDArray[np.float32]]] = iter(
            {input_name: images[start : start + _CALIBRATION_BATCH]}
            for start in range(0, len(images), _CALIBRATION_BATCH)
        )

    def get_next(self) -> dict[str, NDArray[np.float32]] | None:
        return next(self._batches, None)


def _quantise_int8(fp32: Path, target: Path, images: NDArray[np.float32], scratch: Path) -> None:
    """Static int8 quantisation (QDQ, per-channel int8 weights, uint8 activations)."""
    ort = importlib.import_module("onnxruntime")
    quantization = importlib.import_module("onnxruntime.quantization")
    shape_inference = importlib.import_module("onnxruntime.quantization.shape_inference")
    prepared = scratch / f"{target.stem}.prepared.onnx"
    shape_inference.quant_pre_process(os.fspath(fp32), os.fspath(prepared))
    input_name = (
        ort.InferenceSession(os.fspath(prepared), providers=["CPUExecutionProvider"])
        .get_inputs()[0]
        .name
    )
    reader = type(
        "CalibrationBatches", (_CalibrationBatches, quantization.CalibrationDataReader), {}
    )(input_name, images)
    quantization.quantize_static(
        os.fspath(prepared),
        os.fspath(target),
        reader,
        quant_format=quantization.QuantFormat.QDQ,
        per_channel=True,
        activation_type=quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8,
    )


def _quantise_openvino_int8(
    model: keras.Model, target: Path, images: NDArray[np.float32], scratch: Path
) -> None:
    """NNCF's post-training quantisation of the OpenVINO model: int8 weights and activations.

    The float32 model Keras exports is quantised with statistics of ``images`` (one image
    per calibration step) and saved as OpenVINO IR (``.xml`` and ``.bin``).
    """
    ov = importlib.import_module("openvino")
    nncf = importlib.import_module("nncf")
    fp32 = scratch / f"{target.stem}.fp32.xml"
    _export_network(model, "openvino", fp32)
    dataset = nncf.Dataset([images[index : index + 1] for index in range(len(images))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        quantised = nncf.quantize(
            ov.Core().read_model(os.fspath(fp32)), dataset, subset_size=len(images)
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantised, os.fspath(target))


def _export_litert_int8(model: keras.Model, target: Path, images: NDArray[np.float32]) -> None:
    """Full-integer weights and activations by the TFLite converter, float input and output."""
    import tensorflow as tf

    def representative() -> Iterator[list[NDArray[np.float32]]]:
        for index in range(len(images)):  # one image at a time, as the converter expects
            yield [images[index : index + 1]]

    target.parent.mkdir(parents=True, exist_ok=True)
    model.export(
        os.fspath(target),
        format="litert",
        verbose=False,
        optimizations=[tf.lite.Optimize.DEFAULT],
        representative_dataset=representative,
    )


def _write_network(
    model: keras.Model,
    *,
    runtime: str,
    precision: str,
    target: Path,
    calibration: NDArray[np.float32] | None,
    scratch: Path,
) -> None:
    """Export ``model`` to ``target`` for ``runtime``, int8-quantised on ``calibration``."""
    if precision != "int8":
        _export_network(model, runtime, target)
        return
    assert calibration is not None  # noqa: S101 - _check_request requires calibration images
    if runtime == "litert":
        _export_litert_int8(model, target, calibration)
        return
    if runtime == "openvino":
        _quantise_openvino_int8(model, target, calibration, scratch)
        return
    fp32 = scratch / f"{target.stem}.fp32.onnx"
    _export_network(model, runtime, fp32)
    target.parent.mkdir(parents=True, exist_ok=True)
    _quantise_int8(fp32, target, calibration, scratch)


def _spread(source: Iterable[XRay], limit: int) -> list[XRay]:
    """Up to ``limit`` radiographs spread evenly over ``source``, in its order.

    Not the first ``limit``: sources list their class folders one after the other, and
    the first 256 of COVID-QU-Ex's Train are all COVID-19, a biased calibration for int8.
    A catalogued source reads only the radiographs chosen; another one that knows its
    length is read through, keeping the chosen; one that does not gives its first ones.
    """
    if isinstance(source, CatalogSource):
        entries = list(source.pending_entries())
        chosen: list[XRay] = []
        for index in _evenly(len(entries), limit):
            entry = entries[index]
            try:
                chosen.append(decode_item(source.read_item(entry), **source.decode_options))
            except InvalidImageError as exc:
                source.report_invalid(entry.name, exc)  # raises, with on_error="raise"
        return chosen
    if not isinstance(source, Sized):
        return list(islice(source, limit))
    wanted = set(_evenly(len(source), limit))
    return [xray for position, xray in enumerate(source) if position in wanted]


def _evenly(n: int, limit: int) -> list[int]:
    """``min(n, limit)`` positions spread evenly over ``range(n)``, the first included."""
    if n <= limit:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, limit).round()})


def _calibration_inputs(
    pipeline: Pipeline, calibration: SourceLike, limit: int
) -> tuple[Sequence[XRay], Sequence[XRay]]:
    """``limit`` calibration radiographs, as the lung stage and the classifier see them."""
    frames = pipeline.preprocessed(_spread(as_source(calibration, "calibration"), limit))
    return frames, pipeline.crop_to_lungs(frames)


def _segmentation_networks(
    pipeline: Pipeline,
) -> list[tuple[str, LungSegmenter | LocalDetector, float]]:
    """The fitted lung and lesion U-Nets a pipeline runs, with the threshold of their masks."""
    found: list[tuple[str, LungSegmenter | LocalDetector, float]] = []
    segmenter = pipeline.lungs_.segmenter if pipeline.lungs_ is not None else None
    if isinstance(segmenter, LungSegmenter) and segmenter.fitted:
        found.append(("lungs", segmenter, float(segmenter.threshold)))
    detector = pipeline.detector_
    if isinstance(detector, LocalDetector) and detector.fitted:
        found.append(("detector", detector, float(detector.mask_threshold)))
    return found


def _export_segmentation_networks(
    networks: list[tuple[str, LungSegmenter | LocalDetector, float]],
    inputs: Mapping[str, Sequence[XRay]],
    calibration: Mapping[str, Sequence[XRay] | None],
    *,
    artifacts: dict[str, str],
    staging: Path,
    runtime: str,
    precision: str,
    scratch: Path,
    min_mask_dice: float,
    refuse: Callable[[list[str]], None],
) -> dict[str, MaskGuardReport]:
    """Export each U-Net into ``staging`` (adding its file to ``artifacts``) and guard it.

    ``refuse`` raises for a guard's failures, so that a refused network stops the export
    at once.
    """
    guards: dict[str, MaskGuardReport] = {}
    for name, estimator, threshold in networks:
        artifacts[name] = f"{EXPORTED_FOLDER}/{name}{_SUFFIX[runtime]}"
        # The Keras network's maps first: running it also traces the call that Keras's
        # exporter needs (a loaded model has never been called).
        batch = estimator.prepare_batch(inputs[name])
        reference_maps = estimator.run_network(estimator.model_, batch, 32)
        calibrating = calibration[name]
        _write_network(
            estimator.model_,
            runtime=runtime,
            precision=precision,
            target=staging / artifacts[name],
            calibration=estimator.prepare_batch(calibrating) if calibrating is not None else None,
            scratch=scratch,
        )
        guards[name] = _mask_guard(
            name,
            batch,
            reference_maps,
            open_network(runtime, staging / artifacts[name], precision),
            threshold=threshold,
            min_mean_dice=min_mask_dice,
        )
        refuse(guards[name].failures)
    return guards


def _mask_guard(
    name: str,
    batch: NDArray[np.float32],
    reference: NDArray[np.float32],
    run: Network,
    *,
    threshold: float,
    min_mean_dice: float,
) -> MaskGuardReport:
    """The exported network's maps of ``batch`` against the Keras network's (``reference``)."""
    exported = maps_in_chunks(run, batch, 32)
    return measure_mask_guard(
        name, reference, exported, threshold=threshold, min_mean_dice=min_mean_dice
    )


def _runtime_version(runtime: str) -> str:
    module = importlib.import_module(EXPORT_RUNTIMES[runtime])
    return str(getattr(module, "__version__", "unknown"))


def _export_section(entry: dict[str, Any]) -> str:
    guard = entry["guard"]
    recall = ", ".join(
        f"{label} {drop:+.2f}" for label, drop in guard["recall_drop_points"].items()
    )
    calibration = entry["calibration"]
    calibrated = (
        f"; int8 calibrated on {calibration['n_images']} images ({calibration['images']})"
        if calibration
        else ""
    )
    return "\n".join(
        [
            "## Exported networks",
            "",
            f"- Runtime: {entry['runtime']} ({EXPORT_RUNTIMES[entry['runtime']]} "
            f"{entry['versions'][entry['runtime']]}), precision {entry['precision']}, file "
            f"`{entry['artifacts']['classifier']}`{calibrated}",
            f"- CPU features at export: {', '.join(entry['cpu_features']) or 'not detected'}",
            f"- Accuracy guard on {guard['n_images']} held-out images ({entry['validation']}): "
            f"Keras {100 * guard['reference_accuracy']:.2f}%, exported "
            f"{100 * guard['exported_accuracy']:.2f}% (drop {guard['accuracy_drop_points']:.2f} "
            f"points, limit {guard['max_accuracy_drop_points']:g}); recall drop by class "
            f"(points, limit {guard['max_recall_drop_points']:g}): {recall or 'none'}",
            f"- Largest change of a class probability: "
            f"{guard['max_abs_probability_difference']:.2e}; labels changed: "
            f"{guard['n_labels_changed']}",
            *(
                f"- The {name} network, file `{entry['artifacts'][name]}`: its masks agree with "
                f"the Keras network's at a mean Dice of {masks['mean_dice']:.4f} (lowest "
                f"{masks['min_dice']:.4f}, limit {masks['min_mean_dice']:g}) on "
                f"{masks['n_images']} held-out images; largest change of a pixel's "
                f"probability {masks['max_abs_probability_difference']:.2e}"
                for name, masks in (entry.get("mask_guards") or {}).items()
            ),
            "",
        ]
    )


def _record_export(folder: Path, entry: dict[str, Any]) -> None:
    """Add the export entry and a changelog line to the manifest; rewrite the card."""
    manifest_path = folder / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["export"] = entry
    manifest["changelog"] = [
        *(manifest.get("changelog") or []),
        changelog_entry(
            "exported",
            f"{', '.join(entry['artifacts'])} exported for {entry['runtime']} at "
            f"{entry['precision']}; accuracy "
            f"drop {entry['guard']['accuracy_drop_points']:.2f} points on "
            f"{entry['guard']['n_images']} held-out images",
        ),
    ]
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    for name, text in card_files(manifest).items():
        written = text
        if name == MODEL_CARD_NAME:
            body, footer, tail = text.rpartition("\nGenerated by covidcxr ")
            section = _export_section(entry)
            written = f"{body}\n{section}{footer}{tail}" if footer else f"{text}\n{section}"
        (folder / name).write_text(written, encoding="utf-8")


def _describe(source: object, given: str | None) -> str:
    if given is not None:
        return given
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return f"{type(source).__name__} of radiographs"


def export(
    pipeline: Pipeline | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    validation: SourceLike,
    runtime: str = "openvino",
    precision: str = "fp32",
    calibration: SourceLike | None = None,
    calibration_limit: int = 256,
    validation_description: str | None = None,
    calibration_description: str | None = None,
    max_accuracy_drop: float = MAX_ACCURACY_DROP,
    max_recall_drop: float = MAX_RECALL_DROP,
    min_mask_dice: float = MIN_MASK_DICE,
    overwrite: bool = False,
) -> ExportReport:
    """Write a copy of a saved pipeline whose networks run exported, if accurate enough.

    The copy holds every file of the saved pipeline, and the classifier's network exported
    by Keras (:meth:`keras.Model.export`) for ``runtime`` at ``precision``, with the lung
    segmenter's and the local lesion detector's networks where the pipeline has them (the
    lung network guarded on the whole prepared frames, the lesion network on the lung
    crops: their masks must agree with the Keras networks' at a mean Dice of at least
    ``min_mask_dice``). Before it is
    renamed into place, the exported network and the Keras model label the held-out
    ``validation`` radiographs (prepared as the pipeline prepares them); the export is
    refused, and nothing is written, when accuracy drops by more than
    ``max_accuracy_drop`` points or any class's recall by more than ``max_recall_drop``.
    The figures go into ``pipeline.json`` (``"export"``) and the model card. Load the copy
    with :meth:`covidcxr.Pipeline.load` (``runtime=None`` picks the export).

    Parameters
    ----------
    pipeline
        A saved pipeline's folder, or a fitted :class:`~covidcxr.Pipeline` (saved first to
        a temporary folder).
    out_dir
        Where the exported pipeline goes (a new folder, or one covidcxr wrote, with
        ``overwrite``).
    validation
        Labelled held-out radiographs (a source, path or list of :class:`~covidcxr.XRay`)
        the guard measures both networks on; never the calibration images.
    runtime
        ``"openvino"`` (the default: the fastest at float32 and int8 on this project's
        benchmark, at 64 and 224 px, batches of 1 and 32; see :doc:`/export`), ``"onnx"``
        (ONNX Runtime) or ``"litert"`` (LiteRT, formerly TensorFlow Lite).
    precision
        ``"fp32"``; ``"int8"`` (ONNX Runtime's static quantisation, LiteRT's
        full-integer quantisation or NNCF's for OpenVINO, calibrated on
        ``calibration``); ``"bf16"`` (OpenVINO on CPUs with AVX-512 BF16 or AMX).
    calibration
        Radiographs drawn from the training data, for int8 (``calibration_limit`` of
        them, spread evenly over the source, so that every class folder contributes).
    calibration_limit
        The most calibration images used.
    validation_description, calibration_description
        What the images are, in words, for the model card.
    max_accuracy_drop, max_recall_drop
        The guard's limits, in percentage points.
    min_mask_dice
        The mask guard's limit: the least mean Dice between a segmentation network's masks
        and the Keras network's.
    overwrite
        Replace an exported (or saved) pipeline at ``out_dir``.

    Returns
    -------
    ExportReport
        The folder, artifact and the guard's figures.

    Raises
    ------
    AccuracyGuardError
        If the exported classifier loses more accuracy or recall than allowed, or a
        segmentation network's masks agree too little; nothing is written. Its ``report``
        attribute holds the classifier's figures.
    ConfigurationError
        If the runtime or precision is unknown or not offered here, its package is not
        installed, int8 is asked without calibration images (or calibration images come
        without int8), the images are unusable, or
        the pipeline's classifier is not a :class:`~covidcxr.VGG19Classifier` (a
        plugin's classifier has no exporter; nor has an
        :class:`~covidcxr.classify.EnsembleClassifier`).
    ModelFormatError
        If ``pipeline`` is not a saved pipeline this covidcxr can load.
    OutputExistsError
        If ``out_dir`` exists and may not be replaced.
    """
    _check_request(runtime, precision, calibration)
    if calibration_limit < 1:
        raise ConfigurationError(f"calibration_limit must be at least 1, not {calibration_limit}")
    # Before any work: a folder that may not be replaced is refused at once (and again
    # when the export is renamed into place).
    check_output_directory(out_dir, "pipeline", overwrite=overwrite)
    scratch = Path(tempfile.mkdtemp(prefix="covidcxr-export-"))
    try:
        if isinstance(pipeline, Pipeline):
            source_dir = pipeline.save(scratch / "saved")
        else:
            source_dir = Path(pipeline)
        reference = Pipeline.load(source_dir, runtime="tensorflow")
        keras_classifier = reference.classifier_
        if not isinstance(keras_classifier, VGG19Classifier):
            raise ConfigurationError(
                f"only a VGG19Classifier can be exported, not a {type(keras_classifier).__name__}"
                " (a plugin's classifier has no exporter, and an ensemble's several networks "
                "are not exported as one); export a pipeline whose [classifier] is 'vgg19'"
            )
        networks = _segmentation_networks(reference)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntheticModelWarning)
            frames = reference.preprocessed(validation)
            held_out = list(reference.crop_to_lungs(frames))
            calibration_frames, calibration_crops = (
                _calibration_inputs(reference, calibration, calibration_limit)
                if precision == "int8" and calibration is not None
                else (None, None)
            )
        calibration_images = (
            keras_classifier.prepare_batch(calibration_crops)
            if calibration_crops is not None
            else None
        )
        labels = [xray.label for xray in held_out]
        if not held_out or any(label is None for label in labels):
            raise ConfigurationError(
                "the guard needs labelled held-out radiographs (validation=), every one labelled"
            )
        if calibration_images is not None and not len(calibration_images):
            raise ConfigurationError("calibration= holds no radiographs")
        reference_probabilities = keras_classifier.predict_proba(held_out)
        copy = scratch / "copy"
        write_shippable_copy(source_dir, copy, precision="float32")
        artifacts = {"classifier": f"{EXPORTED_FOLDER}/classifier{_SUFFIX[runtime]}"}
        with output_directory(out_dir, "pipeline", overwrite=overwrite) as staging:
            for entry in copy.iterdir():
                entry.rename(staging / entry.name)
            _write_network(
                keras_classifier.model_,
                runtime=runtime,
                precision=precision,
                target=staging / artifacts["classifier"],
                calibration=calibration_images,
                scratch=scratch,
            )
            exported = RuntimeClassifier(
                keras_classifier, runtime, staging / artifacts["classifier"], precision
            )
            report = measure_guard(
                [str(label) for label in labels],
                reference_probabilities,
                exported.predict_proba(held_out),
                keras_classifier.classes_,
                max_accuracy_drop=max_accuracy_drop,
                max_recall_drop=max_recall_drop,
            )

            def refuse(failures: list[str]) -> None:
                if failures:
                    raise AccuracyGuardError(
                        f"refusing to export for {runtime} at {precision}: "
                        f"{'; '.join(failures)} on {report.n_images} held-out images; "
                        "nothing was written"
                        + (" (calibrate on more varied training images?)" if calibration else ""),
                        report,
                    )

            refuse(report.failures)  # before exporting another network
            mask_guards = _export_segmentation_networks(
                networks,
                {"lungs": frames, "detector": held_out},
                {"lungs": calibration_frames, "detector": calibration_crops},
                artifacts=artifacts,
                staging=staging,
                runtime=runtime,
                precision=precision,
                scratch=scratch,
                min_mask_dice=min_mask_dice,
                refuse=refuse,
            )
            _record_export(
                staging,
                {
                    "runtime": runtime,
                    "precision": precision,
                    "artifacts": artifacts,
                    "guard": report.to_dict(),
                    "mask_guards": {name: guard.to_dict() for name, guard in mask_guards.items()},
                    "validation": _describe(validation, validation_description),
                    "calibration": (
                        {
                            "n_images": len(calibration_images),
                            "images": _describe(calibration, calibration_description),
                        }
                        if calibration_images is not None
                        else None
                    ),
                    "cpu_features": cpu_features(),
                    "versions": {
                        "covidcxr": __version__,
                        runtime: _runtime_version(runtime),
                    },
                },
            )
        n_calibration = len(calibration_images) if calibration_images is not None else 0
        return ExportReport(
            Path(out_dir),
            runtime,
            precision,
            artifacts["classifier"],
            report,
            n_calibration,
            artifacts=artifacts,
            mask_guards=mask_guards,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
