"""draw_detections and write_png."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from covidcxr.detect import DETECTION_COLOR, TRUTH_COLOR, draw_detections, write_png
from covidcxr.records import Box, Detection, XRay


def flat(value: float, dtype: type = np.uint8, shape: tuple[int, int] = (64, 64)) -> XRay:
    return XRay(np.full(shape, value, dtype), id="flat")


def test_result_is_rgb_uint8_of_the_image_size() -> None:
    image = draw_detections(flat(0, shape=(40, 56)), [])
    assert image.shape == (40, 56, 3)
    assert image.dtype == np.uint8


def test_without_detections_the_radiograph_is_unchanged_grey() -> None:
    pixels = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    image = draw_detections(XRay(pixels, id="ramp"), [])
    assert (image[..., 0] == image[..., 1]).all()
    assert (image[..., 1] == image[..., 2]).all()
    assert image.min() == 0
    assert image.max() == 255  # 16-bit input is stretched, not left nearly black


def test_8bit_content_in_16bits_is_drawn_as_the_8bit_image() -> None:
    eight = (np.arange(64 * 64).reshape(64, 64) % 200 + 20).astype(np.uint8)
    wide = XRay(eight.astype(np.uint16) * 257, id="wide")
    np.testing.assert_array_equal(
        draw_detections(wide, []), draw_detections(XRay(eight, id="e"), [])
    )


def test_box_edge_is_drawn_in_the_detection_colour() -> None:
    box = Box(10, 30, 30, 20)
    image = draw_detections(flat(128), [Detection(box, "opacity", 0.5)], show_scores=False)
    assert image[40, 10].tolist() == list(DETECTION_COLOR)
    assert image[40, 25].tolist() == [128, 128, 128]  # the inside stays untouched


def test_box_has_a_dark_outline_so_it_reads_on_bright_regions() -> None:
    box = Box(10, 30, 30, 20)
    image = draw_detections(flat(255), [Detection(box, "opacity", 0.5)], show_scores=False)
    assert image[40, 8].tolist() == [0, 0, 0] or image[40, 9].tolist() == [0, 0, 0]


def changed_pixels(background: int) -> np.ndarray:
    detection = Detection(Box(4, 30, 50, 20), "opacity", 0.87)
    plain = draw_detections(flat(background), [detection], show_scores=False)
    captioned = draw_detections(flat(background), [detection])
    return captioned[np.any(plain != captioned, axis=2)]


def test_caption_on_white_has_a_dark_outline() -> None:
    pixels = changed_pixels(255)
    assert (pixels.max(axis=1) < 60).sum() > 10


def test_caption_on_black_is_drawn_in_the_bright_detection_colour() -> None:
    pixels = changed_pixels(0)
    orange = (pixels[:, 0] > 200) & (pixels[:, 2] < 60)
    assert orange.sum() > 10


def test_ground_truth_boxes_are_drawn_in_their_own_colour() -> None:
    image = draw_detections(flat(128), [], truths=[Box(5, 5, 20, 20)])
    assert image[15, 5].tolist() == list(TRUTH_COLOR)


def test_boxes_on_the_image_edge_are_drawn_inside_it() -> None:
    image = draw_detections(flat(128), [Detection(Box(0, 0, 64, 64), "opacity", 0.9)])
    assert image[63, 30].tolist() == list(DETECTION_COLOR)


def test_float_radiograph_in_unit_range_is_scaled_to_8_bits() -> None:
    image = draw_detections(flat(0.5, np.float32), [])
    assert image[0, 0].tolist() == [128, 128, 128]


def test_write_png_round_trips_rgb(tmp_path: Path) -> None:
    rgb = np.zeros((8, 12, 3), np.uint8)
    rgb[..., 0] = 200  # red
    path = write_png(tmp_path / "a.png", rgb)
    read = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert read is not None
    np.testing.assert_array_equal(read[..., ::-1], rgb)


def test_write_png_never_overwrites_unless_asked(tmp_path: Path) -> None:
    target = tmp_path / "mine.png"
    target.write_bytes(b"the user's file")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_png(target, np.zeros((8, 8), np.uint8))
    assert target.read_bytes() == b"the user's file"


def test_write_png_overwrites_when_asked_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    write_png(target, np.zeros((8, 8), np.uint8))
    write_png(target, np.full((8, 8), 255, np.uint8), overwrite=True)
    read = cv2.imread(str(target), cv2.IMREAD_GRAYSCALE)
    assert read is not None
    assert int(read.min()) == 255
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


@pytest.mark.parametrize(
    "image", [np.zeros((8, 8), np.float32), np.zeros((8, 8, 4), np.uint8), np.zeros(8, np.uint8)]
)
def test_write_png_rejects_other_arrays(tmp_path: Path, image: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "x.png", image)
