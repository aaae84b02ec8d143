"""Shared helpers for the classifier benchmarks (imported by them; not a benchmark itself)."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def configure_tensorflow(threads: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def synthetic_xrays(n: int, size: int = 256, seed: int = 0) -> list[Any]:
    """uint8 radiograph-sized images with three balanced labels (content is irrelevant to speed)."""
    from covidcxr import XRay

    rng = np.random.default_rng(seed)
    labels = ("covid-19", "normal", "pneumonia")
    return [
        XRay(
            rng.integers(0, 256, (size, size), dtype=np.uint8),
            id=f"synthetic-{i}",
            label=labels[i % 3],
        )
        for i in range(n)
    ]


def environment() -> dict[str, Any]:
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "gpu": bool(tf.config.list_physical_devices("GPU")),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
    }


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def write_result(name: str, result: dict[str, Any], markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        **result,
        "command": " ".join(["python", *sys.argv]),
        "environment": environment(),
        "peak_rss_mib": peak_rss_mib(),
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(
        markdown + f"\n\nCommand: `nice -n 10 {result['command']}`\n"
    )
    print(markdown)
