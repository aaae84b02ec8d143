"""A save writes the pipeline that was fitted, not parameters set since the fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest

from covidcxr import Pipeline, XRay
from covidcxr.errors import ConfigurationError
from covidcxr.pipeline import PipelineConfig

pytestmark = pytest.mark.usefixtures("test_components")


def _fitted(config: dict[str, Any], train: list[XRay]) -> Pipeline:
    return Pipeline(config).fit(train)


def _probabilities(pipeline: Pipeline, images: list[XRay]) -> np.ndarray:
    return np.array([list(p.probabilities.values()) for p in pipeline.predict(images)])


def test_a_preprocessor_configured_after_fit_is_refused_at_save(
    test_config: dict[str, Any], phantom_train: list[XRay], phantom_test: list[XRay], tmp_path: Path
) -> None:
    pipeline = _fitted(test_config, phantom_train)
    before = _probabilities(pipeline, phantom_test)
    other = {**test_config, "preprocessor": {"name": "test-shrink", "output_size": 16}}
    pipeline.config = PipelineConfig.from_dict(other)
    # Predictions still come from the fitted preprocessor (32 px) ...
    np.testing.assert_allclose(_probabilities(pipeline, phantom_test), before)
    # ... so a save that wrote the 16 px one would load as another model.
    with pytest.raises(ConfigurationError, match=r"preprocessor.*changed since.*fit"):
        pipeline.save(tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_a_preprocessor_object_replaced_after_fit_is_refused_at_save(
    test_config: dict[str, Any], phantom_train: list[XRay], tmp_path: Path
) -> None:
    pipeline = _fitted(test_config, phantom_train)
    fitted = pipeline.preprocessor_
    pipeline.preprocessor = attrs.evolve(fitted, output_size=16)  # type: ignore[misc]
    with pytest.raises(ConfigurationError, match=r"preprocessor.*changed since.*fit"):
        pipeline.save(tmp_path / "model")
    # Put back (an equal object), it saves and loads as the model that was fitted.
    pipeline.preprocessor = attrs.evolve(fitted)  # type: ignore[misc]
    loaded = Pipeline.load(pipeline.save(tmp_path / "model"))
    assert loaded.preprocessor_ == fitted


def test_an_unchanged_pipeline_saves_and_loads_as_before(
    test_config: dict[str, Any], phantom_train: list[XRay], phantom_test: list[XRay], tmp_path: Path
) -> None:
    pipeline = _fitted(test_config, phantom_train)
    loaded = Pipeline.load(pipeline.save(tmp_path / "model"))
    np.testing.assert_allclose(
        _probabilities(loaded, phantom_test), _probabilities(pipeline, phantom_test), atol=1e-6
    )
    loaded.save(tmp_path / "again")  # a loaded pipeline is its own fit
