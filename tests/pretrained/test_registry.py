"""The registry: listing without TensorFlow, loading with every checksum verified, cards."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import numpy as np
import pytest

from covidcxr import VGG19Classifier, XRay
from covidcxr.errors import ConfigurationError, ModelFormatError
from covidcxr.pipeline import METADATA_SCHEMA, Pipeline
from covidcxr.preprocess import window_levels_of
from covidcxr.pretrained import (
    SHIPPED_MANIFEST,
    ModelInfo,
    available,
    card,
    file_sha256,
    load,
    load_pipeline,
    models_rst,
    package,
    verify,
)

from .conftest import ALIAS, BUILD_COMMAND, MODEL_NAME

pytestmark = pytest.mark.filterwarnings("ignore::covidcxr.errors.SyntheticModelWarning")


@pytest.fixture
def registry_copy(models_root: Path, tmp_path: Path) -> Path:
    """A copy of the module's models folder, for a test that damages it."""
    return shutil.copytree(models_root, tmp_path / "models")


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_available_lists_name_summary_size_and_build_command(
    models_root: Path, shipped: ModelInfo
) -> None:
    models = available(models_root)
    assert list(models) == [MODEL_NAME]
    info = models[MODEL_NAME]
    assert info.summary == "A tiny test model trained on phantoms."
    assert info.build_command == BUILD_COMMAND
    assert info.precision == "float16"
    on_disk = sum(
        p.stat().st_size for p in info.path.rglob("*") if p.is_file() and p.name != SHIPPED_MANIFEST
    )
    assert info.size_bytes == on_disk
    assert info.size_bytes < info.original_size_bytes
    assert info.aliases == (ALIAS,)
    assert f"{MODEL_NAME} (also {ALIAS})" in str(info)
    assert info.size in str(info)


def test_an_alias_loads_verifies_and_cards_the_same_model(
    models_root: Path, check_images: list[XRay]
) -> None:
    assert list(available(models_root)) == [MODEL_NAME]  # listed once, by its own name
    assert verify(ALIAS, models_root).name == MODEL_NAME
    assert card(ALIAS, models_root).info.name == MODEL_NAME
    assert f"also `{ALIAS}`" in card(MODEL_NAME, models_root).text
    by_alias = load(ALIAS, root=models_root).predict(check_images)
    by_name = load(MODEL_NAME, root=models_root).predict(check_images)
    for one, other in zip(by_alias, by_name, strict=True):
        assert one.probabilities == other.probabilities


@pytest.mark.parametrize(
    ("name", "aliases"),
    [("other", (ALIAS,)), ("other", (MODEL_NAME,)), (ALIAS, ()), ("other", ("other",))],
)
def test_a_name_or_alias_that_would_name_two_models_is_refused(
    models_root: Path, saved_pipeline: Path, name: str, aliases: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigurationError, match=r"already names|needs no alias"):
        package(name, saved_pipeline, build_command="x", root=models_root, aliases=aliases)
    assert list(available(models_root)) == [MODEL_NAME]


def test_unknown_names_are_listed_with_their_aliases(models_root: Path) -> None:
    with pytest.raises(ConfigurationError, match=rf"{MODEL_NAME} \(also {ALIAS}\)"):
        load("nope", root=models_root)


def test_available_reads_manifests_without_importing_tensorflow(models_root: Path) -> None:
    code = (
        "import sys, covidcxr.pretrained as p; "
        f"assert list(p.available({str(models_root)!r})) == [{MODEL_NAME!r}]; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'h5py') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


def test_every_file_is_listed_with_its_sha256(shipped: ModelInfo) -> None:
    listed = {entry.path: entry for entry in shipped.files}
    files = sorted(
        p.relative_to(shipped.path).as_posix()
        for p in shipped.path.rglob("*")
        if p.is_file() and p.name != SHIPPED_MANIFEST
    )
    assert sorted(listed) == files
    assert {
        "pipeline/pipeline.json",
        "pipeline/classifier",
        "pipeline/gate",
        "pipeline/model_card.md",
    } <= set(listed)
    for path, entry in listed.items():
        assert file_sha256(shipped.path / path) == entry.sha256


def test_load_gives_a_pipeline_that_predicts_as_the_original(
    models_root: Path, saved_pipeline: Path, check_images: list[XRay]
) -> None:
    shipped = load(MODEL_NAME, root=models_root)
    original = Pipeline.load(saved_pipeline)
    for before, after in zip(
        original.predict(check_images), shipped.predict(check_images), strict=True
    ):
        assert before.label == after.label
        for label, probability in before.probabilities.items():
            assert after.probabilities[label] == pytest.approx(probability, abs=1e-3)


def test_shipped_weights_load_back_as_float32(models_root: Path) -> None:
    pipeline = load(MODEL_NAME, root=models_root)
    classifier = pipeline.classifier_
    assert isinstance(classifier, VGG19Classifier)
    model = classifier.model_
    assert {weight.dtype for weight in model.weights} == {"float32"}


def test_the_gate_and_calibration_travel_with_the_model(
    models_root: Path, saved_pipeline: Path
) -> None:
    original, shipped = Pipeline.load(saved_pipeline), load(MODEL_NAME, root=models_root)
    assert shipped.gate_ is not None
    assert shipped.trust_.calibration is not None
    assert shipped.trust_.to_dict() == original.trust_.to_dict()
    manifest = json.loads((models_root / MODEL_NAME / SHIPPED_MANIFEST).read_text())
    assert manifest["converted"] == ["classifier", "gate"]


def test_unknown_name_is_refused_listing_the_known_ones(models_root: Path) -> None:
    with pytest.raises(ConfigurationError, match=rf"unknown model 'nope'.*{MODEL_NAME}"):
        load("nope", root=models_root)


def test_unknown_name_in_an_empty_registry_says_none_is_shipped(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no model is shipped"):
        load("covid-qu-ex", root=tmp_path)


def test_a_flipped_byte_is_refused_naming_the_file(registry_copy: Path) -> None:
    classifier = registry_copy / MODEL_NAME / "pipeline" / "classifier"
    _flip_byte(classifier, classifier.stat().st_size // 2)
    with pytest.raises(ModelFormatError, match=r"pipeline/classifier: SHA-256 [0-9a-f]{64}, but"):
        load(MODEL_NAME, root=registry_copy)


def test_a_changed_card_is_refused_by_card(registry_copy: Path) -> None:
    _flip_byte(registry_copy / MODEL_NAME / "pipeline" / "model_card.md", 0)
    with pytest.raises(ModelFormatError, match=r"model_card\.md: SHA-256"):
        card(MODEL_NAME, registry_copy)


def test_a_missing_file_is_refused(registry_copy: Path) -> None:
    (registry_copy / MODEL_NAME / "pipeline" / "pipeline.json").unlink()
    with pytest.raises(ModelFormatError, match=r"pipeline\.json: missing from the shipped model"):
        verify(MODEL_NAME, registry_copy)


def test_a_file_of_another_size_is_refused(registry_copy: Path) -> None:
    with (registry_copy / MODEL_NAME / "pipeline" / "pipeline.json").open("a") as handle:
        handle.write(" ")
    with pytest.raises(ModelFormatError, match=r"pipeline\.json: .* bytes, but the manifest"):
        verify(MODEL_NAME, registry_copy)


def test_an_unlisted_file_is_refused(registry_copy: Path) -> None:
    (registry_copy / MODEL_NAME / "pipeline" / "extra.keras").write_bytes(b"not listed")
    with pytest.raises(ModelFormatError, match=r"extra.keras: not listed in shipped.json"):
        load(MODEL_NAME, root=registry_copy)


@pytest.mark.parametrize("kind", ["empty folder", "link to a folder", "link to a file"])
def test_an_unlisted_folder_or_link_is_refused(registry_copy: Path, kind: str) -> None:
    extra = registry_copy / MODEL_NAME / "pipeline" / "extra"
    if kind == "empty folder":
        extra.mkdir()
    elif kind == "link to a folder":
        extra.symlink_to(registry_copy, target_is_directory=True)
    else:
        extra.symlink_to(registry_copy / MODEL_NAME / SHIPPED_MANIFEST)
    with pytest.raises(ModelFormatError, match=r"pipeline/extra: not listed in shipped.json"):
        verify(MODEL_NAME, registry_copy)


def test_a_listed_file_that_became_a_folder_is_refused(registry_copy: Path) -> None:
    path = registry_copy / MODEL_NAME / SHIPPED_MANIFEST
    manifest = json.loads(path.read_text())
    entry = next(e for e in manifest["files"] if e["path"] == "pipeline/pipeline.json")
    listed = registry_copy / MODEL_NAME / entry["path"]
    listed.unlink()
    listed.mkdir()
    entry["size"] = listed.stat().st_size  # even at the listed size
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelFormatError, match=r"pipeline\.json: not a plain file"):
        verify(MODEL_NAME, registry_copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(format_version=99), "format version 99"),
        (lambda m: m.update(format="something-else"), "not a covidcxr shipped-model manifest"),
        (lambda m: m.pop("build_command"), "'build_command' is missing"),
        (lambda m: m.update(name="other"), "names the model 'other'"),
        (lambda m: m["files"][0].update(path="../../etc/passwd"), "leaves the model's folder"),
        (lambda m: m["files"][0].update(sha256="xyz"), "a 'files' entry is damaged"),
        (lambda m: m.update(aliases="tiny"), "'aliases' is not a list of names"),
        (lambda m: m.update(precisions=["float16"]), "'precisions' is not a mapping"),
        (lambda m: m.update(precisions={"nosuchfile": "float16"}), "mapping of listed files"),
        (lambda m: m["precisions"].update(classifier="float8"), "mapping of listed files"),
        (lambda m: m.update(precision="bogus"), "'precision' is 'bogus', not a precision"),
        (lambda m: m.update(left_out=5), "'left_out' is not a list of strings"),
        (lambda m: m.update(left_out="skipped.csv"), "'left_out' is not a list of strings"),
        (lambda m: m.update(left_out=[1]), "'left_out' is not a list of strings"),
    ],
)
def test_a_damaged_manifest_is_refused(registry_copy: Path, change: object, message: str) -> None:
    path = registry_copy / MODEL_NAME / SHIPPED_MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)  # type: ignore[operator]
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelFormatError, match=message):
        available(registry_copy)


def test_a_model_folder_without_manifest_is_refused(registry_copy: Path) -> None:
    (registry_copy / "half-copied").mkdir()
    with pytest.raises(ModelFormatError, match="half-copied is not a shipped covidcxr model"):
        available(registry_copy)


def test_card_gives_metadata_and_text_with_the_build_command(models_root: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    model_card = card(MODEL_NAME, models_root)
    jsonschema.validate(dict(model_card.metadata), METADATA_SCHEMA)
    last = model_card.metadata["changelog"][-1]
    assert last["event"] == "packaged"
    assert BUILD_COMMAND in last["description"]
    assert "## Shipped with covidcxr" in model_card.text
    assert f"$ {BUILD_COMMAND}" in model_card.text
    # Rebuilding a shipped model replaces it: the card says what its command does.
    assert "run as recorded, the command replaces this model with the rebuilt one" in (
        " ".join(model_card.text.split())
    )
    assert model_card.text.rstrip().endswith("are in `metadata.json`.")
    assert model_card.metadata["synthetic"] is True


@pytest.fixture
def read_only_copy(registry_copy: Path) -> Iterator[Path]:
    """The models folder as a system-wide installation has it: nothing writable."""
    paths = [registry_copy, *registry_copy.rglob("*")]
    for path in paths:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        yield registry_copy
    finally:
        for path in paths:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_a_read_only_installation_loads(read_only_copy: Path, check_images: list[XRay]) -> None:
    pipeline = load(MODEL_NAME, root=read_only_copy)
    assert len(pipeline.predict(check_images)) == len(check_images)


def test_load_pipeline_prefers_a_directory_over_a_name(
    models_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("covidcxr.pretrained._registry.default_root", lambda: models_root)
    monkeypatch.chdir(tmp_path)
    assert load_pipeline(MODEL_NAME).classes_  # no such folder here: the shipped model
    (tmp_path / MODEL_NAME).mkdir()  # a folder of that name, not a saved pipeline: it wins
    with pytest.raises(ModelFormatError, match="is not a saved covidcxr pipeline"):
        load_pipeline(MODEL_NAME)


def test_load_pipeline_names_the_shipped_models_for_an_unknown_word(
    models_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("covidcxr.pretrained._registry.default_root", lambda: models_root)
    with pytest.raises(ConfigurationError, match=rf"neither a saved model .*{MODEL_NAME}"):
        load_pipeline("no-such-thing")


def test_probabilities_match_the_check_recorded_in_the_manifest(shipped: ModelInfo) -> None:
    check = shipped.check
    assert check["images"] == "6 test phantoms"
    assert check["n_images"] == 6
    assert check["n_compared"] == 6
    assert 0 < check["max_abs_probability_difference"] < 1e-2
    assert check["n_decisions_changed"] == 0
    assert np.isfinite(check["max_abs_probability_difference"])


def test_the_docs_section_of_a_model_shows_its_manifest_and_card(models_root: Path) -> None:
    # Sphinx's own dependency (docs extra); docutils ships no type information.
    publish_doctree = pytest.importorskip("docutils.core").publish_doctree
    text = models_rst(models_root)
    assert f"``{MODEL_NAME}``" in text
    assert f"$ {BUILD_COMMAND}" in text
    assert "A tiny test model trained on phantoms." in text
    assert "# Model card: covidcxr chest X-ray classifier" in text
    assert "float16" in text
    assert f":Also called: ``{ALIAS}``" in text
    # Valid reStructuredText: any docutils warning is an error here, as in the docs build.
    tree = publish_doctree(text, settings_overrides={"halt_level": 2, "report_level": 2})
    assert MODEL_NAME in tree.astext()


def test_the_docs_say_so_when_no_model_is_shipped(tmp_path: Path) -> None:
    assert models_rst(tmp_path).startswith("No model is shipped with this release")


def test_a_working_size_set_on_a_saved_model_changes_nothing_at_its_training_size(
    saved_pipeline: Path, check_images: list[XRay], tmp_path: Path
) -> None:
    # The tiny model was trained on 48 px phantoms: enhancing at 48 px is what it saw.
    original = Pipeline.load(saved_pipeline)
    moved = Pipeline.load(saved_pipeline).set_working_size(48)
    assert [p.to_dict() for p in moved.predict(check_images)] == [
        p.to_dict() for p in original.predict(check_images)
    ]
    loaded = Pipeline.load(moved.save(tmp_path / "moved"))
    assert loaded.preprocessor_.working_size == 48  # type: ignore[union-attr]
    changelog = json.loads((tmp_path / "moved" / "metadata.json").read_text())["changelog"]
    assert changelog[-2]["event"] == "working size set"
    card_text = (tmp_path / "moved" / "model_card.md").read_text()
    assert "any size (enhanced with its longer side at 48 px, the training scale)" in card_text
    plain = (Pipeline.load(saved_pipeline).save(tmp_path / "plain") / "model_card.md").read_text()
    assert "enhanced at another scale (set `working_size`)" in plain
    with pytest.raises(ConfigurationError, match="working size 48 already"):
        loaded.set_working_size(256)


def test_window_levels_set_on_a_saved_model_change_16bit_input_only(
    saved_pipeline: Path, check_images: list[XRay], tmp_path: Path
) -> None:
    # The tiny model was trained on 8-bit phantoms: the window never touched them.
    levels = window_levels_of(check_images)
    assert levels != (0, 255)
    original = Pipeline.load(saved_pipeline)
    leveled = Pipeline.load(saved_pipeline).set_window_levels(levels)
    assert [p.to_dict() for p in leveled.predict(check_images)] == [
        p.to_dict() for p in original.predict(check_images)
    ]
    # The same phantoms with detail below one 8-bit step: through the measured levels the
    # model sees them (nearly) as the 8-bit ones; through 0..255, with more contrast.
    rng = np.random.default_rng(0)
    wide = [
        attrs.evolve(
            x,
            pixels=np.asarray(x.pixels, np.uint16) * 256
            + rng.integers(0, 256, np.shape(x.pixels), dtype=np.uint16),
        )
        for x in check_images
    ]

    def probabilities(pipeline: Pipeline, images: list[XRay]) -> np.ndarray:
        predicted = pipeline.predict(images)
        return np.array([[p.probabilities[c] for c in pipeline.classes_] for p in predicted])

    def gap(pipeline: Pipeline) -> float:
        moved = probabilities(pipeline, wide) - probabilities(original, check_images)
        return float(np.abs(moved).mean())

    assert gap(leveled) < gap(original)
    loaded = Pipeline.load(leveled.save(tmp_path / "leveled"))
    assert loaded.preprocessor_.window_levels == levels  # type: ignore[union-attr]
    changelog = json.loads((tmp_path / "leveled" / "metadata.json").read_text())["changelog"]
    assert changelog[-2]["event"] == "window levels set"
    card_text = (tmp_path / "leveled" / "model_card.md").read_text()
    assert f"mapped onto grey levels {levels[0]} to {levels[1]}" in card_text
    plain = (Pipeline.load(saved_pipeline).save(tmp_path / "plain") / "model_card.md").read_text()
    assert "measure yours with `covidcxr.preprocess.window_levels_of`" in plain
    with pytest.raises(ConfigurationError, match="window_levels"):
        loaded.set_window_levels((200, 100))
    # Back to the default: recorded as the model was saved before.
    loaded.set_window_levels((0, 255))
    np.testing.assert_allclose(probabilities(loaded, wide), probabilities(original, wide))
    assert "window_levels" not in loaded.classifier_.preprocessing_  # type: ignore[attr-defined]
    assert "window_levels" not in loaded.config.to_dict()["preprocessor"]
    reset = json.loads((loaded.save(tmp_path / "reset") / "metadata.json").read_text())
    assert reset["changelog"][-2]["description"].endswith("0 to 255, the default")


def test_a_preprocessing_option_that_fails_its_check_leaves_the_pipeline_as_it_was(
    saved_pipeline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = Pipeline.load(saved_pipeline)
    config, preprocessor = pipeline.config, pipeline.preprocessor_
    records = pipeline.classifier_.preprocessing_  # type: ignore[attr-defined]

    def refuse(self: Pipeline) -> None:
        raise ConfigurationError("refused for the test")

    monkeypatch.setattr(Pipeline, "_check_preprocessing", refuse)
    with pytest.raises(ConfigurationError, match="refused for the test"):
        pipeline.set_window_levels((0, 228))
    with pytest.raises(ConfigurationError, match="refused for the test"):
        pipeline.set_working_size(48)
    assert (pipeline.config, pipeline.preprocessor_) == (config, preprocessor)
    assert pipeline.classifier_.preprocessing_ == records  # type: ignore[attr-defined]
