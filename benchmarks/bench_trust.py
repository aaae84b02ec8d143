"""Benchmark: the input gate, calibration and operating points of trained pipelines.

What a user of the library runs, end to end, for each saved pipeline (by default the three
seeds ``bench_classifier_real.py`` trained on COVID-QU-Ex: Gaussian+CLAHE 64 px, VGG19-BN
x0.25 from scratch):

1. ``pipeline.fit_trust(Train, Val, trust=...)`` fits the input gate
   (:class:`covidcxr.gate.ChestXrayGate`, seeded per model) on the Train radiographs alone,
   and temperature scaling and a COVID-19 operating point (target sensitivity 0.95) on Val;
2. ``pipeline.evaluate(Test)`` scores Test once: gate acceptance, accuracy, ECE before and
   after calibration, and the operating point's sensitivity and specificity;
3. ``pipeline.predict(images)`` on the sets of ``trust_negatives.py`` (photographs, other
   modalities, noise, blank and saturated frames, and Test radiographs inverted, rotated,
   cropped or tiled): the share each set has rejected.

For the first model it also measures the alternatives the gate was chosen over, on the
same sets and with the same rule (threshold at the 99 % quantile of Val): Mahalanobis
distances on the classifier's own features at several depths (Lee et al. 2018; FRODO,
Calli et al. 2019), the energy score of its logits and its maximum softmax probability.

Targets (issue 13): reject >= 95 % of the negatives, accept >= 98 % of COVID-QU-Ex Test,
ECE <= 0.03 on Test after calibration. Results: ``benchmarks/results/trust.{json,md}``.

Run (about 10 min per model on 2 busy cores)::

    nice -n 10 python benchmarks/bench_trust.py

Smoke run::

    nice -n 10 python benchmarks/bench_trust.py --limit 150 --gate-epochs 1 \\
        --out /tmp/trust_smoke
"""

# Markdown rows read better unbroken.
# ruff: noqa: E501

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from bench_classifier_common import (
    DEFAULT_DATA,
    RESULTS,
    configure_tensorflow,
    library_environment,
    require_data,
    spread,
    write_outputs,
)
from trust_negatives import cxr_transforms, natural_images, photo_crops, synthetic

from covidcxr import Pipeline, XRay, open_source
from covidcxr.evaluate import EvaluationReport
from covidcxr.gate import ChestXrayGate
from covidcxr.records import REJECTED

COVID = "covid-19"
TMP = Path(tempfile.gettempdir())
# What bench_classifier_real.py saves (one pipeline per seed).
DEFAULT_MODELS = sorted((TMP / "covidcxr-bench-real-ckpt").glob("*/seed-*/pipeline"))
TARGET_REJECT = 0.95
TARGET_ACCEPT = 0.98
TARGET_ECE = 0.03


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models", type=Path, nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--cache-dir", type=Path, default=TMP / "covidcxr-bench-real-cache")
    parser.add_argument("--sensitivity", type=float, default=0.95)
    parser.add_argument("--gate-epochs", type=int, default=4)
    parser.add_argument("--limit", type=int, help="use only N images of each split")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "trust")
    return parser.parse_args()


def read_split(root: Path, split: str, limit: int | None) -> list[XRay]:
    items = []
    for xray in open_source(root, layout="covid-qu-ex", split=split):
        items.append(XRay(xray.pixels, xray.id, label=xray.label))
        if limit and len(items) >= limit * 3:
            break
    if limit:  # every class, in turn
        by_class: dict[str | None, list[XRay]] = {}
        for xray in items:
            by_class.setdefault(xray.label, []).append(xray)
        items = [x for group in zip(*by_class.values(), strict=False) for x in group][:limit]
    return items


def negative_sets(test: Sequence[XRay], seed: int = 0) -> tuple[dict[str, list[XRay]], list[str]]:
    rng = np.random.default_rng(seed)
    natural, unreadable = natural_images()
    natural.update(photo_crops(natural, rng))
    sets = {"photographs and other modalities": natural, "noise, blank, patterns": synthetic(rng)}
    every_fourth = [(x.id, np.asarray(x.pixels)) for x in test[::4]]
    for name, images in cxr_transforms(every_fourth, rng).items():
        sets[f"Test radiographs {name}"] = images
    return (
        {
            name: [XRay(pixels, f"{name}/{key}") for key, pixels in images.items()]
            for name, images in sets.items()
        },
        unreadable,
    )


def baselines(
    pipeline: Pipeline,
    *,
    train: list[XRay],
    val: list[XRay],
    test: list[XRay],
    negatives: dict[str, list[XRay]],
) -> dict[str, Any]:
    """Scores on the classifier's own features and logits (the rejected alternatives)."""
    import keras
    from scipy.special import logsumexp, softmax
    from sklearn.covariance import LedoitWolf

    classifier: Any = pipeline.classifier_
    model = classifier.model_
    layer = model.get_layer

    def spatial(x: Any) -> Any:
        pool = keras.layers.AveragePooling2D(pool_size=(x.shape[1] // 2, x.shape[2] // 2))
        return keras.layers.Flatten()(pool(x))

    last_conv = next(
        name
        for name in ("block5_conv4_relu", "block5_conv4")
        if any(lyr.name == name for lyr in model.layers)
    )
    outputs = {
        "block3 mean": keras.layers.GlobalAveragePooling2D()(layer("block3_pool").output),
        "block4 mean": keras.layers.GlobalAveragePooling2D()(layer("block4_pool").output),
        "block5 mean": layer("pooled_features").output,
        "block3 2x2": spatial(layer("block3_pool").output),
        "block4 2x2": spatial(layer("block4_pool").output),
        "block5 2x2": spatial(layer(last_conv).output),
        "fc1": layer("fc1").output,
    }
    features = keras.Model(model.input, outputs)
    weights, bias = layer("predictions").get_weights()
    preprocessor: Any = pipeline.preprocessor_

    def embed(xrays: Sequence[XRay]) -> dict[str, np.ndarray]:
        batch = classifier.prepare_batch([preprocessor(x) for x in xrays])
        parts: dict[str, list[np.ndarray]] = {k: [] for k in outputs}
        for start in range(0, len(batch), 256):
            out = features(batch[start : start + 256], training=False)
            for k in outputs:
                parts[k].append(np.asarray(out[k]))
        result = {k: np.concatenate(v) for k, v in parts.items()}
        result["logits"] = result["fc1"] @ weights + bias
        return result

    sets = {"train": train, "val": val, "test": test, **negatives}
    embedded = {name: embed(xrays) for name, xrays in sets.items()}
    labels = np.array([x.label for x in train])
    scores: dict[str, dict[str, np.ndarray]] = {}
    for key in outputs:

        def log1p(x: np.ndarray) -> np.ndarray:
            return np.asarray(np.log1p(np.maximum(x, 0)))

        fitted = log1p(embedded["train"][key])
        means = {c: fitted[labels == c].mean(0) for c in np.unique(labels)}
        centred = np.concatenate([fitted[labels == c] - m for c, m in means.items()])
        precision = LedoitWolf().fit(centred).precision_
        scores[f"Mahalanobis, {key}"] = {
            name: np.min(
                [
                    np.einsum("ij,jk,ik->i", log1p(e[key]) - m, precision, log1p(e[key]) - m)
                    for m in means.values()
                ],
                0,
            )
            for name, e in embedded.items()
        }
    scores["energy (logits)"] = {name: -logsumexp(e["logits"], 1) for name, e in embedded.items()}
    scores["max softmax probability"] = {
        name: -softmax(e["logits"], 1).max(1) for name, e in embedded.items()
    }
    table = {}
    for method, by_set in scores.items():
        threshold = np.quantile(by_set["val"], 0.99)
        negative = np.concatenate([by_set[name] for name in negatives])
        table[method] = {
            "test_acceptance": float(np.mean(by_set["test"] <= threshold)),
            "negatives_rejected": float(np.mean(negative > threshold)),
            "per_set_rejected": {
                name: float(np.mean(by_set[name] > threshold)) for name in negatives
            },
        }
    return table


def run_model(
    path: Path,
    *,
    seed: int,
    args: argparse.Namespace,
    train: list[XRay],
    val: list[XRay],
    test: list[XRay],
    negatives: dict[str, list[XRay]],
) -> dict[str, Any]:
    pipeline = Pipeline.load(path, cache_dir=args.cache_dir)
    start = time.perf_counter()
    pipeline.fit_trust(
        train,
        val,
        trust={
            "gate": {"seed": seed, "epochs": args.gate_epochs},
            "calibrate": True,
            "sensitivity": {COVID: args.sensitivity},
        },
    )
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    report = pipeline.evaluate(test)
    evaluate_s = time.perf_counter() - start
    assert isinstance(report, EvaluationReport)
    test_predictions = pipeline.predict(test)
    accepted_test = float(np.mean([p.status != REJECTED for p in test_predictions]))
    start = time.perf_counter()
    rejected: dict[str, float] = {}
    accepted_examples: dict[str, list[str]] = {}
    for name, xrays in negatives.items():
        predictions = pipeline.predict(xrays)
        rejected[name] = float(np.mean([p.status == REJECTED for p in predictions]))
        accepted_examples[name] = [p.id for p in predictions if p.status != REJECTED][:5]
    negatives_s = time.perf_counter() - start
    all_negative = sum(len(x) for x in negatives.values())
    pooled = sum(rejected[name] * len(x) for name, x in negatives.items()) / all_negative
    classification = report.classification
    assert classification is not None
    assert report.calibration is not None
    assert report.decisions is not None
    before = report.calibration.before
    point = pipeline.trust_.operating_points.points[0] if pipeline.trust_.operating_points else None
    recall = {s.label: s.recall for s in classification.per_class}
    return {
        "model": str(path),
        "seed": seed,
        "gate": pipeline.gate_.summary() if isinstance(pipeline.gate_, ChestXrayGate) else None,
        "test_acceptance": accepted_test,
        "negatives_rejected": pooled,
        "per_set_rejected": rejected,
        "accepted_negative_examples": accepted_examples,
        "n_negatives": all_negative,
        "temperature": pipeline.trust_.calibration.temperature_
        if pipeline.trust_.calibration
        else None,
        "ece_before": before.expected_calibration_error if before is not None else None,
        "ece_after": report.calibration.after.expected_calibration_error,
        "validation_ece": pipeline.trust_.validation,
        "accuracy_argmax_admitted": classification.accuracy,
        "recall_argmax_admitted": recall,
        "operating_point": point.to_dict() if point is not None else None,
        "test_covid_sensitivity_at_point": report.decisions.sensitivity[COVID],
        "test_covid_specificity_at_point": report.decisions.specificity[COVID],
        "test_accuracy_at_point": report.decisions.accuracy_covered,
        "notes": list(report.notes),
        "seconds": {"fit_trust": fit_s, "evaluate": evaluate_s, "negatives": negatives_s},
    }


def markdown(result: dict[str, Any]) -> str:
    runs = result["runs"]
    s = result["summary"]

    def ms(key: str, digits: int = 3) -> str:
        v = s[key]
        std = f" ± {v['std']:.{digits}f}" if v.get("std") is not None else ""
        return f"{v['mean']:.{digits}f}{std}" if v["mean"] is not None else "n/a"

    lines = [
        "# The input gate, calibration and operating points (COVID-QU-Ex)",
        "",
        f"Command: `{result['command']}`. {len(runs)} model(s) (seeds {', '.join(str(r['seed']) for r in runs)}); mean ± sample std over them.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| Test radiographs accepted by the gate | {ms('test_acceptance')} | ≥ {TARGET_ACCEPT} |",
        f"| negatives rejected (pooled, n = {runs[0]['n_negatives']}) | {ms('negatives_rejected')} | ≥ {TARGET_REJECT} |",
        f"| ECE on Test before calibration | {ms('ece_before')} | |",
        f"| ECE on Test after calibration | {ms('ece_after')} | ≤ {TARGET_ECE} |",
        f"| temperature | {ms('temperature', 2)} | |",
        f"| accuracy (argmax, admitted Test) | {ms('accuracy_argmax_admitted')} | |",
        f"| COVID-19 recall (argmax) | {ms('covid_recall_argmax')} | |",
        f"| COVID-19 sensitivity at the operating point (Test) | {ms('covid_sensitivity_at_point')} | ≥ {result['target_sensitivity']} on Val |",
        f"| COVID-19 specificity at the operating point (Test) | {ms('covid_specificity_at_point')} | |",
        f"| accuracy at the operating point (Test) | {ms('accuracy_at_point')} | |",
        "",
        "## Rejected, per set",
        "",
        "| set | n | " + " | ".join(f"seed {r['seed']}" for r in runs) + " |",
        "|---|---|" + "---|" * len(runs),
    ]
    for name, n in result["set_sizes"].items():
        lines.append(
            f"| {name} | {n} | "
            + " | ".join(f"{r['per_set_rejected'][name]:.3f}" for r in runs)
            + " |"
        )
    if result.get("baselines"):
        lines += [
            "",
            "## The alternatives, on the first model (threshold: 99 % quantile of Val)",
            "",
            "| score | Test accepted | negatives rejected |",
            "|---|---|---|",
        ]
        for method, row in result["baselines"].items():
            lines.append(
                f"| {method} | {row['test_acceptance']:.3f} | {row['negatives_rejected']:.3f} |"
            )
        lines.append(
            f"| **the gate (this library)** | {runs[0]['test_acceptance']:.3f} | {runs[0]['negatives_rejected']:.3f} |"
        )
    if result["unreadable"]:
        lines += [
            "",
            "Not in the sets (no codec installed here): " + "; ".join(result["unreadable"]),
        ]
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    require_data(args.data)
    configure_tensorflow(args.threads)
    if not args.models:
        print(
            "no saved pipelines: run bench_classifier_real.py first, or pass --models",
            file=sys.stderr,
        )
        return 2
    train = read_split(args.data, "Train", args.limit)
    val = read_split(args.data, "Val", args.limit)
    test = read_split(args.data, "Test", args.limit)
    negatives, unreadable = negative_sets(test)
    runs = []
    result: dict[str, Any] = {}
    for index, path in enumerate(args.models):
        seed = (
            int(path.parent.name.split("-")[-1]) if path.parent.name.startswith("seed-") else index
        )
        runs.append(
            run_model(
                path, seed=seed, args=args, train=train, val=val, test=test, negatives=negatives
            )
        )
        result = {
            "command": " ".join(["python", *sys.argv]),
            "target_sensitivity": args.sensitivity,
            "set_sizes": {name: len(x) for name, x in negatives.items()},
            "unreadable": unreadable,
            "runs": runs,
            "summary": {
                "test_acceptance": spread([r["test_acceptance"] for r in runs]),
                "negatives_rejected": spread([r["negatives_rejected"] for r in runs]),
                "ece_before": spread([r["ece_before"] for r in runs]),
                "ece_after": spread([r["ece_after"] for r in runs]),
                "temperature": spread([r["temperature"] for r in runs]),
                "accuracy_argmax_admitted": spread([r["accuracy_argmax_admitted"] for r in runs]),
                "covid_recall_argmax": spread([r["recall_argmax_admitted"][COVID] for r in runs]),
                "covid_sensitivity_at_point": spread(
                    [r["test_covid_sensitivity_at_point"] for r in runs]
                ),
                "covid_specificity_at_point": spread(
                    [r["test_covid_specificity_at_point"] for r in runs]
                ),
                "accuracy_at_point": spread([r["test_accuracy_at_point"] for r in runs]),
            },
            "environment": library_environment(),
        }
        write_outputs(args.out, result, markdown(result))
        print(f"model {path}: done", flush=True)
    if not args.no_baselines:
        first = Pipeline.load(args.models[0])
        result["baselines"] = baselines(first, train=train, val=val, test=test, negatives=negatives)
        write_outputs(args.out, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
