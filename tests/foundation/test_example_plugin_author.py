"""examples/plugin-author: its README names what the example plugin registers."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import covidcxr

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugin-author"


def test_the_readme_uses_the_names_the_example_plugin_registers(
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    covidcxr_plugin: Callable[..., str],
    tmp_path: Path,
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    # Imported from the checkout for this test only: a later test (the docs' plugin page)
    # imports its own copy of the package under the same name.
    sys.modules.pop("covidcxr_brightspot", None)
    request.addfinalizer(lambda: sys.modules.pop("covidcxr_brightspot", None))
    plugin = covidcxr_plugin(importlib.import_module("covidcxr_brightspot"), name="brightspot")
    readme = (EXAMPLE / "README.md").read_text(encoding="utf-8")
    schemes = re.findall(r'open_source\("([a-z][a-z0-9+.-]*)://', readme)
    detectors = re.findall(r'create_detector\("([^"]+)"', readme)
    assert schemes
    assert detectors
    (tmp_path / "Normal").mkdir()
    np.save(tmp_path / "Normal" / "a.npy", np.ones((8, 8), np.uint8))
    for scheme in schemes:
        assert covidcxr.plugins.available_sources()[scheme].plugin == plugin, scheme
        assert len(covidcxr.open_source(f"{scheme}://{tmp_path}")) == 1
    for detector in detectors:
        assert covidcxr.plugins.available_detectors()[detector].plugin == plugin, detector
