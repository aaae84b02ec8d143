"""Built-in plugin: registers the dataset sources by URI scheme.

The IBM COS SDK is imported only when a ``cos://`` source is opened, so listing plugins
stays light.
"""

from __future__ import annotations

from covidcxr.hookspecs import Register, hookimpl
from covidcxr.sources._archive import ZipSource
from covidcxr.sources._cos import COSSource
from covidcxr.sources._folder import open_local

__all__ = ["covidcxr_register_sources"]


@hookimpl
def covidcxr_register_sources(register: Register) -> None:
    """Register the ``file`` (folders, files, patterns), ``zip`` and ``cos`` schemes."""
    register("file", open_local)
    register("zip", ZipSource)
    register("cos", COSSource)
