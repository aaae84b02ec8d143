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
from collections.abc import Mapping
from typing import Any

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
        For unreadable files, multi-frame or colour images, images over ``max_pixels``, and
        compressed transfer syntaxes no installed pydicom plugin can decode.
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

    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError) as exc:
        raise InvalidImageError(f"unreadable DICOM file: {exc}", source) from exc

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
    return _display_values(stored, dataset, photometric), meta


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


def _display_values(stored: NDArray[Any], dataset: Any, photometric: str) -> NDArray[Any]:
    """Apply the modality LUT, the VOI LUT and MONOCHROME1 inversion; keep 16 bits."""
    from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut  # noqa: PLC0415

    has_modality_lut = "RescaleSlope" in dataset or "ModalityLUTSequence" in dataset
    has_voi_lut = "WindowCenter" in dataset or "VOILUTSequence" in dataset
    bits = int(dataset.get("BitsAllocated", 16))
    if bits == 8 and not has_modality_lut and not has_voi_lut:
        pixels8 = stored.astype(np.uint8, copy=False)
        if photometric == "MONOCHROME1":
            pixels8 = np.uint8(255) - pixels8
        return np.ascontiguousarray(pixels8)

    values = np.asarray(apply_modality_lut(stored, dataset), dtype=np.float64)
    if has_voi_lut:
        values = np.asarray(apply_voi_lut(values, dataset, index=0), dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if photometric == "MONOCHROME1":
        values = high + low - values
    if high > low:
        scaled = np.rint((values - low) * (65535.0 / (high - low)))
    else:
        scaled = np.zeros_like(values)
    return np.ascontiguousarray(scaled.astype(np.uint16))
