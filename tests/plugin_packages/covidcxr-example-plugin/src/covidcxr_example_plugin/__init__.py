"""An example covidcxr plugin: a threshold lesion detector and a ``.npy`` folder source.

covidcxr's test suite installs this package to check that plugins are discovered through
their entry point, listed by ``covidcxr plugins``, and usable through
``covidcxr.create_detector`` and ``covidcxr.open_source``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

import covidcxr
from covidcxr.hookspecs import Register


class BrightRegionDetector:
    """Boxes the bounding rectangle of the pixels above a percentile of the image."""

    def __init__(self, percentile: float = 99.0, label: str = "bright-region") -> None:
        self.percentile = percentile
        self.label = label

    def detect(self, xray: covidcxr.XRay) -> list[covidcxr.Detection]:
        """Return one detection framing the brightest pixels, or none for a flat image."""
        pixels = xray.pixels.astype(np.float64)
        cut = np.percentile(pixels, self.percentile)
        if cut >= pixels.max():
            return []
        rows, cols = np.nonzero(pixels > cut)
        box = covidcxr.Box.from_corners(cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        span = float(pixels.max() - pixels.min()) or 1.0
        score = float((pixels[rows, cols].mean() - pixels.min()) / span)
        return [covidcxr.Detection(box, self.label, min(max(score, 0.0), 1.0))]


class NpyFolderSource:
    """Radiographs stored as ``<root>/<class name>/<id>.npy`` arrays."""

    def __init__(self, location: str, **options: Any) -> None:
        self.root = Path(location)
        if not self.root.is_dir():
            raise covidcxr.errors.SourceError(f"{self.root}: not a folder")
        self._files = sorted(self.root.glob("*/*.npy"))

    @property
    def classes(self) -> tuple[str, ...]:
        """The canonical labels of the class folders present."""
        found = {covidcxr.labels.canonical_label(path.parent.name) for path in self._files}
        return tuple(label for label in covidcxr.LABELS if label in found)

    def __iter__(self) -> Iterator[covidcxr.XRay]:
        for path in self._files:
            label = covidcxr.labels.canonical_label(path.parent.name)
            yield covidcxr.XRay(np.load(path), id=str(path), label=label)

    def __len__(self) -> int:
        return len(self._files)


@covidcxr.hookimpl
def covidcxr_register_detectors(register: Register) -> None:
    """Provide the ``bright-region`` detector."""
    register("bright-region", BrightRegionDetector)


@covidcxr.hookimpl
def covidcxr_register_sources(register: Register) -> None:
    """Provide the ``npy://`` source scheme."""
    register("npy", NpyFolderSource)
