"""Fixtures for the plugin-system tests."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import pytest

from covidcxr.plugins import reset_plugin_manager

EXAMPLE_PLUGIN = Path(__file__).parent.parent / "plugin_packages" / "covidcxr-example-plugin"


@pytest.fixture(scope="session")
def example_plugin_installed() -> str:
    """Make sure the example plugin package is installed in this environment (pip, once)."""
    try:
        metadata.distribution("covidcxr-example-plugin")
    except metadata.PackageNotFoundError:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", str(EXAMPLE_PLUGIN)],
            check=True,
        )
        reset_plugin_manager()
    return "example"


@pytest.fixture
def fresh_plugin_manager() -> Iterator[None]:
    """Load plugins afresh for this test, and again afterwards for the next one."""
    reset_plugin_manager()
    try:
        yield
    finally:
        reset_plugin_manager()


@pytest.fixture
def fake_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_plugin_manager: None
) -> Callable[[str, str, str], None]:
    """Put a distribution with a ``covidcxr`` entry point on ``sys.path``, as pip would.

    ``fake_distribution(entry_point_name, module_name, module_source)`` writes the module
    and a ``.dist-info`` folder that :mod:`importlib.metadata` discovers.
    """

    def install(entry_point_name: str, module_name: str, module_source: str) -> None:
        (tmp_path / f"{module_name}.py").write_text(textwrap.dedent(module_source))
        dist_info = tmp_path / f"{module_name}-1.0.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {module_name}\nVersion: 1.0\n"
        )
        (dist_info / "entry_points.txt").write_text(
            f"[covidcxr]\n{entry_point_name} = {module_name}\n"
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, module_name, raising=False)

    return install
