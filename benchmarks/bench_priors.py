"""A shipped model at other class mixes: as is, adjusted to the true mix, adjusted to an estimated one.

COVID-QU-Ex, and so every model trained on it, is half COVID-19 and a quarter each normal
and pneumonia. A hospital sees another mix; where most radiographs are normal, a model
taken as is calls too many of them COVID-19 or pneumonia. Under label shift (each class
looks as it did in training; only the mix changes) Bayes' rule moves the probabilities to
the new mix (:func:`covidcxr.evaluate.adjust_to_priors`), and the mix itself can be
estimated from unlabelled radiographs (:func:`covidcxr.evaluate.estimate_priors`, EM).

This benchmark predicts COVID-QU-Ex Test once with a shipped model
(``covidcxr.pretrained.load``, ``Pipeline.predict``: input gate, lung crop, calibration,
operating point, as a user runs it), then draws ``--draws`` sets of ``--n`` radiographs
without replacement at each class mix below, and scores on each:

``as shipped``
    The model's own decisions (its COVID-19 operating point, then argmax), probabilities
    as they are.
``adjusted (true mix)``
    Argmax of the probabilities adjusted to the set's true mix: the best case.
``adjusted (EM estimate)``
    The same, to the mix that EM estimates from the set's own probabilities (no label
    seen): what a user with unlabelled radiographs of their own can do.
``operating point + adjusted``
    What ``Pipeline.set_priors`` does (its own decision rule, ``pipeline.trust_``): the
    COVID-19 threshold on the probabilities at the training mix (a class's sensitivity
    does not depend on the mix, so the operating point keeps its promise), argmax of the
    adjusted probabilities otherwise; with the EM estimate, as ``covidcxr predict
    --priors estimate`` does.

Figures: accuracy, balanced accuracy (mean recall), each class's recall and the ECE of
the probabilities used, mean ± std over the draws; and the EM estimate's error (the
largest difference of a class share). The draws reuse Test radiographs (this is one
dataset at several mixes, not another hospital): it measures what reweighting does under
label shift, not how a model fares elsewhere, where radiographs also look different.

    nice -n 5 python benchmarks/bench_priors.py

Writes ``results/priors.json`` and ``.md``; ``--limit N`` predicts N radiographs only
(a smoke run, with smaller sets).
"""

# Markdown rows read better unbroken.
# ruff: noqa: E501

from __future__ import annotations

import argparse
import sys
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
from numpy.typing import NDArray

import covidcxr.pretrained
from covidcxr import open_source
from covidcxr.evaluate import adjust_to_priors, estimate_priors, expected_calibration_error

#: Class mixes (COVID-19, normal, pneumonia): the training mix, and three others.
MIXES: dict[str, tuple[float, float, float]] = {
    "COVID-QU-Ex (the training mix)": (0.50, 0.25, 0.25),
    "mostly normal (an outpatient clinic)": (0.05, 0.75, 0.20),
    "mostly pneumonia (a respiratory ward)": (0.10, 0.30, 0.60),
    "mostly COVID-19 (a pandemic wave)": (0.70, 0.15, 0.15),
}
METHODS = (
    "as shipped",
    "adjusted (true mix)",
    "adjusted (EM estimate)",
    "operating point + adjusted",
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="covid-qu-ex", help="a shipped model's name")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=380, help="radiographs per drawn set")
    parser.add_argument("--draws", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, help="predict N Test radiographs only (smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS / "priors")
    return parser.parse_args()


def draw(
    truth: NDArray[np.intp], mix: Sequence[float], n: int, rng: np.random.Generator
) -> NDArray[np.intp]:
    """Indices of ``n`` radiographs at ``mix``, without replacement (an error if too few)."""
    counts = np.round(np.asarray(mix) * n).astype(int)
    picked = []
    for c, k in enumerate(counts):
        pool = np.flatnonzero(truth == c)
        if k > pool.size:
            raise SystemExit(
                f"the mix {mix} needs {k} radiographs of class {c}; Test has {pool.size}"
            )
        picked.append(rng.choice(pool, size=k, replace=False))
    return np.concatenate(picked)


def decide(
    method: str,
    *,
    probs: NDArray[np.float64],
    shipped: NDArray[np.intp],
    training: NDArray[np.float64],
    mix: NDArray[np.float64],
    trust: Any,
    classes: list[str],
) -> tuple[NDArray[np.intp], NDArray[np.float64], dict[str, Any]]:
    """The decisions and probabilities of one method on one set, and what it estimated."""
    if method == "as shipped":
        return shipped, probs, {}
    if method == "adjusted (true mix)":
        adjusted = adjust_to_priors(probs, training, mix)
        return adjusted.argmax(axis=1), adjusted, {}
    estimate = estimate_priors(probs, training)
    adjusted = adjust_to_priors(probs, training, estimate.priors)
    facts = {
        "error": float(np.abs(np.asarray(estimate.priors) - mix).max()),
        "converged": estimate.converged,
    }
    decided = adjusted.argmax(axis=1)
    if method == "operating point + adjusted":
        # The library's own decision rule, as Pipeline.set_priors applies it.
        verdicts = trust.decide_rows(probs, classes, adjusted=adjusted)
        decided = np.array([classes.index(label) for label, _, _ in verdicts], dtype=np.intp)
    return decided, adjusted, facts


def score(
    decided: NDArray[np.intp],
    probs: NDArray[np.float64],
    truth: NDArray[np.intp],
    classes: Sequence[str],
) -> dict[str, float]:
    """Accuracy, balanced accuracy and recalls of the decisions; ECE of the probabilities."""
    recalls = {c: float(np.mean(decided[truth == i] == i)) for i, c in enumerate(classes)}
    return {
        "accuracy": float(np.mean(decided == truth)),
        "balanced_accuracy": float(np.mean(list(recalls.values()))),
        **{f"recall_{label}": value for label, value in recalls.items()},
        "ece": float(expected_calibration_error(probs, truth)),
    }


def main() -> int:
    args = parse_args()
    require_data(args.data)
    configure_tensorflow(args.threads)
    pipeline = covidcxr.pretrained.load(args.model)
    classes = list(pipeline.classes_)
    images = list(open_source(args.data, layout="covid-qu-ex", split="Test"))
    if args.limit:
        images = images[:: max(1, len(images) // args.limit)][: args.limit]
    started = time.perf_counter()
    predictions = pipeline.predict(images)
    seconds = time.perf_counter() - started
    kept = [(x, p) for x, p in zip(images, predictions, strict=True) if p.probabilities]
    truth = np.array([classes.index(str(x.label)) for x, _ in kept], dtype=np.intp)
    probs = np.array([[p.probabilities[c] for c in classes] for _, p in kept], dtype=np.float64)
    shipped = np.array([classes.index(p.label) if p.label in classes else -1 for _, p in kept])
    shares = pipeline.training_priors()
    training = np.array([shares[c] for c in classes], dtype=np.float64)
    n = min(args.n, len(kept) // 5) if args.limit else args.n
    rows: dict[str, dict[str, Any]] = {}
    for mix_name, mix in MIXES.items():
        target = np.asarray(mix)
        per_method: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
        errors: list[float | None] = []
        for seed in range(args.draws):
            chosen = draw(truth, mix, n, np.random.default_rng(seed))
            for method in METHODS:
                decided, used, facts = decide(
                    method,
                    probs=probs[chosen],
                    shipped=shipped[chosen],
                    training=training,
                    mix=target,
                    trust=pipeline.trust_,
                    classes=classes,
                )
                per_method[method].append(score(decided, used, truth[chosen], classes))
                if method == "adjusted (EM estimate)":
                    errors.append(facts["error"])
        rows[mix_name] = {
            "mix": dict(zip(classes, mix, strict=True)),
            "em_error": spread(errors),
            "methods": {
                method: {key: spread([r[key] for r in runs]) for key in runs[0]}
                for method, runs in per_method.items()
            },
        }
    result = {
        "model": args.model,
        "command": "python benchmarks/bench_priors.py " + " ".join(sys.argv[1:]),
        "n_test": len(images),
        "n_scored": len(kept),
        "n_per_set": n,
        "draws": args.draws,
        "predict_seconds": round(seconds, 1),
        "training_mix": dict(zip(classes, training.tolist(), strict=True)),
        "environment": library_environment(),
        "mixes": rows,
    }
    write_outputs(args.out, result, markdown(result, classes))
    print(markdown(result, classes))
    return 0


def _cell(entry: dict[str, Any]) -> str:
    mean, std = entry["mean"], entry["std"]
    return (
        "n/a" if mean is None else f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"
    )


def markdown(result: dict[str, Any], classes: Sequence[str]) -> str:
    lines = [
        f"# Class mix: `{result['model']}` at other hospitals' mixes (label shift)",
        "",
        f"COVID-QU-Ex Test predicted once through `Pipeline.predict` ({result['n_scored']} of "
        f"{result['n_test']} admitted by the input gate, {result['predict_seconds']} s), then "
        f"{result['draws']} sets of {result['n_per_set']} radiographs drawn without replacement "
        "at each mix; mean ± std over the sets. The sets reuse one dataset's radiographs: this "
        "measures reweighting under label shift, not another hospital. Training mix: "
        + ", ".join(f"{c} {v:.2f}" for c, v in result["training_mix"].items())
        + f". `{result['command']}`",
        "",
    ]
    for mix_name, row in result["mixes"].items():
        mix = ", ".join(f"{c} {v:.2f}" for c, v in row["mix"].items())
        lines += [
            f"## {mix_name}: {mix}",
            "",
            f"EM estimate of the mix: largest error of a class share {_cell(row['em_error'])}.",
            "",
            "| method | accuracy | balanced accuracy | "
            + " | ".join(f"recall {c}" for c in classes)
            + " | ECE |",
            "|---|---|---|" + "---|" * len(classes) + "---|",
        ]
        for method, figures in row["methods"].items():
            cells = [figures["accuracy"], figures["balanced_accuracy"]]
            cells += [figures[f"recall_{c}"] for c in classes] + [figures["ece"]]
            lines.append(f"| {method} | " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
