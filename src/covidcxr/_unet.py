"""The small U-Net the segmentation models share, and the Keras plumbing around it.

The local lesion detector (:class:`~covidcxr.LocalDetector`) and the lung segmenter
(:class:`~covidcxr.lungs.LungSegmenter`) are the same kind of network, trained the same
way (Dice + binary cross-entropy, Adam, early stopping on the validation loss) and saved
the same way (one archive: the network, the parameters, the history): one place builds,
trains, saves and loads it. Keras 3 on TensorFlow is imported only when a network is built
or loaded.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import cv2
import numpy as np
from numpy.typing import NDArray

from covidcxr._model_archive import (
    METADATA_MEMBER,
    ArchiveFormat,
    all_finite,
    check_params,
    read_model_archive,
    write_model_archive,
)
from covidcxr._params import Estimator
from covidcxr._plain import plain_data
from covidcxr._unet_checkpoint import UNetCheckpoint, training_key
from covidcxr.errors import ConfigurationError, ModelFormatError, TrainingDivergedError
from covidcxr.protocols import EpochCallback

__all__ = [
    "ExportedNetwork",
    "RunsNetwork",
    "UNetEstimator",
    "build_unet",
    "check_finite_weights",
    "dice_bce_loss",
    "divergence_check",
    "fit_unet",
    "keras_module",
    "load_unet",
    "load_unet_model",
    "maps_in_chunks",
    "paired_batches",
    "resize_square",
    "save_unet",
]

_Owner = TypeVar("_Owner")


class ExportedNetwork:
    """A segmentation network exported by :func:`covidcxr.runtime.export`, ready to run.

    Parameters
    ----------
    run
        From a batch of model inputs ``(n, size, size, 1)`` to probability maps
        ``(n, size, size, 1)``.
    runtime, precision, artifact
        What runs it, at what precision, from which file (for ``repr`` and reports).
    """

    def __init__(
        self,
        run: Callable[[NDArray[np.float32]], NDArray[np.float32]],
        *,
        runtime: str,
        precision: str,
        artifact: str | os.PathLike[str],
    ) -> None:
        self.run = run
        self.runtime = runtime
        self.precision = precision
        self.artifact = os.fspath(artifact)

    def __repr__(self) -> str:
        return (
            f"ExportedNetwork(runtime={self.runtime!r}, precision={self.precision!r}, "
            f"artifact={self.artifact!r})"
        )


class RunsNetwork:
    """The U-Net's forward pass: the Keras model, or the exported network set at load.

    :meth:`covidcxr.Pipeline.load` with a runtime sets :attr:`exported_` on a pipeline's
    lung segmenter and local detector when :func:`covidcxr.runtime.export` exported them;
    the Keras model (``model_``) stays for training, saving and explanations.
    """

    #: The exported network that predicts instead of the Keras model, if any.
    exported_: ExportedNetwork | None = None

    def run_network(
        self, model: Any, batch: NDArray[np.float32], chunk: int
    ) -> NDArray[np.float32]:
        """Probability maps ``(n, size, size)`` of a prepared batch, ``chunk`` images at a time."""
        exported = self.exported_
        if exported is not None:
            return maps_in_chunks(exported.run, batch, chunk)
        return maps_in_chunks(lambda part: model(part, training=False), batch, chunk)


class UNetEstimator(RunsNetwork, Estimator):
    """What :class:`~covidcxr.LocalDetector` and :class:`~covidcxr.lungs.LungSegmenter` share.

    Their network parameters and schedule (set by each ``__init__``), the check of those
    parameters, the fitted state, and training: build the U-Net and fit it on image and
    target arrays (:func:`fit_unet`). Subclasses name their network and its output.
    """

    #: The Keras model's name and its output layer's, per subclass.
    network_name: ClassVar[str]
    output_name: ClassVar[str]
    #: Parameters that only act after training (thresholds, labels): a checkpoint taken
    #: under other values of them is still resumed.
    inference_params: ClassVar[frozenset[str]]
    #: Parameters that never change what is learnt: run-time wiring and verbosity.
    _run_neutral: ClassVar[frozenset[str]] = frozenset(
        {"checkpoint_dir", "on_epoch_end", "threads", "verbose"}
    )

    input_size: int
    base_filters: int
    depth: int
    epochs: int
    batch_size: int
    learning_rate: float
    augment: bool
    patience: int
    seed: int
    threads: int | None
    verbose: int
    on_epoch_end: EpochCallback | None
    checkpoint_dir: str | os.PathLike[str] | None

    # Learned state.
    model_: Any
    history_: dict[str, list[float]]
    n_training_images_: int

    @staticmethod
    def check_network_params(
        input_size: int, base_filters: int, depth: int, epochs: int, batch_size: int
    ) -> None:
        """Refuse a network shape or schedule that cannot train.

        Raises
        ------
        ConfigurationError
            If ``input_size`` is not a multiple of ``2 ** (depth + 1)``, or a count is
            below 1.
        """
        if input_size < 2 ** (depth + 1) or input_size % 2 ** (depth + 1):
            raise ConfigurationError(
                f"input_size must be a multiple of 2**(depth + 1) = {2 ** (depth + 1)}, "
                f"got {input_size}"
            )
        if epochs < 1 or batch_size < 1 or base_filters < 1 or depth < 1:
            raise ConfigurationError("epochs, batch_size, base_filters and depth must be >= 1")

    @property
    def fitted(self) -> bool:
        """Whether it has a network (from ``fit`` or ``load``)."""
        return getattr(self, "model_", None) is not None

    def _require_fitted(self) -> Any:
        if not self.fitted:
            name = type(self).__name__
            raise ConfigurationError(f"this {name} is not fitted: call fit() or {name}.load(path)")
        return self.model_

    def _train(
        self,
        images: NDArray[np.float32],
        masks: NDArray[np.float32],
        validation_data: tuple[NDArray[np.float32], NDArray[np.float32]] | None,
        *,
        warp: bool,
    ) -> None:
        """Build a fresh U-Net and fit it; sets ``model_``, ``history_`` and the image count.

        Images and targets are flipped (with ``augment``) and warped (with ``warp``)
        together (a flip inside the network would mirror the image against its target).
        With ``checkpoint_dir``, a checkpoint of the same parameters and data there is
        resumed, and one is written after every epoch.
        """
        checkpoint = None
        if self.checkpoint_dir is not None:
            ignored = self._run_neutral | self.inference_params
            params = {k: v for k, v in self.get_params().items() if k not in ignored}
            key = training_key(
                {**params, "warp": warp},
                [images, masks, *(validation_data or (None, None))],
                network=self.network_name,
            )
            checkpoint = UNetCheckpoint(self.checkpoint_dir, key, self.epochs)
        keras = keras_module(self.threads)
        keras.utils.set_random_seed(self.seed)
        model = build_unet(
            keras,
            self.input_size,
            self.base_filters,
            self.depth,
            name=self.network_name,
            output_name=self.output_name,
        )
        # One training process per checkpoint folder, for as long as it trains.
        with checkpoint.held() if checkpoint is not None else contextlib.nullcontext():
            self.history_ = fit_unet(
                keras,
                model,
                images,
                masks,
                validation_data,
                owner=type(self).__name__,
                learning_rate=self.learning_rate,
                batch_size=self.batch_size,
                epochs=self.epochs,
                seed=self.seed,
                patience=self.patience,
                on_epoch_end=self.on_epoch_end,
                verbose=self.verbose,
                flip=self.augment,
                warp=warp,
                checkpoint=checkpoint,
            )
        self.model_ = model
        self.n_training_images_ = int(images.shape[0])


def maps_in_chunks(
    run: Callable[[NDArray[np.float32]], Any], batch: NDArray[np.float32], chunk: int
) -> NDArray[np.float32]:
    """``run``'s probability maps of ``batch``, ``(n, size, size)``, ``chunk`` images a call."""
    maps = [
        np.asarray(run(np.ascontiguousarray(batch[start : start + chunk])), np.float32)[..., 0]
        for start in range(0, len(batch), chunk)
    ]
    return np.concatenate(maps) if maps else np.zeros((0, *batch.shape[1:3]), np.float32)


def keras_module(threads: int | None = None) -> Any:
    """Import Keras on TensorFlow, capping TensorFlow's CPU threads when asked.

    The cap only takes effect before TensorFlow runs its first operation in the process.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras  # noqa: PLC0415 - heavy, imported only when a model is needed
    import tensorflow as tf  # noqa: PLC0415

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            pass  # TensorFlow is already running; its thread pools cannot change now.
    return keras


def resize_square(image: NDArray[Any], size: int) -> NDArray[np.float32]:
    """``image`` as ``float32``, stretched to ``size`` x ``size`` (area-averaged when shrunk)."""
    height, width = image.shape
    interpolation = cv2.INTER_AREA if min(height, width) >= size else cv2.INTER_LINEAR
    resized = cv2.resize(image.astype(np.float32), (size, size), interpolation=interpolation)
    return np.asarray(resized, np.float32)


def _conv_block(keras: Any, x: Any, filters: int) -> Any:
    layers = keras.layers
    for _ in range(2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    return x


def divergence_check(owner: str) -> Callable[[int, dict[str, Any] | None], None]:
    """An ``on_epoch_end`` that raises :class:`TrainingDivergedError` at a non-finite loss.

    A diverged network would otherwise be kept (and saved), and find nothing, or
    everything, in every image.
    """

    def stop_if_diverged(epoch: int, logs: dict[str, Any] | None) -> None:
        bad = {key: float(value) for key, value in (logs or {}).items() if not np.isfinite(value)}
        if bad:
            shown = ", ".join(f"{key}={value}" for key, value in bad.items())
            raise TrainingDivergedError(
                f"{owner} training diverged in epoch {epoch + 1} ({shown}); lower "
                "learning_rate (or check the data for non-finite values) and train again"
            )

    return stop_if_diverged


def training_callbacks(
    keras: Any,
    owner: str,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None,
    *,
    patience: int,
    monitored: bool,
    checkpoint: UNetCheckpoint | None = None,
) -> list[Any]:
    """The callbacks both U-Net estimators train with.

    Stop at a non-finite loss; report each epoch (1-based) to ``on_epoch_end``; with
    validation data (``monitored``), halve the learning rate after ``patience // 2``
    epochs without improvement and stop after ``patience``, keeping the best weights;
    with a ``checkpoint``, write it after every epoch (last, once the others have seen
    the epoch).
    """
    callbacks: list[Any] = [keras.callbacks.LambdaCallback(on_epoch_end=divergence_check(owner))]
    if on_epoch_end is not None:
        report = on_epoch_end
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: report(
                    epoch + 1, {key: float(value) for key, value in (logs or {}).items()}
                )
            )
        )
    plateau = stopping = None
    if monitored:
        plateau = keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=max(1, patience // 2)
        )
        stopping = keras.callbacks.EarlyStopping(
            patience=patience, restore_best_weights=True, monitor="val_loss"
        )
        callbacks += [plateau, stopping]
    if checkpoint is not None:
        callbacks.append(checkpoint.callback(keras, plateau, stopping))
    return callbacks


def check_finite_weights(model: Any, path: str | os.PathLike[str]) -> None:
    """Refuse to save a network whose weights are not finite (training diverged)."""
    if not all_finite(model.get_weights()):
        raise TrainingDivergedError(
            f"not saving to {os.fspath(path)}: the network has non-finite (NaN or "
            "infinite) weights, so training diverged; lower learning_rate and train again"
        )


def save_unet(
    owner: Any,
    path: str | os.PathLike[str],
    archive_format: ArchiveFormat,
    params: Sequence[str],
    extra: Mapping[str, Any],
    *,
    overwrite: bool,
) -> None:
    """Write a fitted U-Net model (``owner``: a detector or segmenter) to one archive.

    The metadata holds ``owner``'s ``params`` (those saved), its training history and
    image count, and ``extra``; the archive is written atomically by
    :func:`covidcxr._model_archive.write_model_archive`.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false, or it is another kind of file.
    TrainingDivergedError
        If the network's weights are not finite.
    """
    model = owner._require_fitted()
    check_finite_weights(model, path)
    metadata = {
        "params": {name: getattr(owner, name) for name in params},
        "history": plain_data(getattr(owner, "history_", {})),
        "n_training_images": getattr(owner, "n_training_images_", None),
        **extra,
    }
    write_model_archive(path, archive_format, model.save, metadata, overwrite=overwrite)


def load_unet_model(
    cls: type[_Owner],
    path: str | os.PathLike[str],
    archive_format: ArchiveFormat,
    params: Sequence[str],
) -> tuple[_Owner, dict[str, Any]]:
    """Read what :func:`save_unet` wrote: a fitted ``cls``, and the archive's metadata.

    ``cls(**saved params)`` gets ``model_``, ``history_`` and ``n_training_images_``;
    what else the metadata holds is the caller's to restore.

    Raises
    ------
    ModelFormatError
        If the file is not an archive of ``archive_format``, is corrupt, names unknown
        parameters or parameters ``cls`` refuses (a wrong type or value), or holds a
        network of another input size.
    """
    with tempfile.TemporaryDirectory(prefix="covidcxr-load-") as scratch:
        metadata, keras_file = read_model_archive(path, archive_format, Path(scratch))
        saved = check_params(cls, metadata, path)
        if set(saved) - set(params):  # parameters it knows but never saves
            raise ModelFormatError(
                f"{path}: metadata sets parameters a saved model does not record "
                f"({', '.join(sorted(set(saved) - set(params)))})"
            )
        try:
            owner = cls(**saved)
        except (TypeError, ValueError) as exc:  # ConfigurationError is a ValueError
            raise ModelFormatError(
                f"{path}: {METADATA_MEMBER} records parameters {cls.__name__} refuses "
                f"({exc}); the file is damaged or was edited by hand: save the model again"
            ) from exc
        fitted: Any = owner  # a LocalDetector or LungSegmenter: the attributes below
        keras = keras_module(fitted.threads)
        model = load_unet(keras, keras_file, path, fitted.input_size)
    fitted.model_ = model
    fitted.history_ = metadata.get("history") or {}
    n_training_images = metadata.get("n_training_images")
    fitted.n_training_images_ = int(n_training_images) if n_training_images else 0
    return owner, metadata


def load_unet(
    keras: Any, keras_file: str | os.PathLike[str], path: str | os.PathLike[str], input_size: int
) -> Any:
    """Load a saved U-Net (Keras safe mode) and check it takes ``input_size`` squares.

    Raises
    ------
    ModelFormatError
        If Keras cannot load it, or its input shape is not the one its metadata says.
    """
    try:
        model = keras.models.load_model(keras_file, compile=False, safe_mode=True)
    except (ValueError, TypeError, OSError) as exc:
        raise ModelFormatError(f"{path}: Keras could not load the model ({exc})") from exc
    expected = (None, input_size, input_size, 1)
    if tuple(model.input_shape) != expected:
        raise ModelFormatError(
            f"{path}: the model takes inputs of shape {model.input_shape}, but its "
            f"metadata says {expected}"
        )
    return model


def build_unet(
    keras: Any,
    input_size: int,
    base_filters: int,
    depth: int,
    *,
    name: str,
    output_name: str,
) -> Any:
    """A U-Net with a stride-2 stem: it segments at half the input resolution for speed.

    Parameters
    ----------
    keras
        The Keras module (see :func:`keras_module`).
    input_size
        Side of the square input; a multiple of ``2 ** (depth + 1)``.
    base_filters, depth
        Width of the first level and number of down-sampling levels.
    name, output_name
        Names of the model and of its sigmoid output layer.
    """
    layers = keras.layers
    inputs = keras.Input((input_size, input_size, 1), name="radiograph")
    # No augmentation layer in the network: a layer that flips or warps the input would
    # leave the target mask as it is. Augmentation is done on image and mask together, in
    # the data (paired_batches).
    x = layers.Conv2D(base_filters, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    skips = []
    for level in range(depth):
        x = _conv_block(keras, x, base_filters * 2**level)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    x = _conv_block(keras, x, base_filters * 2**depth)
    for level in reversed(range(depth)):
        x = layers.UpSampling2D(interpolation="bilinear")(x)
        x = layers.Concatenate()([x, skips[level]])
        x = _conv_block(keras, x, base_filters * 2**level)
    x = layers.UpSampling2D(interpolation="bilinear")(x)
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name=output_name)(x)
    return keras.Model(inputs, outputs, name=name)


def dice_bce_loss(keras: Any) -> Any:
    """Binary cross-entropy plus the soft Dice loss taken over the whole batch.

    Dice counters the imbalance (most pixels are not the structure); BCE keeps gradients
    well-behaved on images without it. Dice is taken over the whole batch: per image it
    would be ~1 for any faint output on an image that has nothing to find.
    """
    ops = keras.ops

    def dice_bce(y_true: Any, y_pred: Any) -> Any:
        bce = ops.mean(keras.losses.binary_crossentropy(y_true, y_pred))
        intersection = ops.sum(y_true * y_pred)
        total = ops.sum(y_true) + ops.sum(y_pred)
        dice = 1.0 - (2.0 * intersection + 1.0) / (total + 1.0)
        return bce + dice

    return dice_bce


class _PairedAugmentation:
    """Training batches with the same random flip (and warp) applied to each image and its mask.

    Batches are numbered across epochs (``step``), and each is a function of its number
    alone: epoch ``e`` (counted from ``first_epoch``) visits the pairs in the permutation
    seeded by ``(seed, e)`` and draws its augmentation from ``(seed, e + 1, batch)``. What
    a batch holds cannot depend on when Keras' prefetching thread asks for it, and a
    resumed run draws what an uninterrupted one would.
    """

    def __init__(
        self,
        images: NDArray[np.float32],
        masks: NDArray[np.float32],
        batch_size: int,
        seed: int,
        *,
        flip: bool,
        warp: bool,
        first_epoch: int = 0,
    ) -> None:
        self.images, self.masks = images, masks
        self.batch_size, self.seed = batch_size, seed
        self.flip, self.warp = flip, warp
        self.first_epoch = first_epoch
        self._orders: dict[int, NDArray[np.intp]] = {}

    def __len__(self) -> int:
        """Batches per epoch."""
        return math.ceil(len(self.images) / self.batch_size)

    def _order(self, epoch: int) -> NDArray[np.intp]:
        order = self._orders.get(epoch)
        if order is None:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.images))
            # The prefetching thread runs at most an epoch ahead: keep two permutations.
            self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}
            self._orders[epoch] = order
        return order

    def batch(self, step: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """The ``step``-th batch since ``first_epoch`` began."""
        epoch, index = divmod(step, len(self))
        epoch += self.first_epoch
        chosen = self._order(epoch)[index * self.batch_size : (index + 1) * self.batch_size]
        images, masks = self.images[chosen].copy(), self.masks[chosen].copy()
        rng = np.random.default_rng([self.seed, epoch + 1, index])
        size = images.shape[1]
        for i in range(len(chosen)):
            if self.flip and rng.random() < 0.5:
                images[i] = images[i, :, ::-1]
                masks[i] = masks[i, :, ::-1]
            if not self.warp:
                continue
            angle = rng.uniform(-10.0, 10.0)
            scale = rng.uniform(0.9, 1.1)
            shift = rng.uniform(-0.06, 0.06, size=2) * size
            warp = cv2.getRotationMatrix2D((size / 2.0, size / 2.0), angle, scale)
            warp[:, 2] += shift
            images[i, ..., 0] = cv2.warpAffine(
                images[i, ..., 0], warp, (size, size), flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT, borderValue=0.0,
            )  # fmt: skip
            masks[i, ..., 0] = cv2.warpAffine(
                masks[i, ..., 0], warp, (size, size), flags=cv2.INTER_NEAREST,
                borderMode=cv2.BORDER_CONSTANT, borderValue=0.0,
            )  # fmt: skip
            gamma = math.exp(rng.uniform(-0.4, 0.4))
            contrast = rng.uniform(0.8, 1.2)
            image = np.clip(images[i, ..., 0], 0.0, 1.0) ** gamma
            mean = float(image.mean())
            images[i, ..., 0] = np.clip((image - mean) * contrast + mean, 0.0, 1.0)
        return images, masks


def paired_batches(
    keras: Any,
    images: NDArray[np.float32],
    masks: NDArray[np.float32],
    batch_size: int,
    seed: int,
    *,
    flip: bool,
    warp: bool,
    first_epoch: int = 0,
) -> Any:
    """A Keras dataset of shuffled training batches, augmented image and mask alike.

    Keras sees it as endless: item ``step`` is the ``step``-th batch since ``first_epoch``
    began, so train it with ``steps_per_epoch=len(batches)``. Every epoch permutes the
    pairs afresh, seeded by ``seed`` and the epoch; each batch depends on its number
    alone, not on when Keras' prefetching asks for it, and a resumed run draws what an
    uninterrupted one would. ``flip``: a random horizontal flip of half the pairs.
    ``warp``: also a random rotation (±10°), scale (±10 %) and shift (±6 %), the same for
    the image and its mask, then gamma and contrast on the image.
    """
    data = _PairedAugmentation(
        images, masks, batch_size, seed, flip=flip, warp=warp, first_epoch=first_epoch
    )

    class Batches(keras.utils.PyDataset):  # type: ignore[misc]
        # Endless to Keras (no ``num_batches``): it then numbers the batches across
        # epochs, keeping one iterator, and ``fit`` takes ``steps_per_epoch=len(...)``.
        @property
        def num_batches(self) -> None:
            return None

        def __len__(self) -> int:
            return len(data)

        def __getitem__(self, step: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
            return data.batch(step)

    return Batches()


def fit_unet(
    keras: Any,
    model: Any,
    images: NDArray[np.float32],
    masks: NDArray[np.float32],
    validation_data: tuple[NDArray[np.float32], NDArray[np.float32]] | None,
    *,
    owner: str,
    learning_rate: float,
    batch_size: int,
    epochs: int,
    seed: int,
    patience: int,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None,
    verbose: int,
    flip: bool,
    warp: bool,
    checkpoint: UNetCheckpoint | None = None,
) -> dict[str, list[float]]:
    """Compile and train a U-Net as both estimators do; returns the per-epoch history.

    Adam on the Dice + BCE loss, the shared callbacks (:func:`training_callbacks`), and
    batches whose image and mask are flipped (and warped) together (:func:`paired_batches`).
    With a ``checkpoint``, training continues where its file left off (or returns at once
    when that run had finished) and writes it after every epoch.
    """
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=dice_bce_loss(keras))
    resumed = checkpoint.restore(model) if checkpoint is not None else None
    if resumed is not None and resumed.finished:
        return resumed.history
    first_epoch = resumed.epoch if resumed is not None else 0
    callbacks = training_callbacks(
        keras,
        owner,
        on_epoch_end,
        patience=patience,
        monitored=validation_data is not None,
        checkpoint=checkpoint,
    )
    batches = paired_batches(
        keras, images, masks, batch_size, seed, flip=flip, warp=warp, first_epoch=first_epoch
    )
    history = model.fit(
        batches,
        epochs=epochs,
        steps_per_epoch=len(batches),
        shuffle=False,  # the batches shuffle themselves, seeded
        initial_epoch=first_epoch,
        validation_data=validation_data,
        callbacks=callbacks,
        verbose=verbose,
    )
    if checkpoint is not None:
        return {key: list(values) for key, values in checkpoint.history.items()}
    return {key: [float(v) for v in values] for key, values in history.history.items()}
