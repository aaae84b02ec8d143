"""Exporting every network of a pipeline: the lung segmenter and the lesion detector too.

One tiny pipeline with a lung stage (a 32-pixel U-Net) and a local lesion detector (a
32-pixel U-Net) beside the tiny classifier, trained on phantoms, which carry lung and
infection masks. Its ONNX export must agree with the Keras pipeline on every output a
user reads (probabilities, lung crops, boxes, severity), and the mask guard must refuse an
export whose masks it cannot vouch for.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from covidcxr import XRay
from covidcxr.detect import LocalDetector
from covidcxr.errors import AccuracyGuardError, NoLungsFoundWarning, SyntheticModelWarning
from covidcxr.evaluate import CalibrationWarning, OneClassPredictionWarning
from covidcxr.lungs import LungSegmenter
from covidcxr.phantoms import generate_phantoms
from covidcxr.pipeline import Pipeline
from covidcxr.runtime import export

from .conftest import TINY_PIPELINE

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("tf2onnx", reason="the onnx extra is not installed")
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]

UNET: dict[str, Any] = {"input_size": 32, "base_filters": 4, "depth": 2, "batch_size": 8}


@pytest.fixture(scope="module")
def saved_with_networks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = copy.deepcopy(TINY_PIPELINE)
    config["preprocessor"]["output_size"] = 64
    config["classifier"]["epochs"] = 20
    config["lungs"] = {
        "output_size": 32,
        "segmenter": {**UNET, "epochs": 8, "learning_rate": 0.01, "augment": False},
    }
    config["detector"] = {"name": "local", **UNET, "epochs": 3, "augment": False}
    pipeline = Pipeline.from_dict(config)
    with warnings.catch_warnings():
        for category in (CalibrationWarning, OneClassPredictionWarning, NoLungsFoundWarning):
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("ignore", "only .* training radiographs", UserWarning)
        pipeline.fit(generate_phantoms(8, size=64, seed=0))
    return pipeline.save(tmp_path_factory.mktemp("saved") / "with-networks")


@pytest.fixture(scope="module")
def validation() -> list[XRay]:
    return generate_phantoms(3, size=64, seed=11)


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, saved_with_networks: Path, validation: list[XRay]
) -> Path:
    target = tmp_path_factory.mktemp("exported") / "onnx"
    report = export(saved_with_networks, target, validation=validation, runtime="onnx")
    assert set(report.artifacts) == {"classifier", "lungs", "detector"}
    assert set(report.mask_guards) == {"lungs", "detector"}
    for guard in report.mask_guards.values():
        assert guard.passed
        assert guard.n_images == len(validation)
        assert guard.mean_dice > 0.99
    return target


def _predict(pipeline: Pipeline, images: list[XRay]) -> list[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntheticModelWarning)
        warnings.simplefilter("ignore", NoLungsFoundWarning)
        return pipeline.predict(images)


def test_every_network_is_exported_and_loaded_with_the_runtime(
    exported: Path, saved_with_networks: Path
) -> None:
    entry = json.loads((exported / "pipeline.json").read_text())["export"]
    for name in ("classifier", "lungs", "detector"):
        assert (exported / entry["artifacts"][name]).is_file()
    assert set(entry["mask_guards"]) == {"lungs", "detector"}
    card = (exported / "model_card.md").read_text()
    assert "The lungs network" in card
    assert "The detector network" in card

    loaded = Pipeline.load(exported)
    assert loaded.lungs_ is not None
    segmenter, detector = loaded.lungs_.segmenter, loaded.detector_
    assert isinstance(segmenter, LungSegmenter)
    assert isinstance(detector, LocalDetector)
    assert segmenter.exported_ is not None
    assert segmenter.exported_.runtime == "onnx"
    assert detector.exported_ is not None
    # TensorFlow runs the Keras networks when asked, and for a pipeline never exported.
    keras = Pipeline.load(exported, runtime="tensorflow")
    assert keras.lungs_ is not None
    assert keras.lungs_.segmenter.exported_ is None
    assert Pipeline.load(saved_with_networks).detector_.exported_ is None  # type: ignore[union-attr]


def test_the_exported_pipeline_answers_as_the_keras_pipeline(
    exported: Path, saved_with_networks: Path
) -> None:
    images = generate_phantoms(2, size=64, seed=23)
    mine = _predict(Pipeline.load(exported), images)
    theirs = _predict(Pipeline.load(saved_with_networks), images)
    for one, other in zip(mine, theirs, strict=True):
        assert one.label == other.label
        for label, probability in one.probabilities.items():
            assert probability == pytest.approx(other.probabilities[label], abs=1e-4)
        assert len(one.detections) == len(other.detections)
        for a, b in zip(one.detections, other.detections, strict=True):
            np.testing.assert_allclose(
                [a.box.x, a.box.y, a.box.width, a.box.height],
                [b.box.x, b.box.y, b.box.width, b.box.height],
                atol=1.0,
            )
        assert (one.severity is None) == (other.severity is None)
        if one.severity is not None and other.severity is not None:
            assert one.severity.total == pytest.approx(other.severity.total, abs=0.02)


def test_masks_the_guard_cannot_vouch_for_are_refused_and_nothing_is_written(
    saved_with_networks: Path, validation: list[XRay], tmp_path: Path
) -> None:
    # No export agrees better than perfectly: a limit above 1 must refuse.
    target = tmp_path / "refused"
    with pytest.raises(AccuracyGuardError, match=r"lungs masks agree .* mean Dice"):
        export(
            saved_with_networks,
            target,
            validation=validation,
            runtime="onnx",
            min_mask_dice=1.01,
        )
    assert not target.exists()
    assert not list(tmp_path.iterdir())
