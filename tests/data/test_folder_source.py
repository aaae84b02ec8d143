"""Specification of FolderSource and the dataset layouts."""

from __future__ import annotations

import csv
import itertools
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import covidcxr
from covidcxr.errors import ConfigurationError, InvalidImageError, SourceError, UnknownLabelError
from covidcxr.records import Box
from covidcxr.sources import FolderSource, SkippedItemsWarning, mask_boxes

from .conftest import write_classes_folder


def test_class_folders_map_case_and_alias_tolerantly(classes_folder: Path) -> None:
    source = FolderSource(classes_folder)
    assert len(source) == 5
    assert source.classes == ("covid-19", "normal", "pneumonia")
    labels = [str(xray.label) for xray in source]
    assert sorted(labels) == ["covid-19", "covid-19", "normal", "normal", "pneumonia"]


def test_iteration_is_stable_and_repeatable(classes_folder: Path) -> None:
    source = FolderSource(classes_folder)
    first = [(xray.id, xray.pixels.tobytes()) for xray in source]
    second = [(xray.id, xray.pixels.tobytes()) for xray in source]
    assert first == second


def test_records_carry_their_path(classes_folder: Path) -> None:
    xray = next(iter(FolderSource(classes_folder)))
    assert Path(xray.meta["path"]).is_file()
    assert xray.id == xray.meta["path"]


def test_unknown_class_folder_is_an_error_listing_what_was_found(
    classes_folder: Path, make: Any
) -> None:
    make.classes_folder(classes_folder, {"Tuberculosis": 1})
    with pytest.raises(UnknownLabelError) as info:
        FolderSource(classes_folder)
    message = str(info.value)
    assert "Tuberculosis" in message
    assert "'COVID'" in message
    assert "'Viral Pneumonia'" in message
    assert "label_aliases" in message


def test_label_aliases_override_and_extend_the_mapping(classes_folder: Path, make: Any) -> None:
    make.classes_folder(classes_folder, {"Tuberculosis": 1})
    source = FolderSource(classes_folder, label_aliases={"tuberculosis": "pneumonia"})
    assert sum(xray.label == "pneumonia" for xray in source) == 2


def test_missing_folder_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such folder"):
        FolderSource(tmp_path / "absent")


def test_folder_without_images_is_a_source_error(tmp_path: Path) -> None:
    (tmp_path / "COVID").mkdir()
    (tmp_path / "COVID" / "readme.txt").write_text("no images here")
    with pytest.raises(SourceError, match="no images found"):
        FolderSource(tmp_path)


def test_broken_image_raises_by_default_naming_it(classes_folder: Path) -> None:
    (classes_folder / "COVID" / "broken.png").write_text("not a png")
    with pytest.raises(InvalidImageError, match=r"broken\.png"):
        list(FolderSource(classes_folder))


def test_skip_records_broken_items_and_warns_with_a_count(classes_folder: Path) -> None:
    (classes_folder / "COVID" / "broken.png").write_text("not a png")
    (classes_folder / "NORMAL" / "empty.png").write_bytes(b"")
    source = FolderSource(classes_folder, on_error="skip")
    assert len(source) == 7
    with pytest.warns(SkippedItemsWarning, match="skipped 2 of 7"):
        xrays = list(source)
    assert len(xrays) == 5
    assert len(source) == 5
    reasons = {Path(item.path).name: item.reason for item in source.skipped}
    assert set(reasons) == {"broken.png", "empty.png"}
    assert "empty" in reasons["empty.png"]


def test_images_in_formats_it_does_not_read_are_reported_not_ignored(
    classes_folder: Path,
) -> None:
    (classes_folder / "COVID" / "scan.tif").write_bytes(b"II*\x00")  # never opened
    (classes_folder / "NORMAL" / "scan.BMP").write_bytes(b"BM")
    (classes_folder / "NORMAL" / "notes.txt").write_text("not an image, not reported")
    # Of 7 images found (5 read, 2 not): the notes are not counted, in this warning or in
    # the one about unreadable images, so the two totals agree.
    with pytest.warns(SkippedItemsWarning, match=r"skipped 2 of 7 item\(s\)") as caught:
        source = FolderSource(classes_folder)
    assert len(source) == 5
    # Named by their paths, as the images read are (and as unreadable ones are skipped).
    reasons = {
        Path(item.path).relative_to(classes_folder).as_posix(): item.reason
        for item in source.skipped
    }
    assert [item.path for item in source.skipped] == [
        str(classes_folder / "COVID" / "scan.tif"),
        str(classes_folder / "NORMAL" / "scan.BMP"),
    ]
    assert reasons["COVID/scan.tif"].startswith("TIF images are not read: convert it to PNG")
    assert "PNG, JPEG, WebP and DICOM" in reasons["NORMAL/scan.BMP"]
    # The console gets the count without the pointer to a Python attribute.
    (warning,) = [w.message for w in caught if isinstance(w.message, SkippedItemsWarning)]
    assert "skipped attribute" in str(warning)
    assert warning.console_text.endswith(
        "skipped 2 of 7 item(s) (images in formats it does not read, or left out by the layout)"
    )


def test_the_two_skip_warnings_count_out_of_the_same_total(classes_folder: Path) -> None:
    (classes_folder / "COVID" / "scan.tif").write_bytes(b"II*\x00")
    (classes_folder / "COVID" / "broken.png").write_text("not a png")
    (classes_folder / "NORMAL" / "notes.txt").write_text("not an image")
    with pytest.warns(SkippedItemsWarning) as opened:
        source = FolderSource(classes_folder, on_error="skip")
    with pytest.warns(SkippedItemsWarning) as read:
        list(source)
    texts = [str(w.message) for w in [*opened, *read] if isinstance(w.message, SkippedItemsWarning)]
    assert [text.split(" item(s)")[0] for text in texts] == [
        f"{classes_folder}: skipped 1 of 7",
        f"{classes_folder}: skipped 1 of 7",
    ]


def test_unread_images_are_reported_only_where_the_layout_would_read_them(
    tmp_path: Path, qu_ex_folder: Path
) -> None:
    # A public dataset's layout: its masks and other splits are not the user's images.
    (qu_ex_folder / "Train" / "COVID-19" / "lung masks" / "x.tif").write_bytes(b"II*\x00")
    assert FolderSource(qu_ex_folder, split="Val").skipped == ()
    # Split folders of class folders: only the chosen split's files count.
    root = tmp_path / "splits"
    for split in ("train", "test"):
        write_classes_folder(root / split, {"COVID": 1, "NORMAL": 1})
        (root / split / "COVID" / "scan.tif").write_bytes(b"II*\x00")
    with pytest.warns(SkippedItemsWarning):
        source = FolderSource(root, split="train")
    assert [item.path for item in source.skipped] == [str(root / "train/COVID/scan.tif")]


def test_a_folder_of_only_unread_images_says_which_formats_it_found(tmp_path: Path) -> None:
    folder = tmp_path / "tiffs"
    folder.mkdir()
    for name in ("a.tif", "b.tiff", "c.bmp"):
        (folder / name).write_bytes(b"II*\x00")
    with pytest.raises(SourceError, match=r"3 file\(s\) are images in formats covidcxr does "
                       r"not read \(\.bmp, \.tif, \.tiff\): convert them to PNG"):  # fmt: skip
        FolderSource(folder)
    with pytest.raises(SourceError, match=r"layout 'unlabelled'; 3 file\(s\) are images"):
        FolderSource(folder, layout="unlabelled")


def test_skip_records_a_dicom_with_a_zero_window_width(classes_folder: Path, make: Any) -> None:
    bad = make.dicom(make.gradient(dtype=np.uint16), window=(2000.0, 0.0))
    (classes_folder / "COVID" / "zero_window.dcm").write_bytes(bad)
    source = FolderSource(classes_folder, on_error="skip")
    with pytest.warns(SkippedItemsWarning, match="skipped 1 of 6"):
        xrays = list(source)
    assert len(xrays) == 5
    [skipped] = source.skipped
    assert Path(skipped.path).name == "zero_window.dcm"
    assert "WindowWidth" in skipped.reason
    assert "zero_window" not in skipped.reason  # the path stands beside it, once


def test_a_class_folder_linked_from_inside_the_root_is_followed(
    classes_folder: Path, tmp_path: Path
) -> None:
    store = classes_folder / ".store"  # hidden, so only reached through the link
    (classes_folder / "Viral Pneumonia").rename(store)
    (classes_folder / "Viral Pneumonia").symlink_to(store, target_is_directory=True)
    source = FolderSource(classes_folder)
    assert len(source) == 5
    assert source.classes == ("covid-19", "normal", "pneumonia")
    assert source.skipped == ()
    ids = [xray.id for xray in source if str(xray.label) == "pneumonia"]
    assert ids == [str(classes_folder / "Viral Pneumonia" / "img_0.png")]


def test_a_class_folder_linked_from_outside_the_root_is_reported_not_dropped(
    classes_folder: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    (classes_folder / "Viral Pneumonia").rename(outside)
    link = classes_folder / "Viral Pneumonia"
    link.symlink_to(outside, target_is_directory=True)
    with pytest.warns(SkippedItemsWarning, match=r"symbolic link.*Viral Pneumonia"):
        source = FolderSource(classes_folder)
    assert len(source) == 4
    [skipped] = source.skipped
    assert skipped.path == str(link)
    assert "outside" in skipped.reason
    assert str(outside) in skipped.reason


def test_a_folder_link_that_loops_is_reported_once_and_not_followed(
    classes_folder: Path,
) -> None:
    (classes_folder / "COVID" / "again").symlink_to(classes_folder, target_is_directory=True)
    with pytest.warns(SkippedItemsWarning, match="symbolic link"):
        source = FolderSource(classes_folder)
    assert len(source) == 5
    [skipped] = source.skipped
    assert "loop" in skipped.reason


def test_on_error_must_be_raise_or_skip(classes_folder: Path) -> None:
    with pytest.raises(ConfigurationError, match="on_error"):
        FolderSource(classes_folder, on_error="ignore")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_pixels", "abc"),
        ("max_pixels", 0),
        ("min_side", -3),
        ("min_side", 32.5),
        ("min_lesion_area", 1.5),
        ("min_lesion_area", -1),
        ("load_masks", "yes"),
        ("label_aliases", 5),
        ("label_aliases", {"COVID": 1}),
        ("split", 5),
        ("split", ["Train", 2]),
        ("layout", 3),
    ],
)
def test_options_of_the_wrong_kind_are_refused_when_the_source_opens(
    classes_folder: Path, option: str, value: Any
) -> None:
    with pytest.raises(ConfigurationError, match=f"{option} must be"):
        FolderSource(classes_folder, **{option: value})


def test_hidden_and_non_image_files_are_ignored(classes_folder: Path) -> None:
    (classes_folder / "COVID" / ".DS_Store").write_bytes(b"\0\1")
    (classes_folder / "COVID" / "notes.txt").write_text("hello")
    assert len(FolderSource(classes_folder)) == 5


def test_classes_layout_with_split_folders(tmp_path: Path, make: Any) -> None:
    make.classes_folder(tmp_path / "train", {"covid": 2, "normal": 1})
    make.classes_folder(tmp_path / "test", {"covid": 1, "normal": 1})
    source = FolderSource(tmp_path, split="test")
    assert len(source) == 2
    assert {xray.meta["split"] for xray in source} == {"test"}


def test_jpeg_suffixes_beyond_jpg_are_read_not_dropped(tmp_path: Path, make: Any) -> None:
    # .jfif (what browsers save JPEGs as) was in neither the read list nor the
    # unread-formats list: left out, and reported nowhere.
    for folder, name in (("COVID", "a.jfif"), ("COVID", "b.jpe"), ("NORMAL", "c.png")):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / name).write_bytes(make.encode(make.gradient(), ".jpg"))
    source = FolderSource(tmp_path)
    assert sorted(Path(xray.id).name for xray in source) == ["a.jfif", "b.jpe", "c.png"]


def test_an_explicit_classes_layout_reports_images_in_no_class_folder(
    tmp_path: Path, make: Any
) -> None:
    image = make.encode(make.gradient())
    names = ["flat/COVID/a.png", "flat/NORMAL/b.png", "flat/loose.png"]
    names += ["splits/Test/COVID/c.png", "splits/Test/d.png", "splits/Train/COVID/e.png"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(image)
    with pytest.warns(SkippedItemsWarning, match="left out by the layout"):
        source = FolderSource(tmp_path / "flat", layout="classes")
    assert [(s.path, s.reason) for s in source.skipped] == [
        (str(tmp_path / "flat/loose.png"), "not in a class folder, so it has no label")
    ]
    with pytest.warns(SkippedItemsWarning, match="left out by the layout"):
        split = FolderSource(tmp_path / "splits", layout="classes", split="Test")
    assert [xray.label for xray in split] == ["covid-19"]
    # Not Train's: not asked for.
    assert [s.path for s in split.skipped] == [str(tmp_path / "splits/Test/d.png")]


def test_qu_ex_layout_reads_splits_masks_and_boxes(qu_ex_folder: Path) -> None:
    source = FolderSource(qu_ex_folder, layout="covid-qu-ex", split="Train")
    assert len(source) == 6
    by_label = {xray.label: xray for xray in source}
    covid = by_label["covid-19"]
    assert covid.meta["split"] == "Train"
    assert covid.boxes == (Box(4, 5, 6, 10), Box(30, 30, 14, 10))
    for key in ("infection_mask", "lung_mask"):
        mask = covid.meta[key]
        assert mask.dtype == np.uint8
        assert mask.shape == covid.shape
        assert set(np.unique(mask)) <= {0, 255}
    assert by_label["normal"].boxes == ()
    assert by_label["pneumonia"].boxes == ()
    assert by_label["pneumonia"].meta["annotated"] is True


def test_qu_ex_split_accepts_a_sequence_case_insensitively(qu_ex_folder: Path) -> None:
    source = FolderSource(qu_ex_folder, layout="covid-qu-ex", split=["val", "TEST"])
    assert {xray.meta["split"] for xray in source} == {"Val", "Test"}


def test_qu_ex_test_split_has_no_masks_and_says_so(qu_ex_folder: Path) -> None:
    xray = next(iter(FolderSource(qu_ex_folder, layout="covid-qu-ex", split="Test")))
    assert "infection_mask" not in xray.meta
    assert xray.meta["annotated"] is False


def test_qu_ex_read_without_masks_is_not_annotated(qu_ex_folder: Path) -> None:
    # Without the infection masks nothing says where the lesions are: empty boxes there
    # must not be scored as "no lesion".
    source = FolderSource(qu_ex_folder, layout="covid-qu-ex", split="Train", load_masks=False)
    covid = next(x for x in source if x.label == "covid-19")
    assert covid.boxes == ()
    assert covid.meta["annotated"] is False


def test_class_folders_carry_no_lesion_annotation(classes_folder: Path) -> None:
    assert all(xray.meta["annotated"] is False for xray in FolderSource(classes_folder))


def test_qu_ex_unknown_split_is_a_configuration_error(qu_ex_folder: Path) -> None:
    with pytest.raises(ConfigurationError, match="Validation"):
        FolderSource(qu_ex_folder, layout="covid-qu-ex", split="Validation")


def test_load_masks_false_reads_images_only(qu_ex_folder: Path) -> None:
    source = FolderSource(qu_ex_folder, layout="covid-qu-ex", split="Train", load_masks=False)
    assert all("infection_mask" not in xray.meta and not xray.boxes for xray in source)


def test_broken_mask_names_the_mask(qu_ex_folder: Path) -> None:
    mask = qu_ex_folder / "Val" / "COVID-19" / "infection masks" / "covid-19_0.png"
    mask.write_bytes(mask.read_bytes()[:30])
    with pytest.raises(InvalidImageError, match=r"covid-19_0\.png \(infection mask\)"):
        list(FolderSource(qu_ex_folder, layout="covid-qu-ex", split="Val"))


def test_radiography_layout_resizes_masks_to_the_image(tmp_path: Path, make: Any) -> None:
    for folder, name in (("COVID", "COVID-1.png"), ("Lung_Opacity", "Lung_Opacity-1.png")):
        (tmp_path / folder / "images").mkdir(parents=True)
        (tmp_path / folder / "masks").mkdir()
        (tmp_path / folder / "images" / name).write_bytes(make.encode(make.gradient(60, 60)))
        mask = np.zeros((40, 40), np.uint8)
        mask[10:30, 10:30] = 255
        (tmp_path / folder / "masks" / name).write_bytes(make.encode(mask))
    (tmp_path / "COVID.metadata.xlsx").write_bytes(b"PK\3\4 spreadsheet")
    source = FolderSource(tmp_path, layout="covid-radiography")
    xrays = list(source)
    assert [xray.label for xray in xrays] == ["covid-19", "pneumonia"]
    assert xrays[0].meta["lung_mask"].shape == (60, 60)
    assert xrays[0].boxes == ()


def _write_ieee(root: Path, make: Any, rows: list[dict[str, str]]) -> None:
    (root / "images").mkdir(parents=True)
    for index, row in enumerate(rows):
        if row.pop("_exists", "yes") == "yes":
            image = make.encode(make.gradient(seed=index))
            (root / "images" / row["filename"]).write_bytes(image)
    with (root / "metadata.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=["patientid", "finding", "view", "modality", "folder", "filename"]
        )
        writer.writeheader()
        writer.writerows(rows)


def test_ieee8023_layout_reads_patients_and_findings(tmp_path: Path, make: Any) -> None:
    base = {"modality": "X-ray", "folder": "images"}
    rows = [
        {
            "patientid": "2",
            "finding": "Pneumonia/Viral/COVID-19",
            "view": "PA",
            "filename": "a.png",
        },
        {"patientid": "2", "finding": "Pneumonia/Viral/COVID-19", "view": "L", "filename": "b.png"},
        {"patientid": "3", "finding": "No Finding", "view": "AP", "filename": "c.png"},
        {
            "patientid": "4",
            "finding": "Pneumonia/Bacterial/Strep",
            "view": "PA",
            "filename": "d.png",
        },
        {"patientid": "5", "finding": "Todo", "view": "PA", "filename": "e.png"},
        {"patientid": "6", "finding": "COVID-19", "view": "Axial", "filename": "f.png"},
        {"patientid": "7", "finding": "No Finding", "view": "PA", "filename": "g.png"},
    ]
    rows = [{**base, **row} for row in rows]
    rows[5]["modality"] = "CT"
    rows[6]["_exists"] = "no"
    _write_ieee(tmp_path, make, rows)
    with pytest.warns(SkippedItemsWarning, match="skipped 4"):
        source = FolderSource(tmp_path, layout="ieee8023")
    xrays = list(source)
    assert [(x.label, x.patient_id) for x in xrays] == [
        ("covid-19", "2"),
        ("normal", "3"),
        ("pneumonia", "4"),
    ]
    reasons = " | ".join(item.reason for item in source.skipped)
    for expected in ("not frontal", "'Todo' has no label", "'CT'", "not found"):
        assert expected in reasons


def test_ieee8023_short_row_is_a_source_error_naming_the_row(tmp_path: Path, make: Any) -> None:
    _write_ieee(tmp_path, make, [{"patientid": "1", "finding": "COVID-19", "filename": "a.png"}])
    with (tmp_path / "metadata.csv").open("a") as handle:
        handle.write("2\n")  # a row cut short: no finding, no filename
    with pytest.raises(SourceError, match=r"metadata\.csv: data row 2 has no finding or filename"):
        FolderSource(tmp_path, layout="ieee8023")


def test_open_source_reaches_folder_sources_with_options(qu_ex_folder: Path) -> None:
    source = covidcxr.open_source(str(qu_ex_folder), layout="covid-qu-ex", split="Val")
    assert isinstance(source, FolderSource)
    assert len(source) == 6


def test_mask_boxes_uses_eight_connectivity_and_min_area() -> None:
    mask = np.zeros((20, 20), np.uint8)
    mask[2, 2] = mask[3, 3] = 255  # diagonal neighbours: one component
    mask[10:14, 10:15] = 255
    assert mask_boxes(mask) == (Box(2, 2, 2, 2), Box(10, 10, 5, 4))
    assert mask_boxes(mask, min_area=3) == (Box(10, 10, 5, 4),)
    assert len(mask_boxes(mask, connectivity=4)) == 3


@pytest.mark.shared_data
def test_real_covid_qu_ex_train_images_have_lesion_boxes(covid_qu_ex_dir: Path) -> None:
    source = FolderSource(covid_qu_ex_dir, layout="covid-qu-ex", split="Train")
    assert len(source) == 3728
    assert source.classes == ("covid-19", "normal", "pneumonia")
    for xray in itertools.islice(source, 3):
        assert xray.label == "covid-19"
        assert xray.shape == (256, 256)
        assert xray.boxes
        assert xray.meta["infection_mask"].any()


@pytest.mark.shared_data
def test_real_covid_qu_ex_test_split_counts(covid_qu_ex_dir: Path) -> None:
    source = FolderSource(covid_qu_ex_dir, layout="covid-qu-ex", split="Test")
    assert len(source) == 1166


def test_dicom_files_without_a_suffix_are_read_by_their_content(
    classes_folder: Path, make: Any, tmp_path: Path
) -> None:
    pytest.importorskip("pydicom")
    scan = make.dicom(make.gradient(dtype=np.uint16))
    (classes_folder / "COVID" / "IM000001").write_bytes(scan)  # a PACS export's name
    (classes_folder / "NORMAL" / "1.2.840.113619.2.55.3").write_bytes(scan)  # named by UID
    (classes_folder / "NORMAL" / "DICOMDIR").write_bytes(scan)  # an index, not an image
    (classes_folder / "NORMAL" / "NOTES").write_text("not an image\n", encoding="utf-8")
    source = FolderSource(classes_folder)
    names = {Path(xray.id).name: xray for xray in source}
    assert len(source) == 7
    assert names["IM000001"].label == "covid-19"
    assert names["1.2.840.113619.2.55.3"].label == "normal"
    assert names["IM000001"].meta["format"] == "dicom"
    assert "DICOMDIR" not in names
    assert "NOTES" not in names
    # A folder named as loose files finds them too; so does a folder of only such files.
    assert len(covidcxr.open_source(str(classes_folder / "NORMAL"))) == 3
    only = tmp_path / "export"
    only.mkdir()
    (only / "IM000001").write_bytes(scan)
    assert [Path(x.id).name for x in covidcxr.open_source(str(only))] == ["IM000001"]
    assert [Path(x.id).name for x in covidcxr.open_source([str(only)])] == ["IM000001"]


def test_png_and_jpeg_saved_without_a_suffix_are_read_by_their_content(
    classes_folder: Path, make: Any, tmp_path: Path
) -> None:
    # Some viewers save without a suffix; before, such files were dropped in silence.
    (classes_folder / "COVID" / "export1").write_bytes(make.encode(make.gradient()))
    (classes_folder / "NORMAL" / "export2").write_bytes(make.encode(make.gradient(), ".jpg"))
    (classes_folder / "NORMAL" / "NOTES").write_text("not an image\n", encoding="utf-8")
    (classes_folder / "NORMAL" / "EMPTY").write_bytes(b"")
    source = FolderSource(classes_folder)
    names = {Path(xray.id).name: xray for xray in source}
    assert len(source) == 7
    assert "NOTES" not in names
    assert "EMPTY" not in names
    assert names["export1"].label == "covid-19"
    assert (names["export2"].label, names["export2"].meta["format"]) == ("normal", "jpeg")
    only = tmp_path / "viewer"
    only.mkdir()
    (only / "scan").write_bytes(make.encode(make.gradient()))
    assert [Path(x.id).name for x in covidcxr.open_source(str(only))] == ["scan"]


def test_a_skipped_item_whose_mask_is_broken_names_the_mask(tmp_path: Path, make: Any) -> None:
    root = tmp_path / "radiography"
    for name in ("0.png", "1.png"):
        for folder in ("images", "masks"):
            (root / "COVID" / folder).mkdir(parents=True, exist_ok=True)
            (root / "COVID" / folder / name).write_bytes(make.encode(make.gradient()))
    (root / "COVID" / "masks" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    source = FolderSource(root, layout="covid-radiography", on_error="skip")
    with pytest.warns(SkippedItemsWarning):
        assert len(list(source)) == 1
    [skipped] = source.skipped
    assert Path(skipped.path).name == "1.png"
    assert "mask" in skipped.reason  # the broken file is the mask, not the image


def test_a_named_pipe_in_a_folder_is_not_opened_for_sniffing(classes_folder: Path) -> None:
    # A FIFO without a suffix might be DICOM by its name; opening it to read would block
    # until something writes to it.
    pipe = classes_folder / "NORMAL" / "control"
    os.mkfifo(pipe)
    found: list[int] = []
    worker = threading.Thread(target=lambda: found.append(len(FolderSource(classes_folder))))
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # release the blocked open, then fail
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        worker.join()
    assert found == [5]
