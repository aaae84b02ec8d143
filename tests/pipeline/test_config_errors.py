"""A mistyped configuration names the file, the table and the key, and suggests a fix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import covidcxr
from covidcxr.errors import ConfigurationError, UnknownNameError
from covidcxr.pipeline import Pipeline, PipelineConfig


def test_a_mistyped_option_in_a_toml_file_names_file_table_key_and_the_closest_option(
    tmp_path: Path,
) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text('[classifier]\nname = "vgg19"\nepoch = 3\n')
    with pytest.raises(ConfigurationError) as caught:
        Pipeline.from_toml(path)
    message = str(caught.value)
    assert str(path) in message
    assert "[classifier]" in message
    assert "'epoch'" in message
    assert "Did you mean 'epochs'?" in message
    assert "unexpected keyword" not in message


def test_a_mistyped_option_in_a_dict_names_the_table_and_the_closest_option() -> None:
    with pytest.raises(ConfigurationError, match=r"\[preprocessor\].*'outputsize'.*'output_size'"):
        Pipeline.from_dict({"preprocessor": {"name": "gaussian-clahe", "outputsize": 64}})


def test_an_unknown_component_name_suggests_a_registered_one(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text('[classifier]\nname = "vgg91"\n')
    with pytest.raises(UnknownNameError) as caught:
        PipelineConfig.from_toml(path)
    message = str(caught.value)
    assert str(path) in message
    assert "[classifier] name = 'vgg91'" in message
    assert "Did you mean 'vgg19'?" in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"classifer": {"name": "vgg19"}}, r"\[classifer\]. Did you mean 'classifier'\?"),
        ({"evaluation": {"n_bootstrp": 10}}, r"\[evaluation\].*'n_bootstrp'.*'n_bootstrap'"),
    ],
)
def test_an_unknown_table_or_evaluation_option_suggests_the_closest(
    data: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigurationError, match=expected):
        PipelineConfig.from_dict(data)


def test_create_classifier_refuses_an_unknown_option_with_a_suggestion() -> None:
    with pytest.raises(ConfigurationError, match=r"classifier 'vgg19'.*'epoch'.*'epochs'"):
        covidcxr.create_classifier("vgg19", epoch=3)


def test_a_detector_factory_taking_any_options_still_suggests_the_closest() -> None:
    # The local detector's factory takes **options; its class refuses the typo.
    with pytest.raises(ConfigurationError, match=r"detector 'local'.*'epoch'.*'epochs'"):
        covidcxr.create_detector("local", epoch=3)


def test_an_unknown_registered_name_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match=r"Did you mean 'local'\?"):
        covidcxr.create_detector("locl")


def _never_read() -> Iterator[covidcxr.XRay]:
    yield from ()  # a generator: the error comes when fit starts reading
    raise AssertionError("the training images were read before the options were checked")


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        ({"epochs": "abc"}, r"\[trust\] gate: ChestXrayGate: epochs must be a whole number"),
        ({"min_contrast": "x"}, r"\[trust\] gate: ChestXrayGate: min_contrast must be"),
        ({"epoch": 3}, r"\[trust\] gate: .*the gate's options are"),
    ],
)
def test_gate_options_are_checked_before_any_image_is_read(
    gate: dict[str, object], message: str
) -> None:
    config = PipelineConfig.from_dict(
        {"preprocessor": {"name": "none"}, "detector": {"name": "none"}, "trust": {"gate": gate}}
    )
    with pytest.raises(ConfigurationError, match=message):
        Pipeline(config).fit(_never_read())
