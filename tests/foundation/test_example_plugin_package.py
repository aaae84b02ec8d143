"""A real plugin package, installed with pip, is found through its entry point."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import covidcxr

pytestmark = pytest.mark.usefixtures("example_plugin_installed")


def test_installed_plugin_is_discovered_through_its_entry_point() -> None:
    assert covidcxr.plugins.available_detectors()["bright-region"].plugin == "example"
    assert covidcxr.plugins.available_sources()["npy"].plugin == "example"


def test_installed_detector_is_usable_through_create_detector() -> None:
    pixels = np.zeros((32, 32), np.uint8)
    pixels[4:8, 10:20] = 250
    detector = covidcxr.create_detector("bright-region", percentile=90)
    [detection] = detector.detect(covidcxr.XRay(pixels, id="bright"))
    assert detection.box == covidcxr.Box(10, 4, 10, 4)


def test_the_documented_fixture_recipe_works_on_the_installed_plugin(
    covidcxr_plugin: Callable[..., str],
) -> None:
    # docs/plugins.rst, "Testing a plugin": the plugin's own test, run where it is
    # installed (its entry point registered the module before the test imported it).
    plugin_module = importlib.import_module("covidcxr_example_plugin")
    assert covidcxr_plugin(plugin_module) == "example"
    assert covidcxr.plugins.available_detectors()["bright-region"].plugin == "example"


def test_the_installed_plugin_stays_registered_after_a_test_used_the_fixture() -> None:
    assert "bright-region" in covidcxr.plugins.available_detectors()


def test_installed_source_is_usable_through_open_source(tmp_path: Path) -> None:
    (tmp_path / "COVID").mkdir()
    np.save(tmp_path / "COVID" / "a.npy", np.ones((8, 8), np.uint8))
    source = covidcxr.open_source(f"npy://{tmp_path}")
    assert isinstance(source, covidcxr.DatasetSource)
    assert [xray.label for xray in source] == ["covid-19"]
    assert source.classes == ("covid-19",)


def test_cli_lists_the_installed_plugin_in_a_fresh_process() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "covidcxr", "plugins", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    listing = json.loads(result.stdout)
    assert {"name": "bright-region", "plugin": "example"} in listing["detectors"]
    assert {"name": "npy", "plugin": "example"} in listing["sources"]
