"""Lung-field segmentation: a small U-Net trained on lung masks, and its post-processing.

The network is the U-Net of the local lesion detector (:mod:`covidcxr._unet`), trained on
the lung masks a source provides in ``meta["lung_mask"]`` (the COVID-QU-Ex layout reads
them for every Train and Val radiograph). Its thresholded output is cleaned up into at
most two lung fields: the largest connected components, holes filled, each named by the
side of the image it lies on.

Training augments geometry (rotation, scale, shift: the same warp for the image and its
mask) and intensity (gamma and contrast), because the images it will meet come from other
hospitals' machines and positioning, not from the training set's.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, Literal, Self, overload

import cv2
import numpy as np
from attrs import field, frozen
from numpy.typing import NDArray

from covidcxr._model_archive import ArchiveFormat
from covidcxr._plain import plain_data
from covidcxr._unet import UNetEstimator, load_unet_model, resize_square, save_unet
from covidcxr.errors import (
    ConfigurationError,
    InvalidImageError,
)
from covidcxr.preprocess import to_uint8
from covidcxr.protocols import EpochCallback
from covidcxr.records import Box, XRay

__all__ = [
    "FORMAT_NAME",
    "LEFT_LUNG",
    "LUNG_MASK_KEY",
    "RIGHT_LUNG",
    "LungFields",
    "LungSegmenter",
    "network_input",
]

FORMAT_NAME: Final = "covidcxr.lung-segmenter"
FORMAT_VERSION: Final = 1
_FORMAT: Final = ArchiveFormat(FORMAT_NAME, FORMAT_VERSION, "covidcxr lung segmenter")
#: ``XRay.meta`` key of a ground-truth lung mask (0 outside, anything else inside).
LUNG_MASK_KEY: Final = "lung_mask"
#: Label of the patient's right lung in :attr:`LungFields.labels` (the image's left side).
RIGHT_LUNG: Final = 1
#: Label of the patient's left lung (the image's right side).
LEFT_LUNG: Final = 2

_PARAMS: Final = (
    "input_size",
    "base_filters",
    "depth",
    "epochs",
    "batch_size",
    "learning_rate",
    "threshold",
    "min_component_fraction",
    "augment",
    "patience",
    "seed",
    "threads",
    "verbose",
    "on_epoch_end",
    "checkpoint_dir",
)
# What a saved segmenter holds: not run-time wiring (``on_epoch_end``).
_SAVED: Final = tuple(name for name in _PARAMS if name not in ("on_epoch_end", "checkpoint_dir"))


@frozen(eq=False)
class LungFields:
    """The lung fields found in one radiograph, in its pixel coordinates.

    Parameters
    ----------
    labels
        ``uint8`` map of the radiograph's shape: 0 outside the lungs,
        :data:`RIGHT_LUNG` (1) on the patient's right lung (the image's left half),
        :data:`LEFT_LUNG` (2) on the left one.
    threshold
        The smallest share of the image the fields must cover to count as found.
    max_area_fraction
        The largest share they may cover: lung fields filling nearly the whole frame are
        a segmenter answering a featureless image, not lungs.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((8, 8), np.uint8)
    >>> labels[2:6, 1:3], labels[2:6, 5:7] = RIGHT_LUNG, LEFT_LUNG
    >>> fields = LungFields(labels)
    >>> fields.found, fields.area_fraction, fields.box
    (True, 0.25, Box(x=1.0, y=2.0, width=6.0, height=4.0))
    """

    labels: NDArray[np.uint8] = field(repr=False)
    threshold: float = 0.05
    max_area_fraction: float = 0.85

    @property
    def mask(self) -> NDArray[np.bool_]:
        """Both lungs, as a boolean map."""
        return np.asarray(self.labels > 0)

    @property
    def area_fraction(self) -> float:
        """The share of the image the lung fields cover."""
        return float(np.count_nonzero(self.labels)) / float(self.labels.size)

    @property
    def found(self) -> bool:
        """Whether the fields cover at least :attr:`threshold` of the image, and not all of it."""
        return self.threshold <= self.area_fraction <= self.max_area_fraction

    @property
    def box(self) -> Box | None:
        """The smallest box holding both lung fields (``None`` when there are none)."""
        rows = np.flatnonzero(self.labels.any(axis=1))
        columns = np.flatnonzero(self.labels.any(axis=0))
        if rows.size == 0:
            return None
        return Box.from_corners(
            float(columns[0]), float(rows[0]), float(columns[-1] + 1), float(rows[-1] + 1)
        )

    def __repr__(self) -> str:
        return (
            f"LungFields(shape={self.labels.shape}, found={self.found}, "
            f"area_fraction={self.area_fraction:.3f})"
        )


def network_input(pixels: NDArray[Any], size: int) -> NDArray[np.float32]:
    """A radiograph as the segmenter sees it: ``size`` x ``size``, ``float32`` in ``[0, 1]``.

    ``uint8`` and ``uint16`` pixels are mapped to 8 bits as the preprocessor does
    (:func:`covidcxr.preprocess.to_uint8`); ``float32`` pixels (a preprocessor's output) are
    taken to be in ``[0, 1]`` already.
    """
    array = np.asarray(pixels)
    if array.dtype == np.float32:
        if not np.isfinite(array).all():
            raise InvalidImageError("pixels contain NaN or infinite values")
        unit = np.clip(array, 0.0, 1.0)
    else:
        unit = to_uint8(array).astype(np.float32) / 255.0
    return resize_square(unit, size)


def _fill_holes(component: NDArray[np.uint8]) -> NDArray[np.uint8]:
    # Flood the background from the border; whatever it cannot reach is a hole.
    height, width = component.shape
    padded = np.zeros((height + 2, width + 2), np.uint8)
    padded[1:-1, 1:-1] = component
    flood = padded.copy()
    cv2.floodFill(flood, np.zeros((height + 4, width + 4), np.uint8), (0, 0), 1)
    holes = flood[1:-1, 1:-1] == 0
    return np.asarray(component | holes.astype(np.uint8), np.uint8)


def lung_labels(
    probabilities: NDArray[np.floating[Any]],
    output_shape: tuple[int, int],
    *,
    threshold: float = 0.5,
    min_component_fraction: float = 0.01,
) -> NDArray[np.uint8]:
    """Turn a lung probability map into at most two labelled, hole-free lung fields.

    The map is stretched to ``output_shape`` first (bilinear), so the fields follow the
    radiograph's own pixels. The two largest connected components of at least
    ``min_component_fraction`` of the image are kept; a component centred on the image's
    left half is the patient's right lung.

    Examples
    --------
    >>> import numpy as np
    >>> probabilities = np.zeros((16, 16), np.float32)
    >>> probabilities[4:12, 2:6] = probabilities[4:12, 10:14] = 0.9
    >>> probabilities[0, 15] = 0.9  # a speck, dropped
    >>> labels = lung_labels(probabilities, (32, 32))
    >>> sorted(np.unique(labels).tolist()), int((labels == 1).sum()), int((labels == 2).sum())
    ([0, 1, 2], 128, 128)
    """
    height, width = output_shape
    stretched = cv2.resize(
        np.asarray(probabilities, np.float32), (width, height), interpolation=cv2.INTER_LINEAR
    )
    binary = (stretched >= threshold).astype(np.uint8)
    count, components, stats, centroids = cv2.connectedComponentsWithStats(binary, connectivity=8)
    labels = np.zeros(output_shape, np.uint8)
    smallest = min_component_fraction * height * width
    kept = sorted(
        (index for index in range(1, count) if stats[index, cv2.CC_STAT_AREA] >= smallest),
        key=lambda index: -int(stats[index, cv2.CC_STAT_AREA]),
    )[:2]
    for index in kept:
        side = RIGHT_LUNG if centroids[index][0] < width / 2.0 else LEFT_LUNG
        filled = _fill_holes((components == index).astype(np.uint8))
        labels[(filled > 0) & (labels == 0)] = side
    return labels


def _check_segmenter_params(
    *,
    input_size: int,
    base_filters: int,
    depth: int,
    epochs: int,
    batch_size: int,
    threshold: float,
    min_component_fraction: float,
) -> None:
    """Refuse segmenter parameters it cannot train or segment with.

    Raises
    ------
    ConfigurationError
        For a network shape or schedule that cannot train, or a threshold or component
        fraction out of range.
    """
    UNetEstimator.check_network_params(input_size, base_filters, depth, epochs, batch_size)
    if not 0.0 < threshold < 1.0:
        raise ConfigurationError(f"threshold must be in (0, 1), got {threshold!r}")
    if not 0.0 <= min_component_fraction < 0.5:
        raise ConfigurationError(
            f"min_component_fraction must be in [0, 0.5), got {min_component_fraction!r}"
        )


def _featureless(pixels: NDArray[Any]) -> bool:
    """Whether every pixel has the same value (nothing to find lungs in)."""
    array = np.asarray(pixels)
    return bool(array.size == 0 or np.all(array == array.flat[0]))


class LungSegmenter(UNetEstimator):
    """Find the lung fields of frontal chest radiographs: a small U-Net and clean-up.

    Parameters
    ----------
    input_size
        Side of the square the network sees; the fields are stretched back onto each
        radiograph's own pixels.
    base_filters, depth
        Width of the first level and number of down-sampling levels of the U-Net.
    epochs, batch_size, learning_rate
        Training schedule (Adam).
    threshold
        Probability at which a pixel counts as lung.
    min_component_fraction
        Connected components smaller than this share of the image are not lungs.
    augment
        Random flips, rotations (±10°), scaling (±10 %), shifts (±6 %), gamma and contrast
        while training.
    patience
        With validation data, stop after this many epochs without improvement and keep
        the best weights; the learning rate halves after ``patience // 2`` such epochs.
    seed
        Seeds Python, NumPy and TensorFlow, and the augmentation.
    threads
        Cap on TensorFlow's CPU threads (effective only before TensorFlow first runs).
    verbose
        Keras's training verbosity.
    on_epoch_end
        ``on_epoch_end(epoch, logs)``, called after each training epoch (1-based); never
        saved.
    checkpoint_dir
        A folder for a checkpoint written after every training epoch (weights, optimizer,
        learning-rate and early-stopping state): ``fit`` with the same training
        parameters and data resumes from it after an interruption, and ends as an
        uninterrupted run would; a checkpoint of another run there is refused
        (:class:`~covidcxr.errors.ConfigurationError`). Never saved with the model.

    Examples
    --------
    >>> segmenter = LungSegmenter(input_size=64, epochs=2)
    >>> segmenter.fit(train_xrays).segment([xray])[0].found  # doctest: +SKIP
    True
    """

    network_name = "covidcxr_lung_unet"
    output_name = "lung_probability"
    inference_params = frozenset({"threshold", "min_component_fraction"})

    def __init__(
        self,
        input_size: int = 128,
        base_filters: int = 8,
        depth: int = 3,
        *,
        epochs: int = 20,
        batch_size: int = 16,
        learning_rate: float = 2e-3,
        threshold: float = 0.5,
        min_component_fraction: float = 0.01,
        augment: bool = True,
        patience: int = 5,
        seed: int = 0,
        threads: int | None = None,
        verbose: int = 0,
        on_epoch_end: EpochCallback | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        _check_segmenter_params(
            input_size=input_size,
            base_filters=base_filters,
            depth=depth,
            epochs=epochs,
            batch_size=batch_size,
            threshold=threshold,
            min_component_fraction=min_component_fraction,
        )
        self.input_size = input_size
        self.base_filters = base_filters
        self.depth = depth
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.threshold = threshold
        self.min_component_fraction = min_component_fraction
        self.augment = augment
        self.patience = patience
        self.seed = seed
        self.threads = threads
        self.verbose = verbose
        self.on_epoch_end = on_epoch_end
        self.checkpoint_dir = checkpoint_dir

    def set_params(self, **params: Any) -> Self:
        """Set constructor parameters by name, checked as the constructor checks them.

        Raises
        ------
        ConfigurationError
            For an unknown name or a value the constructor would refuse; the segmenter
            is then left as it was.
        """
        before = self.get_params(deep=False)
        super().set_params(**params)
        try:
            _check_segmenter_params(
                input_size=self.input_size,
                base_filters=self.base_filters,
                depth=self.depth,
                epochs=self.epochs,
                batch_size=self.batch_size,
                threshold=self.threshold,
                min_component_fraction=self.min_component_fraction,
            )
        except ConfigurationError:
            for name, value in before.items():
                setattr(self, name, value)
            raise
        return self

    # -- data ------------------------------------------------------------------------------

    def prepare_batch(self, xrays: Sequence[XRay]) -> NDArray[np.float32]:
        """Network inputs, shape ``(n, input_size, input_size, 1)``, in ``[0, 1]``."""
        batch = np.empty((len(xrays), self.input_size, self.input_size, 1), np.float32)
        for index, xray in enumerate(xrays):
            batch[index, ..., 0] = network_input(xray.pixels, self.input_size)
        return batch

    @overload
    def _arrays(
        self, xrays: Iterable[XRay], what: Literal["training"] = ...
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]: ...

    @overload
    def _arrays(
        self, xrays: Iterable[XRay], what: Literal["validation"]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]] | None: ...

    def _arrays(
        self, xrays: Iterable[XRay], what: Literal["training", "validation"] = "training"
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]] | None:
        """Input and target pairs of the radiographs that have a lung mask.

        Training needs at least one; validation without any is ``None`` (with a warning:
        the segmenter then trains every epoch, with no early stopping).
        """
        images: list[NDArray[np.float32]] = []
        masks: list[NDArray[np.float32]] = []
        unmasked = 0
        for xray in xrays:
            mask = xray.meta.get(LUNG_MASK_KEY)
            if mask is None:
                unmasked += 1
                continue
            array = np.asarray(mask)
            if array.shape != xray.shape:
                raise InvalidImageError(
                    f"meta[{LUNG_MASK_KEY!r}] has shape {array.shape}, but the image is "
                    f"{xray.shape}",
                    xray.id,
                )
            images.append(self.prepare_batch([xray])[0])
            target = resize_square((array > 0).astype(np.float32), self.input_size)
            masks.append((target >= 0.5).astype(np.float32)[..., None])
        if unmasked and images:
            warnings.warn(
                f"LungSegmenter: {unmasked} {what} radiograph(s) have no lung mask "
                f"(meta[{LUNG_MASK_KEY!r}]) and were left out of its {what}",
                UserWarning,
                stacklevel=4,
            )
        if not images and what == "validation":
            warnings.warn(
                f"LungSegmenter: no validation radiograph has a lung mask "
                f"(meta[{LUNG_MASK_KEY!r}]), so it trains for all {self.epochs} epochs "
                "without early stopping",
                UserWarning,
                stacklevel=4,
            )
            return None
        if not images:
            raise ConfigurationError(
                "LungSegmenter.fit: no radiograph has a lung mask (meta['lung_mask']); "
                "train on data with lung masks (a COVID-QU-Ex checkout, layout='covid-qu-ex')"
            )
        return np.stack(images), np.stack(masks)

    # -- training --------------------------------------------------------------------------

    def fit(self, xrays: Iterable[XRay], validation: Iterable[XRay] | None = None) -> Self:
        """Train on radiographs with lung masks (``meta["lung_mask"]``).

        Radiographs without a mask are left out, with a warning.

        Parameters
        ----------
        xrays
            Training radiographs (iterated once).
        validation
            Radiographs with lung masks for early stopping (iterated once).

        Returns
        -------
        LungSegmenter
            ``self``, with ``model_`` and ``history_`` set.

        Raises
        ------
        ConfigurationError
            If no training radiograph has a lung mask.
        TrainingDivergedError
            If an epoch ends with a non-finite loss.
        """
        recorded: list[Any] = []

        def noting(items: Iterable[XRay]) -> Iterator[XRay]:
            for xray in items:
                if not recorded:
                    recorded.append(xray.meta.get("preprocessing"))
                yield xray

        images, masks = self._arrays(noting(xrays))
        validation_data = None
        if validation is not None:
            validation_data = self._arrays(validation, "validation")
        self._train(images, masks, validation_data, warp=self.augment)
        # What the training radiographs were prepared with (whole frames: the segmenter
        # runs before the crop), saved with the model, so that a pipeline preparing its
        # images otherwise is refused (RecordsPreprocessing).
        first = recorded[0] if recorded else None
        self.preprocessing_ = plain_data(first) if isinstance(first, Mapping) else None
        return self

    # -- segmentation ----------------------------------------------------------------------

    def predict_maps(self, xrays: Sequence[XRay]) -> NDArray[np.float32]:
        """Lung probability maps, shape ``(n, input_size, input_size)``."""
        model = self._require_fitted()
        if not xrays:
            return np.zeros((0, self.input_size, self.input_size), np.float32)
        return self.run_network(model, self.prepare_batch(xrays), max(self.batch_size, 64))

    def segment(self, xrays: Sequence[XRay]) -> list[LungFields]:
        """The lung fields of each radiograph, in its own pixel coordinates.

        A featureless image (every pixel the same value: a blank frame) has no lung
        fields, whatever the network answers on it, so it counts as not found.

        Examples
        --------
        >>> fields = LungSegmenter.load("lungs.zip").segment([xray])  # doctest: +SKIP
        >>> fields[0].found, fields[0].box  # doctest: +SKIP
        (True, Box(x=28.0, y=31.0, width=201.0, height=188.0))
        """
        maps = self.predict_maps(xrays)
        return [
            LungFields(
                np.zeros(xray.shape, np.uint8)
                if _featureless(xray.pixels)
                else lung_labels(
                    probabilities,
                    xray.shape,
                    threshold=self.threshold,
                    min_component_fraction=self.min_component_fraction,
                )
            )
            for probabilities, xray in zip(maps, xrays, strict=True)
        ]

    # -- persistence -----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the fitted segmenter to one file, atomically.

        Raises
        ------
        FileExistsError
            If ``path`` exists and ``overwrite`` is false, or it is not a saved lung
            segmenter (then it is never replaced).
        TrainingDivergedError
            If the network's weights are not finite.
        """
        extra = {"preprocessing": getattr(self, "preprocessing_", None)}
        save_unet(self, path, _FORMAT, _SAVED, extra, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read a segmenter written by :meth:`save` (Keras safe mode, no arbitrary code).

        Raises
        ------
        ModelFormatError
            If the file is not a saved lung segmenter, is corrupt, or was written by an
            incompatible format or Keras version.
        """
        segmenter, metadata = load_unet_model(cls, path, _FORMAT, _SAVED)
        preprocessing = metadata.get("preprocessing")  # absent from segmenters saved before
        segmenter.preprocessing_ = preprocessing if isinstance(preprocessing, dict) else None
        return segmenter

    # Learned state beside the network's, declared for type checkers.
    preprocessing_: Any
