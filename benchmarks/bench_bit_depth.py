"""The same radiographs stored as 16-bit images: does a shipped model give the same answers?

Radiographs reach users as 8-bit PNG and JPEG, as 16-bit PNG and as DICOM. An 8-bit image
written out as 16 bits (every value times 257, as ImageMagick, Pillow and OpenCV scale it,
or shifted left by 8 bits) holds the same picture, and the library maps it back to those
8-bit values exactly (:func:`covidcxr.preprocess.exact_uint8`). Genuine 16-bit input is
mapped to 8 bits by the preprocessor's percentile window.

This benchmark takes ``--per-class`` (290) radiographs of each class of COVID-QU-Ex Test
and predicts them through ``Pipeline.predict`` with the shipped model, as a user runs it,
stored five ways:

``8-bit``
    As the files are (the reference).
``16-bit, x257`` and ``16-bit, shifted``
    The 8-bit values in a ``uint16`` container.
``16-bit, x257, percentile window``
    What the library did with the x257 copy before ``exact_uint8``: the percentile window
    applied to it (computed here, and handed on as the 8-bit image it gives).
``16-bit with low-bit detail``
    The shifted copy (x256) plus seeded uniform noise below one 8-bit step (``0..255``),
    standing for genuine 16-bit data: the percentile window applies, as for DICOM, onto
    the model's ``window_levels`` (the shipped models: 0 and 228, COVID-QU-Ex Train's).
``16-bit with low-bit detail, window onto 0-255``
    The same images through the same model with ``window_levels`` set back to the
    default (0, 255), as the shipped models windowed 16-bit input before they had levels.

Figures per encoding: accuracy, each class's recall, the share admitted by the input gate,
and the share of radiographs whose label differs from the 8-bit one.

    nice -n 5 python benchmarks/bench_bit_depth.py

Writes ``results/bit_depth.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
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
from bench_scale import figures, sample
from numpy.typing import NDArray

import covidcxr.pretrained
from covidcxr import XRay


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", default="covid-qu-ex")
    parser.add_argument("--per-class", type=int, default=290)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "bit_depth")
    return parser.parse_args()


def percentile_window(pixels: NDArray[Any], low_pct: float = 0.5, high_pct: float = 99.5) -> Any:
    """The preprocessor's default 16-to-8-bit window, without the exact 8-bit shortcut."""
    cumulative = np.cumsum(np.bincount(pixels.ravel(), minlength=65536))
    total = int(cumulative[-1])
    low = int(np.searchsorted(cumulative, max(1.0, total * low_pct / 100.0)))
    high = max(int(np.searchsorted(cumulative, max(1.0, total * high_pct / 100.0))), low + 1)
    lut = np.clip(np.rint((np.arange(65536) - low) * (255.0 / (high - low))), 0, 255)
    return lut.astype(np.uint8)[pixels]


def encodings(seed: int) -> dict[str, Callable[[NDArray[Any]], NDArray[Any]]]:
    rng = np.random.default_rng(seed)
    return {
        "8-bit": lambda p: p,
        "16-bit, x257": lambda p: p.astype(np.uint16) * 257,
        "16-bit, shifted": lambda p: p.astype(np.uint16) << 8,
        "16-bit, x257, percentile window": lambda p: percentile_window(p.astype(np.uint16) * 257),
        "16-bit with low-bit detail": lambda p: (
            p.astype(np.uint16) * 256 + rng.integers(0, 256, p.shape, dtype=np.uint16)
        ),
    }


def main() -> int:
    args = parse_args()
    require_data(args.data)
    configure_tensorflow(args.threads)
    images = sample(args.data, args.per_class)
    pipeline = covidcxr.pretrained.load(args.model)
    rows: dict[str, dict[str, Any]] = {}
    reference: list[str] | None = None
    started = time.perf_counter()
    batch: list[XRay] = []
    for name, encode in encodings(args.seed).items():
        batch = [XRay(encode(np.asarray(x.pixels)), id=x.id, label=x.label) for x in images]
        predictions = pipeline.predict(batch)
        if reference is None:
            reference = [p.label for p in predictions]
        rows[name] = figures(predictions, batch, reference)
        print(name, rows[name], flush=True)
    # The last batch is the one with low-bit detail: the same model, windowed as by default.
    assert reference is not None
    default_window = covidcxr.pretrained.load(args.model).set_window_levels((0, 255))
    name = "16-bit with low-bit detail, window onto 0-255"
    rows[name] = figures(default_window.predict(batch), batch, reference)
    print(name, rows[name], flush=True)
    levels = np.array([np.percentile(x.pixels, [0.5, 99.5]) for x in images])
    result = {
        "model": args.model,
        "window_levels": list(pipeline.preprocessor_.window_levels),  # type: ignore[union-attr]
        # Where the 8-bit radiographs have the grey levels that the window maps to 0 and
        # 255: how far the window moves them from what the model learned on.
        "grey_levels_8bit": {
            "p0.5_median": float(np.median(levels[:, 0])),
            "p99.5_median": float(np.median(levels[:, 1])),
            "p99.5_quartiles": [float(q) for q in np.percentile(levels[:, 1], [25, 75])],
        },
        "command": "python benchmarks/bench_bit_depth.py " + " ".join(sys.argv[1:]),
        "n_images": len(images),
        "seed": args.seed,
        "seconds": round(time.perf_counter() - started, 1),
        "environment": library_environment(),
        "encodings": rows,
    }
    write_outputs(args.out, result, markdown(result))
    print(markdown(result))
    return 0


def markdown(result: dict[str, Any]) -> str:
    first = next(iter(result["encodings"].values()))
    recalls = [k for k in first if k.startswith("recall_")]
    levels = result["grey_levels_8bit"]
    lines = [
        f"# The same radiographs stored as 16-bit images: `{result['model']}`",
        "",
        f"{result['n_images']} COVID-QU-Ex Test radiographs (the first of each class), "
        "predicted through `Pipeline.predict`. Accuracy counts a radiograph the input gate "
        "refuses, or the model is uncertain of, as not correct; label changed: the share "
        "whose label differs from the 8-bit one. The percentile-window row is what the "
        "library did with an 8-bit image stored as 16 bits before `exact_uint8`. "
        f"`{result['command']}` ({result['seconds']} s)",
        "",
        "The window maps a 16-bit radiograph's 0.5th and 99.5th percentiles onto the "
        f"model's window levels, {result['window_levels'][0]} and "
        f"{result['window_levels'][1]}; in these 8-bit radiographs they sit at "
        f"{levels['p0.5_median']:.0f} and {levels['p99.5_median']:.0f} "
        f"(medians; 99.5th percentile quartiles {levels['p99.5_quartiles'][0]:.0f} to "
        f"{levels['p99.5_quartiles'][1]:.0f}).",
        "",
        "| stored as | accuracy | "
        + " | ".join(f"recall {k.removeprefix('recall_')}" for k in recalls)
        + " | admitted | label changed |",
        "|---|---|" + "---|" * len(recalls) + "---|---|",
    ]
    for name, row in result["encodings"].items():
        lines.append(
            f"| {name} | {row['accuracy']:.3f} | "
            + " | ".join(f"{row[k]:.3f}" for k in recalls)
            + f" | {row['admitted']:.3f} | {row['label_changed']:.3f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
