"""Fixtures for the shipped-model tests: one tiny real pipeline, packaged once.

The pipeline is built from covidcxr's own components at their smallest (a 32-pixel VGG19
of 8 to 64 filters, one epoch, on phantoms; a 16-pixel input gate; calibration), so it
holds two real Keras models whose weights packaging stores as float16, as a shipped model
does. It is fitted and saved once per session, and packaged into a temporary models
folder once per module.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import warnings
from pathlib import Path
from typing import Any

import pytest

from covidcxr import XRay
from covidcxr.evaluate import CalibrationWarning, OneClassPredictionWarning
from covidcxr.phantoms import generate_phantoms
from covidcxr.pipeline import Pipeline
from covidcxr.pretrained import ModelInfo, package

#: The smallest pipeline of covidcxr's own components that has Keras weights.
TINY_PIPELINE: dict[str, Any] = {
    "preprocessor": {"name": "gaussian-clahe", "output_size": 32},
    "classifier": {
        "name": "vgg19",
        "input_size": 32,
        "weights": "none",
        "trainable_blocks": 0,
        "width_multiplier": 0.125,
        "dense_units": 16,
        "batch_size": 8,
        "epochs": 1,
        "seed": 0,
    },
    "detector": {"name": "none"},
    "evaluation": {"n_bootstrap": 0},
    # The smallest input gate that fits (it needs 100 training images); calibrated on
    # the validation images.
    "trust": {"gate": {"input_size": 16, "epochs": 2, "batch_size": 8, "seed": 0}},
}

MODEL_NAME = "tiny-phantoms"
#: Another name the tiny model loads by, as "covid-qu-ex" names the recommended model.
ALIAS = "tiny"
BUILD_COMMAND = "covidcxr train phantoms/ --out tiny --config tiny.toml"


@pytest.fixture(scope="session")
def check_images() -> list[XRay]:
    """A few images the original and the shipped copy are compared on."""
    return generate_phantoms(2, size=48, seed=3)


@pytest.fixture(scope="session")
def saved_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fitted tiny pipeline, saved (the directory must not be changed by tests)."""
    pipeline = Pipeline.from_dict(TINY_PIPELINE)
    with warnings.catch_warnings():
        # One epoch of a frozen random base learns little (one class, the temperature at
        # its bound): expected of a model that only has to exist.
        warnings.simplefilter("ignore", CalibrationWarning)
        warnings.simplefilter("ignore", OneClassPredictionWarning)
        pipeline.fit(
            generate_phantoms(34, size=48, seed=0),
            validation=generate_phantoms(7, size=48, seed=2),
        )
    return pipeline.save(tmp_path_factory.mktemp("saved") / "tiny")


@pytest.fixture(scope="module")
def models_root(
    tmp_path_factory: pytest.TempPathFactory, saved_pipeline: Path, check_images: list[XRay]
) -> Path:
    """A models folder holding the tiny pipeline, packaged as :data:`MODEL_NAME`."""
    root = tmp_path_factory.mktemp("models")
    package(
        MODEL_NAME,
        saved_pipeline,
        build_command=BUILD_COMMAND,
        summary="A tiny test model trained on phantoms.",
        root=root,
        check_images=check_images,
        check_description="6 test phantoms",
        aliases=(ALIAS,),
    )
    return root


@pytest.fixture(scope="module")
def shipped(models_root: Path) -> ModelInfo:
    from covidcxr.pretrained import model_info

    return model_info(MODEL_NAME, models_root)
