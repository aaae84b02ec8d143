"""Films mirrored left to right: does a shipped model notice, and does its answer change?

A radiograph exported or scanned the wrong way round shows the heart on the image's
left. The classifier is trained on films the right way round and learns where the heart
is, so on a mirrored film it may answer otherwise; the input gate's eight versions are
rotations and inversions, so a gate without its mirror check lets such a film through.

This benchmark takes ``--per-class`` (290) radiographs of each class of COVID-QU-Ex Test
and predicts each as it is and mirrored through ``Pipeline.predict`` of the shipped
model, with the gate's mirror check on (as shipped) and off
(``gate_.set_params(mirror=False)``: the gate as it was before the check), side by side in
one run. Figures per arm: the share of radiographs the gate admits, as they are and
mirrored; accuracy as they are; and, among the mirrored films the gate admits, the share
whose label differs from the same film's label as it is (both admitted), and their
accuracy. A refused or uncertain radiograph counts as not correct.

    nice -n 5 python benchmarks/bench_mirror.py

Writes ``results/mirror.json`` and ``.md``.
"""

# Markdown rows read better unbroken.
# ruff: noqa: E501

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_classifier_common import (
    DEFAULT_DATA,
    RESULTS,
    configure_tensorflow,
    library_environment,
    require_data,
    write_outputs,
)
from bench_scale import sample  # the first radiographs of each class of Test, as there

import covidcxr.pretrained
from covidcxr import Prediction, XRay


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models", nargs="+", default=list(covidcxr.pretrained.available()))
    parser.add_argument("--per-class", type=int, default=290)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "mirror")
    return parser.parse_args()


def mirrored(images: list[XRay]) -> list[XRay]:
    """Each radiograph mirrored left to right (its label kept)."""
    return [
        XRay(np.ascontiguousarray(np.asarray(x.pixels)[:, ::-1]), x.id, label=x.label)
        for x in images
    ]


def figures(
    as_is: list[Prediction], flipped: list[Prediction], images: list[XRay]
) -> dict[str, Any]:
    truth = [str(x.label) for x in images]
    admitted = [p.status != "rejected" for p in flipped]
    # Label changes are counted where the gate admitted the film both ways round.
    pairs = [
        (a.label, b.label, t)
        for a, b, t, ok in zip(as_is, flipped, truth, admitted, strict=True)
        if ok and a.status != "rejected"
    ]
    return {
        "admitted_as_is": float(np.mean([p.status != "rejected" for p in as_is])),
        "accuracy_as_is": float(np.mean([p.label == t for p, t in zip(as_is, truth, strict=True)])),
        "admitted_mirrored": float(np.mean(admitted)),
        "refused_mirrored_as_mirrored": float(
            np.mean([p.status == "rejected" and "mirrored" in (p.reason or "") for p in flipped])
        ),
        "n_mirrored_admitted": len(pairs),
        "label_changed_among_admitted_mirrored": float(np.mean([a != b for a, b, _ in pairs]))
        if pairs
        else None,
        "accuracy_among_admitted_mirrored": float(np.mean([b == t for _, b, t in pairs]))
        if pairs
        else None,
    }


def main() -> int:
    args = parse_args()
    require_data(args.data)
    configure_tensorflow(args.threads)
    images = sample(args.data, args.per_class)
    flipped = mirrored(images)
    rows: dict[str, dict[str, Any]] = {}
    checks: dict[str, Any] = {}
    started = time.perf_counter()
    for name in args.models:
        pipeline = covidcxr.pretrained.load(name)
        gate = pipeline.gate_
        checks[name] = getattr(gate, "mirror_", None)
        for arm, on in (("mirror check on (as shipped)", True), ("mirror check off", False)):
            gate.set_params(mirror=on)  # type: ignore[union-attr]
            row = figures(pipeline.predict(images), pipeline.predict(flipped), images)
            rows[f"{name} | {arm}"] = row
            print(name, arm, row, flush=True)
    result = {
        "models": args.models,
        "command": "python benchmarks/bench_mirror.py " + " ".join(sys.argv[1:]),
        "n_images": len(images),
        "seconds": round(time.perf_counter() - started, 1),
        "environment": library_environment(),
        "mirror_checks": checks,
        "arms": rows,
    }
    write_outputs(args.out, result, markdown(result))
    print(markdown(result))
    return 0


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _threshold(value: float | None) -> str:
    return "none" if value is None else f"{value:.5f} (probability that a film is mirrored)"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Films mirrored left to right",
        "",
        f"{result['n_images']} COVID-QU-Ex Test radiographs (the first of each class), each "
        "predicted as it is and mirrored left to right through `Pipeline.predict` of the "
        "shipped model, with the input gate's mirror check on and off. A refused or "
        "uncertain radiograph counts as not correct. Label changed: among the mirrored "
        "films the gate admits (as it is too), the share whose label differs from the same film's as it is. "
        f"`{result['command']}` ({result['seconds']} s)",
        "",
        "| model | gate | admitted as is | accuracy as is | admitted mirrored | refused as mirrored | label changed (admitted mirrored) | accuracy (admitted mirrored) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, row in result["arms"].items():
        model, arm = key.split(" | ")
        lines.append(
            f"| `{model}` | {arm} | {row['admitted_as_is']:.3f} | {row['accuracy_as_is']:.3f} | "
            f"{row['admitted_mirrored']:.3f} | {row['refused_mirrored_as_mirrored']:.3f} | "
            f"{_share(row['label_changed_among_admitted_mirrored'])} | "
            f"{_share(row['accuracy_among_admitted_mirrored'])} |"
        )
    lines += ["", "The mirror checks as fitted (held-out COVID-QU-Ex Train radiographs):", ""]
    for model, check in result["mirror_checks"].items():
        if not check:
            lines.append(f"- `{model}`: none")
            continue
        lines.append(
            f"- `{model}`: threshold {_threshold(check.get('threshold'))}; of {check['n_holdout']} "
            f"held-out radiographs, accepted {check['holdout_accepted']:.3f} as they are and "
            f"refused {check['holdout_mirrored_refused']:.3f} mirrored"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
