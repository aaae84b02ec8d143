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
from covidcxr.plugins import ALLOW_LIST_ENV, reset_plugin_manager
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
