"""The epoch loop of :class:`~covidcxr.VGG19Classifier`.

:class:`_TrainingLoop` runs the epochs the estimator prepares: it sets each epoch's
learning rate, keeps the moving average of the weights (``weight_averaging``), stops early
and restores the best weights, and writes a checkpoint after every epoch from which a
later ``fit`` with the same parameters and data resumes. The per-epoch seeds
(:func:`_epoch_seed`, :func:`_reseed_dropout`) make a resumed run draw what an
uninterrupted one would have drawn.
"""

# TensorFlow/Keras are imported inside functions on purpose: importing covidcxr stays fast.
# ruff: noqa: PLC0415

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from covidcxr._model_archive import all_finite
from covidcxr._threads import compute_threads, warn_on_other_threads
from covidcxr.classify._fit_setup import epoch_learning_rate
from covidcxr.errors import ConfigurationError, ModelFormatError, TrainingDivergedError
from covidcxr.files import atomic_write, check_checkpoint_location, checkpoint_lock

if TYPE_CHECKING:
    import keras

    from covidcxr.classify._vgg19 import VGG19Classifier

__all__ = ["CHECKPOINT_FILENAME"]

#: The file a run's checkpoint is kept in, inside ``checkpoint_dir``.
CHECKPOINT_FILENAME = "checkpoint.npz"


def _epoch_seed(seed: int, epoch: int) -> int:
    # Distinct, reproducible per-epoch streams; SeedSequence mixes well even for
    # neighbouring (seed, epoch) pairs.
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _reseed_dropout(model: keras.Model, epoch_seed: int) -> None:
    import keras

    # Dropout's random state otherwise carries over from epoch to epoch and is not part
    # of the weights; resetting it per epoch makes a resumed run draw the same masks.
    for layer in model.layers:
        # A Dropout layer of rate 0 draws nothing and has no seed generator.
        if isinstance(layer, keras.layers.Dropout) and hasattr(layer, "seed_generator"):
            layer.seed_generator.state.assign(np.array([epoch_seed, 0], np.int64))


def _moving_average(
    average: list[NDArray[Any]] | None, weights: list[NDArray[Any]], momentum: float
) -> list[NDArray[Any]]:
    """``momentum * average + (1 - momentum) * weights``; the first average is the weights.

    Only floating-point arrays are averaged; counters and random-generator states (the
    dropout layers' seeds) keep their current values.
    """
    if average is None:
        return [np.array(w) for w in weights]
    return [
        (momentum * a + (1.0 - momentum) * w).astype(w.dtype)
        if np.issubdtype(w.dtype, np.floating)
        else np.array(w)
        for a, w in zip(average, weights, strict=True)
    ]


def _check_finite_logs(logs: dict[str, float], epoch: int) -> None:
    # A diverged run must stop here: its NaN weights would otherwise be checkpointed,
    # saved and used, and predict one class for every image.
    bad = {key: value for key, value in logs.items() if not math.isfinite(value)}
    if bad:
        shown = ", ".join(f"{key}={value}" for key, value in bad.items())
        raise TrainingDivergedError(
            f"training diverged in epoch {epoch + 1} ({shown}) at learning rate "
            f"{logs.get('lr')}; lower learning_rate (or check the data for non-finite "
            "values) and train again"
        )


class _ForeignCheckpoint(Exception):  # noqa: N818 - internal control flow, never escapes
    pass


class _TrainingLoop:
    """Runs epochs with learning-rate schedule, early stopping and resumable checkpoints."""

    def __init__(
        self,
        *,
        estimator: VGG19Classifier,
        trained: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        run_key: str,
    ) -> None:
        self.estimator = estimator
        self.trained = trained
        self.optimizer = optimizer
        self.run_key = run_key
        directory = estimator.checkpoint_dir
        self.checkpoint = Path(directory) / CHECKPOINT_FILENAME if directory is not None else None

    def run(
        self,
        run_epoch: Callable[[int], dict[str, float]],
        validate: Callable[[], dict[str, float]],
        *,
        monitor: str,
    ) -> dict[str, list[float]]:
        """Train, validate and checkpoint epoch by epoch; return the history.

        With ``weight_averaging``, validation (and so early stopping) sees the moving
        average of the weights, swapped in for it, while training goes on from the raw
        weights; the model ends with the best, or else the last, average.

        The checkpoint folder is held for this process while it trains
        (:func:`~covidcxr.files.checkpoint_lock`).
        """
        if self.checkpoint is None:
            return self._run(run_epoch, validate, monitor=monitor)
        check_checkpoint_location(self.checkpoint)
        with checkpoint_lock(self.checkpoint.parent):
            return self._run(run_epoch, validate, monitor=monitor)

    def _run(
        self,
        run_epoch: Callable[[int], dict[str, float]],
        validate: Callable[[], dict[str, float]],
        *,
        monitor: str,
    ) -> dict[str, list[float]]:
        estimator = self.estimator
        history: dict[str, list[float]] = {}
        best_score, best_weights, wait, start = math.inf, None, 0, 0
        averaged: list[NDArray[Any]] | None = None
        resumed = self._restore()
        if resumed is not None:
            history, best_score, best_weights, wait, start, averaged = resumed
        stopped = estimator.early_stopping is not None and wait >= estimator.early_stopping
        for epoch in range(start, estimator.epochs):
            if stopped:
                break
            learning_rate = epoch_learning_rate(estimator, epoch)
            self.optimizer.learning_rate = learning_rate
            logs = {**run_epoch(epoch), "lr": learning_rate}
            raw: list[NDArray[Any]] | None = None
            if estimator.weight_averaging is not None:
                raw = [np.array(w) for w in self.trained.get_weights()]
                averaged = _moving_average(averaged, raw, estimator.weight_averaging)
                self.trained.set_weights(averaged)
            logs.update(validate())
            _check_finite_logs(logs, epoch)
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
            score = logs.get(monitor, math.inf)
            if score < best_score:
                best_score, wait = score, 0
                if estimator.early_stopping is not None:
                    best_weights = [np.array(w) for w in self.trained.get_weights()]
            else:
                wait += 1
            if raw is not None:
                self.trained.set_weights(raw)
            stopped = estimator.early_stopping is not None and wait >= estimator.early_stopping
            self._save(
                epoch + 1,
                history=history,
                best_score=best_score,
                best_weights=best_weights,
                wait=wait,
                averaged=averaged,
            )
            if estimator.verbose:
                shown = " ".join(f"{key}={value:.4g}" for key, value in logs.items())
                print(f"epoch {epoch + 1}/{estimator.epochs}: {shown}", flush=True)
            if estimator.on_epoch_end is not None:
                estimator.on_epoch_end(epoch + 1, logs)
        final = best_weights if best_weights is not None else averaged
        if final is not None:
            self.trained.set_weights(final)
        return history

    def _save(
        self,
        epoch: int,
        *,
        history: dict[str, list[float]],
        best_score: float,
        best_weights: list[NDArray[Any]] | None,
        wait: int,
        averaged: list[NDArray[Any]] | None,
    ) -> None:
        if self.checkpoint is None:
            return
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "run_key": self.run_key,
            "epoch": epoch,
            "history": history,
            "best_score": best_score if math.isfinite(best_score) else None,
            "wait": wait,
            "has_best": best_weights is not None,
            "has_average": averaged is not None,
            "threads": compute_threads(),
        }
        arrays: dict[str, NDArray[Any]] = {"state": np.array(json.dumps(state))}
        for i, weight in enumerate(self.trained.get_weights()):
            arrays[f"weight_{i}"] = weight
        for i, variable in enumerate(self.optimizer.variables):
            arrays[f"optimizer_{i}"] = variable.numpy()
        for i, weight in enumerate(best_weights or []):
            arrays[f"best_{i}"] = weight
        for i, weight in enumerate(averaged or []):
            arrays[f"average_{i}"] = weight
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        with atomic_write(self.checkpoint) as handle:
            handle.write(buffer.getbuffer())

    def _restore(
        self,
    ) -> (
        tuple[
            dict[str, list[float]],
            float,
            list[NDArray[Any]] | None,
            int,
            int,
            list[NDArray[Any]] | None,
        ]
        | None
    ):
        if self.checkpoint is None:
            return None
        check_checkpoint_location(self.checkpoint)
        if not self.checkpoint.exists():
            return None
        try:
            with np.load(self.checkpoint, allow_pickle=False) as saved:
                state = json.loads(str(saved["state"]))
                if not isinstance(state, dict):
                    raise TypeError(f"state is {type(state).__name__}, not an object")  # noqa: TRY301
                if state.get("run_key") != self.run_key:
                    raise _ForeignCheckpoint  # noqa: TRY301 - leaves the with block first
                weights = [saved[f"weight_{i}"] for i in range(len(self.trained.weights))]
                optimizer_state = [
                    saved[f"optimizer_{i}"] for i in range(len(self.optimizer.variables))
                ]
                best = (
                    [saved[f"best_{i}"] for i in range(len(weights))] if state["has_best"] else None
                )
                average = (
                    [saved[f"average_{i}"] for i in range(len(weights))]
                    if state.get("has_average")
                    else None
                )
            history = state["history"]
            if not isinstance(history, dict) or not all(
                isinstance(values, list) for values in history.values()
            ):
                raise TypeError("history is not a mapping of lists")  # noqa: TRY301
            best_score = float(state["best_score"]) if state["best_score"] is not None else math.inf
            wait, epoch = int(state["wait"]), int(state["epoch"])
            if not 0 <= epoch <= self.estimator.epochs or wait < 0:
                raise ValueError(f"epoch {epoch} or wait {wait} out of range")  # noqa: TRY301
            if not all_finite([*weights, *(best or []), *(average or [])]):
                raise ValueError("non-finite (NaN or infinite) weights")  # noqa: TRY301
            saved_threads = state.get("threads")
            self.trained.set_weights(weights)
            for variable, value in zip(self.optimizer.variables, optimizer_state, strict=True):
                if tuple(variable.shape) != value.shape:
                    raise ValueError(  # noqa: TRY301
                        f"optimizer state of shape {value.shape}, expected {variable.shape}"
                    )
                variable.assign(value)
        except _ForeignCheckpoint:
            raise ConfigurationError(
                f"{self.checkpoint} belongs to a run with other parameters or data; use "
                "another checkpoint_dir, or delete the checkpoint to start afresh"
            ) from None
        except (
            OSError,
            ValueError,
            KeyError,
            TypeError,
            EOFError,
            zipfile.BadZipFile,
        ) as exc:
            raise ModelFormatError(
                f"{self.checkpoint}: unreadable or damaged checkpoint ({exc}); delete it to "
                "start afresh"
            ) from exc
        patience = self.estimator.early_stopping
        if epoch < self.estimator.epochs and (patience is None or wait < patience):
            warn_on_other_threads(saved_threads, self.checkpoint)  # it trains on
        return history, best_score, best, wait, epoch, average
