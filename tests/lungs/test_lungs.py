"""The lung segmenter, the lung crop and severity, on phantoms and hand-made fields."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from covidcxr import Box, Severity, XRay
from covidcxr.boxes import ResizeTransform
from covidcxr.errors import ConfigurationError, ModelFormatError, NoLungsFoundWarning
from covidcxr.evaluate import segmentation_scores, severity_by_class
from covidcxr.lungs import (
    LEFT_LUNG,
    LUNG_CROP_KEY,
    LUNG_MASK_KEY,
    LUNGS_FOUND_KEY,
    LUNGS_KEY,
    RIGHT_LUNG,
    LungCrop,
    LungFields,
    LungSegmenter,
    inside_lungs,
    lung_labels,
    lung_severity,
)
from covidcxr.phantoms import generate_phantoms


def two_lungs(shape: tuple[int, int] = (64, 80)) -> np.ndarray:
    """Labels with a right lung on the image's left and a left lung on its right."""
    labels = np.zeros(shape, np.uint8)
    labels[10:50, 8:30] = RIGHT_LUNG
    labels[12:54, 46:70] = LEFT_LUNG
    return labels


class FixedSegmenter(LungSegmenter):
    """Returns the same lung fields for every radiograph (scaled to its shape)."""

    def __init__(self, labels: np.ndarray) -> None:
        super().__init__(input_size=32, depth=2)
        self.labels = labels
        self.model_ = object()

    def segment(self, xrays: Sequence[XRay]) -> list[LungFields]:
        import cv2

        out = []
        for xray in xrays:
            height, width = xray.shape
            resized = cv2.resize(self.labels, (width, height), interpolation=cv2.INTER_NEAREST)
            out.append(LungFields(np.asarray(resized, np.uint8)))
        return out


# -- post-processing --------------------------------------------------------------------


def test_lung_labels_keep_the_two_largest_components_and_fill_their_holes() -> None:
    probabilities = np.zeros((40, 40), np.float32)
    probabilities[5:35, 3:15] = 0.9
    probabilities[5:35, 25:37] = 0.9
    probabilities[15:20, 6:10] = 0.1  # a hole in the right lung
    probabilities[0:3, 18:21] = 0.9  # a third, smaller component
    labels = lung_labels(probabilities, (40, 40), min_component_fraction=0.001)
    assert set(np.unique(labels)) == {0, RIGHT_LUNG, LEFT_LUNG}
    assert (labels[15:20, 6:10] == RIGHT_LUNG).all()  # the hole is filled
    assert (labels[0:3, 18:21] == 0).all()  # the third component is dropped
    assert (labels[:, :20] != LEFT_LUNG).all()
    assert (labels[:, 20:] != RIGHT_LUNG).all()


def test_lung_labels_follow_the_output_shape() -> None:
    probabilities = np.zeros((16, 16), np.float32)
    probabilities[4:12, 2:6] = probabilities[4:12, 10:14] = 0.9
    labels = lung_labels(probabilities, (48, 32))
    assert labels.shape == (48, 32)
    assert labels[24, 8] == RIGHT_LUNG
    assert labels[24, 24] == LEFT_LUNG


def test_lung_fields_report_nothing_found_on_an_empty_map() -> None:
    fields = LungFields(np.zeros((10, 10), np.uint8))
    assert not fields.found
    assert fields.box is None
    assert fields.area_fraction == 0.0
    assert "found=False" in repr(fields)
    assert not LungFields(np.ones((10, 10), np.uint8)).found  # the whole frame is no lung


# -- the crop ---------------------------------------------------------------------------


def test_lung_crop_maps_boxes_and_masks_and_chains_the_transform() -> None:
    labels = two_lungs()
    pixels = np.zeros((64, 80), np.float32)
    lesion = Box(10, 20, 10, 10)
    mask = np.zeros((64, 80), np.uint8)
    mask[20:30, 10:20] = 255
    earlier = ResizeTransform.stretch((128, 160), (64, 80))
    xray = XRay(pixels, "a", boxes=[lesion], meta={"transform": earlier, "infection_mask": mask})
    stage = LungCrop(FixedSegmenter(labels), output_size=32, margin=0.0)
    (out,) = stage.apply([xray])
    assert out.shape == (32, 32)
    crop = out.meta[LUNG_CROP_KEY]
    # The lungs span x 8..70 and y 10..54 of the 64 x 80 frame.
    assert (crop.input_shape, crop.output_shape) == ((64, 80), (32, 32))
    assert out.boxes == crop.map_boxes([lesion])
    (back,) = crop.inverse().map_boxes(out.boxes)
    assert back == pytest.approx(lesion)
    # The chained transform takes the original radiograph to the crop and back.
    chained = out.meta["transform"]
    original = Box(20, 40, 20, 20)
    (there,) = chained.map_boxes([original])
    assert chained.inverse().map_boxes([there])[0] == pytest.approx(original)
    assert there == pytest.approx(crop.map_boxes(earlier.map_boxes([original]))[0])
    assert out.meta["infection_mask"].shape == (32, 32)
    assert out.meta["infection_mask"].any()
    assert out.meta[LUNGS_FOUND_KEY] is True
    assert isinstance(out.meta[LUNGS_KEY], LungFields)
    assert out.meta[LUNGS_KEY].found


def test_fields_filling_the_crop_still_count_as_found() -> None:
    # Lungs that fill 90 % of their own box: over the whole-frame ceiling once cropped.
    labels = np.zeros((100, 100), np.uint8)
    labels[20:80, 20:48] = RIGHT_LUNG
    labels[20:80, 52:80] = LEFT_LUNG
    stage = LungCrop(FixedSegmenter(labels), output_size=32, margin=0.0)
    (out,) = stage.apply([XRay(np.zeros((100, 100), np.float32), "a")])
    assert out.meta[LUNGS_KEY].area_fraction > 0.85
    assert out.meta[LUNGS_KEY].found
    infection = np.ones((32, 32), np.float32)
    severity = lung_severity(infection, out.meta[LUNGS_KEY])
    assert severity is not None
    assert severity.score == 8


def test_lung_crop_masks_outside_the_lungs_when_asked() -> None:
    labels = two_lungs()
    pixels = np.ones((64, 80), np.float32)
    stage = LungCrop(FixedSegmenter(labels), output_size=40, margin=0.0, mask_outside=True)
    (out,) = stage.apply([XRay(pixels, "a")])
    assert out.pixels.min() == 0.0
    assert out.pixels.max() == 1.0
    fields = out.meta[LUNGS_KEY]
    assert np.asarray(out.pixels)[fields.mask] == pytest.approx(1.0)


def test_no_lungs_fall_back_to_the_whole_frame_with_a_warning() -> None:
    stage = LungCrop(FixedSegmenter(np.zeros((8, 8), np.uint8)), output_size=16)
    xray = XRay(np.zeros((40, 20), np.uint8), "blank", boxes=[Box(0, 0, 20, 40)])
    with pytest.warns(NoLungsFoundWarning, match="1 of 1"):
        (out,) = stage.apply([xray])
    assert out.meta[LUNGS_FOUND_KEY] is False
    assert out.boxes == (Box(0, 0, 16, 16),)  # the whole frame, stretched


def test_lung_crop_refuses_a_mask_of_another_shape() -> None:
    from covidcxr.errors import InvalidImageError

    stage = LungCrop(FixedSegmenter(two_lungs()), output_size=16)
    xray = XRay(np.zeros((64, 80), np.uint8), "a", meta={"infection_mask": np.zeros((8, 8))})
    with pytest.raises(InvalidImageError, match="infection_mask"):
        stage.apply([xray])


def test_lung_crop_options_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="margin"):
        LungCrop(margin=0.9)
    with pytest.raises(ConfigurationError, match="outputsize"):
        LungCrop.from_options({"outputsize": 3})
    with pytest.raises(ConfigurationError, match=r"\[lungs.segmenter\] has no option 'epoch'"):
        LungCrop.from_options({"segmenter": {"epoch": 3}})


# -- severity ---------------------------------------------------------------------------


def test_severity_is_the_infected_share_of_each_lung() -> None:
    labels = two_lungs()
    infection = np.zeros((64, 80), np.float32)
    infection[10:30, 8:30] = 0.8  # half of the right lung
    severity = lung_severity(infection, LungFields(labels))
    assert severity is not None
    assert severity.right == pytest.approx(0.5)
    assert severity.left == 0.0
    right, left = (labels == RIGHT_LUNG).sum(), (labels == LEFT_LUNG).sum()
    assert severity.total == pytest.approx(0.5 * right / (right + left))
    assert (severity.right_grade, severity.left_grade, severity.score) == (3, 0, 3)


def test_severity_needs_both_lungs() -> None:
    labels = two_lungs()
    labels[labels == LEFT_LUNG] = 0
    assert lung_severity(np.ones((8, 8)), LungFields(labels)) is None


@pytest.mark.parametrize(
    ("share", "grade"), [(0.0, 0), (0.01, 1), (0.249, 1), (0.25, 2), (0.74, 3), (0.75, 4), (1, 4)]
)
def test_extent_grades_are_quartiles(share: float, grade: int) -> None:
    assert Severity(share, 0.0, share / 2).right_grade == grade


def test_severity_refuses_shares_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="share"):
        Severity(1.5, 0.0, 0.5)


def test_inside_lungs_clears_the_map_outside_them() -> None:
    labels = two_lungs()
    kept = inside_lungs(np.ones((64, 80), np.float32), LungFields(labels), grow=0.0)
    assert (kept[labels > 0] == 1).all()
    assert (kept[labels == 0] == 0).all()
    unfound = LungFields(np.zeros((4, 4), np.uint8))
    assert (inside_lungs(np.ones((4, 4)), unfound) == 1).all()


def test_severity_by_class_counts_scores() -> None:
    rows = severity_by_class(
        ["covid-19", "normal", None, "normal"],
        [Severity(0.3, 0.3, 0.3), None, Severity(1, 1, 1), Severity(0, 0, 0)],
    )
    assert [(r.label, r.n_images) for r in rows] == [("covid-19", 1), ("normal", 1)]
    assert rows[0].score_counts[4] == 1
    assert rows[0].to_dict()["median_score"] == 4.0


# -- scores -----------------------------------------------------------------------------


def test_segmentation_scores_count_pixels() -> None:
    truth = np.zeros((4, 4), bool)
    truth[:2] = True
    empty = np.zeros((4, 4), bool)
    scores = segmentation_scores([(truth, truth), (empty, truth), (empty, empty)])
    assert scores.n_images == 3
    assert scores.dice == pytest.approx(2 / 3)
    assert scores.iou == pytest.approx(2 / 3)
    assert scores.pooled_dice == pytest.approx(2 * 8 / (8 + 16))
    with pytest.raises(ValueError, match="shapes differ"):
        segmentation_scores([(truth, np.zeros((2, 2)))])
    with pytest.raises(ValueError, match="no masks"):
        segmentation_scores([])


# -- the network, trained for real on phantoms -------------------------------------------


@pytest.fixture(scope="module")
def fitted_segmenter() -> LungSegmenter:
    train = generate_phantoms(16, size=64, seed=0)
    segmenter = LungSegmenter(
        input_size=32, base_filters=4, depth=2, epochs=12, batch_size=8, learning_rate=1e-2
    )
    return segmenter.fit(train[:40], validation=train[40:])


def test_the_segmenter_learns_phantom_lungs(fitted_segmenter: LungSegmenter) -> None:
    held_out = generate_phantoms(3, size=64, seed=7)
    fields = fitted_segmenter.segment(held_out)
    scores = segmentation_scores(
        (f.mask, np.asarray(x.meta[LUNG_MASK_KEY]) > 0)
        for f, x in zip(fields, held_out, strict=True)
    )
    assert scores.dice > 0.7, scores
    assert all(f.found for f in fields)
    assert fitted_segmenter.history_["val_loss"]


def test_the_segmenter_saves_and_loads_the_same_fields(
    fitted_segmenter: LungSegmenter, tmp_path: Path
) -> None:
    images = generate_phantoms(1, size=64, seed=9)
    fitted_segmenter.save(tmp_path / "lungs.zip")
    loaded = LungSegmenter.load(tmp_path / "lungs.zip")
    assert loaded.get_params() == {**fitted_segmenter.get_params(), "on_epoch_end": None}
    for a, b in zip(fitted_segmenter.segment(images), loaded.segment(images), strict=True):
        assert (a.labels == b.labels).all()
    (tmp_path / "other.zip").write_bytes(b"not a model")
    with pytest.raises(ModelFormatError):
        LungSegmenter.load(tmp_path / "other.zip")


def test_the_segmenter_needs_lung_masks() -> None:
    unmasked = [XRay(np.zeros((32, 32), np.uint8), str(i)) for i in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(ConfigurationError, match="no radiograph has a lung mask"):
            LungSegmenter(input_size=32, depth=2, epochs=1).fit(unmasked)


def test_an_unfitted_segmenter_says_so() -> None:
    with pytest.raises(ConfigurationError, match="not fitted"):
        LungSegmenter().segment([XRay(np.zeros((8, 8), np.uint8), "a")])


def test_augmentation_flips_and_warps_image_and_mask_together() -> None:
    from covidcxr._unet import build_unet, keras_module, paired_batches

    keras = keras_module()
    images = np.zeros((8, 32, 32, 1), np.float32)
    images[:, 8:24, 2:10] = 1.0  # a bright block on the left
    masks = images.copy()
    batches = paired_batches(keras, images, masks, 4, seed=1, flip=True, warp=True)
    flipped = 0
    for step in range(3 * len(batches)):  # three epochs: Keras numbers batches across them
        x, y = batches[step]
        for image, mask in zip(x, y, strict=True):
            # The mask covers the same side as the image's block, whatever was done.
            assert ((image[..., 0] > 0.5) == (mask[..., 0] > 0.5)).mean() > 0.95
            flipped += bool(mask[..., 16:, 0].sum() > mask[..., :16, 0].sum())
    assert 0 < flipped < 24  # some were flipped, not all
    # No augmentation layer inside the network, where it would move the image alone.
    model = build_unet(keras, 32, 4, 2, name="u", output_name="p")
    assert not any("flip" in layer.name.lower() for layer in model.layers)


def test_a_batch_depends_on_its_number_alone() -> None:
    # Keras' prefetching thread may ask for batches early, late or twice: each must come
    # out the same, and an epoch must visit every pair once, in a new order each epoch.
    from covidcxr._unet import keras_module, paired_batches

    keras = keras_module()
    rng = np.random.default_rng(0)
    images = rng.random((10, 16, 16, 1), dtype=np.float32)
    masks = (images > 0.5).astype(np.float32)
    batches = paired_batches(keras, images, masks, 4, seed=2, flip=True, warp=True)
    later = [batches[step] for step in reversed(range(2 * len(batches)))][::-1]
    for step, (x, y) in enumerate(later):
        np.testing.assert_array_equal(batches[step][0], x)
        np.testing.assert_array_equal(batches[step][1], y)
    resumed = paired_batches(keras, images, masks, 4, seed=2, flip=True, warp=True, first_epoch=1)
    np.testing.assert_array_equal(resumed[0][0], batches[len(batches)][0])

    plain = paired_batches(keras, images, masks, 4, seed=2, flip=False, warp=False)
    seen = [np.concatenate([plain[step][0] for step in range(e * 3, e * 3 + 3)]) for e in range(2)]
    for epoch in seen:
        # Every image once per epoch (identified by its first pixel).
        assert sorted(epoch[:, 0, 0, 0]) == sorted(images[:, 0, 0, 0])
    assert not np.array_equal(seen[0], seen[1])


def test_validation_without_lung_masks_trains_without_early_stopping() -> None:
    train = generate_phantoms(2, size=32, seed=0)
    unmasked = [XRay(np.asarray(x.pixels), x.id, label=x.label) for x in train]
    segmenter = LungSegmenter(input_size=32, base_filters=2, depth=2, epochs=2, batch_size=6)
    with pytest.warns(UserWarning, match="no validation radiograph has a lung mask"):
        segmenter.fit(train, validation=unmasked)
    assert len(segmenter.history_["loss"]) == 2
    assert "val_loss" not in segmenter.history_
