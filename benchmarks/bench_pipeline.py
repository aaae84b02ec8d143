"""Pipeline throughput on COVID-QU-Ex Test: ``Pipeline.predict`` / ``evaluate`` vs a plain loop.

A small model (64 px VGG19-BN, width 0.25, from scratch) is trained quickly through
``Pipeline.fit`` on a few Train images (``--train-images``, ``--train-epochs``): its
accuracy is irrelevant, only its speed counts, and every configuration below uses this one
fitted classifier. On the Test split (1,166 images) the benchmark then measures, in one
run, interleaved over ``--rounds`` rounds after an untimed warm-up of every configuration:

``plain_loop``
    What a user would write by hand: ``cv2.imread`` (grayscale), ``GaussianBlur`` 5x5,
    CLAHE (clip 2, 8x8 tiles), ``resize`` to 64 (``INTER_AREA``), then one
    ``classifier.predict_proba`` on the list of :class:`~covidcxr.XRay`.
``predict_no_cache``
    ``pipeline.predict(open_source(test))`` with ``cache_dir=None``.
``predict_cold``
    The same with a fresh, empty cache folder each round (the pass writes the cache).
``predict_warm``
    Again on that folder: answered from the cache, by remembered digests (no file read).
``evaluate_cold`` / ``evaluate_warm``
    ``pipeline.evaluate(open_source(test))`` (the library's evaluator, with its default
    1,000 bootstrap resamples) on a fresh cache folder, then again on it.
``model_alone``
    ``classifier.predict_proba`` on the already prepared images, in memory: the ceiling of
    any data path (a cache removes reading and preprocessing, never the model). The images
    are the prepared set of ``Pipeline.fit``'s one pass over ``open_source(test)``, kept by
    a classifier that learns nothing (no library function outside ``Pipeline`` is used).
``predict_no_cache_ungated`` / ``predict_cold_ungated`` / ``predict_warm_ungated``
    The same three through a pipeline configured without an input gate
    (``"trust": {"gate": False}``; its own classifier, trained as above): the like-for-like
    comparison with the plain loop, which has no gate either.
``gate_alone``
    The pipeline's input gate (``pipeline.gate_.assess``) on the same images in memory:
    work the pipeline does before its classifier and the plain loop does not do at all.
``plain_loop_data_only`` / ``data_path_no_cache`` / ``data_path_cold`` / ``data_path_warm``
    The same without the model's cost: the plain loop's reading and preprocessing alone,
    and ``pipeline.predict`` through a pipeline whose classifier learns nothing and answers
    constant probabilities, with no input gate (the pipeline's data path and per-item
    bookkeeping alone).
``fit_pass_cold`` / ``fit_pass_warm``
    ``Pipeline.fit`` on all of Train with that classifier and no gate, so the figure is the
    fit's data pass alone (read, preprocess, collect the prepared set), on a fresh cache folder and
    then again on it.

For each: images/s, seconds, CPU ms per image and run-queue wait per image (main threads
only: see :class:`bench_preprocess.TreeMonitor`), peak RSS
summed over the process tree (sampled from ``/proc``: :class:`bench_preprocess.TreeMonitor`),
and, for the pipeline's passes, ``data_stats_`` (items, files read, cache hits, memo hits,
cache writes) with reads per item. Medians over the rounds are reported; ratios (the whole
job to the plain loop, the data path alone to the plain loop's data part, a warm fit pass
to a cold one) are taken within each round before their median. The load average is recorded
before and after, and the plain loop's probabilities are compared with the pipeline's.
Targets: ``predict`` cold (with and without a cache) >= 1.0x the plain loop; warm >= 1.5x;
reported with the gate (what a default pipeline runs) and without it (like for like).

Run (about 10 minutes on 2 cores)::

    nice -n 10 python benchmarks/bench_pipeline.py

Smoke run::

    nice -n 10 python benchmarks/bench_pipeline.py --rounds 1 --limit 200 --out /tmp/pipeline_smoke
"""

# Markdown rows and result labels read better unbroken.
# ruff: noqa: E501

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from bench_classifier_common import (
    DEFAULT_DATA,
    RESULTS,
    configure_tensorflow,
    library_environment,
    require_data,
    subset_tree,
    write_outputs,
)
from bench_preprocess import NoModel, pass_stats, timed

from covidcxr import Pipeline, XRay, open_source
from covidcxr.evaluate import EvaluationReport

PLAIN = "plain_loop"
PLAIN_DATA = "plain_loop_data_only"
DATA_PATH = ("data_path_no_cache", "data_path_cold", "data_path_warm")
MODEL_RUNS = (
    "predict_no_cache",
    "predict_cold",
    "predict_warm",
    "predict_no_cache_ungated",
    "predict_cold_ungated",
    "predict_warm_ungated",
    "evaluate_cold",
    "evaluate_warm",
    "model_alone",
    "gate_alone",
)
TARGETS = (
    ("predict_no_cache", 1.0),
    ("predict_cold", 1.0),
    ("predict_warm", 1.5),
    # Like for like: the plain loop has no input gate either.
    ("predict_no_cache_ungated", 1.0),
    ("predict_cold_ungated", 1.0),
    ("predict_warm_ungated", 1.5),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--limit", type=int, help="use only N Test images (and N Train images for the fit pass)"
    )
    parser.add_argument("--train-images", type=int, default=300, help="Train images for the model")
    parser.add_argument("--train-epochs", type=int, default=2)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--width", type=float, default=0.25, help="width_multiplier")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="the pipeline's preprocessing workers (0: in process)",
    )
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    parser.add_argument(
        "--shared-with",
        metavar="TEXT",
        help='what else ran on the machine, for the report (e.g. "a training run")',
    )
    parser.add_argument("--no-fit-pass", action="store_true", help="skip the fit data pass")
    parser.add_argument("--out", type=Path, default=RESULTS / "pipeline", help="output stem")
    return parser.parse_args()


def pipeline_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "preprocessor": {"name": "gaussian-clahe", "output_size": args.input_size},
        "classifier": {
            "name": "vgg19",
            "input_size": args.input_size,
            "weights": None,
            "trainable_blocks": "all",
            "batch_norm": True,
            "width_multiplier": args.width,
            "dense_units": 256,
            "optimizer": "adam",
            "learning_rate": 1e-3,
            "augmentation": 10.0,
            "epochs": args.train_epochs,
            "batch_size": args.batch_size,
            "seed": 0,
        },
        "detector": None,
    }


def plain_prepare(paths: list[Path], size: int) -> list[XRay]:
    """The hand-written data path: read, blur, CLAHE, resize (as uint8 XRays)."""
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    xrays = []
    for path in paths:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise OSError(f"cannot read {path}")
        blurred = cv2.GaussianBlur(gray, (5, 5), 0)
        small = cv2.resize(clahe.apply(blurred), (size, size), interpolation=cv2.INTER_AREA)
        xrays.append(XRay(small, id=str(path)))
    return xrays


def plain_loop(paths: list[Path], size: int, classifier: Any) -> tuple[list[str], np.ndarray]:
    """The hand-written loop: :func:`plain_prepare`, then one ``predict_proba`` call."""
    xrays = plain_prepare(paths, size)
    return [x.id for x in xrays], classifier.predict_proba(xrays)


def median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput, with every round's throughput beside it."""
    ordered = sorted(results, key=lambda run: run["images_per_s"])
    median = dict(ordered[(len(ordered) - 1) // 2])
    median["images_per_s_by_round"] = [run["images_per_s"] for run in results]
    return median


def main() -> int:  # noqa: PLR0915 - a linear script
    args = parse_args()
    require_data(args.data)
    configure_tensorflow(args.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="covidcxr-bench-pipeline-"))
    try:
        # Subsets are symbolic links in a temporary folder: nothing is copied.
        train_root = subset_tree(args.data, "Train", args.train_images, tmp / "train-subset")
        test_root, fit_root = args.data, args.data
        if args.limit:
            test_root = subset_tree(args.data, "Test", args.limit, tmp / "test-subset")
            fit_root = subset_tree(args.data, "Train", args.limit, tmp / "fit-subset")

        def source(root: Path, split: str) -> Any:
            return open_source(root, layout="covid-qu-ex", split=split, load_masks=False)

        config = pipeline_config(args)
        # The data path alone: no model and no input gate (fitting the gate trains a
        # network, and assessing runs one; both belong to the full runs, not to this).
        data_path_config = {**config, "trust": {"gate": False}}
        pipeline = Pipeline(config, workers=args.workers)
        fit_started = time.perf_counter()
        pipeline.fit(source(train_root, "Train"))
        model_seconds = round(time.perf_counter() - fit_started, 1)
        print(f"model trained on {args.train_images} images in {model_seconds} s", flush=True)
        # The same recipe without an input gate: the plain loop's like.
        ungated = Pipeline({**config, "trust": {"gate": False}}, workers=args.workers)
        ungated.fit(source(train_root, "Train"))
        classifier = pipeline.classifier_
        paths = sorted(test_root.glob("Test/*/images/*.png"))
        # The prepared Test images for ``model_alone``, as the pipeline prepares them: the
        # set ``Pipeline.fit``'s one pass hands its classifier (here one that keeps it).
        keeper = Pipeline(
            data_path_config,
            classifier=NoModel(keep=True),
            workers=args.workers,
        )
        keeper.fit(source(test_root, "Test"))
        assert isinstance(keeper.classifier_, NoModel)
        prepared = keeper.classifier_.prepared_
        assert len(prepared) == len(paths)
        del keeper

        runs: dict[str, list[dict[str, Any]]] = {}
        cache_counter = [0]

        def fresh_cache() -> Path:
            cache_counter[0] += 1
            return tmp / f"cache-{cache_counter[0]}"

        def measure(name: str, run: Callable[[], int], stats_of: Pipeline | None = None) -> None:
            result = timed(name, run)
            if stats_of is not None:
                result["data_stats"] = pass_stats(stats_of)
            runs.setdefault(name, []).append(result)

        def predict_run(cache_dir: Path | None, through: Pipeline = pipeline) -> Callable[[], int]:
            def run() -> int:
                through.cache_dir = cache_dir
                return len(through.predict(source(test_root, "Test")))

            return run

        def evaluate_run(cache_dir: Path) -> Callable[[], int]:
            def run() -> int:
                pipeline.cache_dir = cache_dir
                report = pipeline.evaluate(source(test_root, "Test"))
                # Every item of the source (the report counts those the gate admitted).
                assert isinstance(report, EvaluationReport)
                assert report.classification is not None
                assert report.classification.n_images <= pipeline.data_stats_.batch.items
                return int(pipeline.data_stats_.batch.items)

            return run

        no_model = Pipeline(data_path_config, classifier=NoModel(), workers=args.workers)
        no_model.fit(source(train_root, "Train"))

        def fit_run(cache_dir: Path) -> Callable[[], int]:
            def run() -> int:
                no_model.cache_dir = cache_dir
                no_model.fit(source(fit_root, "Train"))
                assert isinstance(no_model.classifier_, NoModel)
                return no_model.classifier_.n_train_

            return run

        def data_path_run(cache_dir: Path | None) -> Callable[[], int]:
            def run() -> int:
                no_model.cache_dir = cache_dir
                return len(no_model.predict(source(test_root, "Test")))

            return run

        def plain_run() -> int:
            return len(plain_loop(paths, args.input_size, classifier)[0])

        def plain_data_run() -> int:
            return len(plain_prepare(paths, args.input_size))

        def model_run() -> int:
            return len(classifier.predict_proba(prepared))

        def gate_run() -> int:
            # The input gate the pipeline runs before its classifier (the plain loop has none).
            return len(pipeline.gate_.assess(prepared)) if pipeline.gate_ is not None else 0

        # Untimed warm-up of every configuration (TensorFlow traces its predict function,
        # the page cache holds the files, the cache code is imported), and the check that
        # the plain loop and the pipeline agree.
        print("warm-up", flush=True)
        ids, plain_probabilities = plain_loop(paths, args.input_size, classifier)
        pipeline.cache_dir = None
        predictions = {p.id: p for p in pipeline.predict(source(test_root, "Test"))}
        classes = pipeline.classes_
        # Images the input gate refused have no probabilities (the plain loop has no gate):
        # the two are compared on the others.
        admitted = [n for n, i in enumerate(ids) if predictions[i].probabilities]
        pipeline_probabilities = np.array(
            [[predictions[ids[n]].probabilities[c] for c in classes] for n in admitted]
        ).reshape(len(admitted), len(classes))
        plain_admitted = plain_probabilities[admitted]
        agreement = {
            "compared": len(admitted),
            "refused_by_gate": len(ids) - len(admitted),
            "max_abs_probability_difference": float(
                np.abs(plain_admitted - pipeline_probabilities).max(initial=0.0)
            ),
            "same_label_fraction": float(
                np.mean(plain_admitted.argmax(1) == pipeline_probabilities.argmax(1))
            )
            if admitted
            else None,
        }
        warm_cache = fresh_cache()
        for run in (
            evaluate_run(warm_cache),
            predict_run(warm_cache),
            predict_run(warm_cache, ungated),
            model_run,
            gate_run,
            plain_data_run,
            data_path_run(None),
            data_path_run(warm_cache),
        ):
            run()
        if not args.no_fit_pass:
            fit_run(fresh_cache())()

        for round_index in range(args.rounds):
            print(f"round {round_index + 1} of {args.rounds}", flush=True)
            measure(PLAIN, plain_run)
            measure("predict_no_cache", predict_run(None), pipeline)
            cold = fresh_cache()
            measure("predict_cold", predict_run(cold), pipeline)
            measure("predict_warm", predict_run(cold), pipeline)
            measure("predict_no_cache_ungated", predict_run(None, ungated), ungated)
            cold_ungated = fresh_cache()
            measure("predict_cold_ungated", predict_run(cold_ungated, ungated), ungated)
            measure("predict_warm_ungated", predict_run(cold_ungated, ungated), ungated)
            cold_eval = fresh_cache()
            measure("evaluate_cold", evaluate_run(cold_eval), pipeline)
            measure("evaluate_warm", evaluate_run(cold_eval), pipeline)
            measure("model_alone", model_run)
            measure("gate_alone", gate_run)
            measure(PLAIN_DATA, plain_data_run)
            measure("data_path_no_cache", data_path_run(None), no_model)
            cold_data = fresh_cache()
            measure("data_path_cold", data_path_run(cold_data), no_model)
            measure("data_path_warm", data_path_run(cold_data), no_model)
            if not args.no_fit_pass:
                cold_fit = fresh_cache()
                measure("fit_pass_cold", fit_run(cold_fit), no_model)
                measure("fit_pass_warm", fit_run(cold_fit), no_model)
                shutil.rmtree(cold_fit, ignore_errors=True)
            for folder in (cold, cold_ungated, cold_eval, cold_data):
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def ratio_by_round(name: str, over: str = PLAIN) -> list[float]:
        return [
            round(top["images_per_s"] / bottom["images_per_s"], 2)
            for top, bottom in zip(runs[name], runs[over], strict=True)
        ]

    def ratio(name: str, over: str) -> dict[str, Any]:
        by_round = ratio_by_round(name, over)
        median = round(float(statistics.median(by_round)), 2)
        return {"over": over, "median": median, "by_round": by_round}

    figures = {name: median_run(results) for name, results in runs.items()}
    # Each run against its reference, within each round: the whole job against the plain
    # loop; the data path alone against the plain loop's data part; a warm fit pass
    # against a cold one.
    ratios = {name: ratio(name, PLAIN) for name in MODEL_RUNS}
    ratios |= {name: ratio(name, PLAIN_DATA) for name in DATA_PATH}
    if "fit_pass_warm" in runs:
        ratios["fit_pass_warm"] = ratio("fit_pass_warm", "fit_pass_cold")
    summary = {
        "rounds": args.rounds,
        "test_images": len(paths),
        "ratios": ratios,
        "predict_warm_over_model_alone": ratio("predict_warm", "model_alone"),
        "predict_warm_ungated_over_model_alone": ratio("predict_warm_ungated", "model_alone"),
        # The network and the gate in sequence on prepared images, per image: what a warm
        # cache leaves of a gated pipeline's work.
        "model_and_gate_over_plain_loop": round(
            figures[PLAIN]["seconds"]
            / (figures["model_alone"]["seconds"] + figures["gate_alone"]["seconds"]),
            2,
        ),
        "targets": {
            f"{name} >= {target}x plain loop": ratios[name]["median"] >= target
            for name, target in TARGETS
        },
        "plain_vs_pipeline": agreement,
    }
    result = {
        "benchmark": "pipeline",
        "data": str(args.data),
        "limit": args.limit,
        "figures": figures,
        "summary": summary,
        "model": {
            "config": config,
            "train_images": args.train_images,
            "train_seconds": model_seconds,
            "classes": list(classes),
        },
        "run": {
            "workers": args.workers,
            "tf_intra_op_threads": args.threads,
            "load_average_before": [round(value, 2) for value in load_before],
            "load_average_after": [round(value, 2) for value in os.getloadavg()],
            "total_seconds": round(time.perf_counter() - started, 1),
            "shared_with": args.shared_with,
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "environment": library_environment(),
        "command": shlex.join(["python", *sys.argv]),
    }
    write_outputs(args.out, result, markdown(result))
    print(markdown(result))
    return 0


def markdown(result: dict[str, Any]) -> str:
    figures, summary, run = result["figures"], result["summary"], result["run"]
    ratios = summary["ratios"]
    rows = [
        "| run (median round) | images | seconds | images/s | images/s, every round "
        "| x its reference (median of rounds) | reads / item | cache hits (memo) | cache writes "
        "| CPU ms / image | run-queue wait ms / image (main threads) | peak RSS, tree (MiB) |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, figure in figures.items():
        stats = figure.get("data_stats")
        reads = {
            PLAIN: "1 (by hand)",
            PLAIN_DATA: "1 (by hand)",
            "model_alone": "0 (in memory)",
            "gate_alone": "0 (in memory)",
        }
        hits = writes = ""
        read = reads.get(name, "")
        if stats:
            read = str(stats["reads_per_item"])
            hits = f"{stats['cache_hits']} ({stats['memo_hits']})"
            writes = str(stats["cache_writes"])
        over = ""
        if name in ratios:
            over = f"{ratios[name]['median']} x {ratios[name]['over']}"
        elif name in (PLAIN, PLAIN_DATA):
            over = "reference"
        rows.append(
            f"| {name} | {figure['images']} | {figure['seconds']} | {figure['images_per_s']} "
            f"| {', '.join(str(v) for v in figure['images_per_s_by_round'])} | {over} | {read} | {hits} | {writes} "
            f"| {figure['cpu_ms_per_image']} | {figure['runqueue_wait_ms_per_image']} | {figure['peak_rss_tree_mib']} |"
        )
    targets = "\n".join(
        f"- {name}: **{'met' if met else 'not met'}** (by round: {ratios[name.split()[0]]['by_round']})"
        for name, met in summary["targets"].items()
    )
    ceiling = ratios["model_alone"]["median"]
    agreement = summary["plain_vs_pipeline"]
    env = result["environment"]
    model = result["model"]
    shared = (
        f"The machine was shared with {run['shared_with']}: absolute figures are lower than on "
        "an idle machine, and the ratios, taken within each round, are the ones to read. "
        if run.get("shared_with")
        else ""
    )
    subset = f" (--limit {result['limit']}: smoke run)" if result["limit"] else ""
    fit = (
        "`fit_pass_cold` / `fit_pass_warm` are `Pipeline.fit` over Train with that classifier and "
        "no input gate: the fit's data pass alone (read, preprocess, keep the prepared set), on a fresh cache folder "
        "and then again on it.\n\n"
        if "fit_pass_cold" in figures
        else ""
    )
    return (
        "# Pipeline throughput (COVID-QU-Ex Test, gaussian-clahe 64 px → VGG19-BN x0.25)\n\n"
        f"{summary['test_images']} Test images{subset}; medians over {summary['rounds']} interleaved rounds "
        "after an untimed warm-up (ratios are taken within a round, then the median is reported). "
        f"The model was trained through `Pipeline.fit` on {model['train_images']} Train images for "
        f"{model['config']['classifier']['epochs']} epochs ({model['train_seconds']} s): its accuracy is "
        "irrelevant here.\n\n" + "\n".join(rows) + "\n\n"
        "`plain_loop` reads each image with `cv2.imread`, blurs, applies CLAHE, resizes and makes one "
        "`predict_proba` call; `predict_*` and `evaluate_*` are `Pipeline.predict` / `Pipeline.evaluate` "
        "on `open_source(...)` with no cache, a fresh empty cache folder (cold: the pass writes it) or "
        "that folder again (warm); `evaluate` includes the evaluator's 1,000 bootstrap resamples "
        "(its images/s count every item of the source). "
        "`model_alone` is `predict_proba` on the prepared images already in memory (the set "
        "`Pipeline.fit`'s one pass over `open_source(test)` hands its classifier): the ceiling of "
        "any data path, since a cache can only remove reading and preprocessing. The pipeline "
        "runs also pass each image through the input gate fitted on the training images, as "
        "a user's pipeline does; the plain loop has none. `predict_*_ungated` are the same "
        'through a pipeline configured without the gate (`"trust": {"gate": false}`): the '
        "like-for-like comparison. `gate_alone` is that gate's "
        "`assess` on the same prepared images in memory. "
        "Reads / item is `data_stats_.reads / items`: 0 on a warm cache, which answers from "
        "remembered digests (memo hits) without opening the files.\n\n"
        "`plain_loop_data_only` is the plain loop without the model; `data_path_*` are "
        "`Pipeline.predict` with a classifier that answers constant probabilities and no input "
        "gate, i.e. the pipeline's data path and per-item bookkeeping alone, which the model's "
        "(and the gate's) cost hides in the full figures.\n\n" + fit + f"Targets:\n{targets}\n\n"
        f"- model alone / plain loop (the ceiling for any data path): {ceiling}x\n"
        f"- predict, warm cache / model alone: {summary['predict_warm_over_model_alone']['median']}x "
        f"with the gate, {summary['predict_warm_ungated_over_model_alone']['median']}x without\n"
        f"- model alone + gate alone, in sequence / plain loop (the ceiling for a gated "
        f"pipeline on a warm cache): {summary['model_and_gate_over_plain_loop']}x\n"
        f"- plain loop vs pipeline, on the {agreement['compared']} images the input gate "
        f"admitted ({agreement['refused_by_gate']} refused): largest probability difference "
        f"{agreement['max_abs_probability_difference']:.2e}, same label on "
        f"{agreement['same_label_fraction'] or 0:.1%} of them\n\n"
        + shared
        + f"Environment: {env['cpu_count']} CPUs, {env['intra_op_threads']} TF intra-op threads, "
        f"pipeline workers {run['workers']}, load average {run['load_average_before']} before, "
        f"{run['load_average_after']} after (a shared machine), Python {env['python']}, "
        f"TensorFlow {env['tensorflow']}, OpenCV {env['opencv']}, covidcxr {env['covidcxr']}, "
        f"{run['date_utc']}; total {run['total_seconds']} s.\n\n"
        f"Command: `nice -n 10 {result['command']}`\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
