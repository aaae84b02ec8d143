"""What a model was trained on, and whether its input still looks like it.

A model trained on Gaussian + CLAHE output and fed raw pixels (or CLAHE with another clip
limit) predicts worse, silently. Two records let a model notice:

* the **preprocessing** its training images recorded in ``meta["preprocessing"]``
  (:meth:`~covidcxr.GaussianClahePreprocessor.describe`), compared with what its input
  records, or with a pipeline's preprocessor (:func:`preprocessing_differences`);
* an :class:`InputProfile` of cheap intensity statistics of the training images, for
  input that records nothing (arrays prepared elsewhere, or not at all).

The statistics are taken on each image scaled to ``[0, 1]`` and shrunk to 64x64 pixels
(so that the size of the input does not matter): its brightness (mean), contrast
(standard deviation), local contrast (the spread between the 10th and 90th percentiles
inside each cell of an 8x8 grid, averaged: the quantity CLAHE equalises, so it tells
raw from enhanced images and one clip limit from another) and saturation (the share of
pixels at black or white). A set of images differs from the training input when, for
one statistic, at least half of them lie beyond the training images' 5th or 95th
percentile on the same side: drawn from the training distribution, that needs half the
images in a 5 % tail, which for :data:`MIN_IMAGES` images or more essentially never
happens, while raw images fed to a CLAHE-trained model do it on local contrast.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import cv2
import numpy as np
from attrs import field, frozen
from numpy.typing import NDArray

from covidcxr.errors import ConfigurationError, ModelFormatError
from covidcxr.protocols import DescribedPreprocessor, Preprocessor, RecordsPreprocessing
from covidcxr.records import XRay

__all__ = [
    "FEATURES",
    "MIN_IMAGES",
    "InputProfile",
    "InputRecorder",
    "clip_to_unit",
    "image_features",
    "preprocessing_differences",
    "recorded_preprocessor",
]

#: The intensity statistics of an :class:`InputProfile`, by name.
FEATURES: Final[tuple[str, ...]] = ("brightness", "contrast", "local contrast", "saturation")
#: The fewest images a statistical comparison judges: fewer say too little.
MIN_IMAGES: Final = 20
#: The share of images beyond the same training percentile that marks a mismatch.
MISMATCH_SHARE: Final = 0.5
# Statistics are taken at this size, so that they do not depend on the input's.
_PROFILE_SIDE: Final = 64
_GRID: Final = 8
# Slack around the training percentiles, in [0, 1] units: training sets of identical
# images (or of few images) would otherwise have an empty range.
_TOLERANCE: Final = 0.01
_QUANTILES: Final = (0.05, 0.5, 0.95)
# Description entries that do not change what a model sees: it resizes its input to its
# own size, and uint8 and float32 outputs hold the same values once scaled to [0, 1].
_NEUTRAL_PARAMETERS: Final = frozenset({"output_size", "output_dtype"})


def _unit(pixels: NDArray[Any]) -> NDArray[np.float32]:
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / np.float32(255.0)
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) / np.float32(65535.0)
    return clip_to_unit(np.asarray(pixels, np.float32))


def clip_to_unit(unit: NDArray[np.float32]) -> NDArray[np.float32]:
    """``unit`` in ``[0, 1]``: NaN and -inf become 0, +inf 1, the rest is clipped.

    Finiteness is checked first, because :func:`numpy.nan_to_num` copies and costs more
    than the check on the usual, finite input.

    Examples
    --------
    >>> clip_to_unit(np.array([np.nan, -np.inf, np.inf, 0.5, 2.0], np.float32)).tolist()
    [0.0, 0.0, 1.0, 0.5, 1.0]
    """
    if not np.isfinite(unit).all():
        unit = np.nan_to_num(unit, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(unit, 0.0, 1.0)


def image_features(pixels: NDArray[Any]) -> NDArray[np.float64]:
    """The :data:`FEATURES` of one image, in that order.

    Examples
    --------
    >>> flat = np.full((100, 80), 128, np.uint8)
    >>> [round(float(v), 3) for v in image_features(flat)]
    [0.502, 0.0, 0.0, 0.0]
    """
    unit = _unit(np.asarray(pixels))
    small = cv2.resize(unit, (_PROFILE_SIDE, _PROFILE_SIDE), interpolation=cv2.INTER_AREA)
    cell = _PROFILE_SIDE // _GRID
    cells = small.reshape(_GRID, cell, _GRID, cell).transpose(0, 2, 1, 3).reshape(_GRID**2, -1)
    # Every image a model sees passes here, so this is on the prediction path: the 10th
    # and 90th percentiles of each cell from one sort (numpy.quantile's "linear" rule),
    # about ten times cheaper than numpy.quantile's own machinery at this size.
    ordered = np.sort(cells, axis=1)
    spread = _sorted_quantile(ordered, 0.9) - _sorted_quantile(ordered, 0.1)
    saturated = np.count_nonzero((small <= 0.5 / 255) | (small >= 254.5 / 255)) / small.size
    mean, std = cv2.meanStdDev(small)  # one pass, in double precision
    return np.array([mean[0, 0], std[0, 0], float(spread.mean()), saturated], np.float64)


def _sorted_quantile(ordered: NDArray[Any], q: float) -> NDArray[Any]:
    """The ``q`` quantile of each row of row-sorted ``ordered``, interpolated linearly.

    The rule of :func:`numpy.quantile`'s default ``method="linear"``.

    Examples
    --------
    >>> rows = np.sort(np.random.default_rng(0).random((3, 64), dtype=np.float32), axis=1)
    >>> bool(np.allclose(_sorted_quantile(rows, 0.1), np.quantile(rows, 0.1, axis=1)))
    True
    """
    position = (ordered.shape[1] - 1) * q
    below = int(position)
    above = min(below + 1, ordered.shape[1] - 1)
    weight = np.float32(position - below)
    low: NDArray[Any] = ordered[:, below]
    quantile: NDArray[Any] = low + (ordered[:, above] - low) * weight
    return quantile


def _summary(described: Mapping[str, Any]) -> str:
    name = str(described.get("name", "an unnamed preprocessor"))
    shown = ", ".join(
        f"{key}={value}"
        for key, value in sorted(described.items())
        if key not in ("name", "version") and key not in _NEUTRAL_PARAMETERS
    )
    return f"{name} ({shown})" if shown else name


def preprocessing_differences(trained: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """How the preprocessing ``given`` differs from the one a model was ``trained`` on.

    Both are descriptions as preprocessors record them in ``meta["preprocessing"]``.
    Entries that do not change what a model sees (``output_size``, ``output_dtype``) are
    not compared.

    Returns
    -------
    list of str
        One ``"name: trained → given"`` line per difference; empty when they match.

    Examples
    --------
    >>> preprocessing_differences({"name": "gaussian-clahe", "clip_limit": 2.0},
    ...                           {"name": "gaussian-clahe", "clip_limit": 4.0})
    ['clip_limit: 2.0 (trained) vs 4.0']
    """
    missing = object()
    differences = []
    for key in sorted(set(trained) | set(given)):
        if key in _NEUTRAL_PARAMETERS:
            continue
        before, after = trained.get(key, missing), given.get(key, missing)
        if before != after:
            shown_before = "unset" if before is missing else repr(before)
            shown_after = "unset" if after is missing else repr(after)
            differences.append(f"{key}: {shown_before} (trained) vs {shown_after}")
    return differences


def describe_preprocessing(described: Mapping[str, Any] | None) -> str:
    """A short phrase naming a recorded preprocessing, for messages."""
    if described is None:
        return "images that recorded no preprocessing"
    return f"{_summary(described)} output"


def _quantile_triple(value: Any) -> tuple[float, float, float]:
    low, middle, high = (float(v) for v in value)
    return low, middle, high


def _percentile_map(value: Any) -> dict[str, tuple[float, float, float]]:
    return {str(key): _quantile_triple(values) for key, values in dict(value).items()}


@frozen
class InputProfile:
    """Percentiles of the intensity statistics of a model's training images.

    Parameters
    ----------
    n_images
        How many images it summarises.
    percentiles
        ``{feature: (5th, 50th, 95th percentile)}`` for each of :data:`FEATURES`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> images = [rng.integers(0, 256, (64, 64), dtype=np.uint8) for _ in range(30)]
    >>> profile = InputProfile.of([image_features(image) for image in images])
    >>> profile.mismatch([image_features(image) for image in images]) is None
    True
    >>> dark = [image // 4 for image in images]
    >>> print(profile.mismatch([image_features(image) for image in dark]))
    30 of 30 images have a brightness below the training range ...
    """

    n_images: int
    percentiles: Mapping[str, tuple[float, float, float]] = field(converter=_percentile_map)

    @classmethod
    def of(cls, rows: Sequence[NDArray[np.float64]]) -> InputProfile:
        """Summarise the :func:`image_features` rows of the training images."""
        table = np.asarray(rows, np.float64).reshape(len(rows), len(FEATURES))
        found = np.quantile(table, _QUANTILES, axis=0)
        return cls(
            n_images=len(rows),
            percentiles={
                name: (float(found[0, j]), float(found[1, j]), float(found[2, j]))
                for j, name in enumerate(FEATURES)
            },
        )

    def to_dict(self) -> dict[str, Any]:
        """As plain JSON data (what saved models hold)."""
        return {
            "n_images": self.n_images,
            "percentiles": {name: list(values) for name, values in self.percentiles.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, source: str) -> InputProfile:
        """Read :meth:`to_dict`'s output back.

        Raises
        ------
        ModelFormatError
            Naming ``source``, if ``data`` is not such a document.
        """
        try:
            profile = cls(n_images=int(data["n_images"]), percentiles=data["percentiles"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(
                f"{source}: the recorded input profile is malformed ({exc!r}); save the model again"
            ) from None
        if set(profile.percentiles) != set(FEATURES):
            raise ModelFormatError(
                f"{source}: the recorded input profile has statistics "
                f"{sorted(profile.percentiles)}, expected {sorted(FEATURES)}"
            )
        return profile

    def mismatch(self, rows: Sequence[NDArray[np.float64]]) -> str | None:
        """Say how images differ from the training images, or ``None`` if they do not.

        Parameters
        ----------
        rows
            The :func:`image_features` of the images, one row each. Fewer than
            :data:`MIN_IMAGES` are never judged.
        """
        count = len(rows)
        if count < MIN_IMAGES:
            return None
        table = np.asarray(rows, np.float64).reshape(count, len(FEATURES))
        worst: tuple[float, str] | None = None
        for j, name in enumerate(FEATURES):
            low, middle, high = self.percentiles[name]
            values = table[:, j]
            for beyond, side in (
                (int(np.count_nonzero(values < low - _TOLERANCE)), "below"),
                (int(np.count_nonzero(values > high + _TOLERANCE)), "above"),
            ):
                share = beyond / count
                if share >= MISMATCH_SHARE and (worst is None or share > worst[0]):
                    worst = (
                        share,
                        f"{beyond} of {count} images have a {name} {side} the training "
                        f"range {low:.3g}-{high:.3g} (their median {np.median(values):.3g}, "
                        f"the training images' {middle:.3g})",
                    )
        return None if worst is None else worst[1]


class InputRecorder:
    """What a model is given: each image's statistics and the preprocessing it records.

    Call :meth:`see` for every image (at training time, then :meth:`profile`; at
    prediction time, then :meth:`mismatch`).
    """

    def __init__(self) -> None:
        self.features: list[NDArray[np.float64]] = []
        self.first_preprocessing: Mapping[str, Any] | None = None
        # Each distinct recorded preprocessing, with how many images recorded it: a few
        # entries however many images pass (holding every record would hold their dicts).
        self._described: list[tuple[Mapping[str, Any] | None, int]] = []
        self._count = 0

    def see(self, xray: XRay) -> None:
        """Record one image."""
        self.features.append(image_features(xray.pixels))
        described = xray.meta.get("preprocessing")
        described = described if isinstance(described, Mapping) else None
        if not self._count:
            self.first_preprocessing = described
        self._count += 1
        for index, (seen, count) in enumerate(self._described):
            if seen == described:
                self._described[index] = (seen, count + 1)
                return
        self._described.append((described, 1))

    def profile(self) -> InputProfile | None:
        """The :class:`InputProfile` of the images seen (``None`` if none were)."""
        return InputProfile.of(self.features) if self.features else None

    def mismatch(
        self, trained: Mapping[str, Any] | None, profile: InputProfile | None, what: str
    ) -> str | None:
        """Why the images seen do not look like ``what``'s training input, or ``None``.

        Parameters
        ----------
        trained
            The preprocessing the training images recorded (``None``: none or unknown).
        profile
            The training images' :class:`InputProfile` (``None``: unknown).
        what
            How the message names the model.
        """
        reasons = []
        if trained is not None:
            other = [
                (described, count)
                for described, count in self._described
                if described is not None and preprocessing_differences(trained, described)
            ]
            if other:
                differences = "; ".join(preprocessing_differences(trained, other[0][0]))
                reasons.append(
                    f"{sum(count for _, count in other)} of {self._count} images record another "
                    f"preprocessing ({differences})"
                )
        if not reasons and profile is not None:
            unlike = profile.mismatch(self.features)
            if unlike is not None:
                reasons.append(unlike)
        if not reasons:
            return None
        return (
            f"these images do not look like the input {what} was trained on: {reasons[0]}. "
            f"It was trained on {describe_preprocessing(trained)}; prepare its input the "
            "same way (a Pipeline saved with it does), or expect worse predictions, "
            "silently"
        )


def profile_of(xrays: Iterable[XRay]) -> InputProfile | None:
    """The :class:`InputProfile` of ``xrays`` (``None`` for none)."""
    recorder = InputRecorder()
    for xray in xrays:
        recorder.see(xray)
    return recorder.profile()


def recorded_preprocessor(component: object) -> Preprocessor | None:
    """The preprocessor a fitted classifier or detector was trained behind, rebuilt.

    Built by name through the plugin registry from the component's ``preprocessing_``
    record, with ``output_size=None`` where it has one: the input keeps its geometry (the
    model resizes to its own input size anyway) and gets the intensities of the training
    input. ``covidcxr detect`` applies it to a saved detector's input unless told
    otherwise.

    Returns
    -------
    Preprocessor or None
        ``None`` when the component recorded no preprocessing.

    Raises
    ------
    ConfigurationError
        If the recorded preprocessor cannot be rebuilt as it was (another version of it is
        installed, or it is not registered), or the component was trained on lung crops,
        which only its pipeline's lung stage can make.

    Examples
    --------
    >>> from covidcxr.detect import LocalDetector
    >>> detector = LocalDetector.load("local-detector.zip")  # doctest: +SKIP
    >>> recorded_preprocessor(detector)  # doctest: +SKIP
    GaussianClahePreprocessor(kernel_size=5, sigma=0.0, clip_limit=2.0, ...)
    """
    from covidcxr.plugins import create_preprocessor  # noqa: PLC0415 - plugins load lazily

    if not isinstance(component, RecordsPreprocessing):
        return None
    recorded = component.preprocessing_
    if not isinstance(recorded, Mapping) or not isinstance(recorded.get("name"), str):
        return None
    if "lung_crop" in recorded:  # recorded by a pipeline's lung stage (covidcxr.lungs)
        raise ConfigurationError(
            f"{type(component).__name__} was trained on lung crops, which need the lung "
            "segmenter of the pipeline it came from: use the whole "
            "model (covidcxr detect --model MODEL_DIR or a shipped model's name; "
            "Pipeline.predict in Python), or prepare its input yourself"
        )
    options = {key: value for key, value in recorded.items() if key not in ("name", "version")}
    if "output_size" in options:
        # ``covidcxr detect`` draws and reports the boxes on what this returns, in the
        # radiograph's own pixels: no resize. A recorded ``working_size`` is kept, not
        # dropped: without it a large film would be blurred and equalised at its own
        # scale, sharper than the training input, which is what working_size prevents
        # (gaussian-clahe then scales the enhanced image back to the input's size).
        options["output_size"] = None
    rebuilt: object = create_preprocessor(recorded["name"], **options)
    differences = (
        preprocessing_differences(recorded, rebuilt.describe())
        if isinstance(rebuilt, DescribedPreprocessor)
        else ["it does not describe itself"]
    )
    if differences or not isinstance(rebuilt, Preprocessor):
        raise ConfigurationError(
            f"{type(component).__name__} was trained on {describe_preprocessing(recorded)}, "
            f"which this installation cannot rebuild as it was ({'; '.join(differences)}); "
            "prepare its input yourself, or train it again"
        )
    return rebuilt
