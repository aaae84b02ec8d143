"""Exporting a saved pipeline's classifier, loading it with a runtime, and the guard."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from covidcxr import VGG19Classifier, XRay
from covidcxr.errors import (
    AccuracyGuardError,
    ConfigurationError,
    ModelFormatError,
    OutputExistsError,
    SyntheticModelWarning,
)
from covidcxr.pipeline import Pipeline
from covidcxr.runtime import (
    GuardReport,
    RuntimeClassifier,
    RuntimeFallbackWarning,
    export,
)

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("tf2onnx", reason="the onnx extra is not installed")
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]


def _probabilities(pipeline: Pipeline, images: list[XRay]) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntheticModelWarning)
        predictions = pipeline.predict(images)
    return np.array([[p.probabilities[c] for c in pipeline.classes_] for p in predictions])


@pytest.fixture(scope="module")
def onnx_export(
    tmp_path_factory: pytest.TempPathFactory, saved_pipeline: Path, held_out: list[XRay]
) -> Path:
    target = tmp_path_factory.mktemp("exported") / "onnx-fp32"
    report = export(saved_pipeline, target, validation=held_out, runtime="onnx")
    assert report.guard.passed
    return target


def test_an_onnx_export_predicts_what_the_keras_model_predicts(
    onnx_export: Path, saved_pipeline: Path, held_out: list[XRay]
) -> None:
    exported = Pipeline.load(onnx_export)  # runtime=None picks the export
    assert isinstance(exported.classifier_, RuntimeClassifier)
    assert exported.classifier_.runtime == "onnx"
    keras = Pipeline.load(saved_pipeline)
    assert isinstance(keras.classifier_, VGG19Classifier)
    np.testing.assert_allclose(
        _probabilities(exported, held_out), _probabilities(keras, held_out), atol=1e-5
    )


def test_an_exported_network_averages_test_time_views_as_keras_does(
    onnx_export: Path, saved_pipeline: Path, held_out: list[XRay]
) -> None:
    exported = Pipeline.load(onnx_export)
    keras = Pipeline.load(saved_pipeline)
    assert isinstance(exported.classifier_, RuntimeClassifier)
    assert isinstance(keras.classifier_, VGG19Classifier)
    exported.classifier_.keras_classifier.set_params(test_time_rotations=(-7.0, 7.0))
    keras.classifier_.set_params(test_time_rotations=(-7.0, 7.0))
    augmented = _probabilities(exported, held_out)
    np.testing.assert_allclose(augmented, _probabilities(keras, held_out), atol=1e-5)
    plain = Pipeline.load(onnx_export)
    assert not np.allclose(augmented, _probabilities(plain, held_out), atol=1e-6)


def test_an_exported_network_checks_its_parameters_as_keras_does(
    onnx_export: Path, held_out: list[XRay]
) -> None:
    exported = Pipeline.load(onnx_export)
    assert isinstance(exported.classifier_, RuntimeClassifier)
    exported.classifier_.keras_classifier.set_params(batch_size=0)
    with pytest.raises(ConfigurationError, match="batch_size"):
        exported.classifier_.predict_proba(held_out)


def test_the_export_and_its_guard_figures_are_in_the_manifest_and_card(
    onnx_export: Path, held_out: list[XRay]
) -> None:
    manifest = json.loads((onnx_export / "pipeline.json").read_text())
    entry = manifest["export"]
    assert (entry["runtime"], entry["precision"]) == ("onnx", "fp32")
    assert (onnx_export / entry["artifacts"]["classifier"]).is_file()
    assert entry["guard"]["n_images"] == len(held_out)
    assert entry["guard"]["accuracy_drop_points"] == 0.0
    assert manifest["changelog"][-1]["event"] == "exported"
    card = (onnx_export / "model_card.md").read_text()
    assert "## Exported network" in card
    assert f"Accuracy guard on {len(held_out)} held-out images" in card


def test_the_tensorflow_runtime_still_runs_the_keras_model(onnx_export: Path) -> None:
    loaded = Pipeline.load(onnx_export, runtime="tensorflow")
    assert isinstance(loaded.classifier_, VGG19Classifier)


def test_another_runtime_than_the_exported_one_is_refused(onnx_export: Path) -> None:
    with pytest.raises(ModelFormatError, match="exported for 'onnx', not 'openvino'"):
        Pipeline.load(onnx_export, runtime="openvino")


def test_a_pipeline_never_exported_is_refused_for_a_runtime(saved_pipeline: Path) -> None:
    with pytest.raises(ModelFormatError, match="was not exported for 'onnx'"):
        Pipeline.load(saved_pipeline, runtime="onnx")


def test_auto_picks_the_exported_runtime_as_the_command_line_does(onnx_export: Path) -> None:
    # `covidcxr predict --runtime auto` is the default; Python accepts the same word.
    auto = Pipeline.load(onnx_export, runtime="auto")
    assert type(auto.classifier_) is type(Pipeline.load(onnx_export).classifier_)
    assert not isinstance(auto.classifier_, VGG19Classifier)


def test_an_unknown_runtime_is_refused(saved_pipeline: Path) -> None:
    with pytest.raises(ConfigurationError, match="runtime must be one of"):
        Pipeline.load(saved_pipeline, runtime="tensorrt")


def test_without_the_runtime_package_tensorflow_runs_with_a_warning(
    onnx_export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes ``import onnxruntime`` raise ImportError, as when absent.
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.warns(RuntimeFallbackWarning, match="'onnxruntime' is not installed"):
        loaded = Pipeline.load(onnx_export)
    assert isinstance(loaded.classifier_, VGG19Classifier)
    with pytest.raises(ConfigurationError, match=r"pip install 'covidcxr\[onnx\]'"):
        Pipeline.load(onnx_export, runtime="onnx")


def test_an_openvino_export_predicts_what_the_keras_model_predicts(
    tmp_path: Path, saved_pipeline: Path, held_out: list[XRay]
) -> None:
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    report = export(saved_pipeline, tmp_path / "ov", validation=held_out, runtime="openvino")
    assert report.artifact == "exported/classifier.xml"
    exported = Pipeline.load(tmp_path / "ov", runtime="openvino")
    np.testing.assert_allclose(
        _probabilities(exported, held_out),
        _probabilities(Pipeline.load(saved_pipeline), held_out),
        atol=1e-5,
    )


def test_int8_calibrated_on_training_images_passes_the_guard(
    tmp_path: Path, saved_pipeline: Path, held_out: list[XRay], training_images: list[XRay]
) -> None:
    report = export(
        saved_pipeline,
        tmp_path / "int8",
        validation=held_out,
        precision="int8",
        calibration=training_images,
        runtime="onnx",
    )
    assert report.guard.passed
    assert report.n_calibration_images == len(training_images)
    # Quantised for real: the probabilities moved, the labels did not.
    assert report.guard.max_abs_probability_difference > 1e-4
    assert report.guard.n_labels_changed == 0
    loaded = Pipeline.load(tmp_path / "int8")
    assert isinstance(loaded.classifier_, RuntimeClassifier)
    assert loaded.classifier_.precision == "int8"
    calibration = json.loads((tmp_path / "int8" / "pipeline.json").read_text())["export"]
    assert calibration["calibration"]["n_images"] == len(training_images)


@pytest.mark.filterwarnings("ignore::covidcxr.classify.PixelRangeWarning")  # blank on purpose
def test_int8_calibrated_on_blank_frames_is_refused_and_nothing_is_written(
    tmp_path: Path, saved_pipeline: Path, held_out: list[XRay], blank_images: list[XRay]
) -> None:
    target = tmp_path / "broken"
    with pytest.raises(AccuracyGuardError, match="nothing was written") as refused:
        export(
            saved_pipeline,
            target,
            validation=held_out,
            precision="int8",
            calibration=blank_images,
            runtime="onnx",
        )
    assert isinstance(refused.value.report, GuardReport)
    assert refused.value.report.accuracy_drop > 0.5
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind either


@pytest.mark.filterwarnings("ignore::covidcxr.classify.PixelRangeWarning")  # blank on purpose
def test_a_refused_export_leaves_the_earlier_one_in_place(
    onnx_export: Path, saved_pipeline: Path, held_out: list[XRay], blank_images: list[XRay]
) -> None:
    before = {p: p.read_bytes() for p in sorted(onnx_export.rglob("*")) if p.is_file()}
    with pytest.raises(AccuracyGuardError):
        export(
            saved_pipeline,
            onnx_export,
            validation=held_out,
            precision="int8",
            calibration=blank_images,
            overwrite=True,
            runtime="onnx",
        )
    after = {p: p.read_bytes() for p in sorted(onnx_export.rglob("*")) if p.is_file()}
    assert after == before


def test_an_existing_folder_is_not_replaced_without_overwrite(
    onnx_export: Path, saved_pipeline: Path, held_out: list[XRay]
) -> None:
    with pytest.raises(OutputExistsError):
        export(saved_pipeline, onnx_export, validation=held_out, runtime="onnx")


def test_int8_needs_calibration_images(saved_pipeline: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="needs calibration images"):
        export(saved_pipeline, tmp_path / "x", validation=[], precision="int8", runtime="onnx")
    assert not (tmp_path / "x").exists()


def test_calibration_images_without_int8_are_refused_not_ignored(
    saved_pipeline: Path, tmp_path: Path, held_out: list[XRay]
) -> None:
    with pytest.raises(ConfigurationError, match="only used by precision='int8', not 'fp32'"):
        export(saved_pipeline, tmp_path / "x", validation=[], calibration=held_out, runtime="onnx")
    assert not (tmp_path / "x").exists()


def test_bf16_is_refused_where_the_runtime_does_not_offer_it(
    saved_pipeline: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match="bf16 is offered by runtime='openvino'"):
        export(saved_pipeline, tmp_path / "x", validation=[], precision="bf16", runtime="onnx")


def test_unlabelled_held_out_images_are_refused(
    saved_pipeline: Path, tmp_path: Path, held_out: list[XRay]
) -> None:
    import attrs

    unlabelled = [attrs.evolve(xray, label=None) for xray in held_out]
    with pytest.raises(ConfigurationError, match="labelled held-out radiographs"):
        export(saved_pipeline, tmp_path / "x", validation=unlabelled, runtime="onnx")
    assert not (tmp_path / "x").exists()


def test_a_damaged_export_entry_or_missing_network_is_refused(
    onnx_export: Path, tmp_path: Path
) -> None:
    import shutil

    copy = Path(shutil.copytree(onnx_export, tmp_path / "copy"))
    manifest = json.loads((copy / "pipeline.json").read_text())
    (copy / manifest["export"]["artifacts"]["classifier"]).unlink()
    with pytest.raises(ModelFormatError, match="the exported network is missing"):
        Pipeline.load(copy)
    manifest["export"]["precision"] = "int4"
    (copy / "pipeline.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFormatError, match="the 'export' entry is damaged"):
        Pipeline.load(copy)


def test_an_exported_classifier_does_not_train(onnx_export: Path, held_out: list[XRay]) -> None:
    classifier = Pipeline.load(onnx_export).classifier_
    with pytest.raises(ConfigurationError, match="does not train"):
        classifier.fit(held_out)


def test_a_litert_export_predicts_what_the_keras_model_predicts(
    tmp_path: Path, saved_pipeline: Path, held_out: list[XRay]
) -> None:
    pytest.importorskip("ai_edge_litert", reason="the litert extra is not installed")
    report = export(saved_pipeline, tmp_path / "litert", validation=held_out, runtime="litert")
    assert report.artifact == "exported/classifier.tflite"
    exported = Pipeline.load(tmp_path / "litert")
    assert isinstance(exported.classifier_, RuntimeClassifier)
    np.testing.assert_allclose(
        _probabilities(exported, held_out),
        _probabilities(Pipeline.load(saved_pipeline), held_out),
        atol=1e-5,
    )


@pytest.mark.filterwarnings("ignore::covidcxr.classify.PixelRangeWarning")  # blank on purpose
@pytest.mark.parametrize(
    ("runtime", "packages"),
    [("litert", ["ai_edge_litert"]), ("openvino", ["openvino", "nncf"])],
)
def test_int8_of_another_runtime_passes_with_training_images_and_is_refused_with_blank_frames(
    runtime: str,
    packages: list[str],
    *,
    tmp_path: Path,
    saved_pipeline: Path,
    held_out: list[XRay],
    training_images: list[XRay],
    blank_images: list[XRay],
) -> None:
    for package in packages:
        pytest.importorskip(package, reason=f"the {runtime} extra is not installed")
    good = export(
        saved_pipeline,
        tmp_path / "good",
        validation=held_out,
        runtime=runtime,
        precision="int8",
        calibration=training_images,
    )
    assert good.guard.passed
    assert good.guard.max_abs_probability_difference > 1e-4  # quantised for real
    loaded = Pipeline.load(tmp_path / "good")
    assert isinstance(loaded.classifier_, RuntimeClassifier)
    assert (loaded.classifier_.runtime, loaded.classifier_.precision) == (runtime, "int8")
    with pytest.raises(AccuracyGuardError):
        export(
            saved_pipeline,
            tmp_path / "broken",
            validation=held_out,
            runtime=runtime,
            precision="int8",
            calibration=blank_images,
        )
    assert not (tmp_path / "broken").exists()


def test_a_fitted_pipeline_object_can_be_exported(
    tmp_path: Path, saved_pipeline: Path, held_out: list[XRay]
) -> None:
    report = export(
        Pipeline.load(saved_pipeline), tmp_path / "from-object", validation=held_out, runtime="onnx"
    )
    assert report.guard.passed
    assert isinstance(Pipeline.load(tmp_path / "from-object").classifier_, RuntimeClassifier)


@pytest.mark.parametrize("runtime", [None, "tensorflow"])
def test_saving_a_pipeline_loaded_from_an_export_says_the_export_is_dropped(
    onnx_export: Path, tmp_path: Path, runtime: str | None
) -> None:
    # A save writes the Keras models only: the saved copy runs TensorFlow. It must not
    # do so silently, nor keep a card that claims the export.
    with pytest.warns(RuntimeFallbackWarning, match=r"loaded from an export for onnx \(fp32\)"):
        saved = Pipeline.load(onnx_export, runtime=runtime).save(tmp_path / "again")
    manifest = json.loads((saved / "pipeline.json").read_text())
    assert "export" not in manifest
    events = [entry["event"] for entry in manifest["changelog"]]
    assert events[-3:] == ["exported", "export dropped", "saved"]
    assert "export dropped: saved without the onnx (fp32) export" in (
        (saved / "model_card.md").read_text()
    )
    assert "## Exported networks" not in (saved / "model_card.md").read_text()
    reloaded = Pipeline.load(saved)
    assert isinstance(reloaded.classifier_, VGG19Classifier)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeFallbackWarning)  # said once, not again
        again = reloaded.save(tmp_path / "third")
    events = [
        entry["event"] for entry in json.loads((again / "pipeline.json").read_text())["changelog"]
    ]
    assert events.count("export dropped") == 1


def test_an_exported_classifier_reports_what_the_pipeline_checks(onnx_export: Path) -> None:
    # The pipeline refuses a preprocessor unlike the classifier's training preprocessing
    # (RecordsPreprocessing); the model card reads the input size and normalisation;
    # Grad-CAM differentiates model_. All are the Keras classifier's.
    from covidcxr.protocols import RecordsPreprocessing

    classifier = Pipeline.load(onnx_export).classifier_
    assert isinstance(classifier, RuntimeClassifier)
    assert isinstance(classifier, RecordsPreprocessing)
    keras_classifier = classifier.keras_classifier
    assert classifier.preprocessing_ == keras_classifier.preprocessing_ is not None
    assert (classifier.input_size, classifier.input_normalization) == (
        keras_classifier.input_size,
        keras_classifier.input_normalization,
    )
    assert classifier.model_ is keras_classifier.model_


def test_an_exported_pipeline_takes_window_levels_and_a_working_size(
    onnx_export: Path, held_out: list[XRay]
) -> None:
    # Both record a preprocessing option as trained with, the exported classifier's too
    # (the Keras classifier's record, which the export was made from).
    exported = Pipeline.load(onnx_export)
    before = _probabilities(exported, held_out)
    exported.set_window_levels((0, 228)).set_working_size(48)
    classifier = exported.classifier_
    assert isinstance(classifier, RuntimeClassifier)
    assert classifier.preprocessing_["window_levels"] == [0, 228]
    assert classifier.keras_classifier.preprocessing_["working_size"] == 48
    # The phantoms are 8-bit and 48 px: neither option changes what the network sees.
    np.testing.assert_allclose(_probabilities(exported, held_out), before, atol=1e-6)


def test_int8_calibration_images_are_spread_over_every_class_folder(tmp_path: Path) -> None:
    # The first 256 of a class-folder source are all of its first class: a biased int8
    # calibration. They are spread evenly over the source instead.
    import cv2

    from covidcxr.runtime._export import _spread
    from covidcxr.sources import FolderSource

    for folder in ("COVID", "NORMAL", "Viral Pneumonia"):
        (tmp_path / folder).mkdir()
        for index in range(10):
            pixels = np.full((64, 64), 20 * index, np.uint8)
            assert cv2.imwrite(str(tmp_path / folder / f"{index:02d}.png"), pixels)
    (tmp_path / "NORMAL" / "05.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    source = FolderSource(tmp_path, on_error="skip")
    chosen = _spread(source, 6)
    assert [xray.label for xray in chosen].count("covid-19") == 2
    assert {xray.label for xray in chosen} == {"covid-19", "normal", "pneumonia"}
    # Only the chosen files are read: the broken one, not among them, is never met.
    assert source.skipped == ()
    records = list(FolderSource(tmp_path, on_error="skip"))
    assert [x.id for x in _spread(records, 3)] == [records[i].id for i in (0, 14, 28)]
    assert [x.id for x in _spread(iter(records), 3)] == [x.id for x in records[:3]]
    assert len(_spread(records, 100)) == len(records)
