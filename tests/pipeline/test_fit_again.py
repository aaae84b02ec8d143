"""Fitting a pipeline again: each fit decides for its own data, as a fresh pipeline would.

A fit leaves out a default stage its data cannot train (the input gate on a toy data set,
the lesion detector on radiographs without lesion annotations) and records that in
``config``; the next fit, on other data, must not inherit the omission.
"""

from __future__ import annotations

import copy
from typing import Any

import attrs
import pytest

from covidcxr import Pipeline, XRay
from covidcxr.detect import LocalDetector
from covidcxr.gate import ChestXrayGate
from covidcxr.phantoms import generate_phantoms

pytestmark = [
    pytest.mark.usefixtures("test_components"),
    pytest.mark.filterwarnings("ignore::covidcxr.errors.SyntheticModelWarning"),
]


class _Fits:
    """Stands in for a stage's ``fit`` (training the real network is not what is tested)."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def method(self) -> Any:
        """A ``fit`` to set on the stage's class: it counts the radiographs it is given."""

        def fit(stage: Any, xrays: Any, validation: Any = None) -> Any:
            self.sizes.append(len(xrays))
            return stage

        return fit


def _unannotated(xray: XRay) -> XRay:
    meta = {k: v for k, v in xray.meta.items() if k != "infection_mask"}
    return attrs.evolve(xray, boxes=(), meta=meta)


def test_a_gate_dropped_for_a_toy_data_set_is_fitted_on_a_larger_one(
    test_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fits = _Fits()
    monkeypatch.setattr(ChestXrayGate, "fit", fits.method())
    config = copy.deepcopy(test_config)
    del config["trust"]  # the default gate
    pipeline = Pipeline(config)
    with pytest.warns(UserWarning, match="too few to fit the input gate"):
        pipeline.fit(generate_phantoms(4, size=32, seed=0))
    assert pipeline.gate_ is None
    pipeline.fit(generate_phantoms(40, size=32, seed=0))
    fresh = Pipeline(config).fit(generate_phantoms(40, size=32, seed=0))
    assert isinstance(fresh.gate_, ChestXrayGate)
    # Fitted again, the pipeline does what a fresh one does with the same data.
    gate: object = pipeline.gate_  # no longer None
    assert isinstance(gate, ChestXrayGate)
    assert fits.sizes == [120, 120]
    assert pipeline.config.trust.gate is True


def test_a_detector_dropped_for_unannotated_data_is_trained_on_annotated_data(
    test_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fits = _Fits()
    monkeypatch.setattr(LocalDetector, "fit", fits.method())
    config = copy.deepcopy(test_config)
    del config["detector"]  # the default detector
    annotated = generate_phantoms(4, size=32, seed=0)
    pipeline = Pipeline(config)
    with pytest.warns(UserWarning, match="carry no lesion boxes"):
        pipeline.fit([_unannotated(x) for x in annotated])
    assert pipeline.detector_ is None
    assert pipeline.config.detector is None
    pipeline.fit(annotated)
    detector: object = pipeline.detector_  # no longer None
    assert isinstance(detector, LocalDetector)
    assert fits.sizes == [12]
    assert pipeline.config.detector is not None


def test_a_configuration_set_after_a_fit_is_kept_by_the_next(
    test_config: dict[str, Any],
) -> None:
    config = copy.deepcopy(test_config)
    del config["detector"]
    annotated = generate_phantoms(4, size=32, seed=0)
    pipeline = Pipeline(config)
    with pytest.warns(UserWarning, match="carry no lesion boxes"):
        pipeline.fit([_unannotated(x) for x in annotated])
    # What the user configures after a fit is theirs: the next fit keeps it.
    pipeline.config = attrs.evolve(pipeline.config, detector=None)
    pipeline.fit(annotated)
    assert pipeline.detector_ is None
    assert pipeline.config.detector is None
