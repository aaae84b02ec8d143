"""What the pipeline does for a user who chose nothing, and when training went nowhere."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

import attrs
import numpy as np
import pytest
from numpy.typing import NDArray

from covidcxr import LocalDetector, XRay
from covidcxr.demo import NO_LESIONS_NOTE, run_demo
from covidcxr.errors import ConfigurationError
from covidcxr.evaluate import OneClassPredictionWarning
from covidcxr.phantoms import write_phantom_dataset
from covidcxr.pipeline import Pipeline

pytestmark = pytest.mark.usefixtures("test_components")


def without_lesions(xrays: Iterable[XRay]) -> list[XRay]:
    """The radiographs as a folder of class folders gives them: no boxes, no masks."""
    return [
        attrs.evolve(x, boxes=(), meta={k: v for k, v in x.meta.items() if k != "infection_mask"})
        for x in xrays
    ]


class OneClassClassifier:
    """Answers 'normal' for everything: what a frozen random backbone ends up doing."""

    classes_: tuple[str, ...] = ()

    def fit(self, xrays: Iterable[XRay], validation: Iterable[XRay] | None = None) -> Self:
        self.classes_ = tuple(sorted({str(x.label) for x in xrays}))
        return self

    def predict_proba(self, xrays: Iterable[XRay]) -> NDArray[np.float32]:
        rows = np.zeros((len(list(xrays)), len(self.classes_)), np.float32)
        rows[:, self.classes_.index("normal")] = 1.0
        return rows

    def predict(self, xrays: Iterable[XRay]) -> list[str]:
        return ["normal" for _ in xrays]

    def save(self, path: str | os.PathLike[str]) -> None:  # pragma: no cover - unused
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:  # pragma: no cover - unused
        raise NotImplementedError


def test_a_configured_detector_refuses_training_data_without_lesions(
    test_config: dict[str, Any], phantom_train: list[XRay]
) -> None:
    with pytest.raises(ConfigurationError, match=r"drop the detector.*lesion masks or boxes"):
        Pipeline(test_config).fit(without_lesions(phantom_train))


def test_the_default_detector_is_left_out_with_a_notice_when_no_image_shows_a_lesion(
    test_config: dict[str, Any], phantom_train: list[XRay]
) -> None:
    del test_config["detector"]  # the library's default: the local detector
    pipeline = Pipeline(test_config)
    with pytest.warns(UserWarning, match="no lesion boxes or masks"):
        pipeline.fit(without_lesions(phantom_train))
    assert pipeline.detector_ is None
    assert pipeline.describe()["detector"] is None


def test_fit_warns_when_the_model_answers_one_class_on_the_validation_set(
    test_config: dict[str, Any], phantom_train: list[XRay]
) -> None:
    pipeline = Pipeline(test_config, classifier=OneClassClassifier())
    with pytest.warns(OneClassPredictionWarning, match=r"'normal' for 36 of 36 validation"):
        pipeline.fit(phantom_train, validation=phantom_train)


def test_evaluate_notes_and_warns_when_the_model_answers_one_class(
    test_config: dict[str, Any], phantom_train: list[XRay], tmp_path: Path
) -> None:
    pipeline = Pipeline(test_config, classifier=OneClassClassifier()).fit(phantom_train)
    with pytest.warns(OneClassPredictionWarning):
        report = pipeline.evaluate(phantom_train, tmp_path / "report")
    assert any("answers one class" in note for note in report.notes)  # type: ignore[attr-defined]
    assert "answers one class" in (tmp_path / "report" / "report.md").read_text()


def test_a_model_that_learned_gives_no_one_class_warning(
    test_config: dict[str, Any], phantom_train: list[XRay]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", OneClassPredictionWarning)
        Pipeline(test_config).fit(phantom_train, validation=phantom_train).evaluate(phantom_train)


def test_the_demo_on_class_folders_classifies_only_and_says_why(tmp_path: Path) -> None:
    data = write_phantom_dataset(tmp_path / "data", n_per_class=8, size=32)
    result = run_demo(tmp_path / "demo", data=str(data), size=32, max_per_class=8, epochs=1)
    assert result.report.to_dict()["detection"] is None
    assert NO_LESIONS_NOTE in (result.report_dir / "report.md").read_text()
    assert Pipeline.load(result.model_dir).detector_ is None


def test_progress_shows_a_bar_for_detector_training(
    test_config: dict[str, Any], phantom_train: list[XRay], capsys: pytest.CaptureFixture[str]
) -> None:
    detector = LocalDetector(input_size=32, base_filters=2, depth=1, epochs=2, augment=False)
    test_config["preprocessor"] = None  # the test preprocessor leaves the masks unscaled
    Pipeline(test_config, detector=detector, progress=True).fit(phantom_train)
    assert "detector" in capsys.readouterr().err
    assert detector.on_epoch_end is None  # the bar's callback is removed after fit
