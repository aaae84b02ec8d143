"""Generators of tiny test radiographs (PNG, JPEG, DICOM) and dataset folders."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray


def gradient(
    height: int = 64, width: int = 64, dtype: Any = np.uint8, seed: int = 0
) -> NDArray[Any]:
    """A deterministic textured image: a gradient plus seeded noise."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    ramp = np.linspace(0, top * 0.8, width, dtype=np.float64)[None, :].repeat(height, 0)
    noise = rng.uniform(0, top * 0.2, size=(height, width))
    return np.asarray(ramp + noise).astype(dtype)


def encode(pixels: NDArray[Any], ext: str = ".png") -> bytes:
    ok, buffer = cv2.imencode(ext, pixels)
    assert ok
    return bytes(buffer.tobytes())


def make_dicom(
    pixels: NDArray[Any],
    *,
    photometric: str = "MONOCHROME2",
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    frames: int = 1,
    patient_id: str = "P-1",
) -> bytes:
    """An uncompressed single- or multi-frame DICOM file built with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1.1")  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[patient_id, photometric])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
        data = np.stack([pixels] * frames)
    else:
        data = pixels
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept or 0.0
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = np.ascontiguousarray(data).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_classes_folder(
    root: Path,
    counts: dict[str, int],
    *,
    size: int = 48,
    ext: str = ".png",
) -> Path:
    """``root/{class}/img_{i}{ext}`` with distinct images per file."""
    seed = 0
    for class_name, count in counts.items():
        folder = root / class_name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            seed += 1
            (folder / f"img_{index}{ext}").write_bytes(encode(gradient(size, size, seed=seed), ext))
    return root


def write_qu_ex(
    root: Path,
    *,
    splits: Sequence[str] = ("Train", "Val", "Test"),
    per_class: int = 2,
    size: int = 48,
) -> Path:
    """A miniature COVID-QU-Ex tree; COVID-19 infection masks hold two separate blobs."""
    seed = 100
    for split in splits:
        for class_name in ("COVID-19", "Non-COVID", "Normal"):
            base = root / split / class_name
            folders = ["images"] if split == "Test" else ["images", "infection masks", "lung masks"]
            for folder in folders:
                (base / folder).mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                seed += 1
                name = f"{class_name.lower()}_{index}.png"
                (base / "images" / name).write_bytes(encode(gradient(size, size, seed=seed)))
                if split == "Test":
                    continue
                infection = np.zeros((size, size), np.uint8)
                if class_name == "COVID-19":
                    infection[5:15, 4:10] = 255  # x 4..9, y 5..14
                    infection[30:40, 30:44] = 255
                lung = np.zeros((size, size), np.uint8)
                lung[2:46, 2:22] = 255
                lung[2:46, 26:46] = 255
                (base / "infection masks" / name).write_bytes(encode(infection))
                (base / "lung masks" / name).write_bytes(encode(lung))
    return root


class Factories:
    """The generators above, handed to tests through the ``make`` fixture."""

    gradient = staticmethod(gradient)
    encode = staticmethod(encode)
    dicom = staticmethod(make_dicom)
    classes_folder = staticmethod(write_classes_folder)
    qu_ex = staticmethod(write_qu_ex)


@pytest.fixture
def make() -> Factories:
    """Factories for test images and dataset folders."""
    return Factories()


@pytest.fixture
def classes_folder(tmp_path: Path) -> Path:
    return write_classes_folder(tmp_path / "cxr", {"COVID": 2, "NORMAL": 2, "Viral Pneumonia": 1})


@pytest.fixture
def qu_ex_folder(tmp_path: Path) -> Path:
    return write_qu_ex(tmp_path / "qu-ex")
