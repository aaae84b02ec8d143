"""Specification of the Gaussian + CLAHE preprocessor and its geometry."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import attrs
import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray

import covidcxr
from covidcxr.errors import ConfigurationError, InvalidImageError
from covidcxr.phantoms import generate_phantoms
from covidcxr.preprocess import (
    GaussianClahePreprocessor,
    IdentityPreprocessor,
    boxes_to_original,
    exact_uint8,
    fit_resize,
    to_uint8,
    transform_boxes,
    window_levels_of,
)
from covidcxr.records import Box, XRay
from covidcxr.sources import FolderSource, mask_boxes


def _xray(make: Any, height: int = 64, width: int = 64, **kwargs: Any) -> XRay:
    return XRay(make.gradient(height, width), id="x", **kwargs)


def test_output_is_float32_in_unit_interval_at_model_size(make: Any) -> None:
    out = GaussianClahePreprocessor(output_size=32)(_xray(make))
    assert out.pixels.shape == (32, 32)
    assert out.pixels.dtype == np.float32
    assert 0.0 <= out.pixels.min() <= out.pixels.max() <= 1.0


def test_uint8_output_matches_blur_then_clahe_then_resize_by_hand(make: Any) -> None:
    xray = _xray(make)
    out = GaussianClahePreprocessor(output_size=32, output_dtype="uint8")(xray)
    blurred = cv2.GaussianBlur(np.asarray(xray.pixels), (5, 5), 0)
    enhanced = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(blurred)
    expected = cv2.resize(enhanced, (32, 32), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out.pixels, expected)


def test_gamma_correction_follows_clahe_through_the_power_law(make: Any) -> None:
    xray = _xray(make)
    plain = GaussianClahePreprocessor(output_size=None, output_dtype="uint8")(xray).pixels
    out = GaussianClahePreprocessor(output_size=None, output_dtype="uint8", gamma=0.5)(xray)
    expected = np.clip(np.rint(255.0 * (plain / 255.0) ** 0.5), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out.pixels, expected)
    assert out.pixels.mean() > plain.mean()  # gamma below 1 brightens


def test_gamma_can_replace_clahe(make: Any) -> None:
    xray = _xray(make)
    preprocessor = GaussianClahePreprocessor(
        output_size=None, output_dtype="uint8", clahe=False, gamma=2.0
    )
    out = preprocessor(xray)
    blurred = cv2.GaussianBlur(np.asarray(xray.pixels), (5, 5), 0)
    expected = np.clip(np.rint(255.0 * (blurred / 255.0) ** 2.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out.pixels, expected)


def test_parameters_at_their_neutral_value_leave_the_description_as_models_saved_it() -> None:
    # Models (the shipped ones included) check at load that their preprocessing matches
    # the description they were trained with: adding clahe and gamma must not change it.
    described = GaussianClahePreprocessor(output_size=64).describe()
    assert set(described) == {
        "name", "version", "kernel_size", "sigma", "clip_limit", "tile_grid_size",
        "output_size", "resize_mode", "output_dtype", "percentile_window",
    }  # fmt: skip
    assert GaussianClahePreprocessor(gamma=1.0, clahe=True).describe() == (
        GaussianClahePreprocessor().describe()
    )
    changed = GaussianClahePreprocessor(gamma=0.8, clahe=False).describe()
    assert (changed["gamma"], changed["clahe"]) == (0.8, False)
    assert GaussianClahePreprocessor(working_size=None).describe() == (
        GaussianClahePreprocessor().describe()
    )
    assert GaussianClahePreprocessor(working_size=256).describe()["working_size"] == 256
    assert GaussianClahePreprocessor(window_levels=(0, 255)).describe() == (
        GaussianClahePreprocessor().describe()
    )
    assert GaussianClahePreprocessor(window_levels=(0, 228)).describe()["window_levels"] == [
        0,
        228,
    ]


def _radiograph(size: int) -> NDArray[np.uint8]:
    """A textured phantom radiograph at ``size`` px (the 256 px one, resized)."""
    [xray] = [x for x in generate_phantoms(1, size=256, seed=4) if x.label == "covid-19"]
    pixels = np.asarray(xray.pixels, np.uint8)
    if size == 256:
        return pixels
    return np.asarray(cv2.resize(pixels, (size, size), interpolation=cv2.INTER_CUBIC), np.uint8)


def test_a_working_size_the_image_has_changes_nothing() -> None:
    xray = XRay(_radiograph(256), id="a")
    plain = GaussianClahePreprocessor(output_size=128)(xray)
    working = GaussianClahePreprocessor(output_size=128, working_size=256)(xray)
    assert plain.pixels.tobytes() == working.pixels.tobytes()


@pytest.mark.parametrize("size", [512, 1024])
def test_a_working_size_makes_an_enlarged_radiograph_look_as_the_original(size: int) -> None:
    # A 5x5 blur is a fixed number of pixels: without a working scale, the same
    # radiograph at four times the size comes out sharper than the original did.
    original = GaussianClahePreprocessor(output_size=128)(XRay(_radiograph(256), id="a"))
    enlarged = XRay(_radiograph(size), id="b")
    at_own_size = GaussianClahePreprocessor(output_size=128)(enlarged)
    at_working = GaussianClahePreprocessor(output_size=128, working_size=256)(enlarged)
    unscaled = float(np.abs(at_own_size.pixels - original.pixels).mean())
    scaled = float(np.abs(at_working.pixels - original.pixels).mean())
    assert scaled < unscaled / 2
    assert scaled < 0.01


def test_a_working_scale_keeps_boxes_in_the_inputs_coordinates() -> None:
    pixels = _radiograph(256)[:, 32:224]  # 256 x 192: not square
    xray = XRay(pixels, id="a", boxes=[Box(96, 64, 48, 32)])
    plain = GaussianClahePreprocessor(output_size=128, resize_mode="pad")(xray)
    working = GaussianClahePreprocessor(output_size=128, resize_mode="pad", working_size=64)(xray)
    assert working.pixels.shape == (128, 128)
    assert working.meta["transform"] == plain.meta["transform"]
    assert working.boxes == plain.boxes


def _stripes(height: int, width: int) -> NDArray[np.uint8]:
    """A smooth pattern of 12 px period: moved by one output pixel, it changes a lot."""
    y, x = np.mgrid[0:height, 0:width]
    pattern = 127.5 + 100 * np.sin(2 * np.pi * x / 12) * np.cos(2 * np.pi * y / 12)
    return np.asarray(pattern, np.uint8)


# Shapes whose padding or crop, fitted to the working-scale image on its own, fell one
# output pixel away from the recorded transform's.
@pytest.mark.parametrize(("shape", "mode"), [((307, 294), "pad"), ((300, 200), "crop")])
def test_a_working_scale_puts_the_pixels_where_the_recorded_transform_does(
    shape: tuple[int, int], mode: str
) -> None:
    xray = XRay(_stripes(*shape), id="a")
    # No blur, no CLAHE: only the geometry differs between the two.
    options: dict[str, Any] = {
        "output_size": 224,
        "resize_mode": mode,
        "output_dtype": "uint8",
        "clahe": False,
        "kernel_size": 1,
    }
    direct = GaussianClahePreprocessor(**options)(xray)
    working = GaussianClahePreprocessor(**options, working_size=256)(xray)
    assert working.meta["transform"] == direct.meta["transform"]
    difference = np.abs(working.pixels.astype(float) - direct.pixels.astype(float)).mean()
    assert difference < 5  # resampled twice: ~2.5 levels; one pixel off: 9 to 14


def test_a_working_scale_pads_the_pixels_as_it_pads_boxes_and_masks() -> None:
    shape = (307, 294)
    xray = XRay(
        np.full(shape, 200, np.uint8),
        id="a",
        boxes=[Box(0, 0, shape[1], shape[0])],
        meta={"lung_mask": np.full(shape, 255, np.uint8)},
    )
    preprocessor = GaussianClahePreprocessor(
        output_size=224, working_size=256, resize_mode="pad", output_dtype="uint8", clahe=False
    )
    out = preprocessor(xray)
    columns = np.nonzero(out.pixels.max(axis=0))[0]
    mask_columns = np.nonzero(out.meta["lung_mask"].max(axis=0))[0]
    (box,) = out.boxes
    assert (columns[0], columns[-1]) == (mask_columns[0], mask_columns[-1])
    assert (columns[0], columns[-1] + 1) == (box.x, box.x2)


@pytest.mark.parametrize("shape", [(256, 256), (300, 250), (97, 130), (1000, 800)])
def test_stretch_output_at_a_working_scale_is_what_it_was(shape: tuple[int, int]) -> None:
    # The shipped models stretch, at working size 256: their input must not move. Before
    # the working scale followed the recorded transform, the enhanced image was fitted to
    # the output on its own; in stretch mode that is the same transform, bit for bit.
    from covidcxr.preprocess import resize_image

    xray = XRay(cv2.resize(_radiograph(256), (shape[1], shape[0])), id="a")
    for output_size in (256, 128):
        preprocessor = GaussianClahePreprocessor(output_size=output_size, working_size=256)
        enhanced = preprocessor.enhance(xray.pixels)
        before = resize_image(enhanced, preprocessor.transform_for(enhanced.shape[:2]))
        record, encoding = preprocessor.packed(xray)
        assert encoding == "u8/255"
        assert record.pixels.dtype == before.dtype
        assert record.pixels.tobytes() == before.tobytes()


def test_a_working_size_without_an_output_size_keeps_the_input_size() -> None:
    xray = XRay(_radiograph(512)[:, :400], id="a", boxes=[Box(100, 120, 60, 40)])
    preprocessor = GaussianClahePreprocessor(
        output_size=None, working_size=256, output_dtype="uint8"
    )
    out = preprocessor(xray)
    assert out.pixels.shape == xray.shape
    assert out.boxes == xray.boxes
    assert out.meta["transform"] == covidcxr.preprocess.ResizeTransform.identity(xray.shape)
    # Enhanced at the working scale, then scaled back to the radiograph's own size.
    enhanced = preprocessor.enhance(xray.pixels)
    assert enhanced.shape == (256, 200)
    back = cv2.resize(enhanced, (400, 512), interpolation=cv2.INTER_LINEAR)
    assert out.pixels.tobytes() == back.tobytes()
    assert GaussianClahePreprocessor(output_size=64, working_size=256).working_shape(
        (3000, 2500)
    ) == (256, 213)


class _Fitted:
    """A fitted component that kept its training input's ``meta["preprocessing"]``."""

    def __init__(self, described: dict[str, Any]) -> None:
        self.preprocessing_ = described


def test_a_detector_trained_at_a_working_scale_is_given_its_input_at_its_own_size() -> None:
    trained = GaussianClahePreprocessor(output_size=224, working_size=256)
    rebuilt = covidcxr.preprocess.recorded_preprocessor(_Fitted(trained.describe()))
    assert rebuilt == attrs.evolve(trained, output_size=None)
    xray = XRay(_radiograph(512), id="a", boxes=[Box(100, 120, 60, 40)])
    out = rebuilt(xray)
    # The boxes a detector finds on it are in the radiograph's own pixels...
    assert out.pixels.shape == xray.shape
    assert out.boxes == xray.boxes
    # ... and the image looks as the training input did (enhanced at the working scale).
    shrunk = cv2.resize(out.pixels, (224, 224), interpolation=cv2.INTER_AREA)
    assert float(np.abs(shrunk - trained(xray).pixels).mean()) < 0.01


def test_blur_comes_before_clahe(make: Any) -> None:
    xray = _xray(make)
    out = GaussianClahePreprocessor(output_size=None, output_dtype="uint8")(xray)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    clahe_first = cv2.GaussianBlur(clahe.apply(np.asarray(xray.pixels)), (5, 5), 0)
    assert not np.array_equal(out.pixels, clahe_first)


def test_output_is_byte_identical_across_calls_and_instances(make: Any) -> None:
    xray = _xray(make)
    first = GaussianClahePreprocessor(output_size=40, resize_mode="pad")(xray)
    second = GaussianClahePreprocessor(output_size=40, resize_mode="pad")(xray)
    assert first.pixels.tobytes() == second.pixels.tobytes()


def test_identity_fields_survive_preprocessing(make: Any) -> None:
    xray = XRay(make.gradient(), id="a", label="normal", patient_id="p", meta={"split": "Train"})
    out = GaussianClahePreprocessor(output_size=32)(xray)
    assert (out.id, out.label, out.patient_id, out.meta["split"]) == ("a", "normal", "p", "Train")


def test_16bit_input_is_windowed_by_percentiles_before_clahe(make: Any) -> None:
    pixels = make.gradient(dtype=np.uint16) // 4 + 1000
    pixels[0, 0] = 65535  # a dead pixel must not compress the anatomy into a few grays
    out = to_uint8(pixels)
    assert out.dtype == np.uint8
    assert np.count_nonzero(out == 255) <= pixels.size * 0.006 + 1
    assert len(np.unique(out)) > 200


@pytest.mark.parametrize(
    "widen",
    [
        pytest.param(lambda p: p.astype(np.uint16) * 257, id="times-257"),
        pytest.param(lambda p: p.astype(np.uint16) << 8, id="shifted-8"),
        pytest.param(lambda p: p.astype(np.uint16), id="as-is"),
    ],
)
def test_8bit_content_in_a_16bit_png_is_preprocessed_like_the_8bit_file(
    make: Any, tmp_path: Path, widen: Any
) -> None:
    # Percentile-windowed, such a copy came out with different contrast and, with the
    # shipped model, a different label for 6 % of COVID-QU-Ex Test.
    eight = make.gradient(96, 80)
    eight[:4] = 0  # a dark border and a bright label, as real radiographs have
    eight[-4:, :10] = 250
    wide = widen(eight)
    assert cv2.imwrite(str(tmp_path / "eight.png"), eight)
    assert cv2.imwrite(str(tmp_path / "wide.png"), wide)
    read_eight = covidcxr.io.read_xray(tmp_path / "eight.png")
    read_wide = covidcxr.io.read_xray(tmp_path / "wide.png")
    assert (read_eight.pixels.dtype, read_wide.pixels.dtype) == (
        np.dtype(np.uint8),
        np.dtype(np.uint16),
    )
    np.testing.assert_array_equal(exact_uint8(read_wide.pixels), eight)
    preprocess = GaussianClahePreprocessor(output_size=32)
    np.testing.assert_array_equal(preprocess(read_wide).pixels, preprocess(read_eight).pixels)


def test_16bit_content_that_is_not_8bit_is_windowed(make: Any) -> None:
    wide = make.gradient().astype(np.uint16) * 257
    wide[5, 5] += 1  # one value off the 8-bit grid: more than 8 bits of information
    assert exact_uint8(wide) is None
    assert exact_uint8(make.gradient()) is None  # only uint16 holds a container
    window = to_uint8(wide)
    # The percentile window stretches this image; the exact map would not have.
    assert int(window.max()) == 255
    assert int((wide // 257).max()) < 255


def test_8bit_input_is_not_rewindowed(make: Any) -> None:
    pixels = make.gradient()
    assert to_uint8(pixels) is pixels
    assert to_uint8(pixels, levels=(0, 228)) is pixels
    preprocess = GaussianClahePreprocessor(output_size=None, output_dtype="uint8")
    xray = _xray(make)
    np.testing.assert_array_equal(
        attrs.evolve(preprocess, window_levels=(10, 200))(xray).pixels, preprocess(xray).pixels
    )


def test_window_levels_map_a_16bit_radiograph_onto_the_8bit_one_it_stands_for() -> None:
    # An 8-bit radiograph like COVID-QU-Ex's (a black border, its 99.5th percentile near
    # 228, a brighter label above it), and the same picture with detail below one 8-bit step, as a
    # genuine 16-bit radiograph has.
    rng = np.random.default_rng(0)
    eight = np.clip(rng.normal(120, 45, (128, 128)), 0, 228).astype(np.uint8)
    eight[:, :3] = 0  # a black border
    eight[:3, 10:30] = 255  # a burnt-in label
    wide = eight.astype(np.uint16) * 256 + rng.integers(0, 256, eight.shape, dtype=np.uint16)
    levels = window_levels_of([eight])
    assert levels[0] == 0
    assert 220 <= levels[1] <= 228
    onto_255 = to_uint8(wide).astype(int)
    onto_levels = to_uint8(wide, levels=levels).astype(int)
    # Onto 0..255 the picture comes out with more contrast than the 8-bit one; onto the
    # measured levels within a grey level or two of it.
    assert np.median(np.abs(onto_255 - eight)) >= 5
    assert np.median(np.abs(onto_levels - eight)) <= 2
    out = GaussianClahePreprocessor(output_size=None, window_levels=levels)
    assert np.abs(out.enhance(wide).astype(int) - out.enhance(eight).astype(int)).mean() < 3


def test_window_levels_of_takes_the_median_over_8bit_radiographs_only(make: Any) -> None:
    dim = np.tile(np.arange(0, 201, dtype=np.uint8), (201, 1))  # 0..200, evenly
    bright = np.tile(np.arange(40, 256, dtype=np.uint8), (216, 1))
    wide = make.gradient(dtype=np.uint16) // 4 + 1000  # genuine 16 bits: not counted
    xray = XRay(dim, id="a")
    assert window_levels_of([xray, dim, bright, wide]) == window_levels_of([dim, dim, bright])
    assert window_levels_of([dim]) == (1, 199)
    assert window_levels_of([dim.astype(np.uint16) * 257]) == (1, 199)  # 8-bit content
    assert window_levels_of([dim], (0.0, 100.0)) == (0, 200)
    with pytest.raises(ConfigurationError, match="needs 8-bit radiographs"):
        window_levels_of([wide])
    with pytest.raises(ConfigurationError, match="one grey level"):
        window_levels_of([np.full((8, 8), 7, np.uint8)])
    with pytest.raises(ConfigurationError, match="percentile_window"):
        window_levels_of([dim], (99.0, 1.0))


@pytest.mark.parametrize("levels", [(200, 100), (0, 256), (-1, 255), (0.5, 255), "ab", 7])
@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
def test_to_uint8_refuses_levels_it_cannot_map_onto(make: Any, levels: Any, dtype: Any) -> None:
    with pytest.raises(ConfigurationError, match="window_levels"):
        to_uint8(make.gradient(dtype=dtype), levels=levels)


def test_float_input_is_refused_as_already_preprocessed(make: Any) -> None:
    once = GaussianClahePreprocessor(output_size=32)(_xray(make))
    with pytest.raises(InvalidImageError, match="preprocessed already"):
        GaussianClahePreprocessor()(once)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("kernel_size", 4),
        ("clip_limit", 0),
        ("tile_grid_size", (0, 8)),
        ("output_size", 0),
        ("resize_mode", "letterbox"),
        ("output_dtype", "float64"),
        ("percentile_window", (50, 10)),
        ("gamma", 0),
        ("gamma", -1.5),
        ("working_size", 4),
        ("working_size", 256.5),
        ("window_levels", (228, 0)),
        ("window_levels", (0, 300)),
        ("window_levels", (0.5, 228)),
        ("window_levels", "ab"),
        # Values of the wrong kind, as text options give them: never coerced.
        ("output_size", "abc"),
        ("output_size", 64.5),
        ("kernel_size", 5.0),
        ("clip_limit", "2"),
        ("sigma", True),
        ("tile_grid_size", 8),
        ("tile_grid_size", (8, "a")),
        ("percentile_window", "ab"),
        ("clahe", "false"),
        ("clahe", 0),
    ],
)
def test_invalid_parameters_are_configuration_errors_naming_them(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=option):
        GaussianClahePreprocessor(**{option: value})


def test_numpy_scalars_and_lists_are_taken_as_python_values() -> None:
    preprocessor = GaussianClahePreprocessor(
        output_size=np.int64(64),
        clip_limit=np.float32(2.5),
        tile_grid_size=[4, np.int32(4)],
        percentile_window=[1, 99],
        clahe=np.bool_(False),
    )
    assert preprocessor.output_size == 64
    assert type(preprocessor.output_size) is int
    assert preprocessor.clip_limit == 2.5
    assert type(preprocessor.clip_limit) is float
    assert preprocessor.tile_grid_size == (4, 4)
    assert preprocessor.percentile_window == (1.0, 99.0)
    assert preprocessor.clahe is False
    assert (
        preprocessor.cache_token()
        == GaussianClahePreprocessor(
            output_size=64,
            clip_limit=2.5,
            tile_grid_size=(4, 4),
            percentile_window=(1, 99),
            clahe=False,
        ).cache_token()
    )


def test_stretch_pad_and_crop_give_square_output(make: Any) -> None:
    xray = _xray(make, 48, 64)
    for mode in ("stretch", "pad", "crop"):
        out = GaussianClahePreprocessor(output_size=32, resize_mode=mode)(xray)
        assert out.pixels.shape == (32, 32)


def test_pad_fills_the_margins_with_black(make: Any) -> None:
    xray = XRay(np.full((32, 64), 200, np.uint8), id="wide")
    out = GaussianClahePreprocessor(output_size=32, resize_mode="pad", output_dtype="uint8")(xray)
    assert np.all(out.pixels[:8] == 0)
    assert np.all(out.pixels[24:] == 0)
    assert np.all(out.pixels[8:24] > 0)


def test_boxes_and_masks_move_with_the_pixels(make: Any) -> None:
    mask = np.zeros((48, 64), np.uint8)
    mask[8:24, 32:56] = 255
    xray = _xray(make, 48, 64, boxes=mask_boxes(mask), meta={"infection_mask": mask})
    for mode in ("stretch", "pad", "crop"):
        out = GaussianClahePreprocessor(output_size=32, resize_mode=mode)(xray)
        moved = out.meta["infection_mask"]
        assert moved.shape == (32, 32)
        assert set(np.unique(moved)) <= {0, 255}
        (box,) = out.boxes
        (from_mask,) = mask_boxes(moved)
        assert abs(box.x - from_mask.x) <= 1
        assert abs(box.y - from_mask.y) <= 1
        assert abs(box.x2 - from_mask.x2) <= 1
        assert abs(box.y2 - from_mask.y2) <= 1


def test_mask_of_the_wrong_shape_is_refused_naming_the_key(make: Any) -> None:
    xray = _xray(make, meta={"lung_mask": np.zeros((10, 10), np.uint8)})
    with pytest.raises(InvalidImageError, match="lung_mask"):
        GaussianClahePreprocessor(output_size=32)(xray)


def test_transform_maps_boxes_back_to_the_original(make: Any) -> None:
    xray = _xray(make, 48, 64, boxes=[Box(10, 6, 20, 30)])
    out = GaussianClahePreprocessor(output_size=32, resize_mode="pad")(xray)
    (back,) = boxes_to_original(out.boxes, out.meta["transform"])
    assert back.x == pytest.approx(10)
    assert back.y == pytest.approx(6)
    assert back.width == pytest.approx(20)
    assert back.height == pytest.approx(30)


def test_crop_drops_boxes_cut_away_entirely() -> None:
    transform = fit_resize((32, 64), 32, "crop")
    assert transform_boxes([Box(0, 0, 8, 8)], transform) == ()
    assert len(transform_boxes([Box(28, 8, 8, 8)], transform)) == 1


shapes = st.tuples(st.integers(32, 300), st.integers(32, 300))


@given(
    shape=shapes, size=st.integers(8, 256), mode=st.sampled_from(["stretch", "pad"]), data=st.data()
)
def test_box_round_trip_is_exact_without_cropping(
    shape: tuple[int, int], size: int, mode: str, data: st.DataObject
) -> None:
    height, width = shape
    x = data.draw(st.floats(0, width - 1))
    y = data.draw(st.floats(0, height - 1))
    box = Box(x, y, data.draw(st.floats(0.5, width - x)), data.draw(st.floats(0.5, height - y)))
    transform = fit_resize(shape, size, mode)
    (moved,) = transform_boxes([box], transform)
    assert moved.x2 <= size + 1e-9
    assert moved.y2 <= size + 1e-9
    (back,) = boxes_to_original([moved], transform)
    assert back.x == pytest.approx(box.x, abs=1e-6)
    assert back.y == pytest.approx(box.y, abs=1e-6)
    assert back.x2 == pytest.approx(box.x2, abs=1e-6)
    assert back.y2 == pytest.approx(box.y2, abs=1e-6)


@given(shape=shapes, size=st.integers(8, 256), mode=st.sampled_from(["stretch", "pad", "crop"]))
def test_transformed_boxes_stay_inside_the_output(
    shape: tuple[int, int], size: int, mode: str
) -> None:
    height, width = shape
    transform = fit_resize(shape, size, mode)
    for box in transform_boxes([Box(0, 0, width, height)], transform):
        assert 0 <= box.x <= box.x2 <= size
        assert 0 <= box.y <= box.y2 <= size


def test_registered_as_gaussian_clahe_and_none(make: Any) -> None:
    preprocessor = covidcxr.create_preprocessor("gaussian-clahe", output_size=32)
    assert isinstance(preprocessor, GaussianClahePreprocessor)
    assert isinstance(covidcxr.create_preprocessor("none"), IdentityPreprocessor)


def test_cache_token_changes_with_every_parameter() -> None:
    base = GaussianClahePreprocessor().cache_token()
    assert GaussianClahePreprocessor(clip_limit=3.0).cache_token() != base
    assert GaussianClahePreprocessor(resize_mode="pad").cache_token() != base
    assert GaussianClahePreprocessor(gamma=0.8).cache_token() != base
    assert GaussianClahePreprocessor(clahe=False).cache_token() != base
    assert GaussianClahePreprocessor(working_size=256).cache_token() != base
    assert GaussianClahePreprocessor(window_levels=(0, 228)).cache_token() != base
    assert GaussianClahePreprocessor(window_levels=[0, 255]).cache_token() == base
    assert GaussianClahePreprocessor().cache_token() == base


@pytest.mark.shared_data
def test_real_radiographs_keep_lesion_boxes_on_the_lesions(covid_qu_ex_dir: Path) -> None:
    source = FolderSource(covid_qu_ex_dir, layout="covid-qu-ex", split="Val")
    preprocessor = GaussianClahePreprocessor(output_size=224)
    for xray in itertools.islice(source, 3):
        out = preprocessor(xray)
        assert out.pixels.shape == (224, 224)
        assert len(out.boxes) == len(xray.boxes) > 0
        mask = out.meta["infection_mask"]
        for box in out.boxes:
            inside = mask[int(box.y) : int(np.ceil(box.y2)), int(box.x) : int(np.ceil(box.x2))]
            assert inside.any()


def test_outputs_record_the_preprocessing_parameters_as_plain_data() -> None:
    preprocessor = GaussianClahePreprocessor(output_size=32, clip_limit=3.0)
    out = preprocessor(covidcxr.XRay(np.zeros((64, 64), np.uint8), id="a"))
    recorded = out.meta["preprocessing"]
    assert recorded["name"] == "gaussian-clahe"
    assert recorded["clip_limit"] == 3.0
    assert recorded["tile_grid_size"] == [8, 8]
    assert json.loads(json.dumps(recorded)) == recorded
