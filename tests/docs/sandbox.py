"""The folder the documentation's examples run in: the files their text names, made small.

The examples name files a reader would have (``data/cxr``, ``scan.dcm``, ``cxr.zip``, a
COVID-QU-Ex checkout, a bucket in IBM COS, a Watson endpoint). Here each is a small real
one: phantom radiographs written as PNG and DICOM, a zip of them, a miniature COVID-QU-Ex
tree with infection and lung masks, a loopback S3 server holding a bucket, and a loopback
Visual Recognition v4 server. The examples' own code is not changed to run here.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from covidcxr.phantoms import generate_phantom, write_phantom_dataset

#: Phantom side in pixels: small enough for fast examples, large enough for the models.
SIZE = 64
#: Radiographs per class in each dataset: 15 in all, one batch of the from-scratch recipe
#: (``batch_size=16``), so the examples that train it run one step per epoch.
PER_CLASS = 5
#: COVID-QU-Ex's folder names for the three classes.
QU_EX_CLASSES = {"covid-19": "COVID-19", "pneumonia": "Non-COVID", "normal": "Normal"}


def _png(pixels: NDArray[np.uint8]) -> bytes:
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(pixels))
    assert ok
    return bytes(encoded.tobytes())


def dicom_bytes(pixels: NDArray[np.uint8], *, patient_id: str = "DOC-1") -> bytes:
    """An uncompressed MONOCHROME2 digital X-ray DICOM of ``pixels``, built with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1.1")
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[patient_id])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    wide = pixels.astype(np.uint16) * 16  # a 12-bit detector's range
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.ascontiguousarray(wide).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_qu_ex_phantoms(root: Path, *, per_class: int, seed: int = 0) -> Path:
    """A miniature COVID-QU-Ex tree of phantoms: images, infection masks and lung masks.

    Test has no masks, as in the infection-segmentation set of the real dataset.
    """
    for offset, split in enumerate(("Train", "Val", "Test")):
        for label, folder_name in QU_EX_CLASSES.items():
            base = root / split / folder_name
            for index in range(per_class):
                xray = generate_phantom(label, size=SIZE, seed=seed + offset, index=index)
                name = f"{label}_{split.lower()}_{index}.png"
                (base / "images").mkdir(parents=True, exist_ok=True)
                (base / "images" / name).write_bytes(_png(np.asarray(xray.pixels)))
                if split == "Test":
                    continue
                infection = np.asarray(xray.meta["infection_mask"], np.uint8)
                lung = np.asarray(xray.meta.get("lung_mask", np.zeros_like(infection)), np.uint8)
                for masks, mask in (("infection masks", infection), ("lung masks", lung)):
                    (base / masks).mkdir(parents=True, exist_ok=True)
                    (base / masks / name).write_bytes(_png(mask))
    return root


def _train_model(out: Path, data: Path) -> None:
    """``model/``, as ``covidcxr train data/cxr-train --out model/`` would save it (small)."""
    from covidcxr import Pipeline

    pipeline = Pipeline.from_dict(
        {
            "preprocessor": {"name": "gaussian-clahe", "output_size": 32},
            "classifier": {"name": "vgg19", "input_size": 32, "weights": None,
                           "batch_norm": True, "width_multiplier": 0.125, "epochs": 2},
            "detector": None,
        }
    )  # fmt: skip
    pipeline.fit(data).save(out)


def build(root: Path) -> Path:
    """Write every file the examples name under ``root`` and return it."""
    data = root / "data"
    write_phantom_dataset(data / "cxr", n_per_class=PER_CLASS, size=SIZE, seed=0)
    for seed, name in enumerate(("train", "val", "test"), start=1):
        write_phantom_dataset(data / name, n_per_class=PER_CLASS, size=SIZE, seed=seed)
    write_phantom_dataset(data / "cxr-train", n_per_class=PER_CLASS, size=SIZE, seed=4)
    write_phantom_dataset(data / "cxr-test", n_per_class=PER_CLASS, size=SIZE, seed=5)
    scans = data / "new-scans"
    scans.mkdir()
    for index in range(4):
        label = ("covid-19", "normal", "pneumonia")[index % 3]
        xray = generate_phantom(label, size=SIZE, seed=9, index=index)
        (scans / f"scan-{index}.png").write_bytes(_png(np.asarray(xray.pixels)))
    scan = generate_phantom("covid-19", size=SIZE, seed=7)
    (root / "scan.png").write_bytes(_png(np.asarray(scan.pixels)))
    (root / "scan.dcm").write_bytes(dicom_bytes(np.asarray(scan.pixels)))
    with zipfile.ZipFile(root / "cxr.zip", "w") as archive:
        for path in sorted((data / "cxr").rglob("*.png")):
            archive.write(path, path.relative_to(data / "cxr").as_posix())
    write_qu_ex_phantoms(root / "covid-qu-ex", per_class=PER_CLASS)
    _train_model(root / "model", data / "cxr-train")
    with zipfile.ZipFile(root / "covid-qu-ex.zip", "w") as archive:
        for path in sorted((root / "covid-qu-ex").rglob("*.png")):
            archive.write(path, path.relative_to(root).as_posix())
    return root
