"""Data-parallel training of the classifier under a multi-worker ``tf.distribute`` strategy.

:class:`~covidcxr.VGG19Classifier` trains with ``keras.Model.fit`` on one process. Under
:class:`tf.distribute.MultiWorkerMirroredStrategy` with more than one worker, Keras 3
(3.15 with TensorFlow 2.21, as installed here) cannot run ``fit``: its TensorFlow trainer
reduces the whole ``(x, y)`` batch structure with ``strategy.reduce`` when it first builds
the model, and then reduces scalar logs with ``axis=0``; both raise ``ValueError`` as
soon as a second worker joins (keras-team/keras#20585, tensorflow/tensorflow#72388,
ray-project/ray#47464; the Ray docs page has a minimal reproduction). So under such a
strategy the classifier trains with the steps below instead: each worker computes the
loss and gradients of its share of every batch inside ``strategy.run``, and the Keras
optimizer all-reduces (sums) the gradients across workers with the strategy's collective
ops before applying them, so every worker applies the same update and keeps identical
weights. Validation runs whole on every worker, outside the strategy's steps.

Every worker walks the same global batches in the same order (the epoch's permutation
comes from the seed) and takes rows ``rank::workers`` of each, with the loss scaled by the
global batch's size: the summed gradient is the gradient of the whole batch's mean loss,
the update single-process training makes. What stays per worker: batch normalisation's
batch statistics (its moving averages are synchronised) and the input pipeline, which
each worker runs over the whole batch before taking its rows.
"""

# TensorFlow/Keras are imported inside functions on purpose: importing covidcxr stays fast.
# ruff: noqa: PLC0415

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import attrs
import numpy as np
from numpy.typing import NDArray

from covidcxr.errors import ConfigurationError

__all__ = [
    "DataParallelSteps",
    "DistributedTraining",
    "array_batches",
    "current_training",
    "training_strategy",
]


@attrs.frozen
class DistributedTraining:
    """How :meth:`VGG19Classifier.fit <covidcxr.VGG19Classifier.fit>` trains on this worker.

    ``strategy`` is the ``tf.distribute`` strategy; ``checkpoint_dir`` and
    ``on_epoch_end``, when set, stand in for the classifier's own for the run (the
    worker's local checkpoint, and the report to the cluster after each epoch) without
    becoming its parameters, so they are neither saved nor part of the run's key.
    """

    strategy: Any
    checkpoint_dir: str | os.PathLike[str] | None = None
    on_epoch_end: Callable[[int, Mapping[str, float]], None] | None = None


_TRAINING: contextvars.ContextVar[DistributedTraining | None] = contextvars.ContextVar(
    "covidcxr_distributed_training", default=None
)


@contextlib.contextmanager
def training_strategy(training: DistributedTraining) -> Iterator[None]:
    """Have :meth:`VGG19Classifier.fit` train as ``training`` says within the block.

    Only the classifier uses it: the other stages of a pipeline (lung segmenter,
    detector) keep training on one process, as ``keras.Model.fit`` cannot run under a
    multi-worker strategy.
    """
    token = _TRAINING.set(training)
    try:
        yield
    finally:
        _TRAINING.reset(token)


def current_training() -> DistributedTraining | None:
    """What :func:`training_strategy` set, or ``None``."""
    return _TRAINING.get()


def _worker_position(strategy: Any) -> tuple[int, int]:
    """The index of the worker running here, and the number of workers of ``strategy``.

    Raises
    ------
    ConfigurationError
        If a worker holds more than one replica (several GPUs): each worker takes one
        share of every batch, so each must train on one device.
    """
    local = len(strategy.extended.worker_devices)
    if local != 1:
        raise ConfigurationError(
            f"data-parallel training runs one replica per worker, but this worker has {local} "
            "devices; give each worker one device (Ray Train: one GPU per worker)"
        )
    resolver = strategy.cluster_resolver
    index = int(resolver.task_id or 0) if resolver is not None else 0
    return index, int(strategy.num_replicas_in_sync)


class DataParallelSteps:
    """Training and evaluation steps of a Keras model under ``strategy``.

    ``model`` and ``optimizer`` must have been created in ``strategy.scope()``; the
    model is trained on ``sparse_categorical_crossentropy`` of its softmax output, as
    :class:`~covidcxr.VGG19Classifier` compiles it.
    """

    def __init__(self, model: Any, optimizer: Any, strategy: Any) -> None:
        import keras
        import tensorflow as tf

        self.model = model
        self.optimizer = optimizer
        self.strategy = strategy
        self.rank, self.workers = _worker_position(strategy)

        def replica_step(x: Any, y: Any, w: Any, global_size: Any) -> Any:
            with tf.GradientTape() as tape:
                probabilities = model(x, training=True)
                per_example = keras.losses.sparse_categorical_crossentropy(y, probabilities)
                loss = tf.reduce_sum(per_example * w) / global_size
                if model.losses:  # regularisation, counted once over all workers
                    loss += tf.add_n(model.losses) / tf.cast(self.workers, tf.float32)
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
            correct = tf.cast(
                tf.equal(tf.argmax(probabilities, axis=1, output_type=tf.int32), y), tf.float32
            )
            return tf.stack([tf.reduce_sum(per_example * w), tf.reduce_sum(correct * w)])

        def train_step(x: Any, y: Any, w: Any, global_size: Any) -> Any:
            sums = strategy.run(replica_step, args=(x, y, w, global_size))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)

        def evaluate_step(x: Any, y: Any) -> Any:
            probabilities = model(x, training=False)
            per_example = keras.losses.sparse_categorical_crossentropy(y, probabilities)
            correct = tf.equal(tf.argmax(probabilities, axis=1, output_type=tf.int32), y)
            return tf.stack(
                [tf.reduce_sum(per_example), tf.reduce_sum(tf.cast(correct, tf.float32))]
            )

        # Batch normalisation updates its moving averages from each worker's own rows, so
        # they drift apart; they are linear in the batch statistics, so averaging them
        # across workers once an epoch gives what averaging after every step would.
        moving = [v for v in model.non_trainable_variables if "moving_" in v.path]

        def synchronise_moving_averages() -> None:
            # One all-reduce of every moving average, flattened into one vector.
            flat = tf.concat([tf.reshape(tf.cast(v.value, tf.float32), [-1]) for v in moving], 0)
            mean = strategy.reduce(tf.distribute.ReduceOp.MEAN, flat, axis=None)
            start = 0
            for variable in moving:
                size = int(np.prod(variable.shape))
                part = tf.reshape(mean[start : start + size], variable.shape)
                variable.assign(tf.cast(part, variable.dtype))
                start += size

        self._train_step = tf.function(train_step, reduce_retracing=True)
        self._evaluate_step = tf.function(evaluate_step, reduce_retracing=True)
        self._synchronise = synchronise_moving_averages if moving else None

    def _share(self, array: NDArray[Any]) -> NDArray[Any]:
        return array[self.rank :: self.workers]

    def train_epoch(
        self,
        batches: Iterable[tuple[Any, Any]],
        class_weight: Mapping[int, float] | None,
    ) -> dict[str, float]:
        """One pass over global ``(images, labels)`` batches; the epoch's loss and accuracy.

        Every worker must pass the same batches in the same order. The loss is the
        (class-weighted) mean over the epoch's images and the accuracy the
        (class-weighted) share classified right, as Keras reports them.
        """
        import tensorflow as tf

        loss_sum = correct = weight_sum = 0.0
        count = 0
        for images, labels in batches:
            x = np.asarray(images, np.float32)
            y = np.asarray(labels, np.int32)
            w = (
                np.array([class_weight.get(int(label), 1.0) for label in y], np.float32)
                if class_weight is not None
                else np.ones(len(y), np.float32)
            )
            mine_x, mine_y, mine_w = self._share(x), self._share(y), self._share(w)
            if len(mine_y) == 0:
                # Fewer images than workers in the last batch: this worker still joins
                # the all-reduce, with an image that weighs nothing.
                mine_x, mine_y, mine_w = x[:1], y[:1], np.zeros(1, np.float32)
            sums = self._train_step(
                tf.constant(mine_x),
                tf.constant(mine_y),
                tf.constant(mine_w),
                tf.constant(float(len(y)), tf.float32),
            ).numpy()
            loss_sum += float(sums[0])
            correct += float(sums[1])
            weight_sum += float(w.sum())
            count += len(y)
        if self._synchronise is not None:
            self._synchronise()
        return {
            "accuracy": correct / weight_sum if weight_sum else 0.0,
            "loss": loss_sum / count if count else 0.0,
        }

    def evaluate(self, batches: Iterable[tuple[Any, Any]]) -> dict[str, float]:
        """Loss and accuracy over ``(images, labels)`` batches, all on this worker."""
        import tensorflow as tf

        loss_sum = correct = 0.0
        count = 0
        for images, labels in batches:
            sums = self._evaluate_step(
                tf.constant(np.asarray(images, np.float32)),
                tf.constant(np.asarray(labels, np.int32)),
            ).numpy()
            loss_sum += float(sums[0])
            correct += float(sums[1])
            count += len(labels)
        return {
            "accuracy": correct / count if count else 0.0,
            "loss": loss_sum / count if count else 0.0,
        }


def array_batches(
    x: NDArray[Any], y: NDArray[Any], batch_size: int
) -> Iterator[tuple[NDArray[Any], NDArray[Any]]]:
    """``(x, y)`` in consecutive batches of ``batch_size`` (the last one may be shorter)."""
    for start in range(0, len(y), batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size]
