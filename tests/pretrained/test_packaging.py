"""Packaging: float16 weights (per file too) without optimizer state, checks, refusals, the CLI."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np
import pytest
from click.testing import CliRunner

from covidcxr import Box, Detection, Prediction, Severity, XRay
from covidcxr.cli import cli
from covidcxr.errors import ConfigurationError, ModelFormatError, OutputExistsError
from covidcxr.pipeline import Pipeline
from covidcxr.pretrained import (
    available,
    card,
    compare_predictions,
    load,
    package,
    set_aliases,
    write_shippable_copy,
)
from covidcxr.pretrained.__main__ import main as pretrained_main
from covidcxr.pretrained._registry import check_sentence

from .conftest import BUILD_COMMAND, MODEL_NAME

pytestmark = pytest.mark.filterwarnings("ignore::covidcxr.errors.SyntheticModelWarning")


def _h5_datasets(data: bytes) -> dict[str, np.dtype[np.generic]]:
    found: dict[str, np.dtype[np.generic]] = {}
    with h5py.File(io.BytesIO(data), "r") as weights:
        weights.visititems(
            lambda name, item: (
                found.update({name: item.dtype}) if isinstance(item, h5py.Dataset) else None
            )
        )
    return found


@pytest.fixture(scope="module")
def keras_file_with_optimizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small compiled and trained Keras model, saved with its Adam state."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(3)])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(rng.random((16, 4)), rng.integers(0, 3, 16), epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("keras") / "small.keras"
    model.save(path)
    return path


def test_a_keras_file_is_stored_as_float16_without_optimizer_state(
    keras_file_with_optimizer: Path, tmp_path: Path
) -> None:
    source = tmp_path / "model"
    source.mkdir()
    shutil.copy(keras_file_with_optimizer, source / "lungs.keras")
    (source / "notes.txt").write_text("kept as it is")
    copy = write_shippable_copy(source, tmp_path / "copy")
    assert copy.converted == ("lungs.keras",)
    assert (tmp_path / "copy" / "notes.txt").read_text() == "kept as it is"
    with zipfile.ZipFile(keras_file_with_optimizer) as before:
        original = _h5_datasets(before.read("model.weights.h5"))
    with zipfile.ZipFile(tmp_path / "copy" / "lungs.keras") as after:
        shipped = _h5_datasets(after.read("model.weights.h5"))
        config = json.loads(after.read("config.json"))
    assert any(name.startswith("optimizer/") for name in original)
    assert not any(name.startswith("optimizer/") for name in shipped)
    assert set(shipped) == {name for name in original if not name.startswith("optimizer/")}
    assert set(shipped.values()) == {np.dtype(np.float16)}
    assert config["compile_config"] is None
    reference = keras.models.load_model(keras_file_with_optimizer, compile=False)
    loaded = keras.models.load_model(tmp_path / "copy" / "lungs.keras", compile=False)
    assert {weight.dtype for weight in loaded.weights} == {"float32"}
    for expected, actual in zip(reference.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-4)


def test_weights_saved_alone_are_stored_as_float16(
    keras_file_with_optimizer: Path, tmp_path: Path
) -> None:
    model = keras.models.load_model(keras_file_with_optimizer, compile=False)
    source = tmp_path / "model"
    (source / "lungs").mkdir(parents=True)
    model.save_weights(source / "lungs" / "net.weights.h5")
    copy = write_shippable_copy(source, tmp_path / "copy")
    assert copy.converted == ("lungs/net.weights.h5",)
    shipped = _h5_datasets((tmp_path / "copy" / "lungs" / "net.weights.h5").read_bytes())
    assert shipped
    assert set(shipped.values()) == {np.dtype(np.float16)}
    reloaded = keras.models.clone_model(model)
    reloaded.load_weights(tmp_path / "copy" / "lungs" / "net.weights.h5")
    for expected, actual in zip(model.get_weights(), reloaded.get_weights(), strict=True):
        assert actual.dtype == np.float32
        np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-4)


def test_a_check_without_images_is_refused(saved_pipeline: Path) -> None:
    pipeline = Pipeline.load(saved_pipeline)
    with pytest.raises(ConfigurationError, match="at least one image"):
        compare_predictions(pipeline, pipeline, [])


def test_check_images_the_gate_refuses_all_are_refused(
    saved_pipeline: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    strangers = [
        XRay(np.full((64, 64), 200, np.uint8), "blank"),
        XRay(rng.integers(0, 256, (64, 64), dtype=np.uint8), "noise"),
    ]
    assert {p.status for p in Pipeline.load(saved_pipeline).predict(strangers)} == {"rejected"}
    with pytest.raises(ConfigurationError, match="got class probabilities from both"):
        package("tiny", saved_pipeline, build_command="x", root=tmp_path, check_images=strangers)
    assert list(tmp_path.iterdir()) == []


def test_float32_precision_only_drops_the_optimizer_state(
    keras_file_with_optimizer: Path, tmp_path: Path
) -> None:
    source = tmp_path / "model"
    source.mkdir()
    shutil.copy(keras_file_with_optimizer, source / "lungs.keras")
    write_shippable_copy(source, tmp_path / "copy", precision="float32")
    with zipfile.ZipFile(tmp_path / "copy" / "lungs.keras") as after:
        shipped = _h5_datasets(after.read("model.weights.h5"))
    assert shipped
    assert set(shipped.values()) == {np.dtype(np.float32)}
    assert not any(name.startswith("optimizer/") for name in shipped)


def test_the_saved_files_are_carried_and_their_keras_weights_halved(
    saved_pipeline: Path, tmp_path: Path
) -> None:
    source = shutil.copytree(saved_pipeline, tmp_path / "saved")
    (source / "skipped.csv").write_text("path,reason\n/home/me/scan.png,unreadable\n")
    copy = write_shippable_copy(source, tmp_path / "copy")
    # Whatever stages the save wrote (here the classifier and the gate), none named here.
    marker = json.loads((source / ".covidcxr-output.json").read_text())
    target = tmp_path / "copy"
    written = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert written == sorted(marker["files"])
    assert copy.converted == ("classifier", "gate")
    assert copy.left_out == ("skipped.csv",)
    for name in copy.converted:
        assert (target / name).stat().st_size < 0.6 * (source / name).stat().st_size
    assert copy.shipped_bytes < copy.original_bytes
    with zipfile.ZipFile(target / "classifier") as archive:
        metadata = json.loads(archive.read("covidcxr.json"))
    assert metadata["weights_stored_as"] == "float16"


def _archive_weight_dtypes(path: Path) -> set[np.dtype[np.generic]]:
    """The dtypes of the weights inside a covidcxr model archive."""
    with (
        zipfile.ZipFile(path) as archive,
        zipfile.ZipFile(io.BytesIO(archive.read("model.keras"))) as model,
    ):
        return set(_h5_datasets(model.read("model.weights.h5")).values())


def test_each_file_gets_the_precision_named_and_the_others_keep_float32(
    saved_pipeline: Path, tmp_path: Path
) -> None:
    target = tmp_path / "copy"
    copy = write_shippable_copy(saved_pipeline, target, precision={"classifier": "float16"})
    assert copy.converted == ("classifier", "gate")
    assert copy.precisions == {"classifier": "float16", "gate": "float32"}
    assert _archive_weight_dtypes(target / "classifier") == {np.dtype(np.float16)}
    assert _archive_weight_dtypes(target / "gate") == {np.dtype(np.float32)}
    # The float32 file still loses its optimizer state and compile settings.
    with zipfile.ZipFile(target / "gate") as archive:
        assert json.loads(archive.read("covidcxr.json"))["weights_stored_as"] == "float32"


@pytest.mark.parametrize(
    ("precision", "message"),
    [
        ({"pipeline.json": "float16"}, "'pipeline.json', which holds no Keras weights"),
        ({"lungs": "float16"}, "'lungs', which is not a file of the saved pipeline"),
        ({"classifier": "float8"}, "precision must be 'float16' or 'float32'"),
        ("bfloat16", "precision must be 'float16' or 'float32'"),
    ],
)
def test_a_precision_that_cannot_apply_is_refused_and_nothing_is_left(
    saved_pipeline: Path, tmp_path: Path, precision: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        write_shippable_copy(saved_pipeline, tmp_path / "copy", precision=precision)
    assert not (tmp_path / "copy").exists()


def test_a_refused_copy_leaves_no_folder_it_made(saved_pipeline: Path, tmp_path: Path) -> None:
    target = tmp_path / "new" / "deep" / "copy"
    with pytest.raises(ConfigurationError, match="holds no Keras weights"):
        write_shippable_copy(saved_pipeline, target, precision={"pipeline.json": "float16"})
    assert list(tmp_path.iterdir()) == []


def test_a_copy_is_written_beside_its_target_and_renamed_into_place(
    saved_pipeline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Until the final rename nothing is at the target, so a kill before it leaves no half
    # copy there; an interruption removes the staging folder too.
    from covidcxr.pretrained import _shipping

    def killed(*args: object, **kwargs: object) -> None:
        assert not (tmp_path / "copy").exists()
        raise KeyboardInterrupt

    monkeypatch.setattr(_shipping, "_swap_in", killed)
    with pytest.raises(KeyboardInterrupt):
        write_shippable_copy(saved_pipeline, tmp_path / "copy")
    assert list(tmp_path.iterdir()) == []


def test_a_model_with_mixed_precisions_says_which_file_has_which(
    saved_pipeline: Path, tmp_path: Path, check_images: list[XRay]
) -> None:
    info = package(
        "tiny",
        saved_pipeline,
        build_command=BUILD_COMMAND,
        root=tmp_path,
        check_images=check_images,
        precision={"classifier": "float16", "gate": "float32"},
    )
    assert info.precision == "mixed"
    assert info.precisions == {"classifier": "float16", "gate": "float32"}
    assert info.weights == "float16 (float32: gate)"
    assert f"{info.size}, float16 (float32: gate)  " in str(info)
    text = card("tiny", tmp_path).text
    assert "Keras weights stored as float16 (float32: gate), loaded as float32" in text
    assert available(tmp_path)["tiny"].precisions == info.precisions


def test_a_single_precision_is_recorded_for_every_file(models_root: Path) -> None:
    info = available(models_root)[MODEL_NAME]
    assert info.precision == "float16"
    assert info.precisions == {"classifier": "float16", "gate": "float16"}
    assert info.weights == "float16"


def test_a_folder_saved_without_a_marker_is_carried_whole(
    saved_pipeline: Path, tmp_path: Path
) -> None:
    source = shutil.copytree(saved_pipeline, tmp_path / "saved")
    (source / ".covidcxr-output.json").unlink()
    (source / "lungs").mkdir()
    (source / "lungs" / "settings.json").write_text("{}")
    copy = write_shippable_copy(source, tmp_path / "copy")
    assert (tmp_path / "copy" / "lungs" / "settings.json").read_text() == "{}"
    assert copy.left_out == ()


def test_a_file_the_save_wrote_must_be_there(saved_pipeline: Path, tmp_path: Path) -> None:
    source = shutil.copytree(saved_pipeline, tmp_path / "saved")
    (source / "gate").unlink()
    with pytest.raises(ModelFormatError, match="gate: written by the save but missing"):
        write_shippable_copy(source, tmp_path / "copy")


def test_an_existing_model_is_not_replaced_without_force(
    models_root: Path, saved_pipeline: Path
) -> None:
    before = (models_root / MODEL_NAME / "shipped.json").read_bytes()
    with pytest.raises(OutputExistsError, match="force"):
        package(MODEL_NAME, saved_pipeline, build_command="other", root=models_root)
    assert (models_root / MODEL_NAME / "shipped.json").read_bytes() == before


def test_force_replaces_a_model_and_leaves_nothing_beside_it(
    models_root: Path, saved_pipeline: Path, tmp_path: Path, check_images: list[XRay]
) -> None:
    root = shutil.copytree(models_root, tmp_path / "models")
    info = package(
        MODEL_NAME,
        saved_pipeline,
        build_command="covidcxr train again",
        root=root,
        force=True,
        check_images=check_images,
    )
    assert info.build_command == "covidcxr train again"
    assert available(root)[MODEL_NAME].build_command == "covidcxr train again"
    assert sorted(p.name for p in root.iterdir()) == [MODEL_NAME]
    assert load(MODEL_NAME, root=root).classes_


def test_force_never_replaces_a_folder_that_holds_no_model(
    saved_pipeline: Path, tmp_path: Path, check_images: list[XRay]
) -> None:
    mine = tmp_path / "tiny"
    mine.mkdir()
    (mine / "thesis.docx").write_bytes(b"four years of work")
    with pytest.raises(OutputExistsError, match="not a shipped model"):
        package(
            "tiny",
            saved_pipeline,
            build_command="x",
            root=tmp_path,
            force=True,
            check_images=check_images,
        )
    assert (mine / "thesis.docx").read_bytes() == b"four years of work"


def test_a_model_a_killed_replacement_left_aside_is_put_back(
    models_root: Path, saved_pipeline: Path, tmp_path: Path
) -> None:
    # Killed between moving the old model aside and renaming the new one into place, a
    # replacement leaves no model at its name; the next packaging of that name puts the
    # old one back (and removes a killed run's staging folder) before anything else.
    root = shutil.copytree(models_root, tmp_path / "models")
    aside = root / f".{MODEL_NAME}.replaced-abc123"
    aside.mkdir()
    (root / MODEL_NAME).rename(aside / MODEL_NAME)
    (root / f".{MODEL_NAME}.staging-def456").mkdir()
    with pytest.raises(OutputExistsError, match="force"):
        package(MODEL_NAME, saved_pipeline, build_command="x", root=root)
    assert sorted(p.name for p in root.iterdir()) == [MODEL_NAME]
    assert load(MODEL_NAME, root=root).classes_


@pytest.mark.parametrize("tolerance", [float("nan"), -0.1, 1.0])
def test_a_tolerance_that_is_not_a_probability_change_is_refused(
    tolerance: float, saved_pipeline: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match=r"tolerance must be a number in \[0, 1\)"):
        package("tiny", saved_pipeline, build_command="x", root=tmp_path, tolerance=tolerance)
    assert list(tmp_path.iterdir()) == []


def test_a_packaged_model_folder_is_readable_as_any_new_folder_is(
    models_root: Path, tmp_path: Path
) -> None:
    # Staged in a uniquely named folder and renamed into place: it must not keep the
    # owner-only mode of tempfile.mkdtemp, which would hide the model from other users.
    plain = tmp_path / "plain"
    plain.mkdir()
    mode = (models_root / MODEL_NAME).stat().st_mode & 0o777
    assert mode == plain.stat().st_mode & 0o777


def test_the_source_revision_that_built_a_model_is_in_its_manifest_and_card(
    saved_pipeline: Path, tmp_path: Path
) -> None:
    info = package(
        "with-revision",
        saved_pipeline,
        build_command=BUILD_COMMAND,
        root=tmp_path,
        revision="  0123abcd (with local changes) ",
    )
    assert info.revision == "0123abcd (with local changes)"
    assert available(tmp_path)["with-revision"].revision == info.revision
    assert (
        "at source revision `0123abcd (with local changes)`" in card("with-revision", tmp_path).text
    )
    # Aliases are set on the manifest as it is: the revision stays.
    assert set_aliases("with-revision", ["other"], root=tmp_path).revision == info.revision


def test_a_model_packaged_without_a_revision_says_nothing_of_one(models_root: Path) -> None:
    assert available(models_root)[MODEL_NAME].revision is None
    assert "source revision" not in card(MODEL_NAME, models_root).text


@pytest.mark.parametrize("revision", ["", "   ", "abc\ndef"])
def test_a_revision_of_other_than_one_line_is_refused(
    revision: str, saved_pipeline: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match="revision"):
        package("r", saved_pipeline, build_command="x", root=tmp_path, revision=revision)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["Covid", "../escape", "", "a b", "-leading"])
def test_a_bad_name_is_refused(name: str, saved_pipeline: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="model name"):
        package(name, saved_pipeline, build_command="x", root=tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_missing_build_command_is_refused(saved_pipeline: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="build_command"):
        package("tiny", saved_pipeline, build_command="  ", root=tmp_path)


@pytest.mark.parametrize(
    "command",
    [
        "covidcxr train https://alice:s3cr3t-token@data.example.org/cxr.zip --out tiny",
        "covidcxr train s3://bucket/cxr --token=s3cr3t-token --out tiny",
        "covidcxr train data/ -s password=s3cr3t-token --out tiny",
        "covidcxr train cos://bucket/cxr -s aws_access_key_id=s3cr3t-token --out tiny",
    ],
    ids=["url-user-info", "token-option", "password-option", "hmac-key-id"],
)
def test_a_build_command_carrying_credentials_is_refused_and_never_written(
    saved_pipeline: Path, tmp_path: Path, command: str
) -> None:
    # The build command goes into shipped.json, pipeline.json, the card and ModelInfo's
    # repr: a credential in it would ship with the model.
    with pytest.raises(ConfigurationError, match="must not carry credentials") as refused:
        package("tiny", saved_pipeline, build_command=command, root=tmp_path)
    assert "s3cr3t-token" not in str(refused.value)
    assert not any(tmp_path.iterdir())


def test_predictions_that_move_too_far_are_refused_and_nothing_is_left(
    saved_pipeline: Path, tmp_path: Path, check_images: list[XRay]
) -> None:
    # float16 rounding moves every probability a little (see the manifest's check).
    with pytest.raises(ConfigurationError, match="precision='float32'"):
        package(
            "tiny",
            saved_pipeline,
            build_command="x",
            root=tmp_path,
            check_images=check_images,
            tolerance=1e-12,
        )
    assert list(tmp_path.iterdir()) == []


class _Fixed:
    """A stand-in pipeline that predicts the same records whatever it is given."""

    def __init__(self, predictions: list[Prediction]) -> None:
        self.predictions = predictions

    def predict(self, images: object) -> list[Prediction]:
        return self.predictions


def _prediction(
    name: str, covid: float, severity: Severity | None = None, lesions: int = 0
) -> Prediction:
    boxes = [Detection(Box(i, i, 4, 4), "opacity", 0.5) for i in range(lesions)]
    probabilities = {"covid-19": covid, "normal": 1 - covid, "pneumonia": 0.0}
    return Prediction(name, "covid-19", probabilities, boxes, severity=severity)


def test_the_check_compares_severity_and_lesion_counts(check_images: list[XRay]) -> None:
    images = check_images[:3]
    before = [
        _prediction("a", 0.9, Severity(right=0.30, left=0.10, total=0.20), lesions=2),
        _prediction("b", 0.8, Severity(right=0.0, left=0.0, total=0.0), lesions=0),
        _prediction("c", 0.7, None, lesions=1),
    ]
    after = [
        _prediction("a", 0.9, Severity(right=0.30, left=0.125, total=0.21), lesions=2),
        _prediction("b", 0.8, Severity(right=0.0, left=0.0, total=0.0), lesions=1),
        _prediction("c", 0.7, Severity(right=0.1, left=0.0, total=0.05), lesions=1),
    ]
    check = compare_predictions(_Fixed(before), _Fixed(after), images)  # type: ignore[arg-type]
    assert check.max_abs_probability_difference == 0
    assert check.max_abs_severity_difference == pytest.approx(0.025)
    assert check.n_severity_changed == 1
    assert check.n_lesion_counts_changed == 1
    assert check.exceeds(0.05) == "whether 1 image(s) got a severity at all"
    assert check.exceeds(0.01) == "an infected share of a lung by 0.025"
    record = check.to_dict()
    sentence = check_sentence(record, "float16")
    assert "largest change of an infected share of a lung: 2.50e-02" in sentence
    assert sentence.endswith("lesion counts changed: 1")


def test_an_image_one_input_gate_admits_and_the_other_refuses_is_judged(
    check_images: list[XRay],
) -> None:
    before = [_prediction("a", 0.9), _prediction("b", 0.6)]
    refused = Prediction("b", "rejected", {}, status="rejected")
    after = [_prediction("a", 0.9), refused]
    check = compare_predictions(_Fixed(before), _Fixed(after), check_images[:2])  # type: ignore[arg-type]
    assert check.max_abs_probability_difference == 0
    assert check.n_admission_changed == 1
    assert check.exceeds(0.5) == "whether the input gate admitted 1 image(s) at all"
    assert check.to_dict()["n_admission_changed"] == 1
    with pytest.raises(ConfigurationError, match="tolerance"):
        check.exceeds(float("nan"))


def test_a_check_without_severity_says_nothing_of_it(check_images: list[XRay]) -> None:
    same = [_prediction("a", 0.9), _prediction("b", 0.6)]
    check = compare_predictions(_Fixed(same), _Fixed(same), check_images[:2])  # type: ignore[arg-type]
    assert check.max_abs_severity_difference is None
    assert check.exceeds(0.0) is None
    assert "infected share" not in check_sentence(check.to_dict(), "float16")
    # A manifest written before severity and lesions were compared reads as it did.
    old = {k: v for k, v in check.to_dict().items() if "severity" not in k and "lesion" not in k}
    assert check_sentence(old, "float16").endswith("decisions changed: 0")


# -- the command lines ------------------------------------------------------------------


def test_python_m_covidcxr_pretrained_lists_and_reports_errors_in_one_line(
    models_root: Path,
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "covidcxr.pretrained", *args, "--root", str(models_root)]
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)

    listed = run("list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(MODEL_NAME)
    unknown = run("verify", "nope")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith(f"error: unknown model 'nope': shipped models: {MODEL_NAME}")


def test_python_m_add_lists_and_refuses_to_overwrite(saved_pipeline: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    root = str(tmp_path / "models")
    args = ["add", "tiny", str(saved_pipeline), "--build-command", BUILD_COMMAND, "--root", root]
    result = runner.invoke(pretrained_main, [*args, "--revision", "0123abcd"])
    assert result.exit_code == 0, result.output
    assert "added tiny" in result.output
    assert "float16" in result.output
    listing = runner.invoke(pretrained_main, ["list", "--root", root, "--json"])
    [entry] = json.loads(listing.output)
    assert entry["name"] == "tiny"
    assert entry["build_command"] == BUILD_COMMAND
    assert entry["revision"] == "0123abcd"
    assert entry["precisions"] == {"classifier": "float16", "gate": "float16"}
    assert entry["weights"] == "float16"
    assert "phantoms" in available(root)["tiny"].check["images"]  # the default check images
    again = runner.invoke(pretrained_main, args)
    assert again.exit_code != 0
    assert isinstance(again.exception, OutputExistsError)
    verified = runner.invoke(pretrained_main, ["verify", "tiny", "--root", root])
    assert "every SHA-256 matches" in verified.output
    shown = runner.invoke(pretrained_main, ["card", "tiny", "--root", root])
    assert f"$ {BUILD_COMMAND}" in shown.output


def test_python_m_add_takes_each_files_precision(saved_pipeline: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    root = str(tmp_path / "models")
    args = ["add", "tiny", str(saved_pipeline), "--build-command", BUILD_COMMAND, "--root", root]
    result = runner.invoke(pretrained_main, [*args, "--precision", "classifier=float16"])
    assert result.exit_code == 0, result.output
    assert "weights as float16 (float32: gate);" in result.output
    assert available(root)["tiny"].precisions == {"classifier": "float16", "gate": "float32"}


@pytest.mark.parametrize(
    "values",
    [
        ["bfloat16"],
        ["classifier=float16", "float32"],
        ["classifier=float16", "classifier=float32"],
        ["=float16"],
    ],
)
def test_python_m_add_refuses_a_precision_it_cannot_read(
    values: list[str], saved_pipeline: Path, tmp_path: Path
) -> None:
    options = [item for value in values for item in ("--precision", value)]
    args = ["add", "tiny", str(saved_pipeline), "--build-command", "x", *options]
    result = CliRunner().invoke(pretrained_main, [*args, "--root", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "--precision" in result.output
    assert not (tmp_path / "m").exists()


@pytest.fixture
def scans(tmp_path: Path, check_images: list[XRay]) -> Path:
    import cv2

    folder = tmp_path / "scans"
    folder.mkdir()
    for index, xray in enumerate(check_images):
        pixels = np.clip(np.asarray(xray.pixels, np.float32) * 255, 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"scan-{index}.png"), pixels)
    return folder


def test_covidcxr_predict_takes_a_shipped_model_name(
    models_root: Path, scans: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("covidcxr.pretrained._registry.default_root", lambda: models_root)
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "preds.csv"
    result = CliRunner().invoke(cli, ["predict", MODEL_NAME, str(scans), "--output", str(output)])
    assert result.exit_code == 0, result.output
    rows = output.read_text().splitlines()
    assert len(rows) == 1 + len(list(scans.iterdir()))


def test_covidcxr_predict_names_the_shipped_models_for_an_unknown_one(
    models_root: Path, scans: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("covidcxr.pretrained._registry.default_root", lambda: models_root)
    result = CliRunner().invoke(cli, ["predict", "no-such-model", str(scans)])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigurationError)
    assert MODEL_NAME in str(result.exception)


def test_covidcxr_evaluate_record_refuses_a_shipped_model(
    models_root: Path, scans: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("covidcxr.pretrained._registry.default_root", lambda: models_root)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        cli, ["evaluate", MODEL_NAME, str(scans), "--report", "report", "--record"]
    )
    assert result.exit_code == 2
    assert "shipped model is read-only" in result.output


def test_a_card_saved_before_terms_were_recorded_gets_its_known_datasets_terms(
    saved_pipeline: Path, check_images: list[XRay], tmp_path: Path
) -> None:
    from covidcxr.pretrained import card
    from covidcxr.sources._layouts import CITATIONS, TERMS

    older = Path(shutil.copytree(saved_pipeline, tmp_path / "older"))
    manifest = json.loads((older / "pipeline.json").read_text())
    manifest["training_data"]["citation"] = CITATIONS["covid-qu-ex"]
    manifest["training_data"].pop("terms", None)  # as an older covidcxr saved it
    (older / "pipeline.json").write_text(json.dumps(manifest))
    root = tmp_path / "models"
    package("older", older, build_command=BUILD_COMMAND, root=root, check_images=check_images)
    shipped = card("older", root)
    assert shipped.metadata["training_data"]["terms"] == TERMS["covid-qu-ex"]
    assert f"- Terms: {TERMS['covid-qu-ex']}" in shipped.text
