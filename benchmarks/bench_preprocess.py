"""Preprocessing throughput, cache speed-up and memory on the real COVID-QU-Ex images.

Measures, in one run, decode + Gaussian blur + CLAHE + resize to 224 (float32 output):

1. the plain per-image loop of the published notebook (``cv2.imread``, ``cvtColor``,
   ``GaussianBlur``, CLAHE ``apply``, ``resize``), in one process;
2. ``preprocess_batch`` over a ``FolderSource`` with 2 worker processes, no cache;
3. ``preprocess_batch`` with an empty on-disk cache (first pass), then again (second
   pass, served from the cache);
4. ``preprocess_batch`` over the set repeated 4 times (symbolic links in a temporary
   folder; the data is never copied), to show that memory does not grow with the dataset.

Peak RSS is sampled from ``/proc`` every 100 ms over the whole process tree (this process,
the forkserver and the workers): the figure is the largest *sum* seen, i.e. what the run
really held at once; this process's own ``ru_maxrss`` is reported too.

The machine is shared, so each run also records CPU time per image and run-queue wait
per image (``/proc/<pid>/schedstat``: time runnable but waiting for a core), and the
configurations are interleaved over ``--rounds`` rounds. Note that the plain loop is not
strictly single-core either: OpenCV parallelises CLAHE, blur and resize internally.

Before the rounds, an untimed warm-up runs the plain loop and the batch path once over the
Val split, so that every round measures the steady state. The one-time cost a process pays
on its first batch call (starting the forkserver that the worker processes fork from) is
timed separately, on one image, and reported as ``pool_start_seconds``.

Usage::

    nice -n 10 python benchmarks/bench_preprocess.py [--data PATH] [--workers 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from covidcxr.preprocess import BatchStats, GaussianClahePreprocessor, preprocess_batch
from covidcxr.sources import FolderSource

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(
    os.environ.get(
        "COVIDCXR_QU_EX",
        Path(__file__).resolve().parents[2] / "shared" / "data" / "covid-qu-ex",
    )
)
PAGE = os.sysconf("SC_PAGE_SIZE")


TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int] | None:
    """The children of ``pid``, from each of its threads' ``children`` file (Linux), or
    ``None`` where the kernel does not provide them."""
    try:
        threads = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []  # the process has gone
    found: list[int] = []
    for thread in threads:
        try:
            found.extend(int(child) for child in (thread / "children").read_text().split())
        except FileNotFoundError:
            return None
        except OSError:
            continue
    return found


def _all_children() -> dict[int, list[int]]:
    """Parent -> children for every process, by reading every ``/proc/<pid>/stat``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        children.setdefault(int(stat[stat.rfind(")") + 2 :].split()[1]), []).append(int(entry.name))
    return children


def _tree_usage(root_pid: int) -> tuple[int, dict[int, float], dict[int, float]]:
    """RSS (bytes) of a process and its descendants, each one's CPU seconds so far, and
    each one's seconds spent waiting for a CPU (run-queue wait, from schedstat).

    The tree is walked through the kernel's per-thread ``children`` lists, which reads a
    handful of files per sample instead of every process's ``stat`` (the sampler competes
    for the same two cores as what it measures); the full scan is the fallback.
    """
    table: dict[int, list[int]] | None = None
    total, stack = 0, [root_pid]
    tree_cpu: dict[int, float] = {}
    waits: dict[int, float] = {}
    while stack:
        pid = stack.pop()
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        tree_cpu[pid] = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
        try:
            # Nanoseconds on a CPU and waiting in the run queue (main thread of each process).
            waits[pid] = int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            waits[pid] = 0.0
        children = _children(pid) if table is None else table.get(pid, [])
        if children is None:
            table = _all_children()
            children = table.get(pid, [])
        stack.extend(children)
    return total, tree_cpu, waits


class TreeMonitor:
    """Samples the process tree's RSS and CPU time in a background thread.

    Peak RSS is the largest sum over the tree seen at one sample; CPU seconds are summed
    over every process of the tree, from its first to its last sample, minus what the
    sampling thread itself used (reading /proc is not free: ~2 ms per sample here).
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak = 0
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._first_wait: dict[int, float] = {}
        self._last_wait: dict[int, float] = {}
        self._sampling_cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        rss, cpu, waits = _tree_usage(os.getpid())
        self.peak = max(self.peak, rss)
        for pid, seconds in cpu.items():
            self._first.setdefault(pid, seconds if pid == os.getpid() else 0.0)
            self._last[pid] = seconds
        for pid, seconds in waits.items():
            self._first_wait.setdefault(pid, seconds if pid == os.getpid() else 0.0)
            self._last_wait[pid] = seconds

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._sampling_cpu = time.thread_time()
            self._stop.wait(self.interval)

    @property
    def runqueue_wait_seconds(self) -> float:
        """Seconds the tree's processes were runnable but waiting for a CPU (contention)."""
        return sum(self._last_wait[pid] - self._first_wait[pid] for pid in self._last_wait)

    @property
    def cpu_seconds(self) -> float:
        measured = sum(self._last[pid] - self._first[pid] for pid in self._last)
        return measured - self._sampling_cpu

    def __enter__(self) -> TreeMonitor:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def plain_loop(paths: list[Path]) -> int:
    """The published notebook's per-image loop."""
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    count = 0
    for path in paths:
        image = cv2.imread(str(path))
        assert image is not None, path
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        blurred = cv2.GaussianBlur(gray, (5, 5), 0)
        enhanced = clahe.apply(blurred)
        resized = cv2.resize(enhanced, (224, 224))
        _ = resized.astype(np.float32) / 255.0
        count += 1
    return count


def timed(label: str, run: Callable[[], int]) -> dict[str, Any]:
    with TreeMonitor() as monitor:
        start = time.perf_counter()
        count = run()
        seconds = time.perf_counter() - start
    result = {
        "images": count,
        "seconds": round(seconds, 3),
        "images_per_s": round(count / seconds, 1),
        "cpu_ms_per_image": round(1000 * monitor.cpu_seconds / count, 3),
        "runqueue_wait_ms_per_image": round(1000 * monitor.runqueue_wait_seconds / count, 3),
        "peak_rss_tree_mib": round(monitor.peak / 2**20, 1),
    }
    print(
        f"{label:<28} {count:>6} images {seconds:8.2f} s {result['images_per_s']:>8} img/s "
        f"{result['cpu_ms_per_image']:>7} CPU ms/img peak RSS {result['peak_rss_tree_mib']} MiB",
        flush=True,
    )
    return result


def _median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput, with every round's throughput beside it."""
    ordered = sorted(results, key=lambda run: run["images_per_s"])
    median = dict(ordered[(len(ordered) - 1) // 2])
    median["images_per_s_by_round"] = [run["images_per_s"] for run in results]
    return median


def consume(iterator: Iterator[Any]) -> int:
    return sum(1 for _ in iterator)


def repeated_tree(data: Path, times: int, into: Path) -> Path:
    """``into`` holding ``times`` symlinks per image, in the COVID-QU-Ex layout (no masks)."""
    for image in sorted(data.glob("*/*/images/*.png")):
        relative = image.relative_to(data)
        folder = into / relative.parent
        folder.mkdir(parents=True, exist_ok=True)
        for copy in range(times):
            (folder / f"r{copy}_{image.name}").symlink_to(image)
    return into


def warm_up(data: Path, paths: list[Path], preprocessor: Any, workers: int) -> float:
    """Time a process's first batch call (on one image), then warm both paths up on Val.

    The first call starts the forkserver: a fresh interpreter that imports OpenCV and
    NumPy once, for every later worker to fork from. It is timed on its own and kept out
    of the rounds, which compare steady states.
    """
    one_image = FolderSource(data, layout="covid-qu-ex", split="Test", load_masks=False)
    start = time.perf_counter()
    consume(
        preprocess_batch(
            itertools.islice(one_image, 1), preprocessor, workers=workers, progress=False
        )
    )
    seconds = time.perf_counter() - start
    plain_loop([path for path in paths if path.parts[-4] == "Val"])
    val = FolderSource(data, layout="covid-qu-ex", split="Val", load_masks=False)
    consume(preprocess_batch(val, preprocessor, workers=workers, progress=False))
    return round(seconds, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not (args.data / "Train").is_dir():
        sys.exit(f"COVID-QU-Ex not found at {args.data}; pass --data or set COVIDCXR_QU_EX")

    load_before = os.getloadavg()
    preprocessor = GaussianClahePreprocessor(output_size=224, output_dtype="float32")
    paths = sorted(args.data.glob("*/*/images/*.png"))
    source = FolderSource(args.data, layout="covid-qu-ex", load_masks=False)
    assert len(source) == len(paths)
    runs: dict[str, list[dict[str, Any]]] = {}

    def record(name: str, label: str, run: Callable[[], int]) -> dict[str, Any]:
        result = timed(label, run)
        runs.setdefault(name, []).append(result)
        return result

    def batch_run(items: Any, **options: Any) -> Callable[[], int]:
        return lambda: consume(
            preprocess_batch(items, preprocessor, workers=args.workers, progress=False, **options)
        )

    pool_start_seconds = warm_up(args.data, paths, preprocessor, args.workers)

    cache_mib = 0.0
    # Rounds interleave the configurations, so each round's ratios compare runs made under
    # the same (shared-machine) conditions; the medians over rounds are reported.
    for round_index in range(args.rounds):
        print(f"round {round_index + 1} of {args.rounds}", flush=True)
        record("plain_loop", "plain loop (notebook)", lambda: plain_loop(paths))
        record(
            "library_in_process",
            "library, in-process",
            lambda: consume(preprocess_batch(source, preprocessor, workers=0, progress=False)),
        )
        record("batch", f"batch, {args.workers} workers", batch_run(source))
        with tempfile.TemporaryDirectory(prefix="covidcxr-bench-cache-") as cache_dir:
            first_stats, second_stats = BatchStats(), BatchStats()
            first = record(
                "cache_first_pass",
                "batch + cache, 1st pass",
                batch_run(source, cache_dir=cache_dir, stats=first_stats),
            )
            second = record(
                "cache_second_pass",
                "batch + cache, 2nd pass",
                batch_run(source, cache_dir=cache_dir, stats=second_stats),
            )
            first["cache_writes"] = first_stats.cache_writes
            second["cache_hits"] = second_stats.cache_hits
            cache_mib = round(
                sum(p.stat().st_size for p in Path(cache_dir).rglob("*") if p.is_file()) / 2**20,
                1,
            )

    def ratio(numerator: str, denominator: str, key: str) -> float:
        values = [
            top[key] / bottom[key]
            for top, bottom in zip(runs[numerator], runs[denominator], strict=True)
        ]
        return float(round(statistics.median(values), 2))

    figures: dict[str, Any] = {name: _median_run(results) for name, results in runs.items()}
    figures["cache_size_mib"] = cache_mib
    with tempfile.TemporaryDirectory(prefix="covidcxr-bench-repeat-") as tree:
        repeated = FolderSource(
            repeated_tree(args.data, args.repeat, Path(tree)), layout="covid-qu-ex"
        )
        figures[f"batch_repeated_{args.repeat}x"] = timed(
            f"batch, set x{args.repeat}",
            lambda: consume(
                preprocess_batch(repeated, preprocessor, workers=args.workers, progress=False)
            ),
        )

    rep = figures[f"batch_repeated_{args.repeat}x"]["peak_rss_tree_mib"]
    one = max(run["peak_rss_tree_mib"] for run in runs["batch"])
    batch_cpu = figures["batch"]["cpu_ms_per_image"]
    batch_over_plain = ratio("batch", "plain_loop", "images_per_s")
    cached_speedup = ratio("cache_first_pass", "cache_second_pass", "seconds")
    summary = {
        "rounds": args.rounds,
        "pool_start_seconds": pool_start_seconds,
        "batch_over_plain": batch_over_plain,
        "batch_over_plain_by_round": [
            round(b["images_per_s"] / p["images_per_s"], 2)
            for b, p in zip(runs["batch"], runs["plain_loop"], strict=True)
        ],
        # How long the batch run's processes waited for a CPU, per CPU-second they got:
        # near 0 on an idle machine, above 1 when other work holds the cores.
        "batch_runqueue_wait_per_cpu_second": round(
            figures["batch"]["runqueue_wait_ms_per_image"] / batch_cpu, 2
        ),
        "cached_pass_speedup": cached_speedup,
        "cached_pass_speedup_by_round": [
            round(f["seconds"] / s["seconds"], 1)
            for f, s in zip(runs["cache_first_pass"], runs["cache_second_pass"], strict=True)
        ],
        "cached_pass_over_uncached_batch": ratio("batch", "cache_second_pass", "seconds"),
        "peak_rss_mib_1x": one,
        f"peak_rss_mib_{args.repeat}x": rep,
        "main_process_ru_maxrss_mib": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        ),
        "targets": {
            "batch_over_plain >= 1.5": batch_over_plain >= 1.5,
            "cached_pass_speedup >= 10": cached_speedup >= 10,
            "peak_rss < 1024 MiB": max(one, rep) < 1024,
            f"rss {args.repeat}x within 10% of 1x": rep <= one * 1.1,
        },
    }
    environment = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "python": platform.python_version(),
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "workers": args.workers,
        "images": len(paths),
        "preprocessor": preprocessor.cache_token(),
    }
    RESULTS.mkdir(exist_ok=True)
    payload = {"figures": figures, "summary": summary, "environment": environment}
    (RESULTS / "preprocess.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / "preprocess.md").write_text(markdown(payload))
    print(json.dumps(summary, indent=2))


def markdown(payload: dict[str, Any]) -> str:
    figures, summary, env = payload["figures"], payload["summary"], payload["environment"]
    rows = [
        "| run (median round) | images | seconds | images/s | images/s, every round "
        "| CPU ms / image | run-queue wait ms / image | peak RSS, process tree (MiB) |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for name, figure in figures.items():
        if isinstance(figure, dict):
            rows.append(
                f"| {name} | {figure['images']} | {figure['seconds']} | {figure['images_per_s']} "
                f"| {', '.join(str(v) for v in figure.get('images_per_s_by_round', []))} "
                f"| {figure['cpu_ms_per_image']} | {figure['runqueue_wait_ms_per_image']} "
                f"| {figure['peak_rss_tree_mib']} |"
            )
    targets = "\n".join(
        f"- {name}: {'met' if met else 'NOT met'}" for name, met in summary["targets"].items()
    )
    return (
        "# Preprocessing benchmark (COVID-QU-Ex, decode + blur + CLAHE + resize 224)\n\n"
        + "\n".join(rows)
        + f"\n\nMedians over {summary['rounds']} interleaved rounds (ratios are taken within a "
        "round, then the median is reported).\n\n"
        f"- batch / plain loop: **{summary['batch_over_plain']}x** measured (by round: "
        f"{summary['batch_over_plain_by_round']}); the batch run's processes waited "
        f"{summary['batch_runqueue_wait_per_cpu_second']} s in the run queue per CPU-second "
        "they ran (near 0 when nothing else runs)\n"
        f"- cached second pass: **{summary['cached_pass_speedup']}x** faster than the first "
        f"(by round: {summary['cached_pass_speedup_by_round']}; the first writes the cache), "
        f"{summary['cached_pass_over_uncached_batch']}x faster than the uncached batch "
        f"(cache size {figures['cache_size_mib']} MiB)\n"
        f"- main process ru_maxrss: {summary['main_process_ru_maxrss_mib']} MiB\n"
        f"- first batch call of a process (starts the forkserver), one image: "
        f"{summary['pool_start_seconds']} s, not in the rounds (an untimed warm-up precedes "
        "them)\n\n"
        f"Targets:\n{targets}\n\n"
        f"Environment: {env['cpu_count']} CPUs, load average {env['load_average_before']} before, "
        f"{env['load_average_after']} after (a shared machine), Python {env['python']}, "
        f"OpenCV {env['opencv']}, {env['workers']} workers, {env['date_utc']}.\n\n"
        f"Command: `{env['command']}`\n"
    )


if __name__ == "__main__":
    main()
