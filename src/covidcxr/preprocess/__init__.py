"""Preprocessing: the published Gaussian + CLAHE pipeline, geometry, and the batch runner.

:class:`~covidcxr.GaussianClahePreprocessor` turns one :class:`~covidcxr.XRay` into the
form a model expects, recording in ``meta["transform"]`` the
:class:`~covidcxr.boxes.ResizeTransform` that maps boxes back to the original image;
:func:`preprocess_batch` runs any preprocessor over a whole source on several processes
(kept between runs until idle: :func:`release_workers`), with an optional on-disk cache
(:class:`PreprocessCache`). Float32 pixels that are
exactly ``uint8 / 255`` travel and are cached as their ``uint8`` values
(:func:`compact_pixels`, :func:`expand_pixels`), a quarter of the bytes, and come back
bit for bit.

:class:`~covidcxr.boxes.ResizeTransform`, :func:`~covidcxr.boxes.transform_boxes` and
:func:`~covidcxr.boxes.boxes_to_original` live in :mod:`covidcxr.boxes` and are
re-exported here.
"""

from covidcxr.preprocess._batch import BatchStats, preprocess_batch, xray_digest
from covidcxr.preprocess._cache import CachedOutput, CacheNotFilledWarning, PreprocessCache
from covidcxr.preprocess._gaussian_clahe import (
    GaussianClahePreprocessor,
    IdentityPreprocessor,
    exact_uint8,
    to_uint8,
    window_levels_of,
)
from covidcxr.preprocess._geometry import (
    ResizeTransform,
    boxes_to_original,
    fit_resize,
    resize_image,
    transform_boxes,
)
from covidcxr.preprocess._pixels import UINT8_OVER_255, compact_pixels, expand_pixels
from covidcxr.preprocess._profile import recorded_preprocessor
from covidcxr.preprocess._workers import release_workers

__all__ = [
    "UINT8_OVER_255",
    "BatchStats",
    "CacheNotFilledWarning",
    "CachedOutput",
    "GaussianClahePreprocessor",
    "IdentityPreprocessor",
    "PreprocessCache",
    "ResizeTransform",
    "boxes_to_original",
    "compact_pixels",
    "exact_uint8",
    "expand_pixels",
    "fit_resize",
    "preprocess_batch",
    "recorded_preprocessor",
    "release_workers",
    "resize_image",
    "to_uint8",
    "transform_boxes",
    "window_levels_of",
    "xray_digest",
]
