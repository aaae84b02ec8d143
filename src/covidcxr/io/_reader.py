"""One reader for every radiograph format: sniff, check, decode."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from attrs import frozen
from numpy.typing import NDArray

from covidcxr._values import is_whole
from covidcxr.errors import ConfigurationError, InvalidImageError
from covidcxr.io._dicom import decode_dicom
from covidcxr.io._raster import decode_raster
from covidcxr.io._sniff import ImageFormat, jpeg_size, png_size, sniff_format, webp_size
from covidcxr.labels import canonical_label
from covidcxr.records import XRay

__all__ = [
    "MAX_PIXELS",
    "MIN_SIDE",
    "DecodedImage",
    "check_limits",
    "decode_image",
    "read_image",
    "read_xray",
]

#: Images declaring more pixels than this are refused before decoding (decompression
#: bombs). 64 megapixels is four times the largest digital radiography detector.
MAX_PIXELS: Final = 64_000_000
#: Images with a side shorter than this are too small to be a radiograph.
MIN_SIDE: Final = 32

_RASTER_SIZES: Final = {"png": png_size, "jpeg": jpeg_size, "webp": webp_size}

PathOrBytes = str | os.PathLike[str] | bytes | bytearray | memoryview


@frozen
class DecodedImage:
    """Decoded pixels with what the decoder learnt about them.

    Parameters
    ----------
    pixels
        2-D ``uint8`` or ``uint16``.
    format
        ``"png"``, ``"jpeg"``, ``"webp"`` or ``"dicom"``.
    tags
        Identifying DICOM tags (empty for PNG and JPEG).
    """

    pixels: NDArray[Any]
    format: ImageFormat
    tags: Mapping[str, str]


def check_limits(min_side: object, max_pixels: object) -> None:
    """Refuse size limits that are not whole numbers of at least 1.

    Raises
    ------
    ConfigurationError
        Naming the limit and the value given (a string from a command line, a float, 0).

    Examples
    --------
    >>> check_limits(32, "abc")
    Traceback (most recent call last):
    ...
    covidcxr.errors.ConfigurationError: max_pixels must be a whole number of at least 1, got 'abc'
    """
    for name, value in (("min_side", min_side), ("max_pixels", max_pixels)):
        if not is_whole(value) or value < 1:  # type: ignore[operator]
            raise ConfigurationError(f"{name} must be a whole number of at least 1, got {value!r}")


def decode_image(
    data: bytes,
    source: str | None = None,
    *,
    min_side: int = MIN_SIDE,
    max_pixels: int = MAX_PIXELS,
) -> DecodedImage:
    """Decode the bytes of a PNG, JPEG, WebP or DICOM file, checking them first.

    Parameters
    ----------
    data
        The whole file.
    source
        Where it came from; every error message names it.
    min_side, max_pixels
        Size limits: shorter sides are not a radiograph, more pixels is a bomb.

    Raises
    ------
    InvalidImageError
        For empty, truncated, mislabelled, too small, too large or corrupt images.
    ConfigurationError
        For size limits that are not whole numbers of at least 1.

    Examples
    --------
    >>> import cv2, numpy as np
    >>> png = cv2.imencode(".png", np.zeros((64, 48), np.uint8))[1].tobytes()
    >>> decoded = decode_image(png, "phantom.png")
    >>> decoded.format, decoded.pixels.shape
    ('png', (64, 48))
    """
    check_limits(min_side, max_pixels)
    image_format = sniff_format(data, source)
    tags: Mapping[str, str] = {}
    if image_format == "dicom":
        pixels, tags = decode_dicom(data, source, max_pixels)
    else:
        height, width = _RASTER_SIZES[image_format](data, source)
        if height * width > max_pixels:
            raise InvalidImageError(
                f"the image declares {width}x{height} = {width * height:,} pixels, more than "
                f"the limit of {max_pixels:,} (a decompression bomb?); raise max_pixels if "
                "it is genuine",
                source,
            )
        if min(height, width) < min_side:
            raise InvalidImageError(_too_small(width, height, min_side), source)
        pixels = decode_raster(data, source)
    height, width = pixels.shape
    if min(height, width) < min_side:
        raise InvalidImageError(_too_small(width, height, min_side), source)
    return DecodedImage(pixels=pixels, format=image_format, tags=tags)


def _too_small(width: int, height: int, min_side: int) -> str:
    return (
        f"the image is {width}x{height} pixels, too small to be a radiograph "
        f"(the shorter side must be at least {min_side})"
    )


def _read_bytes(path_or_bytes: PathOrBytes, source: str | None) -> tuple[bytes, str | None]:
    if isinstance(path_or_bytes, bytes | bytearray | memoryview):
        return bytes(path_or_bytes), source
    path = Path(path_or_bytes)
    where = source if source is not None else str(path)
    try:
        return path.read_bytes(), where
    except FileNotFoundError:
        raise InvalidImageError("no such file", where) from None
    except IsADirectoryError:
        raise InvalidImageError("is a directory, not an image file", where) from None
    except OSError as exc:
        raise InvalidImageError(f"could not read the file: {exc.strerror or exc}", where) from exc


def read_image(
    path_or_bytes: PathOrBytes,
    *,
    source: str | None = None,
    min_side: int = MIN_SIDE,
    max_pixels: int = MAX_PIXELS,
) -> NDArray[Any]:
    """Read a radiograph's pixels from a PNG, JPEG, WebP or DICOM file or its bytes.

    The format is recognised by the content's magic bytes, never by the file name.

    Parameters
    ----------
    path_or_bytes
        A file path, or the file's content.
    source
        The name to use in error messages (defaults to the path).
    min_side
        The shortest side a radiograph may have, in pixels.
    max_pixels
        The largest number of pixels an image may declare; larger ones are refused before
        decoding.

    Returns
    -------
    numpy.ndarray
        2-D ``uint8`` (8-bit files) or ``uint16`` (16-bit PNG, DICOM) grayscale pixels.

    Raises
    ------
    InvalidImageError
        If the file is missing, empty, truncated, not an image, too small or too large,
        naming the file.
    ConfigurationError
        For size limits that are not whole numbers of at least 1.

    Examples
    --------
    >>> import cv2, numpy as np
    >>> png = cv2.imencode(".png", np.full((64, 64), 7, np.uint16))[1].tobytes()
    >>> pixels = read_image(png)
    >>> pixels.dtype, pixels.shape, int(pixels[0, 0])
    (dtype('uint16'), (64, 64), 7)
    >>> read_image(b"not an image", source="notes.png")
    Traceback (most recent call last):
    ...
    covidcxr.errors.InvalidImageError: notes.png: not a PNG, JPEG, WebP or DICOM file ...
    """
    data, where = _read_bytes(path_or_bytes, source)
    return decode_image(data, where, min_side=min_side, max_pixels=max_pixels).pixels


def read_xray(
    path: str | os.PathLike[str],
    *,
    label: str | None = None,
    patient_id: str | None = None,
    id: str | None = None,
    meta: Mapping[str, Any] | None = None,
    label_aliases: Mapping[str, str] | None = None,
    min_side: int = MIN_SIDE,
    max_pixels: int = MAX_PIXELS,
) -> XRay:
    """Read one radiograph file into an :class:`~covidcxr.XRay`.

    Parameters
    ----------
    path
        A PNG, JPEG, WebP or DICOM file.
    label
        The class, in any spelling :func:`covidcxr.labels.canonical_label` understands.
    patient_id
        The patient; for DICOM files it defaults to the ``PatientID`` tag.
    id
        The record's id; defaults to the path.
    meta
        Extra metadata; ``"path"`` and ``"format"`` (and DICOM tags) are added.
    label_aliases
        Extra spellings for ``label``, as for :func:`covidcxr.labels.canonical_label`.
    min_side, max_pixels
        As for :func:`~covidcxr.io.read_image`.

    Raises
    ------
    InvalidImageError
        If the file is not a usable radiograph.
    UnknownLabelError
        If ``label`` is not a known spelling.

    Examples
    --------
    >>> import cv2, numpy as np, pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = cv2.imwrite(str(folder / "a.png"), np.zeros((64, 64), np.uint8))
    >>> xray = read_xray(folder / "a.png", label="COVID")
    >>> xray.label, xray.meta["format"]
    ('covid-19', 'png')
    """
    data, where = _read_bytes(path, None)
    decoded = decode_image(data, where, min_side=min_side, max_pixels=max_pixels)
    record_meta: dict[str, Any] = {"path": str(path), "format": decoded.format, **decoded.tags}
    record_meta.update(meta or {})
    if patient_id is None:
        patient_id = decoded.tags.get("dicom_patient_id")
    return XRay(
        decoded.pixels,
        id=str(path) if id is None else id,
        label=None if label is None else canonical_label(label, label_aliases),
        patient_id=patient_id,
        meta=record_meta,
    )
