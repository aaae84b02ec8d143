"""Safe writing: atomic replacement, and nothing the user owns overwritten unless asked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from covidcxr import files
from covidcxr.errors import OutputError, OutputExistsError
from covidcxr.files import (
    CHECKPOINT_LOCK_NAME,
    atomic_write,
    checkpoint_lock,
    file_batch,
    write_bytes,
    write_text,
)

from ..conftest import hold_in_another_process


def test_write_bytes_creates_missing_folders(tmp_path: Path) -> None:
    target = write_bytes(tmp_path / "a" / "b" / "model.bin", b"weights")
    assert target.read_bytes() == b"weights"


def test_an_existing_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    target = tmp_path / "mine.txt"
    target.write_text("the user's notes")
    with pytest.raises(OutputExistsError, match=r"mine\.txt already exists.*overwrite=True"):
        write_text(target, "ours")
    assert target.read_text() == "the user's notes"
    assert isinstance(OutputExistsError("x"), FileExistsError)


def test_overwrite_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    write_text(target, "old")
    write_text(target, "new", overwrite=True)
    assert target.read_text() == "new"


def test_a_failure_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "model.bin"
    target.write_bytes(b"old model")

    def write_half_then_fail() -> None:
        with atomic_write(target) as handle:
            handle.write(b"half a mod")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_half_then_fail()
    assert target.read_bytes() == b"old model"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.bin"]


def test_a_file_created_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "out.png"

    def race() -> None:
        with atomic_write(target, overwrite=False) as handle:
            handle.write(b"ours")
            target.write_bytes(b"someone else's")  # appears while we write

    with pytest.raises(OutputExistsError):
        race()
    assert target.read_bytes() == b"someone else's"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.png"]


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_replacing_keeps_the_files_permissions(tmp_path: Path) -> None:
    target = tmp_path / "shared.bin"
    target.write_bytes(b"v1")
    target.chmod(0o640)
    write_bytes(target, b"v2", overwrite=True)
    assert target.stat().st_mode & 0o777 == 0o640


def test_a_checkpoint_folder_is_held_by_one_process_and_freed_by_a_kill(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    holder = hold_in_another_process(folder)
    try:
        with (
            pytest.raises(OutputError, match=rf"another training process \(pid {holder.pid} on "),
            checkpoint_lock(folder),
        ):
            pass
    finally:
        holder.kill()  # kill -9: the system releases the lock with the process
        holder.wait()
    with checkpoint_lock(folder):  # free again; the lock file left behind holds nothing
        pass
    with checkpoint_lock(folder):  # and released after use
        pass


def test_a_lock_file_this_user_cannot_write_still_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl

    (tmp_path / CHECKPOINT_LOCK_NAME).write_text("pid 1 on elsewhere\n")
    real_open = os.open

    def another_users_file(path: Any, flags: int, *args: Any) -> int:
        if str(path).endswith(CHECKPOINT_LOCK_NAME) and flags & os.O_RDWR:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", another_users_file)
    with checkpoint_lock(tmp_path):
        monkeypatch.setattr(os, "open", real_open)
        other = os.open(tmp_path / CHECKPOINT_LOCK_NAME, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):  # held, through the read-only descriptor
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)


def test_a_read_only_folder_or_a_file_system_without_locks_trains_unlocked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import fcntl

    real_open = os.open

    def read_only(path: Any, flags: int, *args: Any) -> int:
        if str(path).endswith(CHECKPOINT_LOCK_NAME):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    with monkeypatch.context() as patch:
        patch.setattr(os, "open", read_only)
        with checkpoint_lock(tmp_path):  # a finished checkpoint there can still be read
            pass
    assert not (tmp_path / CHECKPOINT_LOCK_NAME).exists()

    def no_locks(descriptor: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="cannot lock files"), checkpoint_lock(tmp_path):
        pass


def test_a_batch_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    write_text(out / "a.png", "old a")
    write_text(out / "mine.txt", "the user's own")

    def write_both(overwrite: bool) -> None:
        with file_batch(out, overwrite=overwrite) as staging:
            write_text(staging / "b.png", "new b")
            write_text(staging / "a.png", "new a")

    with pytest.raises(OutputExistsError, match=r"a\.png already exists"):
        write_both(overwrite=False)
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "mine.txt"]  # nothing moved
    write_both(overwrite=True)
    assert {p.name: p.read_text() for p in out.iterdir()} == {
        "a.png": "new a",
        "b.png": "new b",
        "mine.txt": "the user's own",
    }


def test_a_batch_left_by_a_killed_process_is_removed_but_not_a_folder_named_like_one(
    tmp_path: Path,
) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    leftover = tmp_path / f".covidcxr-batch.{dead}@{files._HOST}.0123abcd.new"
    alike = tmp_path / f".covidcxr-batch.{dead}@{files._HOST}.4567abcd.new"
    with file_batch(tmp_path) as staging:
        staging.rename(leftover)  # as a kill -9 would leave it
        staging.mkdir()
    alike.mkdir()
    (alike / "thesis.txt").write_text("three years of work")
    with file_batch(tmp_path) as staging:
        write_text(staging / "a.png", "a")
    assert not leftover.exists()
    assert (alike / "thesis.txt").read_text() == "three years of work"
