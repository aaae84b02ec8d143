"""What a COVID-19 operating point set on Val costs on Test, for the seeds of a classifier run.

``bench_classifier_real.py`` saves each seed's fitted pipeline. A screening user asks for a
sensitivity rather than the argmax: ``Pipeline.fit_trust(validation=..., trust={"sensitivity":
{"covid-19": t}})`` chooses, on the validation radiographs, the smallest COVID-19
probability at which COVID-19 is called so that Val recall reaches ``t`` (the library's
:class:`~covidcxr.evaluate.OperatingPoints`), and the pipeline's predictions use it from
then on. This benchmark does that for each saved seed and each target (Val is the split
the run already used to choose the epoch; Test is never looked at to choose anything), then
scores Test with ``Pipeline.evaluate``, and reports mean ± std over the seeds of Test
accuracy and every class's recall, beside the argmax figures of the same pipelines. With
``--tta`` the classifier averages each image's rotations first, on Val and Test alike.

Run after a ``bench_classifier_real.py`` run (its result file names the saved pipelines;
about a minute per seed and target on 2 cores)::

    nice -n 10 python benchmarks/bench_operating_points.py \\
        --run benchmarks/results/classifier_study/whole-frame-64.json --targets 0.95 0.97

Smoke run, on the pipelines of a smoke run of ``bench_classifier_real.py``::

    python benchmarks/bench_operating_points.py --run /tmp/classifier_real_smoke.json \\
        --limit 60 --targets 0.9 --out /tmp/operating_points_smoke
"""

# Markdown rows read better unbroken.
# ruff: noqa: E501

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from bench_classifier_common import (
    DEFAULT_DATA,
    RESULTS,
    configure_tensorflow,
    library_environment,
    require_data,
    spread,
    write_outputs,
)
from bench_classifier_real import (
    COVID,
    TARGET_ACCURACY,
    TARGET_COVID_RECALL,
    _ms,
    subset,
    test_figures,
)

LABELS = (COVID, "normal", "pneumonia")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run", type=Path, required=True, help="a bench_classifier_real.py result (.json)"
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--limit", type=int, help="N images of each split, as the run's own --limit (smoke runs)"
    )
    parser.add_argument(
        "--targets",
        type=float,
        nargs="+",
        default=[0.95, 0.97],
        help="COVID-19 sensitivities to reach on Val",
    )
    parser.add_argument("--label", default=COVID, help="the class the targets are for")
    parser.add_argument(
        "--tta", type=float, nargs="+", metavar="DEGREES", help="test-time rotations (Val and Test)"
    )
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    parser.add_argument("--out", type=Path, help="output stem (default: results/operating_points)")
    return parser.parse_args()


def point_of(pipeline: Any, label: str) -> dict[str, Any] | None:
    """The operating point the pipeline chose for ``label`` (threshold, Val figures)."""
    points = (pipeline.trust_.to_dict().get("operating_points") or {}).get("points") or []
    return next((p for p in points if p["label"] == label), None)


def score_seed(
    saved: Path, root: Path, targets: list[float], args: argparse.Namespace
) -> dict[str, Any]:
    from covidcxr import Pipeline, open_source

    def source(split: str) -> Any:
        return open_source(root, layout="covid-qu-ex", split=split, load_masks=lungs)

    lungs = "lungs" in json.loads((saved / "pipeline.json").read_text())
    pipeline = Pipeline.load(saved)
    if args.tta:
        pipeline.classifier_.set_params(test_time_rotations=tuple(args.tta))
    rows: list[dict[str, Any]] = []
    for target in [None, *targets]:
        started = time.perf_counter()
        # None: the argmax (no operating point), chosen again so that a TTA run's
        # calibration is fitted on the same kind of probabilities as the rest.
        sensitivity = {} if target is None else {args.label: target}
        pipeline.fit_trust(validation=source("Val"), trust={"sensitivity": sensitivity})
        figures = test_figures(pipeline.evaluate(source("Test")))
        rows.append(
            {
                "target": target,
                "val_point": point_of(pipeline, args.label),
                "test": figures,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        print(
            f"  {saved.parent.name} target {target}: accuracy {figures['accuracy']:.4f}, "
            f"{args.label} recall {figures['per_class'][args.label]['recall']:.4f}",
            flush=True,
        )
    return {"pipeline": str(saved), "rows": rows}


def main() -> int:
    args = parse_args()
    require_data(args.data)
    configure_tensorflow(args.threads)
    run = json.loads(args.run.read_text())
    saved = [Path(seed["saved_pipeline"]) for seed in run["per_seed"]]
    missing = [str(p) for p in saved if not (p / "pipeline.json").is_file()]
    if missing:
        print(
            f"the run's saved pipelines are gone ({', '.join(missing)}): run "
            "bench_classifier_real.py again (its --checkpoint-dir keeps them)",
            file=sys.stderr,
        )
        return 1
    started = time.perf_counter()
    # The run's own subset folder for a smoke run (the same images, the same ids).
    root = subset(args.data, args.limit) if args.limit else args.data
    seeds = [score_seed(path, root, args.targets, args) for path in saved]
    targets: list[float | None] = [None, *args.targets]
    summary = []
    for index, target in enumerate(targets):
        tests = [seed["rows"][index]["test"] for seed in seeds]
        points = [seed["rows"][index]["val_point"] for seed in seeds]
        accuracy = spread([t["accuracy"] for t in tests])
        recall = {
            label: spread([t["per_class"][label]["recall"] for t in tests]) for label in LABELS
        }
        summary.append(
            {
                "target": target,
                "test_accuracy": accuracy,
                "recall": recall,
                "macro_f1": spread([t["macro_f1"] for t in tests]),
                "val_threshold": spread([p["threshold"] if p else None for p in points]),
                "val_sensitivity": spread([p["sensitivity"] if p else None for p in points]),
                "targets_issue_10": {
                    f"mean Test accuracy >= {TARGET_ACCURACY}": accuracy["mean"] is not None
                    and accuracy["mean"] >= TARGET_ACCURACY,
                    f"mean COVID-19 recall >= {TARGET_COVID_RECALL}": recall[COVID]["mean"]
                    is not None
                    and recall[COVID]["mean"] >= TARGET_COVID_RECALL,
                },
            }
        )
    result = {
        "benchmark": "operating_points",
        "run": str(args.run),
        "run_command": run.get("command"),
        "label": args.label,
        "tta": args.tta,
        "limit_per_split": args.limit,
        "per_seed": seeds,
        "summary": summary,
        "seconds": round(time.perf_counter() - started, 1),
        "environment": library_environment(),
        "command": shlex.join(["python", *sys.argv]),
    }
    out = args.out or RESULTS / ("operating_points_tta" if args.tta else "operating_points")
    write_outputs(out, result, markdown(result))
    print(markdown(result))
    return 0


def markdown(result: dict[str, Any]) -> str:
    label = result["label"]
    tta = f", test-time rotations {result['tta']} on Val and Test" if result["tta"] else ""
    smoke = (
        f" (--limit {result['limit_per_split']}: a smoke run)" if result["limit_per_split"] else ""
    )
    lines = [
        f"# Operating points: {label} sensitivity chosen on Val, scored on Test{smoke}",
        "",
        f"The {len(result['per_seed'])} saved pipelines of `{result['run_command']}`{tta}. "
        f'For each target, `Pipeline.fit_trust(validation=Val, trust={{"sensitivity": {{"{label}": t}}}})` '
        f"sets the smallest {label} probability at which {label} is called so that Val recall "
        "reaches t; `Pipeline.evaluate` then scores Test (never used to choose). Mean ± sample "
        'std over the seeds; "argmax" is the same pipelines without an operating point.',
        "",
        "| operating point | Test accuracy | "
        + " | ".join(f"recall {name}" for name in LABELS)
        + " | macro F1 | Val threshold | Val sensitivity reached |",
        "|---|---|" + "---|" * len(LABELS) + "---|---|---|",
    ]
    for row in result["summary"]:
        name = "argmax" if row["target"] is None else f"{label} sensitivity {row['target']} on Val"
        lines.append(
            f"| {name} | {_ms(row['test_accuracy'])} | "
            + " | ".join(_ms(row["recall"][n]) for n in LABELS)
            + f" | {_ms(row['macro_f1'])} | {_ms(row['val_threshold'])} | {_ms(row['val_sensitivity'])} |"
        )
    lines += ["", "Issue 10's targets (mean Test accuracy and COVID-19 recall):", ""]
    for row in result["summary"]:
        name = "argmax" if row["target"] is None else f"sensitivity {row['target']}"
        met = ", ".join(
            f"{goal}: **{'met' if ok else 'not met'}**"
            for goal, ok in row["targets_issue_10"].items()
        )
        lines.append(f"- {name}: {met}")
    env = result["environment"]
    lines += [
        "",
        f"Environment: Python {env['python']}, TensorFlow {env['tensorflow']}, covidcxr "
        f"{env['covidcxr']}; {result['seconds']} s.",
        "",
        f"Command: `nice -n 10 {result['command']}`",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
