"""Specification of layout="auto": sources recognise the layouts users point them at."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import covidcxr
from covidcxr.errors import ConfigurationError, SourceError, UnknownLabelError
from covidcxr.sources import CatalogSource, FolderSource, detect_layout


def _open(uri: Any, **options: Any) -> CatalogSource:
    """:func:`covidcxr.open_source`, typed as the catalogue source it returns here."""
    source = covidcxr.open_source(uri, **options)
    assert isinstance(source, CatalogSource)
    return source


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# -- COVID-QU-Ex ---------------------------------------------------------------------------


def test_qu_ex_split_folder_yields_its_radiographs_not_its_masks(make: Any, tmp_path: Path) -> None:
    # The old default read {class}/** as class folders: images and both mask folders,
    # three records per radiograph (2,796 for the 932 images of the real Val split).
    make.qu_ex(tmp_path / "qu", splits=("Val",))
    source = _open(tmp_path / "qu" / "Val")
    assert source.layout == "covid-qu-ex"
    assert len(source) == 6
    assert all("/images/" in entry.name for entry in source.entries)
    xrays = list(source)
    assert {x.meta["split"] for x in xrays} == {"Val"}
    assert {x.label for x in xrays} == set(covidcxr.LABELS)
    covid = next(x for x in xrays if x.label == "covid-19")
    assert len(covid.boxes) == 2
    assert covid.meta["lung_mask"].shape == covid.pixels.shape


def test_qu_ex_split_folder_refuses_a_split_option(make: Any, tmp_path: Path) -> None:
    make.qu_ex(tmp_path / "qu", splits=("Val",))
    with pytest.raises(ConfigurationError, match="one COVID-QU-Ex split folder"):
        FolderSource(tmp_path / "qu" / "Val", layout="covid-qu-ex", split="Val")


def test_qu_ex_root_reads_every_split_by_default_or_the_one_asked_for(qu_ex_folder: Path) -> None:
    everything = _open(qu_ex_folder)
    assert everything.layout == "covid-qu-ex"
    assert len(everything) == 18
    assert {dict(entry.meta)["split"] for entry in everything.entries} == {"Train", "Val", "Test"}
    validation = _open(qu_ex_folder, split="val")
    assert len(validation) == 6
    assert "split=['val']" in validation.layout_reason


def test_class_layout_at_a_qu_ex_root_suggests_split_not_label_aliases(qu_ex_folder: Path) -> None:
    with pytest.raises(UnknownLabelError) as info:
        FolderSource(qu_ex_folder, layout="classes")
    message = str(info.value)
    assert "look like split folders" in message
    assert "split='Test'" in message
    assert "label_aliases" not in message


def test_the_choice_is_logged_and_kept_on_the_source(
    qu_ex_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="covidcxr.sources"):
        source = _open(qu_ex_folder / "Train")
    assert "layout 'covid-qu-ex'" in caplog.text
    assert "split folder" in source.layout_reason
    assert "layout='covid-qu-ex'" in repr(source)


@pytest.mark.shared_data
def test_real_qu_ex_val_folder_gives_one_record_per_radiograph(covid_qu_ex_dir: Path) -> None:
    source = _open(covid_qu_ex_dir / "Val")
    assert source.layout == "covid-qu-ex"
    assert len(source) == 932
    assert not [entry.name for entry in source.entries if "masks" in entry.name]


@pytest.mark.shared_data
def test_real_qu_ex_root_with_a_split(covid_qu_ex_dir: Path) -> None:
    assert len(_open(covid_qu_ex_dir, split="Val")) == 932


# -- other known layouts ---------------------------------------------------------------


def test_class_folders_are_recognised(classes_folder: Path) -> None:
    source = _open(classes_folder)
    assert source.layout == "classes"
    assert source.classes == ("covid-19", "normal", "pneumonia")


def test_split_folders_holding_class_folders_read_every_split(make: Any, tmp_path: Path) -> None:
    make.classes_folder(tmp_path / "cxr" / "train", {"COVID": 2, "Normal": 1})
    make.classes_folder(tmp_path / "cxr" / "test", {"COVID": 1, "Normal": 1})
    source = _open(tmp_path / "cxr")
    assert source.layout == "classes"
    assert len(source) == 5
    assert sorted(dict(e.meta)["split"] for e in source.entries) == ["test"] * 2 + ["train"] * 3
    assert len(_open(tmp_path / "cxr", split="test")) == 2


def test_radiography_database_layout_is_recognised(make: Any, tmp_path: Path) -> None:
    root = tmp_path / "COVID-19_Radiography_Dataset"
    for index, folder in enumerate(("COVID", "Normal")):
        _write(root / folder / "images" / "a.png", make.encode(make.gradient(seed=index)))
        mask = np.zeros((48, 48), np.uint8)
        mask[4:40, 4:40] = 255
        _write(root / folder / "masks" / "a.png", make.encode(mask))
    source = _open(root)
    assert source.layout == "covid-radiography"
    assert len(source) == 2


def test_ieee8023_layout_is_recognised(make: Any, tmp_path: Path) -> None:
    _write(tmp_path / "images" / "a.png", make.encode(make.gradient()))
    (tmp_path / "metadata.csv").write_text(
        "patientid,finding,view,modality,folder,filename\n1,COVID-19,PA,X-ray,images,a.png\n"
    )
    source = _open(tmp_path)
    assert source.layout == "ieee8023"
    assert [x.label for x in source] == ["covid-19"]


def test_names_that_fit_two_layouts_are_an_error_listing_both(
    qu_ex_folder: Path, make: Any
) -> None:
    make.classes_folder(qu_ex_folder, {"COVID": 1})
    with pytest.raises(ConfigurationError, match="more than one layout") as info:
        _open(qu_ex_folder)
    assert "layout='covid-qu-ex'" in str(info.value)
    assert "layout='classes'" in str(info.value)


# -- unlabelled folders and masks ------------------------------------------------------


def test_a_folder_without_class_folders_is_read_unlabelled_and_recursively(
    make: Any, tmp_path: Path
) -> None:
    root = tmp_path / "new-scans"
    _write(root / "a.png", make.encode(make.gradient(seed=1)))
    _write(root / "ward 2" / "2024" / "b.jpg", make.encode(make.gradient(seed=2), ".jpg"))
    _write(root / "ward 2" / "masks" / "b.png", make.encode(np.zeros((48, 48), np.uint8)))
    (root / "notes.txt").write_text("not an image")
    source = _open(root)
    assert source.layout == "unlabelled"
    assert source.classes == ()
    xrays = list(source)
    assert [Path(x.id).relative_to(root).as_posix() for x in xrays] == [
        "a.png",
        "ward 2/2024/b.jpg",
    ]
    assert [x.label for x in xrays] == [None, None]


def test_unknown_folders_beside_class_folders_still_ask_for_label_aliases(
    classes_folder: Path, make: Any
) -> None:
    make.classes_folder(classes_folder, {"Tuberculosis": 1})
    with pytest.raises(UnknownLabelError, match="label_aliases"):
        _open(classes_folder)


@pytest.mark.parametrize("name", ["lung masks", "infection masks", "masks", "Lung_Masks"])
def test_a_folder_of_masks_is_refused(make: Any, tmp_path: Path, name: str) -> None:
    _write(tmp_path / name / "a.png", make.encode(make.gradient()))
    with pytest.raises(SourceError, match="segmentation masks"):
        _open(tmp_path / name)


def test_binary_images_are_refused_as_masks_unless_asked_for(make: Any, tmp_path: Path) -> None:
    mask = np.zeros((48, 48), np.uint8)
    mask[10:30, 10:30] = 255
    for index in range(4):
        _write(tmp_path / "export" / f"m{index}.png", make.encode(mask))
    with pytest.raises(SourceError, match="look like segmentation masks"):
        _open(tmp_path / "export")
    assert len(_open(tmp_path / "export", layout="unlabelled")) == 4


def test_blank_images_are_not_taken_for_masks(make: Any, tmp_path: Path) -> None:
    _write(tmp_path / "scans" / "a.png", make.encode(np.zeros((48, 48), np.uint8)))
    assert _open(tmp_path / "scans").layout == "unlabelled"


def test_detect_layout_works_from_names_alone() -> None:
    names = ["Test/Normal/images/n.png", "Train/COVID-19/images/c.png", "README.md"]
    detected = detect_layout(names, where="qu-ex")
    assert (detected.layout, detected.split) == ("covid-qu-ex", None)
    assert "Train, Test" in detected.reason
    with pytest.raises(SourceError, match="no images found"):
        detect_layout(["README.md"], where="docs")


def test_loose_images_beside_class_folders_are_not_left_out_silently(
    classes_folder: Path, make: Any
) -> None:
    _write(classes_folder / "stray.png", make.encode(make.gradient()))
    with pytest.raises(ConfigurationError, match="more than one layout") as info:
        _open(classes_folder)
    assert "layout='unlabelled'" in str(info.value)
    assert len(_open(classes_folder, layout="classes")) == 5


def test_mask_folders_skipped_in_an_unlabelled_folder_are_named(qu_ex_folder: Path) -> None:
    source = _open(qu_ex_folder / "Train" / "COVID-19")
    assert source.layout == "unlabelled"
    assert len(source) == 2
    assert "mask folders ['infection masks', 'lung masks'] skipped" in source.layout_reason


@pytest.mark.parametrize("layout", ["auto", "classes"])
def test_mask_folders_inside_class_folders_are_not_radiographs(
    classes_folder: Path, make: Any, layout: str
) -> None:
    mask = np.zeros((48, 48), np.uint8)
    mask[8:40, 8:40] = 255
    _write(classes_folder / "COVID" / "lung masks" / "img_0.png", make.encode(mask))
    _write(classes_folder / "Normal" / "masks" / "x.png", make.encode(mask))
    source = _open(classes_folder, layout=layout)
    assert len(source) == 5
    assert not [entry.name for entry in source.entries if "mask" in entry.name]
