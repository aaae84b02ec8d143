"""Train and score lesion detectors on the real COVID-QU-Ex data.

Protocol (one run = one configuration):

1. COVID-QU-Ex ``Train`` is split deterministically (by a hash of each file's name) into a
   *fit* part and a *tune* part (``--tune-fraction``, 15 % by default).
2. The detector is trained on *fit*; *tune* drives early stopping and the choice of the
   post-processing parameters (mask threshold, least component area), picked by AP@0.5.
3. The tuned detector is scored **once** on ``Val``: AP@0.5 (VOC, all-point) and COCO
   mAP@[.5:.95], over all Val images (lesion-free Normal and Non-COVID images included, so
   false positives on them count) and over the COVID-19 images alone.

Ground-truth boxes are the connected components of the infection masks, in the original
256x256 pixels; detectors see the (optionally Gaussian+CLAHE enhanced) radiograph and
answer in the same pixels.

Usage::

    nice -n 10 python benchmarks/bench_detector.py --detector local --name local-128 \\
        --input-size 128 --epochs 20 --preprocess clahe

    python benchmarks/bench_detector.py --detector gradcam --classifier model.zip \\
        --name gradcam

Writes ``benchmarks/results/detector_<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import covidcxr
from covidcxr.detect import LocalDetector, cam_to_detections, mask_to_detections
from covidcxr.evaluate import average_precision, evaluate_detections
from covidcxr.records import Box, Detection, XRay

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "covid-qu-ex"


def load(root: Path, split: str, preprocess: str, limit: int | None) -> list[XRay]:
    source = covidcxr.open_source(root, layout="covid-qu-ex", split=split)
    xrays: Any = iter(source)
    if limit:
        # Keep every class: take every k-th image rather than the first ones.
        step = max(1, len(source) // limit)
        xrays = itertools.islice(xrays, 0, None, step)
    loaded = list(xrays)
    return enhanced(loaded) if preprocess == "clahe" else loaded


def enhanced(xrays: Sequence[XRay]) -> list[XRay]:
    """``xrays`` through Gaussian + CLAHE at their own size (what ``--preprocess clahe`` does)."""
    from covidcxr.preprocess import GaussianClahePreprocessor

    enhance = GaussianClahePreprocessor(output_size=None)
    return [enhance(xray) for xray in xrays]


def in_tune_part(xray: XRay, fraction: float) -> bool:
    digest = hashlib.sha256(Path(xray.id).name.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def scores(truths: Sequence[XRay], detections: Sequence[Sequence[Detection]]) -> dict[str, Any]:
    # AP breaks score ties by input order, and sources list images class by class; a fixed
    # shuffle keeps ties (the constant-score baseline) from ranking COVID-19 images first.
    order = np.random.default_rng(0).permutation(len(truths))
    truths = [truths[i] for i in order]
    detections = [detections[i] for i in order]
    covid = [i for i, x in enumerate(truths) if x.label == "covid-19"]
    return {
        "all": subset_scores([x.boxes for x in truths], detections),
        "covid19_only": subset_scores(
            [truths[i].boxes for i in covid], [detections[i] for i in covid]
        ),
    }


def subset_scores(
    truths: Sequence[Sequence[Box]], detections: Sequence[Sequence[Detection]]
) -> dict[str, Any]:
    """The evaluator's figures (per-image rows left out) plus AP at IoU 0.3 (``ap30``).

    AP@0.3 comes from :func:`~covidcxr.evaluate.average_precision`, not from
    ``evaluate_detections(iou_thresholds=...)``, whose mAP averages every threshold given.
    """
    metrics = evaluate_detections(truths, detections).to_dict()
    ap30 = average_precision(truths, detections, iou_threshold=0.3)
    if isinstance(metrics.get("pr_curve"), dict):
        metrics["pr_curve"] = thin_curve(metrics["pr_curve"])
    return {
        "ap30": None if math.isnan(ap30) else ap30,
        **{k: v for k, v in metrics.items() if k != "per_image"},
    }


def thin_curve(curve: dict[str, Any], at_most: int = 101) -> dict[str, Any]:
    """A precision-recall curve kept to ``at_most`` evenly spaced points, the last included.

    The evaluator's curve has one point per detection (thousands per run); a result file
    needs its shape, not every point. ``n_points`` records how many there were.
    """
    lists = {k: v for k, v in curve.items() if isinstance(v, list)}
    total = max((len(v) for v in lists.values()), default=0)
    if total <= at_most:
        return curve
    keep = sorted({round(i * (total - 1) / (at_most - 1)) for i in range(at_most)})
    thinned = {k: ([v[i] for i in keep] if k in lists else v) for k, v in curve.items()}
    thinned["n_points"] = total
    return thinned


def tune_postprocessing(
    maps: Iterable[Any], tune: Sequence[XRay]
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The mask threshold and least component area that give the best AP@0.5 on ``tune``.

    ``maps`` are the local detector's lesion maps of ``tune`` (perhaps edited, such as
    kept inside the lungs).
    """
    grid = []
    for threshold, min_area in itertools.product(
        (0.3, 0.4, 0.5, 0.6, 0.7), (0.0005, 0.002, 0.005, 0.01, 0.02)
    ):
        detections = [
            mask_to_detections(
                m, threshold=threshold, min_area_fraction=min_area, output_shape=x.shape
            )
            for m, x in zip(maps, tune, strict=True)
        ]
        metrics = evaluate_detections([x.boxes for x in tune], detections)
        grid.append(
            {
                "mask_threshold": threshold,
                "min_area_fraction": min_area,
                "ap50": metrics.ap50,
                "map_50_95": metrics.map_50_95,
            }
        )
    best = max(grid, key=lambda row: (row["ap50"], row["map_50_95"]))
    return {k: best[k] for k in ("mask_threshold", "min_area_fraction")}, grid


def run_local(
    args: argparse.Namespace, fit: list[XRay], tune: list[XRay]
) -> tuple[Any, dict[str, Any]]:
    detector, info = train_local(args, fit, tune)
    if args.save_model:
        detector.save(args.save_model, overwrite=True)
    return detector, info


def train_local(
    args: argparse.Namespace, fit: list[XRay], tune: list[XRay], seed: int = 0
) -> tuple[LocalDetector, dict[str, Any]]:
    """Train a local detector on ``fit``, early-stop and tune its post-processing on ``tune``."""
    detector = LocalDetector(
        input_size=args.input_size,
        base_filters=args.base_filters,
        depth=args.depth,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warp=args.warp,
        seed=seed,
        threads=args.threads,
        verbose=2,
    )
    started = time.perf_counter()
    detector.fit(fit, validation=tune)
    train_seconds = time.perf_counter() - started
    chosen, grid = tune_postprocessing(detector.predict_masks(tune), tune)
    detector.set_params(**chosen)
    info = {
        "params": detector.get_params(),
        "epochs_run": len(detector.history_.get("loss", [])),
        "history": detector.history_,
        "train_seconds": round(train_seconds, 1),
        "tuned": chosen,
        "tuning_grid": grid,
    }
    return detector, info


def run_gradcam(
    args: argparse.Namespace, fit: list[XRay], tune: list[XRay]
) -> tuple[Any, dict[str, Any]]:
    from covidcxr.classify import VGG19Classifier
    from covidcxr.detect import GradCAMDetector

    classifier = VGG19Classifier.load(args.classifier)
    probe = GradCAMDetector(classifier, min_probability=0.0)
    cams: list[Any] = []
    probabilities: list[float] = []
    for start in range(0, len(tune), 64):
        chunk_cams, chunk_probabilities = probe.class_activation_maps(tune[start : start + 64])
        cams.extend(chunk_cams)
        probabilities.extend(chunk_probabilities)
    grid = []
    for cam_threshold, min_probability in itertools.product(
        (0.3, 0.4, 0.5, 0.6, 0.7), (0.0, 0.25, 0.5)
    ):
        found = [
            cam_to_detections(
                cam,
                probability=float(p),
                output_shape=x.shape,
                lung_mask=x.meta.get("lung_mask"),
                cam_threshold=cam_threshold,
            )
            if p >= min_probability
            else []
            for cam, p, x in zip(cams, probabilities, tune, strict=True)
        ]
        metrics = evaluate_detections([x.boxes for x in tune], found)
        grid.append(
            {
                "cam_threshold": cam_threshold,
                "min_probability": min_probability,
                "ap50": metrics.ap50,
                "map_50_95": metrics.map_50_95,
            }
        )
    best = max(grid, key=lambda row: (row["ap50"], row["map_50_95"]))
    chosen = {k: best[k] for k in ("cam_threshold", "min_probability")}
    detector = GradCAMDetector(
        classifier,
        cam_threshold=chosen["cam_threshold"],
        min_probability=chosen["min_probability"],
    )
    return detector, {"classifier": str(args.classifier), "tuned": chosen, "tuning_grid": grid}


class LungBoxes:
    """Baseline: one box per lung field of the ground-truth lung mask, score 1.

    It needs no training and sees no lesion; a detector that does not beat it has learnt
    where the lungs are, not where the lesions are.
    """

    def detect_batch(self, xrays: Sequence[XRay]) -> list[list[Detection]]:
        return [lung_field_boxes(np.asarray(x.meta["lung_mask"])) for x in xrays]


def lung_field_boxes(lung_mask: Any) -> list[Detection]:
    """One box per lung field of ``lung_mask`` (non-zero inside), score 1."""
    return mask_to_detections(
        (np.asarray(lung_mask) > 0).astype(np.float32), threshold=0.5, min_area_fraction=0.005
    )


def run_lung_boxes(
    args: argparse.Namespace, fit: list[XRay], tune: list[XRay]
) -> tuple[Any, dict[str, Any]]:
    return LungBoxes(), {"baseline": LungBoxes.__doc__}


def markdown(result: dict[str, Any]) -> str:
    def fmt(value: float | None) -> str:
        return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"

    val = result["val"]
    trained = {
        "local": f"trained on {result['n_fit']} Train images",
        # GradCAMDetector keeps each map inside meta["lung_mask"]: here the dataset's own.
        "gradcam": f"classifier {result['run'].get('classifier')} (class labels only); "
        "its maps kept inside each image's ground-truth lung mask",
    }.get(result["detector"], "no training (baseline)")
    lines = [
        f"# Detector benchmark: {result['name']}",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Detector `{result['detector']}`, preprocessing `{result['preprocess']}`; {trained}, "
        f"tuned on {result['n_tune']} Train images, scored once on {result['n_val']} Val "
        f"images ({result['date']}, {result['machine']}).",
        "",
        "| Val subset | images | truth boxes | detections | AP@0.3 | AP@0.5 | mAP@[.5:.95] "
        "| precision@0.5 | recall@0.5 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for subset, label in (("all", "all classes"), ("covid19_only", "COVID-19 only")):
        m = val[subset]
        lines.append(
            f"| {label} | {m['n_images']} | {m['n_truths']} | {m['n_detections']} | "
            f"{fmt(m.get('ap30'))} | {fmt(m['ap50'])} | {fmt(m['map_50_95'])} | "
            f"{fmt(m['precision']['0.50'])} | "
            f"{fmt(m['recall']['0.50'])} |"
        )
    lines += [
        "",
        f"Tuned post-processing: `{json.dumps(result['run'].get('tuned'))}`; "
        f"training {result['run'].get('train_seconds', 'n/a')} s; "
        f"inference {result['inference_ms_per_image']:.1f} ms/image.",
        "",
    ]
    return "\n".join(lines)


def add_local_options(parser: argparse.ArgumentParser) -> None:
    """The options of the data, the local detector's training and its tuning split."""
    parser.add_argument("--preprocess", choices=("none", "clahe"), default="clahe")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--base-filters", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument(
        "--warp",
        action="store_true",
        help="LocalDetector(warp=True): rotation, scale, shift, gamma and contrast augmentation",
    )
    parser.add_argument("--tune-fraction", type=float, default=0.15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="images per split (smoke runs)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("COVIDCXR_QU_EX", DEFAULT_DATA))
    )
    parser.add_argument("--detector", choices=("local", "gradcam", "lung-boxes"), default="local")
    parser.add_argument("--name", required=True, help="result file stem: detector_<name>")
    add_local_options(parser)
    parser.add_argument("--classifier", type=Path, help="saved VGG19Classifier (gradcam)")
    parser.add_argument("--save-model", type=Path, help="save the trained local detector here")
    args = parser.parse_args(argv)

    if not (args.data / "Train").is_dir():
        sys.exit(f"COVID-QU-Ex not found at {args.data} (set --data or COVIDCXR_QU_EX)")
    started = time.perf_counter()
    train = load(args.data, "Train", args.preprocess, args.limit)
    fit = [x for x in train if not in_tune_part(x, args.tune_fraction)]
    tune = [x for x in train if in_tune_part(x, args.tune_fraction)]
    del train
    print(
        f"loaded Train: {len(fit)} fit, {len(tune)} tune ({time.perf_counter() - started:.0f} s)",
        flush=True,
    )

    n_fit = len(fit)
    runner = {"local": run_local, "gradcam": run_gradcam, "lung-boxes": run_lung_boxes}
    detector, run = runner[args.detector](args, fit, tune)
    del fit

    val = load(args.data, "Val", args.preprocess, args.limit)
    started = time.perf_counter()
    found = detector.detect_batch(val)
    per_image_ms = 1000 * (time.perf_counter() - started) / max(1, len(val))
    result = {
        "name": args.name,
        "detector": args.detector,
        "preprocess": args.preprocess,
        "command": " ".join(["python", "benchmarks/bench_detector.py", *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU",
        "versions": {"covidcxr": covidcxr.__version__, "python": platform.python_version()},
        "n_fit": n_fit,
        "n_tune": len(tune),
        "n_val": len(val),
        "inference_ms_per_image": per_image_ms,
        "run": run,
        "val": scores(val, found),
    }
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"detector_{args.name}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
