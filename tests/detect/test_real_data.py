"""Detectors and drawing on a few real COVID-QU-Ex radiographs (skipped when absent)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

import covidcxr
from covidcxr.detect import LocalDetector, LoopbackWatsonServer, WatsonDetector, draw_detections
from covidcxr.evaluate import evaluate_detections
from covidcxr.records import XRay

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.filterwarnings("ignore::covidcxr.detect.ServiceRetiredWarning"),
]


def covid_images(root: Path, count: int) -> list[XRay]:
    source = covidcxr.open_source(root, layout="covid-qu-ex", split="Val")
    return list(itertools.islice((x for x in source if x.boxes), count))


def test_watson_round_trip_returns_real_lesion_boxes_in_original_pixels(
    covid_qu_ex_dir: Path,
) -> None:
    images = covid_images(covid_qu_ex_dir, 3)
    with LoopbackWatsonServer(apikey="k") as server:
        trainer = WatsonDetector(url=server.url, iam_url=server.url, apikey="k")
        collection_id = trainer.train_collection(images, name="qu-ex", poll_interval=0.01)
        detector = WatsonDetector(
            url=server.url, iam_url=server.url, apikey="k", collection_ids=collection_id
        )
        found = detector.detect_batch(images)
    # Watson takes integer pixel boxes; the loopback model returns them for the same image.
    metrics = evaluate_detections([x.boxes for x in images], found)
    assert metrics.ap50 == 1.0
    assert metrics.map_50_95 >= 0.9


@pytest.mark.slow
def test_local_detector_trains_on_real_masks_and_answers_in_their_pixels(
    covid_qu_ex_dir: Path,
) -> None:
    images = covid_images(covid_qu_ex_dir, 6)
    assert all("infection_mask" in x.meta for x in images)
    detector = LocalDetector(input_size=64, base_filters=4, depth=2, epochs=1, threads=2)
    detector.mask_threshold = 0.01  # an untrained map is faint; only the geometry is tested
    found = detector.fit(images).detect_batch(images)
    assert any(found)
    for xray, detections in zip(images, found, strict=True):
        for detection in detections:
            assert detection.box.x2 <= xray.shape[1]
            assert detection.box.y2 <= xray.shape[0]


def test_drawing_a_real_radiograph_keeps_its_size(covid_qu_ex_dir: Path) -> None:
    (xray,) = covid_images(covid_qu_ex_dir, 1)
    image = draw_detections(xray, [], truths=xray.boxes)
    assert image.shape == (*xray.shape, 3)
    assert not np.array_equal(image[..., 0], image[..., 1])  # truth boxes are drawn
