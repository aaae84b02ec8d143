"""A local Ray cluster for the tests of :mod:`covidcxr.ray`, and a small saved model.

The cluster is started once per session (``ray.init``) with more logical CPUs than the
machine has, so that two workers and the driver's tasks fit on a 2-core CI machine; the
workers are real processes either way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip(
    "ray", reason="the Ray engine needs the extra: pip install 'covidcxr[ray]'"
)

from covidcxr import Pipeline  # noqa: E402
from covidcxr.phantoms import write_phantom_dataset  # noqa: E402

#: The smallest real pipeline the workers can load: entry-point components only (test
#: plugins registered in this process do not exist in Ray's worker processes).
TINY_CONFIG: dict[str, Any] = {
    "preprocessor": {"name": "gaussian-clahe", "output_size": 32},
    "classifier": {
        "name": "vgg19",
        "input_size": 32,
        "weights": "none",
        "trainable_blocks": "all",
        "width_multiplier": 0.125,
        "dense_units": 8,
        "epochs": 1,
        "batch_size": 8,
        "augmentation": None,
    },
    "detector": {"name": "none"},
}


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A local Ray cluster for the whole session (4 logical CPUs, no dashboard)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def phantom_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Phantom radiographs in class folders: 4 per class, 48 px."""
    return write_phantom_dataset(
        tmp_path_factory.mktemp("ray-data") / "phantoms", n_per_class=4, size=48
    )


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, phantom_folder: Path) -> Path:
    """A tiny pipeline trained on the phantoms and saved."""
    pipeline = Pipeline(TINY_CONFIG).fit(phantom_folder)
    return pipeline.save(tmp_path_factory.mktemp("ray-model") / "model")
