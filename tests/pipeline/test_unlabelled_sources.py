"""The Pipeline on sources a user has at hand: unlabelled folders, single files, patterns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

import covidcxr
from covidcxr import XRay
from covidcxr.errors import ConfigurationError
from covidcxr.pipeline import Pipeline

pytestmark = pytest.mark.usefixtures("test_components")


@pytest.fixture
def fitted_pipeline(test_config: dict[str, Any], phantom_train: list[XRay]) -> Pipeline:
    return Pipeline(test_config).fit(phantom_train)


@pytest.fixture
def new_scans(tmp_path: Path, phantom_test: list[XRay]) -> Path:
    """A flat folder of unlabelled scans, one in a subfolder, as a user has them."""
    root = tmp_path / "new-scans"
    (root / "ward-2").mkdir(parents=True)
    for index, xray in enumerate(phantom_test):
        pixels = np.asarray(xray.pixels)
        if pixels.dtype != np.uint8:
            pixels = np.clip(pixels * 255 if pixels.max() <= 1 else pixels, 0, 255)
        folder = root / "ward-2" if index == 0 else root
        cv2.imwrite(str(folder / f"scan_{index}.png"), pixels.astype(np.uint8))
    return root


def test_predict_reads_a_flat_folder_of_unlabelled_scans(
    fitted_pipeline: Pipeline, new_scans: Path, phantom_test: list[XRay]
) -> None:
    source = covidcxr.open_source(new_scans)
    assert source.classes == ()
    predictions = fitted_pipeline.predict(source)
    assert len(predictions) == len(phantom_test)
    assert {p.label for p in predictions} <= set(covidcxr.LABELS)
    assert any("ward-2" in p.id for p in predictions)


def test_iter_predict_reads_one_file_several_files_and_a_pattern(
    fitted_pipeline: Pipeline, new_scans: Path, phantom_test: list[XRay]
) -> None:
    one = list(fitted_pipeline.iter_predict(covidcxr.open_source(new_scans / "scan_1.png")))
    several = fitted_pipeline.predict(
        covidcxr.open_source([new_scans / "scan_2.png", new_scans / "scan_1.png"])
    )
    pattern = fitted_pipeline.predict(covidcxr.open_source(f"{new_scans}/**/*.png"))
    assert [p.id for p in one] == [str(new_scans / "scan_1.png")]
    assert [Path(p.id).name for p in several] == ["scan_2.png", "scan_1.png"]
    assert len(pattern) == len(phantom_test)


def test_fit_refuses_unlabelled_scans_naming_the_fix(
    test_config: dict[str, Any], new_scans: Path
) -> None:
    with pytest.raises(ConfigurationError, match="has no labels") as info:
        Pipeline(test_config).fit(new_scans)
    assert "one subfolder per class" in str(info.value)
    assert "label_aliases" in str(info.value)


def test_fit_on_folders_that_name_no_class_says_which_folders_it_found(
    test_config: dict[str, Any], tmp_path: Path
) -> None:
    for folder in ("batch-1", "batch-2"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "a.png"), np.full((64, 64), 90, np.uint8))
    with pytest.raises(ConfigurationError, match="has no labels") as info:
        Pipeline(test_config).fit(tmp_path)
    assert "folders ['batch-1', 'batch-2']" in str(info.value)
    assert "label_aliases" in str(info.value)


def test_evaluate_refuses_unlabelled_scans_naming_the_fix(
    fitted_pipeline: Pipeline, new_scans: Path
) -> None:
    with pytest.raises(ConfigurationError, match="has no labels") as info:
        fitted_pipeline.evaluate(covidcxr.open_source(new_scans))
    assert "layout=" in str(info.value)


def test_predict_takes_paths_directly(fitted_pipeline: Pipeline, new_scans: Path) -> None:
    # A list of paths is opened as a source, not mistaken for a list of radiographs.
    paths: list[str | Path] = [new_scans / "scan_2.png", str(new_scans / "scan_1.png")]
    predictions = fitted_pipeline.predict(paths)
    assert [Path(p.id).name for p in predictions] == ["scan_2.png", "scan_1.png"]


def test_pixels_given_without_a_record_are_refused_naming_xray(
    fitted_pipeline: Pipeline, phantom_test: list[XRay]
) -> None:
    pixels = np.asarray(phantom_test[0].pixels)
    with pytest.raises(ConfigurationError, match=r"covidcxr\.XRay\(pixels, id=\.\.\.\)"):
        fitted_pipeline.predict(pixels)
    with pytest.raises(ConfigurationError, match=r"covidcxr\.XRay\(pixels, id=\.\.\.\)"):
        fitted_pipeline.predict([pixels, pixels])  # type: ignore[arg-type]
