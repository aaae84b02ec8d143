"""Moving a role name such as "covid-qu-ex" from one shipped model to another."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from covidcxr import XRay
from covidcxr.errors import ConfigurationError, ModelFormatError
from covidcxr.pretrained import (
    PIPELINE_FOLDER,
    SHIPPED_MANIFEST,
    available,
    card,
    load,
    model_info,
    package,
    set_aliases,
    verify,
)
from covidcxr.pretrained.__main__ import main as pretrained_main

from .conftest import ALIAS, BUILD_COMMAND, MODEL_NAME

pytestmark = pytest.mark.filterwarnings("ignore::covidcxr.errors.SyntheticModelWarning")

NEWER = "tiny-phantoms-2"


@pytest.fixture(scope="module")
def two_models(
    models_root: Path,
    saved_pipeline: Path,
    check_images: list[XRay],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The module's models folder with a second model beside the first, without an alias."""
    root = Path(shutil.copytree(models_root, tmp_path_factory.mktemp("two") / "models"))
    package(
        NEWER,
        saved_pipeline,
        build_command=BUILD_COMMAND,
        root=root,
        check_images=check_images,
        check_description="6 test phantoms",
    )
    return root


@pytest.fixture
def root(two_models: Path, tmp_path: Path) -> Path:
    """A copy of :func:`two_models` that a test may change."""
    return Path(shutil.copytree(two_models, tmp_path / "models"))


def weight_digests(root: Path, name: str) -> dict[str, str]:
    """The SHA-256 of each file of the model other than its card and manifests."""
    card_files = {"metadata.json", "model_card.md", "pipeline.json"}
    return {
        entry.path: entry.sha256
        for entry in model_info(name, root).files
        if Path(entry.path).name not in card_files
    }


def test_an_alias_moves_from_one_model_to_another(root: Path, check_images: list[XRay]) -> None:
    weights = {name: weight_digests(root, name) for name in (MODEL_NAME, NEWER)}
    before = load(ALIAS, root=root).predict(check_images)
    assert set_aliases(MODEL_NAME, (), root=root).aliases == ()
    info = set_aliases(NEWER, [ALIAS], root=root)
    assert info.aliases == (ALIAS,)
    assert model_info(ALIAS, root).name == NEWER
    assert list(available(root)) == sorted([MODEL_NAME, NEWER])
    for name in (MODEL_NAME, NEWER):
        verify(name, root)  # every SHA-256 matches the rewritten manifest
        assert weight_digests(root, name) == weights[name]  # weights untouched
    newer_card = card(NEWER, root)
    assert f"also `{ALIAS}`" in newer_card.text
    assert "aliases set: also called: tiny" in newer_card.text
    older_card = card(MODEL_NAME, root)
    assert "also `" not in older_card.text
    assert "no other name than its own (before: tiny)" in older_card.text
    # Both models are the same pipeline here, so the alias gives the same answers.
    after = load(ALIAS, root=root).predict(check_images)
    assert [p.probabilities for p in after] == [p.probabilities for p in before]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no staging left
    fresh = root.parent / "fresh"
    fresh.mkdir()  # the rewritten folders keep the mode any new folder gets
    for name in (MODEL_NAME, NEWER):
        assert (root / name).stat().st_mode & 0o777 == fresh.stat().st_mode & 0o777


@pytest.mark.parametrize(
    ("name", "aliases", "message"),
    [
        (NEWER, [ALIAS], "already names the shipped model 'tiny-phantoms'"),
        (NEWER, [MODEL_NAME], "already names"),
        (NEWER, [NEWER], "needs no alias"),
        (NEWER, ["Not A Name"], "is not allowed"),
        (ALIAS, [], "is an alias of 'tiny-phantoms'"),
        ("nope", [], "unknown model 'nope'"),
    ],
)
def test_an_alias_that_would_name_two_models_is_refused_and_nothing_changes(
    root: Path, name: str, aliases: list[str], message: str
) -> None:
    manifests = {p: p.read_bytes() for p in root.glob(f"*/{SHIPPED_MANIFEST}")}
    with pytest.raises(ConfigurationError, match=message):
        set_aliases(name, aliases, root=root)
    assert {p: p.read_bytes() for p in root.glob(f"*/{SHIPPED_MANIFEST}")} == manifests


def test_a_damaged_model_is_refused_before_anything_is_written(root: Path) -> None:
    manifest = root / NEWER / SHIPPED_MANIFEST
    before = manifest.read_bytes()
    card_path = root / NEWER / PIPELINE_FOLDER / "model_card.md"
    card_path.write_text(card_path.read_text() + "edited by hand\n")
    with pytest.raises(ModelFormatError, match=r"model_card\.md"):
        set_aliases(NEWER, ["newest"], root=root)
    assert manifest.read_bytes() == before


def test_the_same_aliases_change_nothing(root: Path) -> None:
    files = {p: p.read_bytes() for p in (root / MODEL_NAME).rglob("*") if p.is_file()}
    assert set_aliases(MODEL_NAME, [ALIAS, ALIAS], root=root).aliases == (ALIAS,)
    assert {p: p.read_bytes() for p in (root / MODEL_NAME).rglob("*") if p.is_file()} == files


def test_python_m_alias_takes_and_gives_names(root: Path) -> None:
    runner = CliRunner()
    taken = runner.invoke(pretrained_main, ["alias", MODEL_NAME, "--root", str(root)])
    assert taken.exit_code == 0, taken.output
    assert taken.output == f"{MODEL_NAME}: no other name\n"
    given = runner.invoke(pretrained_main, ["alias", NEWER, ALIAS, "--root", str(root)])
    assert given.exit_code == 0, given.output
    assert given.output == f"{NEWER}: {ALIAS}\n"
    listing = json.loads(
        runner.invoke(pretrained_main, ["list", "--json", "--root", str(root)]).output
    )
    assert {entry["name"]: entry["aliases"] for entry in listing} == {
        MODEL_NAME: [],
        NEWER: [ALIAS],
    }
