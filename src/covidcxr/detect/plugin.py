"""The built-in detectors, registered through the same hook as third-party plugins.

The factories import their modules (and, through them, TensorFlow or the IBM SDK) only
when a detector is built, so looking a name up stays cheap.
"""

from __future__ import annotations

from typing import Any

from covidcxr.errors import ConfigurationError
from covidcxr.hookspecs import Register, hookimpl
from covidcxr.protocols import LesionDetector

__all__ = ["covidcxr_register_detectors", "default_detector_name"]


def default_detector_name() -> str:
    """``"watson"`` when the environment configures Watson, else the offline ``"local"``.

    Watson counts as configured when ``COVIDCXR_WATSON_URL``, ``COVIDCXR_WATSON_APIKEY``
    and ``COVIDCXR_WATSON_COLLECTION_IDS`` are all set.

    Examples
    --------
    >>> default_detector_name() in ("local", "watson")
    True
    """
    from covidcxr.detect._watson_service import watson_configured  # noqa: PLC0415

    return "watson" if watson_configured() else "local"


def _watson(**options: Any) -> LesionDetector:
    from covidcxr.detect._watson import WatsonDetector  # noqa: PLC0415 - keep lookups light

    return WatsonDetector(**options)


#: The parameters of a :class:`LocalDetector`'s network: fixed by a saved model's weights.
_NETWORK_PARAMS = ("input_size", "base_filters", "depth")


def _local(**options: Any) -> LesionDetector:
    """A new :class:`LocalDetector`, or a saved one with ``model=path``.

    Raises
    ------
    ConfigurationError
        If ``model=path`` comes with a parameter of the network (``input_size``,
        ``base_filters``, ``depth``): the saved weights fix those.
    """
    from covidcxr.detect._local import LocalDetector  # noqa: PLC0415

    model = options.pop("model", None)
    if model is not None:
        # Post-processing options (mask_threshold, min_area_fraction, label ...) may be
        # changed on a loaded model; the network's own are fixed by its weights.
        fixed = [name for name in _NETWORK_PARAMS if name in options]
        if fixed:
            raise ConfigurationError(
                f"a saved local detector's network parameters are fixed by its weights: "
                f"{', '.join(map(repr, fixed))} cannot be set on it (post-processing options "
                "such as mask_threshold, min_area_fraction and label can); train a new "
                "detector for another network"
            )
        detector = LocalDetector.load(model).set_params(**options)
        return detector
    return LocalDetector(**options)


def _gradcam(**options: Any) -> LesionDetector:
    """A :class:`GradCAMDetector` over ``classifier=`` or a saved one at ``model=path``."""
    from covidcxr.detect._gradcam import GradCAMDetector  # noqa: PLC0415

    classifier = options.pop("classifier", None)
    model = options.pop("model", None)
    if classifier is None and model is not None:
        from covidcxr.classify import VGG19Classifier  # noqa: PLC0415

        classifier = VGG19Classifier.load(model)
    if classifier is None:
        raise ConfigurationError(
            "the gradcam detector needs a fitted classifier: pass classifier= or model= "
            "(the path of a saved VGG19Classifier)"
        )
    return GradCAMDetector(classifier, **options)


@hookimpl
def covidcxr_register_detectors(register: Register) -> None:
    """Register ``"watson"``, ``"local"`` and ``"gradcam"``."""
    register("watson", _watson)
    register("local", _local)
    register("gradcam", _gradcam)
