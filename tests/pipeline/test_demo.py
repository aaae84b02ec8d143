"""The demo job with the library's real default components (tiny sizes)."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner

import covidcxr
from covidcxr.cli import cli
from covidcxr.demo import PHANTOM_NOTE, demo_config, run_demo, sample_per_class
from covidcxr.errors import ConfigurationError, OutputExistsError
from covidcxr.evaluate import EvaluationReport
from covidcxr.phantoms import generate_phantoms
from covidcxr.pipeline import Pipeline, PipelineConfig


def tiny_real_config() -> PipelineConfig:
    config = demo_config(32, epochs=2).to_dict()
    config["classifier"] |= {"width_multiplier": 0.125, "dense_units": 8, "batch_size": 8}
    config["detector"] |= {"epochs": 2, "base_filters": 4, "depth": 2}
    config["evaluation"] = {"n_bootstrap": 20}
    return PipelineConfig.from_dict(config)


def test_demo_configuration_names_the_default_components() -> None:
    config = demo_config(64)
    assert config.preprocessor is not None
    assert config.detector is not None
    names = (config.preprocessor.name, config.classifier.name, config.detector.name)
    assert names == ("gaussian-clahe", "vgg19", "local")
    assert config.classifier.options["weights"] is None  # runs offline
    registries = (
        covidcxr.plugins.available_preprocessors(),
        covidcxr.plugins.available_classifiers(),
        covidcxr.plugins.available_detectors(),
    )
    assert all(name in registry for name, registry in zip(names, registries, strict=True))


@pytest.mark.slow
def test_demo_trains_saves_and_reports_with_the_real_components(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_demo(
        tmp_path / "demo", config=tiny_real_config(), size=32, n_per_class=4, progress=True
    )
    assert "epoch" in capsys.readouterr().err  # the training progress bar
    assert isinstance(result.report, EvaluationReport)
    assert result.report.classification is not None
    assert result.report.detection is not None
    page = (result.report_dir / "report.html").read_text()
    assert PHANTOM_NOTE.split(":")[0] in page
    assert {p.name for p in (result.report_dir / "figures").iterdir()} >= {
        "confusion_matrix.png",
        "training_history.png",
        "annotated_images.png",
    }
    loaded = Pipeline.load(result.model_dir)
    manifest = json.loads((result.model_dir / "pipeline.json").read_text())
    assert manifest["detector"] == {"name": "local", "saved": True}
    assert loaded.classes_ == covidcxr.LABELS
    # Saved again, a loaded pipeline still names its components as registered.
    again = json.loads((loaded.save(tmp_path / "again") / "pipeline.json").read_text())
    assert again["model"]["components"]["detector"]["name"] == "local"
    assert again["model"]["components"]["classifier"]["name"] == "vgg19"
    with pytest.raises(OutputExistsError):
        run_demo(tmp_path / "demo", config=tiny_real_config(), size=32, n_per_class=4)


def test_the_demo_sample_keeps_the_annotated_images_of_a_source_that_has_some() -> None:
    phantoms = generate_phantoms(4, size=32)
    mixed = [
        attrs.evolve(x, meta={**x.meta, "annotated": i % 2 == 0}) for i, x in enumerate(phantoms)
    ]
    sample = sample_per_class(mixed, max_per_class=4)
    assert sample
    assert all(x.meta["annotated"] is True for x in sample)


def test_the_demo_sample_of_class_folders_with_no_annotation_is_not_empty() -> None:
    # What a folder of class subfolders reads as: no image annotated.
    phantoms = generate_phantoms(4, size=32)
    unannotated = [attrs.evolve(x, meta={**x.meta, "annotated": False}) for x in phantoms]
    sample = sample_per_class(unannotated, max_per_class=3)
    expected = ["covid-19"] * 3 + ["normal"] * 3 + ["pneumonia"] * 3
    assert sorted(str(x.label) for x in sample) == expected


def test_source_options_without_data_are_refused_not_ignored(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="on_error='skip' apply only to data="):
        run_demo(tmp_path / "demo", on_error="skip")
    with pytest.raises(ConfigurationError, match="source_options apply only to data="):
        run_demo(tmp_path / "demo", source_options={"layout": "classes"})
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-s", "layout=classes"], "--source-option applies only with --data"),
        (["--on-error", "skip", "--max-per-class", "5"],
         "--on-error, --max-per-class apply only with --data"),
        (["--data", "scans", "--n-per-class", "3"],
         "--n-per-class applies only without --data (to the phantoms)"),
    ],
)  # fmt: skip
def test_the_demo_command_refuses_options_that_would_do_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "demo"), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("max_per_class", [0, -1, 1.5, "2", True])
def test_the_demo_sample_refuses_a_cap_that_is_not_a_positive_integer(
    max_per_class: object,
) -> None:
    with pytest.raises(ConfigurationError, match="max_per_class"):
        sample_per_class(generate_phantoms(2, size=32), max_per_class)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_per_class": 1.5}, "n_per_class"),
    ({"n_per_class": "40"}, "n_per_class"),
    ({"data": "no-such-folder", "max_per_class": 0}, "max_per_class"),
])  # fmt: skip
def test_demo_counts_of_the_wrong_kind_are_refused_before_any_work(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        run_demo(tmp_path / "demo", size=32, **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "demo").exists()
