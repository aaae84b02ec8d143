"""covidcxr.ray.fit: Pipeline.fit on Ray Train, two workers, a tiny VGG19 on phantoms.

Each Ray Train run starts two TensorFlow processes on the local cluster, so the tests are
few and each checks several things of one run.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("ray")

import ray.cloudpickle

import covidcxr
import covidcxr.ray
from covidcxr.classify import VGG19Classifier
from covidcxr.errors import ConfigurationError, DistributedJobError
from covidcxr.phantoms import generate_phantoms, write_phantom_dataset

# The callbacks below travel to the Ray workers, which cannot import this test module.
# (Typed Any: the typing session has no Ray installed, this one has.)
register_by_value: Any = ray.cloudpickle.register_pickle_by_value
register_by_value(sys.modules[__name__])

# Dropout 0 and no batch normalisation: nothing random and nothing per worker, so
# data-parallel training must give single-process training's weights.
TINY: dict[str, Any] = {
    "input_size": 32,
    "weights": None,
    "width_multiplier": 0.125,
    "dense_units": 8,
    "dropout": 0.0,
    "trainable_blocks": "all",
    "augmentation": None,
    "batch_size": 6,
}


def tiny_pipeline(epochs: int, **options: Any) -> covidcxr.Pipeline:
    classifier = VGG19Classifier(**{**TINY, "epochs": epochs, **options})
    return covidcxr.Pipeline(
        {"preprocessor": None, "detector": None, "trust": {"gate": False}},
        classifier=classifier,
    )


def assert_same_weights(one: covidcxr.Pipeline, other: covidcxr.Pipeline) -> None:
    assert isinstance(one.classifier_, VGG19Classifier)
    assert isinstance(other.classifier_, VGG19Classifier)
    mine, theirs = one.classifier_.model_.get_weights(), other.classifier_.model_.get_weights()
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)


class FailOnce:
    """``on_epoch_end`` that records the epochs rank 0 ran and fails rank 1 once."""

    def __init__(self, folder: Path, fail_at: int) -> None:
        self.folder = folder
        self.fail_at = fail_at

    def __call__(self, epoch: int, logs: Any) -> None:
        from ray import train

        rank = train.get_context().get_world_rank()
        if rank == 0:
            with (self.folder / "epochs.txt").open("a") as handle:
                handle.write(f"{epoch}\n")
        marker = self.folder / "failed"
        if rank == 1 and epoch == self.fail_at and not marker.exists():
            marker.touch()
            raise RuntimeError(f"injected failure after epoch {epoch}")

    def epochs(self) -> list[int]:
        return [int(line) for line in (self.folder / "epochs.txt").read_text().split()]


@pytest.mark.slow
def test_two_workers_train_as_one_process_resume_after_a_failure_and_save(
    ray_cluster: Any, tmp_path: Path
) -> None:
    # The training folder is opened by path on each worker; the validation radiographs
    # travel through the object store.
    data = write_phantom_dataset(tmp_path / "train", n_per_class=4, size=32)
    validation = generate_phantoms(1, size=32, seed=1)
    callback = FailOnce(tmp_path, fail_at=2)
    pipeline = tiny_pipeline(epochs=3, on_epoch_end=callback)
    run = tmp_path / "run"

    # A worker's failure is a covidcxr error naming the worker and what it raised.
    with pytest.raises(DistributedJobError, match=r"worker 1: RuntimeError: injected"):
        covidcxr.ray.fit(pipeline, data, validation, workers=2, checkpoint_dir=run)
    assert callback.epochs() == [1, 2]

    # The same call again resumes from rank 0's checkpoint of epoch 2: one epoch runs.
    fitted = covidcxr.ray.fit(pipeline, data, validation, workers=2, checkpoint_dir=run)
    assert callback.epochs() == [1, 2, 3]
    assert len(fitted.history_["loss"]) == len(fitted.history_["val_loss"]) == 3

    # Each worker took half of every batch: only with the gradients all-reduced (and the
    # resumed state exact) does rank 0 end with uninterrupted single-process weights.
    alone = tiny_pipeline(epochs=3).fit(data, validation)
    assert fitted.classes_ == alone.classes_ == ("covid-19", "normal", "pneumonia")
    assert_same_weights(fitted, alone)
    np.testing.assert_allclose(fitted.history_["loss"], alone.history_["loss"], rtol=1e-3)

    fitted.save(tmp_path / "model")
    loaded = covidcxr.Pipeline.load(tmp_path / "model")
    with pytest.warns(covidcxr.errors.SyntheticModelWarning):
        predictions = loaded.predict(data)
    assert len(predictions) == 12
    for prediction in predictions:
        assert set(prediction.probabilities) == set(loaded.classes_)
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-4)


def test_a_classifier_that_cannot_train_data_parallel_is_refused() -> None:
    class Majority:  # any classifier but vgg19: it would train whole on every worker
        classes_: tuple[str, ...] = ()

    pipeline = covidcxr.Pipeline(classifier=Majority())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="data-parallel"):
        covidcxr.ray.fit(pipeline, generate_phantoms(1, size=32))


class Unpicklable:
    """Radiographs behind something pickle refuses (an open client, a lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __iter__(self) -> Iterator[covidcxr.XRay]:
        return iter(generate_phantoms(1, size=32))


def test_data_that_cannot_reach_the_workers_is_a_configuration_error(ray_cluster: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"train .* cannot be sent to the Ray workers"):
        covidcxr.ray.fit(tiny_pipeline(epochs=1), Unpicklable())


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, None])
def test_workers_must_be_a_whole_number(workers: Any) -> None:
    with pytest.raises(ConfigurationError, match="workers"):
        covidcxr.ray.fit(tiny_pipeline(epochs=1), generate_phantoms(1, size=32), workers=workers)


def test_only_rank_0_checkpoints_the_lung_stage(tmp_path: Path) -> None:
    # Every rank fits the lung U-Net; a checkpoint folder is held by one training process
    # at a time, so ranks sharing a file system would refuse each other.
    from covidcxr.lungs import LungCrop, LungSegmenter
    from covidcxr.pipeline import Pipeline, PipelineConfig
    from covidcxr.ray._train import _leave_lung_checkpoint_to_rank_0

    folder = str(tmp_path / "lungs")
    configured = Pipeline(
        config=PipelineConfig(lungs={"segmenter": {"checkpoint_dir": folder, "epochs": 1}})
    )
    _leave_lung_checkpoint_to_rank_0(configured)
    assert configured.config.lungs == {"segmenter": {"epochs": 1}}
    given = Pipeline(lungs=LungCrop(LungSegmenter(epochs=1, checkpoint_dir=folder)))
    _leave_lung_checkpoint_to_rank_0(given)
    assert given.lungs is not None
    assert given.lungs.segmenter.checkpoint_dir is None
    assert given.lungs.segmenter.epochs == 1
