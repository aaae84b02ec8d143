"""covidcxr-brightspot: an example plugin with a detector and a dataset source.

The two ``covidcxr_register_*`` functions at the bottom are the whole plugin interface;
the entry point in ``pyproject.toml`` makes covidcxr find them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

import covidcxr
from covidcxr.hookspecs import Register

__all__ = ["BrightSpotDetector", "NpyFolderSource"]


class BrightSpotDetector:
    """Boxes connected regions brighter than a percentile of the image.

    Parameters
    ----------
    percentile
        Pixels above this percentile of the image's intensities are candidates.
    min_area
        Regions smaller than this many pixels are ignored as noise.
    """

    def __init__(self, percentile: float = 99.0, min_area: int = 4) -> None:
        self.percentile = percentile
        self.min_area = min_area

    def detect(self, xray: covidcxr.XRay) -> list[covidcxr.Detection]:
        """Return one detection per bright region, most intense first."""
        pixels = xray.pixels.astype(np.float32)
        low, high = float(pixels.min()), float(pixels.max())
        if high <= low:
            return []
        mask = (pixels > np.percentile(pixels, self.percentile)).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        found = []
        for x, y, width, height, area in stats[1:count]:
            if area < self.min_area:
                continue
            region = pixels[y : y + height, x : x + width]
            score = float((region.max() - low) / (high - low))
            box = covidcxr.Box(int(x), int(y), int(width), int(height))
            found.append(covidcxr.Detection(box, "bright-spot", score))
        return sorted(found, key=lambda detection: -detection.score)


class NpyFolderSource:
    """Radiographs stored as ``<root>/<class name>/<id>.npy`` arrays.

    Parameters
    ----------
    location
        The root folder (what follows ``npy-folder://`` in the URI).
    """

    def __init__(self, location: str) -> None:
        self.root = Path(location)
        if not self.root.is_dir():
            raise covidcxr.errors.SourceError(f"{self.root}: no such folder")
        self._files = sorted(self.root.glob("*/*.npy"))

    @property
    def classes(self) -> tuple[str, ...]:
        """The canonical labels of the class folders present."""
        present = {covidcxr.labels.canonical_label(path.parent.name) for path in self._files}
        return tuple(label for label in covidcxr.LABELS if label in present)

    def __iter__(self) -> Iterator[covidcxr.XRay]:
        """Yield one radiograph per ``.npy`` file, in path order."""
        for path in self._files:
            pixels = np.load(path, allow_pickle=False)
            label = covidcxr.labels.canonical_label(path.parent.name)
            yield covidcxr.XRay(pixels, id=str(path), label=label)

    def __len__(self) -> int:
        """The number of ``.npy`` files."""
        return len(self._files)


@covidcxr.hookimpl
def covidcxr_register_detectors(register: Register) -> None:
    """Provide the ``bright-spot`` detector."""
    register("bright-spot", BrightSpotDetector)


@covidcxr.hookimpl
def covidcxr_register_sources(register: Register) -> None:
    """Provide the ``npy-folder://`` source."""
    register("npy-folder", NpyFolderSource)
