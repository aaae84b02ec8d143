"""A read-only or full file system: a one-line error before the work, never a traceback after.

Real file systems where the machine allows it (a tmpfs, remounted read-only or filled up;
a folder without write permission when not running as root, since root ignores
permissions); everywhere, the same refusals simulated by making ``os.open`` and
``os.mkdir`` fail with ``EROFS`` below one folder, which works as root too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from covidcxr import XRay, files
from covidcxr.errors import OutputError
from covidcxr.pipeline import Pipeline
from covidcxr.plugins import available_classifiers

from .conftest import run_cli as run

pytestmark = pytest.mark.usefixtures("test_components")

MOUNT, UMOUNT = shutil.which("mount") or "", shutil.which("umount") or ""


def train_args(source: Path, out: Path, config: Path) -> list[str]:
    return ["train", str(source), "--out", str(out), "--config", str(config)]


def one_line_error(err: str) -> str:
    # Notices about the toy training set (no input gate on 9 images) are not the error.
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1, err  # one line, no traceback
    assert lines[0].startswith("error: cannot write "), err
    return lines[0]


@pytest.fixture
def saved_model(tmp_path: Path, test_config: dict[str, Any], phantom_train: list[XRay]) -> Path:
    return Pipeline(test_config).fit(phantom_train).save(tmp_path / "saved-model")


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training, predicting and evaluating fail the test: the refusal must come first."""

    def work(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the work started before the output location was checked")

    for name in ("fit", "iter_predict", "predict", "_evaluation_pass"):
        monkeypatch.setattr(Pipeline, name, work)


@pytest.fixture
def read_only_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder below which nothing can be created (``EROFS``), simulated."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    real_open, real_mkdir = os.open, os.mkdir
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def below(path: Any) -> bool:
        return Path(os.fsdecode(path)).absolute().is_relative_to(folder)

    def refusing_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & writing and below(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    def refusing_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if below(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
        real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    monkeypatch.setattr(os, "mkdir", refusing_mkdir)
    return folder


# -- the library: the check, and refusals while writing ----------------------------------


def test_check_output_location_refuses_a_read_only_place(read_only_folder: Path) -> None:
    with pytest.raises(OutputError, match=r"cannot write .*model: the file system is read-only"):
        files.check_output_location(read_only_folder / "new" / "model")


def test_check_output_location_accepts_a_writable_place_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    files.check_output_location(tmp_path / "new" / "model")
    assert list(tmp_path.iterdir()) == []


def test_check_output_location_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        files.check_output_location(tmp_path / "a-file" / "model")


def test_a_full_disk_while_saving_is_an_output_error_and_the_old_model_stays(
    tmp_path: Path,
    test_config: dict[str, Any],
    phantom_train: list[XRay],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipeline = Pipeline(test_config).fit(phantom_train)
    target = pipeline.save(tmp_path / "model")
    before = (target / "pipeline.json").read_text()

    def disk_full(self: Any, path: str | os.PathLike[str]) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))

    monkeypatch.setattr(type(pipeline.classifier_), "save", disk_full)
    with pytest.raises(OutputError, match=r"cannot write .*model: the disk is full") as caught:
        pipeline.save(target, overwrite=True)
    assert caught.value.errno == errno.ENOSPC
    assert (target / "pipeline.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_refused_report_write_is_an_output_error(read_only_folder: Path) -> None:
    with (
        pytest.raises(OutputError, match="read-only"),
        files.output_directory(read_only_folder / "report", "report") as staging,
    ):
        files.write_text(staging / "report.md", "# Results")


# -- the command line: refused before the work, in one line ------------------------------


def test_train_on_a_read_only_place_fails_before_training_in_one_line(
    read_only_folder: Path,
    phantom_dir: Path,
    config_file: Path,
    no_work: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = read_only_folder / "model"
    code, _, err = run(train_args(phantom_dir, out, config_file), capsys)
    assert code == 1
    assert "read-only" in one_line_error(err)


def test_predict_output_on_a_read_only_place_fails_before_predicting(
    read_only_folder: Path,
    saved_model: Path,
    phantom_dir: Path,
    no_work: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = read_only_folder / "predictions.csv"
    code, _, err = run(["predict", str(saved_model), str(phantom_dir), "-o", str(output)], capsys)
    assert code == 1
    assert "read-only" in one_line_error(err)


def test_evaluate_report_on_a_read_only_place_fails_before_evaluating(
    read_only_folder: Path,
    saved_model: Path,
    phantom_dir: Path,
    no_work: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = read_only_folder / "report"
    code, _, err = run(["evaluate", str(saved_model), str(phantom_dir), "--report", str(report)],
                       capsys)  # fmt: skip
    assert code == 1
    assert "read-only" in one_line_error(err)


def test_detect_on_a_read_only_place_fails_before_detecting(
    read_only_folder: Path,
    phantom_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import covidcxr

    real_create = covidcxr.create_detector

    def create_detector(name: str, **options: Any) -> Any:
        detector = real_create(name, **options)

        def detect(xray: XRay) -> Any:
            raise AssertionError("detection started before the output location was checked")

        monkeypatch.setattr(detector, "detect", detect)
        return detector

    monkeypatch.setattr(covidcxr, "create_detector", create_detector)
    out = read_only_folder / "results"
    argv = [
        "detect",
        str(phantom_dir),
        "--out",
        str(out),
        "--detector",
        "test-fixed",
        "--no-progress",
    ]
    code, _, err = run(argv, capsys)
    assert code == 1
    assert "read-only" in one_line_error(err)


def test_demo_on_a_read_only_place_fails_before_training(
    read_only_folder: Path, no_work: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["demo", "--out", str(read_only_folder / "demo"), "--epochs", "1"], capsys)
    assert code == 1
    assert "read-only" in one_line_error(err)


def test_train_with_the_disk_filling_up_while_saving_fails_in_one_line(
    tmp_path: Path,
    phantom_dir: Path,
    config_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    softmax = available_classifiers()["test-softmax"].factory

    def disk_full(self: Any, path: str | os.PathLike[str]) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))

    monkeypatch.setattr(softmax, "save", disk_full)
    out = tmp_path / "model"
    code, _, err = run(train_args(phantom_dir, out, config_file), capsys)
    assert code == 1
    assert "the disk is full" in one_line_error(err)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["phantoms", "pipeline.toml"])


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() == 0,
    reason="root ignores permission bits, so a folder without write permission is writable "
    "to it; the EROFS simulation and the read-only tmpfs cover this case",
)
def test_train_into_a_folder_without_write_permission_fails_before_training(
    tmp_path: Path,
    phantom_dir: Path,
    config_file: Path,
    no_work: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        code, _, err = run(
            [
                "train",
                str(phantom_dir),
                "--out",
                str(locked / "model"),
                "--config",
                str(config_file),
            ],
            capsys,
        )
    finally:
        locked.chmod(0o755)
    assert code == 1
    assert "permission denied" in one_line_error(err)


# -- real file systems: a tmpfs, read-only or full ---------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Mount small tmpfs file systems (skips where mounting is not allowed)."""
    mounted: list[Path] = []

    def mount(size: str = "256k") -> Path:
        point = tmp_path / f"tmpfs-{len(mounted)}"
        point.mkdir()
        if not MOUNT or not UMOUNT:
            pytest.skip("no mount command here; the simulated EROFS and ENOSPC tests cover this")
        result = subprocess.run(
            [MOUNT, "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip(
                f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode}); "
                "the simulated EROFS and ENOSPC tests cover these cases"
            )
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run([UMOUNT, "-l", str(point)], check=False)


def remount_read_only(point: Path) -> None:
    subprocess.run([MOUNT, "-o", "remount,ro", str(point)], check=True)


def fill(point: Path, leave: int = 0) -> None:
    """Fill the file system at ``point``, then free ``leave`` bytes."""
    filler = point / "filler"
    with filler.open("wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:  # until the disk is full
            handle.write(b"\0" * 4096)
    if leave:
        os.truncate(filler, max(filler.stat().st_size - leave, 0))


def test_train_on_a_read_only_file_system_fails_before_training(
    tmpfs: Callable[..., Path],
    phantom_dir: Path,
    config_file: Path,
    no_work: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    point = tmpfs()
    remount_read_only(point)
    code, _, err = run(train_args(phantom_dir, point / "model", config_file), capsys)
    assert code == 1
    assert "read-only" in one_line_error(err)


def test_a_model_on_a_read_only_file_system_still_loads(
    tmpfs: Callable[..., Path], test_config: dict[str, Any], phantom_train: list[XRay]
) -> None:
    point = tmpfs()
    pipeline = Pipeline(test_config).fit(phantom_train)
    pipeline.save(point / "model")
    remount_read_only(point)
    assert Pipeline.load(point / "model").classes_ == pipeline.classes_
    with pytest.raises(OutputError, match="read-only"):
        pipeline.save(point / "model", overwrite=True)


def test_a_full_disk_is_refused_before_the_work(
    tmpfs: Callable[..., Path], test_config: dict[str, Any], phantom_train: list[XRay]
) -> None:
    point = tmpfs()
    pipeline = Pipeline(test_config).fit(phantom_train)
    pipeline.save(point / "model")
    fill(point)
    with pytest.raises(OutputError, match="the disk is full"):
        files.check_output_location(point / "model")
    with pytest.raises(OutputError, match="the disk is full"):
        pipeline.save(point / "model", overwrite=True)
    assert Pipeline.load(point / "model").classes_ == pipeline.classes_
    assert sorted(p.name for p in point.iterdir()) == ["filler", "model"]


def test_a_disk_filling_up_while_saving_keeps_the_old_model_and_no_staging(
    tmpfs: Callable[..., Path], test_config: dict[str, Any], phantom_train: list[XRay]
) -> None:
    point = tmpfs()
    pipeline = Pipeline(test_config).fit(phantom_train)
    pipeline.save(point / "model")
    before = (point / "model" / "pipeline.json").read_text()
    fill(point, leave=8192)  # room for the check, not for the model
    with pytest.raises(OutputError, match="the disk is full"):
        pipeline.save(point / "model", overwrite=True)
    assert (point / "model" / "pipeline.json").read_text() == before
    assert sorted(p.name for p in point.iterdir()) == ["filler", "model"]
