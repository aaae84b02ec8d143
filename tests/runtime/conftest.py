"""Fixtures for the export tests: one tiny real pipeline and held-out images it is sure of.

The pipeline is a 32-pixel VGG19 of 8 to 64 filters on phantoms whose frozen random base
feeds a head trained for 60 (cheap, cached-feature) epochs: the smallest covidcxr model
found whose predictions differ between images by more than int8 rounding. The guard's
held-out images are phantoms labelled with the Keras model's own predictions, kept where
its two most probable classes are at least 0.1 apart: on them the Keras model is 100%
accurate, so any image the export labels differently costs accuracy and recall, and a
well-calibrated int8 export (largest probability change about 0.06) keeps every label.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import warnings
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest

from covidcxr import XRay
from covidcxr.errors import SyntheticModelWarning
from covidcxr.evaluate import CalibrationWarning, OneClassPredictionWarning
from covidcxr.phantoms import generate_phantoms
from covidcxr.pipeline import Pipeline

TINY_PIPELINE: dict[str, Any] = {
    "preprocessor": {"name": "gaussian-clahe", "output_size": 32},
    "classifier": {
        "name": "vgg19",
        "input_size": 32,
        "weights": "none",
        "trainable_blocks": 0,
        "width_multiplier": 0.125,
        "dense_units": 16,
        "dropout": 0.1,
        "batch_size": 8,
        "epochs": 60,
        "seed": 0,
        "optimizer": "adam",
        "learning_rate": 1e-2,
        "augmentation": None,
    },
    "detector": {"name": "none"},
    "evaluation": {"n_bootstrap": 0},
}
#: The smallest gap between the Keras model's two most probable classes on a held-out image.
DECISIVE_MARGIN = 0.1


@pytest.fixture(scope="session")
def training_images() -> list[XRay]:
    """The training phantoms, also the int8 calibration images (drawn from training data)."""
    return generate_phantoms(10, size=48, seed=0)


@pytest.fixture(scope="session")
def saved_pipeline(tmp_path_factory: pytest.TempPathFactory, training_images: list[XRay]) -> Path:
    """The fitted tiny pipeline, saved (tests must not change the directory)."""
    pipeline = Pipeline.from_dict(TINY_PIPELINE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        warnings.simplefilter("ignore", OneClassPredictionWarning)
        # No input gate: it needs 100 training images, and the export tests are not about it.
        warnings.filterwarnings("ignore", "only 30 training radiographs", UserWarning)
        pipeline.fit(training_images)
    return pipeline.save(tmp_path_factory.mktemp("saved") / "tiny")


@pytest.fixture(scope="session")
def held_out(saved_pipeline: Path) -> list[XRay]:
    """Phantoms the Keras model is sure of, labelled with its own predictions."""
    pool = generate_phantoms(20, size=48, seed=7)
    reference = Pipeline.load(saved_pipeline, runtime="tensorflow")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntheticModelWarning)
        predictions = reference.predict(pool)
    kept = []
    for xray, prediction in zip(pool, predictions, strict=True):
        top, second = sorted(prediction.probabilities.values())[::-1][:2]
        if top - second >= DECISIVE_MARGIN:
            label = max(prediction.probabilities, key=prediction.probabilities.__getitem__)
            kept.append(attrs.evolve(xray, label=label))
    # Without two predicted classes, an export that labels everything alike could pass.
    assert len({xray.label for xray in kept}) >= 2, [x.label for x in kept]
    return kept


@pytest.fixture(scope="session")
def blank_images() -> list[XRay]:
    """A deliberately broken calibration set: uniform grey frames, no anatomy at all."""
    return [XRay(np.full((48, 48), 128, np.uint8), f"blank-{i}", "normal") for i in range(16)]
