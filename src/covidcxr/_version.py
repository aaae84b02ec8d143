"""The installed version of covidcxr."""

from __future__ import annotations

from importlib import metadata

try:
    __version__: str = metadata.version("covidcxr")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"
