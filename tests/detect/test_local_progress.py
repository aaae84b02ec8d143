"""LocalDetector: progress reporting, and no training without a lesion to learn from."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest

from covidcxr.detect import LocalDetector
from covidcxr.errors import ConfigurationError
from covidcxr.records import Box, XRay


def radiograph(index: int, *, lesion: bool) -> XRay:
    rng = np.random.default_rng(index)
    pixels = rng.integers(20, 70, (32, 32)).astype(np.uint8)
    boxes: tuple[Box, ...] = ()
    if lesion:
        pixels[8:20, 6:18] = 230
        boxes = (Box(6, 8, 12, 12),)
    return XRay(pixels, id=f"r{index}", boxes=boxes)


def tiny(**options: Any) -> LocalDetector:
    return LocalDetector(
        input_size=32, base_filters=2, depth=1, batch_size=8, augment=False, **options
    )


def test_fit_refuses_radiographs_without_any_lesion() -> None:
    lesion_free = [radiograph(i, lesion=False) for i in range(8)]
    with pytest.raises(ConfigurationError, match="none of the 8 training radiographs"):
        tiny(epochs=1).fit(lesion_free)


def test_an_all_zero_infection_mask_is_no_lesion_either() -> None:
    blank = np.zeros((32, 32), np.uint8)
    masked = [
        attrs.evolve(radiograph(i, lesion=False), meta={"infection_mask": blank}) for i in range(4)
    ]
    with pytest.raises(ConfigurationError, match="lesion box or infection mask"):
        tiny(epochs=1).fit(masked)


def test_on_epoch_end_reports_every_epoch_and_is_never_saved(tmp_path: Path) -> None:
    seen: list[tuple[int, Mapping[str, float]]] = []
    detector = tiny(epochs=2, on_epoch_end=lambda epoch, logs: seen.append((epoch, logs)))
    detector.fit([radiograph(i, lesion=bool(i % 2)) for i in range(8)])
    assert [epoch for epoch, _ in seen] == [1, 2]
    assert all(isinstance(logs["loss"], float) for _, logs in seen)
    detector.save(tmp_path / "detector.zip")
    assert LocalDetector.load(tmp_path / "detector.zip").on_epoch_end is None
