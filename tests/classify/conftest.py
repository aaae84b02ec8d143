"""Fixtures for the classifier tests: tiny learnable radiographs and tiny VGG19 settings.

TensorFlow is capped at two intra-op threads and one inter-op thread: the suite runs on
shared 2-core machines, and fixed thread counts also keep seeded CPU runs reproducible.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

from typing import Any

import attrs
import numpy as np
import pytest

from covidcxr import XRay
from covidcxr.classify import VGG19Classifier
from covidcxr.classify._training import CHECKPOINT_FILENAME

LABEL_ORDER = ("covid-19", "normal", "pneumonia")


def toy_xrays(n: int, *, size: int = 40, seed: int = 0) -> list[XRay]:
    """A learnable three-class problem: a bright top half, left half, or centre square."""
    rng = np.random.default_rng(seed)
    xrays = []
    for i in range(n):
        label = LABEL_ORDER[i % 3]
        pixels = rng.random((size, size), dtype=np.float32) * 0.3
        half = size // 2
        if label == "covid-19":
            pixels[:half] += 0.6
        elif label == "normal":
            pixels[:, :half] += 0.6
        else:
            pixels[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] += 0.6
        xrays.append(XRay(np.clip(pixels, 0, 1), id=f"toy-{seed}-{i}", label=label))
    return xrays


@pytest.fixture(scope="session")
def train_xrays() -> list[XRay]:
    return toy_xrays(24, seed=1)


@pytest.fixture(scope="session")
def valid_xrays() -> list[XRay]:
    return toy_xrays(9, seed=2)


#: A narrow VGG19 at 32 px: 8-16-32-64-64 filters, fast enough for unit tests.
TINY: dict[str, Any] = {
    "input_size": 32,
    "weights": None,
    # A frozen random base: only the head trains, on cached features. Never a model
    # anyone wants (so "auto" does not choose it), but the quickest way to test the
    # training machinery.
    "trainable_blocks": 0,
    "width_multiplier": 0.125,
    "dense_units": 16,
    "batch_size": 8,
    "epochs": 2,
}


@pytest.fixture(scope="session")
def tiny() -> dict[str, Any]:
    return dict(TINY)


@attrs.frozen
class TinyRun:
    """A fitted tiny classifier and the checkpoint its run left behind."""

    classifier: VGG19Classifier
    checkpoint: bytes


@pytest.fixture(scope="session")
def tiny_run(
    tmp_path_factory: pytest.TempPathFactory, train_xrays: list[XRay], tiny: dict[str, Any]
) -> TinyRun:
    """``VGG19Classifier(**TINY, seed=0)`` fitted once on :func:`train_xrays`, checkpointing.

    Shared by every test that needs some tiny fit or its checkpoint (a fit costs seconds,
    mostly tracing): tests must not change it; one that needs a model to damage loads a copy.
    """
    directory = tmp_path_factory.mktemp("tiny-run")
    classifier = VGG19Classifier(**tiny, seed=0, checkpoint_dir=directory).fit(train_xrays)
    return TinyRun(classifier, (directory / CHECKPOINT_FILENAME).read_bytes())
