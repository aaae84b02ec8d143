"""The default preprocessor: Gaussian blur, then CLAHE, then resize to the model size.

The steps and their order follow the published method:

1. **16 → 8 bits.** CLAHE works on 8-bit histograms. 16-bit input (DICOM, 16-bit PNG) is
   mapped by a *percentile window*: the values at the lower and upper percentiles (0.5 and
   99.5 by default) become the grey levels ``window_levels`` (0 and 255 by default),
   and every value maps on the same straight line, clipped to 0..255 (so with levels 0
   and 228, a burnt-in label above the window stays brighter than the lungs). Percentiles,
   not the minimum and maximum, because collimator edges, burnt-in labels and dead pixels
   put a few values far outside the anatomy's range. 8-bit input is left as it is: it has
   already been windowed by whoever wrote it. So is 8-bit content in a 16-bit container
   (every value a multiple of 257 or of 256, as converters write an 8-bit image out as
   16 bits, or none above 255): it maps back to those 8-bit values exactly
   (:func:`exact_uint8`). Windowed by percentiles instead, the same radiograph came out
   with more contrast than the training radiographs have, and 10 % of 870 COVID-QU-Ex
   Test radiographs got another label from the shipped model (accuracy 0.867 as 8-bit,
   0.820 as 16-bit; ``benchmarks/bench_bit_depth.py``). Genuine 16-bit input paid that
   price too: the default window stretches the 99.5th percentile to 255, where
   COVID-QU-Ex's 8-bit radiographs have it near 228 (median). A model trained on 8-bit
   radiographs should map the window onto the grey levels its training radiographs have
   at those percentiles (:func:`window_levels_of`; the shipped models use 0 and 228).
2. **Working scale**, optional (``working_size``, off by default): the image is scaled,
   keeping its aspect, until its longer side is ``working_size`` pixels. A 5x5 blur is a
   fixed number of pixels, so on a 2,500 px film it blurs a tenth as much anatomy as on
   the 256 px radiographs a model may have been trained on, and the model then sees
   sharper images than it learned from: the same radiograph enlarged from 256 to 1,024 px
   went from normal (0.85) to COVID-19 (0.85) with the shipped model before this step
   existed. Set it to the training radiographs' size (the shipped models use 256) and
   every radiograph is enhanced at that scale, whatever its own size (also faster).
3. **Gaussian blur** (5x5, sigma derived from the kernel size by OpenCV by default).
4. **CLAHE** (contrast-limited adaptive histogram equalisation; clip limit 2.0, 8x8 tiles).
   Blur comes *before* CLAHE because CLAHE raises local contrast wherever it is low, and
   in the flat regions of a radiograph most of the local variation is noise: equalising
   first would amplify the noise and then blur only part of it away. Denoise, then
   enhance. ``clahe=False`` leaves this step out.
5. **Gamma correction**, optional (``gamma``, off by default): ``255 * (v / 255) ** gamma``
   through a lookup table. Rahman et al. (2021, *Comput. Biol. Med.* 132:104319) found
   gamma correction the best of five enhancements for COVID-19 CXR classification; with
   ``clahe=False`` it replaces CLAHE, otherwise it follows it.
6. **Resize** to ``output_size`` (stretch, pad or centre-crop; see
   :mod:`covidcxr.preprocess._geometry`). Boxes and every ``*_mask`` array in ``meta`` go
   through the same geometric transform (masks with nearest-neighbour interpolation), and
   ``meta["transform"]`` records it (from the input's own pixels: with a working scale the
   enhanced image is scaled to the recorded transform's scaled size and padded or cropped
   at its offsets, so pixels, boxes and masks stay in register).
7. **dtype**: ``float32`` scaled to ``[0, 1]``, or ``uint8``.

Same input and parameters give byte-identical output.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from typing import Any, Final

import attrs
import cv2
import numpy as np
from attrs import field, frozen
from numpy.typing import NDArray

from covidcxr._values import is_real, is_whole
from covidcxr.errors import ConfigurationError, InvalidImageError
from covidcxr.preprocess._geometry import (
    RESIZE_MODES,
    ResizeTransform,
    fit_resize,
    resize_image,
    transform_boxes,
)
from covidcxr.preprocess._pixels import UINT8_OVER_255, expand_pixels
from covidcxr.records import XRay

__all__ = [
    "MASK_SUFFIX",
    "OUTPUT_DTYPES",
    "GaussianClahePreprocessor",
    "IdentityPreprocessor",
    "exact_uint8",
    "to_uint8",
    "window_levels_of",
]

OUTPUT_DTYPES: Final[tuple[str, ...]] = ("float32", "uint8")
#: ``meta`` entries whose key ends with this, holding a 2-D array, are transformed as masks.
MASK_SUFFIX: Final = "_mask"
# Bump when the algorithm changes, so caches keyed by the parameters are invalidated.
# It is also in every output's description, which a model compares with its training
# input's (a mismatch warns): a change that leaves every 8-bit input's output as it was
# bumps only _CACHE_REVISION, so that models trained before it do not warn.
_ALGORITHM_VERSION: Final = 2
# 1: 16-bit containers of 8-bit content map to those 8-bit values exactly.
# 2: at a working scale, pad and crop place the pixels at the recorded transform's offsets
#    (they could sit one output pixel away from the boxes and masks); stretch unchanged.
_CACHE_REVISION: Final = 2


def exact_uint8(pixels: NDArray[Any]) -> NDArray[np.uint8] | None:
    """The 8-bit image a ``uint16`` array holds exactly, or ``None`` if it holds more.

    Converters write an 8-bit image out as 16 bits by multiplying by 257 (``0xAB`` becomes
    ``0xABAB``: ImageMagick, Pillow, OpenCV scaling) or by 256 (a shift), or leave the
    values as they were. Such an image has no more than 8 bits of information, and the
    8-bit image it came from is what a model trained on 8-bit radiographs should see.

    Parameters
    ----------
    pixels
        A ``uint16`` array (anything else gives ``None``).

    Examples
    --------
    >>> import numpy as np
    >>> eight = np.array([[0, 17, 255]], np.uint8)
    >>> exact_uint8(eight.astype(np.uint16) * 257).tolist()
    [[0, 17, 255]]
    >>> exact_uint8(eight.astype(np.uint16) << 8).tolist()
    [[0, 17, 255]]
    >>> exact_uint8(eight.astype(np.uint16)).dtype
    dtype('uint8')
    >>> exact_uint8(np.array([[0, 1000]], np.uint16)) is None
    True
    """
    if pixels.dtype != np.uint16:
        return None
    if int(pixels.max(initial=0)) <= 255:
        return pixels.astype(np.uint8)
    for divisor in (257, 256):
        if not np.any(pixels % np.uint16(divisor)):
            return (pixels // np.uint16(divisor)).astype(np.uint8)
    return None


def to_uint8(
    pixels: NDArray[Any],
    percentile_window: tuple[float, float] = (0.5, 99.5),
    levels: tuple[int, int] = (0, 255),
) -> NDArray[np.uint8]:
    """Map a radiograph to 8 bits: ``uint8`` unchanged, ``uint16`` by a percentile window.

    A ``uint16`` array that holds 8-bit content exactly (:func:`exact_uint8`) maps back to
    those 8-bit values instead.

    The window's ends are the smallest values whose cumulative share of pixels reaches
    each percentile; they map to the grey levels ``levels``, and every value on the same
    straight line, rounded, and clipped to ``[0, 255]``. Computed from a histogram, so it
    is exact, fast and deterministic.

    Parameters
    ----------
    pixels
        2-D ``uint8`` or ``uint16``.
    percentile_window
        ``(low, high)`` percentiles, ``0 <= low < high <= 100``.
    levels
        ``(low, high)`` grey levels the window's ends map to, ``0 <= low < high <= 255``:
        the levels a model's 8-bit training radiographs have at those percentiles
        (:func:`window_levels_of`), so that 16-bit input reaches it with the contrast
        it learned from.

    Raises
    ------
    InvalidImageError
        For other dtypes (``float32`` images have been preprocessed already).

    Examples
    --------
    >>> import numpy as np
    >>> ramp = np.arange(1000, 2024, dtype=np.uint16).reshape(32, 32)
    >>> out = to_uint8(ramp, (0.0, 100.0))
    >>> int(out.min()), int(out.max()), out.dtype
    (0, 255, dtype('uint8'))
    >>> int(to_uint8(ramp, (0.0, 100.0), levels=(0, 228)).max())
    228
    """
    _check_levels(levels)
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype != np.uint16:
        raise InvalidImageError(
            f"expected uint8 or uint16 pixels, got {pixels.dtype}; float32 images have "
            "already been preprocessed"
        )
    exact = exact_uint8(pixels)
    if exact is not None:
        return exact
    low, high = _window_ends(pixels, percentile_window, 65536)
    high = max(high, low + 1)
    first, last = levels
    ramp = first + (np.arange(65536) - low) * ((last - first) / (high - low))
    lut = np.clip(np.rint(ramp), 0, 255)
    mapped: NDArray[np.uint8] = lut.astype(np.uint8)[pixels]
    return mapped


def _window_ends(
    pixels: NDArray[Any], percentile_window: tuple[float, float], n_values: int
) -> tuple[int, int]:
    """The smallest values whose cumulative share of pixels reaches each percentile."""
    low_pct, high_pct = percentile_window
    cumulative = np.cumsum(np.bincount(pixels.ravel(), minlength=n_values))
    total = int(cumulative[-1])
    low = int(np.searchsorted(cumulative, max(1.0, total * low_pct / 100.0)))
    high = int(np.searchsorted(cumulative, max(1.0, total * high_pct / 100.0)))
    return low, high


def window_levels_of(
    radiographs: Iterable[XRay | NDArray[Any]],
    percentile_window: tuple[float, float] = (0.5, 99.5),
) -> tuple[int, int]:
    """The grey levels 8-bit radiographs have at the window's percentiles (medians).

    A model learns the contrast of its training radiographs. When those are 8-bit, the
    preprocessor's ``window_levels`` should be these levels, so that the window maps a
    16-bit radiograph (DICOM, 16-bit PNG) onto the same grey levels: COVID-QU-Ex's
    radiographs have their 0.5th and 99.5th percentiles at 0 and 228 (medians), and
    windowed onto 0 and 255 instead, the same radiographs changed label one time in ten
    (``benchmarks/bench_bit_depth.py``).

    Parameters
    ----------
    radiographs
        The training radiographs (:class:`~covidcxr.XRay` or arrays) as read, before
        preprocessing. Only 8-bit ones count (and 16-bit copies of 8-bit images, see
        :func:`exact_uint8`): the window sets the others' levels itself.
    percentile_window
        The preprocessor's ``percentile_window``.

    Returns
    -------
    tuple of int
        ``(low, high)``, the median over the radiographs of the grey level at each
        percentile, rounded, for ``GaussianClahePreprocessor(window_levels=...)``.

    Raises
    ------
    ConfigurationError
        If no radiograph is 8-bit, or the window is invalid.

    Examples
    --------
    >>> import numpy as np
    >>> dim = [np.tile(np.arange(0, 201, dtype=np.uint8), (201, 1)) for _ in range(3)]
    >>> window_levels_of(dim)
    (1, 199)
    """
    _check_window(None, None, percentile_window)
    ends: list[tuple[int, int]] = []
    for radiograph in radiographs:
        pixels = np.asarray(radiograph.pixels if isinstance(radiograph, XRay) else radiograph)
        eight = pixels if pixels.dtype == np.uint8 else exact_uint8(pixels)
        if eight is None or eight.ndim != 2:
            continue
        ends.append(_window_ends(eight, percentile_window, 256))
    if not ends:
        raise ConfigurationError(
            "window_levels_of needs 8-bit radiographs (the levels of 16-bit ones are what "
            "the window makes them); none was given"
        )
    low, high = (int(np.rint(np.median(column))) for column in zip(*ends, strict=True))
    if high <= low:
        raise ConfigurationError(
            f"these radiographs have one grey level ({low}) across the percentile window "
            f"{percentile_window}: they cannot set the window's levels"
        )
    return low, high


# Options often come from text (``-p KEY=VALUE``, a TOML file). ``int("abc")`` raises an
# untyped error, ``int(2.7)`` quietly gives 2 and ``bool("false")`` is true, so the
# converters below only normalise values of the right kind (NumPy scalars to Python
# ones, lists to tuples) and pass anything else on to the validators, which refuse it
# with a ConfigurationError that names the option.


def _as_int(value: Any) -> Any:
    return int(value) if is_whole(value) else value


def _as_float(value: Any) -> Any:
    return float(value) if is_real(value) else value


def _as_flag(value: Any) -> Any:
    return bool(value) if isinstance(value, np.bool_) else value


def _is_pair(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2


def _as_int_pair(value: Any) -> Any:
    return tuple(_as_int(item) for item in value) if _is_pair(value) else value


def _as_float_pair(value: Any) -> Any:
    return tuple(_as_float(item) for item in value) if _is_pair(value) else value


def _refuse(name: str, wanted: str, value: object) -> ConfigurationError:
    return ConfigurationError(f"{name} must be {wanted}, got {value!r}")


def _odd_positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not is_whole(value) or value < 1 or value % 2 == 0:
        raise _refuse(attribute.name, "a positive odd integer", value)


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not is_real(value) or not value >= 0:
        raise _refuse(attribute.name, "a number >= 0", value)


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not is_real(value) or not value > 0:
        raise _refuse(attribute.name, "a number > 0", value)


def _flag(instance: object, attribute: attrs.Attribute[bool], value: bool) -> None:
    if not isinstance(value, bool):
        raise _refuse(attribute.name, "true or false", value)


def _check_grid(
    instance: object, attribute: attrs.Attribute[tuple[int, int]], value: tuple[int, int]
) -> None:
    if not (_is_pair(value) and all(is_whole(n) and n >= 1 for n in value)):
        raise _refuse("tile_grid_size", "two positive integers", value)


def _check_output_size(
    instance: object, attribute: attrs.Attribute[Any], value: int | None
) -> None:
    if value is not None and (not is_whole(value) or value < 1):
        raise _refuse("output_size", "None or a whole number >= 1", value)


def _check_working_size(
    instance: GaussianClahePreprocessor, attribute: attrs.Attribute[Any], value: int | None
) -> None:
    if value is not None and (not is_whole(value) or value < 8):
        raise ConfigurationError(f"working_size must be None or an integer >= 8, got {value!r}")


def _one_of(choices: tuple[str, ...]) -> Any:
    def check(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in choices:
            raise ConfigurationError(
                f"{attribute.name} must be one of {list(choices)}, got {value!r}"
            )

    return check


def _check_levels(value: object) -> None:
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 2
        or not all(is_whole(item) for item in value)
    ):
        raise _refuse("window_levels", "two grey levels (low, high)", value)
    low, high = value
    if not 0 <= low < high <= 255:
        raise ConfigurationError(
            f"window_levels must satisfy 0 <= low < high <= 255, got {(low, high)}"
        )


def _check_window_levels(instance: object, attribute: object, value: object) -> None:
    _check_levels(value)


def _check_window(instance: object, attribute: object, value: tuple[float, float]) -> None:
    if not (_is_pair(value) and all(is_real(item) for item in value)):
        raise _refuse("percentile_window", "two percentiles (low, high)", value)
    low, high = value
    if not 0.0 <= low < high <= 100.0:
        raise ConfigurationError(
            f"percentile_window must satisfy 0 <= low < high <= 100, got {value}"
        )


@frozen
class GaussianClahePreprocessor:
    """Grayscale → Gaussian blur → CLAHE → resize → dtype, as the published method.

    Parameters
    ----------
    kernel_size
        Side of the square Gaussian kernel, odd (the method uses 5).
    sigma
        Gaussian standard deviation; ``0`` lets OpenCV derive it from the kernel size
        (``0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8``, 1.1 for a 5x5 kernel).
    clip_limit
        CLAHE contrast limit (OpenCV's ``clipLimit``).
    tile_grid_size
        CLAHE grid, ``(columns, rows)`` (OpenCV's ``tileGridSize``).
    output_size
        Side of the square output, or ``None`` to keep the input size.
    resize_mode
        ``"stretch"``, ``"pad"`` or ``"crop"``: see
        :func:`covidcxr.preprocess.fit_resize`.
    output_dtype
        ``"float32"`` (scaled to ``[0, 1]``) or ``"uint8"``.
    percentile_window
        The ``(low, high)`` percentiles that map 16-bit input to 8 bits.
    window_levels
        The ``(low, high)`` grey levels the window's percentiles map to (``(0, 255)`` by
        default). For a model trained on 8-bit radiographs, the levels those have at the
        percentiles (:func:`~covidcxr.preprocess.window_levels_of`; COVID-QU-Ex: 0 and
        228), so that 16-bit input reaches it with the contrast it learned from. 8-bit
        input is not windowed, so this changes nothing for it.
    clahe
        Apply CLAHE (the published method does).
    gamma
        Gamma correction after CLAHE, ``255 * (v / 255) ** gamma``; ``1.0`` (the default)
        leaves the image as it is, below 1 brightens, above 1 darkens.
    working_size
        Scale each radiograph so that its longer side has this many pixels before the
        blur and CLAHE (area interpolation to shrink, cubic to enlarge), so that they act
        at one scale whatever the input's size; ``None`` (the default, the published
        method) enhances at the input's own size. With ``output_size=None`` the enhanced
        image is scaled back to the input's size: the intensities of a model's training
        input in the radiograph's own pixels (what
        :func:`~covidcxr.preprocess.recorded_preprocessor` rebuilds for ``covidcxr
        detect``). Parameters left at their defaults (``window_levels``, ``clahe``,
        ``gamma``, ``working_size``) are not written into :meth:`describe`, so models
        saved before they existed still match.

    Raises
    ------
    ConfigurationError
        For an invalid parameter, naming it.

    Examples
    --------
    >>> import numpy as np
    >>> from covidcxr import Box, XRay
    >>> xray = XRay(np.zeros((64, 128), np.uint8), id="a", boxes=[Box(64, 0, 64, 32)])
    >>> out = GaussianClahePreprocessor(output_size=32, resize_mode="pad")(xray)
    >>> out.pixels.shape, out.pixels.dtype, out.boxes
    ((32, 32), dtype('float32'), (Box(x=16.0, y=8.0, width=16.0, height=8.0),))
    >>> out.meta["transform"].scale_x
    0.25
    """

    kernel_size: int = field(default=5, converter=_as_int, validator=_odd_positive)
    sigma: float = field(default=0.0, converter=_as_float, validator=_non_negative)
    clip_limit: float = field(default=2.0, converter=_as_float, validator=_positive)
    tile_grid_size: tuple[int, int] = field(
        default=(8, 8),
        converter=_as_int_pair,
        validator=_check_grid,
    )
    output_size: int | None = field(default=224, converter=_as_int, validator=_check_output_size)
    resize_mode: str = field(default="stretch", validator=_one_of(RESIZE_MODES))
    output_dtype: str = field(default="float32", validator=_one_of(OUTPUT_DTYPES))
    percentile_window: tuple[float, float] = field(
        default=(0.5, 99.5),
        converter=_as_float_pair,
        validator=_check_window,
    )
    window_levels: tuple[int, int] = field(
        default=(0, 255),
        converter=_as_int_pair,
        validator=_check_window_levels,
    )
    clahe: bool = field(default=True, converter=_as_flag, validator=_flag)
    gamma: float = field(default=1.0, converter=_as_float, validator=_positive)
    working_size: int | None = field(default=None, converter=_as_int, validator=_check_working_size)

    def cache_token(self) -> str:
        """A string that changes whenever the output for a given input could change.

        It holds the parameters, the algorithm version and the OpenCV version, and keys the
        batch runner's on-disk cache.
        """
        params = _parameters(self)
        payload = {
            "name": "gaussian-clahe",
            "version": _ALGORITHM_VERSION,
            "revision": _CACHE_REVISION,
            "params": params,
        }
        return f"{json.dumps(payload, sort_keys=True)}|opencv-{cv2.__version__}"

    def describe(self) -> dict[str, Any]:
        """The preprocessing parameters as plain JSON data.

        Every output records them in ``meta["preprocessing"]``, so a model trained on the
        output (see :meth:`covidcxr.VGG19Classifier.save`) can say how its input
        was prepared.

        Examples
        --------
        >>> GaussianClahePreprocessor(output_size=64).describe()["clip_limit"]
        2.0
        """
        described: dict[str, Any] = _plain_copy(_description(self))
        return described

    def enhance(self, pixels: NDArray[Any]) -> NDArray[np.uint8]:
        """The intensity steps: to 8 bits, working scale, blur, CLAHE, gamma (``uint8`` out).

        The output has the input's shape unless :attr:`working_size` is set; then it has
        the working scale's (see :meth:`working_shape`).
        """
        image = to_uint8(pixels, self.percentile_window, self.window_levels)
        working = self.working_shape(image.shape[:2])
        if working != image.shape[:2]:
            shrinking = working[0] * working[1] < image.shape[0] * image.shape[1]
            interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
            image = np.asarray(
                cv2.resize(image, (working[1], working[0]), interpolation=interpolation),
                dtype=np.uint8,
            )
        size = (self.kernel_size, self.kernel_size)
        enhanced = cv2.GaussianBlur(image, size, sigmaX=self.sigma, sigmaY=self.sigma)
        if self.clahe:
            clahe = cv2.createCLAHE(clipLimit=self.clip_limit, tileGridSize=self.tile_grid_size)
            enhanced = clahe.apply(enhanced)
        if self.gamma != 1.0:
            enhanced = cv2.LUT(enhanced, _gamma_table(self.gamma))
        return np.asarray(enhanced, dtype=np.uint8)

    def working_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """``(height, width)`` at which an image of ``shape`` is enhanced.

        Examples
        --------
        >>> GaussianClahePreprocessor(output_size=64, working_size=256).working_shape((3000, 2500))
        (256, 213)
        """
        if self.working_size is None:
            return shape
        height, width = shape
        factor = self.working_size / max(height, width)
        return max(1, round(height * factor)), max(1, round(width * factor))

    def transform_for(self, shape: tuple[int, int]) -> ResizeTransform:
        """The geometric transform this preprocessor applies to an image of ``shape``."""
        if self.output_size is None:
            return ResizeTransform.identity(shape)
        return fit_resize(shape, self.output_size, self.resize_mode)

    def __call__(self, xray: XRay) -> XRay:
        """Preprocess one radiograph (see the class description).

        Raises
        ------
        InvalidImageError
            If the pixels are already ``float32``, or a ``*_mask`` array in ``meta`` does
            not have the image's shape.
        """
        out, encoding = self.packed(xray)
        if encoding == "raw":
            return out
        return attrs.evolve(out, pixels=expand_pixels(encoding, np.asarray(out.pixels)))

    def packed(self, xray: XRay) -> tuple[XRay, str]:
        """Preprocess one radiograph, keeping float32 output as its ``uint8`` values.

        The result is the record :meth:`__call__` returns, except that with
        ``output_dtype="float32"`` its pixels are the ``uint8`` values the float32 pixels
        are scaled from, and the encoding says so (see
        :func:`covidcxr.preprocess.expand_pixels`, which restores them bit for
        bit). The batch runner uses this to send and cache a quarter of the bytes without
        ever making the float32 array.

        Returns
        -------
        tuple
            ``(record, encoding)``, the encoding being ``"u8/255"`` or ``"raw"``.

        Examples
        --------
        >>> import numpy as np
        >>> from covidcxr.preprocess import expand_pixels
        >>> xray = XRay(np.tile(np.arange(64, dtype=np.uint8), (64, 1)), id="a")
        >>> preprocessor = GaussianClahePreprocessor(output_size=32)
        >>> record, encoding = preprocessor.packed(xray)
        >>> encoding, record.pixels.dtype
        ('u8/255', dtype('uint8'))
        >>> bool((expand_pixels(encoding, record.pixels) == preprocessor(xray).pixels).all())
        True
        """
        if xray.pixels.dtype == np.float32:
            raise InvalidImageError(
                "pixels are float32, so the image has been preprocessed already", xray.id
            )
        transform = self.transform_for(xray.shape)
        enhanced = self.enhance(xray.pixels)
        resized = resize_image(enhanced, _pixel_transform(transform, enhanced.shape[:2]))
        meta = dict(xray.meta)
        for key, value in xray.meta.items():
            if key.endswith(MASK_SUFFIX) and isinstance(value, np.ndarray) and value.ndim == 2:
                if value.shape != xray.shape:
                    raise InvalidImageError(
                        f"meta[{key!r}] has shape {value.shape}, the image {xray.shape}; "
                        "masks must match the image they belong to",
                        xray.id,
                    )
                mask = resize_image(value, transform, nearest=True).view()
                mask.flags.writeable = False
                meta[key] = mask
        meta["transform"] = transform
        meta["preprocessing"] = self.describe()
        out = attrs.evolve(
            xray, pixels=resized, boxes=transform_boxes(xray.boxes, transform), meta=meta
        )
        return out, (UINT8_OVER_255 if self.output_dtype == "float32" else "raw")


def _pixel_transform(recorded: ResizeTransform, shape: tuple[int, int]) -> ResizeTransform:
    """The transform that brings an enhanced image of ``shape`` where ``recorded`` says.

    At a working scale the enhanced image is smaller or larger than the input, whose
    geometry ``recorded`` (and so the boxes and masks) describes. Fitting the enhanced
    image to the output on its own would round its scaled size and its padding or crop
    from its own sides, and put its pixels up to one output pixel away from the boxes
    and masks; it is scaled to the recorded scaled size instead and placed at the recorded
    offsets. In stretch mode (the shipped models') this is the transform fitted to the
    enhanced image, so that output is what it always was.
    """
    if shape == recorded.input_shape:
        return recorded
    (height, width), (new_height, new_width) = shape, recorded.resized_shape
    return ResizeTransform(
        new_width / width,
        new_height / height,
        recorded.offset_x,
        recorded.offset_y,
        shape,
        recorded.output_shape,
    )


@functools.lru_cache(maxsize=64)
def _description(preprocessor: GaussianClahePreprocessor) -> dict[str, Any]:
    # Every output carries the description: build it once per configuration (the
    # preprocessor is frozen and hashable), as plain JSON data, and hand each output its
    # own copy (see _plain_copy) so that no two records share a mutable dict.
    described: dict[str, Any] = json.loads(
        json.dumps(
            {"name": "gaussian-clahe", "version": _ALGORITHM_VERSION, **_parameters(preprocessor)}
        )
    )
    return described


#: Parameters added after models were first saved, with the value that leaves the output
#: as it was: at that value they are left out of descriptions and cache tokens, so older
#: models, caches and shipped models keep matching.
_ADDED_LATER: Final[dict[str, object]] = {
    "clahe": True,
    "gamma": 1.0,
    "working_size": None,
    "window_levels": (0, 255),
}
_UNSET: Final = object()


def _parameters(preprocessor: GaussianClahePreprocessor) -> dict[str, Any]:
    return attrs.asdict(
        preprocessor,
        filter=lambda attribute, value: _ADDED_LATER.get(attribute.name, _UNSET) != value,
    )


@functools.lru_cache(maxsize=16)
def _gamma_table(gamma: float) -> NDArray[np.uint8]:
    levels = np.arange(256, dtype=np.float64) / 255.0
    table = np.clip(np.rint(255.0 * levels**gamma), 0, 255).astype(np.uint8)
    table.flags.writeable = False
    return table


def _plain_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain_copy(item) for item in value]
    return value


@frozen
class IdentityPreprocessor:
    """A preprocessor that returns the radiograph unchanged (for comparisons and tests).

    Examples
    --------
    >>> import numpy as np
    >>> from covidcxr import XRay
    >>> xray = XRay(np.zeros((64, 64), np.uint8), id="a")
    >>> IdentityPreprocessor()(xray) is xray
    True
    """

    def cache_token(self) -> str:
        """A constant: the output depends on nothing but the input."""
        return "identity"

    def __call__(self, xray: XRay) -> XRay:
        """Return ``xray`` itself."""
        return xray
