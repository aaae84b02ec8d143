"""How much each classifier reads outside the lungs: radiographs with the lung fields removed, or alone.

COVID-QU-Ex mixes sources (paediatric normals and pneumonias, adult COVID-19), so a
classifier can score well on its own Test split from what lies outside the lungs: body
size, borders, text markers, devices (DeGrave et al. 2021, "AI for radiographic COVID-19
detection selects shortcuts over signal"). Such a model fails on radiographs from other
hospitals. This benchmark asks each model the question directly, on COVID-QU-Ex Val and
its lung masks (Test has none in the shared data; Val chose each model's epoch and fitted
its calibration, so its intact accuracy is a little optimistic, but what is measured here
is how far accuracy moves when the lungs are removed or kept alone):

``intact``
    The radiographs as they are.
``lungs_removed``
    The lung fields (the mask, dilated by ``--margin`` of the side so that their edges go
    too) filled with one flat grey, the image's median: what is left is everything a
    diagnosis should not rest on. A model that reads the lungs falls to chance here:
    balanced accuracy (the mean of the class recalls) 1/3, accuracy about the
    majority-class rate (the share of COVID-19 in Val, 0.50). What it keeps above that,
    it reads elsewhere.
``lungs_only``
    Everything outside the dilated lung fields filled the same way: the evidence a
    radiologist would use. A model that reads the lungs keeps much of its accuracy. This
    condition is the weaker test: a flat surround is itself unlike any training image, so
    a whole-frame model's fall here mixes what it reads outside the lungs with the
    change of the frame, which a lung-crop model (its crop is mostly lung) hardly sees.

Each condition is scored twice through the public API:

- **classifier**: ``pipeline.classifier_inputs`` (preprocessing, and the lung crop for a
  model with a lung stage, which then segments the altered image itself) and
  ``pipeline.classifier_.predict_proba``, the input gate left out, scored by
  :class:`covidcxr.ClassificationEvaluator`; with the share of radiographs whose class
  differs from the intact one;
- **pipeline**: ``pipeline.predict`` as a user runs it, input gate included: the share the
  gate refuses (an altered radiograph is not like the training ones, and a gate that
  refuses it protects the user), the share marked uncertain (a model with a lung stage
  abstains when it finds no lungs) and the accuracy on what the gate admits (abstentions
  scored by their most probable class, as the evaluator scores them).

Models: the saved pipelines of classifier-study arms (``--arms``, from
``results/classifier_study/<arm>.json``; the seeds' figures are given one by one and as
mean ± std) and shipped models (``--shipped``, by name; all of them by default)::

    nice -n 5 python benchmarks/bench_shortcuts.py --arms whole-frame-64 lung-crop-64 \\
        whole-frame-128

Writes ``results/shortcuts.json`` and ``.md``; ``--append`` keeps the models already there
(a model group scored again is replaced), so that models trained later can be added.
``--limit N`` scores N images (the classes in turn): a smoke run.
"""

# Markdown rows read better unbroken.
# ruff: noqa: E501

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from bench_classifier_common import (
    DEFAULT_DATA,
    RESULTS,
    configure_tensorflow,
    environment,
    require_data,
    spread,
    write_outputs,
)
from bench_classifier_real import _ms

from covidcxr import ClassificationEvaluator, GroundTruth, Pipeline, Prediction, XRay, open_source
from covidcxr.errors import NoLungsFoundWarning
from covidcxr.evaluate import OneClassPredictionWarning
from covidcxr.records import REJECTED, UNCERTAIN

CONDITIONS = ("intact", "lungs_removed", "lungs_only")
LABELS = ("covid-19", "normal", "pneumonia")
LUNG_MASK = "lung_mask"
#: The lung masks are dilated by this share of the side (``--margin``).
MARGIN = 0.03


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--arms", nargs="*", default=[], help="classifier-study arms")
    parser.add_argument(
        "--study-results", type=Path, default=RESULTS / "classifier_study", help="their results"
    )
    parser.add_argument(
        "--shipped", nargs="*", help="shipped model names (default: every shipped model)"
    )
    parser.add_argument(
        "--margin", type=float, default=MARGIN, help="lung masks dilated by this share of the side"
    )
    parser.add_argument("--split", default="Val", help="a split with lung masks (Train or Val)")
    parser.add_argument("--limit", type=int, help="N images: a smoke run")
    parser.add_argument("--n-bootstrap", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "shortcuts")
    parser.add_argument(
        "--append", action="store_true", help="keep the groups already in --out's results"
    )
    return parser.parse_args()


def split_images(root: Path, split: str, limit: int | None) -> list[XRay]:
    """A COVID-QU-Ex split with lung masks (``limit``: that many, the classes in turn)."""
    images = list(open_source(root, layout="covid-qu-ex", split=split, load_masks=True))
    missing = [x.id for x in images if LUNG_MASK not in x.meta]
    if missing:
        sys.exit(f"{len(missing)} {split} images have no lung mask (first: {missing[0]})")
    if not limit:
        return images
    by_class: dict[str | None, list[XRay]] = {}
    for xray in images:
        by_class.setdefault(xray.label, []).append(xray)
    return [x for group in zip(*by_class.values(), strict=False) for x in group][:limit]


def lung_region(xray: XRay, margin: float) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """The lung mask, at the image's size, dilated by ``margin`` of its longer side."""
    pixels = np.asarray(xray.pixels)
    mask = np.asarray(xray.meta[LUNG_MASK]) > 0
    if mask.shape != pixels.shape[:2]:
        mask = (
            cv2.resize(
                mask.astype(np.uint8),
                (pixels.shape[1], pixels.shape[0]),
                interpolation=cv2.INTER_NEAREST,
            )
            > 0
        )
    radius = round(margin * max(pixels.shape[:2]))
    if radius > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.dilate(mask.astype(np.uint8), kernel) > 0
    return mask


def altered(xray: XRay, condition: str, margin: float) -> XRay:
    """``xray`` under ``condition``: its lung region, or the rest, filled with its median."""
    if condition == "intact":
        return xray
    pixels = np.array(xray.pixels, copy=True)
    lungs = lung_region(xray, margin)
    fill = np.median(pixels)
    pixels[lungs if condition == "lungs_removed" else ~lungs] = fill
    # Whatever lesions it had are gone or cut: its boxes are unknown, not absent.
    return XRay(
        pixels, id=xray.id, label=xray.label, patient_id=xray.patient_id, meta={"annotated": False}
    )


#: How a model card names the lungs-removed evaluation (``build_pretrained.py``).
LUNGS_REMOVED_SOURCE = (
    "COVID-QU-Ex Val with the lung fields filled flat grey (benchmarks/bench_shortcuts.py): "
    "a model that reads the lungs falls to chance here, macro recall 1/3"
)


def classifier_scores(
    pipeline: Pipeline, images: Sequence[XRay], n_bootstrap: int
) -> tuple[dict[str, Any], list[str]]:
    """Scores of the classifier alone (no input gate) and each image's predicted class."""
    inputs = pipeline.classifier_inputs(images)
    probabilities = pipeline.classifier_.predict_proba(inputs)
    classes = list(pipeline.classifier_.classes_)
    predictions = [
        Prediction(
            xray.id,
            classes[int(row.argmax())],
            dict(zip(classes, map(float, row), strict=True)),
        )
        for xray, row in zip(images, probabilities, strict=True)
    ]
    report = ClassificationEvaluator(n_bootstrap=n_bootstrap, seed=0).evaluate(
        [GroundTruth.of(x) for x in images],
        predictions,
        classes=sorted(classes),
        detections=False,
    )
    return figures(report), [p.label for p in predictions]


def pipeline_scores(pipeline: Pipeline, images: Sequence[XRay], n_bootstrap: int) -> dict[str, Any]:
    """``pipeline.predict`` with its gate: the shares refused and abstained on, the accuracy
    of the admitted (abstentions scored by their most probable class)."""
    predictions = pipeline.predict(images)
    refused = sum(p.status == REJECTED for p in predictions)
    uncertain = sum(p.status == UNCERTAIN for p in predictions)
    admitted = [
        (GroundTruth.of(x), p) for x, p in zip(images, predictions, strict=True) if p.probabilities
    ]
    scored: dict[str, Any] = {
        "n_images": len(images),
        "refused_share": refused / len(images),
        "uncertain_share": uncertain / len(images),
    }
    if admitted:
        truths, kept = zip(*admitted, strict=True)
        report = ClassificationEvaluator(n_bootstrap=n_bootstrap, seed=0).evaluate(
            list(truths), list(kept), classes=sorted(pipeline.classes_), detections=False
        )
        scored["admitted"] = figures(report)
    return scored


def figures(report: Any) -> dict[str, Any]:
    """Accuracy and each class's recall, from an evaluation report."""
    metrics = report.classification
    recall = {scores.label: scores.recall for scores in metrics.per_class}
    return {
        "n_images": metrics.n_images,
        "accuracy": metrics.accuracy,
        "recall": {label: recall.get(label) for label in LABELS},
        "confusion_matrix": [list(map(int, row)) for row in metrics.confusion_matrix],
    }


def score_model(
    name: str, load: Callable[[], Pipeline], images: Sequence[XRay], args: argparse.Namespace
) -> dict[str, Any]:
    """Every condition for one model."""
    pipeline = load()
    result: dict[str, Any] = {"model": name, "lung_stage": pipeline.lungs_ is not None}
    intact_labels: list[str] = []
    for condition in CONDITIONS:
        started = time.perf_counter()
        shown = [altered(x, condition, args.margin) for x in images]
        with warnings.catch_warnings():
            # Expected on altered radiographs, and part of the result: the lung stage
            # finding no lungs (it falls back to the whole frame), a model answering one
            # class for everything.
            warnings.simplefilter("ignore", NoLungsFoundWarning)
            warnings.simplefilter("ignore", OneClassPredictionWarning)
            classifier, labels = classifier_scores(pipeline, shown, args.n_bootstrap)
            gated = pipeline_scores(pipeline, shown, args.n_bootstrap)
        if condition == "intact":
            intact_labels = labels
        classifier["changed_from_intact"] = float(
            np.mean([a != b for a, b in zip(labels, intact_labels, strict=True)])
        )
        result[condition] = {
            "classifier": classifier,
            "pipeline": gated,
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(
            f"{name} {condition}: accuracy {classifier['accuracy']:.3f}, changed "
            f"{classifier['changed_from_intact']:.3f}, refused {gated['refused_share']:.3f}",
            flush=True,
        )
    return result


def models(args: argparse.Namespace) -> list[tuple[str, str, Callable[[], Pipeline]]]:
    """``(group, name, loader)`` of every model asked for."""
    from covidcxr import pretrained

    found: list[tuple[str, str, Callable[[], Pipeline]]] = []
    for arm in args.arms:
        path = args.study_results / f"{arm}.json"
        if not path.is_file():
            sys.exit(f"no results for arm {arm} at {path}")
        for seed in json.loads(path.read_text())["per_seed"]:
            saved = Path(seed["saved_pipeline"])
            if not (saved / "pipeline.json").is_file():
                sys.exit(f"{arm} seed {seed['seed']}: its saved pipeline {saved} is gone")
            found.append((arm, f"{arm}/{seed['seed']}", partial(Pipeline.load, saved)))
    shipped = list(pretrained.available()) if args.shipped is None else args.shipped
    found += [(name, name, partial(pretrained.load, name)) for name in shipped]
    return found


def balanced_accuracy(figures: dict[str, Any]) -> float | None:
    """The mean of the class recalls: 1/3 for a model that ignores its input, whatever it says."""
    recalls = [value for value in figures["recall"].values() if value is not None]
    return float(np.mean(recalls)) if recalls else None


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over the models of one group, per condition."""
    summary: dict[str, Any] = {}
    for condition in CONDITIONS:
        rows = [r[condition] for r in results]
        summary[condition] = {
            "accuracy": spread([r["classifier"]["accuracy"] for r in rows]),
            "balanced_accuracy": spread([balanced_accuracy(r["classifier"]) for r in rows]),
            "recall": {
                label: spread([r["classifier"]["recall"][label] for r in rows]) for label in LABELS
            },
            "changed_from_intact": spread([r["classifier"]["changed_from_intact"] for r in rows]),
            "refused_share": spread([r["pipeline"]["refused_share"] for r in rows]),
            "uncertain_share": spread([r["pipeline"].get("uncertain_share") for r in rows]),
            "admitted_accuracy": spread(
                [r["pipeline"].get("admitted", {}).get("accuracy") for r in rows]
            ),
        }
    return summary


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Shortcuts: how much each classifier reads outside the lungs",
        "",
        f"COVID-QU-Ex {result['split']} ({result['n_images']} radiographs, majority-class rate "
        f"{result['majority_rate']:.3f}). `lungs_removed`: the lung fields (the dataset's "
        f"lung masks dilated by {result['margin']:.0%} of the side) filled with the image's "
        "median grey; `lungs_only`: everything else filled so. Classifier: "
        "`classifier_inputs` + `classifier_.predict_proba`, no input gate, scored by "
        "`ClassificationEvaluator`. Pipeline: `Pipeline.predict` with its input gate (a model "
        "with a lung stage marks a radiograph uncertain when it finds no lungs). Mean ± "
        "std over an arm's seeds.",
        "",
        "With the lungs removed, a model that reads them falls to chance: balanced accuracy "
        "(the mean of the class recalls) 1/3, accuracy about the majority-class rate. What "
        "it keeps above that comes from outside the lungs (body size, borders, markers) and "
        "does not carry to other hospitals. With the lungs alone the surround is flat, which "
        "no training image had: a whole-frame model's fall there mixes reliance on the "
        "surround with that change of frame, so `lungs_removed` is the cleaner test.",
        "",
        "| model | seeds | condition | classifier accuracy | balanced accuracy | recall covid-19 | recall normal | recall pneumonia | class changed from intact | gate refused | marked uncertain | accuracy of the admitted |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group in result["groups"]:
        for condition in CONDITIONS:
            figures = group["summary"][condition]
            lines.append(
                f"| `{group['group']}` | {len(group['models'])} | {condition} | "
                f"{_ms(figures['accuracy'], 3)} | {_ms(figures['balanced_accuracy'], 3)} | "
                + " | ".join(_ms(figures["recall"][label], 3) for label in LABELS)
                + f" | {_ms(figures['changed_from_intact'], 3)} | {_ms(figures['refused_share'], 3)} | "
                f"{_ms(figures['uncertain_share'], 3)} | "
                f"{_ms(figures['admitted_accuracy'], 3)} |"
            )
    lines += ["", "Commands:", ""]
    lines += [f"- `{command}`" for command in result["commands"]]
    lines.append("")
    return "\n".join(lines)


def appended(path: Path, result: dict[str, Any]) -> dict[str, Any]:
    """``result`` merged into the results at ``path``: their other groups kept, in order.

    Refuses (exits) when the results there were measured differently (split, images,
    margin), so that the table never mixes conditions.
    """
    if not path.is_file():
        return result
    earlier = json.loads(path.read_text())
    for key in ("split", "n_images", "class_counts", "margin", "limit"):
        if earlier.get(key) != result[key]:
            sys.exit(f"{path} was measured with {key}={earlier.get(key)!r}, not {result[key]!r}")
    new = {group["group"]: group for group in result["groups"]}
    kept = [
        {**group, "summary": summarise(group["models"])}  # summarised as this version does
        for group in earlier["groups"]
        if group["group"] not in new
    ]
    return {
        **result,
        "groups": kept + result["groups"],
        "commands": [*earlier["commands"], *result["commands"]],
    }


def main() -> int:
    args = parse_args()
    require_data(args.data)
    configure_tensorflow(args.threads)
    images = split_images(args.data, args.split, args.limit)
    counts = {label: sum(x.label == label for x in images) for label in LABELS}
    groups: dict[str, list[dict[str, Any]]] = {}
    for group, name, load in models(args):
        groups.setdefault(group, []).append(score_model(name, load, images, args))
    command = "python benchmarks/bench_shortcuts.py " + " ".join(sys.argv[1:])
    result = {
        "benchmark": "shortcuts",
        "data": str(args.data),
        "split": args.split,
        "n_images": len(images),
        "class_counts": counts,
        "majority_rate": max(counts.values()) / len(images),
        "margin": args.margin,
        "limit": args.limit,
        "groups": [
            {"group": group, "models": results, "summary": summarise(results)}
            for group, results in groups.items()
        ],
        "commands": [command],
        "environment": environment(),
    }
    if args.append:
        result = appended(args.out.with_name(args.out.name + ".json"), result)
    text = markdown(result)
    write_outputs(args.out, result, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
