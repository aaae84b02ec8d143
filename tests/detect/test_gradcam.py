"""GradCAMDetector: weakly supervised boxes from a (tiny) VGG19Classifier."""

from __future__ import annotations

import numpy as np
import pytest

import covidcxr
from covidcxr.detect import GradCAMDetector, cam_to_detections
from covidcxr.errors import ConfigurationError
from covidcxr.records import Box, XRay

# --- from map to boxes -----------------------------------------------------------------


def test_map_is_cut_to_the_lungs_before_thresholding() -> None:
    cam = np.zeros((8, 8), np.float32)
    cam[1, 1] = 5.0  # strongest evidence, but outside the lungs
    cam[5, 5] = 1.0
    lungs = np.zeros((32, 32), np.uint8)
    lungs[16:, 16:] = 255
    (detection,) = cam_to_detections(cam, probability=1.0, output_shape=(32, 32), lung_mask=lungs)
    assert detection.box.x >= 16
    assert detection.box.y >= 16


def test_lung_mask_of_another_size_is_stretched_onto_the_image() -> None:
    cam = np.ones((4, 4), np.float32)
    lungs = np.zeros((8, 8), np.uint8)
    lungs[:, 4:] = 1  # right half
    (detection,) = cam_to_detections(
        cam, probability=1.0, output_shape=(64, 64), lung_mask=lungs, cam_threshold=0.5
    )
    assert detection.box == Box(32, 0, 32, 64)


def test_score_is_weighted_by_the_class_probability() -> None:
    cam = np.ones((4, 4), np.float32)
    (confident,) = cam_to_detections(cam, probability=1.0, output_shape=(16, 16))
    (doubtful,) = cam_to_detections(cam, probability=0.25, output_shape=(16, 16))
    assert doubtful.score == pytest.approx(0.25 * confident.score)


def test_an_all_zero_map_gives_no_boxes() -> None:
    assert cam_to_detections(np.zeros((4, 4)), probability=1.0, output_shape=(8, 8)) == []


# --- with a real classifier -------------------------------------------------------------


def phantom(index: int) -> XRay:
    rng = np.random.default_rng(index)
    pixels = rng.integers(20, 80, (32, 32)).astype(np.uint8)
    label = ("covid-19", "normal", "pneumonia")[index % 3]
    if label == "covid-19":
        pixels[8:20, 6:16] = 230
    lungs = np.zeros((32, 32), np.uint8)
    lungs[4:28, 2:30] = 255
    return XRay(pixels, id=f"p{index}", label=label, meta={"lung_mask": lungs})


@pytest.fixture(scope="module")
def classifier() -> object:
    from covidcxr.classify import VGG19Classifier

    model = VGG19Classifier(
        input_size=32,
        weights=None,
        trainable_blocks="all",
        width_multiplier=0.125,
        dense_units=8,
        epochs=2,
        batch_size=8,
        augmentation=None,
    )
    return model.fit([phantom(i) for i in range(12)])


@pytest.mark.slow
def test_detections_lie_in_the_lungs_in_xray_coordinates(classifier: object) -> None:
    detector = GradCAMDetector(classifier, min_probability=0.0)  # type: ignore[arg-type]
    images = [phantom(i) for i in range(30, 36)]
    found = detector.detect_batch(images)
    assert any(found)
    for xray, detections in zip(images, found, strict=True):
        for detection in detections:
            assert detection.box.x >= 2
            assert detection.box.x2 <= 30
            assert detection.box.y >= 4
            assert detection.box.y2 <= 28
            assert 0.0 <= detection.score <= 1.0
        assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)
        assert xray.shape == (32, 32)


@pytest.mark.slow
def test_maps_have_the_feature_map_resolution(classifier: object) -> None:
    detector = GradCAMDetector(classifier)  # type: ignore[arg-type]
    cams, probabilities = detector.class_activation_maps([phantom(0), phantom(1)])
    assert cams.shape[0] == 2
    assert cams.shape[1] < 32
    assert (cams >= 0).all()
    assert ((probabilities >= 0) & (probabilities <= 1)).all()


@pytest.mark.slow
def test_images_below_min_probability_get_no_boxes(classifier: object) -> None:
    detector = GradCAMDetector(classifier, min_probability=1.0)  # type: ignore[arg-type]
    assert detector.detect_batch([phantom(i) for i in range(3)]) == [[], [], []]


@pytest.mark.slow
def test_an_unknown_target_label_is_a_configuration_error(classifier: object) -> None:
    detector = GradCAMDetector(classifier, target_label="tuberculosis")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="tuberculosis"):
        detector.detect(phantom(0))


def test_an_unfitted_classifier_is_a_configuration_error() -> None:
    from covidcxr.classify import VGG19Classifier

    classifier = VGG19Classifier(input_size=32, weights=None)
    with pytest.raises(ConfigurationError):
        GradCAMDetector(classifier).detect(phantom(0))


@pytest.mark.slow
def test_registered_as_the_gradcam_detector(classifier: object) -> None:
    detector = covidcxr.create_detector("gradcam", classifier=classifier)
    assert isinstance(detector, GradCAMDetector)
