"""Preprocessing: the published Gaussian + CLAHE pipeline, geometry, and the batch runner.

:class:`GaussianClahePreprocessor` turns one :class:`~covidcxr.XRay` into the form a
model expects; :func:`preprocess_batch` runs any preprocessor over a whole source on
several processes, with an optional on-disk cache.
"""

from covidcxr.preprocess._batch import BatchStats, preprocess_batch, xray_digest
from covidcxr.preprocess._cache import PreprocessCache
from covidcxr.preprocess._gaussian_clahe import (
    GaussianClahePreprocessor,
    IdentityPreprocessor,
    to_uint8,
)
from covidcxr.preprocess._geometry import (
    ResizeTransform,
    boxes_to_original,
    fit_resize,
    resize_image,
    transform_boxes,
)

__all__ = [
    "BatchStats",
    "GaussianClahePreprocessor",
    "IdentityPreprocessor",
    "PreprocessCache",
    "ResizeTransform",
    "boxes_to_original",
    "fit_resize",
    "preprocess_batch",
    "resize_image",
    "to_uint8",
    "transform_boxes",
    "xray_digest",
]
