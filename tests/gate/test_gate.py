"""The input gate: what it learns from training radiographs alone, and what it refuses."""

from __future__ import annotations

import json
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from covidcxr import XRay
from covidcxr.errors import ConfigurationError, ModelFormatError
from covidcxr.gate import ChestXrayGate, n_versions, version_of
from covidcxr.phantoms import generate_phantoms
from covidcxr.preprocess import GaussianClahePreprocessor
from covidcxr.protocols import InputGate

from ..conftest import edit_archive_metadata

PREPROCESS = GaussianClahePreprocessor(output_size=64)
# A gate's networks, saved together and loaded, are called with plain arrays: Keras warns
# on each call to a model whose inputs are a list.
pytestmark = pytest.mark.filterwarnings("error:The structure of `inputs`:UserWarning")


def prepared(xrays: list[XRay]) -> list[XRay]:
    return [PREPROCESS(x) for x in xrays]


@pytest.fixture(scope="module")
def train() -> list[XRay]:
    return prepared(generate_phantoms(40, size=64, seed=0))


@pytest.fixture(scope="module")
def held_out() -> list[XRay]:
    return prepared(generate_phantoms(10, size=64, seed=5))


@pytest.fixture(scope="module")
def gate(train: list[XRay]) -> ChestXrayGate:
    return ChestXrayGate(input_size=16, epochs=3, seed=0).fit(train)


def accepted(gate: ChestXrayGate, xrays: list[XRay]) -> float:
    return float(np.mean([d.accepted for d in gate.assess(xrays)]))


def test_versions_are_the_quarter_turns_with_and_without_inversion() -> None:
    ramp = np.arange(12, dtype=np.float32).reshape(1, 3, 4) / np.float32(11)
    assert n_versions() == 8
    np.testing.assert_array_equal(version_of(ramp, 0), ramp)
    np.testing.assert_array_equal(version_of(ramp, 2)[0], ramp[0, ::-1, ::-1])
    inverted = np.float32(1) - version_of(ramp, 1)
    assert np.allclose(version_of(ramp, 5), inverted)
    assert version_of(ramp, 1).shape == (1, 4, 3)
    with pytest.raises(ValueError, match="version"):
        version_of(ramp, 8)


def test_the_gate_is_an_input_gate_and_accepts_radiographs_like_its_training_ones(
    gate: ChestXrayGate, held_out: list[XRay]
) -> None:
    assert isinstance(gate, InputGate)
    assert accepted(gate, held_out) >= 0.9
    # The threshold accepts the configured share of the held-out training radiographs.
    assert np.mean(gate.holdout_scores_ <= gate.threshold_) >= gate.acceptance - 1e-9
    assert gate.n_fitted_ == 120
    summary = gate.summary()
    assert summary["threshold"] == gate.threshold_
    assert summary["n_holdout"] == 24


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(lambda p: np.rot90(p, 2), id="upside down"),
        pytest.param(lambda p: np.rot90(p, 1), id="rotated 90"),
        pytest.param(lambda p: 1.0 - p, id="inverted"),
    ],
)
def test_radiographs_rotated_or_inverted_are_refused(
    gate: ChestXrayGate, held_out: list[XRay], transform: object
) -> None:
    assert callable(transform)
    changed = [XRay(np.ascontiguousarray(transform(x.pixels)), x.id) for x in held_out]
    decisions = gate.assess(changed)
    assert np.mean([not d.accepted for d in decisions]) >= 0.9
    refused = next(d for d in decisions if not d.accepted)
    assert refused.reason is not None
    assert "not a frontal chest radiograph" in refused.reason
    assert refused.score > refused.threshold == gate.threshold_


def test_noise_and_blank_frames_are_refused_with_a_plain_reason(gate: ChestXrayGate) -> None:
    rng = np.random.default_rng(0)
    noise = prepared(
        [XRay(rng.integers(0, 256, (64, 64), dtype=np.uint8), f"n{i}") for i in range(8)]
    )
    assert accepted(gate, noise) == 0.0
    blank = gate.assess([XRay(np.full((64, 64), 0.5, np.float32), "grey")])[0]
    assert not blank.accepted
    assert blank.reason is not None
    assert blank.reason.startswith("blank image")


def test_a_saved_gate_scores_the_same_and_a_damaged_one_is_refused(
    gate: ChestXrayGate, held_out: list[XRay], tmp_path: Path
) -> None:
    path = tmp_path / "gate.cxr"
    gate.save(path)
    loaded = ChestXrayGate.load(path)
    np.testing.assert_allclose(loaded.score(held_out), gate.score(held_out), rtol=1e-5)
    assert loaded.threshold_ == gate.threshold_
    assert loaded.get_params() == gate.get_params()
    damaged = tmp_path / "damaged.cxr"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(damaged, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "covidcxr.json":
                data = data.replace(b'"threshold"', b'"threshold_was"')
            target.writestr(item, data)
    with pytest.raises(ModelFormatError, match="incomplete"):
        ChestXrayGate.load(damaged)
    with pytest.raises(ModelFormatError):
        ChestXrayGate.load(tmp_path / "missing.cxr")


def test_a_gate_saved_with_an_option_this_covidcxr_lacks_names_it_and_the_saver(
    gate: ChestXrayGate, tmp_path: Path
) -> None:
    # What an older covidcxr says of a gate saved with a newer one's option (as this one
    # would have said of "mirror" before it existed): not "metadata incomplete".
    path = tmp_path / "gate.cxr"
    gate.save(path)
    later = tmp_path / "later.cxr"
    shutil.copyfile(path, later)

    def as_a_later_covidcxr_saved_it(metadata: dict[str, Any]) -> None:
        metadata["params"]["glare_check"] = True
        metadata["versions"]["covidcxr"] = "9.1.0"

    edit_archive_metadata(later, as_a_later_covidcxr_saved_it)
    with pytest.raises(
        ModelFormatError,
        match=r"later\.cxr: saved by covidcxr 9\.1\.0 with parameters this covidcxr .* "
        r"does not know \('glare_check'\); load it with the covidcxr that saved it",
    ):
        ChestXrayGate.load(later)


def test_too_few_radiographs_or_bad_options_are_refused(train: list[XRay]) -> None:
    with pytest.raises(ConfigurationError, match="at least 100"):
        ChestXrayGate(epochs=1).fit(train[:50])
    with pytest.raises(ConfigurationError, match="acceptance"):
        ChestXrayGate(acceptance=1.5).fit(train)
    with pytest.raises(ConfigurationError, match="epochs"):
        ChestXrayGate(epochs=0).fit(train)
    with pytest.raises(ConfigurationError, match="not fitted"):
        ChestXrayGate().assess(train[:1])


def test_twelve_bit_data_in_sixteen_bits_is_not_taken_for_a_blank_frame(
    gate: ChestXrayGate,
) -> None:
    ramp = np.tile(np.linspace(0, 4095, 64), (64, 1)).astype(np.uint16)  # 12 bits used
    decision = gate.assess([XRay(ramp, "12-bit")])[0]
    assert decision.reason is None or not decision.reason.startswith("blank image")
    flat = gate.assess([XRay(np.full((64, 64), 2000, np.uint16), "flat")])[0]
    assert flat.reason is not None
    assert flat.reason.startswith("blank image")


def test_sklearn_clone_of_a_fitted_gate_copies_the_parameters_not_the_fit(
    gate: ChestXrayGate,
) -> None:
    from sklearn.base import clone

    copy = clone(gate)
    assert copy.get_params() == gate.get_params()
    assert hasattr(gate, "threshold_")
    assert not hasattr(copy, "threshold_")
    assert not hasattr(copy, "model_")


def test_two_fits_with_the_same_seed_give_the_same_gate(
    train: list[XRay], gate: ChestXrayGate
) -> None:
    # The module's gate was fitted earlier in this process, with other random draws since:
    # nothing but the seed may decide the weights and the threshold.
    again = ChestXrayGate(input_size=16, epochs=3, seed=0).fit(train)
    assert again.threshold_ == gate.threshold_
    for mine, theirs in zip(again.model_.get_weights(), gate.model_.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_a_refused_image_is_said_to_look_rotated_only_if_turned_back_it_would_pass(
    gate: ChestXrayGate, held_out: list[XRay], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in network that knows one radiograph in all eight versions, and guesses
    # "rotated by 90 degrees" (confidently, and wrongly) on anything else, as a real
    # network may on noise, where every version looks alike.
    radiograph = held_out[0]
    small = _small_of(gate, radiograph)[None]
    known = [version_of(small, version)[0] for version in range(n_versions())]

    def probabilities(images: np.ndarray) -> np.ndarray:
        rows = []
        for image in images:
            row = np.full(n_versions(), 0.4 / (n_versions() - 1), np.float32)
            row[1] = 0.6
            for version, reference in enumerate(known):
                if image.shape == reference.shape and np.allclose(image, reference, atol=1e-5):
                    row = np.full(n_versions(), 1e-4, np.float32)
                    row[version] = 1.0 - 1e-4 * (n_versions() - 1)
            rows.append(row)
        return np.stack(rows)

    monkeypatch.setattr(gate, "_probabilities", probabilities)
    rotated = XRay(np.ascontiguousarray(np.rot90(radiograph.pixels, 1)), "rotated")
    rng = np.random.default_rng(1)
    noise = XRay(rng.random((64, 64), dtype=np.float32), "noise")
    upright, turned, noisy = gate.assess([radiograph, rotated, noise])
    assert upright.accepted, upright
    assert turned.reason is not None
    assert turned.reason.endswith("it looks rotated by 90 degrees anticlockwise")
    assert noisy.reason == "not a frontal chest radiograph like the training ones"


def _small_of(gate: ChestXrayGate, xray: XRay) -> np.ndarray:
    """The image as the gate's network sees it."""
    from covidcxr.gate._gate import _small

    return _small(xray.pixels, gate.input_size)


# ---------------------------------------------------------------------------- mirror check


def with_a_heart(xrays: list[XRay]) -> list[XRay]:
    """The radiographs with a bright blob right of centre: a side to tell, as a heart gives."""
    out = []
    for xray in xrays:
        pixels = np.array(xray.pixels, np.float32, copy=True)
        height, width = pixels.shape
        pixels[height // 3 : 3 * height // 4, width // 2 : 3 * width // 4] = pixels.max()
        out.append(XRay(pixels, xray.id))
    return out


@pytest.fixture(scope="module")
def sided_gate(train: list[XRay]) -> ChestXrayGate:
    # 24 held-out radiographs: enough for a threshold at 0.95, not at the default 0.995.
    return ChestXrayGate(
        input_size=16, epochs=3, mirror_epochs=6, mirror_acceptance=0.95, seed=0
    ).fit(with_a_heart(train))


def test_a_mirrored_film_is_refused_when_the_radiographs_show_their_side(
    sided_gate: ChestXrayGate, held_out: list[XRay], monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = sided_gate.mirror_
    assert mirror is not None
    assert mirror["threshold"] is not None
    assert mirror["holdout_mirrored_refused"] >= 0.9
    assert mirror["holdout_accepted"] >= sided_gate.mirror_acceptance - 1e-9
    upright = with_a_heart(held_out)
    flipped = [XRay(np.ascontiguousarray(x.pixels[:, ::-1]), x.id) for x in upright]
    assert accepted(sided_gate, upright) >= 0.9
    # On these tiny phantoms the version network finds a mirrored blob unusual too;
    # with its threshold out of the way, the refusals are the mirror check's own.
    monkeypatch.setattr(sided_gate, "threshold_", float("inf"))
    decisions = sided_gate.assess(flipped)
    refused = [d for d in decisions if not d.accepted]
    assert len(refused) >= 0.9 * len(flipped)
    assert all(d.reason is not None and "mirrored left to right" in d.reason for d in refused)
    assert sided_gate.summary()["mirror"] == {**mirror, "active": True}
    monkeypatch.setattr(sided_gate, "mirror", False)  # switched off: the summary says so
    assert sided_gate.summary()["mirror"]["active"] is False


def test_radiographs_that_do_not_show_their_side_get_no_mirror_check(
    held_out: list[XRay],
) -> None:
    # Left-right symmetric radiographs: nothing tells a film from its mirror image.
    symmetric = [
        XRay(np.ascontiguousarray((x.pixels + x.pixels[:, ::-1]) / 2), x.id)
        for x in prepared(generate_phantoms(40, size=64, seed=0))
    ]
    gate = ChestXrayGate(
        input_size=16, epochs=2, mirror_epochs=2, mirror_acceptance=0.95, seed=0
    ).fit(symmetric)
    assert gate.mirror_ is not None
    assert gate.mirror_["threshold"] is None
    assert "may not show which side" in gate.mirror_["note"]
    assert gate.mirror_model_ is None
    assert all("mirrored" not in (d.reason or "") for d in gate.assess(held_out))


def test_a_saved_mirror_check_is_kept_and_an_old_gate_gains_one_without_other_change(
    sided_gate: ChestXrayGate,
    train: list[XRay],
    held_out: list[XRay],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "gate.cxr"
    sided_gate.save(path)
    loaded = ChestXrayGate.load(path)
    images = with_a_heart(held_out)
    flipped = [XRay(np.ascontiguousarray(x.pixels[:, ::-1]), x.id) for x in images]
    assert loaded.mirror_ == sided_gate.mirror_
    assert [d.reason for d in loaded.assess(flipped)] == [
        d.reason for d in sided_gate.assess(flipped)
    ]
    # A gate without the check (as saved before it existed) gains one from fit_mirror;
    # its version network and threshold stay as they were.
    old = ChestXrayGate(input_size=16, epochs=3, mirror=False, mirror_acceptance=0.95, seed=0).fit(
        with_a_heart(train)
    )
    assert old.mirror_ is None
    old.save(tmp_path / "old.cxr")
    reloaded = ChestXrayGate.load(tmp_path / "old.cxr")
    assert reloaded.get_params()["mirror"] is False
    assert not any("mirrored" in (d.reason or "") for d in reloaded.assess(flipped))
    scores, threshold = reloaded.score(images), reloaded.threshold_
    reloaded.set_params(mirror_epochs=6).fit_mirror(with_a_heart(train))
    assert reloaded.mirror is True
    assert reloaded.mirror_ is not None
    assert reloaded.mirror_["threshold"] is not None
    # The same check a fit with it from the start gives (its shuffling is its own).
    assert reloaded.mirror_ == sided_gate.mirror_
    assert reloaded.mirror_model_ is not None
    assert sided_gate.mirror_model_ is not None
    for mine, theirs in zip(
        reloaded.mirror_model_.get_weights(), sided_gate.mirror_model_.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_array_equal(reloaded.score(images), scores)
    assert reloaded.threshold_ == threshold
    monkeypatch.setattr(reloaded, "threshold_", float("inf"))  # the mirror check's refusals
    assert sum("mirrored" in (d.reason or "") for d in reloaded.assess(flipped)) >= 0.9 * len(
        flipped
    )
    reloaded.set_params(mirror=False)  # switched off
    assert not any("mirrored" in (d.reason or "") for d in reloaded.assess(flipped))


def test_a_gate_whose_networks_and_metadata_disagree_is_refused(
    sided_gate: ChestXrayGate, tmp_path: Path
) -> None:
    path = tmp_path / "gate.cxr"
    sided_gate.save(path)
    damaged = tmp_path / "damaged.cxr"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(damaged, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "covidcxr.json":
                document = json.loads(data)
                document["mirror"]["threshold"] = None
                data = json.dumps(document).encode()
            target.writestr(item, data)
    with pytest.raises(ModelFormatError):
        ChestXrayGate.load(damaged)


def test_too_few_held_out_radiographs_for_the_mirror_threshold_keep_no_check(
    gate: ChestXrayGate,
) -> None:
    # 24 held out: a 0.995 quantile of them would be their maximum, refusing an unknown
    # share of new radiographs.
    assert gate.mirror_ is not None
    assert gate.mirror_["threshold"] is None
    assert "at least 201 needed" in gate.mirror_["note"]
    assert gate.mirror_model_ is None


def test_a_saved_mirror_check_carries_no_training_state(
    sided_gate: ChestXrayGate, tmp_path: Path
) -> None:
    # Nested in one Keras model, a compiled network would bring its optimizer's state
    # (twice its weights) into the file.
    import io

    import h5py

    path = tmp_path / "gate.cxr"
    sided_gate.save(path)
    with zipfile.ZipFile(path) as archive:
        keras_file = archive.read("model.keras")
    with zipfile.ZipFile(io.BytesIO(keras_file)) as model:
        weights = model.read("model.weights.h5")
    names: list[str] = []
    with h5py.File(io.BytesIO(weights), "r") as stored:
        stored.visit(names.append)
    assert any("functional" in name for name in names)
    assert not [name for name in names if "optimizer" in name]
