"""The VGG19 chest X-ray classifier: published transfer-learning recipe, fast on CPU.

:class:`VGG19Classifier` follows scikit-learn's conventions (``__init__`` stores,
:meth:`~VGG19Classifier.fit` returns ``self``, learned state ends in ``_``) and the
:class:`covidcxr.Classifier` protocol. TensorFlow and Keras are imported inside its
methods, so importing this module (which every plugin lookup does) stays cheap.
"""

# TensorFlow/Keras are imported inside functions on purpose: importing covidcxr stays fast.
# ruff: noqa: PLC0415

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

import numpy as np
from numpy.typing import NDArray

from covidcxr._params import Estimator
from covidcxr._plain import plain_data
from covidcxr.classify._distributed import DataParallelSteps, array_batches, current_training
from covidcxr.classify._fit_setup import (
    build_backbone,
    class_weights,
    encode_labels,
    extract_features,
    freeze_blocks,
    make_optimizer,
)
from covidcxr.classify._inputs import (
    Augmentation,
    Normalization,
    ScanStats,
    inference_batches,
    make_dataset,
    original_errors,
    reiterable,
)
from covidcxr.classify._parameters import (
    FROM_SCRATCH,
    check_params,
    resolve_normalization,
    resolve_trainable_blocks,
    run_key,
)
from covidcxr.classify._persistence import load_classifier, save_classifier
from covidcxr.classify._predicting import check_fitted, model_input, predict_probabilities
from covidcxr.classify._training import _epoch_seed, _reseed_dropout, _TrainingLoop
from covidcxr.preprocess._profile import InputProfile, InputRecorder
from covidcxr.protocols import EpochCallback
from covidcxr.records import XRay

if TYPE_CHECKING:
    import keras

__all__ = ["FROM_SCRATCH", "SHUFFLE_BUFFER", "VGG19Classifier"]

_log = logging.getLogger(__name__)

#: Images held by the shuffle buffer when the training input cannot be indexed.
SHUFFLE_BUFFER = 1024


class VGG19Classifier(Estimator):
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
    augmentation_scale
        Largest zoom about the centre while training, as a fraction: each image is
        magnified by a factor drawn from ``[1 - augmentation_scale, 1 +
        augmentation_scale]``. 0 (the default) for none; 0.1 is a moderate choice.
    augmentation_shift
        Largest translation while training, as a fraction of the side, drawn for each
        axis from ``[-augmentation_shift, augmentation_shift]``. 0 for none.
    augmentation_contrast
        Contrast jitter while training: pixels in ``[0, 1]`` are raised to a gamma drawn
        log-uniformly from ``[1 / (1 + c), 1 + c]``, which mimics other exposures and
        detector curves. 0 for none. Like the others, it changes training only.
    test_time_rotations
        Test-time augmentation: angles in degrees; each radiograph is also classified
        rotated by each of them, and the probabilities of all views (the unrotated one
        first) are averaged. ``()`` (the default) predicts on the image alone. Keep the
        angles within ``augmentation``, which the model learnt to see. Changes prediction
        only, so a checkpoint written without it resumes.
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
    fitted_normalization_ : str
        :attr:`input_normalization` when fitted (or saved). Prediction refuses, with a
        :class:`~covidcxr.errors.ConfigurationError`, an ``input_size`` or normalisation
        changed by ``set_params`` since: the model was trained for the old input.

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
        augmentation_scale: float = 0.0,
        augmentation_shift: float = 0.0,
        augmentation_contrast: float = 0.0,
        augmentation_views: int = 2,
        test_time_rotations: Sequence[float] = (),
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
        self.augmentation_scale = augmentation_scale
        self.augmentation_shift = augmentation_shift
        self.augmentation_contrast = augmentation_contrast
        self.augmentation_views = augmentation_views
        self.test_time_rotations = test_time_rotations
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

    @property
    def n_trainable_blocks(self) -> int:
        """``trainable_blocks`` as a number from 0 to 5, with ``"auto"`` resolved.

        Examples
        --------
        >>> VGG19Classifier().n_trainable_blocks, VGG19Classifier(weights=None).n_trainable_blocks
        (0, 5)
        """
        return resolve_trainable_blocks(self.trainable_blocks, self.weights)

    @property
    def input_normalization(self) -> Normalization:
        """The normalisation in use: ``normalization``, with ``"auto"`` resolved."""
        return resolve_normalization(self.normalization, self.weights)

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

    def _check_params(self) -> None:
        check_params(self.get_params())

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
        return model_input(self, xrays)

    # ------------------------------------------------------------------ training

    def _augmentation(self, seed: int) -> Augmentation | None:
        """What training draws for each image, with this seed; ``None`` for nothing."""
        augmentation = Augmentation(
            degrees=float(self.augmentation or 0.0),
            scale=float(self.augmentation_scale),
            shift=float(self.augmentation_shift),
            contrast=float(self.augmentation_contrast),
            seed=seed,
        )
        if augmentation.geometric or augmentation.contrast:
            return augmentation
        return None

    def _dataset(self, xrays: Iterable[XRay], **options: Any) -> Any:
        return make_dataset(
            xrays,
            input_size=self.input_size,
            normalization=self.input_normalization,
            batch_size=self.batch_size,
            **options,
        )

    @property
    def n_views(self) -> int:
        """How many views of each radiograph prediction averages (1 without TTA)."""
        return 1 + len(self.test_time_rotations)

    def _inference_batches(
        self, xrays: Iterable[XRay], stats: ScanStats | None = None, *, views: bool = False
    ) -> Iterator[NDArray[np.float32]]:
        """Model input for prediction, ``batch_size`` images at a time (no tf.data).

        With ``views=True``, each image gives :attr:`n_views` consecutive rows: itself,
        then each of ``test_time_rotations``.
        """
        return inference_batches(
            xrays,
            input_size=self.input_size,
            normalization=self.input_normalization,
            batch_size=self.batch_size,
            stats=stats,
            rotations=tuple(float(angle) for angle in self.test_time_rotations) if views else (),
        )

    def _scan(self, xrays: Iterable[XRay], *, record_inputs: bool = False) -> ScanStats:
        stats = ScanStats(fingerprint=True, inputs=InputRecorder() if record_inputs else None)
        for xray in xrays:
            stats.see(xray)
        return stats

    @original_errors()
    def fit(self, xrays: Iterable[XRay], validation: Iterable[XRay] | None = None) -> Self:
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
        self._check_params()
        # Under covidcxr.ray.fit: the variables are created in the strategy's scope and the
        # epochs run as data-parallel steps (see covidcxr.classify._distributed).
        training = current_training()
        if training is None:
            return self._fit(xrays, validation, None)
        own = self.checkpoint_dir, self.on_epoch_end
        if training.checkpoint_dir is not None:
            self.checkpoint_dir = training.checkpoint_dir
        if training.on_epoch_end is not None:
            report, previous = training.on_epoch_end, self.on_epoch_end

            def on_epoch_end(epoch: int, logs: Mapping[str, float]) -> None:
                report(epoch, logs)
                if previous is not None:
                    previous(epoch, logs)

            self.on_epoch_end = on_epoch_end
        try:
            with training.strategy.scope():
                return self._fit(xrays, validation, training.strategy)
        finally:
            self.checkpoint_dir, self.on_epoch_end = own

    def _fit(  # noqa: PLR0915 - the recipe reads best as one story
        self, xrays: Iterable[XRay], validation: Iterable[XRay] | None, strategy: Any
    ) -> Self:
        from covidcxr.classify._network import attach_head, head_model

        train = reiterable(xrays)
        valid = reiterable(validation) if validation is not None else None
        backbone = build_backbone(self)

        if self.uses_feature_cache:
            augmentation = self._augmentation(self.seed)
            views = self.augmentation_views if augmentation is not None else 1
            # The longest silent step of the frozen recipe: shown with ``covidcxr -v``.
            _log.info(
                "computing the frozen backbone's features (%d view(s) of every training "
                "image) before the %d head epochs",
                views,
                self.epochs,
            )
            stats = ScanStats(fingerprint=True, inputs=InputRecorder())
            features = extract_features(
                self,
                backbone,
                self._dataset(train, stats=stats, augmentation=augmentation, views=views),
            )
            features = features.reshape(len(stats.ids), views, -1)
            val_stats = ScanStats(fingerprint=True) if valid is not None else None
            val_features = (
                extract_features(self, backbone, self._dataset(valid, stats=val_stats))
                if valid is not None
                else None
            )
        else:
            stats = self._scan(train, record_inputs=True)
            val_stats = self._scan(valid) if valid is not None else None
        stats.warn()

        classes, targets = encode_labels(stats)
        val_targets = encode_labels(val_stats, classes)[1] if val_stats is not None else None
        model = attach_head(
            backbone,
            n_classes=len(classes),
            dense_units=self.dense_units,
            dropout=self.dropout,
            seed=self.seed,
        )
        freeze_blocks(model, self.n_trainable_blocks)
        trained = head_model(model) if self.uses_feature_cache else model
        optimizer = make_optimizer(self)
        trained.compile(
            optimizer=optimizer,
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=self.jit_compile,
        )
        optimizer.build(trained.trainable_variables)
        steps = DataParallelSteps(trained, optimizer, strategy) if strategy is not None else None

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
        weights_by_class = class_weights(self, targets, classes)

        def run_epoch(epoch: int) -> dict[str, float]:
            epoch_seed = _epoch_seed(self.seed, epoch)
            _reseed_dropout(trained, epoch_seed)
            if self.uses_feature_cache:
                rng = np.random.default_rng(epoch_seed)
                shuffled = rng.permutation(len(targets))
                view = rng.integers(0, features.shape[1], len(targets))
                if steps is not None:
                    return steps.train_epoch(
                        array_batches(
                            features[shuffled, view[shuffled]], targets[shuffled], self.batch_size
                        ),
                        weights_by_class,
                    )
                result = trained.fit(
                    features[shuffled, view[shuffled]],
                    targets[shuffled],
                    batch_size=self.batch_size,
                    epochs=1,
                    shuffle=False,
                    class_weight=weights_by_class,
                    verbose=0,
                )
            else:
                # Sources are often sorted by class; a shuffle buffer then yields runs of
                # one class, which wrecks batch-norm statistics and SGD alike. Indexable
                # inputs get a full permutation of references instead.
                indexable = hasattr(train, "__getitem__") and hasattr(train, "__len__")
                order: NDArray[np.int64] | None = (
                    np.random.default_rng(epoch_seed).permutation(len(targets))
                    if indexable
                    else None
                )
                dataset = self._dataset(
                    train,
                    augmentation=self._augmentation(epoch_seed),
                    label_map=label_map,
                    order=order,
                    shuffle_seed=None if indexable else epoch_seed,
                    shuffle_buffer=SHUFFLE_BUFFER,
                    n_images=len(targets),
                )
                if steps is not None:
                    return steps.train_epoch(dataset, weights_by_class)
                result = trained.fit(
                    dataset,
                    epochs=1,
                    shuffle=False,
                    class_weight=weights_by_class,
                    verbose=0,
                )
            return {key: float(values[-1]) for key, values in result.history.items()}

        def validate() -> dict[str, float]:
            logs: dict[str, float] = {}
            if valid is not None and val_targets is not None:
                if steps is not None:
                    scores = steps.evaluate(
                        array_batches(val_features, val_targets, self.batch_size)
                        if self.uses_feature_cache and val_features is not None
                        else self._dataset(valid, label_map=label_map, n_images=len(val_targets))
                    )
                elif self.uses_feature_cache and val_features is not None:
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
            run_key=run_key(self.get_params(), fingerprint),
        ).run(run_epoch, validate, monitor="val_loss" if valid is not None else "loss")
        self.model_ = model
        self.classes_ = classes
        self.fitted_normalization_ = self.input_normalization
        self.fingerprint_ = fingerprint
        self.preprocessing_ = plain_data((stats.first_meta or {}).get("preprocessing"))
        self.input_profile_ = stats.inputs.profile() if stats.inputs is not None else None
        self._predict_function = None
        return self

    # ------------------------------------------------------------------ prediction

    @original_errors()
    def predict_proba(self, xrays: Iterable[XRay]) -> NDArray[np.float32]:
        """Class probabilities, one row per radiograph, columns in :attr:`classes_` order.

        Radiographs stream in batches of ``batch_size``, converted by a function traced
        once per process (no :mod:`tf.data` pipeline is built per call, so one radiograph
        costs little more than the network); only one batch of model input exists at a
        time.

        Examples
        --------
        See the class docstring.
        """
        # predict_probabilities <- this method <- original_errors' wrapper <- the caller
        return predict_probabilities(self, xrays, stacklevel=4)

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
        check_fitted(self)
        save_classifier(self, path)

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
        return load_classifier(cls, path)

    # Learned state, declared for type checkers.
    model_: keras.Model
    history_: dict[str, list[float]]
    fingerprint_: dict[str, Any]
    fitted_normalization_: Normalization
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
