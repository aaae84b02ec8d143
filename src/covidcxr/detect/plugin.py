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


def _local(**options: Any) -> LesionDetector:
    """A new :class:`LocalDetector`, or a saved one with ``model=path``."""
    from covidcxr.detect.local import LocalDetector  # noqa: PLC0415

    model = options.pop("model", None)
    if model is not None:
        detector = LocalDetector.load(model)
        for name, value in options.items():
            setattr(detector, name, value)
        return detector
    return LocalDetector(**options)


@hookimpl
def covidcxr_register_detectors(register: Register) -> None:
    """Register ``"watson"`` and ``"local"``."""
    register("watson", _watson)
    register("local", _local)
