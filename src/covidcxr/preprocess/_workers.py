"""Worker processes kept between preprocessing runs, and let go when idle.

Starting a worker process is not free: with ``forkserver`` or ``spawn``, each worker runs
the caller's main module again (what ``multiprocessing`` does so that functions defined
there can be found), and a script that imports :class:`~covidcxr.Pipeline` imports
scikit-learn with it. Measured on two cores, that is about 1.1 s and 2 CPU-seconds per
:func:`~covidcxr.preprocess.preprocess_batch` call, a fifth of a pass over COVID-QU-Ex's
5,826 images. So runs borrow their pool from here: the first run with ``n`` workers and a
start method starts it, later runs in the process reuse it, and a pool nobody has used for
:data:`IDLE_SECONDS` is shut down (its workers' memory returned), as joblib's reusable
executor does. :func:`release_workers` shuts them down at once.

A pool is shared by every run that asks for the same worker count and start method, even
runs that overlap (a ``ProcessPoolExecutor`` takes work from several threads); a run
waits, when it ends, for the tasks it started, and cancels those not begun. A pool a
worker died in (killed, out of memory) is broken: it is dropped, and the next run starts a
new one. A process forked by the caller does not inherit the pools: it starts its own. A worker
whose parent dies (``kill -9``, a crash) exits at once instead of lingering, as
multiprocessing's own workers otherwise would.
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.connection
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor, wait
from typing import Any, Final

__all__ = ["IDLE_SECONDS", "WorkerPool", "borrow_pool", "release_workers"]

#: Seconds an unused pool is kept before its workers are shut down.
IDLE_SECONDS: Final = 120.0

_lock = threading.Lock()
_pools: dict[tuple[int, str], WorkerPool] = {}


def _forget_after_fork() -> None:
    """In a child the caller forked: the parent's pools are not this process's to use.

    Their management threads did not survive the fork, so a run borrowing one would
    wait forever; the child starts its own pools, and leaves the parent's workers alone.
    """
    global _lock  # noqa: PLW0603 - a lock held by another thread at the fork stays held
    _lock = threading.Lock()
    _pools.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def _exit_with_parent() -> None:
    """In a worker: wait until the process that started it is gone, then exit.

    A pool's workers are started with a pipe from the parent; when the parent dies,
    killed or crashed, without shutting its pool down, the pipe's end closes and the
    worker would otherwise wait for work forever (with its start-up server and
    multiprocessing's resource tracker).
    """
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return
    multiprocessing.connection.wait([parent.sentinel])
    os._exit(1)  # no clean-up to run: the parent that would want the results is gone


def _start_worker(initializer: Callable[[], None]) -> None:
    """A worker's first step: watch for its parent's death, then ``initializer``."""
    threading.Thread(target=_exit_with_parent, name="covidcxr-parent-watch", daemon=True).start()
    initializer()


class WorkerPool:
    """A process pool of a given size and start method, shared by the runs that use it.

    Obtain one with :func:`borrow_pool`; hand it back with :meth:`give_back`.
    """

    def __init__(self, workers: int, method: str, initializer: Callable[[], None]) -> None:
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            # The worker code is imported once, in the server; workers fork with it loaded.
            context.set_forkserver_preload(["covidcxr.preprocess._batch"])
        self.key = (workers, method)
        self.executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=functools.partial(_start_worker, initializer),
        )
        self.users = 0
        self.broken = False
        self._timer: threading.Timer | None = None

    @property
    def usable(self) -> bool:
        """Neither dropped nor broken (a worker that died while it was idle breaks it)."""
        # ProcessPoolExecutor marks itself broken, without a public attribute, once its
        # manager thread sees a worker gone.
        return not self.broken and not getattr(self.executor, "_broken", False)

    def submit(self, job: Callable[[], Any]) -> Future[Any]:
        """Run ``job`` in a worker."""
        return self.executor.submit(job)

    def give_back(self, futures: Iterable[Future[Any]], *, broken: bool = False) -> None:
        """End a run: cancel its tasks not begun, wait for the rest, keep or drop the pool.

        Parameters
        ----------
        futures
            The run's tasks.
        broken
            A worker died during the run: the pool is shut down and forgotten.
        """
        pending = [future for future in futures if not future.cancel()]
        wait(pending)
        with _lock:
            self.users -= 1
            if broken or self.broken:
                self._drop()
            elif self.users == 0:
                self._timer = threading.Timer(IDLE_SECONDS, self._close_if_idle)
                self._timer.daemon = True
                self._timer.start()

    def _close_if_idle(self) -> None:
        with _lock:
            if self.users == 0:
                self._drop()

    def _drop(self) -> None:
        """Forget the pool and shut it down (called with the lock held)."""
        self.broken = True
        if _pools.get(self.key) is self:
            del _pools[self.key]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.users == 0:
            # Idle workers exit at once; at interpreter exit multiprocessing runs their
            # finalizers either way.
            self.executor.shutdown(wait=False, cancel_futures=True)


def borrow_pool(workers: int, method: str, initializer: Callable[[], None]) -> WorkerPool:
    """The pool of ``workers`` processes started with ``method``, started if need be.

    Every borrowed pool must be handed back with :meth:`WorkerPool.give_back`.
    """
    with _lock:
        pool = _pools.get((workers, method))
        if pool is None or not pool.usable:
            if pool is not None:
                pool._drop()
            pool = _pools[(workers, method)] = WorkerPool(workers, method, initializer)
        if pool._timer is not None:
            pool._timer.cancel()
            pool._timer = None
        pool.users += 1
        return pool


def release_workers() -> int:
    """Shut down the worker processes kept for preprocessing runs.

    Runs in progress keep theirs until they end. The next run with workers starts a new
    pool. Pools are shut down anyway after two minutes unused; call this to return the
    workers' memory sooner.

    Returns
    -------
    int
        How many pools were shut down.

    Examples
    --------
    >>> from covidcxr.preprocess import release_workers
    >>> release_workers() >= 0
    True
    """
    with _lock:
        pools = list(_pools.values())
        for pool in pools:
            pool._drop()
    return len(pools)
