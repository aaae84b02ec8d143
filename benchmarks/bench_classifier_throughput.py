"""Benchmark 1: VGG19 inference throughput against the machine's fp32 matmul roofline.

Measures, in one run:

- the fp32 matmul roofline: best GFLOP/s of square ``tf.linalg.matmul`` (2 n^3 FLOP);
- ``VGG19Classifier.predict_proba`` images/s at 224 and 128 px (the library path: XRays
  read a batch at a time, converted to model input by one traced function, then the
  model), with and without XLA;
- the plain baseline: ``model.predict`` on an already prepared numpy array, through the
  classifier fitted without XLA (Keras compiles ``model.predict`` with the ``jit_compile``
  the model was fitted with);

and the implied fraction of the roofline. VGG19's cost is counted from the network itself:
19.5 G multiply-accumulates in the convolutions per 224^2 image (the figure usually
quoted as "19.6 GFLOPs" adds the dense top), i.e. 39.0 GFLOP at 2 FLOP per
multiply-accumulate, the same convention as the matmul roofline. Full-width VGG19 with ``weights=None``: the weights' values do not change speed.

Run::

    nice -n 10 python benchmarks/bench_classifier_throughput.py
"""

# Markdown rows and result labels read better unbroken.
# ruff: noqa: E501

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from bench_classifier_common import configure_tensorflow, synthetic_xrays, write_result


def matmul_roofline(seconds: float = 3.0) -> dict[str, float]:
    import tensorflow as tf

    best: dict[str, float] = {}
    for n in (1024, 2048, 3072):
        a = tf.random.normal((n, n), dtype=tf.float32)
        b = tf.random.normal((n, n), dtype=tf.float32)
        tf.linalg.matmul(a, b).numpy()  # warm-up
        runs, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            tf.linalg.matmul(a, b).numpy()
            runs += 1
        elapsed = time.perf_counter() - started
        best[str(n)] = round(2 * n**3 * runs / elapsed / 1e9, 1)
    return best


def vgg19_macs(input_size: int) -> float:
    """Multiply-accumulates of VGG19's convolutions for one image (the head is negligible)."""
    from covidcxr.classify._network import BLOCK_CONVS, BLOCK_FILTERS

    macs, side, channels = 0.0, input_size, 3
    for convs, filters in zip(BLOCK_CONVS, BLOCK_FILTERS, strict=True):
        for _ in range(convs):
            macs += side * side * 9 * channels * filters
            channels = filters
        side //= 2
    return macs


def best_of(repeats: int, function: Any) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=64, help="images per timed pass at 224 px")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    configure_tensorflow(args.threads)
    from covidcxr.classify import VGG19Classifier

    # On a shared machine other jobs depress any single measurement; the roofline is
    # measured before and after the model runs and the best is kept (the conservative
    # choice for the fractions), and the load average is recorded.
    load_before = os.getloadavg()
    roofline = matmul_roofline()
    rows = []
    for size, n_images in ((224, args.images), (128, args.images * 3)):
        gflop = 2 * vgg19_macs(size) / 1e9
        xrays = synthetic_xrays(n_images)
        for jit in (False, True):
            classifier = VGG19Classifier(
                input_size=size,
                weights=None,
                epochs=1,
                batch_size=args.batch_size,
                augmentation=None,
                jit_compile=jit,
            ).fit(xrays[:6])
            classifier.predict_proba(xrays[: args.batch_size])  # trace / compile
            seconds = best_of(args.repeats, lambda c=classifier, x=xrays: c.predict_proba(x))
            rows.append(
                {
                    "input_size": size,
                    "path": "predict_proba (traced input conversion)" + (" + XLA" if jit else ""),
                    "images": n_images,
                    "seconds": round(seconds, 3),
                    "images_per_s": round(n_images / seconds, 2),
                    "gflop_per_image": round(gflop, 2),
                    "fraction_of_roofline": 0.0,
                }
            )
            if jit:
                continue
            # The baseline on the model fitted without XLA: Keras compiles model.predict
            # with the jit_compile the model was fitted with.
            prepared = classifier.prepare_batch(xrays)
            classifier.model_.predict(
                prepared[: args.batch_size], batch_size=args.batch_size, verbose=0
            )
            baseline = best_of(
                args.repeats,
                lambda c=classifier, p=prepared: c.model_.predict(
                    p, batch_size=args.batch_size, verbose=0
                ),
            )
            del prepared
        rows.append(
            {
                "input_size": size,
                "path": "model.predict(numpy array) baseline",
                "images": n_images,
                "seconds": round(baseline, 3),
                "images_per_s": round(n_images / baseline, 2),
                "gflop_per_image": round(gflop, 2),
                "fraction_of_roofline": 0.0,
            }
        )

    roofline_after = matmul_roofline()
    roofline = {n: max(roofline[n], roofline_after[n]) for n in roofline}
    peak = max(roofline.values())
    for row in rows:
        row["fraction_of_roofline"] = round(row["images_per_s"] * row["gflop_per_image"] / peak, 3)
    result = {
        "benchmark": "classifier_throughput",
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "matmul_roofline_gflop_per_s": roofline,
        "roofline_gflop_per_s": peak,
        "vgg19_macs_per_224_image": vgg19_macs(224),
        "batch_size": args.batch_size,
        "rows": rows,
        "target": ">= 60 % of roofline at 224 px",
    }
    lines = [
        "# VGG19 inference throughput vs fp32 matmul roofline",
        "",
        f"fp32 matmul roofline: **{peak} GFLOP/s** (best of n = {', '.join(roofline)}: "
        f"{', '.join(str(v) for v in roofline.values())}); {args.threads} threads; batch {args.batch_size}.",
        f"VGG19: {vgg19_macs(224) / 1e9:.2f} G multiply-accumulates = {2 * vgg19_macs(224) / 1e9:.1f} GFLOP per 224² image.",
        f"1-minute load average before / after: {result['load_average_before_after'][0]} / "
        f"{result['load_average_before_after'][1]} on {os.cpu_count()} cores (other jobs shared the CPU; "
        "the roofline is the best of a measurement before and one after the model runs).",
        "",
        "| input | path | images | s | images/s | GFLOP/image | fraction of roofline |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['input_size']} px | {row['path']} | {row['images']} | {row['seconds']} | "
            f"{row['images_per_s']} | {row['gflop_per_image']} | {row['fraction_of_roofline']:.1%} |"
        )
    write_result("classifier_throughput", result, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
