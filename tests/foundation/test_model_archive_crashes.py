"""A model file save killed with SIGKILL leaves no copy in the temporary folder, and its
staging beside the file is removed by the next save or load of that file."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from covidcxr import files
from covidcxr._model_archive import ArchiveFormat, read_model_archive, write_model_archive

SOURCE_ROOT = Path(files.__file__).resolve().parent.parent
FORMAT = ArchiveFormat("covidcxr.test-model", 1, "test model")

# The child writes an archive over the file; the "Keras model" is a large blob, and the
# child is killed (SIGKILL) after writing it, before the archive is complete.
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from covidcxr._model_archive import ArchiveFormat, write_model_archive

    def save_then_die(path):
        Path(path).write_bytes(b"k" * 2_000_000)
        os.kill(os.getpid(), signal.SIGKILL)

    write_model_archive(sys.argv[1], ArchiveFormat("covidcxr.test-model", 1, "test model"),
                        save_then_die, {}, overwrite=True)
    raise SystemExit("the save finished")
    """
)


def write_blob(path: Path) -> None:
    path.write_bytes(b"the old model")


@pytest.fixture(scope="module")
def killed_save_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An archive, and a child killed while saving another over it; (archive, its TMPDIR).

    One child for the module: tests that change what it left work on copies.
    """
    tmp_path = tmp_path_factory.mktemp("killed-save")
    target = tmp_path / "models" / "detector.cxr"
    target.parent.mkdir()
    write_model_archive(target, FORMAT, write_blob, {}, overwrite=False)
    temporary = tmp_path / "child-tmp"
    temporary.mkdir()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    path = [str(SOURCE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "TMPDIR": str(temporary)}
    child = subprocess.run(
        [sys.executable, str(script), str(target)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    return target, temporary


@pytest.fixture
def killed_save(killed_save_once: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A copy of what the killed save left: the archive's folder and its TMPDIR."""
    target, temporary = killed_save_once
    models = shutil.copytree(target.parent, tmp_path / "models")
    return models / target.name, shutil.copytree(temporary, tmp_path / "child-tmp")


def test_a_killed_model_save_leaves_no_copy_in_the_temporary_folder(
    killed_save: tuple[Path, Path],
) -> None:
    _, temporary = killed_save
    assert list(temporary.iterdir()) == []


def test_the_next_load_removes_what_a_killed_model_save_staged_beside_the_file(
    killed_save: tuple[Path, Path], tmp_path: Path
) -> None:
    target, _ = killed_save
    assert len(list(target.parent.iterdir())) > 1  # the staged model, beside the file

    _, extracted = read_model_archive(target, FORMAT, tmp_path / "scratch")

    assert extracted.read_bytes() == b"the old model"
    assert [p.name for p in target.parent.iterdir()] == ["detector.cxr"]


def test_the_next_save_removes_what_a_killed_model_save_staged_beside_the_file(
    killed_save: tuple[Path, Path],
) -> None:
    target, _ = killed_save
    write_model_archive(target, FORMAT, write_blob, {"n": 2}, overwrite=True)
    assert [p.name for p in target.parent.iterdir()] == ["detector.cxr"]
    with zipfile.ZipFile(target) as archive:
        assert archive.read("model.keras") == b"the old model"


def test_a_staged_file_of_a_live_process_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "detector.cxr"
    with files.staged_file(target, ".keras") as staged:
        staged.write_bytes(b"a save in progress")
        files.remove_stale_files(target)  # this process is alive: its file stays
        assert staged.read_bytes() == b"a save in progress"
    assert list(tmp_path.iterdir()) == []
