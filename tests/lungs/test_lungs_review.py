"""Lung stage: parameters checked by ``set_params``, blank frames, masks of another shape."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pytest

from covidcxr import XRay
from covidcxr.errors import ConfigurationError, InvalidImageError, NoLungsFoundWarning
from covidcxr.lungs import LungCrop, LungFields, LungSegmenter


def _two_blobs(size: int) -> np.ndarray:
    maps = np.zeros((size, size), np.float32)
    maps[size // 4 : 3 * size // 4, size // 8 : 3 * size // 8] = 0.9
    maps[size // 4 : 3 * size // 4, 5 * size // 8 : 7 * size // 8] = 0.9
    return maps


class _SeesLungsEverywhere(LungSegmenter):
    """A segmenter whose network answers two lung fields on any image."""

    def predict_maps(self, xrays: Sequence[XRay]) -> np.ndarray:
        return np.stack([_two_blobs(self.input_size) for _ in xrays])


@pytest.mark.parametrize(
    "bad",
    [
        {"threshold": 2.0},
        {"threshold": 0.0},
        {"min_component_fraction": 0.9},
        {"input_size": 30},
        {"epochs": 0},
    ],
)
def test_set_params_checks_values_as_the_constructor_does(bad: dict[str, object]) -> None:
    segmenter = LungSegmenter(input_size=32)
    with pytest.raises(ConfigurationError):
        LungSegmenter(**{"input_size": 32, **bad})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        segmenter.set_params(**bad)
    assert segmenter.get_params() == LungSegmenter(input_size=32).get_params()


def test_set_params_accepts_good_values() -> None:
    segmenter = LungSegmenter(input_size=32).set_params(threshold=0.3, epochs=2)
    assert (segmenter.threshold, segmenter.epochs) == (0.3, 2)


@pytest.mark.parametrize(
    "pixels",
    [
        np.full((64, 64), 128, np.uint8),
        np.full((64, 64), 255, np.uint8),
        np.full((4, 4), 100, np.uint8),
        np.full((48, 64), 3000, np.uint16),
        np.full((64, 64), 0.5, np.float32),
    ],
)
def test_a_blank_frame_has_no_lungs_and_falls_back_with_the_warning(pixels: np.ndarray) -> None:
    segmenter = _SeesLungsEverywhere(input_size=32)
    blank = XRay(pixels, id="blank")
    assert not segmenter.segment([blank])[0].found
    with pytest.warns(NoLungsFoundWarning, match="1 of 1"):
        out = LungCrop(segmenter, output_size=16).apply([blank])
    assert out[0].meta["lungs_found"] is False


def test_a_radiograph_with_contrast_still_gets_its_lungs() -> None:
    segmenter = _SeesLungsEverywhere(input_size=32)
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint8)
    fields = segmenter.segment([XRay(pixels, id="r")])[0]
    assert fields.found
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoLungsFoundWarning)
        LungCrop(segmenter, output_size=16).apply([XRay(pixels, id="r")])


class _Fixed:
    """A fitted segmenter stand-in that returns two lung fields of each image's shape."""

    fitted = True

    def segment(self, xrays: Sequence[XRay]) -> list[LungFields]:
        out = []
        for xray in xrays:
            height, width = xray.shape
            labels = np.zeros((height, width), np.uint8)
            labels[height // 4 : 3 * height // 4, width // 8 : 3 * width // 8] = 1
            labels[height // 4 : 3 * height // 4, 5 * width // 8 : 7 * width // 8] = 2
            out.append(LungFields(labels))
        return out


@pytest.mark.parametrize(
    "mask", [np.zeros((64, 64, 1), np.uint8), np.zeros((32, 32, 1), np.uint8), np.zeros(64)]
)
def test_a_mask_with_another_number_of_axes_is_refused(mask: np.ndarray) -> None:
    xray = XRay(np.zeros((64, 64), np.uint8), id="m", meta={"infection_mask": mask})
    stage = LungCrop(_Fixed(), output_size=16)  # type: ignore[arg-type]
    with pytest.raises(InvalidImageError, match="infection_mask"):
        stage.apply([xray])
