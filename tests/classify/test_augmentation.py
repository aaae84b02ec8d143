"""Training augmentation: rotation, zoom, shift and contrast, drawn per image and seeded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from covidcxr import XRay
from covidcxr.classify import VGG19Classifier
from covidcxr.classify._inputs import IDENTITY_VIEW, Augmentation, _to_model_input, make_dataset
from covidcxr.classify._parameters import run_key
from covidcxr.classify._training import CHECKPOINT_FILENAME
from covidcxr.errors import ConfigurationError, OutputError

from ..conftest import hold_in_another_process

SIZE = 33  # odd: the centre is a pixel


def _model_input(image: np.ndarray, view: np.ndarray, **flags: bool) -> np.ndarray:
    import tensorflow as tf

    x = _to_model_input(
        tf.constant(image),
        tf.constant(view),
        size=SIZE,
        normalization="symmetric",
        rotate=False,
        **flags,
    )
    return (np.asarray(x)[..., 0] + 1.0) / 2.0  # back to [0, 1], one channel


def _dot(row: int, col: int) -> np.ndarray:
    image = np.zeros((SIZE, SIZE), np.float32)
    image[row, col] = 1.0
    return image


def _peak(image: np.ndarray) -> tuple[int, int]:
    row, col = np.unravel_index(int(np.argmax(image)), image.shape)
    return int(row), int(col)


def test_only_the_changes_that_are_on_are_drawn() -> None:
    # Rotation alone draws what the rotation-only recipe always drew: one uniform angle
    # per image, so models trained before the other changes existed train the same.
    views = [Augmentation(degrees=12.0).draw(rng) for rng in [np.random.default_rng(5)] * 3]
    angles = np.random.default_rng(5).uniform(-12.0, 12.0, 3)
    np.testing.assert_array_equal([v[0] for v in views], angles.astype(np.float32))
    assert all(np.array_equal(v[1:], IDENTITY_VIEW[1:]) for v in views)
    assert Augmentation(degrees=12.0).geometric
    assert not Augmentation(contrast=0.3).geometric


def test_every_draw_lies_within_its_limits_and_a_seed_repeats_them() -> None:
    augmentation = Augmentation(degrees=10.0, scale=0.1, shift=0.05, contrast=0.25, seed=3)
    rng = np.random.default_rng(augmentation.seed)
    views = np.array([augmentation.draw(rng) for _ in range(500)])
    again = np.random.default_rng(augmentation.seed)
    np.testing.assert_array_equal(views[:5], [augmentation.draw(again) for _ in range(5)])
    assert np.all(np.abs(views[:, 0]) <= 10.0)
    assert np.all((views[:, 1] >= 0.9) & (views[:, 1] <= 1.1))
    assert np.all(np.abs(views[:, 2:4]) <= 0.05)
    assert np.all((views[:, 4] >= 1 / 1.25 - 1e-6) & (views[:, 4] <= 1.25 + 1e-6))
    # Gamma is log-uniform: as many darker views as brighter ones.
    assert 0.4 < np.mean(views[:, 4] > 1.0) < 0.6


def test_the_general_transform_at_rest_gives_a_rotation_bit_for_bit() -> None:
    image = np.random.default_rng(0).random((40, 48), dtype=np.float32)
    angle = np.float32(7.5)
    view = IDENTITY_VIEW.copy()
    view[0] = angle
    rotated = _model_input_rotated(image, angle)
    np.testing.assert_array_equal(_model_input(image, view, geometric=True), rotated)


def _model_input_rotated(image: np.ndarray, angle: np.float32) -> np.ndarray:
    import tensorflow as tf

    x = _to_model_input(
        tf.constant(image), tf.constant(angle), size=SIZE, normalization="symmetric", rotate=True
    )
    return (np.asarray(x)[..., 0] + 1.0) / 2.0


def test_zoom_magnifies_about_the_centre_and_shift_moves_by_a_fraction_of_the_side() -> None:
    centre = SIZE // 2
    zoom = np.array([0.0, 2.0, 0.0, 0.0, 1.0], np.float32)
    assert _peak(_model_input(_dot(centre, centre + 4), zoom, geometric=True)) == (
        centre,
        centre + 8,
    )
    shift = np.array([0.0, 1.0, 6 / SIZE, -3 / SIZE, 1.0], np.float32)
    assert _peak(_model_input(_dot(centre, centre), shift, geometric=True)) == (
        centre - 3,
        centre + 6,
    )


def test_contrast_raises_pixels_to_the_drawn_gamma_keeping_black_and_white() -> None:
    image = np.tile(np.linspace(0.0, 1.0, SIZE, dtype=np.float32), (SIZE, 1))
    gamma = np.array([0.0, 1.0, 0.0, 0.0, 2.0], np.float32)
    plain = _model_input(image, IDENTITY_VIEW)
    darker = _model_input(image, gamma, contrast=True)
    np.testing.assert_allclose(darker, plain**2, atol=1e-6)
    assert darker[0, 0] == plain[0, 0] == 0.0
    assert darker[0, -1] == pytest.approx(1.0)


def test_make_dataset_applies_a_different_draw_to_each_image() -> None:
    rng = np.random.default_rng(1)
    image = XRay(rng.integers(0, 256, (40, 40), dtype=np.uint8), id="a")
    options: dict[str, Any] = {"input_size": 32, "normalization": "symmetric", "batch_size": 4}
    augmentation = Augmentation(scale=0.2, shift=0.1, contrast=0.5, seed=2)
    (batch,) = (
        np.asarray(b) for b in make_dataset([image] * 4, augmentation=augmentation, **options)
    )
    (again,) = (
        np.asarray(b) for b in make_dataset([image] * 4, augmentation=augmentation, **options)
    )
    (plain,) = (np.asarray(b) for b in make_dataset([image] * 4, **options))
    np.testing.assert_array_equal(batch, again)  # seeded: the same views every pass
    assert all(not np.allclose(batch[i], batch[j]) for i in range(4) for j in range(i))
    assert all(np.array_equal(plain[0], plain[i]) for i in range(4))


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("augmentation_scale", 0.5),
        ("augmentation_scale", -0.1),
        ("augmentation_shift", True),
        ("augmentation_contrast", 1.0),
        ("augmentation_contrast", "0.2"),
    ],
)
def test_an_invalid_augmentation_is_refused_naming_it(
    option: str, value: Any, train_xrays: list[XRay], tiny: dict[str, Any]
) -> None:
    with pytest.raises(ConfigurationError, match=option):
        VGG19Classifier(**{**tiny, option: value}).fit(train_xrays)


def test_checkpoints_written_before_the_new_changes_existed_still_resume() -> None:
    params = VGG19Classifier().get_params()
    before = {
        k: v
        for k, v in params.items()
        if k not in ("augmentation_scale", "augmentation_shift", "augmentation_contrast")
    }
    assert run_key(params, {}) == run_key(before, {})
    assert run_key({**params, "augmentation_scale": 0.1}, {}) != run_key(params, {})
    # XLA's kernels round otherwise: a run compiled with it is another run.
    assert run_key({**params, "jit_compile": True}, {}) != run_key(params, {})
    assert run_key({k: v for k, v in params.items() if k != "jit_compile"}, {}) == (
        run_key(params, {})
    )


def test_weights_from_a_file_key_a_run_by_their_contents(tmp_path: Path) -> None:
    params = VGG19Classifier().get_params()
    weights = tmp_path / "backbone.weights.h5"
    weights.write_bytes(b"backbone A")
    first = run_key({**params, "weights": str(weights)}, {})
    weights.write_bytes(b"backbone B")
    assert run_key({**params, "weights": str(weights)}, {}) != first


def test_training_with_every_change_is_repeatable(
    train_xrays: list[XRay], tiny: dict[str, Any]
) -> None:
    options = {
        **tiny,
        "trainable_blocks": "all",
        "augmentation": 10.0,
        "augmentation_scale": 0.1,
        "augmentation_shift": 0.05,
        "augmentation_contrast": 0.25,
        "epochs": 1,
    }
    first = VGG19Classifier(**options, seed=4).fit(train_xrays)
    second = VGG19Classifier(**options, seed=4).fit(train_xrays)
    for mine, theirs in zip(first.model_.get_weights(), second.model_.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert first.history_["loss"] == second.history_["loss"]


def test_a_checkpoint_folder_that_is_a_file_is_refused_before_training(
    train_xrays: list[XRay], tiny: dict[str, Any], tmp_path: Path
) -> None:
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    epochs: list[int] = []
    classifier = VGG19Classifier(
        **tiny, checkpoint_dir=mine, on_epoch_end=lambda epoch, logs: epochs.append(epoch)
    )
    with pytest.raises(OutputError, match="a file, not a folder"):
        classifier.fit(train_xrays)
    assert epochs == []
    assert mine.read_text() == "mine"


def test_a_checkpoint_folder_another_process_trains_in_is_refused_before_training(
    train_xrays: list[XRay], tiny: dict[str, Any], tmp_path: Path
) -> None:
    holder = hold_in_another_process(tmp_path)
    epochs: list[int] = []
    classifier = VGG19Classifier(
        **tiny, checkpoint_dir=tmp_path, on_epoch_end=lambda epoch, logs: epochs.append(epoch)
    )
    try:
        with pytest.raises(OutputError, match="another training process"):
            classifier.fit(train_xrays)
    finally:
        holder.kill()
        holder.wait()
    assert epochs == []
    assert not (tmp_path / CHECKPOINT_FILENAME).exists()
