"""A fitted classifier whose network runs in an exported runtime (ONNX Runtime, OpenVINO, LiteRT).

:func:`covidcxr.runtime.export` writes a classifier's Keras network as a runtime artifact
beside the saved Keras model; :class:`RuntimeClassifier` predicts with that artifact. The
radiographs reach it exactly as they reach the Keras model (the classifier's own
prediction input, in NumPy: resizing, channels, normalisation, batches of
``batch_size``), so only the network's arithmetic changes. The runtime packages are
optional extras, imported here on first use (``pip install covidcxr[onnx]``,
``covidcxr[openvino]`` or ``covidcxr[litert]``).
"""

# Runtime packages are optional and imported inside functions: importing covidcxr stays
# fast and works without them.

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, Self

import numpy as np
from numpy.typing import NDArray

from covidcxr._unet import ExportedNetwork
from covidcxr.classify._inputs import ScanStats, original_errors
from covidcxr.classify._predicting import average_views, warn_if_unlike_training
from covidcxr.classify._vgg19 import VGG19Classifier
from covidcxr.errors import ConfigurationError, ModelFormatError
from covidcxr.preprocess._profile import InputRecorder
from covidcxr.protocols import Classifier
from covidcxr.records import XRay

__all__ = [
    "EXPORT_RUNTIMES",
    "PRECISIONS",
    "RUNTIMES",
    "ExportedNetwork",
    "ExportedRuntime",
    "Precision",
    "RuntimeClassifier",
    "RuntimeFallbackWarning",
    "exported_network",
    "open_network",
    "resolve_runtime",
    "runtime_available",
    "with_runtime",
]

ExportedRuntime = Literal["onnx", "openvino", "litert"]
Precision = Literal["fp32", "int8", "bf16"]

#: The runtimes a classifier can be exported to, and the package each needs.
EXPORT_RUNTIMES: Final[dict[str, str]] = {
    "onnx": "onnxruntime",
    "openvino": "openvino",
    "litert": "ai_edge_litert",
}
#: Every runtime :meth:`covidcxr.Pipeline.load` accepts (``"tensorflow"``: the Keras model).
RUNTIMES: Final = ("tensorflow", *EXPORT_RUNTIMES)
PRECISIONS: Final = ("fp32", "int8", "bf16")
#: The extra that installs each runtime's package.
_EXTRAS: Final = {
    "onnx": "covidcxr[onnx]",
    "openvino": "covidcxr[openvino]",
    "litert": "covidcxr[litert]",
}

Network = Callable[[NDArray[np.float32]], NDArray[np.float32]]


class RuntimeFallbackWarning(UserWarning):
    """A pipeline exported for a runtime is run by TensorFlow (its Keras model) instead.

    Issued by :meth:`covidcxr.Pipeline.load` without an explicit ``runtime`` when the
    pipeline was exported for a runtime whose package is not installed, and by
    :meth:`covidcxr.Pipeline.save` of a pipeline loaded from an export: a save writes the
    Keras models only, so the saved copy runs TensorFlow. The Keras model computes in
    float32, so an int8 or bf16 export's figures do not apply to it.
    """


def runtime_available(runtime: str) -> bool:
    """Whether ``runtime``'s package can be imported (``"tensorflow"`` always can).

    Examples
    --------
    >>> runtime_available("tensorflow")
    True
    """
    if runtime == "tensorflow":
        return True
    package = EXPORT_RUNTIMES.get(runtime)
    if package is None:
        raise ConfigurationError(
            f"runtime must be one of {', '.join(map(repr, RUNTIMES))}, not {runtime!r}"
        )
    try:
        importlib.import_module(package)
    except ImportError:
        return False
    return True


def _require(runtime: str) -> Any:
    package = EXPORT_RUNTIMES[runtime]
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise ConfigurationError(
            f"runtime {runtime!r} needs the {package!r} package, which is not installed "
            f"({exc}); install it with pip install '{_EXTRAS[runtime]}', or use "
            "runtime='tensorflow'"
        ) from exc


def _onnx_network(path: Path) -> Network:
    ort = _require("onnx")
    try:
        session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelFormatError(f"{path}: ONNX Runtime could not load it: {exc}") from exc
    name = session.get_inputs()[0].name

    def run(batch: NDArray[np.float32]) -> NDArray[np.float32]:
        return np.asarray(session.run(None, {name: batch})[0], np.float32)

    return run


def openvino_offers_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes in bfloat16 on this machine."""
    ov = _require("openvino")
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _openvino_network(path: Path, precision: str) -> Network:
    ov = _require("openvino")
    core = ov.Core()
    # bf16 is a property of the compiled model, not of the file: the IR holds float32.
    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
    try:
        compiled = core.compile_model(os.fspath(path), "CPU", config)
    except Exception as exc:  # OpenVINO raises its own untyped errors
        raise ModelFormatError(f"{path}: OpenVINO could not load it: {exc}") from exc

    def run(batch: NDArray[np.float32]) -> NDArray[np.float32]:
        return np.asarray(compiled(batch)[0], np.float32)

    return run


def _litert_network(path: Path) -> Network:
    _require("litert")
    interpreter_module = importlib.import_module("ai_edge_litert.interpreter")
    try:
        interpreter = interpreter_module.Interpreter(
            model_path=os.fspath(path), num_threads=os.cpu_count() or 1
        )
    except Exception as exc:  # LiteRT raises its own untyped errors
        raise ModelFormatError(f"{path}: LiteRT could not load it: {exc}") from exc
    source = interpreter.get_input_details()[0]["index"]
    result = interpreter.get_output_details()[0]["index"]
    shape: list[tuple[int, ...]] = [()]

    def run(batch: NDArray[np.float32]) -> NDArray[np.float32]:
        # The batch dimension is dynamic in the file; the interpreter is sized per shape.
        if batch.shape != shape[0]:
            interpreter.resize_tensor_input(source, batch.shape)
            interpreter.allocate_tensors()
            shape[0] = batch.shape
        interpreter.set_tensor(source, np.ascontiguousarray(batch))
        interpreter.invoke()
        return np.array(interpreter.get_tensor(result), np.float32)

    return run


def open_network(runtime: str, path: Path, precision: str = "fp32") -> Network:
    """A function from model input batches to probabilities, run by ``runtime``.

    Raises
    ------
    ConfigurationError
        If the runtime's package is not installed, or ``precision`` is bf16 on a machine
        whose runtime does not offer it.
    ModelFormatError
        If the runtime cannot load ``path``.
    """
    if runtime == "onnx":
        return _onnx_network(path)
    if runtime == "litert":
        return _litert_network(path)
    if runtime == "openvino":
        if precision == "bf16" and not openvino_offers_bf16():
            raise ConfigurationError(
                "OpenVINO offers no bf16 on this CPU (it needs AVX-512 BF16 or AMX); use "
                "precision='fp32' or 'int8'"
            )
        return _openvino_network(path, precision)
    raise ConfigurationError(
        f"runtime must be one of {', '.join(map(repr, EXPORT_RUNTIMES))}, not {runtime!r}"
    )


class RuntimeClassifier:
    """A fitted :class:`~covidcxr.VGG19Classifier` whose network runs in another runtime.

    Made by :meth:`covidcxr.Pipeline.load` with ``runtime="onnx"``, ``"openvino"`` or ``"litert"``
    for a pipeline written by :func:`covidcxr.runtime.export`. Input preparation, classes,
    the preprocessing check and the Keras model (:attr:`keras_classifier`, used by
    Grad-CAM and by :meth:`save`) are the Keras classifier's; :meth:`predict_proba` runs
    the exported network.

    Parameters
    ----------
    keras_classifier
        The fitted Keras classifier the artifact was exported from.
    runtime
        ``"onnx"``, ``"openvino"`` or ``"litert"``.
    artifact
        The exported network's file (``.onnx``, OpenVINO ``.xml`` or ``.tflite``).
    precision
        ``"fp32"``, ``"int8"`` (the artifact is quantised) or ``"bf16"`` (OpenVINO
        computes in bfloat16).
    """

    def __init__(
        self,
        keras_classifier: VGG19Classifier,
        runtime: str,
        artifact: str | os.PathLike[str],
        precision: str = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigurationError(
                f"precision must be one of {', '.join(map(repr, PRECISIONS))}, not {precision!r}"
            )
        self.keras_classifier = keras_classifier
        self.runtime = runtime
        self.artifact = Path(artifact)
        self.precision = precision
        self.classes_: tuple[str, ...] = keras_classifier.classes_
        self._network = open_network(runtime, self.artifact, precision)

    def __repr__(self) -> str:
        return (
            f"RuntimeClassifier(runtime={self.runtime!r}, precision={self.precision!r}, "
            f"artifact={os.fspath(self.artifact)!r})"
        )

    # What the pipeline and its other parts read from a classifier, the Keras one's: the
    # preprocessing check (RecordsPreprocessing), the model card, Grad-CAM (model_).

    @property
    def preprocessing_(self) -> Any:
        """The preprocessing of the training images (the Keras classifier's)."""
        return self.keras_classifier.preprocessing_

    @preprocessing_.setter
    def preprocessing_(self, value: Any) -> None:
        # Pipeline.set_working_size and set_window_levels record a preprocessing option
        # as trained with: the exported network was exported from the Keras one.
        self.keras_classifier.preprocessing_ = value

    @property
    def input_profile_(self) -> Any:
        """The training images' intensity statistics (the Keras classifier's)."""
        return self.keras_classifier.input_profile_

    @property
    def input_size(self) -> int:
        """Side of the square model input in pixels."""
        return self.keras_classifier.input_size

    @property
    def input_normalization(self) -> str:
        """The input normalisation (``"imagenet"`` or ``"symmetric"``)."""
        return self.keras_classifier.input_normalization

    @property
    def model_(self) -> Any:
        """The Keras model (Grad-CAM differentiates it; predictions use the export)."""
        return self.keras_classifier.model_

    @property
    def feature_layer_name(self) -> str:
        """The Keras model's last convolutional feature layer (for Grad-CAM)."""
        return self.keras_classifier.feature_layer_name

    def prepare_batch(self, xrays: Iterable[XRay]) -> NDArray[np.float32]:
        """The exact input the exported network receives (the Keras classifier's)."""
        return self.keras_classifier.prepare_batch(xrays)

    def fit(self, xrays: Iterable[XRay], validation: Iterable[XRay] | None = None) -> Self:
        """Refused: an exported network does not train.

        Raises
        ------
        ConfigurationError
            Always; train the Keras classifier and export it again.
        """
        raise ConfigurationError(
            "an exported classifier does not train; fit the Keras pipeline (runtime="
            "'tensorflow') and export it again"
        )

    @original_errors()
    def predict_proba(self, xrays: Iterable[XRay]) -> NDArray[np.float32]:
        """Class probabilities from the exported network, columns in :attr:`classes_` order."""
        keras_classifier = self.keras_classifier
        keras_classifier._check_params()  # as the Keras path: set_params may have changed them
        stats = ScanStats(inputs=InputRecorder())
        batches = keras_classifier._inference_batches(xrays, stats, views=True)
        views = keras_classifier.n_views
        parts = [average_views(self._network(batch), views) for batch in batches]
        stats.warn(stacklevel=4)
        warn_if_unlike_training(keras_classifier, stats, stacklevel=4)
        if not parts:
            return np.zeros((0, len(self.classes_)), np.float32)
        return np.concatenate(parts)

    def predict(self, xrays: Iterable[XRay]) -> list[str]:
        """The most probable label of each radiograph."""
        return [self.classes_[i] for i in self.predict_proba(xrays).argmax(axis=1)]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save the Keras classifier (an exported network is written by ``export`` only)."""
        self.keras_classifier.save(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Refused: load the pipeline with :meth:`covidcxr.Pipeline.load` and ``runtime``.

        Raises
        ------
        ConfigurationError
            Always: the artifact and its precision are named by the pipeline's manifest.
        """
        raise ConfigurationError(
            f"{os.fspath(path)}: load an exported classifier with "
            "covidcxr.Pipeline.load(directory, runtime=...)"
        )


def resolve_runtime(
    directory: Path, export_entry: Mapping[str, Any] | None, runtime: str | None
) -> tuple[str, str] | None:
    """The ``(runtime, precision)`` a loaded pipeline's exported networks run with.

    ``None`` means TensorFlow runs the Keras models. ``runtime=None`` (or ``"auto"``, as
    the command line says it) picks the runtime the
    pipeline was exported for, falling back to TensorFlow with a
    :class:`RuntimeFallbackWarning` when its package is missing, and TensorFlow for a
    pipeline that was never exported. An explicit runtime is used or refused, never
    replaced.

    Raises
    ------
    ConfigurationError
        If ``runtime`` is unknown or its package is not installed.
    ModelFormatError
        If the pipeline was not exported for ``runtime``, or its export entry is damaged.
    """
    manifest_path = directory / "pipeline.json"
    if runtime == "auto":  # the command line's word for the default
        runtime = None
    if runtime is not None and runtime not in RUNTIMES:
        raise ConfigurationError(
            f"runtime must be one of {', '.join(map(repr, RUNTIMES))}, not {runtime!r}"
        )
    if runtime == "tensorflow" or (runtime is None and export_entry is None):
        return None
    if export_entry is None:
        raise ModelFormatError(
            f"{directory} was not exported for {runtime!r}: export it with "
            f"covidcxr.runtime.export(..., runtime={runtime!r}), or load it with "
            "runtime='tensorflow'"
        )
    if not isinstance(export_entry, Mapping):
        raise ModelFormatError(
            f"{manifest_path}: the 'export' entry is damaged ({export_entry!r:.80}); export "
            "the pipeline again"
        )
    exported = export_entry.get("runtime")
    artifacts = export_entry.get("artifacts")
    precision = export_entry.get("precision")
    if (
        exported not in EXPORT_RUNTIMES
        or not isinstance(artifacts, Mapping)
        or not isinstance(artifacts.get("classifier"), str)
        or not all(isinstance(path, str) for path in artifacts.values())
        or precision not in PRECISIONS
    ):
        raise ModelFormatError(
            f"{manifest_path}: the 'export' entry is damaged ({export_entry!r:.80}); export "
            "the pipeline again"
        )
    if runtime is None:
        if not runtime_available(exported):
            warnings.warn(
                f"{directory} was exported for {exported!r} ({precision}), but "
                f"{EXPORT_RUNTIMES[exported]!r} is not installed: TensorFlow runs the float32 "
                f"Keras models instead (pip install '{_EXTRAS[exported]}' to use the export)",
                RuntimeFallbackWarning,
                stacklevel=4,
            )
            return None
        runtime = exported
    if runtime != exported:
        raise ModelFormatError(
            f"{directory} was exported for {exported!r}, not {runtime!r}: export it again "
            f"with runtime={runtime!r}, or load it with runtime={exported!r} or 'tensorflow'"
        )
    return runtime, precision


def _artifact(directory: Path, export_entry: Mapping[str, Any], network: str) -> Path | None:
    relative = export_entry["artifacts"].get(network)
    if not isinstance(relative, str):
        return None
    path = directory / relative
    if not path.is_file():
        raise ModelFormatError(f"{path}: the exported network is missing ({network}); export again")
    return path


def with_runtime(
    classifier: Classifier,
    directory: Path,
    export_entry: Mapping[str, Any] | None,
    resolved: tuple[str, str] | None,
) -> Classifier:
    """The classifier a pipeline loaded with ``resolved`` (:func:`resolve_runtime`) predicts with.

    Raises
    ------
    ModelFormatError
        If the exported classifier is missing, or the classifier is not a VGG19Classifier.
    """
    if resolved is None or export_entry is None:
        return classifier
    if not isinstance(classifier, VGG19Classifier):
        raise ModelFormatError(
            f"{directory / 'pipeline.json'}: only a VGG19Classifier runs exported, not a "
            f"{type(classifier).__name__}"
        )
    path = _artifact(directory, export_entry, "classifier")
    assert path is not None  # noqa: S101 - resolve_runtime checked the entry
    runtime, precision = resolved
    return RuntimeClassifier(classifier, runtime, path, precision)


def exported_network(
    directory: Path,
    export_entry: Mapping[str, Any] | None,
    resolved: tuple[str, str] | None,
    network: str,
) -> ExportedNetwork | None:
    """The exported ``network`` (``"lungs"``, ``"detector"``) to run, if it was exported.

    Raises
    ------
    ModelFormatError
        If the manifest names the network's file but it is missing or unloadable.
    """
    if resolved is None or export_entry is None:
        return None
    path = _artifact(directory, export_entry, network)
    if path is None:
        return None
    runtime, precision = resolved
    return ExportedNetwork(
        open_network(runtime, path, precision),
        runtime=runtime,
        precision=precision,
        artifact=path,
    )
