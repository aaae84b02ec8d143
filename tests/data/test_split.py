"""Specification of split_dataset: stratified, patient-grouped, duplicate-guarded."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from covidcxr.errors import ConfigurationError
from covidcxr.records import XRay
from covidcxr.sources import FolderSource
from covidcxr.split import find_near_duplicates, hash_distance, perceptual_hash, split_dataset

LABELS3 = ("covid-19", "normal", "pneumonia")


def _dataset(count: int, *, per_patient: int = 1, seed: int = 0) -> list[XRay]:
    rng = np.random.default_rng(seed)
    return [
        XRay(
            rng.integers(0, 255, (32, 32), dtype=np.uint8),
            id=f"img-{index}",
            label=LABELS3[index % 3],
            patient_id=f"p{index // per_patient}" if per_patient > 1 else None,
        )
        for index in range(count)
    ]


def test_published_recipe_is_75_25_and_stratified() -> None:
    split = split_dataset(_dataset(120), test_size=0.25, seed=0)
    assert (len(split.train), len(split.val), len(split.test)) == (90, 0, 30)
    assert Counter(x.label for x in split.test) == {label: 10 for label in LABELS3}


def test_validation_split_takes_its_share() -> None:
    split = split_dataset(_dataset(120), test_size=0.2, val_size=0.1, seed=1)
    assert (len(split.train), len(split.val), len(split.test)) == (84, 12, 24)


def test_every_image_lands_in_exactly_one_split() -> None:
    xrays = _dataset(50)
    split = split_dataset(xrays, test_size=0.3, val_size=0.2)
    ids = [x.id for x in (*split.train, *split.val, *split.test)]
    assert sorted(ids) == sorted(x.id for x in xrays)


def test_same_seed_same_split_other_seed_other_split() -> None:
    xrays = _dataset(90)
    first = split_dataset(xrays, seed=3)
    again = split_dataset(xrays, seed=3)
    other = split_dataset(xrays, seed=4)
    assert [x.id for x in first.test] == [x.id for x in again.test]
    assert [x.id for x in first.test] != [x.id for x in other.test]


def test_one_patient_never_straddles_splits() -> None:
    split = split_dataset(_dataset(120, per_patient=4), test_size=0.25, val_size=0.15)
    seen = [{x.patient_id for x in part} for part in (split.train, split.val, split.test)]
    for first, second in itertools.combinations(seen, 2):
        assert not first & second


def test_near_duplicates_are_kept_together_and_reported() -> None:
    xrays = _dataset(60)
    original = np.asarray(xrays[0].pixels)
    copy = cv2.resize(cv2.resize(original, (48, 48)), (32, 32))  # re-published, resampled
    xrays.append(XRay(copy, id="copy-of-img-0", label="covid-19"))
    for seed in range(5):
        split = split_dataset(xrays, test_size=0.5, seed=seed)
        (group,) = [g for g in split.duplicates if "img-0" in g.ids]
        assert set(group.ids) == {"img-0", "copy-of-img-0"}
        homes = [
            name
            for name in ("train", "test")
            if any(x.id in group.ids for x in getattr(split, name))
        ]
        assert len(homes) == 1


def test_dedup_off_reports_nothing() -> None:
    xrays = _dataset(30)
    xrays.append(XRay(np.asarray(xrays[0].pixels).copy(), id="copy", label="covid-19"))
    assert split_dataset(xrays, dedup=False).duplicates == ()


def test_conflicting_labels_among_copies_are_flagged() -> None:
    xrays = _dataset(30)
    xrays.append(XRay(np.asarray(xrays[0].pixels).copy(), id="copy", label="normal"))
    (group,) = split_dataset(xrays).duplicates
    assert group.conflicting


@pytest.mark.parametrize(("test_size", "val_size"), [(1.0, 0.0), (-0.1, 0.0), (0.6, 0.4)])
def test_impossible_sizes_are_configuration_errors(test_size: float, val_size: float) -> None:
    with pytest.raises(ConfigurationError, match="size"):
        split_dataset(_dataset(10), test_size=test_size, val_size=val_size)


def test_hash_ignores_brightness_and_contrast_but_not_content() -> None:
    image = np.asarray(_dataset(1)[0].pixels)
    brighter = np.clip(image.astype(int) * 3 // 4 + 40, 0, 255).astype(np.uint8)
    assert hash_distance(perceptual_hash(image), perceptual_hash(brighter)) <= 8
    other = np.asarray(_dataset(2, seed=9)[1].pixels)
    assert hash_distance(perceptual_hash(image), perceptual_hash(other)) > 60


def test_near_duplicate_clusters_are_transitive() -> None:
    assert find_near_duplicates([0b000, 0b001, 0b011, 0b111 << 100], max_distance=1) == [[0, 1, 2]]


def test_counts_summarise_labels_per_split() -> None:
    counts = split_dataset(_dataset(12), test_size=0.25).counts()
    assert counts["test"] == {"covid-19": 1, "normal": 1, "pneumonia": 1}
    assert counts["val"] == {}


@pytest.mark.shared_data
@pytest.mark.slow
def test_real_split_separates_known_copies(covid_qu_ex_dir: Path) -> None:
    # A few real images plus a re-encoded copy of the first: the copy must follow it.
    source = FolderSource(covid_qu_ex_dir, layout="covid-qu-ex", split="Val", load_masks=False)
    xrays = list(itertools.islice(source, 40))
    first = np.asarray(xrays[0].pixels)
    ok, jpeg = cv2.imencode(".jpg", cv2.resize(first, (300, 300)), [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok
    copy = cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE)
    xrays.append(XRay(copy, id="jpeg-copy", label=xrays[0].label))
    split = split_dataset(xrays, test_size=0.25)
    assert any({xrays[0].id, "jpeg-copy"} <= set(group.ids) for group in split.duplicates)
    train_ids = {x.id for x in split.train}
    assert (xrays[0].id in train_ids) == ("jpeg-copy" in train_ids)


def test_blank_patient_ids_name_no_patient() -> None:
    # An empty CSV cell is no patient id: such images must not chain into one group that
    # lands in a single split as a block.
    xrays = [
        XRay(x.pixels, id=x.id, label=x.label, patient_id=("", "  ")[index % 2])
        for index, x in enumerate(_dataset(40))
    ]
    split = split_dataset(xrays, test_size=0.25, seed=0, dedup=False)
    assert len(split.test) in (9, 10)  # a quarter of 40, as whole classes allow


def test_patient_ids_differing_only_in_whitespace_stay_together() -> None:
    xrays = [
        XRay(x.pixels, id=x.id, label=x.label, patient_id=f"p{index // 2}" + " " * (index % 2))
        for index, x in enumerate(_dataset(40))
    ]
    for seed in range(3):
        split = split_dataset(xrays, test_size=0.25, val_size=0.25, seed=seed, dedup=False)
        patients = [
            {str(x.patient_id).strip() for x in part}
            for part in (split.train, split.val, split.test)
        ]
        for first, second in itertools.combinations(patients, 2):
            assert not first & second
