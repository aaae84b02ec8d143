"""Exported inference side by side: Keras fp32 vs ONNX Runtime / OpenVINO / LiteRT fp32, int8, bf16.

For each input size (``--sizes``, default 64 and 224) a pipeline is trained briefly
through ``Pipeline.fit`` on a COVID-QU-Ex Train subset (or taken from ``--model-SIZE``)
and saved; ``covidcxr.runtime.export`` then writes each exported variant, its accuracy
guard measured on a Val subset and int8 calibrated on Train images. A variant the guard
refuses is reported as refused, with its figures, and not timed.

Every variant is timed in a fresh child process (so its peak RSS is its own), loaded as a
user loads it, ``Pipeline.load(model, runtime=...)``:

``images/s``
    ``pipeline.classifier_.predict_proba`` over the Test subset, prepared once as the
    classifier receives it (``Pipeline.classifier_inputs``: preprocessed and, for a
    pipeline with a lung stage, cropped to the lungs), in batches of ``--batches`` (1 and 32): the network's
    throughput, preprocessing excluded.
``p50 / p95 ms``
    Latency of one ``predict_proba`` call of one batch.
``accuracy``
    ``Pipeline.predict`` on the Test subset, end to end.
``peak RSS``
    ``ru_maxrss`` of the child process.

The CPU features NumPy detected and the OpenVINO CPU plugin's capabilities are recorded.

Full run (a quiet machine; about an hour on 2 cores with 224 px VGG19)::

    nice -n 5 python benchmarks/bench_export.py

Smoke run::

    nice -n 5 python benchmarks/bench_export.py --limit 32 --sizes 64 --width 0.125 \\
        --epochs 1 --rounds 1 --out /tmp/export_smoke
"""

# ruff: noqa: E501

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from bench_classifier_common import (
    DEFAULT_DATA,
    RESULTS,
    library_environment,
    require_data,
    subset_tree,
    write_outputs,
)

from covidcxr import Pipeline, open_source
from covidcxr.errors import AccuracyGuardError, ConfigurationError, SyntheticModelWarning
from covidcxr.runtime import GuardReport, cpu_features, export, runtime_available

#: (runtime, precision) of every variant, the Keras model first.
VARIANTS = (
    ("tensorflow", "fp32"),
    ("onnx", "fp32"),
    ("onnx", "int8"),
    ("openvino", "fp32"),
    ("openvino", "int8"),
    ("openvino", "bf16"),
    ("litert", "fp32"),
    ("litert", "int8"),
)


def _pipeline_config(size: int, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "preprocessor": {"name": "gaussian-clahe", "output_size": size},
        "classifier": {
            "name": "vgg19",
            "input_size": size,
            "weights": "none",
            "batch_norm": True,
            "width_multiplier": args.width,
            "epochs": args.epochs,
            "batch_size": 32,
            "optimizer": "adam",
            "learning_rate": 1e-3,
            "augmentation": None,
            "seed": 0,
        },
        "detector": {"name": "none"},
        "evaluation": {"n_bootstrap": 0},
    }


def _openvino_capabilities() -> list[str]:
    if not runtime_available("openvino"):
        return []
    import openvino

    return list(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


# -- the child: one variant, one process -----------------------------------------------


def _peak_rss_mib() -> float:
    """This process's own peak RSS: ``VmHWM`` belongs to the address space exec made.

    Not ``ru_maxrss``: Linux keeps it across fork and exec, so a child would report the
    parent's (larger) peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _child(spec: dict[str, Any]) -> None:
    """Time one variant and print its figures as JSON on the last line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.simplefilter("ignore", SyntheticModelWarning)
    pipeline = Pipeline.load(spec["model"], runtime=spec["runtime"])
    test = list(open_source(spec["test"], layout="covid-qu-ex"))
    # What the classifier receives: prepared and, with a lung stage, cropped to the lungs.
    prepared = list(pipeline.classifier_inputs(test))
    classifier = pipeline.classifier_
    keras_classifier: Any = getattr(classifier, "keras_classifier", classifier)
    figures: dict[str, Any] = {}
    for batch in spec["batches"]:
        keras_classifier.set_params(batch_size=batch)
        classifier.predict_proba(prepared[:batch])  # warm-up: compilation, first allocations
        latencies = []
        started = time.perf_counter()
        for _ in range(spec["rounds"]):
            for start in range(0, len(prepared), batch):
                begun = time.perf_counter()
                classifier.predict_proba(prepared[start : start + batch])
                latencies.append(time.perf_counter() - begun)
        elapsed = time.perf_counter() - started
        quantiles = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
        figures[str(batch)] = {
            "images_per_s": round(spec["rounds"] * len(prepared) / elapsed, 2),
            "p50_ms": round(1000 * statistics.median(latencies), 2),
            "p95_ms": round(1000 * quantiles[18], 2),
        }
    started = time.perf_counter()
    predictions = pipeline.predict(test)
    end_to_end = time.perf_counter() - started
    correct = sum(p.label == x.label for p, x in zip(predictions, test, strict=True))
    print(
        json.dumps(
            {
                "batches": figures,
                # Every stage the pipeline has, as a user runs it: reading, preprocessing,
                # the gate, the lung crop, the classifier, the lesion detector.
                "pipeline_images_per_s": round(len(test) / end_to_end, 2),
                "accuracy": round(correct / len(test), 4),
                "peak_rss_mib": _peak_rss_mib(),
            }
        )
    )


def _run_child(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# -- the parent ------------------------------------------------------------------------


def _export_variant(
    saved: Path,
    runtime: str,
    precision: str,
    *,
    into: Path,
    val: Path,
    train: Path,
    limit: int,
) -> dict[str, Any]:
    target = into / f"{runtime}-{precision}"
    try:
        report = export(
            saved,
            target,
            validation=open_source(val, layout="covid-qu-ex"),
            validation_description=f"{val.name} (COVID-QU-Ex Val subset)",
            runtime=runtime,
            precision=precision,
            calibration=open_source(train, layout="covid-qu-ex") if precision == "int8" else None,
            calibration_limit=limit,
        )
    except AccuracyGuardError as refused:
        guard = refused.report
        assert isinstance(guard, GuardReport)
        return {"status": "refused", "reason": str(refused), "guard": guard.to_dict()}
    except ConfigurationError as unavailable:
        return {"status": "unavailable", "reason": str(unavailable)}
    return {
        "status": "exported",
        "model": str(target),
        "guard": report.guard.to_dict(),
        "networks": sorted(report.artifacts),
        "mask_guards": {name: g.to_dict() for name, g in report.mask_guards.items()},
    }


def _model_description(size: int, given: Path | None, args: argparse.Namespace) -> str:
    if given is not None:
        return f"the saved pipeline {given}"
    return (
        f"VGG19-BN x{args.width} trained here through `Pipeline.fit` for {args.epochs} "
        f"epoch(s) on {args.train_limit} Train images (a model for timing: its accuracy says "
        "little about a trained model's, and a guard on it is a weak test)"
    )


def _guard_text(row: dict[str, Any]) -> str:
    """The guard's verdict in a cell: the accuracy change and the worst recall drop."""
    guard = row.get("guard")
    if not guard:
        return str(row["status"])
    drops = guard.get("recall_drop_points") or {}
    worst = max(drops, key=lambda label: drops[label], default=None)
    # 0.0 - x, not -x: no "-0.00" for an unchanged figure.
    recall = (
        f", recall {worst} {0.0 - drops[worst]:+.2f}"
        if worst is not None and drops[worst] > 0
        else ""
    )
    return f"{row['status']}: accuracy {0.0 - guard['accuracy_drop_points']:+.2f} pts{recall}"


def _markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Exported inference: Keras fp32 vs ONNX Runtime, OpenVINO and LiteRT (fp32, int8, bf16)",
        "",
        f"CPU features (NumPy): {', '.join(result['cpu_features']) or 'none detected'}; "
        f"OpenVINO CPU capabilities: {', '.join(result['openvino_capabilities']) or 'n/a'}.",
        f"Test images: {result['n_test']} (COVID-QU-Ex Test subset); guard on "
        f"{result['n_val']} Val images; int8 calibrated on {result['n_calibration']} Train images.",
        "",
        *(
            f"Model at {size} px: {description}."
            for size, description in (result.get("models") or {}).items()
        ),
        "",
        "| size | runtime | precision | batch | classifier images/s | vs Keras | p50 ms | p95 ms | pipeline images/s | peak RSS MiB | accuracy | guard |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in result["rows"]:
        for batch, figures in (row.get("batches") or {None: {}}).items():
            keras = result["keras_rate"].get(f"{row['size']}/{batch}")
            rate = figures.get("images_per_s")
            ratio = f"{rate / keras:.2f}x" if rate and keras else "—"
            guard_text = _guard_text(row)
            lines.append(
                f"| {row['size']} | {row['runtime']} | {row['precision']} | {batch or '—'} | "
                f"{rate or '—'} | {ratio} | {figures.get('p50_ms', '—')} | {figures.get('p95_ms', '—')} | "
                f"{row.get('pipeline_images_per_s', '—')} | "
                f"{row.get('peak_rss_mib', '—')} | {row.get('accuracy', '—')} | {guard_text} |"
            )
    lines += [
        "",
        "Classifier images/s: `predict_proba` on prepared images (the network alone). "
        "Pipeline images/s: `Pipeline.predict` end to end, every stage the model has (with a "
        "lung stage and the local detector, their exported networks run too; their mask "
        "guards are in the JSON). Guard: the change of Val accuracy and of the class recall "
        "that fell most, exported minus Keras, in points (refused: accuracy down more than 0.5 "
        "or a recall more than 1).",
        "",
        f"Command: `{result['command']}`",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--limit", type=int, default=600, help="Test images (all classes in turn).")
    parser.add_argument("--val-limit", type=int, default=600, help="Val images for the guard.")
    parser.add_argument(
        "--train-limit", type=int, default=600, help="Train images (fit, calibration)."
    )
    parser.add_argument("--calibration-limit", type=int, default=256)
    parser.add_argument("--width", type=float, default=1.0, help="VGG19 width multiplier.")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    for size in (64, 224):
        parser.add_argument(
            f"--model-{size}", type=Path, help=f"A saved {size} px pipeline to use."
        )
    parser.add_argument("--out", type=Path, default=RESULTS / "export")
    args = parser.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return
    require_data(args.data)
    warnings.simplefilter("ignore", SyntheticModelWarning)
    with tempfile.TemporaryDirectory(prefix="bench-export-") as scratch:
        root = Path(scratch)
        test = subset_tree(args.data, "Test", args.limit, root / "test")
        val = subset_tree(args.data, "Val", args.val_limit, root / "val")
        train = subset_tree(args.data, "Train", args.train_limit, root / "train")
        rows: list[dict[str, Any]] = []
        keras_rate: dict[str, float] = {}
        models: dict[str, str] = {}
        for size in args.sizes:
            given = getattr(args, f"model_{size}", None)
            models[str(size)] = _model_description(size, given, args)
            if given is None:
                fitted = Pipeline.from_dict(_pipeline_config(size, args)).fit(
                    open_source(train, layout="covid-qu-ex")
                )
                given = fitted.save(root / f"model-{size}")
            for runtime, precision in VARIANTS:
                row: dict[str, Any] = {"size": size, "runtime": runtime, "precision": precision}
                if runtime == "tensorflow":
                    row.update(status="keras", model=str(given))
                else:
                    row.update(
                        _export_variant(
                            given,
                            runtime,
                            precision,
                            into=root / f"exports-{size}",
                            val=val,
                            train=train,
                            limit=args.calibration_limit,
                        )
                    )
                if row.get("model"):
                    spec = {
                        "model": row["model"],
                        "runtime": runtime,
                        "test": str(test),
                        "batches": args.batches,
                        "rounds": args.rounds,
                    }
                    row.update(_run_child(spec))
                if runtime == "tensorflow":
                    for batch, figures in (row.get("batches") or {}).items():
                        keras_rate[f"{size}/{batch}"] = figures["images_per_s"]
                row.pop("model", None)
                rows.append(row)
                print(json.dumps(row), flush=True)
        result = {
            "rows": rows,
            "keras_rate": keras_rate,
            "models": models,
            "n_test": args.limit,
            "n_val": args.val_limit,
            "n_calibration": min(args.calibration_limit, args.train_limit),
            "cpu_features": cpu_features(),
            "openvino_capabilities": _openvino_capabilities(),
            "environment": library_environment(),
            "command": " ".join(["python", *sys.argv]),
        }
    markdown = _markdown(result)
    write_outputs(args.out, result, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
