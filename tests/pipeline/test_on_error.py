"""Unreadable images in a pipeline's source: a typed error, or skipped and listed.

Decoding happens as a source yields its items, so a source opened with
``on_error="skip"`` leaves unreadable files out of ``fit``, ``predict`` and ``evaluate``
alike, and lists them (``source.skipped``, ``Pipeline.data_stats_.skipped``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import covidcxr
from covidcxr.errors import InvalidImageError
from covidcxr.phantoms import write_phantom_dataset
from covidcxr.pipeline import Pipeline
from covidcxr.sources import ReportsSkips

pytestmark = [
    pytest.mark.usefixtures("test_components"),
    pytest.mark.filterwarnings("ignore::covidcxr.sources.SkippedItemsWarning"),
]

BROKEN = b"\x89PNG\r\n\x1a\nnot really"


@pytest.fixture
def data_with_a_broken_file(tmp_path: Path) -> Path:
    root = write_phantom_dataset(tmp_path / "data", n_per_class=4, size=48)
    (root / "normal" / "broken.png").write_bytes(BROKEN)
    return root


@pytest.fixture(params=["preprocessed", "as read"])
def config(request: pytest.FixtureRequest, test_config: dict[str, Any]) -> dict[str, Any]:
    # Both data paths: through preprocess_batch, and straight from the source.
    # A detector that is not trained: class folders carry no lesion boxes to learn from.
    test_config["detector"] = {"name": "test-fixed"}
    if request.param == "as read":
        test_config["preprocessor"] = None
    return test_config


def test_an_unreadable_file_raises_its_own_error_naming_it(
    data_with_a_broken_file: Path, config: dict[str, Any]
) -> None:
    with pytest.raises(InvalidImageError, match=r"broken\.png"):
        Pipeline(config).fit(covidcxr.open_source(data_with_a_broken_file))


def test_fit_predict_and_evaluate_skip_an_unreadable_file_and_list_it(
    data_with_a_broken_file: Path, config: dict[str, Any]
) -> None:
    source = covidcxr.open_source(data_with_a_broken_file, on_error="skip")
    assert isinstance(source, ReportsSkips)
    pipeline = Pipeline(config).fit(source)
    assert [item.path for item in pipeline.data_stats_.skipped] == [
        str(data_with_a_broken_file / "normal" / "broken.png")
    ]
    assert "PNG" in pipeline.data_stats_.skipped[0].reason
    predictions = pipeline.predict(source)
    assert len(predictions) == 12
    assert "broken.png" not in " ".join(p.id for p in predictions)
    assert len(pipeline.data_stats_.skipped) == 1
    report = pipeline.evaluate(covidcxr.open_source(data_with_a_broken_file, on_error="skip"))
    assert report.to_dict()["classification"]["n_images"] == 12
    assert len(pipeline.data_stats_.skipped) == 1


def test_radiographs_given_as_a_list_report_no_skips(
    phantom_train: list[covidcxr.XRay], test_config: dict[str, Any]
) -> None:
    pipeline = Pipeline(test_config).fit(phantom_train)
    assert pipeline.data_stats_.skipped == ()
