"""The Pipeline: configuration, fit/predict/evaluate, saving and loading."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import covidcxr
from covidcxr import XRay
from covidcxr.detect import LocalDetector
from covidcxr.errors import (
    ConfigurationError,
    ModelFormatError,
    OutputExistsError,
    PreprocessingMismatchWarning,
    UnknownNameError,
)
from covidcxr.evaluate import EvaluationReport, data_fingerprint
from covidcxr.phantoms import generate_phantoms, write_phantom_dataset
from covidcxr.pipeline import MANIFEST_NAME, ComponentSpec, Pipeline, PipelineConfig
from covidcxr.preprocess import GaussianClahePreprocessor

pytestmark = pytest.mark.usefixtures("test_components")


def fitted(config: dict[str, Any], train: list[XRay]) -> Pipeline:
    return Pipeline(config).fit(train)


# -- configuration ---------------------------------------------------------------------


def test_toml_tables_name_components_and_pass_their_options(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text(
        '[preprocessor]\nname = "test-shrink"\noutput_size = 16\n'
        '[classifier]\nname = "test-softmax"\nepochs = 3\nseed = "none"\n'
        '[detector]\nname = "none"\n'
        "[evaluation]\nn_bootstrap = 10\n"
    )
    config = PipelineConfig.from_toml(path)
    assert config.preprocessor == ComponentSpec("test-shrink", {"output_size": 16})
    assert config.classifier == ComponentSpec("test-softmax", {"epochs": 3, "seed": None})
    assert config.detector is None
    assert config.evaluation == {"n_bootstrap": 10}


def test_missing_tables_keep_the_library_defaults() -> None:
    config = PipelineConfig.from_dict({})
    assert config.preprocessor is not None
    assert config.detector is not None
    assert (config.preprocessor.name, config.classifier.name, config.detector.name) == (
        "gaussian-clahe",
        "vgg19",
        "local",
    )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[classifer]\nname = "x"\n', "classifer"),
        ("[classifier]\nepochs = 3\n", "needs a 'name'"),
        ('[classifier]\nname = "none"\n', "cannot be 'none'"),
        ("[evaluation]\nbootstraps = 3\n", "bootstraps"),
        ("[classifier\n", "invalid TOML"),
    ],
)
def test_bad_configuration_is_an_error_naming_the_file_and_key(
    tmp_path: Path, toml: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigurationError, match=message) as info:
        PipelineConfig.from_toml(path)
    assert "bad.toml" in str(info.value)


def test_unknown_component_name_is_reported_when_fitting(phantom_train: list[XRay]) -> None:
    with pytest.raises(UnknownNameError, match="no-such-net"):
        Pipeline({"classifier": {"name": "no-such-net"}}).fit(phantom_train)


def test_using_an_unfitted_pipeline_is_an_error(phantom_test: list[XRay]) -> None:
    with pytest.raises(ConfigurationError, match="not fitted"):
        Pipeline().predict(phantom_test)


# -- fit, predict, evaluate ------------------------------------------------------------


def test_fit_and_predict_on_phantoms_beats_chance(
    test_config: dict[str, Any], phantom_train: list[XRay], phantom_test: list[XRay]
) -> None:
    pipeline = fitted(test_config, phantom_train)
    predictions = pipeline.predict(phantom_test)
    assert [p.id for p in predictions] == [x.id for x in phantom_test]
    for prediction in predictions:
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction.label == max(prediction.probabilities, key=prediction.probabilities.get)  # type: ignore[arg-type]
    accuracy = np.mean([p.label == x.label for p, x in zip(predictions, phantom_test, strict=True)])
    assert accuracy > 0.6
    assert pipeline.classes_ == covidcxr.LABELS
    assert len(pipeline.history_["loss"]) == 40


def test_one_radiograph_instead_of_a_list_is_refused_saying_what_to_pass(
    test_config: dict[str, Any], phantom_train: list[XRay], phantom_test: list[XRay]
) -> None:
    pipeline = fitted(test_config, phantom_train)
    one = phantom_test[0]
    with pytest.raises(ConfigurationError, match=r"one radiograph \('.*'\); pass a list"):
        pipeline.predict(one)  # type: ignore[arg-type]
    assert [p.id for p in pipeline.predict([one])] == [one.id]


def test_detections_come_back_in_the_source_image_coordinates(
    test_config: dict[str, Any], phantom_train: list[XRay], phantom_test: list[XRay]
) -> None:
    # The preprocessor halves 64 px images to 32 px; the detector answers (4, 4, 8, 8) there.
    test_config["detector"] = {"name": "test-fixed", "x": 4, "y": 4, "size": 8}
    predictions = fitted(test_config, phantom_train).predict(phantom_test[:2])
    for prediction in predictions:
        (detection,) = prediction.detections
        assert detection.box == covidcxr.Box(8, 8, 16, 16)


def test_detector_is_trained_on_preprocessed_boxes_and_never_sees_truth_at_detection(
    test_config: dict[str, Any], phantom_train: list[XRay], phantom_test: list[XRay]
) -> None:
    pipeline = fitted(test_config, phantom_train)
    widths = [b.width / 2 for x in phantom_train for b in x.boxes]  # 64 -> 32 px
    assert pipeline.detector_ is not None
    assert pipeline.detector_.box_size == pytest.approx(np.median(widths))  # type: ignore[attr-defined]
    pipeline.evaluate(phantom_test)
    assert type(pipeline.detector_).saw_truth_boxes is False  # type: ignore[attr-defined]


def test_evaluate_reports_classification_detection_and_provenance(
    test_config: dict[str, Any], phantom_train: list[XRay], phantom_test: list[XRay]
) -> None:
    pipeline = fitted(test_config, phantom_train)
    report = pipeline.evaluate(phantom_test)
    assert isinstance(report, EvaluationReport)
    assert report.classification is not None
    assert report.classification.n_images == len(phantom_test)
    assert report.classification.n_bootstrap == 50
    assert report.detection is not None
    assert report.detection.n_truths == sum(len(x.boxes) for x in phantom_test)
    # Fingerprints are of the data as the models saw it: the prepared images.
    prepare = pipeline.preprocessor_
    assert prepare is not None
    assert report.data_fingerprint == data_fingerprint(prepare(x) for x in phantom_test)
    configuration = report.configuration
    # Effective values: the defaults the component was built with are there too.
    assert configuration["classifier"] == {
        "name": "test-softmax",
        "epochs": 40,
        "learning_rate": 0.5,
        "seed": 0,
    }
    assert configuration["evaluation"] == {
        "n_bootstrap": 50,
        "confidence_level": 0.95,
        "n_bins": 10,
        "seed": 1,
    }
    expected_training = data_fingerprint(prepare(x) for x in phantom_train)
    assert configuration["training_data_fingerprint"] == expected_training
    predicted = pipeline.predict(phantom_test)
    expected = np.mean([p.label == x.label for p, x in zip(predicted, phantom_test, strict=True)])
    assert report.classification.accuracy == pytest.approx(expected)


def test_evaluate_writes_a_report_and_will_not_overwrite_it(
    test_config: dict[str, Any], phantom_train: list[XRay], phantom_test: list[XRay], tmp_path: Path
) -> None:
    pipeline = fitted(test_config, phantom_train)
    pipeline.evaluate(phantom_test, tmp_path / "report", notes=["Synthetic phantoms."])
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Synthetic phantoms." in page
    assert (tmp_path / "report" / "figures" / "training_history.png").is_file()
    for label in {str(x.label) for x in phantom_test}:  # one large example per class
        assert (tmp_path / "report" / "figures" / f"example_{label}.png").is_file()
    assert "Boxes: ground truth: #00dc5a outline" in (tmp_path / "report" / "report.md").read_text()
    with pytest.raises(OutputExistsError):
        pipeline.evaluate(phantom_test, tmp_path / "report")
    pipeline.evaluate(phantom_test, tmp_path / "report", overwrite=True)


def test_report_configuration_shows_defaults_that_were_not_set(
    test_config: dict[str, Any], phantom_train: list[XRay], phantom_test: list[XRay], tmp_path: Path
) -> None:
    # Only the name is set: the report used to list no parameter at all.
    test_config["classifier"] = {"name": "test-softmax"}
    test_config["evaluation"] = {}
    pipeline = fitted(test_config, phantom_train)
    report = pipeline.evaluate(phantom_test, tmp_path / "report")
    assert isinstance(report, EvaluationReport)
    assert report.configuration["classifier"]["epochs"] == 30  # SoftmaxClassifier's default
    assert report.configuration["evaluation"]["n_bootstrap"] == 1000
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| classifier | epochs | 30 |" in markdown
    assert "| evaluation | n_bootstrap | 1000 |" in markdown
    assert "| preprocessor | output_size | 32 |" in markdown


def test_components_given_as_objects_are_used_as_given(
    test_config: dict[str, Any], phantom_train: list[XRay], phantom_test: list[XRay]
) -> None:
    registry = covidcxr.plugins.available_classifiers()
    classifier = registry["test-softmax"].factory(epochs=5)
    pipeline = Pipeline(test_config, classifier=classifier).fit(phantom_train)
    assert pipeline.classifier_ is classifier
    assert len(pipeline.history_["loss"]) == 5
    assert pipeline.describe()["classifier"] == {
        "name": "test-softmax",
        "epochs": 5,
        "learning_rate": 0.5,
        "seed": 0,
    }


def test_where_a_run_checkpoints_is_not_part_of_what_the_pipeline_is(
    test_config: dict[str, Any], tmp_path: Path
) -> None:
    # A build machine's checkpoint folder must not travel into descriptions, reports and
    # saved model facts: it is where one run wrote, not what the model is.
    test_config["classifier"] = {"name": "vgg19", "checkpoint_dir": str(tmp_path / "run")}
    test_config["detector"] = {"name": "local", "checkpoint_dir": str(tmp_path / "detector")}
    test_config["lungs"] = {"segmenter": {"epochs": 1, "checkpoint_dir": str(tmp_path / "lungs")}}
    described = Pipeline(test_config).describe()
    assert described["classifier"] == {"name": "vgg19"}
    assert described["detector"] == {"name": "local"}
    assert described["lungs"]["segmenter"] == {"epochs": 1}
    assert str(tmp_path) not in repr(Pipeline(test_config))
    # Nor does an unset callback: it is wiring too, not a fact of the model.
    test_config["classifier"] = {"name": "vgg19", "on_epoch_end": None}
    assert Pipeline(test_config).describe()["classifier"] == {"name": "vgg19"}


def test_fit_reads_a_folder_source_by_path(
    test_config: dict[str, Any], phantom_test: list[XRay], tmp_path: Path
) -> None:
    if "file" not in covidcxr.plugins.available_sources():
        pytest.skip("the folder source (issue #3) is not registered in this checkout")
    root = write_phantom_dataset(tmp_path / "phantoms", n_per_class=8, size=64)
    test_config["detector"] = None
    pipeline = Pipeline(test_config).fit(root)
    assert pipeline.classes_ == covidcxr.LABELS
    assert len(pipeline.predict(phantom_test)) == len(phantom_test)


# -- save and load ---------------------------------------------------------------------


def test_saved_pipeline_predicts_the_same_after_loading(
    test_config: dict[str, Any], phantom_train: list[XRay], phantom_test: list[XRay], tmp_path: Path
) -> None:
    pipeline = fitted(test_config, phantom_train)
    pipeline.save(tmp_path / "model")
    loaded = Pipeline.load(tmp_path / "model")
    assert [p.to_dict() for p in loaded.predict(phantom_test)] == [
        p.to_dict() for p in pipeline.predict(phantom_test)
    ]
    assert loaded.history_ == pipeline.history_
    assert loaded.training_fingerprint_ == pipeline.training_fingerprint_
    manifest = json.loads((tmp_path / "model" / MANIFEST_NAME).read_text())
    assert manifest["preprocessor"] == {"name": "test-shrink", "output_size": 32}
    assert manifest["classes"] == list(covidcxr.LABELS)


def test_save_refuses_to_replace_a_directory_unless_asked(
    test_config: dict[str, Any], phantom_train: list[XRay], tmp_path: Path
) -> None:
    pipeline = fitted(test_config, phantom_train)
    target = tmp_path / "model"
    pipeline.save(target)
    first = (target / MANIFEST_NAME).stat().st_ino
    with pytest.raises(OutputExistsError, match="model"):
        pipeline.save(target)
    assert (target / MANIFEST_NAME).stat().st_ino == first
    pipeline.save(target, overwrite=True)
    assert (target / MANIFEST_NAME).stat().st_ino != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging left behind


def test_save_never_replaces_a_directory_holding_the_users_files(
    test_config: dict[str, Any], phantom_train: list[XRay], tmp_path: Path
) -> None:
    pipeline = fitted(test_config, phantom_train)
    target = tmp_path / "model"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"model .*notes\.txt was not written by covidcxr"):
        pipeline.save(target, overwrite=True)
    assert (target / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging left behind


def test_credentials_are_never_saved(
    test_config: dict[str, Any], phantom_train: list[XRay], phantom_test: list[XRay], tmp_path: Path
) -> None:
    test_config["detector"] = {"name": "test-fixed", "apikey": "s3cr3t-key"}
    fitted(test_config, phantom_train).save(tmp_path / "model")
    for path in (tmp_path / "model").rglob("*"):
        if path.is_file():
            assert b"s3cr3t-key" not in path.read_bytes(), path
    loaded = Pipeline.load(tmp_path / "model", detector_options={"apikey": "given-again"})
    assert loaded.detector_ is not None
    assert loaded.detector_.apikey == "given-again"  # type: ignore[attr-defined]
    assert len(loaded.predict(phantom_test[:1])[0].detections) == 1


def test_loading_something_else_is_a_model_format_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="not a saved covidcxr pipeline"):
        Pipeline.load(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(
        json.dumps({"format": "covidcxr-pipeline", "format_version": 99})
    )
    with pytest.raises(ModelFormatError, match="format version 99"):
        Pipeline.load(tmp_path)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"detector": "x"}, "detector"),
        ({"classifier": "x"}, "classifier"),
        ({"history": ["x"]}, "history"),
        ({"classes": "abc"}, "classes"),
        ({"evaluation": 3}, "evaluation"),
    ],
)
def test_a_manifest_of_the_wrong_shape_names_the_file_and_field(
    change: dict[str, Any],
    field: str,
    test_config: dict[str, Any],
    phantom_train: list[XRay],
    tmp_path: Path,
) -> None:
    fitted(test_config, phantom_train).save(tmp_path / "model")
    manifest_path = tmp_path / "model" / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, **change}))
    with pytest.raises(ModelFormatError, match=rf"pipeline\.json: field '{field}'"):
        Pipeline.load(tmp_path / "model")


# -- models given images prepared otherwise (issue 12, item 6) ---------------------------

TINY_VGG19: dict[str, Any] = {
    "name": "vgg19",
    "input_size": 32,
    "weights": None,
    "trainable_blocks": 0,
    "width_multiplier": 0.125,
    "dense_units": 16,
    "batch_size": 8,
    "epochs": 1,
}


@pytest.fixture(scope="module")
def clahe_pipeline() -> Pipeline:
    config = {
        "preprocessor": {"name": "gaussian-clahe", "output_size": 48},
        "classifier": dict(TINY_VGG19),
        "detector": None,
    }
    return Pipeline(config).fit(generate_phantoms(8, size=64, seed=20))


def _edit_saved_preprocessor(directory: Path, **changes: Any) -> None:
    manifest_path = directory / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["preprocessor"].update(changes)
    manifest_path.write_text(json.dumps(manifest))


def test_a_saved_pipeline_whose_preprocessor_is_not_its_models_is_refused_on_load(
    clahe_pipeline: Pipeline, tmp_path: Path
) -> None:
    clahe_pipeline.save(tmp_path / "model")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PreprocessingMismatchWarning)
        Pipeline.load(tmp_path / "model").predict(generate_phantoms(8, size=64, seed=22))
    _edit_saved_preprocessor(tmp_path / "model", clip_limit=4.0)
    with pytest.raises(
        ModelFormatError,
        match=r"pipeline\.json: the classifier VGG19Classifier was trained on gaussian-clahe "
        r".*clip_limit=2\.0.*clip_limit: 2\.0 \(trained\) vs 4\.0",
    ):
        Pipeline.load(tmp_path / "model")
    # Another output size is no mismatch: the classifier resizes to its own input.
    _edit_saved_preprocessor(tmp_path / "model", clip_limit=2.0, output_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PreprocessingMismatchWarning)
        assert len(Pipeline.load(tmp_path / "model").predict(generate_phantoms(2, size=64))) == 6


def test_a_pipeline_given_another_preprocessor_refuses_to_predict(
    clahe_pipeline: Pipeline, tmp_path: Path
) -> None:
    clahe_pipeline.save(tmp_path / "model")
    loaded = Pipeline.load(tmp_path / "model")
    loaded.preprocessor_ = GaussianClahePreprocessor(output_size=48, clip_limit=4.0)
    test = generate_phantoms(2, size=64, seed=24)
    with pytest.raises(ConfigurationError, match=r"clip_limit: 2\.0 \(trained\) vs 4\.0"):
        loaded.predict(test)
    with pytest.raises(ConfigurationError, match="Use the preprocessor it was trained with"):
        loaded.evaluate(test)


def test_a_pipeline_without_a_preprocessor_warns_when_fed_raw_images(
    clahe_pipeline: Pipeline, tmp_path: Path
) -> None:
    clahe_pipeline.save(tmp_path / "model")
    loaded = Pipeline.load(tmp_path / "model")
    loaded.preprocessor_ = None
    with pytest.warns(PreprocessingMismatchWarning, match="local contrast below"):
        loaded.predict(generate_phantoms(8, size=64, seed=21))


def test_a_saved_local_detector_is_checked_against_the_preprocessor_on_load(
    test_config: dict[str, Any], tmp_path: Path
) -> None:
    test_config["preprocessor"] = {"name": "gaussian-clahe", "output_size": 48}
    test_config["detector"] = {
        "name": "local",
        "input_size": 32,
        "base_filters": 2,
        "depth": 1,
        "epochs": 1,
        "threads": 2,
    }
    pipeline = Pipeline(test_config).fit(generate_phantoms(4, size=64, seed=23))
    assert isinstance(pipeline.detector_, LocalDetector)
    assert pipeline.detector_.preprocessing_["clip_limit"] == 2.0
    pipeline.save(tmp_path / "model")
    _edit_saved_preprocessor(tmp_path / "model", tile_grid_size=[4, 4])
    with pytest.raises(ModelFormatError, match=r"the detector LocalDetector .*tile_grid_size"):
        Pipeline.load(tmp_path / "model")
