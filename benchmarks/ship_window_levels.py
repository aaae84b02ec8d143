"""Give the shipped models the grey levels of their training radiographs for 16-bit input.

The shipped models were trained on COVID-QU-Ex's 8-bit radiographs, whose 0.5th and 99.5th
percentiles sit at grey levels 0 and 228 (medians). The preprocessor maps a 16-bit
radiograph's percentiles onto 0 and 255 unless told otherwise, so DICOM and 16-bit PNG
input reached the models with more contrast than they learned from
(``benchmarks/results/bit_depth.md``). This script measures the levels on the Train split
(:func:`covidcxr.preprocess.window_levels_of`), sets them on each shipped model with
:meth:`covidcxr.Pipeline.set_window_levels` (8-bit input is not windowed, so nothing the
models were trained or checked on changes), and packages it again with
:func:`covidcxr.pretrained.package`: same name, aliases, precisions, build command and
revision, and a check of the new copy against the old one loaded as float32 on 300 Val
radiographs. The recipes in ``src/covidcxr/pretrained/recipes`` set the same
``window_levels``, so a rebuild gives the same models; the recorded rebuild command gains
``--force``, as ``build_pretrained.py`` records it now (the model it rebuilds is there).

    python benchmarks/ship_window_levels.py --work /work/runs/window-levels

Writes ``results/window_levels.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from bench_classifier_common import (
    DEFAULT_DATA,
    RESULTS,
    configure_tensorflow,
    library_environment,
    require_data,
    write_outputs,
)
from build_pretrained import split

import covidcxr.pretrained
from covidcxr import open_source
from covidcxr.preprocess import window_levels_of
from covidcxr.pretrained._shipping import Precision, PrecisionSpec

MODELS = ("covidqu-lungs-vgg19-128", "covidqu-lungs-vgg19-64")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, required=True, help="Where to save the models.")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "window_levels")
    return parser.parse_args()


def precision(precisions: Mapping[str, str]) -> PrecisionSpec:
    """The shipped precision of each file, as :func:`package` takes it."""
    if not precisions:
        return "float16"
    return {path: cast("Precision", value) for path, value in precisions.items()}


def recorded_command(command: str) -> str:
    """The rebuild command with ``--force``, as ``build_pretrained.py`` records it now.

    The models shipped before it did recorded theirs without, and their cards say the
    recorded command replaces the model: with ``--force`` it does.
    """
    return command if "--force" in shlex.split(command) else f"{command} --force"


def main() -> int:
    args = parse_args()
    require_data(args.data)
    configure_tensorflow(args.threads)
    started = time.perf_counter()
    train = open_source(args.data, layout="covid-qu-ex", split="Train")
    levels = window_levels_of(train)
    print(f"COVID-QU-Ex Train: window levels {levels}", flush=True)
    shipped: dict[str, Any] = {}
    for name in args.models:
        before = covidcxr.pretrained.verify(name)
        pipeline = covidcxr.pretrained.load(name).set_window_levels(levels)
        saved = pipeline.save(args.work / name, overwrite=True)
        previous = str(before.check.get("images", "")).removeprefix(
            "COVID-QU-Ex Val, against its float32 source: "
        )
        info = covidcxr.pretrained.package(
            name,
            saved,
            build_command=recorded_command(before.build_command),
            summary=before.summary,
            force=True,
            precision=precision(before.precisions),
            check_images=split(args.data, "Val", 300),
            check_description=(
                "COVID-QU-Ex Val, against its float32 source: the previous float16 copy "
                f"loaded as float32, with window_levels set to {list(levels)}; before that, "
                f"{previous}"
            ),
            aliases=before.aliases,
            revision=before.revision,
        )
        shipped[name] = {
            "size_bytes_before": before.size_bytes,
            "size_bytes": info.size_bytes,
            "check": dict(info.check),
        }
        print(name, shipped[name], flush=True)
    result = {
        "command": "python benchmarks/ship_window_levels.py " + " ".join(sys.argv[1:]),
        "window_levels_train": list(levels),
        "seconds": round(time.perf_counter() - started, 1),
        "environment": library_environment(),
        "models": shipped,
    }
    write_outputs(args.out, result, markdown(result))
    return 0


def markdown(result: dict[str, Any]) -> str:
    low, high = result["window_levels_train"]
    lines = [
        "# Shipped models: 16-bit input windowed onto the training radiographs' grey levels",
        "",
        f"COVID-QU-Ex Train radiographs have their 0.5th and 99.5th percentiles at grey levels "
        f"{low} and {high} (medians, `covidcxr.preprocess.window_levels_of`). Each shipped "
        "model was given them with `Pipeline.set_window_levels` and packaged again; the "
        "check compares the new copy with the previous one loaded as float32 on 300 Val "
        "radiographs. Those are 8-bit and never windowed, so a change of 0 says only that "
        "nothing else changed; what the levels do to 16-bit input is measured in "
        f"`bit_depth.md`. `{result['command']}` ({result['seconds']} s)",
        "",
        "| model | size before | size | largest probability change | decisions changed |",
        "|---|---|---|---|---|",
    ]
    for name, row in result["models"].items():
        check = row["check"]
        lines.append(
            f"| {name} | {row['size_bytes_before']} | {row['size_bytes']} | "
            f"{check['max_abs_probability_difference']:.2e} | {check['n_decisions_changed']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
