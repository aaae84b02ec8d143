"""What :meth:`VGG19Classifier.fit <covidcxr.VGG19Classifier.fit>` sets up before its epochs.

The backbone with its weights (and the check that a weights file matches it), the frozen
blocks, the optimizer and its per-epoch learning rate, the label encoding and the class
weights, and the frozen backbone's cached features. The epoch loop of
:mod:`covidcxr.classify._training` then runs the epochs.
"""

# TensorFlow/Keras are imported inside functions on purpose: importing covidcxr stays fast.
# ruff: noqa: PLC0415

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from covidcxr.classify._inputs import ScanStats
from covidcxr.classify._parameters import N_BLOCKS
from covidcxr.errors import ConfigurationError, WeightsUnavailableError
from covidcxr.labels import LABELS

if TYPE_CHECKING:
    import keras

    from covidcxr.classify._vgg19 import VGG19Classifier

__all__ = [
    "build_backbone",
    "class_weights",
    "encode_labels",
    "epoch_learning_rate",
    "extract_features",
    "freeze_blocks",
    "input_spec",
    "make_optimizer",
]


def build_backbone(estimator: VGG19Classifier) -> keras.Model:
    """The convolutional base, with the weights ``estimator.weights`` names loaded.

    Raises
    ------
    WeightsUnavailableError
        If the weights cannot be had, or a weights file does not match the backbone.
    """
    from covidcxr.classify._network import build_backbone as build_network
    from covidcxr.classify._weights import resolve_imagenet_weights, resolve_weights_file

    weights_file: Path | None = None
    if isinstance(estimator.weights, str) and estimator.weights == "imagenet":
        weights_file = resolve_imagenet_weights()
    elif estimator.weights is not None:
        weights_file = resolve_weights_file(estimator.weights)
    backbone = build_network(
        input_size=estimator.input_size,
        width_multiplier=estimator.width_multiplier,
        batch_norm=estimator.batch_norm,
        seed=estimator.seed,
    )
    if weights_file is not None:
        mismatch = (
            f"weights file {weights_file} does not match the backbone "
            f"(batch_norm={estimator.batch_norm}, "
            f"width_multiplier={estimator.width_multiplier})"
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


def freeze_blocks(model: keras.Model, n_trainable_blocks: int) -> None:
    """Freeze all but the top ``n_trainable_blocks`` convolutional blocks of ``model``."""
    from covidcxr.classify._network import block_of_layer

    first_trainable = N_BLOCKS - n_trainable_blocks + 1
    for layer in model.layers:
        block = block_of_layer(layer.name)
        if block is not None:
            layer.trainable = block >= first_trainable


def make_optimizer(estimator: VGG19Classifier) -> keras.optimizers.Optimizer:
    """Adam, or SGD with ``momentum``, at the peak learning rate."""
    import keras

    if estimator.optimizer == "adam":
        return keras.optimizers.Adam(estimator.learning_rate)
    return keras.optimizers.SGD(estimator.learning_rate, momentum=estimator.momentum)


def epoch_learning_rate(estimator: VGG19Classifier, epoch: int) -> float:
    """The learning rate of 0-based ``epoch``: linear warm-up, then constant or cosine."""
    if epoch < estimator.warmup_epochs:
        return estimator.learning_rate * (epoch + 1) / (estimator.warmup_epochs + 1)
    if estimator.lr_schedule == "constant":
        return float(estimator.learning_rate)
    progress = (epoch - estimator.warmup_epochs) / max(
        1, estimator.epochs - estimator.warmup_epochs
    )
    return float(estimator.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress)))


def class_weights(
    estimator: VGG19Classifier, targets: NDArray[np.int32], classes: tuple[str, ...]
) -> dict[int, float] | None:
    """Keras's ``class_weight`` for ``estimator.class_weight``, by class index."""
    if estimator.class_weight is None:
        return None
    if isinstance(estimator.class_weight, str):
        counts = np.bincount(targets, minlength=len(classes))
        return {i: len(targets) / (len(classes) * int(c)) for i, c in enumerate(counts)}
    unknown = set(estimator.class_weight) - set(classes)
    if unknown:
        raise ConfigurationError(
            f"VGG19Classifier: class_weight names {sorted(unknown)}, which are not among "
            f"the training labels {classes}"
        )
    return {i: float(estimator.class_weight.get(label, 1.0)) for i, label in enumerate(classes)}


def encode_labels(
    stats: ScanStats, classes: tuple[str, ...] | None = None
) -> tuple[tuple[str, ...], NDArray[np.int32]]:
    """The classes (in :data:`~covidcxr.LABELS` order) and each radiograph's class index.

    With ``classes`` (validation data), its labels must be among them.

    Raises
    ------
    ConfigurationError
        If a radiograph has no label, training data has fewer than two classes, or a
        validation label does not occur in the training data.
    """
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


def input_spec(input_size: int) -> Any:
    """The ``tf.TensorSpec`` of a batch of model input."""
    import tensorflow as tf

    return tf.TensorSpec((None, input_size, input_size, 3), tf.float32)


def extract_features(
    estimator: VGG19Classifier, backbone: keras.Model, dataset: Any
) -> NDArray[np.float32]:
    """The frozen ``backbone``'s pooled features of every batch of ``dataset``, in order."""
    import tensorflow as tf

    extract = tf.function(
        lambda x: backbone(x, training=False),
        input_signature=[input_spec(estimator.input_size)],
        jit_compile=estimator.jit_compile,
    )
    parts = [extract(batch).numpy() for batch in dataset]
    width = int(backbone.output.shape[-1])
    return np.concatenate(parts) if parts else np.zeros((0, width), np.float32)
