"""Resumable U-Net training: a checkpoint after every epoch, taken up by the next ``fit``.

:class:`~covidcxr.lungs.LungSegmenter` and :class:`~covidcxr.LocalDetector` train with
Keras' ``fit``, Adam and two callbacks that keep state of their own: ``ReduceLROnPlateau``
(its wait and best loss) and ``EarlyStopping`` (its wait, best loss and best weights).
Keras' ``BackupAndRestore`` keeps the weights and the optimizer but not those callbacks'
state, so a run it resumed would halve the learning rate, stop, and restore weights at
other epochs than an uninterrupted run. :class:`UNetCheckpoint` keeps all of it, written
atomically after every epoch under a key of the parameters that shape training and of the
training data: a ``fit`` with the same key continues after the last finished epoch and
ends where an uninterrupted run would; one with another key is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
from attrs import frozen
from numpy.typing import NDArray

from covidcxr._model_archive import all_finite
from covidcxr._plain import plain_data
from covidcxr._threads import compute_threads, warn_on_other_threads
from covidcxr.errors import ConfigurationError, ModelFormatError
from covidcxr.files import atomic_write, check_checkpoint_location, checkpoint_lock

__all__ = ["CHECKPOINT_FILENAME", "Resumed", "UNetCheckpoint", "training_key"]

#: The file a run's checkpoint is kept in, inside ``checkpoint_dir``.
CHECKPOINT_FILENAME: Final = "checkpoint.npz"

#: What a checkpoint holds besides arrays; a change of layout changes the version.
_LAYOUT: Final = "covidcxr.unet-checkpoint/1"


def training_key(
    params: Mapping[str, Any], arrays: Sequence[NDArray[Any] | None], *, network: str
) -> str:
    """The key a checkpoint is resumed under: the network, its training parameters, the data.

    ``arrays`` are the training images and targets and the validation ones (``None`` when
    there are none); their dtype, shape and bytes all count.
    """
    digest = hashlib.sha256()
    document = {"layout": _LAYOUT, "network": network, "params": plain_data(params)}
    digest.update(json.dumps(document, sort_keys=True).encode())
    for array in arrays:
        if array is None:
            digest.update(b"|none")
            continue
        contiguous = np.ascontiguousarray(array)
        digest.update(f"|{contiguous.dtype.str}{contiguous.shape}|".encode())
        digest.update(contiguous.data)
    return digest.hexdigest()


@frozen
class Resumed:
    """Where a checkpoint left a run.

    Attributes
    ----------
    epoch
        Epochs finished (the next one to train, 0-based).
    finished
        Whether nothing is left to train: it stopped early, or ran every epoch. The model
        then already holds its final weights.
    history
        The finished epochs' losses, by name.
    """

    epoch: int
    finished: bool
    history: dict[str, list[float]]


class UNetCheckpoint:
    """A U-Net run's checkpoint file: its weights, optimizer and callbacks, after each epoch.

    Parameters
    ----------
    directory
        The run's folder (``checkpoint_dir``); the file is :data:`CHECKPOINT_FILENAME` in it.
    key
        :func:`training_key` of the run; a checkpoint under another key is refused.
    epochs
        The run's number of epochs.
    """

    def __init__(self, directory: str | os.PathLike[str], key: str, epochs: int) -> None:
        self.path = Path(directory) / CHECKPOINT_FILENAME
        self.key = key
        self.epochs = epochs
        self._callback_state: dict[str, Any] = {}
        #: Every finished epoch's logs, by name (the resumed ones first).
        self.history: dict[str, list[float]] = {}

    def __repr__(self) -> str:
        return f"UNetCheckpoint({os.fspath(self.path)!r})"

    def held(self) -> contextlib.AbstractContextManager[None]:
        """Hold the checkpoint's folder for this process (:func:`~covidcxr.files.checkpoint_lock`).

        The folder is checked first (:func:`~covidcxr.files.check_checkpoint_location`).
        """
        check_checkpoint_location(self.path)
        return checkpoint_lock(self.path.parent)

    # -- reading ---------------------------------------------------------------------------

    def restore(self, model: Any) -> Resumed | None:
        """Load the checkpoint, if there is one, into ``model`` and its (compiled) optimizer.

        The callbacks' state is kept for :meth:`callback`, which hands it back to them
        when training begins (Keras resets them then).

        Returns
        -------
        Resumed or None
            ``None`` when there is no checkpoint yet.

        Raises
        ------
        ConfigurationError
            If the checkpoint belongs to a run with other parameters or data.
        ModelFormatError
            If it is unreadable or damaged (or holds non-finite weights).
        """
        check_checkpoint_location(self.path)
        if not self.path.exists():
            return None
        try:
            state, weights, optimizer_state, best = self._read(model)
            history = state["history"]
            if not isinstance(history, dict) or not all(
                isinstance(values, list) for values in history.values()
            ):
                raise TypeError("history is not a mapping of lists")  # noqa: TRY301
            history = {key: [float(v) for v in values] for key, values in history.items()}
            epoch = int(state["epoch"])
            stopping: dict[str, float | None] = {
                key: int(state["early_stopping"][key])
                for key in ("wait", "best_epoch", "stopped_epoch")
            }
            stopping["best"] = _plain_float(state["early_stopping"]["best"])
            plateau: dict[str, float | None] = {
                key: int(state["plateau"][key]) for key in ("wait", "cooldown_counter")
            }
            plateau["best"] = _plain_float(state["plateau"]["best"])
            if not 0 < epoch <= self.epochs:
                raise ValueError(f"epoch {epoch} out of range")  # noqa: TRY301
            if not all_finite([*weights, *(best or [])]):
                raise ValueError("non-finite (NaN or infinite) weights")  # noqa: TRY301
            model.set_weights(weights)
            optimizer = model.optimizer
            if not optimizer.built:
                optimizer.build(model.trainable_variables)
            if len(optimizer.variables) != len(optimizer_state):
                raise ValueError(  # noqa: TRY301
                    f"{len(optimizer_state)} optimizer arrays, expected {len(optimizer.variables)}"
                )
            for variable, value in zip(optimizer.variables, optimizer_state, strict=True):
                if tuple(variable.shape) != value.shape:
                    raise ValueError(  # noqa: TRY301
                        f"optimizer state of shape {value.shape}, expected {variable.shape}"
                    )
                variable.assign(value)
        except ConfigurationError:
            raise
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise ModelFormatError(
                f"{self.path}: unreadable or damaged checkpoint ({exc}); delete it to start afresh"
            ) from exc
        finished = bool(stopping["stopped_epoch"]) or epoch >= self.epochs
        if not finished:  # a finished run trains no more: its bits are those it has
            warn_on_other_threads(state.get("threads"), self.path)
        if finished and best is not None:
            # What EarlyStopping(restore_best_weights=True) does when training ends.
            model.set_weights(best)
        self.history = history
        self._callback_state = {
            "early_stopping": {**stopping, "best_weights": best},
            "plateau": plateau,
        }
        return Resumed(epoch=epoch, finished=finished, history=self.history)

    def _read(
        self, model: Any
    ) -> tuple[dict[str, Any], list[NDArray[Any]], list[NDArray[Any]], list[NDArray[Any]] | None]:
        with np.load(self.path, allow_pickle=False) as saved:
            state = json.loads(str(saved["state"]))
            if not isinstance(state, dict):
                raise TypeError(f"state is {type(state).__name__}, not an object")
            if state.get("key") != self.key:
                raise ConfigurationError(
                    f"{self.path} belongs to a training run with other parameters or data; "
                    "use another checkpoint_dir, or delete the checkpoint to start afresh"
                )
            n_weights = len(model.weights)
            weights = [saved[f"weight_{i}"] for i in range(n_weights)]
            optimizer_state = [saved[f"optimizer_{i}"] for i in range(int(state["n_optimizer"]))]
            best = (
                [saved[f"best_{i}"] for i in range(n_weights)]
                if state["early_stopping"]["has_best"]
                else None
            )
        return state, weights, optimizer_state, best

    # -- writing ---------------------------------------------------------------------------

    def callback(self, keras: Any, plateau: Any | None, stopping: Any | None) -> Any:
        """A Keras callback that writes the checkpoint after every epoch.

        Put it after ``plateau`` (``ReduceLROnPlateau``) and ``stopping``
        (``EarlyStopping``) in the callback list, so that it saves their state once they
        have seen the epoch. When training begins, it hands them the state :meth:`restore`
        read (Keras resets them then).
        """
        checkpoint = self

        class SaveEveryEpoch(keras.callbacks.Callback):  # type: ignore[misc]
            def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
                checkpoint._hand_back(plateau, stopping)

            def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
                for key, value in (logs or {}).items():
                    checkpoint.history.setdefault(key, []).append(float(value))
                checkpoint.save(self.model, epoch + 1, plateau, stopping)

        return SaveEveryEpoch()

    def _hand_back(self, plateau: Any | None, stopping: Any | None) -> None:
        state = self._callback_state
        if stopping is not None and "early_stopping" in state:
            saved = state["early_stopping"]
            stopping.wait = saved["wait"]
            stopping.best = saved["best"]
            stopping.best_epoch = saved["best_epoch"]
            stopping.stopped_epoch = saved["stopped_epoch"]
            stopping.best_weights = saved["best_weights"]
        if plateau is not None and "plateau" in state:
            saved = state["plateau"]
            plateau.wait = saved["wait"]
            plateau.best = saved["best"]
            plateau.cooldown_counter = saved["cooldown_counter"]

    def save(self, model: Any, epoch: int, plateau: Any | None, stopping: Any | None) -> None:
        """Write the state after ``epoch`` finished epochs (1-based), atomically.

        A run killed while it writes keeps its previous checkpoint.
        """
        best_weights = getattr(stopping, "best_weights", None)
        state = {
            "key": self.key,
            "epoch": epoch,
            "history": self.history,
            "n_optimizer": len(model.optimizer.variables),
            "threads": compute_threads(),
            "early_stopping": {
                "wait": int(getattr(stopping, "wait", 0)),
                "best": _plain_float(getattr(stopping, "best", None)),
                "best_epoch": int(getattr(stopping, "best_epoch", 0)),
                "stopped_epoch": int(getattr(stopping, "stopped_epoch", 0)),
                "has_best": best_weights is not None,
            },
            "plateau": {
                "wait": int(getattr(plateau, "wait", 0)),
                "best": _plain_float(getattr(plateau, "best", None)),
                "cooldown_counter": int(getattr(plateau, "cooldown_counter", 0)),
            },
        }
        arrays: dict[str, NDArray[Any]] = {"state": np.array(json.dumps(state))}
        for i, weight in enumerate(model.get_weights()):
            arrays[f"weight_{i}"] = weight
        for i, variable in enumerate(model.optimizer.variables):
            arrays[f"optimizer_{i}"] = np.asarray(variable.numpy())
        for i, weight in enumerate(best_weights or []):
            arrays[f"best_{i}"] = weight
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.path) as handle:
            handle.write(buffer.getbuffer())


def _plain_float(value: Any) -> float | None:
    """A monitored loss as JSON holds it: ``None`` before the first epoch, never inf/NaN."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
