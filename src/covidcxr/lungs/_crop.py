"""The lung stage of a pipeline: crop each radiograph to its lung fields before the models.

:class:`LungCrop` runs a :class:`~covidcxr.lungs.LungSegmenter` over a batch of prepared
radiographs and cuts each one down to the box around its lung fields (with a margin),
stretched to ``output_size``. The cut is a :class:`~covidcxr.boxes.ResizeTransform`
chained after the preprocessor's own, so detections found on the crop map back onto the
radiograph as read. Boxes and ``*_mask`` arrays in ``meta`` are cut with the pixels. Each
output carries its :class:`~covidcxr.lungs.LungFields` in ``meta["lungs"]`` (in the crop's
coordinates), for severity and for keeping detections inside the lungs.

When no lung fields are found (they cover less than ``min_area_fraction`` of the image:
not a chest radiograph, or lungs the segmenter cannot see, as in a complete white-out),
the whole frame is used instead, the output records ``meta["lungs_found"] = False``, and a
:class:`NoLungsFoundWarning` names how many radiographs of the call fell back; the
pipeline marks their predictions uncertain rather than trusting a diagnosis made on a
frame the classifier was not trained on.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs
import cv2
import numpy as np
from numpy.typing import NDArray

from covidcxr.boxes import ResizeTransform
from covidcxr.errors import ConfigurationError, InvalidImageError, NoLungsFoundWarning
from covidcxr.lungs._segmenter import LungFields, LungSegmenter
from covidcxr.records import Box, XRay

__all__ = ["LUNGS_FOUND_KEY", "LUNGS_KEY", "LUNG_CROP_KEY", "LungCrop"]

#: ``XRay.meta`` key of the :class:`LungFields` of a lung stage's output.
LUNGS_KEY: Final = "lungs"
#: ``XRay.meta`` key saying whether the lung stage found the lungs (or used the whole frame).
LUNGS_FOUND_KEY: Final = "lungs_found"
#: ``XRay.meta`` key of the crop alone (from the prepared radiograph to the lung crop).
LUNG_CROP_KEY: Final = "lung_crop"
_MASK_SUFFIX: Final = "_mask"


def _window(box: Box, shape: tuple[int, int], margin: float) -> Box:
    """``box`` grown by ``margin`` of its size on each side, on whole pixels, inside the image."""
    height, width = shape
    grow_x, grow_y = box.width * margin, box.height * margin
    x1 = max(0, math.floor(box.x - grow_x))
    y1 = max(0, math.floor(box.y - grow_y))
    x2 = min(width, math.ceil(box.x2 + grow_x))
    y2 = min(height, math.ceil(box.y2 + grow_y))
    return Box.from_corners(float(x1), float(y1), float(x2), float(y2))


def _cut(image: NDArray[Any], window: Box, size: int, *, nearest: bool) -> NDArray[Any]:
    x1, y1 = int(window.x), int(window.y)
    x2, y2 = int(window.x2), int(window.y2)
    piece = np.ascontiguousarray(image[y1:y2, x1:x2])
    if nearest:
        interpolation = cv2.INTER_NEAREST
    elif min(piece.shape) > size:
        interpolation = cv2.INTER_AREA
    else:
        interpolation = cv2.INTER_LINEAR
    return np.asarray(cv2.resize(piece, (size, size), interpolation=interpolation))


def _readonly(array: NDArray[Any]) -> NDArray[Any]:
    view = array.view()
    view.flags.writeable = False
    return view


class LungCrop:
    """Crop prepared radiographs to their lung fields (the pipeline's lung stage).

    Parameters
    ----------
    segmenter
        The :class:`~covidcxr.lungs.LungSegmenter` (fitted, or fitted by
        :meth:`covidcxr.Pipeline.fit` on the training radiographs' lung masks).
    output_size
        Side of the square crop handed to the classifier and the detector.
    margin
        Grows the box around the lung fields by this share of its width and height on
        each side (the costophrenic angles and the apices are often drawn a little tight).
    mask_outside
        Set the pixels outside the (slightly grown) lung fields to 0, so the models see
        the lungs alone, not even the mediastinum.
    min_area_fraction
        Lung fields covering less of the image than this count as not found: the whole
        frame is used, with a :class:`~covidcxr.errors.NoLungsFoundWarning`.
    constrain_detections
        Keep lesion detections inside the (slightly grown) lung fields: the pipeline sets
        a :class:`~covidcxr.protocols.SegmentsLesions` detector's maps to 0 outside them
        before boxing their components.

    Examples
    --------
    >>> stage = LungCrop(LungSegmenter.load("lungs.zip"), output_size=128)  # doctest: +SKIP
    >>> cropped = stage.apply(prepared_xrays)  # doctest: +SKIP
    >>> cropped[0].meta["lungs"].found  # doctest: +SKIP
    True
    """

    def __init__(
        self,
        segmenter: LungSegmenter | None = None,
        *,
        output_size: int = 128,
        margin: float = 0.05,
        mask_outside: bool = False,
        min_area_fraction: float = 0.05,
        constrain_detections: bool = True,
    ) -> None:
        if output_size < 8:
            raise ConfigurationError(f"output_size must be at least 8, got {output_size}")
        if not 0.0 <= margin <= 0.5:
            raise ConfigurationError(f"margin must be in [0, 0.5], got {margin!r}")
        if not 0.0 < min_area_fraction < 1.0:
            raise ConfigurationError(
                f"min_area_fraction must be in (0, 1), got {min_area_fraction!r}"
            )
        self.segmenter = segmenter if segmenter is not None else LungSegmenter()
        self.output_size = output_size
        self.margin = margin
        self.mask_outside = mask_outside
        self.min_area_fraction = min_area_fraction
        self.constrain_detections = constrain_detections

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The crop's parameters (the segmenter's are its own)."""
        return {
            "output_size": self.output_size,
            "margin": self.margin,
            "mask_outside": self.mask_outside,
            "min_area_fraction": self.min_area_fraction,
            "constrain_detections": self.constrain_detections,
        }

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> LungCrop:
        """Build the stage from a ``[lungs]`` table: its options and a ``segmenter`` table.

        Raises
        ------
        ConfigurationError
            For an option neither the stage nor the segmenter takes, naming it.

        Examples
        --------
        >>> stage = LungCrop.from_options({"output_size": 96, "segmenter": {"epochs": 3}})
        >>> stage.output_size, stage.segmenter.epochs
        (96, 3)
        """
        options = dict(options)
        segmenter_options = options.pop("segmenter", None) or {}
        known = set(cls(LungSegmenter()).get_params())
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigurationError(
                f"[lungs] has no option {unknown[0]!r}; its options are "
                f"{', '.join(sorted(known))} and a [lungs.segmenter] table"
            )
        if not isinstance(segmenter_options, Mapping):
            raise ConfigurationError("[lungs] segmenter must be a table of LungSegmenter options")
        segmenter_known = set(LungSegmenter().get_params()) - {"on_epoch_end"}
        unknown = sorted(set(segmenter_options) - segmenter_known)
        if unknown:
            raise ConfigurationError(
                f"[lungs.segmenter] has no option {unknown[0]!r}; its options are "
                f"{', '.join(sorted(segmenter_known))}"
            )
        return cls(LungSegmenter(**segmenter_options), **options)

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.get_params().items())
        return f"{type(self).__name__}({self.segmenter!r}, {params})"

    def describe(self) -> dict[str, Any]:
        """The stage as plain JSON data: its parameters and the segmenter's.

        The segmenter's run-time wiring (``on_epoch_end``, ``checkpoint_dir``) is left out.
        """
        segmenter = {
            key: value
            for key, value in self.segmenter.get_params().items()
            if key not in ("on_epoch_end", "checkpoint_dir")
        }
        return {**self.get_params(), "segmenter": segmenter}

    @property
    def fitted(self) -> bool:
        """Whether the segmenter is fitted."""
        return self.segmenter.fitted

    def apply(self, xrays: Sequence[XRay]) -> list[XRay]:
        """Crop each radiograph to its lung fields (one network call per chunk).

        Returns
        -------
        list of XRay
            In order; each ``output_size`` square, with ``meta["transform"]`` chained
            after the input's, ``meta["lungs"]`` (its :class:`LungFields` in the crop) and
            ``meta["lungs_found"]``.

        Raises
        ------
        InvalidImageError
            If a ``*_mask`` array in ``meta`` does not have its image's shape.
        """
        if not xrays:
            return []
        fields = self.segmenter.segment(xrays)
        out = []
        missing = 0
        for xray, segmented in zip(xrays, fields, strict=True):
            found = LungFields(segmented.labels, threshold=self.min_area_fraction)
            if not found.found:
                missing += 1
            out.append(self._crop(xray, found))
        if missing:
            warnings.warn(
                f"no lung fields found in {missing} of {len(xrays)} radiograph(s): they "
                "were classified on the whole frame, and their predictions are marked "
                "uncertain (not a frontal chest radiograph, or lungs the segmenter cannot "
                "see, such as a complete white-out)",
                NoLungsFoundWarning,
                stacklevel=2,
            )
        return out

    def _crop(self, xray: XRay, fields: LungFields) -> XRay:
        box = fields.box if fields.found else None
        shape = xray.shape
        window = (
            _window(box, shape, self.margin)
            if box is not None
            else Box(0.0, 0.0, float(shape[1]), float(shape[0]))
        )
        size = self.output_size
        crop = ResizeTransform.crop(window, shape, (size, size))
        pixels = _cut(np.asarray(xray.pixels), window, size, nearest=False)
        labels = _cut(fields.labels, window, size, nearest=True)
        if self.mask_outside and box is not None:
            inside = cv2.dilate((labels > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            pixels = np.where(inside, pixels, np.zeros_like(pixels))
        meta = dict(xray.meta)
        for key, value in xray.meta.items():
            if key.endswith(_MASK_SUFFIX) and isinstance(value, np.ndarray):
                # Any other shape (another size, a channel axis, a flat array) would be
                # left uncut beside the cropped pixels.
                if value.shape != shape:
                    raise InvalidImageError(
                        f"meta[{key!r}] has shape {value.shape}, the image {shape}; masks "
                        "must match the image they belong to",
                        xray.id,
                    )
                meta[key] = _readonly(_cut(value, window, size, nearest=True))
        previous = xray.meta.get("transform")
        if previous is not None and not isinstance(previous, ResizeTransform):
            raise ConfigurationError(
                f"{xray.id}: meta['transform'] is a {type(previous).__name__}, not a "
                "ResizeTransform, so the lung crop cannot be chained after it"
            )
        meta["transform"] = crop if previous is None else previous.then(crop)
        # In the crop the lungs fill most of the frame, so the whole-frame area rule would
        # call them "not found": the crop's fields are found exactly when the radiograph's
        # were (a threshold of 0 accepts any area, one above 1 none).
        meta[LUNGS_KEY] = LungFields(
            _readonly(labels),
            threshold=0.0 if fields.found else 2.0,
            max_area_fraction=1.0,
        )
        meta[LUNGS_FOUND_KEY] = fields.found
        meta[LUNG_CROP_KEY] = crop
        # The crop is part of how the models' input was prepared: a classifier trained on
        # lung crops records it, and a pipeline refuses to feed it whole frames.
        described = xray.meta.get("preprocessing")
        if isinstance(described, Mapping):
            meta["preprocessing"] = {**described, "lung_crop": self.get_params()}
        return attrs.evolve(xray, pixels=pixels, boxes=crop.map_boxes(xray.boxes), meta=meta)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Save the segmenter (the crop's parameters live in the pipeline's configuration)."""
        self.segmenter.save(path, overwrite=overwrite)
