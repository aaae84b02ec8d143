"""The built-in detectors, registered through the same hook as third-party plugins.

The factories import their modules (and, through them, TensorFlow or the IBM SDK) only
when a detector is built, so looking a name up stays cheap.
"""

from __future__ import annotations

from typing import Any

from covidcxr.hookspecs import Register, hookimpl
from covidcxr.protocols import LesionDetector

__all__ = ["covidcxr_register_detectors"]


def _watson(**options: Any) -> LesionDetector:
    from covidcxr.detect.watson import WatsonDetector  # noqa: PLC0415 - keep lookups light

    return WatsonDetector(**options)


@hookimpl
def covidcxr_register_detectors(register: Register) -> None:
    """Register ``"watson"``."""
    register("watson", _watson)
