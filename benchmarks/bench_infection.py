"""Infection segmentation, lung-constrained boxes and severity on COVID-QU-Ex Val.

One run, through the public API, per seed (``--seeds``, default 0 1 2):

1. A :class:`covidcxr.detect.LocalDetector` is trained as ``bench_detector.py`` trains
   it (Train split by a hash of each file name into *fit* and *tune*; early stopping and
   the choice of mask threshold and least component area on *tune*, by AP@0.5), or read
   back from ``--load-model DIR`` (``DIR/seed-N/detector.zip``, as ``--save-model DIR``
   wrote it), so a detector trained once can be scored again without training.
2. **Infection segmentation**: its lesion maps, stretched onto each Val radiograph and
   thresholded at its tuned ``mask_threshold``, are scored against Val's infection masks
   (``meta["infection_mask"]``) with :func:`covidcxr.evaluate.segmentation_scores`: Dice
   and IoU, mean per image and pooled over all pixels, on the COVID-19 images and on all
   images (lesion-free Normal and Non-COVID images included).
3. **Boxes**: AP at IoU 0.3 and 0.5 (:func:`covidcxr.evaluate.average_precision` and
   :func:`covidcxr.evaluate.evaluate_detections`) of the detector as is and, with
   ``--lungs PATH`` (a saved :class:`covidcxr.lungs.LungSegmenter`, such as
   ``bench_lungs.py`` writes to ``/tmp/covidcxr-bench-lungs/seed-N/lungs.zip``), of the
   same detector with its maps kept inside the lung fields the segmenter finds
   (:func:`covidcxr.lungs.inside_lungs`, as ``Pipeline(lungs=...)`` does), once with the
   post-processing tuned on the raw maps and once re-tuned on *tune*'s constrained maps.
   Beside them, the floors that see no lesion: one box per ground-truth lung field
   (``bench_detector.py --detector lung-boxes``) and, with ``--lungs``, one box per lung
   field the segmenter finds (what a floor can use on radiographs without lung masks).
4. **Severity** (with ``--lungs``): :func:`covidcxr.lungs.lung_severity` of each Val
   radiograph, summarised per true class by :func:`covidcxr.evaluate.severity_by_class`:
   the mean extent score (0-8) and the mean infected share of both lungs.

The figures are the mean and spread over seeds. Anchor: Tahir et al. 2021 (COVID-QU-Ex)
report infection Dice 88.21 % and IoU 83.05 %.

    nice -n 10 python benchmarks/bench_infection.py --lungs /tmp/covidcxr-bench-lungs/seed-0/lungs.zip \\
        --save-model /tmp/covidcxr-bench-infection

Writes ``benchmarks/results/infection.json`` and ``.md`` (or ``--out STEM``).
"""

# ruff: noqa: E501

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from bench_classifier_common import (
    DEFAULT_DATA,
    RESULTS,
    configure_tensorflow,
    library_environment,
    peak_rss_mib,
    require_data,
    spread,
    write_outputs,
)
from bench_detector import (
    add_local_options,
    enhanced,
    in_tune_part,
    load,
    lung_field_boxes,
    scores,
    train_local,
    tune_postprocessing,
)
from numpy.typing import NDArray

from covidcxr import XRay
from covidcxr.detect import LocalDetector
from covidcxr.evaluate import segmentation_scores, severity_by_class
from covidcxr.lungs import LungFields, LungSegmenter, inside_lungs, lung_severity

INFECTION_MASK = "infection_mask"
COVID = "covid-19"
#: Tahir et al. 2021 (COVID-QU-Ex), infection segmentation.
ANCHOR_DICE, ANCHOR_IOU = 0.8821, 0.8305


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    add_local_options(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--lungs", type=Path, help="a saved LungSegmenter (bench_lungs.py's lungs.zip)"
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--save-model", type=Path, help="save each seed's detector to DIR/seed-N/detector.zip"
    )
    group.add_argument(
        "--load-model",
        type=Path,
        help="score the detectors saved in DIR/seed-N/detector.zip instead of training",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "infection")
    return parser.parse_args(argv)


def model_path(directory: Path, seed: int) -> Path:
    return directory / f"seed-{seed}" / "detector.zip"


def infection_masks(
    detector: LocalDetector, maps: Iterable[Any], xrays: Sequence[XRay]
) -> list[NDArray[np.bool_]]:
    """The maps stretched onto each radiograph, lesion where at or above the detector's threshold."""
    return [
        cv2.resize(
            np.asarray(m, np.float32), (x.shape[1], x.shape[0]), interpolation=cv2.INTER_LINEAR
        )
        >= detector.mask_threshold
        for m, x in zip(maps, xrays, strict=True)
    ]


def segmentation(masks: Sequence[Any], xrays: Sequence[XRay]) -> dict[str, Any]:
    """Dice and IoU against the infection masks, on the COVID-19 images and on all images."""
    pairs = [(m, np.asarray(x.meta[INFECTION_MASK]) > 0) for m, x in zip(masks, xrays, strict=True)]
    covid = [pair for pair, x in zip(pairs, xrays, strict=True) if x.label == COVID]
    return {
        "covid19_only": segmentation_scores(covid).to_dict(),
        "all": segmentation_scores(pairs).to_dict(),
    }


def severity_table(
    detector: LocalDetector,
    maps: Iterable[Any],
    fields: Sequence[LungFields],
    xrays: Sequence[XRay],
) -> dict[str, Any]:
    """Per true class: radiographs measured, mean extent score (0-8), mean infected share."""
    severities = [
        lung_severity(m, f, detector.mask_threshold) for m, f in zip(maps, fields, strict=True)
    ]
    table: dict[str, Any] = {}
    for row in severity_by_class([x.label for x in xrays], severities):
        counts = np.asarray(row.score_counts)
        table[row.label] = {
            **row.to_dict(),
            "n_class": sum(x.label == row.label for x in xrays),
            "mean_score": float((counts * np.arange(counts.size)).sum() / counts.sum()),
        }
    return table


def boxes_with(
    detector: LocalDetector, maps: NDArray[Any], xrays: Sequence[XRay], post: dict[str, float]
) -> list[list[Any]]:
    """The detector's boxes of ``maps`` with the post-processing ``post``; its own is kept."""
    own = {key: detector.get_params()[key] for key in post}
    detector.set_params(**post)
    try:
        return detector.masks_to_detections(maps, xrays)
    finally:
        detector.set_params(**own)


def run_seed(
    args: argparse.Namespace,
    seed: int,
    *,
    fit: list[XRay],
    tune: list[XRay],
    val: list[XRay],
    lungs: tuple[list[LungFields], list[LungFields]] | None,
) -> dict[str, Any]:
    if args.load_model:
        path = model_path(args.load_model, seed)
        detector = LocalDetector.load(path)
        info: dict[str, Any] = {"loaded": str(path), "train_seconds": None}
        tuned = {k: detector.get_params()[k] for k in ("mask_threshold", "min_area_fraction")}
    else:
        detector, info = train_local(args, fit, tune, seed=seed)
        tuned = info["tuned"]
        if args.save_model:
            path = model_path(args.save_model, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            detector.save(path, overwrite=True)
            info["saved"] = str(path)
    started = time.perf_counter()
    maps = detector.predict_masks(val)
    found = detector.masks_to_detections(maps, val)
    run: dict[str, Any] = {
        "seed": seed,
        **info,
        "epochs_run": len(detector.history_.get("loss", [])),
        "tuned": tuned,
        "detect_ms_per_image": round(1000 * (time.perf_counter() - started) / len(val), 2),
        "segmentation": {"local": segmentation(infection_masks(detector, maps, val), val)},
        "boxes": {"local": scores(val, found)},
    }
    if lungs is not None:
        tune_fields, val_fields = lungs
        kept = np.stack([inside_lungs(m, f) for m, f in zip(maps, val_fields, strict=True)])
        run["segmentation"]["inside-lungs"] = segmentation(
            infection_masks(detector, kept, val), val
        )
        run["boxes"]["inside-lungs"] = scores(val, detector.masks_to_detections(kept, val))
        tune_maps = detector.predict_masks(tune)
        tune_kept = [inside_lungs(m, f) for m, f in zip(tune_maps, tune_fields, strict=True)]
        retuned, _ = tune_postprocessing(tune_kept, tune)
        run["retuned_inside_lungs"] = retuned
        run["boxes"]["inside-lungs-retuned"] = scores(val, boxes_with(detector, kept, val, retuned))
        run["severity"] = severity_table(detector, kept, val_fields, val)
    return run


#: Box rows of the table: key, what it is.
BOX_ROWS = (
    ("local", "(a) local detector"),
    ("inside-lungs", "(b) local, maps kept inside the segmented lungs"),
    ("inside-lungs-retuned", "(b') same, post-processing re-tuned on *tune*"),
)
FLOOR_ROWS = (
    ("lung-boxes", "(c) floor: one box per ground-truth lung field"),
    ("segmented-lung-boxes", "(c') floor: one box per segmented lung field"),
)
SUBSETS = (("all", "all"), ("covid19_only", "COVID-19"))


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread over seeds of every figure the tables show."""
    summary: dict[str, Any] = {"segmentation": {}, "boxes": {}, "severity": {}}
    for key in runs[0]["segmentation"]:
        summary["segmentation"][key] = {
            subset: {
                figure: spread([run["segmentation"][key][subset][figure] for run in runs])
                for figure in ("dice", "iou", "pooled_dice", "pooled_iou")
            }
            for subset, _ in SUBSETS
        }
    for key in runs[0]["boxes"]:
        summary["boxes"][key] = {
            subset: {
                figure: spread([run["boxes"][key][subset][figure] for run in runs])
                for figure in ("ap30", "ap50", "map_50_95")
            }
            for subset, _ in SUBSETS
        }
    for label in runs[0].get("severity", {}):
        summary["severity"][label] = {
            figure: spread([run["severity"].get(label, {}).get(figure) for run in runs])
            for figure in ("n_images", "mean_score", "mean_total", "median_score")
        }
    return summary


def fmt(d: dict[str, Any] | float | None, digits: int = 3) -> str:
    """A figure, or mean ± sample standard deviation over seeds (the mean alone for one seed)."""
    if isinstance(d, dict):
        if d["mean"] is None:
            return "n/a"
        if d["std"] is None:
            return f"{d['mean']:.{digits}f}"
        return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"
    return "n/a" if d is None else f"{d:.{digits}f}"


def markdown(args: argparse.Namespace, result: dict[str, Any]) -> str:
    s, runs = result["summary"], result["runs"]
    seeds = ", ".join(str(run["seed"]) for run in runs)
    source = (
        f"read from `{args.load_model}`"
        if args.load_model
        else f"trained on {result['n_fit']} Train images, up to {args.epochs} epochs"
    )
    lines = [
        "# Infection segmentation, lung-constrained boxes and severity (COVID-QU-Ex Val)",
        "",
        f"`{result['command']}`",
        "",
        f"Local detector ({args.input_size} px, {args.base_filters} base filters, depth {args.depth}, "
        f"preprocessing `{args.preprocess}`), {source}; early stopping and post-processing tuned on "
        f"{result['n_tune']} Train images; scored once on {result['n_val']} Val images "
        f"({result['n_val_covid']} COVID-19). Seeds {seeds}: mean ± std over seeds. "
        f"Machine: {result['environment']['cpu_count']} CPUs, no GPU, shared with other work.",
        "",
        "## Infection segmentation",
        "",
        "The detector's lesion maps, stretched onto each 256 px radiograph and thresholded at its "
        "tuned `mask_threshold`, against the infection masks. An image whose true and predicted "
        "masks are both empty scores 1 per image (so the per-image means over all images reward "
        "lesion-free images left blank); pooled figures count pixels over all images.",
        "",
        "| maps | Val subset | Dice (per image) | IoU (per image) | pooled Dice | pooled IoU |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in (
        ("local", "local detector"),
        ("inside-lungs", "kept inside the segmented lungs"),
    ):
        for subset, subset_label in SUBSETS:
            if key in s["segmentation"]:
                d = s["segmentation"][key][subset]
                lines.append(
                    f"| {label} | {subset_label} | {fmt(d['dice'])} | {fmt(d['iou'])} | "
                    f"{fmt(d['pooled_dice'])} | {fmt(d['pooled_iou'])} |"
                )
    lines += [
        "",
        f"Anchor: Tahir et al. 2021 report infection Dice {100 * ANCHOR_DICE:.2f} % and IoU "
        f"{100 * ANCHOR_IOU:.2f} % (U-Net++ / FPN on ImageNet encoders, far larger networks).",
        "",
        "## Boxes",
        "",
        "AP (VOC all-point) over all Val images (boxes on lesion-free images are false positives) "
        "and over the COVID-19 images; truth boxes are the infection masks' connected components.",
        "",
        "| detector | AP@0.3 all | AP@0.5 all | AP@0.3 COVID-19 | AP@0.5 COVID-19 | mAP@[.5:.95] all |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in BOX_ROWS:
        if key in s["boxes"]:
            d = s["boxes"][key]
            lines.append(
                f"| {label} | {fmt(d['all']['ap30'])} | {fmt(d['all']['ap50'])} | "
                f"{fmt(d['covid19_only']['ap30'])} | {fmt(d['covid19_only']['ap50'])} | "
                f"{fmt(d['all']['map_50_95'])} |"
            )
    for key, label in FLOOR_ROWS:
        if key in result["floors"]:
            d = result["floors"][key]
            lines.append(
                f"| {label} | {fmt(d['all']['ap30'])} | {fmt(d['all']['ap50'])} | "
                f"{fmt(d['covid19_only']['ap30'])} | {fmt(d['covid19_only']['ap50'])} | "
                f"{fmt(d['all']['map_50_95'])} |"
            )
    lines += [
        "",
        "Post-processing per seed (mask threshold, least component area): "
        + "; ".join(
            f"seed {run['seed']}: {run['tuned']['mask_threshold']}, {run['tuned']['min_area_fraction']}"
            + (
                f" (re-tuned inside the lungs: {run['retuned_inside_lungs']['mask_threshold']}, "
                f"{run['retuned_inside_lungs']['min_area_fraction']})"
                if "retuned_inside_lungs" in run
                else ""
            )
            + f", {run['epochs_run']} epochs"
            for run in runs
        )
        + ".",
        "",
    ]
    if result["lungs"] is not None:
        lungs = result["lungs"]
        lines += [
            f"Lungs: `{lungs['path']}`; fields found on {lungs['val_found']:.1%} of Val and "
            f"{lungs['tune_found']:.1%} of *tune* (where none are found, the map is left as it is).",
            "",
            "## Severity by true class",
            "",
            "`lung_severity` of the lung-constrained maps at the detector's threshold: each lung "
            "scores 0 (clear), 1 (< 25 %), 2 (25-50 %), 3 (50-75 %) or 4 (≥ 75 % infected); the "
            "extent score is their sum (0-8). Radiographs whose lungs were not both found have none.",
            "",
            "| true class | Val images | with a severity | mean extent score (0-8) | median score | mean infected share |",
            "|---|---|---|---|---|---|",
        ]
        if not s["severity"]:
            lines.append("| (no Val radiograph had both lungs found) | | | | | |")
        for label, d in s["severity"].items():
            lines.append(
                f"| {label} | {runs[0]['severity'][label]['n_class']} | {fmt(d['n_images'], 0)} | "
                f"{fmt(d['mean_score'], 2)} | {fmt(d['median_score'], 1)} | {fmt(d['mean_total'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require_data(args.data)
    configure_tensorflow(args.threads)
    started = time.perf_counter()
    train = load(args.data, "Train", args.preprocess, args.limit)
    fit = [x for x in train if not in_tune_part(x, args.tune_fraction)]
    tune = [x for x in train if in_tune_part(x, args.tune_fraction)]
    del train
    if args.load_model:
        fit = []  # nothing to train
    val = load(args.data, "Val", args.preprocess, args.limit)
    print(
        f"loaded {len(fit)} fit, {len(tune)} tune, {len(val)} Val ({time.perf_counter() - started:.0f} s)",
        flush=True,
    )

    floors = {"lung-boxes": scores(val, [lung_field_boxes(x.meta["lung_mask"]) for x in val])}
    lungs: tuple[list[LungFields], list[LungFields]] | None = None
    lungs_info: dict[str, Any] | None = None
    if args.lungs:
        segmenter = LungSegmenter.load(args.lungs)

        # bench_lungs.py trains the segmenter on Gaussian + CLAHE images.
        def segment(xrays: list[XRay]) -> list[LungFields]:
            return segmenter.segment(xrays if args.preprocess == "clahe" else enhanced(xrays))

        lungs = segment(tune), segment(val)
        floors["segmented-lung-boxes"] = scores(val, [lung_field_boxes(f.mask) for f in lungs[1]])
        lungs_info = {
            "path": str(args.lungs),
            "params": {k: v for k, v in segmenter.get_params().items() if k != "on_epoch_end"},
            "tune_found": float(np.mean([f.found for f in lungs[0]])),
            "val_found": float(np.mean([f.found for f in lungs[1]])),
        }
    runs: list[dict[str, Any]] = []
    for seed in args.seeds:
        runs.append(run_seed(args, seed, fit=fit, tune=tune, val=val, lungs=lungs))
        # Written after every seed, so a long run leaves its figures as it goes.
        result = {
            "command": "python benchmarks/bench_infection.py "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "n_fit": len(fit),
            "n_tune": len(tune),
            "n_val": len(val),
            "n_val_covid": sum(x.label == COVID for x in val),
            "lungs": lungs_info,
            "floors": floors,
            "runs": runs,
            "summary": summarise(runs),
            "anchor": {"source": "Tahir et al. 2021", "dice": ANCHOR_DICE, "iou": ANCHOR_IOU},
            "peak_rss_mib": peak_rss_mib(),
            "environment": library_environment(),
        }
        write_outputs(args.out, result, markdown(args, result))
        print(markdown(args, result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
