"""Specification of covidcxr.open_source for what users have: files, lists, patterns, folders."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

import covidcxr
from covidcxr.errors import ConfigurationError, SourceError
from covidcxr.sources import FilesSource, FolderSource, SkippedItemsWarning


@pytest.fixture
def scans(make: Any, tmp_path: Path) -> Path:
    """``scans/a.png``, ``scans/b.jpg``, ``scans/old/c.png``: loose, unlabelled."""
    root = tmp_path / "scans"
    (root / "old").mkdir(parents=True)
    (root / "a.png").write_bytes(make.encode(make.gradient(seed=1)))
    (root / "b.jpg").write_bytes(make.encode(make.gradient(seed=2), ".jpg"))
    (root / "old" / "c.png").write_bytes(make.encode(make.gradient(seed=3)))
    return root


def test_a_single_image_file_is_a_source_of_one_unlabelled_radiograph(scans: Path) -> None:
    source = covidcxr.open_source(scans / "a.png")
    xrays = list(source)
    assert len(source) == 1
    assert [(x.id, x.label) for x in xrays] == [(str(scans / "a.png"), None)]
    assert source.classes == ()


def test_a_single_file_is_read_whatever_its_name(make: Any, tmp_path: Path) -> None:
    # DICOM files often have no suffix; public datasets ship WebP named .jpg.
    (tmp_path / "IM0001").write_bytes(make.dicom(make.gradient(dtype=np.uint16)))
    webp = cv2.imencode(".webp", make.gradient())[1].tobytes()
    (tmp_path / "scan.jpg").write_bytes(webp)
    assert next(iter(covidcxr.open_source(tmp_path / "IM0001"))).meta["format"] == "dicom"
    assert next(iter(covidcxr.open_source(str(tmp_path / "scan.jpg")))).meta["format"] == "webp"


def test_several_files_are_read_in_the_order_given(scans: Path) -> None:
    source = covidcxr.open_source([scans / "old" / "c.png", str(scans / "a.png")])
    assert [Path(x.id).name for x in source] == ["c.png", "a.png"]


def test_a_sequence_of_one_path_is_that_path(classes_folder: Path) -> None:
    source = covidcxr.open_source([classes_folder])
    assert isinstance(source, FolderSource)
    assert source.classes == ("covid-19", "normal", "pneumonia")


def test_folders_in_a_sequence_give_every_image_below_them(scans: Path, make: Any) -> None:
    other = scans.parent / "more"
    other.mkdir()
    (other / "d.png").write_bytes(make.encode(make.gradient(seed=4)))
    source = covidcxr.open_source([other, scans / "old"])
    assert [Path(x.id).name for x in source] == ["d.png", "c.png"]


def test_a_linked_folder_outside_a_listed_folder_is_reported(scans: Path, make: Any) -> None:
    other = scans.parent / "more"
    other.mkdir()
    (other / "d.png").write_bytes(make.encode(make.gradient(seed=4)))
    (scans / "old" / "linked").symlink_to(other, target_is_directory=True)
    with pytest.warns(SkippedItemsWarning, match="linked"):
        source = covidcxr.open_source([scans / "a.png", scans / "old"])
    assert isinstance(source, FilesSource)
    assert [Path(x.id).name for x in source] == ["a.png", "c.png"]
    [skipped] = source.skipped
    assert skipped.path == str(scans / "old" / "linked")
    assert "outside" in skipped.reason


def test_a_glob_pattern_is_expanded_recursively_and_sorted(scans: Path) -> None:
    source = covidcxr.open_source(f"{scans}/**/*.png")
    assert [Path(x.id).relative_to(scans).as_posix() for x in source] == ["a.png", "old/c.png"]
    assert len(covidcxr.open_source([f"{scans}/*.jpg", scans / "a.png"])) == 2


def test_a_pattern_matching_nothing_is_a_source_error(scans: Path) -> None:
    with pytest.raises(SourceError, match=r"\*\.dcm: no file matches"):
        covidcxr.open_source(f"{scans}/*.dcm")


def test_a_missing_path_is_a_source_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"absent\.png: no such file or folder"):
        covidcxr.open_source(tmp_path / "absent.png")
    # Whatever the options: a mistyped dataset folder is not "files with a split".
    with pytest.raises(SourceError, match=r"qu-ex: no such file or folder"):
        covidcxr.open_source(tmp_path / "qu-ex", layout="covid-qu-ex", split="Val")


def test_archives_cannot_be_mixed_with_loose_files(scans: Path, tmp_path: Path) -> None:
    archive = tmp_path / "cxr.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.write(scans / "a.png", "a.png")
    with pytest.raises(SourceError, match="open it on its own"):
        covidcxr.open_source([scans / "a.png", archive])


def test_loose_files_have_no_layout_or_split(scans: Path) -> None:
    with pytest.raises(ConfigurationError, match="no layout"):
        FilesSource(scans / "a.png", layout="classes")
    with pytest.raises(ConfigurationError, match="no splits"):
        FilesSource(scans / "a.png", split="Val")


def test_loose_files_are_read_by_worker_processes_and_fingerprinted(scans: Path) -> None:
    source = FilesSource([scans / "a.png"])
    (entry,) = source.entries
    reader = source.item_reader()
    assert reader(entry).image == (scans / "a.png").read_bytes()
    assert source.record_id(entry) == str(scans / "a.png")


def test_unreadable_loose_files_follow_the_error_policy(scans: Path) -> None:
    (scans / "broken.png").write_text("not a png")
    source = FilesSource([scans / "broken.png", scans / "a.png"], on_error="skip")
    with pytest.warns(covidcxr.sources.SkippedItemsWarning):
        assert [Path(x.id).name for x in source] == ["a.png"]
    assert [Path(s.path).name for s in source.skipped] == ["broken.png"]
