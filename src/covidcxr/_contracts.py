"""What components return, checked where the library receives it.

A plugin's detector that returns a ``dict``, or a preprocessor that returns a bare
array, would otherwise fail far from its cause (a ``KeyError`` while a report is
written) or, worse, not fail at all. These checks turn such answers into a
:class:`~covidcxr.errors.ComponentOutputError` that names the component and the
distribution that installed it, at the call that received the answer. They cost a type
check per item: the library's own components pass through them too.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata

import attrs

from covidcxr.boxes import ResizeTransform, clip_box
from covidcxr.errors import ComponentOutputError, DetectorOutputWarning
from covidcxr.plugins import ENTRY_POINT_GROUP
from covidcxr.records import Detection, XRay

__all__ = [
    "checked_detection_batch",
    "checked_detections",
    "checked_preprocessed",
    "checked_source_item",
    "describe",
    "who",
]


def _plugin_distributions() -> Mapping[str, str]:
    """The top-level package of each installed plugin's entry point, to its distribution."""
    found: dict[str, str] = {}
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.dist is not None:
            found.setdefault(entry_point.module.partition(".")[0], entry_point.dist.name)
    return found


def who(component: object) -> str:
    """How messages name ``component``: its class, and the plugin distribution it came from.

    Examples
    --------
    >>> from covidcxr.detect import LocalDetector
    >>> who(LocalDetector())
    'covidcxr.detect._local.LocalDetector'
    """
    cls = type(component)
    name = f"{cls.__module__}.{cls.__qualname__}"
    distribution = _plugin_distributions().get(cls.__module__.partition(".")[0])
    return f"{name} (from the distribution {distribution!r})" if distribution else name


def describe(value: object) -> str:
    """``value`` in a message: its type and a ``repr`` cut to 80 characters.

    Examples
    --------
    >>> describe("scan.png")
    "str 'scan.png'"
    """
    text = repr(value)
    return f"{type(value).__name__} {text[:77] + '...' if len(text) > 80 else text}"


def checked_detections(found: object, xray: XRay, component: object) -> list[Detection]:
    """``found``, a detector's answer for ``xray``, checked, cut to the image and ranked.

    Boxes crossing the border are cut to it; boxes wholly outside are dropped with a
    :class:`~covidcxr.errors.DetectorOutputWarning`. The result is sorted by descending
    score (ties keep the detector's order).

    Raises
    ------
    ComponentOutputError
        If ``found`` is not a sequence of :class:`~covidcxr.Detection`.

    Examples
    --------
    >>> import numpy as np
    >>> from covidcxr import Box
    >>> image = XRay(np.zeros((8, 8), np.uint8), id="a")
    >>> answer = [Detection(Box(0, 0, 2, 2), "opacity", 0.2),
    ...           Detection(Box(6, 6, 4, 4), "opacity", 0.9)]
    >>> [(d.box.width, d.score) for d in checked_detections(answer, image, object())]
    [(2.0, 0.9), (2.0, 0.2)]
    """
    if isinstance(found, str | bytes | Mapping) or not isinstance(found, Iterable):
        raise ComponentOutputError(
            f"{who(component)} returned {describe(found)} as the detections on "
            f"{xray.id!r}; a detector returns a list of covidcxr.Detection (empty when "
            "it finds nothing). This is a bug in that component: report it to its authors"
        )
    items = list(found)
    for item in items:
        if not isinstance(item, Detection):
            raise ComponentOutputError(
                f"{who(component)} returned {describe(item)} among the detections on "
                f"{xray.id!r}; each must be a covidcxr.Detection(box, label, score). This "
                "is a bug in that component: report it to its authors"
            )
    kept: list[Detection] = []
    outside = 0
    height, width = xray.shape
    for detection in items:
        box = detection.box
        if box.x2 <= width and box.y2 <= height:
            kept.append(detection)  # inside (coordinates are never negative): as given
            continue
        clipped = clip_box(box, xray.shape)
        if clipped is None:
            outside += 1
        else:
            kept.append(attrs.evolve(detection, box=clipped))
    if outside:
        warnings.warn(
            f"{who(component)} returned {outside} box(es) wholly outside {xray.id!r} "
            f"({width}x{height} px); they were dropped. Boxes are in the pixels of the image "
            "the detector was given",
            DetectorOutputWarning,
            stacklevel=3,
        )
    kept.sort(key=lambda detection: -detection.score)
    return kept


def checked_detection_batch(
    found: object, images: Sequence[XRay], component: object
) -> list[list[Detection]]:
    """A ``detect_batch`` answer checked: one list per image, each as :func:`checked_detections`.

    Raises
    ------
    ComponentOutputError
        If ``found`` is not a sequence holding one entry per image, or an entry is not a
        sequence of :class:`~covidcxr.Detection`.
    """
    if isinstance(found, str | bytes | Mapping) or not isinstance(found, Iterable):
        raise ComponentOutputError(
            f"{who(component)}.detect_batch returned {describe(found)} for "
            f"{len(images)} image(s); it returns one list of covidcxr.Detection per image"
        )
    rows = list(found)
    if len(rows) != len(images):
        raise ComponentOutputError(
            f"{who(component)}.detect_batch returned {len(rows)} detection list(s) for "
            f"{len(images)} image(s); it returns one per image, in order. This is a bug in "
            "that component: report it to its authors"
        )
    return [
        checked_detections(row, xray, component) for row, xray in zip(rows, images, strict=True)
    ]


def checked_preprocessed(out: object, xray: XRay, component: object) -> XRay:
    """A preprocessor's answer for ``xray``, checked against the Preprocessor contract.

    Raises
    ------
    ComponentOutputError
        If ``out`` is not an :class:`~covidcxr.XRay`, carries another id, or has another
        shape without recording the change in ``meta["transform"]`` (then boxes found on
        it could not be carried back to the radiograph).
    """
    if not isinstance(out, XRay):
        raise ComponentOutputError(
            f"{who(component)} returned {describe(out)} for {xray.id!r}; a preprocessor "
            "returns a new covidcxr.XRay (attrs.evolve(xray, pixels=...) keeps the rest)"
        )
    if out.id != xray.id:
        raise ComponentOutputError(
            f"{who(component)} returned the radiograph {xray.id!r} under the id {out.id!r}; "
            "a preprocessor keeps the id, label and patient_id"
        )
    transform = out.meta.get("transform")
    if transform is not None and not isinstance(transform, ResizeTransform):
        raise ComponentOutputError(
            f"{who(component)} recorded {describe(transform)} as the transform of "
            f"{xray.id!r}; meta['transform'] is a covidcxr.preprocess.ResizeTransform"
        )
    if out.shape != xray.shape and (
        transform is None or tuple(transform.output_shape) != tuple(out.shape)
    ):
        raise ComponentOutputError(
            f"{who(component)} turned {xray.id!r} from {xray.shape} into {out.shape} pixels "
            "without recording the change in meta['transform'] (a "
            "covidcxr.preprocess.ResizeTransform ending at the output's shape); detections "
            "found on its output could not be carried back to the radiograph"
        )
    return out


def checked_source_item(item: object, position: int, source: object) -> XRay:
    """An item a source yielded, checked to be an :class:`~covidcxr.XRay`.

    Raises
    ------
    ComponentOutputError
        If it is anything else (a path, an array), naming the source and the position.
    """
    if not isinstance(item, XRay):
        raise ComponentOutputError(
            f"{who(source)} yielded {describe(item)} as item {position}; a dataset source "
            "yields covidcxr.XRay records"
        )
    return item
