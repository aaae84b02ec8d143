"""Preprocessing through the public API: ``open_source`` + ``Pipeline`` vs a plain loop.

Measures, in one run over the 5,826 COVID-QU-Ex images, decode + Gaussian blur + CLAHE +
resize to 224 (float32 output) as a user gets it and as a user would write it:

``plain_loop``
    The published notebook's per-image loop (``cv2.imread``, ``cvtColor``,
    ``GaussianBlur``, CLAHE ``apply``, ``resize``), in one process: the reference.
``pipeline_in_process``
    ``Pipeline.predict(open_source(data, layout="covid-qu-ex"))`` with ``workers=0`` and
    no cache.
``pipeline_workers``
    The same with ``workers=2`` (``--workers``).
``pipeline_cache_cold`` / ``pipeline_cache_warm``
    With ``workers=2`` and a fresh, empty ``cache_dir`` (the pass writes it), then again on
    that folder (answered from the cache).
``pipeline_repeated_4x``
    With ``workers=2`` and no cache, over the set repeated 4 times (symbolic links in a
    temporary folder; the data is never copied), to show that memory does not grow with
    the dataset: ``predict`` streams the prepared images through the model in chunks.

The pipeline's classifier is :class:`NoModel`, which learns nothing and answers constant
probabilities, and it has no detector and no input gate: what is measured is the
pipeline's data path (source, preprocessing, cache, per-item bookkeeping), which a model's
cost would hide. ``bench_pipeline.py`` measures the same path with a real model.

Peak RSS is sampled from ``/proc`` every 100 ms over the whole process tree (this process,
the forkserver and the workers): the figure is the largest *sum* seen over the processes
that ran during the run, i.e. what the run really held at once (worker processes kept idle
between runs are not charged to the runs that do not use them); this process's own
``ru_maxrss`` is reported too. Each pipeline run
also records the pipeline's ``data_stats_``: items, files read (reads per item: 1 on a
cold pass, 0 on a warm one, which answers from remembered digests), cache hits and writes.

The machine is shared, so each run also records CPU time per image (every thread) and
run-queue wait per image (``/proc/<pid>/schedstat``: time runnable but waiting for a core,
of each process's main thread only, so TensorFlow's and OpenCV's own threads are not
counted), and the
configurations are interleaved over ``--rounds`` rounds; medians are reported, ratios
being taken within each round. Note that the plain loop is not strictly single-core
either: OpenCV parallelises CLAHE, blur and resize internally.

Before the rounds, an untimed warm-up runs the plain loop and both pipelines once over the
Val split (each pipeline's ``fit`` is that warm-up pass). The one-time cost a process pays on
its first call with workers (starting the forkserver that the worker processes fork from,
and the worker processes, which later calls reuse) is timed separately, as a
``Pipeline.predict`` on one image, and reported as ``pool_start_seconds``.

Usage::

    nice -n 10 python benchmarks/bench_preprocess.py [--data PATH] [--workers 2]

Smoke run::

    nice -n 10 python benchmarks/bench_preprocess.py --rounds 1 --limit 300 --repeat 2 \\
        --out /tmp/preprocess_smoke
"""

# Markdown rows and result labels read better unbroken.
# ruff: noqa: E501

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Self

import cv2
import numpy as np

from covidcxr import LABELS, Pipeline, XRay, open_source

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


def _tree_usage(root_pid: int) -> tuple[dict[int, int], dict[int, float], dict[int, float]]:
    """RSS (bytes) of a process and each of its descendants, each one's CPU seconds so
    far, and each one's seconds spent waiting for a CPU (run-queue wait, from schedstat).

    The tree is walked through the kernel's per-thread ``children`` lists, which reads a
    handful of files per sample instead of every process's ``stat`` (the sampler competes
    for the same two cores as what it measures); the full scan is the fallback.
    """
    table: dict[int, list[int]] | None = None
    rss: dict[int, int] = {}
    stack = [root_pid]
    tree_cpu: dict[int, float] = {}
    waits: dict[int, float] = {}
    while stack:
        pid = stack.pop()
        try:
            rss[pid] = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
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
    return rss, tree_cpu, waits


class TreeMonitor:
    """Samples the process tree's RSS and CPU time in a background thread.

    CPU seconds are summed over every process of the tree, from its first to its last
    sample (from zero for a process started meanwhile), minus what the sampling thread
    itself used (reading /proc is not free: ~2 ms per sample here). Peak RSS is the
    largest sum seen at one sample over the processes that ran meanwhile: worker
    processes kept idle between runs (see ``covidcxr.preprocess.release_workers``) hold
    memory, but not for a run that does not use them.
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._rss_samples: list[dict[int, int]] = []
        self._started = False
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._first_wait: dict[int, float] = {}
        self._last_wait: dict[int, float] = {}
        self._sampling_cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        rss, cpu, waits = _tree_usage(os.getpid())
        self._rss_samples.append(rss)
        # Processes there at the start count from where they were; later ones from zero.
        for pid, seconds in cpu.items():
            self._first.setdefault(pid, seconds if not self._started else 0.0)
            self._last[pid] = seconds
        for pid, seconds in waits.items():
            self._first_wait.setdefault(pid, seconds if not self._started else 0.0)
            self._last_wait[pid] = seconds
        self._started = True

    @property
    def peak(self) -> int:
        """The largest RSS sum, in bytes, over the processes that used a CPU meanwhile."""
        ran = {pid for pid in self._last if self._last[pid] > self._first[pid]}
        ran.add(os.getpid())
        return max(
            (
                sum(size for pid, size in sample.items() if pid in ran)
                for sample in self._rss_samples
            ),
            default=0,
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._sampling_cpu = time.thread_time()
            self._stop.wait(self.interval)

    @property
    def runqueue_wait_seconds(self) -> float:
        """Seconds the tree's processes' main threads were runnable but waiting for a CPU.

        ``/proc/<pid>/schedstat`` is the main thread's alone; other threads are not counted.
        """
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


class NoModel:
    """A classifier that learns nothing and answers uniform probabilities.

    With it, ``Pipeline.fit`` costs its data pass alone, and ``Pipeline.predict`` its data
    path and per-item bookkeeping alone: the part of the pipeline a cache can speed up,
    which the model's cost hides in the full figures. It also keeps what ``fit`` was
    given (``prepared_``): the prepared set of ``Pipeline.fit``'s one pass over its source.
    """

    classes_: tuple[str, ...] = LABELS

    def __init__(self, *, keep: bool = False) -> None:
        self.keep = keep

    def fit(self, xrays: Iterable[XRay], validation: Iterable[XRay] | None = None) -> Self:
        seen = list(xrays)
        self.n_train_ = len(seen)
        self.prepared_ = seen if self.keep else []
        return self

    def predict_proba(self, xrays: Iterable[XRay]) -> np.ndarray:
        n = sum(1 for _ in xrays)
        return np.full((n, len(self.classes_)), 1 / len(self.classes_), np.float32)

    def predict(self, xrays: Iterable[XRay]) -> list[str]:
        return [self.classes_[0] for _ in xrays]

    def save(self, path: str | os.PathLike[str]) -> None:
        raise NotImplementedError("NoModel is a measuring device, never saved")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        raise NotImplementedError("NoModel is a measuring device, never saved")


def data_path_pipeline(config: dict[str, Any], workers: int, **options: Any) -> Pipeline:
    """A pipeline with :class:`NoModel` as its classifier: its data path alone."""
    return Pipeline(config, classifier=NoModel(**options), workers=workers)


def pass_stats(pipeline: Pipeline) -> dict[str, Any]:
    """The pipeline's ``data_stats_`` for its last call, with reads per item."""
    stats = pipeline.data_stats_
    items = stats.batch.items
    return {
        "items": items,
        "reads": stats.reads,
        "reads_per_item": round(stats.reads / items, 3) if items else None,
        "cache_hits": stats.batch.cache_hits,
        "memo_hits": stats.batch.memo_hits,
        "cache_writes": stats.batch.cache_writes,
        "workers": stats.workers,
    }


def subset_links(data: Path, paths: list[Path], into: Path) -> Path:
    """``into`` holding symbolic links to ``paths`` (files under ``data``), same layout."""
    for image in paths:
        link = into / image.relative_to(data)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(image)
    return into


def spread_subset(paths: list[Path], n: int) -> list[Path]:
    """``n`` of ``paths`` taken evenly across the sorted list (every split and class)."""
    if n >= len(paths):
        return paths
    step = len(paths) / n
    return [paths[int(i * step)] for i in range(n)]


def repeated_tree(data: Path, paths: list[Path], times: int, into: Path) -> Path:
    """``into`` holding ``times`` symlinks per image, in the COVID-QU-Ex layout (no masks)."""
    for image in paths:
        relative = image.relative_to(data)
        folder = into / relative.parent
        folder.mkdir(parents=True, exist_ok=True)
        for copy in range(times):
            (folder / f"r{copy}_{image.name}").symlink_to(image)
    return into


def pipeline_config(output_size: int) -> dict[str, Any]:
    return {
        "preprocessor": {
            "name": "gaussian-clahe",
            "output_size": output_size,
            "output_dtype": "float32",
        },
        "detector": None,
        "trust": {"gate": False},
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--limit", type=int, help="use only N images (a smoke run)")
    parser.add_argument(
        "--shared-with",
        metavar="TEXT",
        help='what else ran on the machine, for the report (e.g. "a training run")',
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "preprocess", help="output stem")
    return parser.parse_args()


def main() -> None:  # noqa: PLR0915 - a linear script
    args = parse_args()
    if not all((args.data / split).is_dir() for split in ("Train", "Val", "Test")):
        sys.exit(f"COVID-QU-Ex not found at {args.data}; pass --data or set COVIDCXR_QU_EX")

    load_before = os.getloadavg()
    started = time.perf_counter()
    all_paths = sorted(args.data.glob("*/*/images/*.png"))
    paths = spread_subset(all_paths, args.limit) if args.limit else all_paths
    val_paths = [path for path in paths if path.relative_to(args.data).parts[0] == "Val"]
    config = pipeline_config(224)
    tmp = Path(tempfile.mkdtemp(prefix="covidcxr-bench-preprocess-"))
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        root = subset_links(args.data, paths, tmp / "subset") if args.limit else args.data
        val_root = subset_links(args.data, val_paths, tmp / "val")
        one_root = subset_links(args.data, val_paths[:1], tmp / "one")

        def source(where: Path, **options: Any) -> Any:
            return open_source(where, layout="covid-qu-ex", load_masks=False, **options)

        assert len(source(root)) == len(paths)
        in_process = data_path_pipeline(config, 0)
        with_workers = data_path_pipeline(config, args.workers)

        # A process's first call with workers starts the forkserver: timed on its own (one
        # image), then both pipelines and the plain loop are warmed up on Val, untimed.
        in_process.fit(source(val_root))
        pool_started = time.perf_counter()
        with_workers.fit(source(one_root))
        pool_start_seconds = round(time.perf_counter() - pool_started, 3)
        with_workers.fit(source(val_root))
        plain_loop(val_paths)

        def record(name: str, run: Callable[[], int], stats_of: Pipeline | None = None) -> None:
            result = timed(name, run)
            if stats_of is not None:
                result["data_stats"] = pass_stats(stats_of)
            runs.setdefault(name, []).append(result)

        def predict_run(
            pipeline: Pipeline, where: Path, cache_dir: Path | None = None
        ) -> Callable[[], int]:
            def run() -> int:
                pipeline.cache_dir = cache_dir
                return len(pipeline.predict(source(where)))

            return run

        cache_mib = 0.0
        # Rounds interleave the configurations, so each round's ratios compare runs made
        # under the same (shared-machine) conditions; the medians over rounds are reported.
        for round_index in range(args.rounds):
            print(f"round {round_index + 1} of {args.rounds}", flush=True)
            record("plain_loop", lambda: plain_loop(paths))
            record("pipeline_in_process", predict_run(in_process, root), in_process)
            record("pipeline_workers", predict_run(with_workers, root), with_workers)
            cache_dir = tmp / f"cache-{round_index}"
            record("pipeline_cache_cold", predict_run(with_workers, root, cache_dir), with_workers)
            record("pipeline_cache_warm", predict_run(with_workers, root, cache_dir), with_workers)
            cache_mib = round(
                sum(p.stat().st_size for p in cache_dir.rglob("*") if p.is_file()) / 2**20, 1
            )
            shutil.rmtree(cache_dir, ignore_errors=True)

        repeated = repeated_tree(args.data, paths, args.repeat, tmp / "repeated")
        record(
            f"pipeline_repeated_{args.repeat}x", predict_run(with_workers, repeated), with_workers
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def by_round(numerator: str, denominator: str, key: str) -> list[float]:
        return [
            round(top[key] / bottom[key], 2)
            for top, bottom in zip(runs[numerator], runs[denominator], strict=True)
        ]

    def ratio(numerator: str, denominator: str, key: str = "images_per_s") -> float:
        return float(round(statistics.median(by_round(numerator, denominator, key)), 2))

    figures: dict[str, Any] = {name: _median_run(results) for name, results in runs.items()}
    figures["cache_size_mib"] = cache_mib
    repeated_name = f"pipeline_repeated_{args.repeat}x"
    rep = figures[repeated_name]["peak_rss_tree_mib"]
    one = max(run["peak_rss_tree_mib"] for run in runs["pipeline_workers"])
    workers_cpu = figures["pipeline_workers"]["cpu_ms_per_image"]
    workers_over_plain = ratio("pipeline_workers", "plain_loop")
    cached_speedup = ratio("pipeline_cache_cold", "pipeline_cache_warm", "seconds")
    plain = figures["plain_loop"]
    cores = len(os.sched_getaffinity(0))
    summary = {
        "rounds": args.rounds,
        "images": len(paths),
        "pool_start_seconds": pool_start_seconds,
        "in_process_over_plain": ratio("pipeline_in_process", "plain_loop"),
        "in_process_over_plain_by_round": by_round(
            "pipeline_in_process", "plain_loop", "images_per_s"
        ),
        "workers_over_plain": workers_over_plain,
        "workers_over_plain_by_round": by_round("pipeline_workers", "plain_loop", "images_per_s"),
        # What bounds that ratio on this machine: the plain loop is not one core's work
        # (OpenCV threads its CLAHE, blur and resize), and a pass that keeps every core busy
        # at the workers' CPU cost per image can go no faster than cores / that cost.
        "plain_loop_cores_busy": round(plain["cpu_ms_per_image"] * plain["images_per_s"] / 1000, 2),
        "workers_ceiling_over_plain": round(cores * 1000 / workers_cpu / plain["images_per_s"], 2),
        "cores": cores,
        # How long the run's processes waited for a CPU, per CPU-second they got: near 0 on
        # an idle machine, above 1 when other work holds the cores.
        "workers_runqueue_wait_per_cpu_second": round(
            figures["pipeline_workers"]["runqueue_wait_ms_per_image"] / workers_cpu, 2
        ),
        "cached_pass_speedup": cached_speedup,
        "cached_pass_speedup_by_round": by_round(
            "pipeline_cache_cold", "pipeline_cache_warm", "seconds"
        ),
        "cached_pass_over_uncached_workers": ratio(
            "pipeline_workers", "pipeline_cache_warm", "seconds"
        ),
        "peak_rss_mib_1x": one,
        f"peak_rss_mib_{args.repeat}x": rep,
        "main_process_ru_maxrss_mib": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        ),
        "targets": {
            "pipeline_workers / plain_loop >= 1.5": workers_over_plain >= 1.5,
            "cold / warm cache pass >= 10": cached_speedup >= 10,
            "peak_rss < 1024 MiB": max(one, rep) < 1024,
            f"rss {args.repeat}x within 10% of 1x": rep <= one * 1.1,
        },
    }
    import covidcxr

    environment = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "total_seconds": round(time.perf_counter() - started, 1),
        "python": platform.python_version(),
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "covidcxr": covidcxr.__version__,
        "workers": args.workers,
        "repeat": args.repeat,
        "limit": args.limit,
        "shared_with": args.shared_with,
        "pipeline_config": config,
    }
    payload = {"figures": figures, "summary": summary, "environment": environment}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_name(args.out.name + ".json").write_text(json.dumps(payload, indent=2) + "\n")
    args.out.with_name(args.out.name + ".md").write_text(markdown(payload))
    print(markdown(payload))


def markdown(payload: dict[str, Any]) -> str:
    figures, summary, env = payload["figures"], payload["summary"], payload["environment"]
    rows = [
        "| run (median round) | images | seconds | images/s | images/s, every round "
        "| reads / item | cache hits (memo) | cache writes "
        "| CPU ms / image | run-queue wait ms / image (main threads) | peak RSS, process tree (MiB) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, figure in figures.items():
        if not isinstance(figure, dict):
            continue
        stats = figure.get("data_stats")
        read, hits, writes = "1 (by hand)", "", ""
        if stats:
            read = str(stats["reads_per_item"])
            hits = f"{stats['cache_hits']} ({stats['memo_hits']})"
            writes = str(stats["cache_writes"])
        rows.append(
            f"| {name} | {figure['images']} | {figure['seconds']} | {figure['images_per_s']} "
            f"| {', '.join(str(v) for v in figure.get('images_per_s_by_round', []))} "
            f"| {read} | {hits} | {writes} "
            f"| {figure['cpu_ms_per_image']} | {figure['runqueue_wait_ms_per_image']} "
            f"| {figure['peak_rss_tree_mib']} |"
        )
    targets = "\n".join(
        f"- {name}: {'met' if met else 'NOT met'}" for name, met in summary["targets"].items()
    )
    shared = (
        f"The machine was shared with {env['shared_with']}: absolute figures are lower than "
        "on an idle machine, and the ratios, taken within each round, are the ones to read. "
        if env["shared_with"]
        else ""
    )
    subset = f" (`--limit {env['limit']}`: a smoke run)" if env["limit"] else ""
    return (
        "# Preprocessing through `Pipeline` (COVID-QU-Ex, decode + blur + CLAHE + resize 224)\n\n"
        f"{summary['images']} images{subset}. `plain_loop` is the published notebook's "
        "per-image loop; every `pipeline_*` run is `Pipeline.predict(open_source(data, "
        'layout="covid-qu-ex"))` with a classifier that answers constant probabilities, no '
        "detector and no input gate, i.e. the pipeline's data path as a user runs it: "
        "in this process, with worker processes, on a fresh cache folder (cold: the pass "
        "writes it) and on that folder again (warm), and over the set repeated "
        f"{env['repeat']} times through symbolic links (memory must not grow with the "
        "data).\n\n"
        + "\n".join(rows)
        + f"\n\nMedians over {summary['rounds']} interleaved rounds after an untimed warm-up "
        "(ratios are taken within a round, then the median is reported). Reads / item is "
        "`data_stats_.reads / items`: 0 on a warm cache, which answers from remembered "
        "digests (memo hits) without opening the files.\n\n"
        f"- pipeline with {env['workers']} workers / plain loop: **{summary['workers_over_plain']}x** "
        f"(by round: {summary['workers_over_plain_by_round']}); its processes' main threads waited "
        f"{summary['workers_runqueue_wait_per_cpu_second']} s in the run queue per CPU-second "
        "the processes ran (near 0 when nothing else runs)\n"
        f"- what bounds that ratio here: the plain loop kept {summary['plain_loop_cores_busy']} "
        f"of {summary['cores']} cores busy (OpenCV threads its filters), and at the workers' "
        f"{figures['pipeline_workers']['cpu_ms_per_image']} CPU ms per image, "
        f"{summary['cores']} fully busy cores allow at most "
        f"**{summary['workers_ceiling_over_plain']}x** the plain loop\n"
        f"- pipeline in this process / plain loop: {summary['in_process_over_plain']}x "
        f"(by round: {summary['in_process_over_plain_by_round']})\n"
        f"- warm cache pass: **{summary['cached_pass_speedup']}x** faster than the cold one "
        f"(by round: {summary['cached_pass_speedup_by_round']}; the cold one writes the cache), "
        f"{summary['cached_pass_over_uncached_workers']}x faster than the uncached pipeline "
        f"(cache size {figures['cache_size_mib']} MiB)\n"
        f"- main process ru_maxrss: {summary['main_process_ru_maxrss_mib']} MiB\n"
        f"- first call with workers in a process (starts the forkserver and the workers, which later calls reuse), one image: "
        f"{summary['pool_start_seconds']} s, not in the rounds\n\n"
        f"Targets:\n{targets}\n\n"
        + shared
        + f"{env['cpu_count']} CPUs, load average {env['load_average_before']} before, {env['load_average_after']} after; "
        f"Python {env['python']}, OpenCV {env['opencv']}, covidcxr {env['covidcxr']}, "
        f"{env['workers']} workers, {env['date_utc']}; total {env['total_seconds']} s.\n\n"
        f"Command: `nice -n 10 {env['command']}`\n"
    )


if __name__ == "__main__":
    main()
