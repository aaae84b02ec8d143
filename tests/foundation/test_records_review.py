"""Review findings: records refuse booleans as numbers; labels keep non-ASCII letters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from covidcxr import Box, Detection, Prediction
from covidcxr.errors import InvalidRecordError, UnknownLabelError
from covidcxr.labels import canonical_label
from covidcxr.records import GateDecision, Severity

_BOOLEAN_NUMBERS: list[tuple[str, Callable[[Any], object]]] = [
    ("Box", lambda flag: Box(flag, 0, 1, 1)),
    ("Box", lambda flag: Box(0, 0, 1, flag)),
    ("Detection.score", lambda flag: Detection(Box(0, 0, 1, 1), "opacity", flag)),
    ("Severity", lambda flag: Severity(0.1, flag, 0.1)),
    ("Prediction.probabilities", lambda flag: Prediction("a", "normal", {"normal": flag})),
    ("Prediction.ood_score", lambda flag: Prediction("a", "normal", {}, ood_score=flag)),
]


_BOOLEAN_IDS = ["box-x", "box-height", "score", "severity", "probability", "ood-score"]


@pytest.mark.parametrize("flag", [True, False, np.True_])
@pytest.mark.parametrize(("where", "build"), _BOOLEAN_NUMBERS, ids=_BOOLEAN_IDS)
def test_records_refuse_a_boolean_where_a_number_belongs(
    where: str, build: Callable[[Any], object], flag: Any
) -> None:
    with pytest.raises(InvalidRecordError, match=rf"{where}.*boolean"):
        build(flag)


def test_records_still_take_numpy_numbers() -> None:
    assert Box(np.float32(1.5), np.int64(2), 3, 4).x == 1.5
    assert Detection(Box(0, 0, 1, 1), "opacity", np.float32(0.5)).score == 0.5
    assert (
        Prediction("a", "normal", {"normal": float(np.float32(1.0))}).probabilities["normal"] == 1.0
    )


@pytest.mark.parametrize(
    "name", ["\u975eCOVID", "\u041d\u0435 COVID", "N\u043ermal", "Pneumon\u00eda"]
)
def test_names_differing_by_non_ascii_letters_are_unknown(name: str) -> None:
    # "\u975eCOVID" is "non-COVID": dropping its first letter must not make it "covid-19".
    with pytest.raises(UnknownLabelError):
        canonical_label(name)


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("\uff23\uff2f\uff36\uff29\uff24\uff0d\uff11\uff19", "covid-19"),
        ("Non\u2011COVID", "pneumonia"),
        ("\u00a0Normal\u00a0", "normal"),
    ],
)
def test_compatibility_forms_and_unicode_punctuation_still_match(name: str, label: str) -> None:
    assert canonical_label(name) == label


@pytest.mark.parametrize("name", [None, float("nan"), 3])
def test_a_missing_class_name_is_an_unknown_label(name: Any) -> None:
    with pytest.raises(UnknownLabelError, match="must be a string"):
        canonical_label(name)


def test_aliases_with_non_ascii_letters_match_themselves() -> None:
    assert canonical_label("Neumon\u00eda", aliases={"neumon\u00eda": "pneumonia"}) == "pneumonia"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("False", 0.1, 0.5), "accepted must be a bool"),
        ((1, 0.1, 0.5), "accepted must be a bool"),
        ((True, float("nan"), 0.5), "score must be a number, got nan"),
        ((True, 0.9, 0.5), "accepts an image scored 0.9 above its threshold 0.5"),
        ((False, True, 0.5), "must be a number, got the boolean"),
    ],
)
def test_a_gate_decision_must_say_what_it_did(arguments: tuple[Any, ...], message: str) -> None:
    with pytest.raises(InvalidRecordError, match=message):
        GateDecision(*arguments)


def test_a_gate_decision_takes_numpy_values() -> None:
    decision = GateDecision(np.bool_(True), np.float32(0.25), np.float64(0.5))
    assert decision.accepted is True
    assert decision.score == 0.25
