"""Synthetic chest-radiograph phantoms with known lesions, for demos and tests.

.. warning::

   Phantoms are **synthetic drawings, not radiographs**. They prove that the machinery
   works end to end (reading, preprocessing, training, detection, evaluation, reports) on
   data whose ground truth is known exactly. A model that does well on them has learnt to
   tell apart the drawn patterns below, nothing about medicine; never use their figures as
   evidence about COVID-19, pneumonia or any real image.

Each phantom is drawn procedurally: a dark background, a soft-tissue body, two air-filled
lungs, the heart and mediastinum, the spine, ribs and clavicles, smooth anatomical texture
and quantum-like noise, with random variation of size, position and exposure. The class
decides the lesions painted into the lungs, loosely after their radiographic description:

``"covid-19"``
    Bilateral, peripheral, hazy ground-glass opacities: two to four soft blobs, at least
    one in each lung, in the outer and lower lung zones.
``"pneumonia"``
    One denser lobar consolidation: a large, fairly sharp-edged opacity filling part of
    the lower zone of one lung.
``"normal"``
    No lesion.

Every lesion lands in ``meta["infection_mask"]`` (``uint8``, 0 or 255, the convention of
the dataset sources) and its connected components in :attr:`~covidcxr.XRay.boxes`; the lungs
land in ``meta["lung_mask"]``. The same ``seed`` always gives the same images.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

from covidcxr.boxes import mask_boxes
from covidcxr.errors import ConfigurationError
from covidcxr.labels import COVID19, LABELS, NORMAL, PNEUMONIA
from covidcxr.records import XRay

__all__ = [
    "MAX_SIZE",
    "MIN_SIZE",
    "generate_phantom",
    "generate_phantoms",
    "write_phantom_dataset",
]

#: The smallest and largest phantom sizes, in pixels per side.
MIN_SIZE: Final = 32
MAX_SIZE: Final = 512

# A lesion pixel is one where the added opacity exceeds this fraction of the lesion's peak:
# the mask marks where the opacity is visible, not the blob's infinite Gaussian tail.
_MASK_LEVEL: Final = 0.35
# Components smaller than this fraction of the image area are specks, not lesions.
_MIN_LESION_FRACTION: Final = 0.002


def _check_size(size: int) -> None:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigurationError(f"phantom size must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}")


def _ellipse(
    u: NDArray[np.float64],
    v: NDArray[np.float64],
    centre: tuple[float, float],
    axes: tuple[float, float],
    softness: float,
) -> NDArray[np.float64]:
    """A filled ellipse in [0, 1] whose edge falls off over ``softness`` (normalised units)."""
    r = np.sqrt(((u - centre[0]) / axes[0]) ** 2 + ((v - centre[1]) / axes[1]) ** 2)
    return np.asarray(1.0 / (1.0 + np.exp((r - 1.0) / max(softness, 1e-6))))


def _smooth_noise(rng: np.random.Generator, size: int, scale: float) -> NDArray[np.float64]:
    """Zero-mean smooth random texture with features about ``scale`` of the image wide."""
    field = rng.standard_normal((size, size))
    sigma = max(scale * size, 0.5)
    smooth = cv2.GaussianBlur(field, (0, 0), sigmaX=sigma, sigmaY=sigma)
    return np.asarray(smooth / (smooth.std() + 1e-12))


def _ribs(
    rng: np.random.Generator,
    size: int,
    lungs: Sequence[tuple[tuple[float, float], tuple[float, float]]],
) -> NDArray[np.float64]:
    """Posterior rib arcs across each lung, drawn as thin bright bands."""
    canvas = np.zeros((size, size), np.float32)
    thickness = max(1, round(size / 55))
    t = np.linspace(0.0, 1.0, 24)
    for (cx, cy), (ax, ay) in lungs:
        side = -1.0 if cx < 0 else 1.0
        medial = cx - side * ax * 1.1
        top = cy - ay * 1.05
        for level in range(10):
            y0 = top + level * (2 * ay) / 10 + rng.normal(0, 0.008)
            # From the spine a rib rises a little, then sweeps down to the chest wall.
            xs = medial + side * t * ax * 2.3
            ys = y0 - 0.05 * np.sin(np.pi * t * 0.9) + 0.16 * t**2
            points = np.stack([(xs + 1) * size / 2, (ys + 1) * size / 2], axis=1)
            cv2.polylines(
                canvas, [np.round(points).astype(np.int32)], False, 1.0, thickness, cv2.LINE_AA
            )
    return np.asarray(cv2.GaussianBlur(canvas, (0, 0), sigmaX=max(size / 200, 0.5)), np.float64)


def _lesion_blob(
    u: NDArray[np.float64],
    v: NDArray[np.float64],
    centre: tuple[float, float],
    axes: tuple[float, float],
    angle: float,
) -> NDArray[np.float64]:
    """A rotated anisotropic Gaussian blob with peak 1."""
    cos, sin = np.cos(angle), np.sin(angle)
    du, dv = u - centre[0], v - centre[1]
    a = (du * cos + dv * sin) / axes[0]
    b = (-du * sin + dv * cos) / axes[1]
    return np.asarray(np.exp(-0.5 * (a * a + b * b)))


def _draw(
    label: str, size: int, rng: np.random.Generator
) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]:
    """The pixels, infection mask and lung mask of one phantom."""
    coords = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    u, v = np.meshgrid(coords, coords)
    shift = rng.normal(0.0, 0.03, 2)
    scale = rng.uniform(0.92, 1.06)
    u = (u - shift[0]) / scale
    v = (v - shift[1]) / scale

    body = _ellipse(u, v, (0.0, 0.12), (0.93, 1.1), 0.04)
    lung_axes = (rng.uniform(0.25, 0.3), rng.uniform(0.5, 0.6))
    lungs = [
        ((side * rng.uniform(0.36, 0.41), rng.uniform(-0.1, -0.02)), lung_axes) for side in (-1, 1)
    ]
    lung = np.maximum(*(_ellipse(u, v, c, a, 0.05) for c, a in lungs))
    # The heart sits to the patient's left, which is the image's right on a PA film.
    heart = _ellipse(u, v, (0.1 + rng.normal(0, 0.02), 0.33), (rng.uniform(0.28, 0.34), 0.25), 0.1)
    spine = np.exp(-0.5 * (u / 0.07) ** 2) * body

    image = 0.06 + 0.5 * body
    image -= 0.33 * lung * (1 - 0.7 * heart)
    image += 0.12 * heart + 0.16 * spine
    image += 0.07 * _ribs(rng, size, lungs) * body
    clavicles = np.exp(-0.5 * ((v + 0.72 + 0.15 * np.abs(u)) / 0.025) ** 2) * (np.abs(u) < 0.7)
    image += 0.12 * clavicles * body
    image += 0.025 * _smooth_noise(rng, size, 0.015) * lung  # lung markings

    lesions = np.zeros_like(image)
    if label == COVID19:
        n_blobs = int(rng.integers(2, 5))
        sides = [-1, 1] + [int(rng.choice([-1, 1])) for _ in range(n_blobs - 2)]
        for side in sides:
            (cx, cy), (ax, ay) = lungs[0 if side < 0 else 1]
            # Peripheral (outer third) and lower-zone, hazy.
            centre = (cx + side * ax * rng.uniform(0.35, 0.65), cy + ay * rng.uniform(-0.1, 0.6))
            blob = _lesion_blob(
                u,
                v,
                centre,
                (rng.uniform(0.07, 0.11), rng.uniform(0.1, 0.16)),
                rng.uniform(0, np.pi),
            )
            lesions = np.maximum(lesions, rng.uniform(0.14, 0.2) * blob)
    elif label == PNEUMONIA:
        (cx, cy), (ax, ay) = lungs[int(rng.integers(0, 2))]
        centre = (cx + rng.normal(0, ax * 0.15), cy + ay * rng.uniform(0.25, 0.5))
        lobe = _ellipse(
            u, v, centre, (ax * rng.uniform(0.55, 0.8), ay * rng.uniform(0.3, 0.45)), 0.08
        )
        texture = 1.0 + 0.15 * _smooth_noise(rng, size, 0.03)
        lesions = rng.uniform(0.3, 0.38) * lobe * texture
    elif label != NORMAL:
        raise ConfigurationError(f"phantom label must be one of {LABELS}, got {label!r}")
    lesions *= lung
    image += lesions

    gain = rng.uniform(0.9, 1.1)
    image = image * gain + rng.normal(0.0, 0.012, image.shape)
    pixels = np.clip(image * 255.0, 0, 255).astype(np.uint8)

    lung_mask = np.where(lung > 0.5, 255, 0).astype(np.uint8)
    peak = float(lesions.max())
    infection = (lesions > _MASK_LEVEL * peak) if peak > 0 else np.zeros_like(lesions, bool)
    infection_mask = np.where(infection & (lung_mask > 0), 255, 0).astype(np.uint8)
    return pixels, infection_mask, lung_mask


def generate_phantom(label: str, *, size: int = 128, seed: int = 0, index: int = 0) -> XRay:
    """Draw one synthetic chest-radiograph phantom of class ``label``.

    Parameters
    ----------
    label
        ``"covid-19"``, ``"normal"`` or ``"pneumonia"``.
    size
        Width and height in pixels, 32 to 512 (64 to 256 is the useful range).
    seed, index
        Together they decide the random draw; the same pair always gives the same image.

    Returns
    -------
    XRay
        ``uint8`` pixels with ``label``, lesion ``boxes``, ``meta["infection_mask"]`` and
        ``meta["lung_mask"]`` (``uint8``, 0 or 255) and ``meta["synthetic"] = True``.

    Raises
    ------
    ConfigurationError
        If ``label`` is not canonical or ``size`` is out of range.

    Examples
    --------
    >>> xray = generate_phantom("covid-19", size=64, seed=1)
    >>> xray.shape, xray.label, len(xray.boxes) >= 2
    ((64, 64), 'covid-19', True)
    >>> generate_phantom("normal", size=64).boxes
    ()
    """
    _check_size(size)
    if label not in LABELS:
        raise ConfigurationError(f"phantom label must be one of {LABELS}, got {label!r}")
    rng = np.random.default_rng([seed, LABELS.index(label), index])
    pixels, infection_mask, lung_mask = _draw(label, size, rng)
    boxes = mask_boxes(infection_mask, min_area=max(2, round(_MIN_LESION_FRACTION * size * size)))
    infection_mask.flags.writeable = False
    lung_mask.flags.writeable = False
    return XRay(
        pixels,
        id=f"phantom-{label}-{seed}-{index:04d}",
        label=label,
        patient_id=f"phantom-{label}-{seed}-{index:04d}",
        boxes=boxes,
        meta={
            "infection_mask": infection_mask,
            "lung_mask": lung_mask,
            "synthetic": True,
            "seed": seed,
        },
    )


def generate_phantoms(
    n_per_class: int,
    *,
    size: int = 128,
    seed: int = 0,
    classes: Sequence[str] = LABELS,
) -> list[XRay]:
    """Draw ``n_per_class`` phantoms of each class, interleaved class by class.

    Examples
    --------
    >>> [x.label for x in generate_phantoms(2, size=32)]
    ['covid-19', 'normal', 'pneumonia', 'covid-19', 'normal', 'pneumonia']
    """
    if n_per_class < 1:
        raise ConfigurationError(f"n_per_class must be >= 1, got {n_per_class}")
    return [
        generate_phantom(label, size=size, seed=seed, index=index)
        for index in range(n_per_class)
        for label in classes
    ]


def write_phantom_dataset(
    directory: str | os.PathLike[str],
    n_per_class: int,
    size: int = 128,
    seed: int = 0,
    *,
    overwrite: bool = False,
) -> Path:
    """Write phantoms as PNGs in one folder per class, readable by the folder source.

    The layout is ``directory/{covid-19,normal,pneumonia}/phantom-*.png``. A
    ``README.txt`` beside the class folders says that the images are synthetic.

    Parameters
    ----------
    directory
        Where to write; created if missing.
    n_per_class
        Images per class.
    size, seed
        As in :func:`generate_phantom`.
    overwrite
        Allow writing into class folders that already hold files.

    Returns
    -------
    Path
        ``directory``.

    Raises
    ------
    ConfigurationError
        If a class folder already holds files and ``overwrite`` is false.

    Examples
    --------
    >>> import tempfile
    >>> root = write_phantom_dataset(tempfile.mkdtemp(), n_per_class=2, size=32)
    >>> sorted(p.name for p in root.iterdir())
    ['README.txt', 'covid-19', 'normal', 'pneumonia']
    """
    root = Path(directory)
    for label in LABELS:
        folder = root / label
        if folder.is_dir() and any(folder.iterdir()) and not overwrite:
            raise ConfigurationError(
                f"{folder} already holds files; choose an empty directory or pass overwrite=True"
            )
    phantoms = generate_phantoms(n_per_class, size=size, seed=seed)
    for xray in phantoms:
        folder = root / str(xray.label)
        folder.mkdir(parents=True, exist_ok=True)
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(xray.pixels))
        if not ok:  # pragma: no cover - OpenCV encodes any uint8 array
            raise ConfigurationError(f"could not encode phantom {xray.id} as PNG")
        (folder / f"{xray.id}.png").write_bytes(encoded.tobytes())
    (root / "README.txt").write_text(
        "Synthetic chest-radiograph phantoms generated by covidcxr.phantoms "
        f"(n_per_class={n_per_class}, size={size}, seed={seed}).\n"
        "They are procedural drawings, not radiographs: they prove the software works,\n"
        "not anything about medicine.\n",
        encoding="utf-8",
    )
    return root
