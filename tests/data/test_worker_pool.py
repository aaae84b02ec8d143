"""Worker processes are kept between preprocessing runs, replaced when broken, let go idle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from covidcxr.preprocess import (
    BatchStats,
    GaussianClahePreprocessor,
    preprocess_batch,
    release_workers,
)
from covidcxr.preprocess import _batch as batch_module
from covidcxr.preprocess import _workers as workers_module
from covidcxr.sources import FolderSource
from covidcxr.sources import _folder as folder_module

PREPROCESSOR = GaussianClahePreprocessor(output_size=32)
METHOD = batch_module._start_method(None)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _fresh_pools() -> Iterator[None]:
    release_workers()
    yield
    release_workers()


def _worker_pids() -> set[int]:
    """The pids of the 2-worker pool (started if need be), from tasks run on it."""
    pool = workers_module.borrow_pool(2, METHOD, batch_module._worker_init)
    futures = [pool.submit(os.getpid) for _ in range(16)]
    pids = {future.result() for future in futures}
    pool.give_back(futures)
    return pids


def _run(
    source: FolderSource,
    *,
    cache_dir: str | None = None,
    stats: BatchStats | None = None,
    start_method: str | None = None,
) -> list[str]:
    batch = preprocess_batch(
        source,
        PREPROCESSOR,
        workers=2,
        cache_dir=cache_dir,
        stats=stats,
        start_method=start_method,
        progress=False,
    )
    return [x.id for x in batch]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A worker is the forkserver's child, which reaps it; until then it may linger
    # as a zombie. It can be reaped between the two checks, so a missing or
    # vanishing /proc entry also means it is gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state.startswith("Z")


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_runs_in_a_process_reuse_its_workers(classes_folder: Path) -> None:
    source = FolderSource(classes_folder)
    expected = [x.id for x in preprocess_batch(source, PREPROCESSOR, workers=0, progress=False)]
    assert _run(source) == expected
    pool = workers_module._pools[(2, METHOD)]
    before = _worker_pids()
    assert _run(source) == expected
    after = _worker_pids()
    assert workers_module._pools[(2, METHOD)] is pool
    # The executor starts workers as work comes, up to 2: new pools would show new pids.
    assert len(before | after) <= 2
    assert not any(_gone(pid) for pid in before)


def test_release_workers_ends_them_and_the_next_run_starts_new_ones(
    classes_folder: Path,
) -> None:
    source = FolderSource(classes_folder)
    _run(source)
    before = _worker_pids()
    assert release_workers() == 1
    assert _wait_for(lambda: all(_gone(pid) for pid in before))
    assert _run(source)
    assert _worker_pids().isdisjoint(before)


def test_a_worker_killed_between_runs_costs_no_run(classes_folder: Path) -> None:
    source = FolderSource(classes_folder)
    expected = _run(source)
    pids = _worker_pids()
    os.kill(next(iter(pids)), signal.SIGKILL)
    pool = workers_module._pools[(2, METHOD)]
    assert _wait_for(lambda: not pool.usable)  # the executor notices the death
    assert _run(source) == expected
    assert (2, METHOD) in workers_module._pools
    assert workers_module._pools[(2, METHOD)] is not pool


def test_an_idle_pool_is_shut_down(classes_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers_module, "IDLE_SECONDS", 0.2)
    _run(FolderSource(classes_folder))
    pids = _worker_pids()
    assert _wait_for(lambda: (2, METHOD) not in workers_module._pools)
    assert _wait_for(lambda: all(_gone(pid) for pid in pids))


def test_an_abandoned_run_hands_its_workers_back(classes_folder: Path) -> None:
    batch = preprocess_batch(
        FolderSource(classes_folder), PREPROCESSOR, workers=2, chunk_size=1, progress=False
    )
    assert next(batch) is not None
    assert workers_module._pools[(2, METHOD)].users == 1
    batch.close()  # type: ignore[attr-defined]
    assert workers_module._pools[(2, METHOD)].users == 0


def test_kept_workers_see_what_earlier_runs_cached(
    qu_ex_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that indexed the cache in one run finds what was sealed after it.

    Touching the files changes their fingerprints, so the main process cannot answer from
    remembered digests: the workers read the files, hash them and look the cache up.
    """
    monkeypatch.setattr(folder_module, "RACY_SECONDS", 0.0)
    cache = str(tmp_path / "cache")
    source = FolderSource(qu_ex_folder, layout="covid-qu-ex")
    first = BatchStats()
    ids = _run(source, cache_dir=cache, stats=first)
    assert (first.cache_hits, first.cache_writes) == (0, len(ids))
    for path in qu_ex_folder.rglob("*.png"):
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    second = BatchStats()
    again = FolderSource(qu_ex_folder, layout="covid-qu-ex")
    assert _run(again, cache_dir=cache, stats=second) == ids
    assert (second.cache_hits, second.memo_hits, second.cache_writes) == (len(ids), 0, 0)


def test_a_forked_child_starts_its_own_workers(classes_folder: Path) -> None:
    """A caller that forks after a run: the child must not borrow the parent's pool.

    Its management thread did not survive the fork, so a run in the child would wait for
    results forever; with the pools forgotten at the fork it starts its own. (``spawn``:
    a child cannot use the forkserver its parent started, a limit of multiprocessing.)
    """
    source = FolderSource(classes_folder)
    expected = _run(source, start_method="spawn")
    parent_pool = workers_module._pools[(2, "spawn")]
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        code = 1
        try:
            if not workers_module._pools and _run(source, start_method="spawn") == expected:
                code = 0
        except BaseException:  # noqa: BLE001 - shown, then reported by the exit status
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child's run did not finish in 120 s")
    assert os.waitstatus_to_exitcode(status) == 0
    assert workers_module._pools[(2, "spawn")] is parent_pool  # the parent keeps its own
    assert _run(source, start_method="spawn") == expected


_KILLED_PARENT = """
import os, sys
import numpy as np
from covidcxr.preprocess import GaussianClahePreprocessor, preprocess_batch
from covidcxr.preprocess import _batch, _workers
from covidcxr.records import XRay

if __name__ == "__main__":
    images = [XRay(id=str(i), pixels=np.full((40, 40), i, np.uint8)) for i in range(4)]
    list(preprocess_batch(images, GaussianClahePreprocessor(output_size=32), workers=2,
                          start_method=sys.argv[1], progress=False))
    pool = _workers._pools[(2, sys.argv[1])]
    print(" ".join(str(pid) for pid in pool.executor._processes), flush=True)
    sys.stdin.read()  # kept alive, workers idle, until killed
"""


@pytest.mark.parametrize("method", ["spawn", METHOD])
def test_workers_exit_when_their_parent_is_killed(tmp_path: Path, method: str) -> None:
    """``kill -9`` of a process with a pool leaves no worker waiting for work forever."""
    script = tmp_path / "parent.py"
    script.write_text(_KILLED_PARENT)
    parent = subprocess.Popen(
        [sys.executable, str(script), method],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert workers, "the parent started no workers"
        assert not any(_gone(pid) for pid in workers)
    finally:
        parent.kill()
        parent.wait()
    assert _wait_for(lambda: all(_gone(pid) for pid in workers), 20.0)
