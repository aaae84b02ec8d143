"""VGG19Classifier training under fault injection: divergence and damaged checkpoints."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from covidcxr import XRay
from covidcxr.classify import VGG19Classifier
from covidcxr.classify._training import CHECKPOINT_FILENAME
from covidcxr.errors import ModelFormatError, TrainingDivergedError

from .conftest import TinyRun

# ---------------------------------------------------------------------------- divergence


def test_a_diverging_run_stops_with_a_clear_error_and_leaves_no_checkpoint(
    tmp_path: Path, train_xrays: list[XRay], tiny: dict[str, Any]
) -> None:
    classifier = VGG19Classifier(**tiny, learning_rate=1e12, checkpoint_dir=tmp_path)
    with pytest.raises(TrainingDivergedError, match=r"epoch 1 .*loss=nan.*learning_rate"):
        classifier.fit(train_xrays)
    assert not hasattr(classifier, "model_")
    assert not (tmp_path / CHECKPOINT_FILENAME).exists()


def test_saving_a_model_with_non_finite_weights_is_refused(
    tmp_path: Path, tiny_run: TinyRun
) -> None:
    # A copy of the shared fit (loading is cheaper than training), to be damaged.
    tiny_run.classifier.save(tmp_path / "intact.cxr")
    classifier = VGG19Classifier.load(tmp_path / "intact.cxr")
    weights = classifier.model_.get_weights()
    weights[-1] = np.full_like(weights[-1], np.nan)
    classifier.model_.set_weights(weights)
    target = tmp_path / "model.cxr"
    with pytest.raises(TrainingDivergedError, match=r"model\.cxr"):
        classifier.save(target)
    assert not target.exists()


# ---------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def checkpoint_bytes(tiny_run: TinyRun) -> bytes:
    """The checkpoint of a finished ``VGG19Classifier(**TINY, seed=0)`` run on train_xrays."""
    return tiny_run.checkpoint


def _rewrite(data: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    with np.load(io.BytesIO(data), allow_pickle=False) as saved:
        arrays = {key: saved[key] for key in saved.files}
    change(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _set_state(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(arrays: dict[str, Any]) -> None:
        state = json.loads(str(arrays["state"]))
        state[key] = value
        arrays["state"] = np.array(json.dumps(state))

    return change


def _set_array(
    key: str, make: Callable[[np.ndarray], np.ndarray]
) -> Callable[[dict[str, Any]], None]:
    def change(arrays: dict[str, Any]) -> None:
        arrays[key] = make(arrays[key])

    return change


def _flip_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]


DAMAGES: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda data: b"",
    "truncated": lambda data: data[: len(data) // 2],
    "flipped bytes": _flip_middle,
    "not a zip": lambda data: b"PK\x03\x04" + b"\x00" * 40,
    "epoch not a number": lambda data: _rewrite(data, _set_state("epoch", "x")),
    "negative epoch": lambda data: _rewrite(data, _set_state("epoch", -1)),
    "history not a mapping": lambda data: _rewrite(data, _set_state("history", [1, 2])),
    "state not an object": lambda data: _rewrite(
        data, lambda arrays: arrays.update(state=np.array("[1]"))
    ),
    "wrong weight shape": lambda data: _rewrite(
        data, _set_array("weight_0", lambda a: np.zeros((*a.shape, 2), a.dtype))
    ),
    "wrong optimizer shape": lambda data: _rewrite(
        data, _set_array("optimizer_0", lambda a: np.zeros((*a.shape, 2), a.dtype))
    ),
    "non-finite weights": lambda data: _rewrite(
        data, _set_array("weight_0", lambda a: np.full_like(a, np.nan))
    ),
}


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_checkpoint_raises_model_format_error_naming_the_file(
    damage: Callable[[bytes], bytes],
    checkpoint_bytes: bytes,
    tmp_path: Path,
    train_xrays: list[XRay],
    tiny: dict[str, Any],
) -> None:
    (tmp_path / CHECKPOINT_FILENAME).write_bytes(damage(checkpoint_bytes))
    with pytest.raises(ModelFormatError, match=re.escape(CHECKPOINT_FILENAME)):
        VGG19Classifier(**tiny, seed=0, checkpoint_dir=tmp_path).fit(train_xrays)


def test_a_directory_in_place_of_the_checkpoint_raises_model_format_error(
    tmp_path: Path, train_xrays: list[XRay], tiny: dict[str, Any]
) -> None:
    (tmp_path / CHECKPOINT_FILENAME).mkdir()
    with pytest.raises(ModelFormatError, match=re.escape(CHECKPOINT_FILENAME)):
        VGG19Classifier(**tiny, seed=0, checkpoint_dir=tmp_path).fit(train_xrays)


def test_an_intact_checkpoint_still_resumes(
    checkpoint_bytes: bytes, tmp_path: Path, train_xrays: list[XRay], tiny: dict[str, Any]
) -> None:
    (tmp_path / CHECKPOINT_FILENAME).write_bytes(checkpoint_bytes)
    epochs: list[int] = []
    VGG19Classifier(
        **tiny,
        seed=0,
        checkpoint_dir=tmp_path,
        on_epoch_end=lambda epoch, logs: epochs.append(epoch),
    ).fit(train_xrays)
    assert epochs == []  # all epochs were done: nothing left to train
