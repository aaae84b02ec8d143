"""Drawing a report's example images: detections over the ground truth, enlarged."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import attrs
import numpy as np
from numpy.typing import NDArray

from covidcxr.boxes import scale_box
from covidcxr.records import Box, Detection, XRay

__all__ = ["annotate", "round_robin"]

# Small model inputs (64 px) are drawn at this size at least, so that captions and box
# outlines stay legible in the report.
_DISPLAY_SIDE: Final = 256


def annotate(
    xray: XRay, detections: Sequence[Detection], truths: Sequence[Box]
) -> NDArray[np.uint8]:
    """An RGB rendering of ``xray`` with its detections over the ground-truth boxes."""
    # Drawing lives with the detectors; the pipeline is the one module right of both.
    import cv2  # noqa: PLC0415 - only when a report is drawn

    from covidcxr.detect import draw_detections  # noqa: PLC0415 - imports OpenCV drawing

    factor = max(1, -(-_DISPLAY_SIDE // min(xray.shape)))
    if factor > 1:
        height, width = xray.shape
        pixels = cv2.resize(
            np.asarray(xray.pixels),
            (width * factor, height * factor),
            interpolation=cv2.INTER_CUBIC,
        )
        if xray.pixels.dtype == np.float32:
            pixels = np.clip(pixels, 0.0, 1.0)
        xray = XRay(np.asarray(pixels, xray.pixels.dtype), id=xray.id, label=xray.label)
        detections = [attrs.evolve(d, box=scale_box(d.box, factor)) for d in detections]
        truths = [scale_box(b, factor) for b in truths]
    return np.asarray(draw_detections(xray, list(detections), truths=list(truths)), np.uint8)


def round_robin(
    examples: Mapping[str | None, Sequence[tuple[int, XRay]]], n_examples: int
) -> list[tuple[int, XRay]]:
    """Up to ``n_examples`` examples, taken in turn from each true class, in index order."""
    queues = [list(examples[label]) for label in sorted(examples, key=str)]
    chosen: list[tuple[int, XRay]] = []
    while len(chosen) < n_examples and any(queues):
        for queue in queues:
            if queue and len(chosen) < n_examples:
                chosen.append(queue.pop(0))
    return sorted(chosen, key=lambda item: item[0])
