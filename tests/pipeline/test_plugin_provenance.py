"""A saved pipeline records which plugin distribution each component came from.

Loaded where that plugin is missing, it says what to install, version included, instead
of only "not registered".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from covidcxr import Pipeline
from covidcxr.errors import UnknownNameError
from covidcxr.phantoms import generate_phantoms
from covidcxr.plugins import ALLOW_LIST_ENV, create_preprocessor, reset_plugin_manager
from covidcxr.testing import registered_plugin

from .conftest import ComponentsPlugin

pytest.importorskip("covidcxr_example_plugin", reason="needs tests/plugin_packages installed")


@pytest.fixture
def fresh_plugins() -> Iterator[None]:
    reset_plugin_manager()
    try:
        yield
    finally:
        reset_plugin_manager()


def test_a_model_saved_with_a_plugin_detector_names_the_distribution_to_install(
    test_config: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_plugins: None,
) -> None:
    config = {**test_config, "detector": {"name": "bright-region", "percentile": 98.0}}
    with registered_plugin(ComponentsPlugin(), name="provenance-components"):
        pipeline = Pipeline(config).fit(generate_phantoms(6, size=64, seed=0))
        saved = pipeline.save(tmp_path / "model")
    version = metadata.version("covidcxr-example-plugin")
    manifest = json.loads((saved / "pipeline.json").read_text())
    assert manifest["plugins"] == {
        "detector": {
            "name": "bright-region",
            "plugin": "example",
            "distribution": "covidcxr-example-plugin",
            "version": version,
        }
    }
    # Elsewhere, without the plugin (here: not allowed to load).
    monkeypatch.setenv(ALLOW_LIST_ENV, "")
    reset_plugin_manager()
    with (
        registered_plugin(ComponentsPlugin(), name="provenance-components"),
        pytest.raises(
            UnknownNameError,
            match=rf"no detector named 'bright-region'.*pip install "
            rf"'covidcxr-example-plugin=={version}'",
        ),
    ):
        Pipeline.load(saved)


@pytest.mark.parametrize("given_as", ["name", "object"])
def test_a_plugin_preprocessor_is_recorded_whether_named_or_given_as_an_object(
    given_as: str,
    test_config: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_plugins: None,
) -> None:
    # The test components are registered at run time (no distribution), so stand in for
    # an installed plugin's distribution where the pipeline asks.
    def installed(kind: str, name: str) -> dict[str, str] | None:
        if (kind, name) == ("preprocessor", "test-shrink"):
            return {"plugin": "shrinker", "distribution": "covidcxr-shrink", "version": "1.2"}
        return None

    monkeypatch.setattr("covidcxr.pipeline._estimator.provenance", installed)
    with registered_plugin(ComponentsPlugin(), name="provenance-components"):
        if given_as == "name":
            pipeline = Pipeline(test_config)
        else:
            options = test_config.pop("preprocessor")
            name = options.pop("name")
            pipeline = Pipeline(test_config, preprocessor=create_preprocessor(name, **options))
        saved = pipeline.fit(generate_phantoms(6, size=64, seed=0)).save(tmp_path / "model")
    manifest = json.loads((saved / "pipeline.json").read_text())
    assert manifest["plugins"] == {
        "preprocessor": {
            "name": "test-shrink",
            "plugin": "shrinker",
            "distribution": "covidcxr-shrink",
            "version": "1.2",
        }
    }
