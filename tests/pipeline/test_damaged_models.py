"""A damaged saved pipeline or model is refused with a ModelFormatError naming the file.

And options given at load that a saved detector cannot take are refused by name.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import covidcxr
from covidcxr import XRay
from covidcxr.classify._runtime import resolve_runtime
from covidcxr.detect import LocalDetector
from covidcxr.errors import ConfigurationError, ModelFormatError
from covidcxr.lungs import LungSegmenter
from covidcxr.pipeline import MANIFEST_NAME, Pipeline
from covidcxr.pretrained import PIPELINE_FOLDER, model_info

from ..conftest import edit_archive_metadata

#: A shipped model's saved pipeline: real U-Net archives to damage (copies of them).
SHIPPED = model_info("covidqu-lungs-vgg19-64").path / PIPELINE_FOLDER


@pytest.fixture(scope="module")
def saved(
    module_test_components: str,
    module_test_config: dict[str, Any],
    phantom_train: list[XRay],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A pipeline of the test components, saved once (tests damage copies of it)."""
    config = {**module_test_config, "evaluation": {"n_bootstrap": 0}}
    return Pipeline(config).fit(phantom_train).save(tmp_path_factory.mktemp("saved") / "model")


def _damaged_copy(saved: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    copy = Path(shutil.copytree(saved, tmp_path / "model"))
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    edit(manifest)
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    return copy


# -- pipeline.json -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["trust"].update(gate="yes"), r"field 'trust\.gate' should be null or an"),
        (lambda m: m["trust"].update(gate=[1]), r"field 'trust\.gate' should be null or an"),
        (lambda m: m.update(export="x"), r"field 'export' should be null or an object"),
        (lambda m: m.update(export=[]), r"field 'export' should be null or an object"),
        (lambda m: m["preprocessor"].update(nope=1), r"a saved option is refused \(.*'nope'"),
    ],
    ids=["gate-string", "gate-list", "export-string", "export-list", "preprocessor-option"],
)
def test_a_damaged_manifest_entry_is_refused_naming_the_manifest(
    module_test_components: str,
    saved: Path,
    tmp_path: Path,
    edit: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    copy = _damaged_copy(saved, tmp_path, edit)
    with pytest.raises(ModelFormatError, match=rf"{copy / MANIFEST_NAME}: {message}"):
        Pipeline.load(copy)


def test_a_damaged_export_entry_is_refused_by_the_runtime_too(tmp_path: Path) -> None:
    for entry in ("x", ["onnx"], 3):
        with pytest.raises(
            ModelFormatError, match=r"pipeline\.json: the 'export' entry is damaged"
        ):
            resolve_runtime(tmp_path, entry, None)  # type: ignore[arg-type]


# -- detector options ------------------------------------------------------------------------


def test_detector_options_cannot_replace_a_saved_detectors_model(
    module_test_components: str, saved: Path
) -> None:
    with pytest.raises(ConfigurationError, match="detector_options cannot set 'model'"):
        Pipeline.load(saved, detector_options={"model": "/elsewhere"})


@pytest.mark.parametrize("option", ["input_size", "base_filters", "depth"])
def test_a_saved_local_detectors_network_parameters_are_refused(option: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"'{option}' cannot be set on it"):
        covidcxr.create_detector("local", model=str(SHIPPED / "detector"), **{option: 64})


@pytest.mark.slow
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model": "/elsewhere"}, "detector_options cannot set 'model'"),
        ({"input_size": 64}, "'input_size' cannot be set on it"),
    ],
)
def test_a_shipped_models_detector_refuses_options_it_cannot_take(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        covidcxr.pretrained.load("covidqu-lungs-vgg19-64", detector_options=options)


# -- U-Net archives ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "member", "params", "refused"),
    [
        (LungSegmenter, "lungs", {"threshold": 2.0}, "threshold must be in"),
        (LungSegmenter, "lungs", {"input_size": "x"}, "not supported between"),
        (LocalDetector, "detector", {"mask_threshold": 5}, "mask_threshold must be in"),
    ],
    ids=["lungs-threshold", "lungs-input-size", "detector-mask-threshold"],
)
def test_unet_parameters_the_estimator_refuses_are_a_model_format_error(
    tmp_path: Path, cls: Any, member: str, params: dict[str, Any], refused: str
) -> None:
    path = Path(shutil.copy(SHIPPED / member, tmp_path / member))
    edit_archive_metadata(path, lambda metadata: metadata["params"].update(params))
    with pytest.raises(
        ModelFormatError, match=rf"{path}: covidcxr\.json records parameters .*{refused}"
    ):
        cls.load(path)
