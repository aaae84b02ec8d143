"""The same radiographs at other sizes: does a shipped model give the same answers?

COVID-QU-Ex radiographs are 256 x 256 px; hospital films are ten times larger. The
published preprocessing (5x5 Gaussian blur, then CLAHE, then resize to the model's size)
blurs a fixed number of pixels, so on a large film it blurs far less anatomy than on the
training radiographs, and the model sees sharper images than it learned from. The
preprocessor's ``working_size`` enhances every radiograph at one scale (the shipped models:
256, their training radiographs' size).

This benchmark takes ``--per-class`` (290) radiographs of each class of COVID-QU-Ex Test,
enlarges each (cubic interpolation) to every ``--sizes`` side, and predicts them through
``Pipeline.predict`` with the shipped model, as a user runs it:

``without working size``
    The model as shipped before the working size (``Pipeline.load`` of it, its
    preprocessor's ``working_size`` taken away again: the published method).
``working size 256``
    The model as shipped now.

Figures per size: accuracy, each class's recall, the share admitted by the input gate,
and the share of radiographs whose label differs from the 256 px one. Enlarged 256 px
images are smoother than native large films (no detail is added), so this isolates the
scale of the preprocessing; it is not data from another hospital.

    nice -n 5 python benchmarks/bench_scale.py

Writes ``results/scale.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import cv2
import numpy as np
from bench_classifier_common import (
    DEFAULT_DATA,
    RESULTS,
    configure_tensorflow,
    library_environment,
    require_data,
    write_outputs,
)

import covidcxr.pretrained
from covidcxr import Pipeline, Prediction, XRay, open_source
from covidcxr.preprocess import GaussianClahePreprocessor


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", default="covid-qu-ex")
    parser.add_argument("--per-class", type=int, default=290)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "scale")
    return parser.parse_args()


def sample(data: Path, per_class: int) -> list[XRay]:
    """The first ``per_class`` radiographs of each class of Test, in file order."""
    chosen: dict[str, list[XRay]] = {}
    for xray in open_source(data, layout="covid-qu-ex", split="Test"):
        group = chosen.setdefault(str(xray.label), [])
        if len(group) < per_class:
            group.append(xray)
    return [xray for group in chosen.values() for xray in group]


def enlarged(images: list[XRay], size: int) -> list[XRay]:
    out = []
    for xray in images:
        pixels = np.asarray(xray.pixels)
        if pixels.shape != (size, size):
            pixels = cv2.resize(pixels, (size, size), interpolation=cv2.INTER_CUBIC)
        out.append(XRay(pixels, id=xray.id, label=xray.label))
    return out


def without_working_size(pipeline: Pipeline) -> Pipeline:
    """The pipeline enhancing at each radiograph's own size, as before the working size."""
    preprocessor = pipeline.preprocessor_
    if not isinstance(preprocessor, GaussianClahePreprocessor):
        raise TypeError(f"{preprocessor!r} has no working size")
    pipeline.preprocessor_ = attrs.evolve(preprocessor, working_size=None)
    for component in (pipeline.classifier_, pipeline.detector_, pipeline.lungs_.segmenter):  # type: ignore[union-attr]
        recorded = getattr(component, "preprocessing_", None)
        if isinstance(recorded, dict):
            component.preprocessing_ = {  # type: ignore[union-attr]
                k: v for k, v in recorded.items() if k != "working_size"
            }
    return pipeline


def figures(
    predictions: list[Prediction], images: list[XRay], reference: list[str] | None
) -> dict[str, Any]:
    classes = sorted({str(x.label) for x in images})
    truth = [str(x.label) for x in images]
    labels = [p.label for p in predictions]
    admitted = [p.status != "rejected" for p in predictions]
    result: dict[str, Any] = {
        "accuracy": float(np.mean([a == b for a, b in zip(labels, truth, strict=True)])),
        "admitted": float(np.mean(admitted)),
        **{
            f"recall_{c}": float(
                np.mean([lab == c for lab, t in zip(labels, truth, strict=True) if t == c])
            )
            for c in classes
        },
    }
    if reference is not None:
        result["label_changed"] = float(
            np.mean([a != b for a, b in zip(labels, reference, strict=True)])
        )
    return result


def main() -> int:
    args = parse_args()
    require_data(args.data)
    configure_tensorflow(args.threads)
    images = sample(args.data, args.per_class)
    arms = {
        "without working size": without_working_size(covidcxr.pretrained.load(args.model)),
        "working size 256": covidcxr.pretrained.load(args.model),
    }
    rows: dict[str, dict[str, Any]] = {arm: {} for arm in arms}
    reference: dict[str, list[str]] = {}
    started = time.perf_counter()
    for size in args.sizes:
        batch = enlarged(images, size)
        for arm, pipeline in arms.items():
            predictions = pipeline.predict(batch)
            if size == args.sizes[0]:
                reference[arm] = [p.label for p in predictions]
            rows[arm][str(size)] = figures(predictions, batch, reference[arm])
            print(size, arm, rows[arm][str(size)], flush=True)
    result = {
        "model": args.model,
        "command": "python benchmarks/bench_scale.py " + " ".join(sys.argv[1:]),
        "n_images": len(images),
        "sizes": args.sizes,
        "seconds": round(time.perf_counter() - started, 1),
        "environment": library_environment(),
        "arms": rows,
    }
    write_outputs(args.out, result, markdown(result))
    print(markdown(result))
    return 0


def markdown(result: dict[str, Any]) -> str:
    sizes = [str(s) for s in result["sizes"]]
    lines = [
        f"# The same radiographs at other sizes: `{result['model']}`",
        "",
        f"{result['n_images']} COVID-QU-Ex Test radiographs (the first of each class, 256 px), "
        "enlarged with cubic interpolation and predicted through `Pipeline.predict`. "
        "Accuracy counts a radiograph the input gate refuses, or the model is uncertain of, "
        f"as not correct; label changed: the share whose label differs from the {sizes[0]} px one. "
        f"`{result['command']}` ({result['seconds']} s)",
        "",
        "| preprocessing | side (px) | accuracy | "
        + " | ".join(
            f"recall {k.removeprefix('recall_')}"
            for k in result["arms"]["working size 256"][sizes[0]]
            if k.startswith("recall_")
        )
        + " | admitted | label changed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, by_size in result["arms"].items():
        for size in sizes:
            row = by_size[size]
            recalls = [v for k, v in row.items() if k.startswith("recall_")]
            lines.append(
                f"| {arm} | {size} | {row['accuracy']:.3f} | "
                + " | ".join(f"{v:.3f}" for v in recalls)
                + f" | {row['admitted']:.3f} | {row['label_changed']:.3f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
