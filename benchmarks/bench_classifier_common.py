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


# -- helpers of the benchmarks that go through Pipeline on COVID-QU-Ex ---------------------

#: COVID-QU-Ex, read where it lies (``$COVIDCXR_QU_EX`` or ``../shared``); never copied.
DEFAULT_DATA = Path(
    os.environ.get("COVIDCXR_QU_EX", REPO.parent / "shared" / "data" / "covid-qu-ex")
)


def require_data(data: Path) -> None:
    if not all((data / split).is_dir() for split in ("Train", "Val", "Test")):
        sys.exit(f"COVID-QU-Ex not found at {data}; pass --data or set COVIDCXR_QU_EX")


def subset_tree(data: Path, split: str, n: int, into: Path) -> Path:
    """``into`` holding links to ``n`` images of ``split`` and their masks (COVID-QU-Ex layout).

    The class folders are taken in turn (first image of each, then the second ...), so a
    small subset keeps every class. Only links are made: the data is never copied, and a
    folder source fingerprints the linked files themselves (``os.stat`` follows links), so
    the cache recognises them as it does the originals.
    """
    queues = [
        sorted((folder / "images").glob("*.png"))
        for folder in sorted((data / split).iterdir())
        if (folder / "images").is_dir()
    ]
    chosen: list[Path] = []
    for rank in range(max(len(queue) for queue in queues)):
        chosen.extend(queue[rank] for queue in queues if rank < len(queue))
        if len(chosen) >= n:
            break
    for image in chosen[:n]:
        # The image, and its masks where the split has them (the lung stage learns from
        # the lung masks; lesion boxes come from the infection masks).
        for folder in ("images", "lung masks", "infection masks"):
            original = image.parent.parent / folder / image.name
            if folder != "images" and not original.is_file():
                continue
            link = into / original.relative_to(data)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(original)
    return into


def spread(values: list[float | None]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation (``ddof=1``; ``None`` for one value), min and max.

    ``None`` values (a figure undefined for a seed, such as the precision of a class it
    never predicts) are left out; ``n`` counts the others.
    """
    values = [value for value in values if value is not None]
    array = np.asarray(values, dtype=np.float64)
    return {
        "n": len(values),
        "mean": float(array.mean()) if values else None,
        "std": float(array.std(ddof=1)) if len(values) > 1 else None,
        "min": float(array.min()) if values else None,
        "max": float(array.max()) if values else None,
    }


def library_environment() -> dict[str, Any]:
    """:func:`environment` plus the library, OpenCV and NumPy versions and the load."""
    import cv2

    import covidcxr

    return {
        **environment(),
        "covidcxr": covidcxr.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }


def write_outputs(stem: Path, result: dict[str, Any], markdown: str) -> None:
    """Write ``<stem>.json`` and ``<stem>.md`` (the stem's own dots are kept)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_name(stem.name + ".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_name(stem.name + ".md").write_text(markdown)
