"""The pipeline on a few real COVID-QU-Ex radiographs (skipped when the data is absent)."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any

import pytest

import covidcxr
from covidcxr import XRay
from covidcxr.evaluate import EvaluationReport
from covidcxr.pipeline import Pipeline

pytestmark = [pytest.mark.shared_data, pytest.mark.usefixtures("test_components")]


def first_images(root: Path, split: str, n: int = 6) -> list[XRay]:
    return list(islice(covidcxr.open_source(root, layout="covid-qu-ex", split=split), n))


def test_detections_on_annotated_real_images_are_scored_against_their_masks(
    covid_qu_ex_dir: Path, test_config: dict[str, Any], phantom_train: list[XRay], tmp_path: Path
) -> None:
    real = first_images(covid_qu_ex_dir, "Val")
    assert all(x.meta.get("annotated") for x in real)
    pipeline = Pipeline(test_config).fit(phantom_train)
    report = pipeline.evaluate(real, tmp_path / "report")
    assert isinstance(report, EvaluationReport)
    assert report.detection is not None
    assert report.detection.n_truths == sum(len(x.boxes) for x in real) > 0
    predictions = pipeline.predict(real)
    for prediction, xray in zip(predictions, real, strict=True):
        height, width = xray.shape
        for detection in prediction.detections:  # mapped back to the 256 px originals
            assert detection.box.x2 <= width
            assert detection.box.y2 <= height


def test_detection_is_not_scored_where_lesions_were_not_annotated(
    covid_qu_ex_dir: Path, test_config: dict[str, Any], phantom_train: list[XRay], tmp_path: Path
) -> None:
    real = first_images(covid_qu_ex_dir, "Test")
    assert not any(x.meta.get("annotated") for x in real)
    report = Pipeline(test_config).fit(phantom_train).evaluate(real, tmp_path / "report")
    assert isinstance(report, EvaluationReport)
    assert report.detection is None
    assert report.classification is not None
    assert "Detection was not scored" in (tmp_path / "report" / "report.html").read_text()
