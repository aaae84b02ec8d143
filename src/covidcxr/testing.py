"""Test helpers for plugin authors (and for covidcxr's own tests).

Register a plugin object for the duration of a test and have it unregistered afterwards,
even when the test fails::

    # conftest.py
    pytest_plugins = ["covidcxr.testing"]

    # test_my_plugin.py
    import covidcxr

    def test_my_detector_is_found(covidcxr_plugin):
        covidcxr_plugin(my_plugin_module)
        assert "my-detector" in covidcxr.plugins.available_detectors()

Outside pytest, use the :func:`registered_plugin` context manager.

A plugin that is already registered (an installed plugin, loaded from its entry point, is
registered by the time a test imports it) is used as it is: neither registered again nor
unregistered afterwards, so the same test works before and after ``pip install``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from covidcxr.plugins import get_plugin_manager, register_plugin, unregister_plugin

__all__ = ["covidcxr_plugin", "registered_plugin"]


def _registered_name(plugin: object) -> str | None:
    """The name ``plugin`` is registered under already, or ``None``."""
    manager = get_plugin_manager()
    return manager.get_name(plugin) if manager.is_registered(plugin) else None


@contextmanager
def registered_plugin(plugin: object, name: str | None = None) -> Iterator[str]:
    """Register ``plugin`` inside a ``with`` block and unregister it on the way out.

    Parameters
    ----------
    plugin
        A module or object with :data:`covidcxr.hookimpl`-marked functions.
    name
        The plugin name shown in listings and errors.

    Yields
    ------
    str
        The name the plugin was registered under (its own name if it already was; it
        then stays registered).
    """
    already = _registered_name(plugin)
    if already is not None:
        yield already
        return
    registered_name = register_plugin(plugin, name=name)
    try:
        yield registered_name
    finally:
        unregister_plugin(registered_name)


@pytest.fixture
def covidcxr_plugin() -> Iterator[Callable[..., str]]:
    """Pytest fixture: a function that registers plugins until the test ends.

    Call it as ``covidcxr_plugin(plugin, name=None)``; it returns the registered name.
    Every plugin registered through it is unregistered when the test finishes; one that
    was registered already (installed, loaded from its entry point) is left as it was.
    """
    registered: list[str] = []

    def register(plugin: object, name: str | None = None) -> str:
        already = _registered_name(plugin)
        if already is not None:
            return already
        registered_name = register_plugin(plugin, name=name)
        registered.append(registered_name)
        return registered_name

    try:
        yield register
    finally:
        for registered_name in reversed(registered):
            unregister_plugin(registered_name)
