"""Drawing detections on radiographs, and writing the result as PNG without clobbering files.

Boxes and captions are drawn with a dark outline under a bright stroke, so they stay
readable on the black background of a radiograph as well as on bright bone and opacities.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from covidcxr.boxes import pixel_corners
from covidcxr.detect._imaging import encode_png, to_uint8
from covidcxr.files import write_bytes
from covidcxr.records import Box, Detection, XRay

__all__ = ["DETECTION_COLOR", "TRUTH_COLOR", "draw_detections", "write_png"]

#: RGB colour of detected boxes: a warm orange, distinct from grey levels.
DETECTION_COLOR: tuple[int, int, int] = (255, 140, 0)
#: RGB colour of ground-truth boxes.
TRUTH_COLOR: tuple[int, int, int] = (0, 220, 90)
_OUTLINE = (0, 0, 0)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _outlined_rectangle(
    canvas: NDArray[np.uint8], box: Box, color: tuple[int, int, int], thickness: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    top_left, bottom_right = pixel_corners(box, (canvas.shape[0], canvas.shape[1]))
    # Axis-aligned lines need no anti-aliasing; crisp edges keep the colour exact.
    cv2.rectangle(canvas, top_left, bottom_right, _OUTLINE, thickness + 2, cv2.LINE_8)
    cv2.rectangle(canvas, top_left, bottom_right, color, thickness, cv2.LINE_8)
    return top_left, bottom_right


def _outlined_text(
    canvas: NDArray[np.uint8],
    text: str,
    anchor: tuple[int, int],
    *,
    color: tuple[int, int, int],
    scale: float,
    thickness: int,
) -> None:
    (text_width, text_height), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    height, width = canvas.shape[:2]
    x, y = anchor
    # Above the box when there is room, else just inside its top edge.
    y = y - baseline - 2 if y - text_height - baseline - 2 >= 0 else y + text_height + 2
    x = min(max(x, 0), max(0, width - text_width - 1))
    y = min(max(y, text_height), height - baseline - 1)
    cv2.putText(canvas, text, (x, y), _FONT, scale, _OUTLINE, thickness + 2, cv2.LINE_AA)
    cv2.putText(canvas, text, (x, y), _FONT, scale, color, thickness, cv2.LINE_AA)


def draw_detections(
    xray: XRay,
    detections: Sequence[Detection],
    *,
    truths: Sequence[Box] | None = None,
    color: tuple[int, int, int] = DETECTION_COLOR,
    truth_color: tuple[int, int, int] = TRUTH_COLOR,
    show_scores: bool = True,
    thickness: int | None = None,
    font_scale: float | None = None,
) -> NDArray[np.uint8]:
    """Draw detections (and, optionally, ground-truth boxes) on a radiograph.

    Parameters
    ----------
    xray
        The radiograph; any pixel dtype (``uint16`` and ``float32`` are scaled to 8 bits).
    detections
        Boxes in ``xray``'s pixel coordinates; each is captioned ``label score``.
    truths
        Ground-truth boxes to draw underneath, in ``truth_color`` (``xray.boxes``, say).
    color, truth_color
        RGB colours of detected and ground-truth boxes.
    show_scores
        Caption each detection with its score as well as its label.
    thickness, font_scale
        Line thickness and caption size; by default they grow with the image.

    Returns
    -------
    numpy.ndarray
        An ``(height, width, 3)`` ``uint8`` RGB image; ``xray`` is not modified.

    Examples
    --------
    >>> import numpy as np
    >>> from covidcxr import Box, Detection, XRay
    >>> xray = XRay(np.zeros((64, 64), np.uint8), id="a")
    >>> image = draw_detections(xray, [Detection(Box(8, 20, 30, 30), "opacity", 0.91)])
    >>> image.shape, image.dtype, image[35, 8].tolist()
    ((64, 64, 3), dtype('uint8'), [255, 140, 0])
    """
    grey = to_uint8(xray.pixels)
    canvas: NDArray[np.uint8] = np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    side = min(grey.shape)
    line = thickness if thickness is not None else max(1, round(side / 300))
    scale = font_scale if font_scale is not None else max(0.3, side / 700)
    text_thickness = max(1, line)
    for box in truths or ():
        _outlined_rectangle(canvas, box, truth_color, line)
    for detection in sorted(detections, key=lambda d: d.score):
        top_left, _ = _outlined_rectangle(canvas, detection.box, color, line)
        caption = f"{detection.label} {detection.score:.2f}" if show_scores else detection.label
        _outlined_text(
            canvas, caption, top_left, color=color, scale=scale, thickness=text_thickness
        )
    return canvas


def write_png(
    path: str | os.PathLike[str], image: NDArray[Any], *, overwrite: bool = False
) -> Path:
    """Write an 8-bit grey or RGB image as PNG, never replacing a file unless asked.

    Parameters
    ----------
    path
        Where to write; missing parent folders are created.
    image
        ``(height, width)`` grey or ``(height, width, 3)`` RGB, ``uint8``.
    overwrite
        Replace an existing file (atomically: a reader sees the old or the new image).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false (also a :class:`FileExistsError`).
    ValueError
        If ``image`` is not ``uint8`` grey or RGB.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.png"
    >>> write_png(target, np.zeros((8, 8, 3), np.uint8)).name
    'a.png'
    >>> write_png(target, np.zeros((8, 8), np.uint8))
    Traceback (most recent call last):
    ...
    covidcxr.errors.OutputExistsError: ... already exists; pass overwrite=True to replace it
    """
    array = np.asarray(image)
    if array.dtype != np.uint8 or not (
        array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)
    ):
        raise ValueError(
            f"image must be uint8 of shape (h, w) or (h, w, 3), got {array.dtype} {array.shape}"
        )
    return write_bytes(path, encode_png(np.ascontiguousarray(array)), overwrite=overwrite)
