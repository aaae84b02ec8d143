"""An offline, trainable lesion detector: a small U-Net whose mask components become boxes.

The network segments infected lung (trained on infection masks, or on boxes filled in
when no mask is known); the connected components of its thresholded probability map are
the detections, each scored by the mean probability inside it. It is small enough to
train on a CPU at 128x128 and is the default detector when no Watson credentials are
configured. Keras 3 on TensorFlow is imported only when a model is built or loaded.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Self

import numpy as np
from numpy.typing import NDArray

from covidcxr._model_archive import ArchiveFormat
from covidcxr._plain import plain_data
from covidcxr._unet import UNetEstimator, load_unet_model, resize_square, save_unet
from covidcxr.boxes import ResizeTransform, mask_components
from covidcxr.detect._imaging import lesion_mask, to_uint8
from covidcxr.errors import (
    ConfigurationError,
    InvalidImageError,
    PreprocessingMismatchWarning,
)
from covidcxr.preprocess._profile import InputProfile, InputRecorder
from covidcxr.protocols import EpochCallback
from covidcxr.records import Detection, XRay

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "LocalDetector", "mask_to_detections"]

FORMAT_NAME: Final = "covidcxr.local-detector"
FORMAT_VERSION: Final = 1
_FORMAT: Final = ArchiveFormat(FORMAT_NAME, FORMAT_VERSION, "covidcxr local detector")

_PARAMS: Final = (
    "input_size",
    "base_filters",
    "depth",
    "epochs",
    "batch_size",
    "learning_rate",
    "mask_threshold",
    "min_area_fraction",
    "label",
    "augment",
    "warp",
    "patience",
    "seed",
    "threads",
    "verbose",
    "on_epoch_end",
    "checkpoint_dir",
)
# What a saved detector holds: not run-time wiring (``on_epoch_end``).
_SAVED: Final = tuple(name for name in _PARAMS if name not in ("on_epoch_end", "checkpoint_dir"))


def _check_inference_params(mask_threshold: float, min_area_fraction: float, label: object) -> None:
    """Refuse post-processing parameters that cannot give meaningful boxes.

    A ``mask_threshold`` of 0 or less marks every pixel as lesion, so an all-zero map
    becomes one box over the whole image; 1 or more marks none.

    Raises
    ------
    ConfigurationError
        If ``mask_threshold`` is not in ``(0, 1)``, ``min_area_fraction`` is not a finite
        fraction in ``[0, 1]``, or ``label`` is not a non-empty string.
    """
    if not 0.0 < mask_threshold < 1.0:
        raise ConfigurationError(f"mask_threshold must be in (0, 1), got {mask_threshold!r}")
    if not (0.0 <= min_area_fraction <= 1.0 and math.isfinite(min_area_fraction)):
        raise ConfigurationError(f"min_area_fraction must be in [0, 1], got {min_area_fraction!r}")
    if not isinstance(label, str) or not label:
        raise ConfigurationError(f"label must be a non-empty string, got {label!r}")


def mask_to_detections(
    probabilities: NDArray[np.floating[Any]],
    *,
    threshold: float = 0.5,
    min_area_fraction: float = 0.002,
    label: str = "opacity",
    output_shape: tuple[int, int] | None = None,
) -> list[Detection]:
    """Turn a lesion probability map into scored boxes, one per connected component.

    Parameters
    ----------
    probabilities
        A 2-D map of lesion probabilities in ``[0, 1]``.
    threshold
        Pixels at or above it are lesion.
    min_area_fraction
        Components smaller than this fraction of the map are dropped as noise.
    label
        The detections' label.
    output_shape
        ``(height, width)`` of the image the boxes are for; the map is stretched onto it.
        ``None`` keeps the map's own coordinates.

    Returns
    -------
    list of Detection
        By descending score, which is the mean probability inside the component.

    Examples
    --------
    >>> import numpy as np
    >>> probabilities = np.zeros((8, 8), np.float32)
    >>> probabilities[2:4, 1:5] = 0.8
    >>> mask_to_detections(probabilities, output_shape=(16, 16))
    [Detection(box=Box(x=2.0, y=4.0, width=8.0, height=4.0), label='opacity', score=0.8...)]
    """
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must be a 2-D map, got shape {probabilities.shape}")
    height, width = probabilities.shape
    to_output = ResizeTransform.stretch((height, width), output_shape or (height, width))
    labels, boxes = mask_components(
        probabilities >= threshold, min_area=min_area_fraction * height * width
    )
    detections: list[Detection] = []
    for component, box in enumerate(boxes, start=1):
        score = float(np.clip(probabilities[labels == component].mean(), 0.0, 1.0))
        mapped = to_output.map_box(box)
        if mapped is not None:
            detections.append(Detection(mapped, label, score))
    detections.sort(key=lambda detection: -detection.score)
    return detections


class LocalDetector(UNetEstimator):
    """A small segmentation network trained on infection masks; components become boxes.

    Parameters
    ----------
    input_size
        Side of the square the network sees; radiographs are stretched to it and boxes
        mapped back to each radiograph's own pixels.
    base_filters, depth
        Width of the first level and number of down-sampling levels of the U-Net.
    epochs, batch_size, learning_rate
        Training schedule (Adam).
    mask_threshold
        Probability at which a pixel counts as lesion when forming boxes.
    min_area_fraction
        Components smaller than this fraction of the image are dropped.
    label
        Label given to every detection.
    augment
        Random horizontal flips while training, of the image and its target together.
    warp
        Also a random rotation (±10°), scale (±10 %) and shift (±6 %) of the image and
        its target together, and random gamma and contrast on the image: what the lung
        segmenter trains with. Meant for lesion maps (and boxes) that hold up on
        radiographs framed and exposed unlike the training ones. Off by default: on
        COVID-QU-Ex Val it scored within the spread between seeds without it (see
        ``benchmarks/results/infection_warp.md``); its purpose, other hospitals'
        radiographs, is not measured there.
    patience
        With validation data, stop after this many epochs without improvement and keep the
        best weights; the learning rate halves after ``patience // 2`` such epochs.
    seed
        Seeds Python, NumPy and TensorFlow (through ``keras.utils.set_random_seed``).
    threads
        Cap on TensorFlow's CPU threads (effective only before TensorFlow first runs).
    verbose
        Keras's training verbosity (``1`` prints a progress bar per epoch).
    on_epoch_end
        ``on_epoch_end(epoch, logs)``, called after each training epoch (1-based) with
        its ``loss`` (and ``val_loss``): progress reporting, as
        :class:`~covidcxr.VGG19Classifier` does; ``Pipeline(progress=True)`` sets it to
        drive a progress bar. Never saved.
    checkpoint_dir
        A folder for a checkpoint written after every training epoch (weights, optimizer,
        learning-rate and early-stopping state): ``fit`` with the same training
        parameters and data resumes from it after an interruption, and ends as an
        uninterrupted run would; a checkpoint of another run there is refused
        (:class:`~covidcxr.errors.ConfigurationError`). Never saved with the model.

    Examples
    --------
    >>> detector = LocalDetector(input_size=64, epochs=2)  # doctest: +SKIP
    >>> detector.fit(train_xrays).detect(xray)  # doctest: +SKIP
    [Detection(box=Box(...), label='opacity', score=0.87)]
    """

    network_name = "covidcxr_local_unet"
    output_name = "lesion_probability"
    inference_params = frozenset({"mask_threshold", "min_area_fraction", "label"})

    def __init__(
        self,
        input_size: int = 128,
        base_filters: int = 16,
        depth: int = 3,
        *,
        epochs: int = 15,
        batch_size: int = 16,
        learning_rate: float = 2e-3,
        mask_threshold: float = 0.5,
        min_area_fraction: float = 0.002,
        label: str = "opacity",
        augment: bool = True,
        warp: bool = False,
        patience: int = 6,
        seed: int = 0,
        threads: int | None = None,
        verbose: int = 0,
        on_epoch_end: EpochCallback | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.check_network_params(input_size, base_filters, depth, epochs, batch_size)
        _check_inference_params(mask_threshold, min_area_fraction, label)
        self.input_size = input_size
        self.base_filters = base_filters
        self.depth = depth
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.mask_threshold = mask_threshold
        self.min_area_fraction = min_area_fraction
        self.label = label
        self.augment = augment
        self.warp = warp
        self.patience = patience
        self.seed = seed
        self.threads = threads
        self.verbose = verbose
        self.on_epoch_end = on_epoch_end
        self.checkpoint_dir = checkpoint_dir

    def set_params(self, **params: Any) -> Self:
        """Set constructor parameters by name, checked as ``__init__`` checks them.

        ``create_detector("local", model=..., mask_threshold=...)`` sets a loaded
        detector's post-processing this way.

        Raises
        ------
        ConfigurationError
            For an unknown name, or a value ``__init__`` would refuse (then nothing is
            changed).
        """
        current = self.get_params(deep=False)
        merged = {**current, **{k: v for k, v in params.items() if k in current}}
        self.check_network_params(
            merged["input_size"],
            merged["base_filters"],
            merged["depth"],
            merged["epochs"],
            merged["batch_size"],
        )
        _check_inference_params(
            merged["mask_threshold"], merged["min_area_fraction"], merged["label"]
        )
        return super().set_params(**params)

    # -- data ------------------------------------------------------------------------------

    def prepare_batch(self, xrays: Sequence[XRay]) -> NDArray[np.float32]:
        """Network inputs, shape ``(n, input_size, input_size, 1)``, in ``[0, 1]``."""
        batch = np.empty((len(xrays), self.input_size, self.input_size, 1), np.float32)
        for index, xray in enumerate(xrays):
            batch[index, ..., 0] = resize_square(to_uint8(xray.pixels), self.input_size) / 255.0
        return batch

    def _arrays(
        self, xrays: Iterable[XRay], inputs: InputRecorder | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        images: list[NDArray[np.float32]] = []
        masks: list[NDArray[np.float32]] = []
        for xray in xrays:
            if inputs is not None:
                inputs.see(xray)
            images.append(self.prepare_batch([xray])[0])
            target = resize_square(lesion_mask(xray).astype(np.float32), self.input_size)
            masks.append((target >= 0.5).astype(np.float32)[..., None])
        if not images:
            raise InvalidImageError("fit needs at least one radiograph")
        return np.stack(images), np.stack(masks)

    def _lesion_targets(
        self, xrays: Iterable[XRay], inputs: InputRecorder
    ) -> tuple[NDArray[Any], NDArray[Any]]:
        images, masks = self._arrays(xrays, inputs)
        if not masks.any():
            # With nothing to find, the network learns a constant map; thresholded, that
            # is either nothing or one box over every image, never a detector.
            raise ConfigurationError(
                f"LocalDetector.fit: none of the {len(images)} training radiographs has a "
                "lesion box or infection mask (meta['infection_mask']), so there is "
                "nothing to learn; train on data with lesion masks or boxes (a COVID-QU-Ex "
                "checkout, layout='covid-qu-ex'), or leave the detector out"
            )
        return images, masks

    # -- training --------------------------------------------------------------------------

    def fit(self, xrays: Iterable[XRay], validation: Iterable[XRay] | None = None) -> Self:
        """Train on radiographs with infection masks or boxes.

        Each radiograph's target is ``meta["infection_mask"]`` when present, else its
        :attr:`~covidcxr.XRay.boxes` filled in; radiographs with neither are lesion-free
        examples, but at least one radiograph must show a lesion.

        Parameters
        ----------
        xrays
            Training radiographs (iterated once).
        validation
            Radiographs for early stopping (iterated once).

        Returns
        -------
        LocalDetector
            ``self``, with ``model_`` and ``history_`` set.

        Raises
        ------
        ConfigurationError
            If no training radiograph has a lesion box or a non-empty infection mask.
        TrainingDivergedError
            If an epoch ends with a non-finite loss (NaN or infinity).
        """
        inputs = InputRecorder()
        images, masks = self._lesion_targets(xrays, inputs)
        validation_data = None
        if validation is not None:
            validation_data = self._arrays(validation)
        self._train(images, masks, validation_data, warp=self.warp)
        # What the training images were prepared with, and how they looked: saved with
        # the model, so that input prepared otherwise is noticed (see predict_masks).
        self.preprocessing_ = plain_data(inputs.first_preprocessing)
        self.input_profile_ = inputs.profile()
        return self

    # -- detection -------------------------------------------------------------------------

    def predict_masks(self, xrays: Sequence[XRay]) -> NDArray[np.float32]:
        """Lesion probability maps, shape ``(n, input_size, input_size)``.

        Warns (:class:`~covidcxr.errors.PreprocessingMismatchWarning`, once per call) when
        the radiographs record another preprocessing than the training images did, or
        their intensity statistics clearly differ from the training images'.
        """
        model = self._require_fitted()
        if not xrays:
            return np.zeros((0, self.input_size, self.input_size), np.float32)
        self._warn_if_unlike_training(xrays)
        return self.run_network(model, self.prepare_batch(xrays), max(self.batch_size, 32))

    def _warn_if_unlike_training(self, xrays: Sequence[XRay]) -> None:
        inputs = InputRecorder()
        for xray in xrays:
            inputs.see(xray)
        trained = self.preprocessing_ if isinstance(self.preprocessing_, Mapping) else None
        problem = inputs.mismatch(trained, self.input_profile_, f"this {type(self).__name__}")
        if problem is not None:
            warnings.warn(problem, PreprocessingMismatchWarning, stacklevel=4)

    def detect(self, xray: XRay) -> list[Detection]:
        """Detect lesions in one radiograph; boxes in its own pixel coordinates.

        Examples
        --------
        >>> detector = LocalDetector.load("local-detector.zip")  # doctest: +SKIP
        >>> detector.detect(xray)[:1]  # doctest: +SKIP
        [Detection(box=Box(x=31.0, y=52.0, width=70.0, height=96.0), label='opacity', ...)]
        """
        return self.detect_batch([xray])[0]

    def detect_batch(self, xrays: Iterable[XRay]) -> list[list[Detection]]:
        """Detect lesions in many radiographs (one network call per ``batch_size`` chunk)."""
        images = list(xrays)
        return self.masks_to_detections(self.predict_masks(images), images)

    def masks_to_detections(
        self, maps: NDArray[np.floating[Any]], xrays: Sequence[XRay]
    ) -> list[list[Detection]]:
        """Boxes from lesion probability maps (of :meth:`predict_masks`, perhaps edited).

        Each map's connected components at :attr:`mask_threshold` become detections in
        its radiograph's own pixel coordinates. A pipeline with a lung stage first sets
        the maps to 0 outside the lungs.

        Raises
        ------
        ConfigurationError
            If :attr:`mask_threshold`, :attr:`min_area_fraction` or :attr:`label` was set
            (as an attribute) to a value ``__init__`` would refuse.
        """
        _check_inference_params(self.mask_threshold, self.min_area_fraction, self.label)
        images = list(xrays)
        return [
            mask_to_detections(
                probabilities,
                threshold=self.mask_threshold,
                min_area_fraction=self.min_area_fraction,
                label=self.label,
                output_shape=xray.shape,
            )
            for probabilities, xray in zip(maps, images, strict=True)
        ]

    # -- persistence -----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the fitted detector to one file, atomically.

        Raises
        ------
        FileExistsError
            If ``path`` exists and ``overwrite`` is false, or it is not a saved local
            detector (then it is never replaced).
        TrainingDivergedError
            If the network's weights are not finite (NaN or infinity).
        """
        extra = {
            "preprocessing": self.preprocessing_,
            "input_profile": (
                self.input_profile_.to_dict() if self.input_profile_ is not None else None
            ),
        }
        save_unet(self, path, _FORMAT, _SAVED, extra, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read a detector written by :meth:`save` (Keras safe mode, no arbitrary code).

        Raises
        ------
        ModelFormatError
            If the file is not a saved local detector, is corrupt, or was written by an
            incompatible format or Keras version.
        """
        detector, metadata = load_unet_model(cls, path, _FORMAT, _SAVED)
        # Both absent from detectors saved before they were recorded: then unknown (None),
        # and their input is not checked.
        detector.preprocessing_ = metadata.get("preprocessing")
        profile = metadata.get("input_profile")
        detector.input_profile_ = (
            InputProfile.from_dict(profile, os.fspath(path)) if profile is not None else None
        )
        return detector

    # Learned state beside the network's, declared for type checkers.
    #: The preprocessing the training images recorded (``meta["preprocessing"]``), if any.
    preprocessing_: Any
    #: Intensity statistics of the training images (``None`` when unknown).
    input_profile_: InputProfile | None
