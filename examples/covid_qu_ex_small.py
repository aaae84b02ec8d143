"""Train and evaluate the default pipeline on a small sample of the real COVID-QU-Ex data.

The data is the "Infection Segmentation Data" part of COVID-QU-Ex (Qatar University; see
../shared/README.md): real 256x256 radiographs with COVID-19 infection masks. The data is
never copied into the repository; this script reads it where it lies:

    python examples/covid_qu_ex_small.py                      # ../shared/data/covid-qu-ex
    python examples/covid_qu_ex_small.py --data /path/to/covid-qu-ex --per-class 200

It samples ``--per-class`` images per class from the Train split (seeded), keeps a
patient-grouped, near-duplicate-guarded fifth of them for validation curves, trains the
classifier and the local lesion detector, and evaluates once on a sample of the Val split
(which, unlike Test, has infection masks, so lesion boxes can be scored). The report lands
in ``--out``. At the default size it takes about three minutes on two busy CPU cores
(measured: 144 training, 36 validation and 90 test images in 178 s; accuracy 0.667, 95 % CI
0.567-0.767; lesion AP@0.5 0.0, the 64 px detector does not learn lesions from 48 images).
The figures are a check that the machinery works on real radiographs, not a measure of
what the models can reach: see the training and detection docs for full-size runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import covidcxr
from covidcxr.demo import REAL_DATA_NOTE, sample_per_class
from covidcxr.pipeline import Pipeline
from covidcxr.split import split_dataset

REPO = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    shared = Path(os.environ.get("COVIDCXR_SHARED_DATA", REPO.parent / "shared" / "data"))
    return shared / "covid-qu-ex"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--per-class", type=int, default=60, help="training images per class")
    parser.add_argument("--size", type=int, default=64, help="model input size in pixels")
    parser.add_argument("--epochs", type=int, default=25, help="classifier epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("covid-qu-ex-report"))
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report")
    args = parser.parse_args(argv)

    if not (args.data / "Train").is_dir():
        print(f"COVID-QU-Ex not found at {args.data}; pass --data", file=sys.stderr)
        return 2

    started = time.perf_counter()
    train_source = covidcxr.open_source(args.data, layout="covid-qu-ex", split="Train")
    val_source = covidcxr.open_source(args.data, layout="covid-qu-ex", split="Val")
    sample = sample_per_class(train_source, args.per_class, seed=args.seed)
    parts = split_dataset(sample, test_size=0.0, val_size=0.2, seed=args.seed)
    test = sample_per_class(val_source, max(args.per_class // 2, 10), seed=args.seed)

    pipeline = Pipeline.from_dict(
        {
            "preprocessor": {"name": "gaussian-clahe", "output_size": args.size},
            "classifier": {
                "name": "vgg19",
                "input_size": args.size,
                "weights": None,  # ImageNet weights need a download; train from scratch
                "trainable_blocks": "all",
                "batch_norm": True,
                "width_multiplier": 0.25,
                "dense_units": 64,
                "optimizer": "adam",
                "learning_rate": 1e-3,
                "lr_schedule": "cosine",
                "epochs": args.epochs,
                "batch_size": 16,
                "augmentation": None,
                "seed": args.seed,
            },
            "detector": {
                "name": "local",
                "input_size": args.size,
                "epochs": 40,
                "mask_threshold": 0.4,
                "patience": 10,
                "seed": args.seed,
            },
            "evaluation": {"n_bootstrap": 1000, "seed": args.seed},
        },
        progress=True,
    )
    pipeline.fit(list(parts.train), validation=list(parts.val))
    report = pipeline.evaluate(
        test,
        args.out,
        overwrite=args.overwrite,
        title=f"COVID-QU-Ex, {args.per_class} images per class at {args.size} px",
        notes=[REAL_DATA_NOTE],
    )
    figures = report.to_dict()
    classification = figures["classification"]
    detection = figures["detection"] or {}
    interval = classification["intervals"]["accuracy"]
    print(
        f"train {len(parts.train)}, validation {len(parts.val)}, test {len(test)} images; "
        f"{time.perf_counter() - started:.0f} s"
    )
    print(
        f"accuracy {classification['accuracy']:.3f} "
        f"(95% CI {interval['low']:.3f}-{interval['high']:.3f}), "
        f"macro F1 {classification['macro']['f1']:.3f}, "
        f"COVID-19 recall {classification['per_class'][0]['recall']:.3f}, "
        f"AP@0.5 {detection.get('ap50')}"
    )
    print(f"report: {args.out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
