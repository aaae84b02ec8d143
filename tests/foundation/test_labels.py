"""Dataset spellings of the class names map to the canonical labels."""

from __future__ import annotations

import pytest

from covidcxr import LABELS
from covidcxr.errors import UnknownLabelError
from covidcxr.labels import canonical_label


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("COVID", "covid-19"),
        ("COVID-19", "covid-19"),
        ("Covid19", "covid-19"),
        ("covid_19", "covid-19"),
        ("NORMAL", "normal"),
        ("Normal", "normal"),
        ("Viral Pneumonia", "pneumonia"),
        ("PNEUMONIA", "pneumonia"),
        ("Non-COVID", "pneumonia"),
    ],
)
def test_known_spellings_map_to_canonical_labels(name: str, label: str) -> None:
    assert canonical_label(name) == label


def test_canonical_labels_map_to_themselves() -> None:
    assert [canonical_label(label) for label in LABELS] == list(LABELS)


def test_unknown_names_raise_and_suggest_an_alias() -> None:
    with pytest.raises(UnknownLabelError, match=r"'Tuberculosis'.*label_aliases"):
        canonical_label("Tuberculosis")


def test_user_aliases_override_built_in_spellings() -> None:
    assert canonical_label("Lung_Opacity", aliases={"lung opacity": "normal"}) == "normal"


def test_aliases_must_map_to_canonical_labels() -> None:
    with pytest.raises(UnknownLabelError, match="not one of"):
        canonical_label("TB", aliases={"TB": "tuberculosis"})
