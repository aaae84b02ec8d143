"""A save killed (SIGKILL) at any moment leaves the old or the new model at the path.

Each test saves a pipeline, then runs a child process that saves another one over it with
``overwrite=True`` and kills itself with ``SIGKILL`` at one moment of the save. The path
must then load as a complete pipeline, the old one or the new one; the next save must
succeed; and nothing the killed save staged may be left, beside the path or in the
system's temporary folder.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from covidcxr import XRay, files
from covidcxr.files import MARKER_NAME
from covidcxr.pipeline import Pipeline

pytestmark = pytest.mark.usefixtures("test_components")

HERE = Path(__file__).resolve().parent
SOURCE_ROOT = Path(files.__file__).resolve().parent.parent

OLD_EPOCHS, NEW_EPOCHS = 3, 7

# The child: fits a small pipeline with NEW_EPOCHS once, then for each line on its stdin
# (path, moment, temporary folder) forks a process that saves the pipeline over the path and
# kills itself with SIGKILL at that moment (patched in, so the library itself carries no
# test hooks). It answers each line with the forked process's wait status, once it is dead
# and reaped. Forking spares each moment the seconds of a fresh interpreter's imports and fit.
CHILD = textwrap.dedent(
    """
    import os, signal, sys, tempfile, traceback
    from pathlib import Path

    sys.path.insert(0, sys.argv[1])
    import conftest
    from covidcxr import files
    from covidcxr.phantoms import generate_phantoms
    from covidcxr.pipeline import Pipeline
    from covidcxr.plugins import register_plugin

    register_plugin(conftest.ComponentsPlugin(), name="pipeline-test-components")
    config = {**conftest.TEST_CONFIG, "classifier": {"name": "test-softmax", "epochs": 7}}
    pipeline = Pipeline(config).fit(generate_phantoms(12, size=64, seed=0))

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    def save_and_die(target, moment):
        if moment == "while-writing":
            def half_then_die(self, path):
                Path(path).mkdir(parents=True)
                (Path(path) / "model.json").write_text('{"params": ')
                die()
            conftest.SoftmaxClassifier.save = half_then_die
        elif moment == "before-swap":
            files._swap_into_place = die
        elif moment == "between-renames":
            # Where the system has no atomic exchange: the old directory is moved aside,
            # then the new one is moved in. Die between the two.
            files._exchange = lambda first, second: False
            real_rename = Path.rename
            def rename(self, destination):
                if self.name.endswith(".new"):
                    die()
                return real_rename(self, destination)
            Path.rename = rename
        elif moment in ("after-exchange", "after-renames"):
            if moment == "after-renames":
                files._exchange = lambda first, second: False
            files._discard_replaced = die
        elif moment == "while-removing-the-old":
            real_remove = files._remove_tree
            def remove_some_then_die(folder):
                (folder / "classifier" / "model.json").unlink()
                die()
            files._remove_tree = remove_some_then_die
        else:
            raise SystemExit(f"unknown moment {moment}")
        pipeline.save(target, overwrite=True)

    print("ready", flush=True)
    for line in sys.stdin:
        target, moment, temporary = line.rstrip("\\n").split("\\t")
        pid = os.fork()
        if pid == 0:
            try:
                os.environ["TMPDIR"] = temporary
                tempfile.tempdir = None  # read TMPDIR again
                save_and_die(Path(target), moment)
                print("the save finished: the moment was never reached", file=sys.stderr)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(3)
        print(os.waitpid(pid, 0)[1], flush=True)
    """
)


@attrs.frozen
class SaveKiller:
    """The running child (see :data:`CHILD`) and the file its error output goes to."""

    process: subprocess.Popen[str]
    errors: Path

    def kill_during_save(self, target: Path, moment: str, tmp_path: Path) -> Path:
        """A process killed at ``moment`` of a save over ``target``; its temporary folder."""
        temporary = tmp_path / "child-tmp"
        temporary.mkdir()
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(f"{target}\t{moment}\t{temporary}\n")
        self.process.stdin.flush()
        answered, _, _ = select.select([self.process.stdout], [], [], 300)
        status = self.process.stdout.readline() if answered else ""
        assert status.strip(), f"no answer from the child: {self.errors.read_text()[-3000:]}"
        assert os.WIFSIGNALED(int(status)), self.errors.read_text()[-3000:]
        assert os.WTERMSIG(int(status)) == signal.SIGKILL, self.errors.read_text()[-3000:]
        return temporary


@pytest.fixture(scope="module")
def save_killer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaveKiller]:
    folder = tmp_path_factory.mktemp("save-killer")
    script = folder / "child.py"
    script.write_text(CHILD)
    errors = folder / "stderr.txt"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(SOURCE_ROOT), os.environ.get("PYTHONPATH")])
        ),
    }
    with errors.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(script), str(HERE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            text=True,
        )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n", errors.read_text()[-3000:]
        yield SaveKiller(process, errors)
    finally:
        process.kill()
        process.communicate()


def epochs_of(target: Path) -> Any:
    return json.loads((target / "classifier" / "model.json").read_text())["params"]["epochs"]


@pytest.fixture
def old_model(
    tmp_path: Path, test_config: dict[str, Any], phantom_train: list[XRay]
) -> tuple[Path, Pipeline]:
    test_config["classifier"]["epochs"] = OLD_EPOCHS
    pipeline = Pipeline(test_config).fit(phantom_train)
    target = tmp_path / "models" / "model"
    pipeline.save(target)
    return target, pipeline


@pytest.mark.parametrize(
    ("moment", "expected_epochs"),
    [
        ("while-writing", OLD_EPOCHS),
        ("before-swap", OLD_EPOCHS),
        ("between-renames", OLD_EPOCHS),
        ("after-exchange", NEW_EPOCHS),
        ("after-renames", NEW_EPOCHS),
        ("while-removing-the-old", NEW_EPOCHS),
    ],
)
def test_a_save_killed_at_any_moment_leaves_a_complete_model_and_no_leftovers(
    old_model: tuple[Path, Pipeline],
    save_killer: SaveKiller,
    tmp_path: Path,
    moment: str,
    expected_epochs: int,
) -> None:
    target, pipeline = old_model
    temporary = save_killer.kill_during_save(target, moment, tmp_path)

    loaded = Pipeline.load(target)  # puts back a model moved aside, removes leftovers

    assert epochs_of(target) == expected_epochs
    assert loaded.classes_ == pipeline.classes_
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]
    assert list(temporary.iterdir()) == []  # no model copy in the system's temporary folder
    pipeline.save(target, overwrite=True)  # and the next save is not blocked
    assert epochs_of(target) == OLD_EPOCHS
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]


def test_the_next_save_recovers_too_without_a_load_first(
    old_model: tuple[Path, Pipeline], save_killer: SaveKiller, tmp_path: Path
) -> None:
    target, pipeline = old_model
    save_killer.kill_during_save(target, "between-renames", tmp_path)
    assert not target.exists()  # the old model is beside the path, not at it

    with pytest.raises(FileExistsError, match="already holds a saved pipeline"):
        pipeline.save(target)  # put back: it is there again, so not replaced silently
    assert epochs_of(target) == OLD_EPOCHS
    pipeline.save(target, overwrite=True)
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]


def test_the_staging_of_a_save_running_in_another_live_process_is_left_alone(
    old_model: tuple[Path, Pipeline],
) -> None:
    target, _ = old_model
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        staging = target.with_name(f".model.{sleeper.pid}@{files._HOST}.0123abcd.new")
        (staging / "classifier").mkdir(parents=True)
        (staging / "classifier" / "model.json").write_text("{}")
        (staging / MARKER_NAME).write_text(
            json.dumps({"written_by": "covidcxr", "kind": "pipeline", "state": "staging"})
        )
        Pipeline.load(target)
        files.recover_output_directory(target, "pipeline")
        assert staging.is_dir()  # its save is still running
    finally:
        sleeper.kill()
        sleeper.wait()
    files.recover_output_directory(target, "pipeline")
    assert not staging.exists()  # its process is gone: a leftover


def test_a_folder_of_the_users_files_named_like_a_leftover_is_never_removed(
    old_model: tuple[Path, Pipeline],
) -> None:
    target, pipeline = old_model
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    for role in ("new", "old", "del"):
        folder = target.with_name(f".model.{dead.stdout.strip()}@{files._HOST}.0123abcd.{role}")
        folder.mkdir()
        (folder / "thesis.txt").write_text("three years of work")
    pipeline.save(target, overwrite=True)
    leftovers = sorted(p.name for p in target.parent.iterdir() if p.name != "model")
    assert len(leftovers) == 3
    for name in leftovers:
        assert (target.parent / name / "thesis.txt").read_text() == "three years of work"


def age(folder: Path, seconds: float) -> None:
    then = time.time() - seconds
    for root, dirs, names in os.walk(folder):
        for name in [*dirs, *names]:
            os.utime(Path(root) / name, (then, then))
    os.utime(folder, (then, then))


def test_a_model_an_earlier_version_moved_aside_as_model_old_is_put_back(
    old_model: tuple[Path, Pipeline],
) -> None:
    target, _ = old_model
    backup = target.with_name(".model.old")
    target.rename(backup)
    age(backup, 3600)  # long quiet: no save of an earlier version is still running

    Pipeline.load(target)

    assert epochs_of(target) == OLD_EPOCHS
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]


def test_leftovers_of_an_earlier_version_are_removed_once_quiet(
    old_model: tuple[Path, Pipeline],
) -> None:
    target, pipeline = old_model
    for name in (".model.1a2b3c4d.old", ".model.k3j_x9q2.new"):
        folder = target.with_name(name)
        (folder / "classifier").mkdir(parents=True)
        (folder / "classifier" / "model.json").write_text("{}")
        (folder / "pipeline.json").write_text(json.dumps({"format": "covidcxr-pipeline"}))
    age(target.with_name(".model.1a2b3c4d.old"), 3600)
    recent = target.with_name(".model.k3j_x9q2.new")  # it may be a running save's

    pipeline.save(target, overwrite=True)

    assert sorted(p.name for p in target.parent.iterdir()) == [recent.name, "model"]
    age(recent, 3600)
    pipeline.save(target, overwrite=True)
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]
