"""Resumable U-Net training: the lung segmenter and the local detector pick up a checkpoint.

An interrupted ``fit`` with ``checkpoint_dir`` continues after its last finished epoch, with
the learning rate, early-stopping counters and best weights it had, and ends exactly where
an uninterrupted run ends; a finished run is not trained again; a checkpoint of another
run is refused, a damaged one named.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from covidcxr import Pipeline, XRay
from covidcxr._threads import compute_threads
from covidcxr._unet_checkpoint import CHECKPOINT_FILENAME
from covidcxr.detect import LocalDetector
from covidcxr.errors import (
    ConfigurationError,
    ModelFormatError,
    OutputError,
    ResumeMismatchWarning,
)
from covidcxr.files import _owner_tag
from covidcxr.lungs import LungSegmenter
from covidcxr.phantoms import generate_phantoms

from ..conftest import hold_in_another_process

pytestmark = pytest.mark.slow

Net = LungSegmenter | LocalDetector
ESTIMATORS: dict[str, type[LungSegmenter] | type[LocalDetector]] = {
    "lungs": LungSegmenter,
    "detector": LocalDetector,
}
# Small enough to train in seconds; patience 2 so that the learning rate halves after one
# epoch without improvement and early stopping has a count to carry across the interruption.
TINY: dict[str, Any] = {
    "input_size": 32,
    "base_filters": 2,
    "depth": 1,
    "epochs": 6,
    "batch_size": 4,
    "learning_rate": 0.05,
    "patience": 2,
    "threads": 1,
}
# Rates at which each network's validation loss stalls within six epochs (checked below).
RATES = {"lungs": 0.05, "detector": 0.1}


class InterruptError(Exception):
    """Stands in for a killed process: raised from ``on_epoch_end``."""


@pytest.fixture(scope="module")
def train() -> list[XRay]:
    return generate_phantoms(4, size=32, seed=3)


@pytest.fixture(scope="module")
def valid() -> list[XRay]:
    return generate_phantoms(2, size=32, seed=4)


@pytest.fixture(scope="module")
def reference(train: list[XRay], valid: list[XRay]) -> dict[str, tuple[Net, list[int]]]:
    """Each estimator trained without interruption (and without a checkpoint)."""
    runs: dict[str, tuple[Net, list[int]]] = {}
    for name, cls in ESTIMATORS.items():
        epochs, record = recorder()
        fitted = cls(**{**TINY, "learning_rate": RATES[name]}, on_epoch_end=record)
        runs[name] = (fitted.fit(train, validation=valid), epochs)
    return runs


def recorder() -> tuple[list[int], Callable[[int, Mapping[str, float]], None]]:
    """A list, and an ``on_epoch_end`` that appends each finished epoch to it."""
    epochs: list[int] = []

    def record(epoch: int, logs: Mapping[str, float]) -> None:
        epochs.append(epoch)

    return epochs, record


def interrupt_after(epochs: int) -> Callable[[int, Mapping[str, float]], None]:
    def on_epoch_end(epoch: int, logs: Mapping[str, float]) -> None:
        if epoch > epochs:
            raise InterruptError

    return on_epoch_end


def one_epoch_checkpoint(
    cls: type[LungSegmenter] | type[LocalDetector],
    directory: Path,
    train: list[XRay],
    valid: list[XRay],
) -> Path:
    """The checkpoint a run of ``cls`` interrupted after its first epoch leaves in ``directory``."""
    with pytest.raises(InterruptError):
        cls(**TINY, checkpoint_dir=directory, on_epoch_end=interrupt_after(1)).fit(
            train, validation=valid
        )
    return directory / CHECKPOINT_FILENAME


def rewrite(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite a checkpoint's arrays (``state`` as its JSON text) through ``change``."""
    with np.load(path) as saved:
        arrays: dict[str, Any] = {key: saved[key] for key in saved.files}
    change(arrays)
    np.savez(path, **arrays)


def assert_same_network(mine: Net, theirs: Net) -> None:
    pairs = zip(mine.model_.get_weights(), theirs.model_.get_weights(), strict=True)
    for a, b in pairs:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_an_interrupted_fit_resumes_and_ends_like_an_uninterrupted_run(
    name: str,
    tmp_path: Path,
    train: list[XRay],
    valid: list[XRay],
    reference: dict[str, tuple[Net, list[int]]],
) -> None:
    cls, params = ESTIMATORS[name], {**TINY, "learning_rate": RATES[name]}
    expected, expected_epochs = reference[name]
    # Interrupt just before the first epoch whose validation loss is worse than an earlier
    # one: resumed there, the learning-rate schedule and early stopping act on what they
    # saw before the interruption (their best loss, their wait, the best weights so far),
    # so a run that forgot it would halve the rate and restore weights at other epochs.
    losses = expected.history_["val_loss"]
    worse = [i for i in range(1, len(losses)) if losses[i] > min(losses[:i])]
    assert worse, losses
    finished = worse[0]

    with pytest.raises(InterruptError):
        cls(**params, checkpoint_dir=tmp_path, on_epoch_end=interrupt_after(finished)).fit(
            train, validation=valid
        )
    assert (tmp_path / CHECKPOINT_FILENAME).is_file()
    epochs, record = recorder()
    resumed = cls(**params, checkpoint_dir=tmp_path, on_epoch_end=record).fit(
        train, validation=valid
    )

    assert epochs == expected_epochs[finished:]
    assert resumed.history_ == expected.history_
    assert_same_network(resumed, expected)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_a_finished_run_is_not_trained_again(
    name: str,
    tmp_path: Path,
    train: list[XRay],
    valid: list[XRay],
    reference: dict[str, tuple[Net, list[int]]],
) -> None:
    cls, params = ESTIMATORS[name], {**TINY, "learning_rate": RATES[name]}
    expected, _ = reference[name]
    cls(**params, checkpoint_dir=tmp_path).fit(train, validation=valid)
    epochs, record = recorder()
    again = cls(**params, checkpoint_dir=tmp_path, on_epoch_end=record).fit(train, validation=valid)
    assert epochs == []
    assert again.history_ == expected.history_
    assert_same_network(again, expected)


def test_a_checkpoint_of_other_training_parameters_or_data_is_refused(
    tmp_path: Path, train: list[XRay], valid: list[XRay]
) -> None:
    before = one_epoch_checkpoint(LungSegmenter, tmp_path, train, valid).read_bytes()
    other_rate = {**TINY, "learning_rate": 0.01}
    with pytest.raises(ConfigurationError, match="other parameters or data"):
        LungSegmenter(**other_rate, checkpoint_dir=tmp_path).fit(train, validation=valid)
    with pytest.raises(ConfigurationError, match=CHECKPOINT_FILENAME):
        LungSegmenter(**TINY, checkpoint_dir=tmp_path).fit(train[:-1], validation=valid)
    with pytest.raises(ConfigurationError, match="other parameters or data"):
        LungSegmenter(**TINY, checkpoint_dir=tmp_path).fit(train, validation=None)
    # Refused, never overwritten.
    assert (tmp_path / CHECKPOINT_FILENAME).read_bytes() == before


def test_parameters_that_act_only_after_training_keep_the_checkpoint(
    tmp_path: Path, train: list[XRay], valid: list[XRay]
) -> None:
    one_epoch_checkpoint(LocalDetector, tmp_path, train, valid)
    epochs, record = recorder()
    LocalDetector(
        **TINY,
        mask_threshold=0.3,
        label="lesion",
        verbose=0,
        checkpoint_dir=tmp_path,
        on_epoch_end=record,
    ).fit(train, validation=valid)
    assert epochs[0] == 2


def test_a_damaged_checkpoint_is_named_and_left_alone(
    tmp_path: Path, train: list[XRay], valid: list[XRay]
) -> None:
    path = tmp_path / CHECKPOINT_FILENAME
    path.write_bytes(b"PK\x03\x04 half a zip")
    with pytest.raises(ModelFormatError, match=CHECKPOINT_FILENAME):
        LungSegmenter(**TINY, checkpoint_dir=tmp_path).fit(train, validation=valid)
    assert path.read_bytes() == b"PK\x03\x04 half a zip"


def test_a_checkpoint_whose_state_lacks_a_field_is_named_as_damaged(
    tmp_path: Path, train: list[XRay], valid: list[XRay]
) -> None:
    def drop_a_field(arrays: dict[str, Any]) -> None:
        state = json.loads(str(arrays["state"]))
        del state["early_stopping"]["stopped_epoch"]
        arrays["state"] = np.array(json.dumps(state))

    rewrite(one_epoch_checkpoint(LungSegmenter, tmp_path, train, valid), drop_a_field)
    with pytest.raises(ModelFormatError, match="damaged checkpoint"):
        LungSegmenter(**TINY, checkpoint_dir=tmp_path).fit(train, validation=valid)


def test_a_checkpoint_with_non_finite_weights_is_refused(
    tmp_path: Path, train: list[XRay], valid: list[XRay]
) -> None:
    def poison(arrays: dict[str, Any]) -> None:
        arrays["weight_0"] = np.full_like(arrays["weight_0"], np.nan)

    rewrite(one_epoch_checkpoint(LungSegmenter, tmp_path, train, valid), poison)
    with pytest.raises(ModelFormatError, match="non-finite"):
        LungSegmenter(**TINY, checkpoint_dir=tmp_path).fit(train, validation=valid)


def test_a_checkpoint_whose_history_is_not_numbers_is_named_as_damaged(
    tmp_path: Path, train: list[XRay], valid: list[XRay]
) -> None:
    def spoil(arrays: dict[str, Any]) -> None:
        state = json.loads(str(arrays["state"]))
        state["history"]["loss"] = [None]
        arrays["state"] = np.array(json.dumps(state))

    rewrite(one_epoch_checkpoint(LungSegmenter, tmp_path, train, valid), spoil)
    with pytest.raises(ModelFormatError, match="damaged checkpoint"):
        LungSegmenter(**TINY, checkpoint_dir=tmp_path).fit(train, validation=valid)


def test_a_checkpoint_folder_that_is_a_file_is_refused_before_training(
    tmp_path: Path, train: list[XRay], valid: list[XRay]
) -> None:
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    epochs, record = recorder()
    with pytest.raises(OutputError, match="a file, not a folder"):
        LungSegmenter(**TINY, checkpoint_dir=mine, on_epoch_end=record).fit(train, validation=valid)
    assert epochs == []
    assert mine.read_text() == "mine"


def test_resuming_under_another_thread_count_says_the_last_bits_will_differ(
    tmp_path: Path, train: list[XRay], valid: list[XRay]
) -> None:
    def other_machine(arrays: dict[str, Any]) -> None:
        state = json.loads(str(arrays["state"]))
        # The count TensorFlow computes with (TINY's threads=1 applies only if this
        # process had not run TensorFlow yet).
        assert state["threads"] == compute_threads()
        state["threads"] = compute_threads() + 1
        arrays["state"] = np.array(json.dumps(state))

    rewrite(one_epoch_checkpoint(LungSegmenter, tmp_path, train, valid), other_machine)
    with pytest.warns(ResumeMismatchWarning, match=f"{compute_threads() + 1} CPU thread"):
        LungSegmenter(**TINY, checkpoint_dir=tmp_path).fit(train, validation=valid)


def test_a_checkpoint_folder_another_process_trains_in_is_refused_before_training(
    tmp_path: Path, train: list[XRay], valid: list[XRay]
) -> None:
    holder = hold_in_another_process(tmp_path)
    epochs, record = recorder()
    try:
        with pytest.raises(OutputError, match="another training process"):
            LungSegmenter(**TINY, checkpoint_dir=tmp_path, on_epoch_end=record).fit(
                train, validation=valid
            )
    finally:
        holder.kill()
        holder.wait()
    assert epochs == []
    assert not (tmp_path / CHECKPOINT_FILENAME).exists()


def test_what_a_killed_checkpoint_write_left_is_removed(
    tmp_path: Path, train: list[XRay], valid: list[XRay]
) -> None:
    # atomic_write's temporary file of a process that no longer runs (pid 2**22 + 1 is
    # above Linux's pid_max, so never alive), as a kill in mid-write leaves it.
    owner = _owner_tag().split("@")[1]
    left = tmp_path / f".{CHECKPOINT_FILENAME}.{2**22 + 1}@{owner}.abcd1234.tmp"
    left.write_bytes(b"half a checkpoint")
    LungSegmenter(**{**TINY, "epochs": 1}, checkpoint_dir=tmp_path).fit(train, validation=valid)
    assert not left.exists()
    assert (tmp_path / CHECKPOINT_FILENAME).is_file()


def test_the_checkpoint_folder_is_not_saved_with_the_model(
    tmp_path: Path, train: list[XRay]
) -> None:
    quick = {**TINY, "epochs": 1}
    run = tmp_path / "run-3f9c1a"
    detector = LocalDetector(**quick, checkpoint_dir=run).fit(train)
    detector.save(tmp_path / "detector.zip")
    with zipfile.ZipFile(tmp_path / "detector.zip") as archive:
        stored = b"".join(archive.read(name) for name in archive.namelist())
    assert b"run-3f9c1a" not in stored
    assert b"checkpoint_dir" not in stored
    assert LocalDetector.load(tmp_path / "detector.zip").checkpoint_dir is None

    config = {
        "preprocessor": {"name": "gaussian-clahe", "output_size": 32},
        "lungs": {"output_size": 32, "segmenter": {**quick, "checkpoint_dir": "/secret/run"}},
        "classifier": {"name": "vgg19", "input_size": 32, "weights": "none", "epochs": 1},
    }
    described = json.dumps(Pipeline(config).describe())
    assert "checkpoint_dir" not in described
    assert "/secret/run" not in described
