"""Directories written as a unit: replaced only when covidcxr wrote them, never the user's."""

from __future__ import annotations

import ctypes
import errno
import json
import os
from pathlib import Path

import pytest

from covidcxr import files
from covidcxr.errors import OutputExistsError
from covidcxr.files import (
    MARKER_NAME,
    check_new_files,
    check_output_directory,
    output_directory,
    write_text,
)

from ..conftest import assert_untouched, users_folder


def write_report_dir(path: Path, text: str = "# Results", *, overwrite: bool = False) -> None:
    with output_directory(path, "report", overwrite=overwrite) as staging:
        write_text(staging / "report.md", text)
        write_text(staging / "figures" / "roc.png", "png")


def test_a_written_directory_carries_a_marker_listing_what_covidcxr_wrote(tmp_path: Path) -> None:
    write_report_dir(tmp_path / "report")
    marker = json.loads((tmp_path / "report" / MARKER_NAME).read_text())
    assert marker["written_by"] == "covidcxr"
    assert marker["kind"] == "report"
    assert marker["covidcxr_version"]
    assert marker["files"] == ["figures/roc.png", "report.md"]


def test_a_directory_covidcxr_wrote_is_replaced_as_a_whole(tmp_path: Path) -> None:
    target = tmp_path / "report"
    write_report_dir(target)
    with output_directory(target, "report", overwrite=True) as staging:
        write_text(staging / "report.md", "# New")
    assert (target / "report.md").read_text() == "# New"
    assert not (target / "figures").exists()  # nothing stale from the first report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no staging or backup


def test_without_overwrite_a_directory_covidcxr_wrote_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "report"
    write_report_dir(target)
    with pytest.raises(OutputExistsError, match=r"already holds a report.*overwrite=True"):
        write_report_dir(target, "# New")
    assert (target / "report.md").read_text() == "# Results"


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_of_the_users_files_is_never_replaced(tmp_path: Path, overwrite: bool) -> None:
    target = users_folder(tmp_path / "results")
    with pytest.raises(OutputExistsError, match=r"results .*not written by covidcxr"):
        write_report_dir(target, overwrite=overwrite)
    assert_untouched(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no staging left


def test_a_users_file_added_to_a_written_directory_keeps_it_from_being_replaced(
    tmp_path: Path,
) -> None:
    target = tmp_path / "report"
    write_report_dir(target)
    (target / "figures" / "my-annotations.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"figures/my-annotations\.txt was not written"):
        write_report_dir(target, overwrite=True)
    assert (target / "figures" / "my-annotations.txt").read_text() == "mine"


def test_a_file_at_the_path_is_never_replaced(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.write_text("a user's file")
    with pytest.raises(OutputExistsError, match="is a file"):
        check_output_directory(target, "pipeline", overwrite=True)
    assert target.read_text() == "a user's file"


def test_a_symbolic_link_is_never_replaced_even_to_a_written_directory(tmp_path: Path) -> None:
    write_report_dir(tmp_path / "real")
    link = tmp_path / "report"
    link.symlink_to(tmp_path / "real")
    with pytest.raises(OutputExistsError, match="symbolic link"):
        write_report_dir(link, overwrite=True)
    assert link.is_symlink()


def test_a_symbolic_link_inside_is_not_covidcxrs(tmp_path: Path) -> None:
    target = tmp_path / "report"
    write_report_dir(target)
    (target / "data").symlink_to(users_folder(tmp_path / "elsewhere"))
    with pytest.raises(OutputExistsError, match="symbolic link"):
        write_report_dir(target, overwrite=True)
    assert_untouched(tmp_path / "elsewhere")


def test_a_directory_of_another_kind_is_not_replaced(tmp_path: Path) -> None:
    write_report_dir(tmp_path / "out")
    with pytest.raises(OutputExistsError, match="holds a covidcxr report, not a saved pipeline"):
        check_output_directory(tmp_path / "out", "pipeline", overwrite=True)


def test_an_empty_folder_may_hold_a_report_but_a_pipeline_needs_overwrite(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    check_output_directory(tmp_path / "empty", "report")
    with pytest.raises(OutputExistsError, match=r"already exists.*--overwrite"):
        check_output_directory(tmp_path / "empty", "pipeline")
    check_output_directory(tmp_path / "empty", "pipeline", overwrite=True)


def test_a_failure_while_writing_leaves_the_old_directory_and_no_staging(tmp_path: Path) -> None:
    target = tmp_path / "report"
    write_report_dir(target)

    def write_half_then_fail() -> None:
        with output_directory(target, "report", overwrite=True) as staging:
            write_text(staging / "report.md", "# Half")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_half_then_fail()
    assert (target / "report.md").read_text() == "# Results"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_a_failed_rename_into_place_puts_the_old_directory_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report"
    write_report_dir(target)
    real_rename = Path.rename
    # Where the system cannot exchange two folders atomically: the two renames.
    monkeypatch.setattr(files, "_exchange", lambda first, second: False)

    def failing_rename(self: Path, destination: str | os.PathLike[str]) -> Path:
        if self.name.endswith(".new"):  # the staging folder's move into place
            raise OSError("device went away")
        return real_rename(self, destination)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(OSError, match="device went away"):
        write_report_dir(target, "# New", overwrite=True)
    assert (target / "report.md").read_text() == "# Results"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_a_folder_users_files_appear_in_while_writing_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "report"

    def race() -> None:
        with output_directory(target, "report") as staging:
            write_text(staging / "report.md", "# Results")
            users_folder(target)  # the user fills the folder while the report is written

    with pytest.raises(OutputExistsError, match="not written by covidcxr"):
        race()
    assert_untouched(target)


# -- directories written before markers existed -----------------------------------------


def legacy_pipeline(path: Path) -> Path:
    (path / "classifier").mkdir(parents=True)
    (path / "classifier" / "model.json").write_text("{}")
    (path / "pipeline.json").write_text(json.dumps({"format": "covidcxr-pipeline"}))
    return path


def legacy_report(path: Path) -> Path:
    (path / "figures").mkdir(parents=True)
    for name in ("report.html", "report.md", "report.json", "figures/roc.png"):
        (path / name).write_text("old")
    return path


def test_a_pipeline_saved_before_markers_is_recognised(tmp_path: Path) -> None:
    check_output_directory(legacy_pipeline(tmp_path / "model"), "pipeline", overwrite=True)


def test_a_report_written_before_markers_is_recognised_and_replaced(tmp_path: Path) -> None:
    target = legacy_report(tmp_path / "report")
    write_report_dir(target, "# New", overwrite=True)
    assert (target / "report.md").read_text() == "# New"
    assert not (target / "report.html").exists()


def test_a_demo_written_before_markers_is_recognised(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    legacy_pipeline(demo / "model")
    legacy_report(demo / "report")
    check_output_directory(demo, "demo", overwrite=True)
    (demo / "thesis.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"thesis\.txt was not written by covidcxr"):
        check_output_directory(demo, "demo", overwrite=True)


@pytest.mark.parametrize(
    ("kind", "make", "extra"),
    [
        ("pipeline", legacy_pipeline, "notes.txt"),
        ("pipeline", legacy_pipeline, "sub/data.csv"),
        ("report", legacy_report, "thesis.txt"),
        ("report", legacy_report, "figures/data.csv"),
    ],
)
def test_an_old_layout_with_a_users_file_in_it_is_not_recognised(
    tmp_path: Path, kind: str, make: object, extra: str
) -> None:
    target = tmp_path / "out"
    make(target)  # type: ignore[operator]
    path = target / extra
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("mine")
    with pytest.raises(OutputExistsError, match="not written by covidcxr"):
        check_output_directory(target, kind, overwrite=True)  # type: ignore[arg-type]


def test_a_folder_named_like_a_pipeline_without_its_manifest_is_not_recognised(
    tmp_path: Path,
) -> None:
    target = tmp_path / "model"
    (target / "classifier").mkdir(parents=True)
    with pytest.raises(OutputExistsError, match=r"neither a covidcxr marker nor a pipeline\.json"):
        check_output_directory(target, "pipeline", overwrite=True)


# -- files written one by one into the user's folder ------------------------------------


def test_check_new_files_names_every_taken_path_before_anything_is_written(
    tmp_path: Path,
) -> None:
    (tmp_path / "b.png").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"b\.png already exists.*--overwrite"):
        check_new_files([tmp_path / "a.png", tmp_path / "b.png"])
    check_new_files([tmp_path / "a.png", tmp_path / "b.png"], overwrite=True)


def test_check_new_files_never_lets_a_file_replace_a_directory(tmp_path: Path) -> None:
    (tmp_path / "a.png").mkdir()
    with pytest.raises(OutputExistsError, match="is a directory"):
        check_new_files([tmp_path / "a.png"], overwrite=True)


def test_a_file_never_replaces_a_directory(tmp_path: Path) -> None:
    (tmp_path / "out.png").mkdir()
    with pytest.raises(OutputExistsError, match="is a directory"):
        write_text(tmp_path / "out.png", "x", overwrite=True)
    assert (tmp_path / "out.png").is_dir()


# -- the atomic exchange, and the two renames where there is none -----------------------


def test_on_linux_a_directory_is_replaced_by_one_atomic_exchange(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if files._renameat2() is None:
        pytest.skip("no renameat2 in this C library (or not Linux): the two renames are used")
    target = tmp_path / "report"
    write_report_dir(target)
    exchanged: list[bool] = []
    real_exchange = files._exchange

    def recording_exchange(first: Path, second: Path) -> bool:
        exchanged.append(real_exchange(first, second))
        return exchanged[-1]

    monkeypatch.setattr(files, "_exchange", recording_exchange)
    write_report_dir(target, "# New", overwrite=True)
    if exchanged != [True]:
        pytest.skip(f"this file system ({tmp_path}) does not support RENAME_EXCHANGE")
    assert (target / "report.md").read_text() == "# New"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_a_file_system_without_the_exchange_falls_back_to_two_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(*args: object) -> int:
        ctypes.set_errno(errno.EINVAL)  # what file systems without the exchange answer
        return -1

    monkeypatch.setattr(files, "_renameat2", lambda: unsupported)
    target = tmp_path / "report"
    write_report_dir(target)
    real_rename = Path.rename
    moved_aside: list[str] = []

    def recording_rename(self: Path, destination: str | os.PathLike[str]) -> Path:
        if self == target:
            moved_aside.append(Path(destination).name)
        return real_rename(self, destination)

    monkeypatch.setattr(Path, "rename", recording_rename)
    write_report_dir(target, "# New", overwrite=True)
    assert len(moved_aside) == 1
    assert moved_aside[0].endswith(".old")
    assert (target / "report.md").read_text() == "# New"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="file modes are POSIX")
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_new_file_mode_follows_the_umask_with_or_without_proc(
    umask: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = os.umask(umask)
    try:
        assert files.new_file_mode() == 0o666 & ~umask
        # Without /proc (macOS, BSD): the umask is read by setting it, and restored.
        monkeypatch.setattr(
            files,
            "Path",
            lambda name: Path("/nonexistent/proc" if name == "/proc/self/status" else name),
        )
        assert files.new_file_mode() == 0o666 & ~umask
        assert os.umask(umask) == umask
    finally:
        os.umask(previous)
