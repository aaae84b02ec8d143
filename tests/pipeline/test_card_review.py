"""Reviewed defects of the model card: credentials, home folders and citations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from covidcxr import ClassificationEvaluator, GroundTruth, Prediction, XRay
from covidcxr.evaluate import EvaluationReport
from covidcxr.pipeline import evaluation_entry
from covidcxr.pipeline._card import training_data_facts


def tiny_report() -> EvaluationReport:
    return ClassificationEvaluator(n_bootstrap=0).evaluate(
        [GroundTruth("a", "normal"), GroundTruth("b", "pneumonia")],
        [
            Prediction("a", "normal", {"normal": 0.8, "pneumonia": 0.2}),
            Prediction("b", "normal", {"normal": 0.6, "pneumonia": 0.4}),
        ],
        classes=["normal", "pneumonia"],
        detections=False,
    )


@pytest.mark.parametrize(
    ("source", "secret"),
    [
        ("Src(headers={'Authorization': 'Bearer s3cr3t'})", "s3cr3t"),
        ("Src(options={'api_key': 's3cr3t'})", "s3cr3t"),
        ('Src(password="two words s3cr3t")', "s3cr3t"),
        ("Src(api_key='abc,s3cr3t')", "s3cr3t"),
        ("Src(credentials=('alice', 's3cr3t'))", "s3cr3t"),
        ("COSSource(aws_access_key_id='s3cr3t')", "s3cr3t"),
    ],
)
def test_credentials_in_quoted_or_structured_values_are_masked(source: str, secret: str) -> None:
    entry = evaluation_entry(tiny_report(), source=source, recorded_at="2026-01-01")
    assert secret not in entry["source"]
    assert "***" in entry["source"]


def test_the_users_home_folder_is_not_written_into_the_card(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: Path("/home/alice")))
    entry = evaluation_entry(
        tiny_report(),
        source="FolderSource('/home/alice/data/cxr', items=2)",
        recorded_at="2026-01-01",
    )
    assert "alice" not in entry["source"]
    assert entry["source"] == "FolderSource('~/data/cxr', items=2)"
    # Another user's folder that merely starts the same is left as it is.
    other = evaluation_entry(tiny_report(), source="'/home/alicia/x'", recorded_at="2026")
    assert other["source"] == "'/home/alicia/x'"


class _CitedSource:
    """A source that knows its citation but not its terms of use."""

    citation = "A. Author et al., A chest X-ray dataset, 2024."

    def __iter__(self) -> Iterator[XRay]:
        return iter([])

    def __repr__(self) -> str:
        return "CitedSource()"


def test_a_source_with_a_citation_but_no_terms_is_still_cited() -> None:
    facts = training_data_facts(_CitedSource(), [], "sha256:0")
    assert facts["citation"] == _CitedSource.citation
    assert facts["terms"] is None
