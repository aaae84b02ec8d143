"""Decode DICOM radiographs with pydicom (the optional ``dicom`` extra).

The stored values of a DICOM image are not what a radiologist sees. This module applies,
in the order the standard's display pipeline does:

1. the **modality LUT** (``RescaleSlope`` / ``RescaleIntercept`` or a Modality LUT
   Sequence), giving modality units;
2. the **VOI LUT** (``WindowCenter`` / ``WindowWidth`` or a VOI LUT Sequence, the first one
   when several are given), giving the intended display window;
3. **MONOCHROME1 inversion**: in MONOCHROME1 images low values are *bright*, so they are
   inverted to the MONOCHROME2 convention every other format uses (air dark, bone bright).

The result is stretched linearly from its own ``[min, max]`` to the full ``uint16`` range,
which keeps the 16-bit dynamic range for the preprocessor's percentile window. Images stored
with 8 bits and no LUTs stay ``uint8``.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from covidcxr.errors import InvalidImageError

__all__ = ["decode_dicom"]

# DICOM tags copied to XRay.meta by read_xray (keyword -> meta key).
_META_KEYWORDS: dict[str, str] = {
    "PatientID": "dicom_patient_id",
    "StudyInstanceUID": "dicom_study_uid",
    "SeriesInstanceUID": "dicom_series_uid",
    "SOPInstanceUID": "dicom_sop_instance_uid",
    "Modality": "dicom_modality",
    "ViewPosition": "dicom_view_position",
    "PhotometricInterpretation": "dicom_photometric_interpretation",
}


def decode_dicom(
    data: bytes, source: str | None, max_pixels: int
) -> tuple[NDArray[Any], Mapping[str, str]]:
    """Decode one single-frame grayscale DICOM image.

    Parameters
    ----------
    data
        The whole file.
    source
        Where it came from, for error messages.
    max_pixels
        Refuse images declaring more pixels than this, before decoding them.

    Returns
    -------
    tuple
        The 2-D ``uint8`` or ``uint16`` pixels, and a few identifying tags as strings
        (``dicom_patient_id``, ``dicom_modality``, ...) for the record's metadata.

    Raises
    ------
    InvalidImageError
        For unreadable files, multi-frame or colour images, images over ``max_pixels``,
        compressed transfer syntaxes no installed pydicom plugin can decode, and display
        tags that would turn the image into something else than what was scanned (a
        ``RescaleSlope`` of 0 or NaN, a ``WindowWidth`` below 1, a VOI LUT shorter than its
        descriptor).
    ImportError
        If pydicom is not installed (``pip install covidcxr[dicom]``).
    """
    # pydicom is an optional extra, imported only when a DICOM file is met.
    try:
        import pydicom  # noqa: PLC0415
        from pydicom.errors import InvalidDicomError  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"{source or 'image'}: reading DICOM needs pydicom; install covidcxr[dicom]"
        ) from exc

    # pydicom's parser raises whatever it meets in a malformed file (struct.error,
    # NotImplementedError for an unknown VR, BytesLengthException, ValueError ...), and
    # parses elements lazily, when first read: every such error is a bad image, so that
    # on_error="skip" can skip the file and name it.
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError as exc:
        raise InvalidImageError(f"unreadable DICOM file: {exc}", source) from exc
    except Exception as exc:
        raise InvalidImageError(
            f"unreadable DICOM file: {type(exc).__name__}: {exc}", source
        ) from exc
    try:
        return _decode_dataset(dataset, source, max_pixels)
    except InvalidImageError:
        raise
    except Exception as exc:
        raise InvalidImageError(
            f"malformed DICOM file: {type(exc).__name__}: {exc}", source
        ) from exc


def _decode_dataset(
    dataset: Any, source: str | None, max_pixels: int
) -> tuple[NDArray[Any], Mapping[str, str]]:
    photometric = _check_dataset(dataset, source, max_pixels)
    try:
        stored = dataset.pixel_array
    except Exception as exc:  # pydicom's pixel handlers raise many types
        raise InvalidImageError(
            f"could not decode the DICOM pixel data (transfer syntax "
            f"{dataset.file_meta.get('TransferSyntaxUID', 'unknown')}): {exc}; compressed "
            "syntaxes may need pylibjpeg or gdcm installed",
            source,
        ) from exc
    if stored.ndim != 2:
        raise InvalidImageError(f"expected a 2-D image, got shape {stored.shape}", source)

    meta = {
        key: str(dataset.get(keyword))
        for keyword, key in _META_KEYWORDS.items()
        if dataset.get(keyword) not in (None, "")
    }
    return _display_values(stored, dataset, photometric, source), meta


def _check_dataset(dataset: Any, source: str | None, max_pixels: int) -> str:
    """Refuse what is not one grayscale frame within the pixel limit; return its photometry."""
    if "PixelData" not in dataset:
        raise InvalidImageError("the DICOM file holds no image (no PixelData)", source)
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise InvalidImageError(
            f"multi-frame DICOM ({frames} frames) is not a single radiograph; "
            "split it into one file per frame",
            source,
        )
    photometric = str(dataset.get("PhotometricInterpretation", "")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InvalidImageError(
            f"PhotometricInterpretation {photometric or '(missing)'} is not supported; "
            "radiographs are MONOCHROME1 or MONOCHROME2",
            source,
        )
    rows, columns = int(dataset.get("Rows", 0)), int(dataset.get("Columns", 0))
    if rows * columns > max_pixels:
        raise InvalidImageError(
            f"the DICOM image declares {columns}x{rows} = {rows * columns:,} pixels, more "
            f"than the limit of {max_pixels:,} (a decompression bomb?)",
            source,
        )
    return photometric


def _check_display_tags(dataset: Any, source: str | None) -> None:
    """Refuse modality and VOI tags that would flatten or garble the image silently.

    pydicom applies a ``RescaleSlope`` of 0 or NaN as given (every pixel becomes the
    intercept, or NaN, and the stretch then yields an all-zero image), so both are refused
    here; the other checks give a clear error where pydicom would raise a bare one.
    """
    for keyword, tag in (("RescaleSlope", "(0028,1053)"), ("RescaleIntercept", "(0028,1052)")):
        if keyword not in dataset:
            continue
        value = _as_float(dataset[keyword].value, keyword, tag, source)
        if not math.isfinite(value) or (keyword == "RescaleSlope" and value == 0.0):
            raise InvalidImageError(
                f"{keyword} {tag} is {value}: the modality LUT would blank the "
                "image; fix the tag (a plain image has slope 1, intercept 0)",
                source,
            )
    if "WindowWidth" in dataset and "VOILUTSequence" not in dataset:
        widths = dataset["WindowWidth"].value
        for width in widths if _is_multi(widths) else [widths]:
            value = _as_float(width, "WindowWidth", "(0028,1051)", source)
            if not math.isfinite(value) or value < 1.0:
                raise InvalidImageError(
                    f"WindowWidth (0028,1051) is {value}: a display window must be at least "
                    "1 wide; fix or remove the window tags",
                    source,
                )
    for index, item in enumerate(dataset.get("VOILUTSequence") or []):
        descriptor = item.get("LUTDescriptor")
        data = item.get("LUTData")
        if descriptor is None or data is None or len(descriptor) != 3:
            raise InvalidImageError(
                f"VOILUTSequence item {index} has no LUTDescriptor (0028,3002) of 3 values "
                "or no LUTData (0028,3006)",
                source,
            )
        entries = int(descriptor[0]) or 65536  # 0 means 2**16 entries (PS3.3 C.11.2.1.2)
        bits = int(descriptor[2])
        present = (
            len(data) // (2 if bits > 8 else 1)
            if isinstance(data, bytes)
            else len(data)
            if _is_multi(data)
            else 1
        )
        if present < entries:
            raise InvalidImageError(
                f"VOILUTSequence item {index}: LUTData (0028,3006) holds {present} entries, "
                f"fewer than the {entries} its LUTDescriptor (0028,3002) declares",
                source,
            )


def _is_multi(value: Any) -> bool:
    from pydicom.multival import MultiValue  # noqa: PLC0415

    return isinstance(value, MultiValue)


def _as_float(value: Any, keyword: str, tag: str, source: str | None) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidImageError(f"{keyword} {tag} is not a number: {value!r}", source) from exc


def _display_values(
    stored: NDArray[Any], dataset: Any, photometric: str, source: str | None
) -> NDArray[Any]:
    """Apply the modality LUT, the VOI LUT and MONOCHROME1 inversion; keep 16 bits."""
    from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut  # noqa: PLC0415

    _drop_empty_display_tags(dataset)
    has_modality_lut = "RescaleSlope" in dataset or "ModalityLUTSequence" in dataset
    has_voi_lut = "WindowCenter" in dataset or "VOILUTSequence" in dataset
    bits = int(dataset.get("BitsAllocated", 16))
    # The 8-bit shortcut keeps the stored values as grey levels: only for unsigned values
    # that use all 8 bits (signed ones would wrap, -1 becoming 255; fewer bits would be
    # inverted against the wrong maximum).
    plain_8bit = (
        bits == 8
        and int(dataset.get("PixelRepresentation", 0) or 0) == 0
        and int(dataset.get("BitsStored", 8) or 8) == 8
    )
    padding = _padding_mask(stored, dataset)
    if plain_8bit and not has_modality_lut and not has_voi_lut and padding is None:
        pixels8 = stored.astype(np.uint8, copy=False)
        if photometric == "MONOCHROME1":
            pixels8 = np.uint8(255) - pixels8
        return np.ascontiguousarray(pixels8)

    _check_display_tags(dataset, source)
    try:
        values = np.asarray(apply_modality_lut(stored, dataset), dtype=np.float64)
        if has_voi_lut:
            values = np.asarray(apply_voi_lut(values, dataset, index=0), dtype=np.float64)
    except (ValueError, IndexError, KeyError, TypeError, struct.error) as exc:
        # pydicom raises bare errors for malformed LUT tags; a source's on_error="skip"
        # can only skip (and record) the file if the error says it is a bad image.
        raise InvalidImageError(f"could not apply the DICOM display LUTs: {exc}", source) from exc
    if not np.isfinite(values).all():
        raise InvalidImageError(
            "the DICOM display LUTs give non-finite pixel values; check the rescale and "
            "window tags",
            source,
        )
    # Padding (the area outside the detector's field, PixelPaddingValue) is no part of
    # the image: left out of the stretch, it cannot squash the anatomy into a few grey
    # levels, and it is shown black.
    image = values if padding is None else values[~padding]
    if image.size == 0:
        raise InvalidImageError("every pixel is padding (PixelPaddingValue)", source)
    low, high = float(image.min()), float(image.max())
    if photometric == "MONOCHROME1":
        values = high + low - values
    if high > low:
        scaled = np.clip(np.rint((values - low) * (65535.0 / (high - low))), 0, 65535)
    else:
        scaled = np.zeros_like(values)
    if padding is not None:
        scaled[padding] = 0
    return np.ascontiguousarray(scaled.astype(np.uint16))


#: Display tags that, present but empty, mean "not given": a window with no width is no
#: window, a rescale with no slope no rescale.
_DISPLAY_TAG_GROUPS: Final = (
    ("RescaleSlope", "RescaleIntercept"),
    ("WindowCenter", "WindowWidth"),
)


def _drop_empty_display_tags(dataset: Any) -> None:
    """Delete display tags written empty, with their partner: absent, not malformed."""
    for group in _DISPLAY_TAG_GROUPS:
        if any(
            keyword in dataset and dataset[keyword].value in (None, "", b"") for keyword in group
        ):
            for keyword in group:
                if keyword in dataset:
                    del dataset[keyword]


def _padding_mask(stored: NDArray[Any], dataset: Any) -> NDArray[np.bool_] | None:
    """The pixels ``PixelPaddingValue`` (and ``PixelPaddingRangeLimit``) mark, or ``None``."""
    value = dataset.get("PixelPaddingValue")
    if value is None or value == "" or _is_multi(value):
        return None
    limit = dataset.get("PixelPaddingRangeLimit")
    first = int(value)
    last = first if limit is None or limit == "" or _is_multi(limit) else int(limit)
    low, high = min(first, last), max(first, last)
    mask = (stored >= low) & (stored <= high)
    return mask if mask.any() else None
