"""What a component returns is checked where the library receives it.

A plugin's detector, preprocessor or source that breaks its protocol gets a
:class:`ComponentOutputError` naming the component, at the call that received the
answer, not a ``KeyError`` while a report is written or a silently wrong table.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import numpy as np
import pytest

from covidcxr import Box, Detection, Pipeline, XRay
from covidcxr._contracts import who
from covidcxr.errors import ComponentOutputError, ConfigurationError, DetectorOutputWarning
from covidcxr.phantoms import generate_phantoms
from covidcxr.preprocess import preprocess_batch

from .conftest import ShrinkPreprocessor

pytestmark = pytest.mark.usefixtures("module_test_components")


@pytest.fixture(scope="module")
def pipeline(module_test_config: dict[str, Any]) -> Pipeline:
    config = {**module_test_config, "detector": {"name": "test-fixed"}}
    return Pipeline(config).fit(generate_phantoms(6, size=64, seed=0))


@pytest.fixture(scope="module")
def scans() -> list[XRay]:
    return generate_phantoms(1, size=64, seed=3)


class Answers:
    """A detector that answers ``detect`` with whatever it was given."""

    def __init__(self, answer: object) -> None:
        self.answer = answer

    def detect(self, xray: XRay) -> object:
        return self.answer


class BatchAnswers(Answers):
    def detect_batch(self, xrays: list[XRay]) -> object:
        return self.answer


def predict_with(pipeline: Pipeline, detector: object, scans: list[XRay]) -> Any:
    built = pipeline.detector_
    pipeline.detector_ = detector  # type: ignore[assignment]
    try:
        return pipeline.predict(scans)
    finally:
        pipeline.detector_ = built


@pytest.mark.parametrize(
    "answer",
    [
        {"box": [1, 2, 3, 4]},
        None,
        [(1, 2, 3, 4, 0.9)],
        "opacity",
    ],
    ids=["dict", "none", "tuples", "str"],
)
def test_a_detector_answer_that_is_not_detections_is_refused_naming_it(
    pipeline: Pipeline, scans: list[XRay], answer: object
) -> None:
    with pytest.raises(ComponentOutputError, match=r"test_component_contracts\.Answers"):
        predict_with(pipeline, Answers(answer), scans)


def test_a_detect_batch_answer_of_the_wrong_length_is_refused(
    pipeline: Pipeline, scans: list[XRay]
) -> None:
    with pytest.raises(ComponentOutputError, match=r"returned 0 detection list\(s\) for 3"):
        predict_with(pipeline, BatchAnswers([]), scans)


def test_boxes_are_cut_to_the_image_ranked_by_score_and_outsiders_dropped_with_a_warning(
    pipeline: Pipeline, scans: list[XRay]
) -> None:
    # The test preprocessor shrinks to 32 px: the detector sees 32x32 images.
    answer = [
        Detection(Box(2, 2, 4, 4), "opacity", 0.3),
        Detection(Box(28, 28, 10, 10), "opacity", 0.9),  # crosses the border
        Detection(Box(40, 40, 4, 4), "opacity", 0.5),  # wholly outside
    ]
    with pytest.warns(DetectorOutputWarning, match="1 box"):
        predictions = predict_with(pipeline, Answers(answer), scans)
    for prediction in predictions:
        # Back in the 64 px radiograph: the cut box ends at its border.
        assert [d.score for d in prediction.detections] == [0.9, 0.3]
        assert prediction.detections[0].box.x2 == pytest.approx(64.0)


class ArrayPreprocessor:
    def __call__(self, xray: XRay) -> object:
        return np.asarray(xray.pixels)


class ResizeWithoutTransform:
    def __call__(self, xray: XRay) -> XRay:
        return attrs.evolve(xray, pixels=np.asarray(xray.pixels)[::2, ::2], boxes=())


@pytest.mark.parametrize(
    ("preprocessor", "message"),
    [
        (ArrayPreprocessor(), "returned ndarray"),
        (ResizeWithoutTransform(), r"without recording the change in meta\['transform'\]"),
    ],
    ids=["array", "resize-without-transform"],
)
def test_a_preprocessor_answer_that_breaks_the_contract_is_refused(
    scans: list[XRay], preprocessor: object, message: str
) -> None:
    with pytest.raises(ComponentOutputError, match=message):
        list(preprocess_batch(scans, preprocessor, workers=0, progress=False))  # type: ignore[arg-type]


class Scores:
    """A classifier whose ``predict_proba`` gives per-class scores, not a distribution."""

    def __init__(self, classes: tuple[str, ...], row: list[float]) -> None:
        self.classes_ = classes
        self.row = row

    def predict_proba(self, xrays: list[XRay]) -> np.ndarray[Any, Any]:
        return np.tile(np.asarray(self.row, np.float32), (len(xrays), 1))


@pytest.mark.parametrize(
    "row", [[0.9, 0.8, 0.1], [0.2, 0.1, 0.1], [1.2, -0.1, -0.1]], ids=["over", "under", "negative"]
)
def test_classifier_scores_that_are_not_probabilities_are_refused_naming_it(
    pipeline: Pipeline, scans: list[XRay], row: list[float]
) -> None:
    # Sigmoid scores in [0, 1] passed for probabilities: evaluate (and calibration)
    # refused them, but predict gave them out, their "confidence" and all.
    built = pipeline.classifier_
    pipeline.classifier_ = Scores(built.classes_, row)  # type: ignore[assignment]
    try:
        with pytest.raises(ComponentOutputError, match=r"test_component_contracts\.Scores"):
            pipeline.predict(scans)
        with pytest.raises(ComponentOutputError, match="sum to 1"):
            pipeline.evaluate(scans)
    finally:
        pipeline.classifier_ = built
    assert pipeline.predict(scans)  # the real classifier's rows pass


class PathYieldingSource:
    def __iter__(self) -> Iterator[object]:
        yield "scan.png"


def test_a_source_that_yields_no_records_is_named(pipeline: Pipeline) -> None:
    with pytest.raises(ComponentOutputError, match=r"PathYieldingSource yielded str"):
        pipeline.predict(PathYieldingSource())  # type: ignore[arg-type]


def test_a_list_mixing_records_and_paths_is_a_configuration_error(
    pipeline: Pipeline, scans: list[XRay]
) -> None:
    with pytest.raises(ConfigurationError, match="mixes paths and records: item 1 is str"):
        pipeline.predict([scans[0], "scan.png"])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="item 0 is dict"):
        pipeline.predict([{"a": 1}])  # type: ignore[arg-type]


def test_bytes_point_to_the_image_reader(pipeline: Pipeline) -> None:
    with pytest.raises(ConfigurationError, match=r"covidcxr\.io\.read_image"):
        pipeline.predict(b"\x89PNG...")  # type: ignore[arg-type]


def test_a_plugins_component_is_named_with_its_distribution() -> None:
    plugin = pytest.importorskip("covidcxr_example_plugin")
    assert who(plugin.BrightRegionDetector()) == (
        "covidcxr_example_plugin.BrightRegionDetector "
        "(from the distribution 'covidcxr-example-plugin')"
    )


class UnregisteredDetector:
    """A detector object whose class no plugin registered, and without get_params()."""

    def detect(self, xray: XRay) -> list[Detection]:
        return []


def test_a_pipeline_that_save_will_refuse_says_so_before_training(
    module_test_config: dict[str, Any], scans: list[XRay], tmp_path: Any
) -> None:
    pipeline = Pipeline(module_test_config, detector=UnregisteredDetector())
    with pytest.warns(UserWarning, match=r"save\(\) will refuse it"):
        pipeline.fit(generate_phantoms(6, size=64, seed=0))
    assert len(pipeline.predict(scans)) == len(scans)  # it still works
    with pytest.raises(ConfigurationError):
        pipeline.save(tmp_path / "model")


class SavableShrink(ShrinkPreprocessor):
    """A preprocessor with save() and load(): Persistable, but saved by name and options."""

    def save(self, path: Any) -> None:  # pragma: no cover - never called here
        raise AssertionError

    @classmethod
    def load(cls, path: Any) -> SavableShrink:  # pragma: no cover - never called here
        raise AssertionError


def test_a_preprocessor_with_save_and_load_is_checked_like_any_preprocessor(
    module_test_config: dict[str, Any],
) -> None:
    # Not registered under a name: save() would refuse it, and fit says so (no KeyError).
    pipeline = Pipeline(module_test_config, preprocessor=SavableShrink())
    with pytest.warns(UserWarning, match=r"save\(\) will refuse it"):
        pipeline.fit(generate_phantoms(6, size=64, seed=0))


def test_boxes_inside_the_image_are_kept_exactly_as_given() -> None:
    from covidcxr._contracts import checked_detections

    image = XRay(np.zeros((32, 32), np.uint8), id="a")
    answer = [
        Detection(Box(10.1, 3.3, 20.2, 5.7), "opacity", 0.5),
        Detection(Box(4, 4, 0, 0), "opacity", 0.4),  # zero-size, but inside: not "outside"
    ]
    assert checked_detections(answer, image, object()) == answer


class ResizeKeepingAnOldTransform:
    """Halves the image but leaves the input's earlier (now stale) transform in meta."""

    def __call__(self, xray: XRay) -> XRay:
        return attrs.evolve(xray, pixels=np.asarray(xray.pixels)[::2, ::2], boxes=())


def test_a_stale_transform_does_not_excuse_a_change_of_shape(scans: list[XRay]) -> None:
    from covidcxr.preprocess import ResizeTransform

    shape = scans[0].shape
    earlier = ResizeTransform.identity(shape)
    marked = [attrs.evolve(x, meta={**x.meta, "transform": earlier}) for x in scans]
    with pytest.raises(ComponentOutputError, match="ending at the output's shape"):
        list(preprocess_batch(marked, ResizeKeepingAnOldTransform(), workers=0, progress=False))
