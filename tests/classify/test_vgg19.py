"""VGG19Classifier: the published recipe's behaviour, on tiny models and tiny images."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
import weakref
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import covidcxr
from covidcxr import XRay
from covidcxr._threads import compute_threads
from covidcxr.classify import FROM_SCRATCH, PixelRangeWarning, VGG19Classifier
from covidcxr.classify import _weights as weights_module
from covidcxr.classify._persistence import METADATA_MEMBER, MODEL_MEMBER
from covidcxr.classify._training import CHECKPOINT_FILENAME
from covidcxr.errors import (
    ConfigurationError,
    InvalidImageError,
    ModelFormatError,
    PreprocessingMismatchWarning,
    ResumeMismatchWarning,
    WeightsUnavailableError,
)
from covidcxr.phantoms import generate_phantoms
from covidcxr.preprocess import GaussianClahePreprocessor

from ..conftest import edit_archive_metadata
from .conftest import TINY, TinyRun, toy_xrays

# ---------------------------------------------------------------------------- registration


def test_is_registered_as_vgg19_through_the_plugin_hooks() -> None:
    registration = covidcxr.plugins.available_classifiers()["vgg19"]
    assert registration.factory is VGG19Classifier
    assert registration.plugin == "covidcxr.classify.plugin"


def test_create_classifier_builds_it_with_the_given_options() -> None:
    classifier = covidcxr.create_classifier("vgg19", input_size=64, weights=None, epochs=3)
    assert isinstance(classifier, VGG19Classifier)
    assert (classifier.input_size, classifier.weights, classifier.epochs) == (64, None, 3)


def test_importing_the_plugin_does_not_import_tensorflow() -> None:
    code = (
        "import sys, covidcxr, covidcxr.classify, covidcxr.classify.plugin; "
        "covidcxr.classify.VGG19Classifier(); "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------------------- parameters


def test_defaults_are_the_published_recipe() -> None:
    params = VGG19Classifier().get_params()
    assert params["input_size"] == 224
    assert params["weights"] == "imagenet"
    assert params["trainable_blocks"] == "auto"
    assert VGG19Classifier().n_trainable_blocks == 0  # ImageNet weights: a frozen base
    assert (params["optimizer"], params["learning_rate"], params["momentum"]) == ("sgd", 1e-3, 0.0)
    assert (params["batch_size"], params["epochs"]) == (64, 100)
    assert (params["dense_units"], params["dropout"], params["augmentation"]) == (512, 0.5, 15.0)


def test_without_pretrained_weights_the_whole_network_trains_by_default() -> None:
    # A frozen random base predicts one class for everything; weights=None alone must
    # not give that.
    scratch = VGG19Classifier(weights=None)
    assert scratch.n_trainable_blocks == 5
    assert not scratch.uses_feature_cache
    assert VGG19Classifier(weights="backbone.weights.h5").n_trainable_blocks == 0


def test_the_from_scratch_recipe_learns_the_toy_problem(
    train_xrays: list[XRay], valid_xrays: list[XRay]
) -> None:
    # At 32 px and an eighth of the width, with batches of 8, for speed.
    recipe = {**FROM_SCRATCH, "input_size": 32, "width_multiplier": 0.125, "batch_size": 8}
    classifier = VGG19Classifier(**{**recipe, "dense_units": 16}).fit(train_xrays)
    accuracy = np.mean(
        [p == x.label for p, x in zip(classifier.predict(valid_xrays), valid_xrays, strict=True)]
    )
    assert accuracy >= 2 / 3


def test_init_only_stores_parameters() -> None:
    classifier = VGG19Classifier(input_size=7, optimizer="rmsprop")  # type: ignore[arg-type]
    assert classifier.get_params()["input_size"] == 7
    assert not hasattr(classifier, "model_")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("input_size", 16),
        ("trainable_blocks", 6),
        ("optimizer", "rmsprop"),
        ("lr_schedule", "step"),
        ("augmentation", 400.0),
        ("class_weight", "inverse"),
        ("class_weight", {"normal": 0.0}),
        ("class_weight", {"normal": float("nan")}),
        ("width_multiplier", 0.0),
        ("early_stopping", 0),
    ],
)
def test_fit_rejects_an_invalid_option_naming_it(
    option: str, value: Any, train_xrays: list[XRay], tiny: dict[str, Any]
) -> None:
    with pytest.raises(ConfigurationError, match=option):
        VGG19Classifier(**{**tiny, option: value}).fit(train_xrays)


def test_imagenet_weights_with_batch_norm_are_rejected(train_xrays: list[XRay]) -> None:
    with pytest.raises(ConfigurationError, match="batch_norm"):
        VGG19Classifier(weights="imagenet", batch_norm=True).fit(train_xrays)


def test_repr_shows_the_parameters_that_differ_from_the_defaults() -> None:
    assert repr(VGG19Classifier(input_size=64, weights=None)) == (
        "VGG19Classifier(input_size=64, weights=None)"
    )


# ---------------------------------------------------------------------------- weights


def test_unreachable_imagenet_weights_raise_an_error_that_says_how_to_supply_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, train_xrays: list[XRay]
) -> None:
    # A real download attempt by Keras, to a loopback port nothing listens on.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(weights_module, "IMAGENET_NOTOP_URL", "http://127.0.0.1:9/vgg19_notop.h5")
    with pytest.raises(WeightsUnavailableError) as caught:
        VGG19Classifier(input_size=32).fit(train_xrays)
    message = str(caught.value)
    assert weights_module.IMAGENET_NOTOP_MD5 in message
    assert str(tmp_path / "keras" / "models" / weights_module.IMAGENET_NOTOP_FILENAME) in message
    assert "weights=None" in message
    assert "weights='/path/to/" in message


def test_cached_imagenet_weights_with_a_wrong_md5_are_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, train_xrays: list[XRay]
) -> None:
    cache = tmp_path / "keras" / "models"
    cache.mkdir(parents=True)
    (cache / weights_module.IMAGENET_NOTOP_FILENAME).write_bytes(b"not the weights")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(weights_module, "IMAGENET_NOTOP_URL", "http://127.0.0.1:9/vgg19_notop.h5")
    with pytest.raises(WeightsUnavailableError, match="could not be downloaded"):
        VGG19Classifier(input_size=32).fit(train_xrays)


def test_weights_path_loads_the_backbone_from_a_file(
    tmp_path: Path, train_xrays: list[XRay], tiny: dict[str, Any]
) -> None:
    from covidcxr.classify._network import build_backbone

    source = build_backbone(input_size=32, width_multiplier=0.125, seed=123)
    weights_file = tmp_path / "backbone.weights.h5"
    source.save_weights(weights_file)
    classifier = VGG19Classifier(**{**tiny, "weights": weights_file}).fit(train_xrays)
    np.testing.assert_array_equal(
        classifier.model_.get_layer("block3_conv2").get_weights()[0],
        source.get_layer("block3_conv2").get_weights()[0],
    )
    assert classifier.input_normalization == "imagenet"


def test_a_missing_weights_file_is_named_in_the_error(
    tmp_path: Path, train_xrays: list[XRay], tiny: dict[str, Any]
) -> None:
    missing = tmp_path / "nowhere.h5"
    with pytest.raises(WeightsUnavailableError, match=str(missing)):
        VGG19Classifier(**{**tiny, "weights": missing}).fit(train_xrays)


def test_a_weights_file_for_another_architecture_is_refused(
    tmp_path: Path, train_xrays: list[XRay], tiny: dict[str, Any]
) -> None:
    from covidcxr.classify._network import build_backbone

    weights_file = tmp_path / "bn.weights.h5"
    build_backbone(input_size=32, width_multiplier=0.125, batch_norm=True).save_weights(
        weights_file
    )
    with pytest.raises(WeightsUnavailableError, match="does not match"):
        VGG19Classifier(**{**tiny, "weights": weights_file}).fit(train_xrays)


# ---------------------------------------------------------------------------- inputs


@pytest.mark.filterwarnings("ignore::covidcxr.classify.PixelRangeWarning")  # blank images
def test_prepare_batch_resizes_replicates_channels_and_normalises_for_imagenet() -> None:
    white = XRay(np.full((50, 70), 255, np.uint8), id="white")
    batch = VGG19Classifier(input_size=32, weights="imagenet").prepare_batch([white, white])
    assert batch.shape == (2, 32, 32, 3)
    assert batch.dtype == np.float32
    np.testing.assert_allclose(
        batch[0, 5, 5], [255 - 103.939, 255 - 116.779, 255 - 123.68], rtol=1e-5
    )


@pytest.mark.filterwarnings("ignore::covidcxr.classify.PixelRangeWarning")  # blank images
def test_prepare_batch_maps_unit_range_to_symmetric_range_without_pretrained_weights() -> None:
    images = [XRay(np.full((40, 40), value, np.float32), id=str(value)) for value in (0.0, 1.0)]
    batch = VGG19Classifier(input_size=32, weights=None).prepare_batch(images)
    np.testing.assert_allclose(batch[:, 10, 10, 0], [-1.0, 1.0], atol=1e-6)


def test_prepare_batch_treats_uint8_uint16_and_unit_float_alike() -> None:
    ramp = np.tile(np.linspace(0, 1, 48, dtype=np.float32), (48, 1))
    images = [
        XRay((ramp * 255).round().astype(np.uint8), id="u8"),
        XRay((ramp * 65535).round().astype(np.uint16), id="u16"),
        XRay(ramp, id="f32"),
    ]
    batch = VGG19Classifier(input_size=32, weights=None).prepare_batch(images)
    np.testing.assert_allclose(batch[0], batch[2], atol=2 / 255)
    np.testing.assert_allclose(batch[1], batch[2], atol=1e-4)


@pytest.mark.parametrize("normalization", ["imagenet", "symmetric"])
def test_prediction_input_equals_the_training_pipelines_input_bit_for_bit(
    normalization: str,
) -> None:
    # Prediction converts a batch at a time (one call per run of same-shaped images) with
    # one traced function instead of building a tf.data pipeline per call, where training
    # converts image by image; the values must be the ones training computed.
    from covidcxr.classify._inputs import inference_batches, make_dataset

    rng = np.random.default_rng(0)
    images = [
        XRay(rng.integers(0, 256, (50, 40), dtype=np.uint8), id="u8"),
        XRay(rng.integers(0, 256, (50, 40), dtype=np.uint8), id="u8-same-shape"),
        XRay(rng.integers(0, 65536, (33, 61), dtype=np.uint16), id="u16"),
        XRay(rng.random((64, 64), dtype=np.float32), id="f32"),
        XRay(rng.random((64, 64), dtype=np.float32), id="f32-same-shape"),
        XRay(rng.random((64, 64), dtype=np.float32), id="f32-next-batch"),
        XRay(rng.integers(0, 256, (17, 17), dtype=np.uint8), id="small"),
        XRay(rng.integers(0, 256, (256, 256), dtype=np.uint8), id="large"),
    ]
    options: dict[str, Any] = {"input_size": 32, "normalization": normalization, "batch_size": 5}
    fast = list(inference_batches(images, **options))
    reference = [np.asarray(batch) for batch in make_dataset(images, **options)]
    assert [batch.shape for batch in fast] == [batch.shape for batch in reference]
    for mine, theirs in zip(fast, reference, strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_test_time_views_are_the_image_then_training_rotations_of_it() -> None:
    from covidcxr.classify._inputs import Augmentation, inference_batches, make_dataset

    rng = np.random.default_rng(3)
    image = XRay(rng.integers(0, 256, (48, 40), dtype=np.uint8), id="a")
    options: dict[str, Any] = {"input_size": 32, "normalization": "symmetric", "batch_size": 4}
    angle = float(np.random.default_rng(7).uniform(-12.0, 12.0))  # what training draws first
    (views,) = inference_batches([image, image], rotations=(angle, 0.0), **options)
    (plain,) = inference_batches([image], **options)
    augmentation = Augmentation(degrees=12.0, seed=7)
    (trained,) = (
        np.asarray(b) for b in make_dataset([image], augmentation=augmentation, **options)
    )
    assert views.shape == (6, 32, 32, 3)  # two images, three views each, image by image
    np.testing.assert_array_equal(views[0], plain[0])
    np.testing.assert_allclose(views[1], trained[0], atol=1e-6)
    np.testing.assert_array_equal(views[2], plain[0])  # a rotation by 0 is the image
    np.testing.assert_array_equal(views[3:], views[:3])
    assert not np.allclose(views[1], views[0])


def test_test_time_augmentation_averages_the_views_probabilities(
    tiny_run: TinyRun, valid_xrays: list[XRay]
) -> None:
    from sklearn.base import clone

    fitted = tiny_run.classifier
    plain = fitted.predict_proba(valid_xrays)
    rotations = (-8.0, 8.0)
    augmented = copy_of(fitted, test_time_rotations=rotations)
    by_hand = np.mean(
        [
            fitted.model_.predict(
                np.stack([_rotated_input(fitted, x, angle) for x in valid_xrays]), verbose=0
            )
            for angle in (0.0, *rotations)
        ],
        axis=0,
    )
    averaged = augmented.predict_proba(valid_xrays)
    np.testing.assert_allclose(averaged, by_hand, atol=1e-5)
    np.testing.assert_allclose(averaged.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(averaged, plain, atol=1e-6)
    same = copy_of(fitted, test_time_rotations=(0.0, 0.0)).predict_proba(valid_xrays)
    np.testing.assert_allclose(same, plain, atol=1e-6)
    assert clone(augmented).test_time_rotations == rotations


def test_test_time_rotations_are_saved_with_the_model(
    tiny_run: TinyRun, valid_xrays: list[XRay], tmp_path: Path
) -> None:
    augmented = copy_of(tiny_run.classifier, test_time_rotations=(-6.0, 6.0))
    augmented.save(tmp_path / "model.cxr")
    loaded = VGG19Classifier.load(tmp_path / "model.cxr")
    assert loaded.test_time_rotations == (-6.0, 6.0)
    np.testing.assert_array_equal(
        loaded.predict_proba(valid_xrays), augmented.predict_proba(valid_xrays)
    )


@pytest.mark.parametrize("rotations", [(200.0,), "10", (None,), 5.0])
def test_invalid_test_time_rotations_are_refused_at_prediction(
    tiny_run: TinyRun, valid_xrays: list[XRay], rotations: Any
) -> None:
    broken = copy_of(tiny_run.classifier, test_time_rotations=rotations)
    with pytest.raises(ConfigurationError, match="test_time_rotations"):
        broken.predict_proba(valid_xrays[:2])


def copy_of(fitted: VGG19Classifier, **params: Any) -> VGG19Classifier:
    """A shallow copy of a fitted classifier with other prediction parameters."""
    import copy

    other = copy.copy(fitted)
    other._predict_function = None
    return other.set_params(**params)


def _rotated_input(classifier: VGG19Classifier, xray: XRay, angle: float) -> np.ndarray:
    from covidcxr.classify._inputs import inference_batches

    options: dict[str, Any] = {
        "input_size": classifier.input_size,
        "normalization": classifier.input_normalization,
        "batch_size": 1,
    }
    ((_, rotated),) = inference_batches([xray], rotations=(angle,), **options)
    return np.asarray(rotated)


@pytest.mark.parametrize(
    "pixels",
    [
        np.linspace(0, 255, 32 * 32, dtype=np.float32).reshape(32, 32),  # 0-255 as float
        np.full((32, 32), 7, np.uint16),  # blank 16-bit frame
    ],
    ids=["float-0-255", "blank-uint16"],
)
def test_a_wrong_pixel_range_warns(pixels: np.ndarray) -> None:
    with pytest.warns(PixelRangeWarning, match="suspicious pixel range"):
        VGG19Classifier(input_size=32, weights=None).prepare_batch([XRay(pixels, id="odd")])


def test_a_normal_pixel_range_does_not_warn(train_xrays: list[XRay]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", PixelRangeWarning)
        VGG19Classifier(input_size=32, weights=None).prepare_batch(train_xrays[:3])


# ---------------------------------------------------------------------------- fit / predict


@pytest.fixture(scope="module")
def fitted(
    train_xrays: list[XRay], valid_xrays: list[XRay], tiny: dict[str, Any]
) -> VGG19Classifier:
    return VGG19Classifier(**{**tiny, "epochs": 3}).fit(train_xrays, validation=valid_xrays)


def test_predict_proba_rows_sum_to_one_in_classes_order(
    fitted: VGG19Classifier, valid_xrays: list[XRay]
) -> None:
    probabilities = fitted.predict_proba(valid_xrays)
    assert fitted.classes_ == ("covid-19", "normal", "pneumonia")
    assert probabilities.shape == (9, 3)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert fitted.predict(valid_xrays) == [fitted.classes_[i] for i in probabilities.argmax(axis=1)]


def test_predict_proba_of_nothing_is_an_empty_array(fitted: VGG19Classifier) -> None:
    assert fitted.predict_proba([]).shape == (0, 3)


def test_history_has_one_entry_per_epoch_with_validation(fitted: VGG19Classifier) -> None:
    assert set(fitted.history_) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert all(len(values) == 3 for values in fitted.history_.values())


def test_prediction_streams_its_input_instead_of_holding_it(fitted: VGG19Classifier) -> None:
    alive: list[weakref.ref[XRay]] = []
    most_alive = 0

    def stream() -> Iterator[XRay]:
        nonlocal most_alive
        rng = np.random.default_rng(5)
        for i in range(240):
            xray = XRay(rng.random((32, 32), dtype=np.float32), id=f"stream-{i}")
            alive.append(weakref.ref(xray))
            most_alive = max(most_alive, sum(ref() is not None for ref in alive))
            yield xray
            del xray

    assert len(fitted.predict_proba(stream())) == 240
    # A few prefetched batches of 8 may be in flight; the dataset as a whole never is.
    assert most_alive < 240 // 3


class _BreaksAt:
    """Radiographs that can be iterated again, the ``index``-th unreadable (as a source's)."""

    def __init__(self, xrays: list[XRay], index: int) -> None:
        self.xrays, self.index = xrays, index

    def __len__(self) -> int:
        return len(self.xrays)

    def __iter__(self) -> Iterator[XRay]:
        for i, xray in enumerate(self.xrays):
            if i == self.index:
                raise InvalidImageError("truncated PNG", f"{xray.id}.png")
            yield xray


def test_an_unreadable_source_file_raises_its_own_error_not_a_tensorflow_one(
    fitted: VGG19Classifier, tmp_path: Path
) -> None:
    # The generator feeding tf.data raises; the caller gets that error, not TF's wrapper.
    (tmp_path / "NORMAL").mkdir()
    (tmp_path / "NORMAL" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    source = covidcxr.open_source(tmp_path)
    with pytest.raises(InvalidImageError, match=r"broken\.png"):
        fitted.predict_proba(source)
    with pytest.raises(InvalidImageError, match=r"broken\.png"):
        fitted.prepare_batch(source)


def test_training_on_an_unreadable_item_raises_its_own_error(
    train_xrays: list[XRay], tiny: dict[str, Any]
) -> None:
    with pytest.raises(InvalidImageError, match=r"toy-1-5\.png: truncated PNG"):
        VGG19Classifier(**tiny).fit(_BreaksAt(train_xrays, 5))


def test_feature_layer_is_the_last_convolutional_map(fitted: VGG19Classifier) -> None:
    layer = fitted.model_.get_layer(fitted.feature_layer_name)
    assert tuple(layer.output.shape) == (None, 2, 2, 64)
    batch_norm = VGG19Classifier(batch_norm=True)
    assert batch_norm.feature_layer_name == "block5_conv4_relu"


def test_model_input_is_what_prepare_batch_returns(
    fitted: VGG19Classifier, valid_xrays: list[XRay]
) -> None:
    direct = fitted.model_(fitted.prepare_batch(valid_xrays), training=False).numpy()
    np.testing.assert_allclose(direct, fitted.predict_proba(valid_xrays), rtol=1e-5, atol=1e-6)


def test_frozen_training_on_cached_features_reduces_loss(
    train_xrays: list[XRay], tiny: dict[str, Any]
) -> None:
    classifier = VGG19Classifier(
        **{**tiny, "epochs": 40, "optimizer": "adam", "learning_rate": 1e-2}
    ).fit(train_xrays)
    assert classifier.uses_feature_cache
    assert classifier.history_["loss"][-1] < 0.7 * classifier.history_["loss"][0]


def test_frozen_base_is_not_changed_by_training(fitted: VGG19Classifier, tiny_run: TinyRun) -> None:
    # Same seed, so the same initial base; trained for 3 epochs and for 2.
    np.testing.assert_array_equal(
        fitted.model_.get_layer("block1_conv1").get_weights()[0],
        tiny_run.classifier.model_.get_layer("block1_conv1").get_weights()[0],
    )


def test_batch_norm_variant_trained_from_scratch_learns_the_toy_problem(
    train_xrays: list[XRay], valid_xrays: list[XRay], tiny: dict[str, Any]
) -> None:
    classifier = VGG19Classifier(
        **{
            **tiny,
            "epochs": 6,
            "batch_norm": True,
            "trainable_blocks": "all",
            "optimizer": "adam",
            "augmentation": None,
        }
    ).fit(train_xrays, validation=valid_xrays)
    assert not classifier.uses_feature_cache
    assert classifier.history_["loss"][-1] < 0.5 * classifier.history_["loss"][0]
    assert classifier.history_["val_accuracy"][-1] >= 2 / 3


def test_training_accepts_a_one_shot_iterator(
    train_xrays: list[XRay], tiny: dict[str, Any]
) -> None:
    def stream() -> Iterator[XRay]:
        yield from train_xrays

    classifier = VGG19Classifier(**{**tiny, "epochs": 1}).fit(stream())
    assert classifier.fingerprint_["train"]["n_images"] == len(train_xrays)


class SortedSource:
    """A re-iterable, non-indexable source, sorted by class like a folder of class folders."""

    def __init__(self, xrays: list[XRay]) -> None:
        self.xrays = sorted(xrays, key=lambda x: str(x.label))

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(sorted({str(x.label) for x in self.xrays}))

    def __iter__(self) -> Iterator[XRay]:
        return iter(self.xrays)

    def __len__(self) -> int:
        return len(self.xrays)


def test_training_from_a_class_sorted_stream_warns_about_shuffling(
    train_xrays: list[XRay], tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from covidcxr.classify import _vgg19 as vgg19

    monkeypatch.setattr(vgg19, "SHUFFLE_BUFFER", 8)
    params = {**tiny, "epochs": 1, "trainable_blocks": "all"}
    with pytest.warns(UserWarning, match="runs of up to 8 of one class"):
        VGG19Classifier(**params).fit(SortedSource(train_xrays))


def test_training_from_a_list_shuffles_fully_without_warning(
    train_xrays: list[XRay], tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from covidcxr.classify import _vgg19 as vgg19

    monkeypatch.setattr(vgg19, "SHUFFLE_BUFFER", 8)
    params = {**tiny, "epochs": 1, "trainable_blocks": "all"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        VGG19Classifier(**params).fit(SortedSource(train_xrays).xrays)


@pytest.mark.filterwarnings("ignore::covidcxr.classify.PixelRangeWarning")  # blank images
def test_an_unlabelled_training_image_is_refused_by_id(
    train_xrays: list[XRay], tiny: dict[str, Any]
) -> None:
    unlabelled = XRay(np.zeros((32, 32), np.uint8), id="who-knows")
    with pytest.raises(ConfigurationError, match="who-knows"):
        VGG19Classifier(**tiny).fit([*train_xrays, unlabelled])


def test_a_single_class_is_refused(tiny: dict[str, Any]) -> None:
    covid_only = [x for x in toy_xrays(9) if x.label == "covid-19"]
    with pytest.raises(ConfigurationError, match="at least two"):
        VGG19Classifier(**tiny).fit(covid_only)


def test_class_weight_naming_an_absent_label_is_refused(
    train_xrays: list[XRay], tiny: dict[str, Any]
) -> None:
    two_classes = [x for x in train_xrays if x.label != "pneumonia"]
    with pytest.raises(ConfigurationError, match="pneumonia"):
        VGG19Classifier(**{**tiny, "class_weight": {"pneumonia": 2.0}}).fit(two_classes)


def test_early_stopping_stops_and_keeps_the_best_epoch(
    train_xrays: list[XRay], valid_xrays: list[XRay], tiny: dict[str, Any]
) -> None:
    # A learning rate this high makes validation loss worsen quickly.
    classifier = VGG19Classifier(
        **{**tiny, "epochs": 30, "early_stopping": 2, "optimizer": "adam", "learning_rate": 1.0}
    ).fit(train_xrays, validation=valid_xrays)
    val_loss = classifier.history_["val_loss"]
    assert len(val_loss) < 30
    best = int(np.argmin(val_loss))
    assert len(val_loss) == best + 1 + 2
    probabilities = classifier.predict_proba(valid_xrays)
    targets = [classifier.classes_.index(str(x.label)) for x in valid_xrays]
    restored_loss = -np.mean(np.log(np.clip(probabilities[np.arange(9), targets], 1e-7, 1)))
    assert restored_loss == pytest.approx(val_loss[best], rel=1e-3)


def validation_loss(classifier: VGG19Classifier, xrays: list[XRay]) -> float:
    probabilities = classifier.predict_proba(xrays)
    targets = [classifier.classes_.index(str(x.label)) for x in xrays]
    picked = probabilities[np.arange(len(xrays)), targets]
    return float(-np.mean(np.log(np.clip(picked, 1e-7, 1))))


#: Three ways to train, 3 epochs each with validation (seed 3); the last two differ only in
#: weight averaging. Each is fitted once, uninterrupted, for the tests below.
VARIANTS: dict[str, dict[str, Any]] = {
    # A frozen base: cached features.
    "cached-frozen": {"optimizer": "sgd", "momentum": 0.9},
    # From scratch: uncached.
    "from-scratch-bn": {
        "batch_norm": True,
        "trainable_blocks": "all",
        "optimizer": "adam",
        "lr_schedule": "cosine",
        "warmup_epochs": 1,
    },
    # The same, with the weights averaged over epochs.
    "from-scratch-averaged": {
        "batch_norm": True,
        "trainable_blocks": "all",
        "optimizer": "adam",
        "lr_schedule": "cosine",
        "warmup_epochs": 1,
        "weight_averaging": 0.6,
    },
}


def variant_params(variant: str) -> dict[str, Any]:
    return {**TINY, **VARIANTS[variant], "epochs": 3, "seed": 3}


@pytest.fixture(scope="module")
def uninterrupted(
    train_xrays: list[XRay], valid_xrays: list[XRay]
) -> Callable[[str], VGG19Classifier]:
    """The uninterrupted run of a variant, fitted on first use (tests must not change it)."""
    runs: dict[str, VGG19Classifier] = {}

    def run(variant: str) -> VGG19Classifier:
        if variant not in runs:
            classifier = VGG19Classifier(**variant_params(variant))
            runs[variant] = classifier.fit(train_xrays, validation=valid_xrays)
        return runs[variant]

    return run


def test_weight_averaging_validates_and_ends_with_the_averaged_weights(
    valid_xrays: list[XRay], uninterrupted: Callable[[str], VGG19Classifier]
) -> None:
    averaged = uninterrupted("from-scratch-averaged")
    assert averaged.weight_averaging == 0.6
    # The logged validation loss is the fitted model's: the average was validated.
    assert validation_loss(averaged, valid_xrays) == pytest.approx(
        averaged.history_["val_loss"][-1], rel=1e-3
    )
    plain = uninterrupted("from-scratch-bn")  # the same, without averaging
    assert plain.weight_averaging is None
    assert averaged.history_["loss"] == plain.history_["loss"]  # training is unchanged
    assert averaged.history_["val_loss"] != plain.history_["val_loss"]


def test_weight_averaging_with_momentum_zero_is_no_averaging(
    train_xrays: list[XRay], tiny: dict[str, Any], tiny_run: TinyRun
) -> None:
    plain = tiny_run.classifier  # VGG19Classifier(**tiny, seed=0)
    averaged = VGG19Classifier(**tiny, seed=0, weight_averaging=0.0).fit(train_xrays)
    for mine, theirs in zip(averaged.model_.get_weights(), plain.model_.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_weight_averaging_outside_0_1_is_refused(
    train_xrays: list[XRay], tiny: dict[str, Any]
) -> None:
    with pytest.raises(ConfigurationError, match="weight_averaging"):
        VGG19Classifier(**tiny, weight_averaging=1.0).fit(train_xrays)


# ---------------------------------------------------------------------------- reproducibility


def test_seeded_runs_give_identical_models(
    train_xrays: list[XRay], valid_xrays: list[XRay], tiny: dict[str, Any], tiny_run: TinyRun
) -> None:
    first = tiny_run.classifier  # VGG19Classifier(**tiny, seed=0)
    second = VGG19Classifier(**tiny, seed=0).fit(train_xrays)
    np.testing.assert_array_equal(
        first.predict_proba(valid_xrays), second.predict_proba(valid_xrays)
    )


class InterruptError(Exception):
    pass


def interrupt_after(epochs: int) -> Any:
    def on_epoch_end(epoch: int, logs: Any) -> None:
        if epoch == epochs:
            raise InterruptError

    return on_epoch_end


@pytest.mark.parametrize("variant", VARIANTS)
def test_resuming_after_an_interruption_ends_like_an_uninterrupted_run(
    variant: str,
    tmp_path: Path,
    train_xrays: list[XRay],
    valid_xrays: list[XRay],
    uninterrupted: Callable[[str], VGG19Classifier],
) -> None:
    params = variant_params(variant)
    reference = uninterrupted(variant)

    checkpoints = tmp_path / "run"
    with pytest.raises(InterruptError):
        VGG19Classifier(**params, checkpoint_dir=checkpoints, on_epoch_end=interrupt_after(2)).fit(
            train_xrays, validation=valid_xrays
        )
    resumed_epochs: list[int] = []
    resumed = VGG19Classifier(
        **params,
        checkpoint_dir=checkpoints,
        on_epoch_end=lambda epoch, logs: resumed_epochs.append(epoch),
    ).fit(train_xrays, validation=valid_xrays)

    assert resumed_epochs == [3]
    assert resumed.history_ == reference.history_
    weights = zip(resumed.model_.get_weights(), reference.model_.get_weights(), strict=True)
    for mine, theirs in weights:
        np.testing.assert_array_equal(mine, theirs)


def test_resuming_under_another_thread_count_says_the_last_bits_will_differ(
    tmp_path: Path, train_xrays: list[XRay], tiny: dict[str, Any]
) -> None:
    params = {**tiny, "epochs": 2}
    with pytest.raises(InterruptError):
        VGG19Classifier(**params, checkpoint_dir=tmp_path, on_epoch_end=interrupt_after(1)).fit(
            train_xrays
        )
    path = tmp_path / CHECKPOINT_FILENAME
    with np.load(path) as saved:
        arrays = {key: saved[key] for key in saved.files}
    state = json.loads(str(arrays["state"]))
    assert state["threads"] == compute_threads()
    state["threads"] += 1  # as if written on a machine with one more core
    arrays["state"] = np.array(json.dumps(state))
    np.savez(path, **arrays)
    with pytest.warns(ResumeMismatchWarning, match=rf"{state['threads']} CPU thread"):
        VGG19Classifier(**params, checkpoint_dir=tmp_path).fit(train_xrays)


def test_a_checkpoint_from_another_run_is_refused(
    tmp_path: Path, train_xrays: list[XRay], tiny: dict[str, Any], tiny_run: TinyRun
) -> None:
    # The checkpoint VGG19Classifier(**tiny, seed=0).fit(train_xrays) left behind.
    (tmp_path / CHECKPOINT_FILENAME).write_bytes(tiny_run.checkpoint)
    with pytest.raises(ConfigurationError, match="other parameters or data"):
        VGG19Classifier(**tiny, checkpoint_dir=tmp_path).fit(train_xrays[:12])


# ---------------------------------------------------------------------------- persistence


def test_save_and_load_round_trip_predicts_identically(
    fitted: VGG19Classifier, valid_xrays: list[XRay], tmp_path: Path
) -> None:
    path = tmp_path / "model.cxr"
    fitted.save(path)
    loaded = VGG19Classifier.load(path)
    assert loaded.classes_ == fitted.classes_
    assert loaded.history_ == fitted.history_
    assert loaded.get_params() == {**fitted.get_params()}
    np.testing.assert_array_equal(
        loaded.predict_proba(valid_xrays), fitted.predict_proba(valid_xrays)
    )


def test_saved_metadata_records_what_the_model_needs_and_came_from(
    fitted: VGG19Classifier, tmp_path: Path
) -> None:
    path = tmp_path / "model.cxr"
    fitted.save(path)
    with zipfile.ZipFile(path) as archive:
        metadata = json.loads(archive.read(METADATA_MEMBER))
    assert metadata["classes"] == ["covid-19", "normal", "pneumonia"]
    assert metadata["input_size"] == 32
    assert metadata["input_normalization"] == "symmetric"
    assert metadata["feature_layer_name"] == "block5_conv4"
    assert set(metadata["versions"]) == {"covidcxr", "keras", "tensorflow"}
    assert len(metadata["history"]["loss"]) == 3
    assert metadata["data_fingerprint"]["train"]["n_images"] == 24
    assert len(metadata["data_fingerprint"]["train"]["sha256"]) == 64


def test_an_exception_during_save_leaves_the_existing_model_intact(
    fitted: VGG19Classifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.cxr"
    fitted.save(path)
    before = path.read_bytes()

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(zipfile.ZipFile, "write", fail)
    with pytest.raises(OSError, match="disk full"):
        fitted.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.cxr"]


def test_a_process_killed_during_save_leaves_the_existing_model_loadable(
    fitted: VGG19Classifier, tmp_path: Path
) -> None:
    path = tmp_path / "model.cxr"
    fitted.save(path)
    before = path.read_bytes()
    # The child writes a complete new archive, then dies just before the rename.
    code = f"""
import os
from covidcxr.classify import _persistence as persistence
def crash(*args):
    os._exit(17)
persistence.Path.replace = crash
def save_model(target):
    target.write_bytes(b"x" * 100_000)
persistence.write_archive({str(path)!r}, save_model, {{"classes": []}})
"""
    result = subprocess.run([sys.executable, "-c", code], check=False)
    assert result.returncode == 17
    assert path.read_bytes() == before
    assert VGG19Classifier.load(path).classes_ == fitted.classes_


def test_a_saved_model_gets_the_permissions_of_an_ordinary_new_file(
    fitted: VGG19Classifier, tmp_path: Path
) -> None:
    ordinary = tmp_path / "ordinary"
    ordinary.write_bytes(b"")
    fitted.save(tmp_path / "model.cxr")
    assert (tmp_path / "model.cxr").stat().st_mode == ordinary.stat().st_mode


def test_save_refuses_to_overwrite_a_file_that_is_not_a_saved_model(
    fitted: VGG19Classifier, tmp_path: Path
) -> None:
    precious = tmp_path / "notes.txt"
    precious.write_text("mine")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        fitted.save(precious)
    assert precious.read_text() == "mine"


def test_saving_an_unfitted_classifier_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not fitted"):
        VGG19Classifier().save(tmp_path / "model.cxr")


def _rewrite_metadata(path: Path, change: dict[str, Any]) -> None:
    with zipfile.ZipFile(path) as archive:
        metadata = json.loads(archive.read(METADATA_MEMBER))
        model = archive.read(MODEL_MEMBER)
    metadata.update(change)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(METADATA_MEMBER, json.dumps(metadata))
        archive.writestr(MODEL_MEMBER, model)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"versions": {"covidcxr": "0.1.0", "keras": "2.15.0", "tensorflow": "2.15.0"}},
            "saved with Keras 2.15.0",
        ),
        ({"format_version": 99}, "format version 99"),
        ({"format": "something-else"}, "not covidcxr classifier metadata"),
    ],
    ids=["other-keras", "future-format", "foreign"],
)
def test_load_refuses_mismatched_metadata(
    change: dict[str, Any], message: str, fitted: VGG19Classifier, tmp_path: Path
) -> None:
    path = tmp_path / "model.cxr"
    fitted.save(path)
    _rewrite_metadata(path, change)
    with pytest.raises(ModelFormatError, match=message):
        VGG19Classifier.load(path)


def test_load_names_the_parameters_a_later_covidcxr_saved(
    fitted: VGG19Classifier, tmp_path: Path
) -> None:
    path = tmp_path / "model.cxr"
    fitted.save(path)

    def as_a_later_covidcxr_saved_it(metadata: dict[str, Any]) -> None:
        metadata["params"] |= {"stochastic_depth": 0.1, "label_smoothing": 0.0}
        metadata["versions"]["covidcxr"] = "2.0.0"

    edit_archive_metadata(path, as_a_later_covidcxr_saved_it)
    with pytest.raises(
        ModelFormatError,
        match=r"saved by covidcxr 2\.0\.0 with parameters this covidcxr .* does not know "
        r"\('label_smoothing', 'stochastic_depth'\)",
    ):
        VGG19Classifier.load(path)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"versions": "x"}, "versions"),
        ({"versions": "x", "format_version": 99}, "versions"),
        ({"versions": {"keras": 3}}, "versions"),
        ({"classes": "abc"}, "classes"),
        ({"history": [1]}, "history"),
        ({"history": {"loss": "x"}}, "history"),
        ({"params": []}, "params"),
        ({"data_fingerprint": "x"}, "data_fingerprint"),
    ],
)
def test_load_refuses_metadata_of_the_wrong_shape_naming_the_file_and_field(
    change: dict[str, Any], field: str, fitted: VGG19Classifier, tmp_path: Path
) -> None:
    path = tmp_path / "model.cxr"
    fitted.save(path)
    _rewrite_metadata(path, change)
    with pytest.raises(ModelFormatError, match=rf"model\.cxr: covidcxr\.json field '{field}'"):
        VGG19Classifier.load(path)


def test_load_refuses_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "model.cxr"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ModelFormatError, match=r"model\.cxr"):
        VGG19Classifier.load(path)


# ---------------------------------------------------------------------------- real data


@pytest.mark.shared_data
def test_predicts_preprocessed_real_radiographs_without_range_warnings(
    covid_qu_ex_dir: Path, fitted: VGG19Classifier
) -> None:
    import itertools

    from covidcxr.preprocess import GaussianClahePreprocessor

    source = covidcxr.open_source(covid_qu_ex_dir, layout="covid-qu-ex", split="Test")
    preprocess = GaussianClahePreprocessor()
    xrays = [preprocess(xray) for xray in itertools.islice(source, 3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", PixelRangeWarning)
        probabilities = fitted.predict_proba(xrays)
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_sklearn_clone_copies_the_parameters_not_the_fit(
    fitted: VGG19Classifier,
) -> None:
    from sklearn.base import clone

    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "model_")


def test_set_params_refuses_an_unknown_name() -> None:
    classifier = VGG19Classifier().set_params(epochs=3)
    assert classifier.epochs == 3
    with pytest.raises(ConfigurationError, match="no parameter 'epoch'"):
        classifier.set_params(epoch=3)


def test_feature_extraction_is_logged_for_covidcxr_verbose(
    train_xrays: list[XRay], tiny: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="covidcxr"):
        VGG19Classifier(**{**tiny, "epochs": 1}).fit(train_xrays[:6])
    assert any("frozen backbone's features" in r.getMessage() for r in caplog.records)


# ------------------------------------------- input unlike the training input (issue 12, item 6)

CLAHE = GaussianClahePreprocessor(output_size=48)


def _without_meta(xrays: list[XRay]) -> list[XRay]:
    """The same pixels, recording no preprocessing (arrays prepared elsewhere)."""
    return [XRay(x.pixels, id=x.id, label=x.label) for x in xrays]


@pytest.fixture(scope="module")
def raw_phantoms() -> list[XRay]:
    return generate_phantoms(8, size=64, seed=11)  # 24 radiographs, never trained on


@pytest.fixture(scope="module")
def clahe_trained(tiny: dict[str, Any]) -> tuple[VGG19Classifier, list[XRay]]:
    train = [CLAHE(x) for x in generate_phantoms(8, size=64, seed=10)]
    return VGG19Classifier(**tiny).fit(train), train


def _mismatch_warnings(classifier: VGG19Classifier, xrays: list[XRay]) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        classifier.predict_proba(xrays)
    return [str(w.message) for w in caught if w.category is PreprocessingMismatchWarning]


def test_raw_images_fed_to_a_clahe_trained_classifier_warn_with_numbers(
    clahe_trained: tuple[VGG19Classifier, list[XRay]], raw_phantoms: list[XRay]
) -> None:
    classifier, _ = clahe_trained
    with pytest.warns(PreprocessingMismatchWarning) as caught:
        classifier.predict_proba(raw_phantoms)
    assert len([w for w in caught if w.category is PreprocessingMismatchWarning]) == 1
    message = str(caught[0].message)
    assert re.search(r"24 of 24 images have a local contrast below the training range", message)
    assert "gaussian-clahe" in message
    assert "clip_limit=2.0" in message


def test_clahe_images_like_the_training_ones_do_not_warn(
    clahe_trained: tuple[VGG19Classifier, list[XRay]], raw_phantoms: list[XRay]
) -> None:
    classifier, train = clahe_trained
    assert _mismatch_warnings(classifier, train) == []  # the training distribution itself
    assert _mismatch_warnings(classifier, _without_meta(train)) == []
    fresh = [CLAHE(x) for x in raw_phantoms]
    assert _mismatch_warnings(classifier, fresh) == []
    assert _mismatch_warnings(classifier, _without_meta(fresh)) == []


def test_a_handful_of_raw_images_is_not_judged(
    clahe_trained: tuple[VGG19Classifier, list[XRay]], raw_phantoms: list[XRay]
) -> None:
    classifier, _ = clahe_trained
    assert _mismatch_warnings(classifier, raw_phantoms[:5]) == []


def test_images_that_record_another_clahe_clip_warn_even_alone(
    clahe_trained: tuple[VGG19Classifier, list[XRay]], raw_phantoms: list[XRay]
) -> None:
    classifier, _ = clahe_trained
    other_clip = GaussianClahePreprocessor(output_size=48, clip_limit=4.0)
    (message,) = _mismatch_warnings(classifier, [other_clip(raw_phantoms[0])])
    assert "1 of 1 images record another preprocessing (clip_limit: 2.0 (trained) vs 4.0)" in (
        message
    )
    # Another output size changes nothing the model sees: the model resizes anyway.
    other_size = GaussianClahePreprocessor(output_size=64, output_dtype="uint8")
    assert _mismatch_warnings(classifier, [other_size(x) for x in raw_phantoms]) == []


def test_a_saved_classifier_keeps_its_preprocessing_and_input_profile(
    clahe_trained: tuple[VGG19Classifier, list[XRay]], raw_phantoms: list[XRay], tmp_path: Path
) -> None:
    classifier, _ = clahe_trained
    path = tmp_path / "model.cxr"
    classifier.save(path)
    with zipfile.ZipFile(path) as archive:
        metadata = json.loads(archive.read(METADATA_MEMBER))
    assert metadata["preprocessing"]["clip_limit"] == 2.0
    assert metadata["input_profile"]["n_images"] == 24
    loaded = VGG19Classifier.load(path)
    assert loaded.preprocessing_ == classifier.preprocessing_
    assert loaded.input_profile_ == classifier.input_profile_
    with pytest.warns(PreprocessingMismatchWarning, match="local contrast below"):
        loaded.predict_proba(raw_phantoms)


def test_load_refuses_a_malformed_input_profile_naming_the_file(
    fitted: VGG19Classifier, tmp_path: Path
) -> None:
    path = tmp_path / "model.cxr"
    fitted.save(path)
    _rewrite_metadata(path, {"input_profile": {"n_images": 3, "percentiles": {"x": [1, 2]}}})
    with pytest.raises(ModelFormatError, match=r"model\.cxr: the recorded input profile"):
        VGG19Classifier.load(path)
    _rewrite_metadata(path, {"input_profile": "x"})
    with pytest.raises(ModelFormatError, match=r"model\.cxr: covidcxr\.json field 'input_profile'"):
        VGG19Classifier.load(path)
