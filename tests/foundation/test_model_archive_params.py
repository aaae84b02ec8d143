"""What a model archive's saved parameters may hold (``check_params``)."""

from __future__ import annotations

from typing import Any

import pytest

from covidcxr._model_archive import check_params
from covidcxr.errors import ModelFormatError


class Fixed:
    def __init__(self, size: int = 8, seed: int = 0) -> None:
        self.size, self.seed = size, seed


class Open(Fixed):
    def __init__(self, size: int = 8, **options: Any) -> None:
        super().__init__(size)
        self.options = options


def test_known_parameters_are_returned_as_a_copy() -> None:
    saved = {"size": 4}
    metadata = {"params": saved, "versions": {"covidcxr": "0.1.0"}}
    params = check_params(Fixed, metadata, "model.cxr")
    assert params == saved
    assert params is not saved


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (
            {"params": {"size": 4, "halo": 2}, "versions": {"covidcxr": "3.0"}},
            r"model\.cxr: saved by covidcxr 3\.0 with parameters this covidcxr \(\S+\) does "
            r"not know \('halo'\); load it with the covidcxr that saved it",
        ),
        ({"params": {"halo": 2}}, r"saved by covidcxr unknown"),
        ({"params": [1, 2]}, r"model\.cxr: metadata parameters are missing"),
        ({}, r"metadata parameters are missing"),
    ],
    ids=["later-option", "no-version", "not-an-object", "absent"],
)
def test_unknown_or_missing_parameters_are_refused_with_a_reason(
    metadata: dict[str, Any], message: str
) -> None:
    with pytest.raises(ModelFormatError, match=message):
        check_params(Fixed, metadata, "model.cxr")


def test_a_constructor_taking_keyword_arguments_decides_for_itself() -> None:
    metadata = {"params": {"size": 4, "halo": 2}}
    assert check_params(Open, metadata, "model.cxr") == {"size": 4, "halo": 2}
