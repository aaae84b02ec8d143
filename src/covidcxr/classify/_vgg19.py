"""The VGG19 chest X-ray classifier: published transfer-learning recipe, fast on CPU.

:class:`VGG19Classifier` follows scikit-learn's conventions (``__init__`` stores,
:meth:`~VGG19Classifier.fit` returns ``self``, learned state ends in ``_``) and the
:class:`covidcxr.Classifier` protocol. TensorFlow and Keras are imported inside its
methods, so importing this module (which every plugin lookup does) stays cheap.
"""

# TensorFlow/Keras are imported inside functions on purpose: importing covidcxr stays fast.
# ruff: noqa: PLC0415

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Self

import numpy as np
from numpy.typing import NDArray

from covidcxr._params import SetParamsMixin
from covidcxr._plain import plain_data
from covidcxr.classify._inputs import Normalization, ScanStats, make_dataset, original_errors
from covidcxr.classify._persistence import (
    read_archive,
    runtime_versions,
    write_archive,
)
from covidcxr.classify._training import _epoch_seed, _reseed_dropout, _TrainingLoop, all_finite
from covidcxr.errors import (
    ConfigurationError,
    ModelFormatError,
    PreprocessingMismatchWarning,
    TrainingDivergedError,
    WeightsUnavailableError,
)
from covidcxr.labels import LABELS
from covidcxr.preprocess._profile import InputProfile, InputRecorder
from covidcxr.protocols import EpochCallback
from covidcxr.records import XRay

if TYPE_CHECKING:
    import keras

__all__ = ["FROM_SCRATCH", "SHUFFLE_BUFFER", "VGG19Classifier"]

_log = logging.getLogger(__name__)

#: Images held by the shuffle buffer when the training input cannot be indexed.
SHUFFLE_BUFFER = 1024

#: ``on_epoch_end(epoch, logs)``: called after each epoch (1-based) and its checkpoint.

# Parameters that change neither the trained model nor how a run proceeds, so a checkpoint
# written under other values of them can still be resumed.
_RUN_NEUTRAL = frozenset({"checkpoint_dir", "on_epoch_end", "verbose", "jit_compile"})
_N_BLOCKS = 5

#: The options with which VGG19 learns without pretrained weights on a CPU: the
#: from-scratch recipe of the training docs (batch-normalised, a quarter of the width,
#: 64 px, every block trained with Adam on a cosine schedule), with batches of 16 so that
#: a few dozen images still make several steps an epoch. ``Pipeline()`` trains with it
#: when the ImageNet weights cannot be had; pass it to train offline yourself:
#: ``VGG19Classifier(**FROM_SCRATCH)``.
FROM_SCRATCH: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "input_size": 64,
        "weights": None,
        "batch_norm": True,
        "width_multiplier": 0.25,
        "trainable_blocks": "all",
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "lr_schedule": "cosine",
        "warmup_epochs": 1,
        "augmentation": 10.0,
        "dense_units": 256,
        "weight_averaging": 0.6,
        "epochs": 24,
        "batch_size": 16,
    }
)


def _reiterable(xrays: Iterable[XRay]) -> Iterable[XRay]:
    # Training passes over the data more than once; a one-shot iterator is kept as the
    # XRay records it yields (native dtype, not float32). Sources and lists pass through.
    return list(xrays) if iter(xrays) is xrays else xrays


class VGG19Classifier(SetParamsMixin):
    """VGG19 transfer learning for COVID-19 / normal / pneumonia radiographs.

    The defaults are the published recipe: VGG19 with ImageNet weights and a frozen
    convolutional base, global average pooling, Dense 512 ReLU, Dropout 0.5, softmax;
    224 px input; rotation of up to ±15°; SGD with learning rate 1e-3, batch size 64,
    100 epochs. With the base frozen, backbone features are computed once (for
    ``augmentation_views`` rotated views of every image) and the head trains on the cache,
    so the 100 epochs cost about as much as two passes of the backbone.

    Parameters
    ----------
    input_size
        Side of the square model input in pixels, at least 32. Radiographs of any size are
        resized to it (bilinear, antialiased).
    weights
        ``"imagenet"`` (Keras's VGG19 weights, downloaded on first use; see
        :class:`~covidcxr.errors.WeightsUnavailableError`), ``None`` (train from scratch) or the
        path of an ``.h5`` file with backbone weights (Keras's ImageNet file, or one written
        by ``backbone.save_weights`` for the same architecture).
    trainable_blocks
        How many of VGG19's five convolutional blocks train, counted from the top:
        ``0`` freezes the base (the published recipe), ``1`` fine-tunes block 5,
        ``5`` or ``"all"`` trains everything. ``"auto"`` (the default) is ``0`` with
        pretrained weights and ``"all"`` with ``weights=None``: a frozen *random* base
        only ever learns to predict one class, so it is never chosen for you (pass ``0``
        explicitly to measure the head's cost, as the tests and benchmarks do).
    learning_rate
        Peak learning rate.
    epochs
        Training epochs.
    batch_size
        Images per batch, for training and prediction.
    seed
        Seeds initialisers, dropout, shuffling and augmentation; same seed, same data and
        same thread settings give the same model on CPU (see the training docs).
    optimizer
        ``"sgd"`` (with ``momentum``) or ``"adam"``.
    momentum
        SGD momentum; 0 is the published recipe.
    lr_schedule
        ``"constant"``, or ``"cosine"`` (cosine decay to 0 over ``epochs``, after
        ``warmup_epochs`` of linear warm-up). The rate changes once per epoch.
    warmup_epochs
        Epochs of linear warm-up from ``learning_rate / (warmup_epochs + 1)``.
    augmentation
        Largest rotation in degrees (angles drawn uniformly from ±``augmentation``), or
        ``None``/``0`` for none.
    augmentation_views
        With a cached frozen base: how many rotated views of each image to cache; every
        epoch uses one of them per image, drawn at random. More views, more variety and
        proportionally longer feature extraction.
    class_weight
        ``None``, ``"balanced"`` (weights inversely proportional to class frequency) or
        ``{label: weight}``.
    early_stopping
        Patience in epochs: stop when the monitored loss (validation loss when
        ``validation`` is given, else training loss) has not improved for this many
        epochs, and restore the best weights. ``None`` trains all ``epochs``.
    batch_norm
        Use the batch-normalised VGG19 variant (needs ``weights=None`` or a matching
        file); the recommended choice for training from scratch.
    width_multiplier
        Scale the filters of every block (``0.25`` gives 16-32-64-128-128); for small
        CPU runs and tests. Needs ``weights=None`` or a matching file.
    dense_units, dropout
        The head's hidden width (512) and dropout rate (0.5).
    weight_averaging
        ``None``, or the momentum ``m`` of an exponential moving average of the weights
        (batch-norm statistics included) taken at the end of every epoch,
        ``average = m * average + (1 - m) * weights``. Validation, early stopping and
        the fitted model use the average while training continues from the raw weights
        (Polyak averaging): the validation curve no longer jumps with each epoch's last
        few noisy steps. ``0.6`` averages over about the last 2.5 epochs.
    feature_cache
        With ``trainable_blocks=0``, train the head on cached backbone features (the
        default); ``False`` runs the frozen base every epoch (for comparison).
    normalization
        ``"auto"`` (``"imagenet"`` with pretrained weights, ``"symmetric"`` without),
        ``"imagenet"`` or ``"symmetric"``; see :mod:`covidcxr.classify`.
    checkpoint_dir
        Write a checkpoint here after every epoch; a later :meth:`fit` with the same
        parameters and data resumes from it and ends with the same model as an
        uninterrupted run.
    jit_compile
        Compile training and inference with XLA.
    verbose
        Print one line per epoch when > 0.
    on_epoch_end
        ``on_epoch_end(epoch, logs)``, called after each epoch's checkpoint is written
        (progress reporting; raising from it interrupts training).

    Attributes
    ----------
    classes_ : tuple[str, ...]
        The labels, in the order of :meth:`predict_proba`'s columns (empty before fitting).
    model_ : keras.Model
        The fitted Keras model, images (:meth:`prepare_batch` output) to probabilities.
        One flat functional model: ``model_.get_layer(feature_layer_name)`` is the last
        convolutional feature map (for Grad-CAM).
    history_ : dict[str, list[float]]
        Per-epoch ``loss``, ``accuracy``, ``lr`` and, with validation, ``val_loss`` and
        ``val_accuracy``.
    fingerprint_ : dict[str, Any]
        sha256 digests and sizes of the training and validation data.

    Examples
    --------
    >>> import numpy as np
    >>> from covidcxr import XRay
    >>> rng = np.random.default_rng(0)
    >>> xrays = [XRay(rng.random((32, 32), dtype=np.float32), f"x{i}", label)
    ...          for i, label in enumerate(["covid-19", "normal", "pneumonia"] * 2)]
    >>> clf = VGG19Classifier(input_size=32, weights=None, width_multiplier=0.125,
    ...                       dense_units=8, epochs=1, batch_size=4)
    >>> clf.fit(xrays).predict_proba(xrays).shape
    (6, 3)
    """

    # Set by fit() or load(); absent before, as scikit-learn's fitted attributes are.
    classes_: tuple[str, ...]

    #: The name ``covidcxr.classify.plugin`` registers it under.
    registered_name: ClassVar[str] = "vgg19"

    def __init__(
        self,
        *,
        input_size: int = 224,
        weights: str | os.PathLike[str] | None = "imagenet",
        trainable_blocks: int | Literal["all", "auto"] = "auto",
        learning_rate: float = 1e-3,
        epochs: int = 100,
        batch_size: int = 64,
        seed: int = 0,
        optimizer: Literal["sgd", "adam"] = "sgd",
        momentum: float = 0.0,
        lr_schedule: Literal["constant", "cosine"] = "constant",
        warmup_epochs: int = 0,
        augmentation: float | None = 15.0,
        augmentation_views: int = 2,
        class_weight: Literal["balanced"] | Mapping[str, float] | None = None,
        early_stopping: int | None = None,
        batch_norm: bool = False,
        width_multiplier: float = 1.0,
        dense_units: int = 512,
        dropout: float = 0.5,
        weight_averaging: float | None = None,
        feature_cache: bool = True,
        normalization: Literal["auto"] | Normalization = "auto",
        checkpoint_dir: str | os.PathLike[str] | None = None,
        jit_compile: bool = False,
        verbose: int = 0,
        on_epoch_end: EpochCallback | None = None,
    ) -> None:
        self.input_size = input_size
        self.weights = weights
        self.trainable_blocks = trainable_blocks
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.seed = seed
        self.optimizer = optimizer
        self.momentum = momentum
        self.lr_schedule = lr_schedule
        self.warmup_epochs = warmup_epochs
        self.augmentation = augmentation
        self.augmentation_views = augmentation_views
        self.class_weight = class_weight
        self.early_stopping = early_stopping
        self.batch_norm = batch_norm
        self.width_multiplier = width_multiplier
        self.dense_units = dense_units
        self.dropout = dropout
        self.weight_averaging = weight_averaging
        self.feature_cache = feature_cache
        self.normalization = normalization
        self.checkpoint_dir = checkpoint_dir
        self.jit_compile = jit_compile
        self.verbose = verbose
        self.on_epoch_end = on_epoch_end

    # ------------------------------------------------------------------ parameters

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters, as scikit-learn's ``get_params`` returns them.

        ``deep`` is accepted for :func:`sklearn.base.clone` and ignored: no parameter is
        itself an estimator. (Inheriting :class:`sklearn.base.BaseEstimator` would cost
        every plugin lookup about a second of importing SciPy.)
        """
        names = inspect.signature(type(self).__init__).parameters
        return {name: getattr(self, name) for name in names if name != "self"}

    def __repr__(self) -> str:
        defaults = {
            name: parameter.default
            for name, parameter in inspect.signature(type(self).__init__).parameters.items()
        }
        changed = ", ".join(
            f"{name}={value!r}"
            for name, value in self.get_params().items()
            if defaults.get(name) != value
        )
        return f"{type(self).__name__}({changed})"

    @property
    def n_trainable_blocks(self) -> int:
        """``trainable_blocks`` as a number from 0 to 5, with ``"auto"`` resolved.

        Examples
        --------
        >>> VGG19Classifier().n_trainable_blocks, VGG19Classifier(weights=None).n_trainable_blocks
        (0, 5)
        """
        if self.trainable_blocks == "auto":
            return 0 if self.weights is not None else _N_BLOCKS
        return _N_BLOCKS if self.trainable_blocks == "all" else int(self.trainable_blocks)

    @property
    def input_normalization(self) -> Normalization:
        """The normalisation in use: ``normalization``, with ``"auto"`` resolved."""
        if self.normalization != "auto":
            return self.normalization
        return "symmetric" if self.weights is None else "imagenet"

    @property
    def feature_layer_name(self) -> str:
        """Name of the layer of :attr:`model_` whose output is the last conv feature map.

        ``"block5_conv4"`` for plain VGG19 (ReLU inside the convolution) and
        ``"block5_conv4_relu"`` for the batch-normalised variant: in both cases the
        post-ReLU ``(n, s/16, s/16, filters)`` map that Grad-CAM weighs by its gradients.
        """
        from covidcxr.classify._network import feature_layer_name

        return feature_layer_name(self.batch_norm)

    @property
    def uses_feature_cache(self) -> bool:
        """Whether :meth:`fit` trains the head on cached backbone features."""
        return self.n_trainable_blocks == 0 and self.feature_cache

    def _check_params(self) -> None:  # noqa: PLR0912 - one check per parameter
        def fail(message: str) -> None:
            raise ConfigurationError(f"VGG19Classifier: {message}")

        # Values are checked as Any: callers (and loaded metadata) may pass anything.
        p: dict[str, Any] = self.get_params()

        if not isinstance(p["input_size"], int) or p["input_size"] < 32:
            fail(f"input_size must be an integer >= 32, got {p['input_size']!r}")
        if p["trainable_blocks"] not in ("all", "auto") and (
            not isinstance(p["trainable_blocks"], int)
            or not 0 <= p["trainable_blocks"] <= _N_BLOCKS
        ):
            fail(f"trainable_blocks must be 0-5, 'all' or 'auto', got {p['trainable_blocks']!r}")
        if not (isinstance(p["epochs"], int) and p["epochs"] >= 1):
            fail(f"epochs must be a positive integer, got {p['epochs']!r}")
        if not (isinstance(p["batch_size"], int) and p["batch_size"] >= 1):
            fail(f"batch_size must be a positive integer, got {p['batch_size']!r}")
        if not p["learning_rate"] > 0:
            fail(f"learning_rate must be > 0, got {p['learning_rate']!r}")
        if p["optimizer"] not in ("sgd", "adam"):
            fail(f"optimizer must be 'sgd' or 'adam', got {p['optimizer']!r}")
        if p["lr_schedule"] not in ("constant", "cosine"):
            fail(f"lr_schedule must be 'constant' or 'cosine', got {p['lr_schedule']!r}")
        if not (isinstance(p["warmup_epochs"], int) and 0 <= p["warmup_epochs"] < p["epochs"]):
            fail(f"warmup_epochs must be an integer in [0, epochs), got {p['warmup_epochs']!r}")
        if p["augmentation"] is not None and not 0 <= p["augmentation"] <= 180:
            fail(f"augmentation must be None or degrees in [0, 180], got {p['augmentation']!r}")
        if not (isinstance(p["augmentation_views"], int) and p["augmentation_views"] >= 1):
            fail(f"augmentation_views must be a positive integer, got {p['augmentation_views']!r}")
        if p["early_stopping"] is not None and not (
            isinstance(p["early_stopping"], int) and p["early_stopping"] >= 1
        ):
            fail(f"early_stopping must be None or a patience >= 1, got {p['early_stopping']!r}")
        if not p["width_multiplier"] > 0:
            fail(f"width_multiplier must be > 0, got {p['width_multiplier']!r}")
        if not 0 <= p["dropout"] < 1:
            fail(f"dropout must be in [0, 1), got {p['dropout']!r}")
        if p["weight_averaging"] is not None and not 0 <= p["weight_averaging"] < 1:
            fail(f"weight_averaging must be None or in [0, 1), got {p['weight_averaging']!r}")
        if p["normalization"] not in ("auto", "imagenet", "symmetric"):
            fail(
                f"normalization must be 'auto', 'imagenet' or 'symmetric', got "
                f"{p['normalization']!r}"
            )
        if isinstance(p["class_weight"], str) and p["class_weight"] != "balanced":
            fail(
                f"class_weight must be None, 'balanced' or {{label: weight}}, got "
                f"{p['class_weight']!r}"
            )
        if (
            isinstance(self.weights, str)
            and self.weights == "imagenet"
            and (self.batch_norm or self.width_multiplier != 1.0)
        ):
            fail(
                "ImageNet weights exist only for plain VGG19; batch_norm=True and "
                "width_multiplier != 1 need weights=None (or a matching weights file)"
            )

    # ------------------------------------------------------------------ inputs

    @original_errors()
    def prepare_batch(self, xrays: Iterable[XRay]) -> NDArray[np.float32]:
        """The exact input :attr:`model_` receives for these radiographs.

        Resized to ``input_size``, replicated to three channels and normalised as
        :attr:`input_normalization` says; ``(n, input_size, input_size, 3)`` float32.
        Grad-CAM differentiates the model with respect to this array.

        Examples
        --------
        >>> import numpy as np
        >>> from covidcxr import XRay
        >>> clf = VGG19Classifier(input_size=32, weights=None)
        >>> ramp = np.linspace(0, 255, 50 * 40).astype(np.uint8).reshape(50, 40)
        >>> clf.prepare_batch([XRay(ramp, "x")]).shape
        (1, 32, 32, 3)
        """
        stats = ScanStats()
        batches = [
            np.asarray(batch)
            for batch in make_dataset(
                xrays,
                input_size=self.input_size,
                normalization=self.input_normalization,
                batch_size=self.batch_size,
                stats=stats,
            )
        ]
        stats.warn()
        if not batches:
            return np.zeros((0, self.input_size, self.input_size, 3), np.float32)
        return np.concatenate(batches).astype(np.float32, copy=False)

    # ------------------------------------------------------------------ model building

    def _build_backbone(self) -> keras.Model:
        from covidcxr.classify._network import build_backbone
        from covidcxr.classify._weights import resolve_imagenet_weights, resolve_weights_file

        weights_file: Path | None = None
        if isinstance(self.weights, str) and self.weights == "imagenet":
            weights_file = resolve_imagenet_weights()
        elif self.weights is not None:
            weights_file = resolve_weights_file(self.weights)
        backbone = build_backbone(
            input_size=self.input_size,
            width_multiplier=self.width_multiplier,
            batch_norm=self.batch_norm,
            seed=self.seed,
        )
        if weights_file is not None:
            mismatch = (
                f"weights file {weights_file} does not match the backbone "
                f"(batch_norm={self.batch_norm}, width_multiplier={self.width_multiplier})"
            )
            # Keras warns, rather than fails, when parts of a file match nothing and leaves
            # those layers at their random initialisation: for us that is a mismatch too.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    backbone.load_weights(weights_file)
                except (ValueError, KeyError, OSError) as exc:
                    raise WeightsUnavailableError(f"{mismatch}: {exc}") from exc
            skipped = [str(w.message) for w in caught if "Skipping" in str(w.message)]
            if skipped:
                raise WeightsUnavailableError(f"{mismatch}: {skipped[0]}")
        return backbone

    def _freeze(self, model: keras.Model) -> None:
        from covidcxr.classify._network import block_of_layer

        first_trainable = _N_BLOCKS - self.n_trainable_blocks + 1
        for layer in model.layers:
            block = block_of_layer(layer.name)
            if block is not None:
                layer.trainable = block >= first_trainable

    def _make_optimizer(self) -> keras.optimizers.Optimizer:
        import keras

        if self.optimizer == "adam":
            return keras.optimizers.Adam(self.learning_rate)
        return keras.optimizers.SGD(self.learning_rate, momentum=self.momentum)

    def _epoch_learning_rate(self, epoch: int) -> float:
        """The learning rate of 0-based ``epoch``."""
        if epoch < self.warmup_epochs:
            return self.learning_rate * (epoch + 1) / (self.warmup_epochs + 1)
        if self.lr_schedule == "constant":
            return float(self.learning_rate)
        progress = (epoch - self.warmup_epochs) / max(1, self.epochs - self.warmup_epochs)
        return float(self.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress)))

    def _class_weights(
        self, targets: NDArray[np.int32], classes: tuple[str, ...]
    ) -> dict[int, float] | None:
        if self.class_weight is None:
            return None
        if isinstance(self.class_weight, str):
            counts = np.bincount(targets, minlength=len(classes))
            return {i: len(targets) / (len(classes) * int(c)) for i, c in enumerate(counts)}
        unknown = set(self.class_weight) - set(classes)
        if unknown:
            raise ConfigurationError(
                f"VGG19Classifier: class_weight names {sorted(unknown)}, which are not among "
                f"the training labels {classes}"
            )
        return {i: float(self.class_weight.get(label, 1.0)) for i, label in enumerate(classes)}

    # ------------------------------------------------------------------ training

    def _dataset(self, xrays: Iterable[XRay], **options: Any) -> Any:
        return make_dataset(
            xrays,
            input_size=self.input_size,
            normalization=self.input_normalization,
            batch_size=self.batch_size,
            **options,
        )

    def _input_spec(self) -> Any:
        import tensorflow as tf

        return tf.TensorSpec((None, self.input_size, self.input_size, 3), tf.float32)

    def _scan(self, xrays: Iterable[XRay], *, record_inputs: bool = False) -> ScanStats:
        stats = ScanStats(fingerprint=True, inputs=InputRecorder() if record_inputs else None)
        for xray in xrays:
            stats.see(xray)
        return stats

    def _extract(self, backbone: keras.Model, dataset: Any) -> NDArray[np.float32]:
        import tensorflow as tf

        extract = tf.function(
            lambda x: backbone(x, training=False),
            input_signature=[self._input_spec()],
            jit_compile=self.jit_compile,
        )
        parts = [extract(batch).numpy() for batch in dataset]
        width = int(backbone.output.shape[-1])
        return np.concatenate(parts) if parts else np.zeros((0, width), np.float32)

    @original_errors()
    def fit(  # noqa: PLR0915 - the recipe reads best as one story
        self, xrays: Iterable[XRay], validation: Iterable[XRay] | None = None
    ) -> Self:
        """Train on labelled radiographs.

        Parameters
        ----------
        xrays
            Training radiographs, every one labelled. A :class:`~covidcxr.DatasetSource`
            or a list is read once per pass (streaming); a one-shot iterator is kept in
            memory as the records it yields.
        validation
            Labelled radiographs for monitoring (``val_loss``, ``val_accuracy``) and early
            stopping; never trained on.

        Returns
        -------
        VGG19Classifier
            ``self``, fitted.

        Raises
        ------
        ConfigurationError
            If a parameter is invalid, a training radiograph has no label, fewer than two
            classes are present, or a validation label was not seen in training.
        WeightsUnavailableError
            If the requested pretrained weights cannot be obtained.
        """
        from covidcxr.classify._network import attach_head, head_model

        self._check_params()
        train = _reiterable(xrays)
        valid = _reiterable(validation) if validation is not None else None
        backbone = self._build_backbone()

        if self.uses_feature_cache:
            views = self.augmentation_views if self.augmentation else 1
            # The longest silent step of the frozen recipe: shown with ``covidcxr -v``.
            _log.info(
                "computing the frozen backbone's features (%d view(s) of every training "
                "image) before the %d head epochs",
                views,
                self.epochs,
            )
            rotation = (float(self.augmentation), self.seed) if self.augmentation else None
            stats = ScanStats(fingerprint=True, inputs=InputRecorder())
            features = self._extract(
                backbone, self._dataset(train, stats=stats, rotation=rotation, views=views)
            )
            features = features.reshape(len(stats.ids), views, -1)
            val_stats = ScanStats(fingerprint=True) if valid is not None else None
            val_features = (
                self._extract(backbone, self._dataset(valid, stats=val_stats))
                if valid is not None
                else None
            )
        else:
            stats = self._scan(train, record_inputs=True)
            val_stats = self._scan(valid) if valid is not None else None
        stats.warn()

        classes, targets = self._encode_labels(stats)
        val_targets = self._encode_labels(val_stats, classes)[1] if val_stats is not None else None
        model = attach_head(
            backbone,
            n_classes=len(classes),
            dense_units=self.dense_units,
            dropout=self.dropout,
            seed=self.seed,
        )
        self._freeze(model)
        trained = head_model(model) if self.uses_feature_cache else model
        optimizer = self._make_optimizer()
        trained.compile(
            optimizer=optimizer,
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=self.jit_compile,
        )
        optimizer.build(trained.trainable_variables)

        fingerprint = {
            "train": {"sha256": stats.digest, "n_images": len(stats.ids)},
            "validation": (
                {"sha256": val_stats.digest, "n_images": len(val_stats.ids)}
                if val_stats is not None
                else None
            ),
        }
        label_map = {label: i for i, label in enumerate(classes)}
        if not self.uses_feature_cache:
            _warn_if_class_sorted(train, stats.labels)
        class_weights = self._class_weights(targets, classes)

        def run_epoch(epoch: int) -> dict[str, float]:
            epoch_seed = _epoch_seed(self.seed, epoch)
            _reseed_dropout(trained, epoch_seed)
            if self.uses_feature_cache:
                rng = np.random.default_rng(epoch_seed)
                shuffled = rng.permutation(len(targets))
                view = rng.integers(0, features.shape[1], len(targets))
                result = trained.fit(
                    features[shuffled, view[shuffled]],
                    targets[shuffled],
                    batch_size=self.batch_size,
                    epochs=1,
                    shuffle=False,
                    class_weight=class_weights,
                    verbose=0,
                )
            else:
                rotation = (float(self.augmentation), epoch_seed) if self.augmentation else None
                # Sources are often sorted by class; a shuffle buffer then yields runs of
                # one class, which wrecks batch-norm statistics and SGD alike. Indexable
                # inputs get a full permutation of references instead.
                indexable = hasattr(train, "__getitem__") and hasattr(train, "__len__")
                order: NDArray[np.int64] | None = (
                    np.random.default_rng(epoch_seed).permutation(len(targets))
                    if indexable
                    else None
                )
                result = trained.fit(
                    self._dataset(
                        train,
                        rotation=rotation,
                        label_map=label_map,
                        order=order,
                        shuffle_seed=None if indexable else epoch_seed,
                        shuffle_buffer=SHUFFLE_BUFFER,
                        n_images=len(targets),
                    ),
                    epochs=1,
                    shuffle=False,
                    class_weight=class_weights,
                    verbose=0,
                )
            return {key: float(values[-1]) for key, values in result.history.items()}

        def validate() -> dict[str, float]:
            logs: dict[str, float] = {}
            if valid is not None and val_targets is not None:
                if self.uses_feature_cache and val_features is not None:
                    scores = trained.evaluate(
                        val_features,
                        val_targets,
                        batch_size=self.batch_size,
                        verbose=0,
                        return_dict=True,
                    )
                else:
                    scores = trained.evaluate(
                        self._dataset(valid, label_map=label_map, n_images=len(val_targets)),
                        verbose=0,
                        return_dict=True,
                    )
                logs.update({f"val_{key}": float(value) for key, value in scores.items()})
            return logs

        self.history_ = _TrainingLoop(
            estimator=self,
            trained=trained,
            optimizer=optimizer,
            run_key=self._run_key(fingerprint),
        ).run(run_epoch, validate, monitor="val_loss" if valid is not None else "loss")
        self.model_ = model
        self.classes_ = classes
        self.fingerprint_ = fingerprint
        self.preprocessing_ = plain_data((stats.first_meta or {}).get("preprocessing"))
        self.input_profile_ = stats.inputs.profile() if stats.inputs is not None else None
        self._predict_function = None
        return self

    def _encode_labels(
        self, stats: ScanStats, classes: tuple[str, ...] | None = None
    ) -> tuple[tuple[str, ...], NDArray[np.int32]]:
        unlabelled = [
            xray_id for xray_id, label in zip(stats.ids, stats.labels, strict=True) if label is None
        ]
        if unlabelled:
            raise ConfigurationError(
                f"VGG19Classifier.fit: {len(unlabelled)} radiographs have no label "
                f"(first: {unlabelled[0]!r}); training and validation need labels"
            )
        present = {str(label) for label in stats.labels}
        if classes is None:
            classes = tuple(label for label in LABELS if label in present)
            if len(classes) < 2:
                raise ConfigurationError(
                    f"VGG19Classifier.fit: training data has {len(classes)} class(es) "
                    f"{classes}; at least two are needed"
                )
        elif not present <= set(classes):
            raise ConfigurationError(
                f"VGG19Classifier.fit: validation labels {sorted(present - set(classes))} "
                f"do not occur in the training data {classes}"
            )
        index = {label: i for i, label in enumerate(classes)}
        return classes, np.array([index[str(label)] for label in stats.labels], np.int32)

    def _run_key(self, fingerprint: Mapping[str, Any]) -> str:
        params = {k: v for k, v in self.get_params().items() if k not in _RUN_NEUTRAL}
        document = json.dumps({"params": plain_data(params), "data": fingerprint}, sort_keys=True)
        return hashlib.sha256(document.encode()).hexdigest()

    # ------------------------------------------------------------------ prediction

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ConfigurationError(
                "this VGG19Classifier is not fitted yet; call fit() or VGG19Classifier.load()"
            )

    @original_errors()
    def predict_proba(self, xrays: Iterable[XRay]) -> NDArray[np.float32]:
        """Class probabilities, one row per radiograph, columns in :attr:`classes_` order.

        Radiographs stream through a prefetched :mod:`tf.data` pipeline in batches of
        ``batch_size``; only one batch of model input exists at a time.

        Examples
        --------
        See the class docstring.
        """
        import tensorflow as tf

        self._check_fitted()
        if getattr(self, "_predict_function", None) is None:
            model = self.model_
            self._predict_function = tf.function(
                lambda x: model(x, training=False),
                input_signature=[self._input_spec()],
                jit_compile=self.jit_compile,
            )
        predict = self._predict_function
        assert predict is not None  # noqa: S101 - set just above; narrows the type
        stats = ScanStats(inputs=InputRecorder())
        parts = [predict(batch).numpy() for batch in self._dataset(xrays, stats=stats)]
        stats.warn()
        self._warn_if_unlike_training(stats)
        if not parts:
            return np.zeros((0, len(self.classes_)), np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)

    def _warn_if_unlike_training(self, stats: ScanStats) -> None:
        """Warn once when the input is unlike the training input (see the errors module)."""
        if stats.inputs is None:
            return
        trained = self.preprocessing_ if isinstance(self.preprocessing_, Mapping) else None
        problem = stats.inputs.mismatch(trained, self.input_profile_, f"this {type(self).__name__}")
        if problem is not None:
            # predict_proba <- original_errors' wrapper <- the caller
            warnings.warn(problem, PreprocessingMismatchWarning, stacklevel=4)

    def predict(self, xrays: Iterable[XRay]) -> list[str]:
        """The most probable label of each radiograph."""
        probabilities = self.predict_proba(xrays)
        return [self.classes_[i] for i in probabilities.argmax(axis=1)]

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted classifier to one file, atomically.

        The file is a zip archive with the Keras model (``model.keras``) and metadata
        (``covidcxr.json``: classes, parameters, input size and normalisation,
        preprocessing parameters recorded by the preprocessor and the intensity
        statistics of the training images (see
        :class:`~covidcxr.errors.PreprocessingMismatchWarning`), library versions,
        training history and data fingerprint). An existing file is replaced only if it is a saved
        classifier itself, and only once the new one is complete on disk.

        Raises
        ------
        ConfigurationError
            If the classifier is not fitted.
        FileExistsError
            If ``path`` exists and is not a saved classifier.
        TrainingDivergedError
            If the model's weights are not finite (NaN or infinity): such a model would
            predict one class for every image.
        """
        self._check_fitted()
        if not all_finite(self.model_.get_weights()):
            raise TrainingDivergedError(
                f"not saving to {os.fspath(path)}: the model has non-finite (NaN or infinite) "
                "weights, so training diverged; lower learning_rate and train again"
            )
        params = {
            key: value
            for key, value in self.get_params().items()
            if key not in ("checkpoint_dir", "on_epoch_end")
        }
        metadata = {
            "classes": list(self.classes_),
            "params": plain_data(params),
            "input_size": self.input_size,
            "input_normalization": self.input_normalization,
            "feature_layer_name": self.feature_layer_name,
            "preprocessing": self.preprocessing_,
            "input_profile": (
                self.input_profile_.to_dict() if self.input_profile_ is not None else None
            ),
            "versions": runtime_versions(),
            "history": self.history_,
            "data_fingerprint": self.fingerprint_,
        }
        write_archive(path, self.model_.save, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read a classifier written by :meth:`save`.

        Raises
        ------
        ModelFormatError
            If the file is not a saved classifier, is corrupt, was written by another
            format version or Keras major.minor version, or its model does not match its
            metadata. Keras loads the model in safe mode.

        Examples
        --------
        >>> VGG19Classifier.load("no-such-model.cxr")
        Traceback (most recent call last):
        ...
        covidcxr.errors.ModelFormatError: no-such-model.cxr: no saved covidcxr classifier ...
        """
        import keras

        with tempfile.TemporaryDirectory(prefix="covidcxr-load-") as scratch:
            metadata, keras_file = read_archive(path, Path(scratch))
            try:
                model = keras.models.load_model(keras_file, compile=False, safe_mode=True)
            except Exception as exc:
                raise ModelFormatError(f"{path}: Keras could not load the model: {exc}") from exc
        try:
            estimator = cls(**metadata["params"])
            classes = tuple(metadata["classes"])
            history = {key: list(values) for key, values in metadata["history"].items()}
        except (KeyError, TypeError, AttributeError) as exc:
            raise ModelFormatError(f"{path}: metadata is incomplete ({exc!r})") from exc
        expected = (None, estimator.input_size, estimator.input_size, 3)
        if tuple(model.input_shape) != expected or model.output_shape[-1] != len(classes):
            raise ModelFormatError(
                f"{path}: model maps {model.input_shape} to {model.output_shape}, but the "
                f"metadata says {expected} to {len(classes)} classes"
            )
        estimator.model_ = model
        estimator.classes_ = classes
        estimator.history_ = history
        estimator.fingerprint_ = metadata.get("data_fingerprint", {})
        estimator.preprocessing_ = metadata.get("preprocessing")
        profile = metadata.get("input_profile")
        # Absent from models saved before it was recorded: their input is not checked.
        estimator.input_profile_ = (
            InputProfile.from_dict(profile, os.fspath(path)) if profile is not None else None
        )
        estimator._predict_function = None
        return estimator

    # Learned state, declared for type checkers.
    model_: keras.Model
    history_: dict[str, list[float]]
    fingerprint_: dict[str, Any]
    preprocessing_: Any
    input_profile_: InputProfile | None
    _predict_function: Callable[[Any], Any] | None


def _longest_run(labels: list[str | None]) -> int:
    longest = current = 0
    for i, label in enumerate(labels):
        current = current + 1 if i and label == labels[i - 1] else 1
        longest = max(longest, current)
    return longest


def _warn_if_class_sorted(train: Iterable[XRay], labels: list[str | None]) -> None:
    if hasattr(train, "__getitem__") and hasattr(train, "__len__"):
        return  # indexable inputs are fully permuted every epoch
    run = _longest_run(labels)
    if run > SHUFFLE_BUFFER // 2:
        warnings.warn(
            f"the training images come in runs of up to {run} of one class and cannot be "
            f"indexed, so each epoch is shuffled only within a {SHUFFLE_BUFFER}-image "
            "buffer: batches will be dominated by one class, which hampers training "
            "(batch normalisation especially). Pass a list instead, for example the "
            "preprocessed images: [preprocess(x) for x in source].",
            UserWarning,
            stacklevel=4,
        )
