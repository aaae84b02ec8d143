"""Benchmark 3: train VGG19Classifier from scratch on COVID-QU-Ex, report on Test once.

Train on ``Train``, choose the epoch on ``Val`` (best validation loss; Val is never trained
on), then read ``Test`` exactly once and report accuracy, per-class precision / recall /
F1, the confusion matrix, wall time, peak RSS and the full configuration, plus the per-epoch
learning curve. Writes ``<out>.json`` and ``<out>.md``.

Images are read and preprocessed (grayscale, 5x5 Gaussian blur, CLAHE clip 2.0 on 8x8
tiles, area-resize to the model size, uint8) once, in this script: the library's
preprocessor (issue #3) was not committed when this benchmark was written and run. The
preprocessed images are tiny (64 px uint8: 4 KiB each), so they are kept in memory; the
classifier streams them through tf.data as it would any source.

Run (about an hour on a 2-core CPU)::

    nice -n 10 python benchmarks/bench_classifier_real.py --epochs 30
"""

# Markdown rows and result labels read better unbroken.
# ruff: noqa: E501

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "covid-qu-ex"
FOLDERS = {"COVID-19": "covid-19", "Normal": "normal", "Non-COVID": "pneumonia"}


def load_split(root: Path, split: str, size: int) -> list:
    from covidcxr import XRay

    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    xrays = []
    for folder, label in FOLDERS.items():
        for path in sorted((root / split / folder / "images").glob("*.png")):
            gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if gray is None:
                raise OSError(f"cannot read {path}")
            blurred = cv2.GaussianBlur(gray, (5, 5), 0)
            enhanced = clahe.apply(blurred)
            small = cv2.resize(enhanced, (size, size), interpolation=cv2.INTER_AREA)
            xrays.append(XRay(small, id=str(path.relative_to(root)), label=label))
    return xrays


def main() -> int:  # noqa: PLR0915 - a linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("COVIDCXR_QU_EX", DEFAULT_DATA))
    )
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--schedule", default="cosine")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--augmentation", type=float, default=10.0)
    parser.add_argument("--dense-units", type=int, default=256)
    parser.add_argument("--no-batch-norm", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "covidcxr-bench-real-ckpt",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "classifier_real"
    )
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    from covidcxr.classify import VGG19Classifier

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    started = time.perf_counter()
    train = load_split(args.data, "Train", args.input_size)
    val = load_split(args.data, "Val", args.input_size)
    load_seconds = time.perf_counter() - started
    print(f"loaded {len(train)} train, {len(val)} val in {load_seconds:.1f}s", flush=True)

    curve: list[dict] = []
    epoch_started = [time.perf_counter()]

    def on_epoch_end(epoch: int, logs) -> None:
        now = time.perf_counter()
        curve.append({"epoch": epoch, "seconds": round(now - epoch_started[0], 1), **logs})
        epoch_started[0] = now
        print(json.dumps(curve[-1]), flush=True)

    classifier = VGG19Classifier(
        input_size=args.input_size,
        weights=None,
        trainable_blocks="all",
        batch_norm=not args.no_batch_norm,
        width_multiplier=args.width,
        dense_units=args.dense_units,
        learning_rate=args.learning_rate,
        optimizer=args.optimizer,
        lr_schedule=args.schedule,
        warmup_epochs=args.warmup,
        augmentation=args.augmentation or None,
        epochs=args.epochs,
        batch_size=args.batch_size,
        # Patience = all epochs: never stops early, but restores the epoch with the best
        # Val loss, which is how Val selects the model.
        early_stopping=args.epochs,
        seed=args.seed,
        checkpoint_dir=args.checkpoint_dir,
        on_epoch_end=on_epoch_end,
    )
    train_started = time.perf_counter()
    classifier.fit(train, validation=val)
    train_seconds = time.perf_counter() - train_started
    model_path = args.checkpoint_dir / "model.cxr"
    classifier.save(model_path)

    # Test is read here, once, after the model is fixed.
    test = load_split(args.data, "Test", args.input_size)
    predict_started = time.perf_counter()
    predicted = classifier.predict(test)
    predict_seconds = time.perf_counter() - predict_started
    truth = [x.label for x in test]
    labels = list(classifier.classes_)
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0
    )
    best_epoch = int(np.argmin(classifier.history_["val_loss"])) + 1
    result = {
        "benchmark": "classifier_real",
        "dataset": "COVID-QU-Ex infection segmentation data: Train (fit) / Val (epoch selection) / Test (report)",
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
        "test_accuracy": accuracy_score(truth, predicted),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": {
            "labels": labels,
            "rows_true_columns_predicted": confusion_matrix(
                truth, predicted, labels=labels
            ).tolist(),
        },
        "best_epoch_by_val_loss": best_epoch,
        "val_accuracy_at_best_epoch": classifier.history_["val_accuracy"][best_epoch - 1],
        "learning_curve": curve,
        "wall_seconds": {
            "load_and_preprocess_train_val": round(load_seconds, 1),
            "train": round(train_seconds, 1),
            "predict_test": round(predict_seconds, 2),
            "total": round(time.perf_counter() - started, 1),
        },
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "config": {
            **{
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in classifier.get_params().items()
                if k != "on_epoch_end"
            },
            "preprocessing": "grayscale, GaussianBlur 5x5 (sigma from kernel), CLAHE clip 2.0 tiles 8x8, INTER_AREA resize, uint8",
            "tf_intra_op_threads": args.threads,
            "resumed_epochs": args.epochs - len(curve),
        },
        "environment": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "gpu": bool(tf.config.list_physical_devices("GPU")),
        },
        "command": " ".join(["python", *sys.argv]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    cfg = result["config"]
    lines = [
        "# Classifier on real data (COVID-QU-Ex, from scratch)",
        "",
        f"`{result['command']}`",
        "",
        f"VGG19{'-BN' if cfg['batch_norm'] else ''}, width x{cfg['width_multiplier']}, "
        f"{cfg['input_size']} px, {cfg['optimizer']} lr {cfg['learning_rate']} ({cfg['lr_schedule']}, "
        f"{cfg['warmup_epochs']} warm-up), batch {cfg['batch_size']}, rotation ±{cfg['augmentation']}°, "
        f"{cfg['epochs']} epochs; epoch chosen on Val: {result['best_epoch_by_val_loss']} "
        f"(Val accuracy {result['val_accuracy_at_best_epoch']:.3f}).",
        "",
        f"**Test accuracy: {result['test_accuracy']:.4f}** on {result['n_test']} images "
        "(targets: >= 0.90 accuracy, COVID-19 recall >= 0.95).",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for label, m in result["per_class"].items():
        lines.append(
            f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
        )
    labels = result["confusion_matrix"]["labels"]
    lines += [
        "",
        "Confusion matrix (rows true, columns predicted):",
        "",
        "| true \\ predicted | " + " | ".join(labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    for label, row in zip(
        labels, result["confusion_matrix"]["rows_true_columns_predicted"], strict=True
    ):
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    wall = result["wall_seconds"]
    lines += [
        "",
        f"Wall time: train {wall['train']} s, predict Test {wall['predict_test']} s, "
        f"total {wall['total']} s; peak RSS {result['peak_rss_mib']} MiB.",
        "",
        "Learning curve:",
        "",
        "| epoch | s | lr | loss | acc | val loss | val acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in result["learning_curve"]:
        lines.append(
            f"| {e['epoch']} | {e['seconds']} | {e['lr']:.2e} | {e['loss']:.4f} | {e['accuracy']:.4f} "
            f"| {e.get('val_loss', float('nan')):.4f} | {e.get('val_accuracy', float('nan')):.4f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
