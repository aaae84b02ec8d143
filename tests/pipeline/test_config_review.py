"""Reviewed defects of PipelineConfig: value types and "none" read as everywhere else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from covidcxr.errors import ConfigurationError
from covidcxr.pipeline import PipelineConfig


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('n_bootstrap = "100"', r"\[evaluation\] n_bootstrap must be an integer >= 0.*'100'"),
        ('confidence_level = "0.95"', r"\[evaluation\] confidence_level must be a number"),
        ("confidence_level = 95", r"confidence_level must be a number in \(0, 1\).*95"),
        ("n_bins = true", r"\[evaluation\] n_bins must be an integer >= 1, got True"),
        ("n_bootstrap = 10.0", r"n_bootstrap must be an integer"),
        ("seed = -1", r"\[evaluation\] seed must be an integer >= 0"),
    ],
)
def test_a_wrongly_typed_evaluation_value_in_toml_is_refused_when_read(
    tmp_path: Path, toml: str, expected: str
) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text(f"[evaluation]\n{toml}\n")
    with pytest.raises(ConfigurationError, match=expected) as caught:
        PipelineConfig.from_toml(path)
    assert str(path) in str(caught.value)


def test_valid_evaluation_values_are_kept_and_round_trip() -> None:
    table = {"n_bootstrap": 0, "confidence_level": 0.9, "n_bins": 5, "seed": 3}
    config = PipelineConfig.from_dict({"evaluation": table})
    assert config.evaluation == table
    assert PipelineConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("value", ["abc", [1, 2], None])
def test_an_evaluation_entry_that_is_not_a_table_is_a_configuration_error(value: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"\[evaluation\] must be a table"):
        PipelineConfig.from_dict({"evaluation": value})


def test_a_configuration_that_is_not_a_table_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="must be a table of tables, got list"):
        PipelineConfig.from_dict([("classifier", {"name": "vgg19"})])  # type: ignore[arg-type]


@pytest.mark.parametrize("spelling", ["None", "NONE"])
def test_none_in_any_case_leaves_a_component_or_the_lung_stage_out(spelling: str) -> None:
    config = PipelineConfig.from_dict(
        {
            "preprocessor": {"name": spelling},
            "detector": {"name": spelling},
            "lungs": {"name": spelling},
        }
    )
    assert (config.preprocessor, config.detector, config.lungs) == (None, None, None)
    with pytest.raises(ConfigurationError, match="cannot be 'none'"):
        PipelineConfig.from_dict({"classifier": {"name": spelling}})
