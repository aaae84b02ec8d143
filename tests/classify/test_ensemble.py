"""EnsembleClassifier: soft voting over classifiers trained alike but for their seed.

The ensembles are of tiny VGG19s (32 px, an eighth of the width, a frozen random base,
two epochs), fitted once per module; a small numpy classifier registered as a plugin stands
for classifiers that save a folder or cannot be seeded.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
import warnings
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Self

import attrs
import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

import covidcxr
from covidcxr import XRay
from covidcxr.classify import EnsembleClassifier, VGG19Classifier
from covidcxr.classify._training import CHECKPOINT_FILENAME
from covidcxr.cli import main
from covidcxr.detect import GradCAMDetector
from covidcxr.errors import (
    ConfigurationError,
    ModelFormatError,
    OutputExistsError,
    UnknownNameError,
)
from covidcxr.evaluate import CalibrationWarning, OneClassPredictionWarning
from covidcxr.files import _HOST
from covidcxr.phantoms import generate_phantoms, write_phantom_dataset
from covidcxr.pipeline import Pipeline, PipelineConfig
from covidcxr.pretrained import write_shippable_copy

from ..conftest import REPO_ROOT, edit_archive_metadata
from .conftest import TINY, TinyRun

# The pipelines here are trained on phantoms, and say so whenever they predict.
pytestmark = pytest.mark.filterwarnings("ignore::covidcxr.errors.SyntheticModelWarning")

#: The members: tiny VGG19s (see conftest.TINY), by their registered name.
MEMBER: dict[str, Any] = {"name": "vgg19", **TINY}


@attrs.frozen
class Fitted:
    """A fitted ensemble, where it checkpointed, and the epochs it reported."""

    ensemble: EnsembleClassifier
    checkpoint_dir: Path
    reported: list[tuple[int, Mapping[str, float]]]


@pytest.fixture(scope="module")
def fitted(
    tmp_path_factory: pytest.TempPathFactory,
    train_xrays: list[XRay],
    valid_xrays: list[XRay],
) -> Fitted:
    """Three members from seed 5, fitted once on one-shot iterators (tests must not change it)."""
    directory = tmp_path_factory.mktemp("ensemble-run")
    reported: list[tuple[int, Mapping[str, float]]] = []
    ensemble = EnsembleClassifier(
        member={**MEMBER, "seed": 5},
        n_members=3,
        checkpoint_dir=directory,
        on_epoch_end=lambda epoch, logs: reported.append((epoch, logs)),
    )
    ensemble.fit(iter(train_xrays), validation=(x for x in valid_xrays))
    return Fitted(ensemble, directory, reported)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, fitted: Fitted) -> Path:
    """The fitted ensemble, saved (tests must not change the file: copy it first)."""
    path = tmp_path_factory.mktemp("saved-ensemble") / "ensemble.cxr"
    fitted.ensemble.save(path)
    return path


# ---------------------------------------------------------------------------- registration


def test_is_registered_as_ensemble_through_the_plugin_hooks() -> None:
    registration = covidcxr.plugins.available_classifiers()["ensemble"]
    assert registration.target == "covidcxr.classify._ensemble:EnsembleClassifier"
    assert registration.factory is EnsembleClassifier
    assert registration.plugin == "covidcxr.classify.plugin"
    built = covidcxr.create_classifier("ensemble", member="vgg19", n_members=2)
    assert isinstance(built, EnsembleClassifier)
    assert built.get_params()["n_members"] == 2


def test_building_an_ensemble_imports_no_tensorflow() -> None:
    code = (
        "import sys, covidcxr; "
        "e = covidcxr.create_classifier('ensemble', member={'name': 'vgg19', 'epochs': 4}); "
        "print(e.epochs, 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["12", "False", "False"]


def test_init_only_stores_parameters() -> None:
    ensemble = EnsembleClassifier(member=3, n_members=0)  # type: ignore[arg-type]
    assert ensemble.get_params()["n_members"] == 0
    assert not hasattr(ensemble, "members_")
    assert not hasattr(ensemble, "preprocessing_")  # fitted state: absent before fit
    with pytest.raises(ConfigurationError, match="not fitted yet"):
        ensemble.predict_proba([])


# ---------------------------------------------------------------------------- fitting


def test_members_get_consecutive_seeds_from_the_members_seed(fitted: Fitted) -> None:
    ensemble = fitted.ensemble
    assert ensemble.seeds_ == (5, 6, 7)
    assert ensemble.member_name_ == "vgg19"
    members = ensemble.members_
    assert all(isinstance(member, VGG19Classifier) for member in members)
    assert [member.get_params()["seed"] for member in members] == [5, 6, 7]  # type: ignore[attr-defined]
    assert all(member.classes_ == ensemble.classes_ for member in members)


def test_members_differ(fitted: Fitted, valid_xrays: list[XRay]) -> None:
    probabilities = [member.predict_proba(valid_xrays) for member in fitted.ensemble.members_]
    for i in range(len(probabilities)):
        for j in range(i + 1, len(probabilities)):
            assert not np.allclose(probabilities[i], probabilities[j], atol=1e-4), (i, j)


def test_explicit_seeds_are_used_as_given() -> None:
    ensemble = EnsembleClassifier(member=MEMBER, n_members=2, seeds=[11, 3])
    members = [ensemble._member(ensemble._plan(), index) for index in range(2)]
    assert [member.get_params()["seed"] for member in members] == [11, 3]  # type: ignore[attr-defined]


def test_predict_proba_is_the_mean_of_the_members(fitted: Fitted, valid_xrays: list[XRay]) -> None:
    ensemble = fitted.ensemble
    probabilities = ensemble.predict_proba(valid_xrays)
    members = np.stack([member.predict_proba(valid_xrays) for member in ensemble.members_])
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (len(valid_xrays), len(ensemble.classes_))
    np.testing.assert_allclose(probabilities, members.mean(axis=0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert ensemble.predict(valid_xrays) == [
        ensemble.classes_[i] for i in probabilities.argmax(axis=1)
    ]


def test_a_one_shot_iterator_is_read_once_for_every_member(
    fitted: Fitted, train_xrays: list[XRay], valid_xrays: list[XRay]
) -> None:
    # The fixture fitted on generators: had the second member been handed the spent
    # generator, it would have trained on nothing and failed.
    for member in fitted.ensemble.members_:
        fingerprint = member.fingerprint_  # type: ignore[attr-defined]
        assert fingerprint["train"]["n_images"] == len(train_xrays)
        assert fingerprint["validation"]["n_images"] == len(valid_xrays)
    ensemble = fitted.ensemble
    np.testing.assert_array_equal(
        ensemble.predict_proba(x for x in valid_xrays), ensemble.predict_proba(valid_xrays)
    )


def test_history_is_the_members_mean_epoch_by_epoch(fitted: Fitted) -> None:
    history = fitted.ensemble.history_
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr"} <= set(history)
    for key, values in history.items():
        curves = [member.history_[key] for member in fitted.ensemble.members_]  # type: ignore[attr-defined]
        np.testing.assert_allclose(values, np.mean(curves, axis=0), rtol=1e-12)
        assert len(values) == TINY["epochs"]


def test_epochs_are_reported_through_the_whole_ensemble(fitted: Fitted) -> None:
    assert fitted.ensemble.epochs == 3 * TINY["epochs"]
    assert [epoch for epoch, _ in fitted.reported] == [1, 2, 3, 4, 5, 6]
    assert [logs["member"] for _, logs in fitted.reported] == [0, 0, 1, 1, 2, 2]
    assert all("val_loss" in logs for _, logs in fitted.reported)
    # The callback is the ensemble's: the members are not left holding it.
    assert all(member.on_epoch_end is None for member in fitted.ensemble.members_)  # type: ignore[attr-defined]


def test_members_checkpoint_in_their_own_folders_and_a_second_fit_resumes(
    fitted: Fitted, train_xrays: list[XRay], valid_xrays: list[XRay]
) -> None:
    folders = sorted(path.name for path in fitted.checkpoint_dir.iterdir())
    assert folders == ["member-0-seed-5", "member-1-seed-6", "member-2-seed-7"]
    for folder in folders:
        assert (fitted.checkpoint_dir / folder / CHECKPOINT_FILENAME).is_file()
    reported: list[int] = []
    again = EnsembleClassifier(
        member={**MEMBER, "seed": 5},
        n_members=3,
        checkpoint_dir=fitted.checkpoint_dir,
        on_epoch_end=lambda epoch, logs: reported.append(epoch),
    ).fit(train_xrays, validation=valid_xrays)
    assert reported == []  # every member restored its finished run: no epoch trained again
    np.testing.assert_allclose(
        again.predict_proba(valid_xrays),
        fitted.ensemble.predict_proba(valid_xrays),
        rtol=0,
        atol=1e-6,
    )


# ---------------------------------------------------------------------------- saving


def test_a_saved_ensemble_loads_with_identical_probabilities(
    fitted: Fitted, saved: Path, valid_xrays: list[XRay]
) -> None:
    loaded = EnsembleClassifier.load(saved)
    np.testing.assert_array_equal(
        loaded.predict_proba(valid_xrays), fitted.ensemble.predict_proba(valid_xrays)
    )
    assert loaded.classes_ == fitted.ensemble.classes_
    assert loaded.seeds_ == (5, 6, 7)
    assert loaded.member_name_ == "vgg19"
    assert loaded.history_ == fitted.ensemble.history_
    assert loaded.preprocessing_ == fitted.ensemble.preprocessing_
    expected = {**fitted.ensemble.get_params(), "checkpoint_dir": None, "on_epoch_end": None}
    assert loaded.get_params() == expected


def test_the_saved_file_is_one_archive_holding_each_members_own_model(
    saved: Path, tmp_path: Path
) -> None:
    assert sorted(path.name for path in saved.parent.iterdir()) == [saved.name]
    with zipfile.ZipFile(saved) as archive:
        assert sorted(archive.namelist()) == [
            "covidcxr.json",
            "members/0",
            "members/1",
            "members/2",
        ]
        metadata = json.loads(archive.read("covidcxr.json"))
        (tmp_path / "member.cxr").write_bytes(archive.read("members/1"))
    assert metadata["format"] == "covidcxr.ensemble-classifier"
    assert metadata["format_version"] == 1
    assert [(m["name"], m["seed"], m["layout"]) for m in metadata["members"]] == [
        ("vgg19", 5, "file"),
        ("vgg19", 6, "file"),
        ("vgg19", 7, "file"),
    ]
    assert VGG19Classifier.load(tmp_path / "member.cxr").get_params()["seed"] == 6


def _copy(saved: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy.cxr"
    copy.write_bytes(saved.read_bytes())
    return copy


def test_load_refuses_a_truncated_file(saved: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.cxr"
    path.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    with pytest.raises(ModelFormatError, match=rf"{re.escape(str(path))}: corrupt or unreadable"):
        EnsembleClassifier.load(path)


def test_load_refuses_a_vgg19_classifier(tiny_run: TinyRun, tmp_path: Path) -> None:
    path = tmp_path / "vgg19.cxr"
    tiny_run.classifier.save(path)
    with pytest.raises(
        ModelFormatError,
        match=r"vgg19\.cxr: covidcxr\.json does not describe a covidcxr ensemble classifier "
        r"\(its format is 'covidcxr\.classifier'\)",
    ):
        EnsembleClassifier.load(path)


def test_load_refuses_a_file_that_is_no_archive_or_no_file(tmp_path: Path) -> None:
    path = tmp_path / "noise.cxr"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelFormatError, match=r"noise\.cxr: corrupt or unreadable"):
        EnsembleClassifier.load(path)
    with pytest.raises(ModelFormatError, match=r"absent\.cxr: no saved covidcxr ensemble"):
        EnsembleClassifier.load(tmp_path / "absent.cxr")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(ModelFormatError, match=r"other\.zip: not a saved .* \(missing covidcxr"):
        EnsembleClassifier.load(tmp_path / "other.zip")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda m: m.update(format_version=99),
            r"format version 99, this covidcxr reads version 1",
        ),
        (lambda m: m.update(members=[]), r"field 'members' is missing or empty"),
        (lambda m: m["members"][1].update(path="members/7"), r"member 1 is not an object"),
        (lambda m: m.update(classes=["a", "b", "c"]), r"member 0 has classes"),
        (lambda m: m.update(classes="abc"), r"field 'classes' should be a list of strings"),
        (lambda m: m["params"].update(n_member=3), r"parameters this covidcxr .*'n_member'"),
        (
            lambda m: [member.update(name="no-such") for member in m["members"]],
            r"'no-such' classifiers, which no installed plugin registers",
        ),
        (lambda m: m["members"][2].update(name="ensemble"), r"of different classifiers"),
    ],
)
def test_load_refuses_damaged_metadata_naming_the_file(
    edit: Callable[[dict[str, Any]], None], message: str, saved: Path, tmp_path: Path
) -> None:
    copy = _copy(saved, tmp_path)
    edit_archive_metadata(copy, edit)
    with pytest.raises(ModelFormatError, match=rf"copy\.cxr: .*{message}"):
        EnsembleClassifier.load(copy)


def _replace_member(path: Path, name: str, data: bytes | None) -> None:
    with zipfile.ZipFile(path) as archive:
        members = [(item, archive.read(item)) for item in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for item, content in members:
            if item.filename != name:
                archive.writestr(item, content)
            elif data is not None:
                archive.writestr(item, data)


def test_load_refuses_a_damaged_or_missing_member_naming_it(saved: Path, tmp_path: Path) -> None:
    copy = _copy(saved, tmp_path)
    _replace_member(copy, "members/1", b"not a model")
    with pytest.raises(
        ModelFormatError, match=r"copy\.cxr: member 1 \(vgg19, seed 6\) cannot be loaded"
    ):
        EnsembleClassifier.load(copy)
    _replace_member(copy, "members/1", None)
    with pytest.raises(ModelFormatError, match=r"copy\.cxr: member 1's saved model .* missing"):
        EnsembleClassifier.load(copy)


def test_save_refuses_to_overwrite_a_file_that_is_not_a_saved_ensemble(
    fitted: Fitted, tiny_run: TinyRun, tmp_path: Path
) -> None:
    thesis = tmp_path / "thesis.cxr"
    thesis.write_text("three years of work")
    with pytest.raises(OutputExistsError, match="not a saved covidcxr ensemble classifier"):
        fitted.ensemble.save(thesis)
    assert thesis.read_text() == "three years of work"
    single = tmp_path / "vgg19.cxr"
    tiny_run.classifier.save(single)
    before = single.read_bytes()
    with pytest.raises(OutputExistsError):
        fitted.ensemble.save(single)
    assert single.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["thesis.cxr", "vgg19.cxr"]


def test_save_replaces_an_earlier_saved_ensemble(
    saved: Path, fitted: Fitted, tmp_path: Path
) -> None:
    copy = _copy(saved, tmp_path)
    edit_archive_metadata(copy, lambda metadata: metadata.update(earlier=True))
    fitted.ensemble.save(copy)
    with zipfile.ZipFile(copy) as archive:
        assert "earlier" not in json.loads(archive.read("covidcxr.json"))
    assert EnsembleClassifier.load(copy).seeds_ == (5, 6, 7)


def test_a_failed_save_leaves_the_earlier_file_and_nothing_beside_it(
    saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = _copy(saved, tmp_path)
    before = copy.read_bytes()
    ensemble = EnsembleClassifier.load(copy)

    def fail(path: str | os.PathLike[str]) -> None:
        Path(path).write_bytes(b"half a model")
        raise OSError("disk full")

    monkeypatch.setattr(ensemble.members_[2], "save", fail)
    with pytest.raises(OSError, match="disk full"):
        ensemble.save(copy)
    assert copy.read_bytes() == before
    assert [path.name for path in tmp_path.iterdir()] == ["copy.cxr"]


def test_what_a_killed_save_left_beside_the_file_is_removed(saved: Path, tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    copy = _copy(saved, tmp_path)
    staged = f".copy.cxr.{dead.pid}@{_HOST}.abcdefgh.tmp"
    leftovers = [staged, f".{staged}.{dead.pid}@{_HOST}.ijklmnop.keras"]
    for name in leftovers:
        (tmp_path / name).write_bytes(b"half")
    EnsembleClassifier.load(copy)
    assert [path.name for path in tmp_path.iterdir()] == ["copy.cxr"]


# ---------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_members": 0}, r"n_members must be an integer >= 1, got 0"),
        ({"n_members": True}, r"n_members must be an integer >= 1, got True"),
        ({"member": 3}, r"member must be a registered classifier name or a table"),
        ({"member": {"epochs": 2}}, r"member must be .* with a 'name'"),
        ({"member": "ensemble"}, r"member 'ensemble' is an ensemble, and ensembles do not nest"),
        (
            {"member": {**MEMBER, "checkpoint_dir": "run"}},
            r"checkpoint_dir is the ensemble's own option, not the member's",
        ),
        (
            {"member": {**MEMBER, "epoch": 2}},
            r"member 'vgg19' has no option 'epoch'\. Did you mean 'epochs'",
        ),
        ({"member": {**MEMBER, "seed": -1}}, r"the member's seed must be an integer >= 0"),
        ({"seeds": [1, 2]}, r"seeds has 2 seed\(s\) for n_members=3"),
        ({"seeds": [1, 1, 2]}, r"seeds must differ, got \[1, 1, 2\]"),
        ({"seeds": [0, 1.5, 2]}, r"seeds must be integers >= 0"),
        ({"seeds": "012"}, r"seeds must be a list of 3 distinct integers"),
        (
            {"member": {**MEMBER, "seed": 1}, "seeds": [0, 1, 2]},
            r"give either seeds or the member's seed, not both",
        ),
        ({"checkpoint_dir": 3}, r"checkpoint_dir must be a folder path or None, got 3"),
        ({"on_epoch_end": "print"}, r"on_epoch_end must be a function or None"),
    ],
)
def test_invalid_parameters_are_refused_before_any_member_trains(
    params: dict[str, Any], message: str, train_xrays: list[XRay]
) -> None:
    trained: list[int] = []
    options: dict[str, Any] = {"member": MEMBER, "on_epoch_end": lambda e, _: trained.append(e)}
    ensemble = EnsembleClassifier(**{**options, **params})
    with pytest.raises(ConfigurationError, match=rf"^EnsembleClassifier: .*{message}"):
        ensemble.fit(train_xrays)
    assert trained == []
    assert not hasattr(ensemble, "members_")
    assert ensemble.epochs is None  # no bar total for a configuration that cannot train


def test_an_unknown_member_name_suggests_the_closest() -> None:
    with pytest.raises(
        UnknownNameError, match=r"EnsembleClassifier: member 'vgg': .* Did you mean 'vgg19'"
    ):
        EnsembleClassifier(member="vgg").fit([])


def test_a_members_own_parameter_checks_run_before_it_trains(train_xrays: list[XRay]) -> None:
    ensemble = EnsembleClassifier(member={**MEMBER, "optimizer": "rmsprop"}, n_members=2)
    with pytest.raises(ConfigurationError, match=r"VGG19Classifier: optimizer must be"):
        ensemble.fit(train_xrays)


def test_member_options_given_as_none_in_a_file_are_none() -> None:
    ensemble = EnsembleClassifier(member={"name": "vgg19", "weights": "none"}, n_members=1)
    member = ensemble._member(ensemble._plan(), 0)
    assert member.get_params()["weights"] is None  # type: ignore[attr-defined]


# -- members that are not VGG19s: a folder on disk, no seed, no checkpoints ----------------


class ThumbnailCentroids:
    """Nearest class mean of 8x8 thumbnails, with seeded jitter; saves a folder."""

    def __init__(self, seed: int = 0, temperature: float = 0.05) -> None:
        self.seed = seed
        self.temperature = temperature

    def get_params(self) -> dict[str, Any]:
        return {"seed": self.seed, "temperature": self.temperature}

    @staticmethod
    def _thumbnails(xrays: Iterable[XRay]) -> NDArray[np.float64]:
        return np.asarray(
            [cv2.resize(np.asarray(x.pixels, np.float32), (8, 8)).ravel() for x in xrays],
            np.float64,
        )

    def fit(self, xrays: Iterable[XRay], validation: Iterable[XRay] | None = None) -> Self:
        train = list(xrays)
        self.classes_ = tuple(sorted({str(x.label) for x in train}))
        features = self._thumbnails(train)
        jitter = np.random.default_rng(self.seed).normal(0, 0.01, (len(self.classes_), 64))
        self.centroids_ = (
            np.stack([features[[x.label == c for x in train]].mean(axis=0) for c in self.classes_])
            + jitter
        )
        return self

    def predict_proba(self, xrays: Iterable[XRay]) -> NDArray[np.float32]:
        features = self._thumbnails(xrays).reshape(-1, 64)
        distances = ((features[:, None, :] - self.centroids_[None]) ** 2).mean(axis=2)
        logits = -distances / self.temperature
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return np.asarray(exp / exp.sum(axis=1, keepdims=True), np.float32)

    def predict(self, xrays: Iterable[XRay]) -> list[str]:
        return [self.classes_[i] for i in self.predict_proba(xrays).argmax(axis=1)]

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).mkdir()
        state = {
            "params": self.get_params(),
            "classes": self.classes_,
            "centroids": self.centroids_.tolist(),
        }
        (Path(path) / "centroids.json").write_text(json.dumps(state))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        try:
            state = json.loads((Path(path) / "centroids.json").read_text())
        except (OSError, ValueError) as exc:
            raise ModelFormatError(f"{path}: no centroids.json") from exc
        model = cls(**state["params"])
        model.classes_ = tuple(state["classes"])
        model.centroids_ = np.asarray(state["centroids"])
        return model

    classes_: tuple[str, ...]
    centroids_: NDArray[np.float64]


class Unseeded:
    """A classifier's constructor without a seed (nothing else is needed to refuse it)."""

    def __init__(self, epochs: int = 1) -> None:
        self.epochs = epochs


class OtherClassifiers:
    """The plugin: the classifiers above, and the ensemble again under another name."""

    @covidcxr.hookimpl
    def covidcxr_register_classifiers(self, register: Any) -> None:
        register("test-centroids", ThumbnailCentroids)
        register("test-unseeded", Unseeded)
        register("test-ensemble-again", EnsembleClassifier)


@pytest.fixture
def other_classifiers(covidcxr_plugin: Callable[..., str]) -> str:
    return covidcxr_plugin(OtherClassifiers(), name="ensemble-test-classifiers")


@pytest.mark.usefixtures("other_classifiers")
def test_members_that_save_a_folder_are_archived_and_loaded_back(
    train_xrays: list[XRay], valid_xrays: list[XRay], tmp_path: Path
) -> None:
    ensemble = EnsembleClassifier(member="test-centroids", n_members=2).fit(train_xrays)
    assert ensemble.seeds_ == (0, 1)
    assert ensemble.history_ == {}  # the members keep none
    assert not hasattr(ensemble, "preprocessing_")  # nor the preprocessing of their input
    assert ensemble.input_size is None
    ensemble.save(tmp_path / "centroids.cxr")
    with zipfile.ZipFile(tmp_path / "centroids.cxr") as archive:
        assert "members/1/centroids.json" in archive.namelist()
    loaded = EnsembleClassifier.load(tmp_path / "centroids.cxr")
    np.testing.assert_array_equal(
        loaded.predict_proba(valid_xrays), ensemble.predict_proba(valid_xrays)
    )
    assert [path.name for path in tmp_path.iterdir()] == ["centroids.cxr"]


@pytest.mark.usefixtures("other_classifiers")
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"member": "test-unseeded"}, r"'test-unseeded' takes no 'seed' option"),
        (
            {"member": "test-centroids", "checkpoint_dir": "run"},
            r"'test-centroids' takes no checkpoint_dir, so its members cannot resume",
        ),
        (
            {"member": "test-ensemble-again"},
            r"member 'test-ensemble-again' is an ensemble, and ensembles do not nest",
        ),
    ],
)
def test_a_member_classifier_that_cannot_serve_is_refused(
    params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=rf"^EnsembleClassifier: .*{message}"):
        EnsembleClassifier(**params).fit([])


# ---------------------------------------------------------------------------- in a pipeline

ENSEMBLE_PIPELINE: dict[str, Any] = {
    "preprocessor": {"name": "gaussian-clahe", "output_size": 48},
    "classifier": {
        "name": "ensemble",
        "n_members": 2,
        # A class weight, so that the pipeline's class priors must read the members'.
        "member": {**MEMBER, "class_weight": {"covid-19": 2.0}},
    },
    "detector": {"name": "none"},
    "evaluation": {"n_bootstrap": 0},
    "trust": {"gate": False},
}


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    """An ensemble pipeline fitted with validation, so calibrated (tests must not change it)."""
    fitted = Pipeline.from_dict(ENSEMBLE_PIPELINE)
    with warnings.catch_warnings():
        # Two epochs of a frozen random base learn little: expected of a test model.
        warnings.simplefilter("ignore", CalibrationWarning)
        warnings.simplefilter("ignore", OneClassPredictionWarning)
        return fitted.fit(
            generate_phantoms(8, size=64, seed=20),
            validation=generate_phantoms(7, size=64, seed=21),
        )


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory: pytest.TempPathFactory, pipeline: Pipeline) -> Path:
    return pipeline.save(tmp_path_factory.mktemp("ensemble-pipeline") / "model")


@pytest.fixture(scope="module")
def test_images() -> list[XRay]:
    return generate_phantoms(2, size=64, seed=22)


def test_a_pipeline_calibrates_the_ensembles_averaged_output(
    pipeline: Pipeline, test_images: list[XRay]
) -> None:
    ensemble = pipeline.classifier_
    assert isinstance(ensemble, EnsembleClassifier)
    assert len(ensemble.members_) == 2
    assert pipeline.trust_.calibration is not None
    averaged = ensemble.predict_proba(pipeline.classifier_inputs(test_images))
    predicted = [list(p.probabilities.values()) for p in pipeline.predict(test_images)]
    np.testing.assert_allclose(predicted, pipeline.trust_.calibrate(averaged), atol=1e-6)
    assert pipeline.history_ == ensemble.history_


def test_a_pipeline_reads_the_members_class_weight_for_its_class_priors(
    pipeline: Pipeline,
) -> None:
    # Equal class counts, covid-19 weighted twice: the loss saw it as half the data.
    assert pipeline.training_priors() == pytest.approx(
        {"covid-19": 0.5, "normal": 0.25, "pneumonia": 0.25}
    )


def test_a_saved_ensemble_pipeline_loads_and_predicts_the_same(
    pipeline: Pipeline, saved_pipeline: Path, test_images: list[XRay]
) -> None:
    loaded = Pipeline.load(saved_pipeline)
    assert isinstance(loaded.classifier_, EnsembleClassifier)
    assert [p.to_dict() for p in loaded.predict(test_images)] == [
        p.to_dict() for p in pipeline.predict(test_images)
    ]
    card = (saved_pipeline / "model_card.md").read_text()
    assert "- Classifier: `ensemble` with " in card
    assert "`n_members=2`" in card
    assert "- Epochs run: 2" in card  # the members' mean curves
    # Not "last epoch" of one network: each member kept its own weights.
    assert "weights kept: each member's own last epoch (the curves here are the members' mean)" in (
        card
    )
    metadata = json.loads((saved_pipeline / "metadata.json").read_text())
    image = metadata["network_data_format"]["inputs"]["image"]
    assert image["spatial_shape"] == [TINY["input_size"]] * 2  # the members' input
    assert image["normalization"] == "symmetric"


def test_set_working_size_moves_every_members_record(
    saved_pipeline: Path, test_images: list[XRay], tmp_path: Path
) -> None:
    moved = Pipeline.load(saved_pipeline).set_working_size(64)
    ensemble = moved.classifier_
    assert isinstance(ensemble, EnsembleClassifier)
    assert all(m.preprocessing_["working_size"] == 64 for m in ensemble.members_)  # type: ignore[attr-defined]
    # Loading checks the members' record against the preprocessor: one member left at the
    # old record would be refused here.
    loaded = Pipeline.load(moved.save(tmp_path / "moved"))
    assert loaded.classifier_.preprocessing_["working_size"] == 64  # type: ignore[attr-defined]
    assert len(loaded.predict(test_images)) == len(test_images)


def test_shipping_stores_every_members_weights_at_half_precision(
    saved_pipeline: Path, test_images: list[XRay], tmp_path: Path
) -> None:
    copy = write_shippable_copy(saved_pipeline, tmp_path / "shipped")
    assert copy.precisions["classifier"] == "float16"
    classifier = tmp_path / "shipped" / "classifier"
    assert classifier.stat().st_size < 0.75 * (saved_pipeline / "classifier").stat().st_size
    shipped = Pipeline.load(tmp_path / "shipped")
    original = Pipeline.load(saved_pipeline)
    np.testing.assert_allclose(
        [list(p.probabilities.values()) for p in shipped.predict(test_images)],
        [list(p.probabilities.values()) for p in original.predict(test_images)],
        atol=1e-2,
    )


def test_export_refuses_an_ensemble_and_writes_nothing(
    saved_pipeline: Path, test_images: list[XRay], tmp_path: Path
) -> None:
    from covidcxr.runtime import export

    with pytest.raises(
        ConfigurationError,
        match=r"only a VGG19Classifier can be exported, not a EnsembleClassifier .*ensemble",
    ):
        export(saved_pipeline, tmp_path / "exported", validation=test_images, runtime="onnx")
    assert not (tmp_path / "exported").exists()


def test_the_export_command_refuses_an_ensemble_in_one_line(
    saved_pipeline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    validation = write_phantom_dataset(tmp_path / "validation", n_per_class=1, size=64)
    with pytest.raises(SystemExit) as exited:
        main(["export", str(saved_pipeline), str(tmp_path / "out"), "--validation",
              str(validation), "--runtime", "onnx"])  # fmt: skip
    assert exited.value.code == 1
    # Warnings (a model trained on phantoms) may come first; the error is the last line.
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith("error: only a VGG19Classifier can be exported, not a EnsembleClassifier")
    )
    assert not (tmp_path / "out").exists()


def test_ray_training_refuses_an_ensemble_before_starting_anything() -> None:
    import covidcxr.ray

    with pytest.raises(ConfigurationError, match=r"classifier is 'ensemble', which does not"):
        covidcxr.ray.fit(Pipeline.from_dict(ENSEMBLE_PIPELINE), [], workers=1)


def test_grad_cam_refuses_an_ensemble_and_maps_one_of_its_members(
    fitted: Fitted, saved: Path
) -> None:
    ensemble = fitted.ensemble
    message = r"GradCAMDetector maps the features of one network, and EnsembleClassifier"
    with pytest.raises(ConfigurationError, match=message):
        GradCAMDetector(ensemble)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=message):
        covidcxr.create_detector("gradcam", classifier=ensemble)
    with pytest.raises(ModelFormatError, match=r"ensemble\.cxr"):
        covidcxr.create_detector("gradcam", model=saved)
    member = ensemble.members_[0]
    assert isinstance(member, VGG19Classifier)
    assert GradCAMDetector(member).classifier is member


def test_a_pipeline_refuses_an_invalid_ensemble_configuration() -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"\[classifier\] 'ensemble' has no option 'n_member'\. Did you mean 'n_members'",
    ):
        Pipeline.from_dict({"classifier": {"name": "ensemble", "n_member": 3}})
    bad = {
        **ENSEMBLE_PIPELINE,
        "classifier": {"name": "ensemble", "member": {**MEMBER, "epoch": 1}},
    }
    pipeline = Pipeline.from_dict(bad)  # member options are the ensemble's to check: at fit
    with pytest.raises(ConfigurationError, match=r"member 'vgg19' has no option 'epoch'"):
        pipeline.fit(generate_phantoms(2, size=64))


def _first_toml_block(text: str) -> str:
    lines = text.split(".. code-block:: toml\n", 1)[1].splitlines()
    body = list(itertools.takewhile(lambda line: not line or line.startswith("   "), lines))
    return textwrap.dedent("\n".join(body))


def test_the_training_pages_toml_example_configures_an_ensemble() -> None:
    page = (REPO_ROOT / "docs" / "training.rst").read_text(encoding="utf-8")
    section = page.split("\nEnsembles\n---------\n", 1)[1]
    config = PipelineConfig.from_dict(tomllib.loads(_first_toml_block(section)))
    assert config.classifier.name == "ensemble"
    classifier = covidcxr.create_classifier(config.classifier.name, **config.classifier.options)
    assert isinstance(classifier, EnsembleClassifier)
    plan = classifier._plan()
    assert (plan.name, plan.seeds) == ("vgg19", (0, 1, 2))
