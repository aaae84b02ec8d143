"""The images a chest-radiograph model must refuse, from material installed on this machine.

Nothing here is downloaded or copied into the repository: the photographs are the sample
images shipped with scikit-learn and Matplotlib, the other modalities are pydicom's test
CT and MR slices and Matplotlib's MR sample, and the rest is drawn (noise, blank and
saturated frames, gradients, checkerboards) or made from COVID-QU-Ex Test radiographs read
from ``../shared`` (inverted, rotated by 90 and 180 degrees, heavily cropped, tiled 2x2).
Every image is a 2-D ``uint8`` or ``uint16`` array, as a user's file would be read.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import matplotlib
import numpy as np
import sklearn.datasets
from numpy.typing import NDArray
from pydicom.data import get_testdata_file

from covidcxr.errors import InvalidImageError
from covidcxr.io import read_image

Images = dict[str, NDArray[np.generic]]


def natural_images() -> tuple[Images, list[str]]:
    """Photographs, a logo, other modalities' slices and digits; and what could not be read."""
    out: Images = {}
    unreadable: list[str] = []
    sklearn_images = Path(sklearn.datasets.__file__).parent / "images"
    mpl = Path(matplotlib.get_data_path()) / "sample_data"
    for path in [
        sklearn_images / "china.jpg",
        sklearn_images / "flower.jpg",
        mpl / "grace_hopper.jpg",
        mpl / "logo2.png",
        mpl / "Minduka_Present_Blue_Pack.png",
    ]:
        out[path.stem] = np.asarray(read_image(path))
    for name in ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm"]:
        found = get_testdata_file(name)
        if not isinstance(found, str):  # pydicom's test files are not installed
            unreadable.append(f"{name}: not among pydicom's test files")
            continue
        try:
            out[name] = np.asarray(read_image(found))
        except InvalidImageError as exc:  # a codec that is not installed
            unreadable.append(f"{name}: {exc}")
    with gzip.open(mpl / "s1045.ima.gz") as handle:  # a 256x256 16-bit MR slice
        raw = handle.read()
    out["s1045-mr"] = np.frombuffer(raw, ">u2")[: 256 * 256].reshape(256, 256).astype(np.uint16)
    for i, digit in enumerate(sklearn.datasets.load_digits().images[:5]):
        image = (digit * 16).clip(0, 255).astype(np.uint8)
        out[f"digit{i}"] = cv2.resize(image, (128, 128), interpolation=cv2.INTER_NEAREST)
    return out, unreadable


def photo_crops(images: Images, rng: np.random.Generator, n_per: int = 6) -> Images:
    """Random square crops of the larger photographs and slices."""
    out: Images = {}
    for name, image in images.items():
        grey = (
            cv2.cvtColor(image[..., :3].astype(np.uint8), cv2.COLOR_RGB2GRAY)
            if image.ndim == 3
            else image
        )
        h, w = grey.shape[:2]
        if min(h, w) < 128:
            continue
        for i in range(n_per):
            side = int(rng.integers(min(h, w) // 3, min(h, w)))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            out[f"{name}-crop{i}"] = grey[y : y + side, x : x + side]
    return out


def synthetic(rng: np.random.Generator) -> Images:
    """Noise, blank, grey and saturated frames, gradients and checkerboards, at 3 sizes."""
    out: Images = {}
    for s in (64, 256, 512):
        out[f"uniform-{s}"] = rng.integers(0, 256, (s, s), dtype=np.uint8)
        out[f"gauss-{s}"] = np.clip(rng.normal(128, 40, (s, s)), 0, 255).astype(np.uint8)
        out[f"black-{s}"] = np.zeros((s, s), np.uint8)
        out[f"white-{s}"] = np.full((s, s), 255, np.uint8)
        out[f"grey-{s}"] = np.full((s, s), 128, np.uint8)
        out[f"saltpepper-{s}"] = (rng.random((s, s)) > 0.5).astype(np.uint8) * 255
        out[f"gradient-{s}"] = np.tile(np.linspace(0, 255, s).astype(np.uint8), (s, 1))
        out[f"checker-{s}"] = ((np.indices((s, s)).sum(0) // 8) % 2 * 255).astype(np.uint8)
        noise = rng.integers(0, 256, (s, s), dtype=np.uint8)
        out[f"blur-noise-{s}"] = cv2.GaussianBlur(noise, (0, 0), 6)
    out["uniform16-256"] = rng.integers(0, 65536, (256, 256), dtype=np.uint16)
    return out


def cxr_transforms(
    images: Sequence[tuple[str, NDArray[np.integer[Any]]]], rng: np.random.Generator
) -> dict[str, Images]:
    """Each radiograph inverted, rotated 90 and 180 degrees, cropped to 1/5-1/3, tiled 2x2."""
    out: dict[str, Images] = {"inverted": {}, "rot90": {}, "rot180": {}, "crop": {}, "tiled": {}}
    for i, (name, image) in enumerate(images):
        top = np.iinfo(image.dtype).max
        out["inverted"][name] = (top - image).astype(image.dtype)
        out["rot90"][name] = np.ascontiguousarray(np.rot90(image))
        out["rot180"][name] = np.ascontiguousarray(np.rot90(image, 2))
        h, w = image.shape
        side = int(rng.integers(h // 5, h // 3))
        y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
        out["crop"][name] = image[y : y + side, x : x + side]
        others = [images[(i + j) % len(images)][1] for j in range(4)]
        small = [cv2.resize(o, (w // 2, h // 2)) for o in others]
        out["tiled"][name] = np.vstack([np.hstack(small[:2]), np.hstack(small[2:])])
    return out
