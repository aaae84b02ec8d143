"""Build a model that ships with covidcxr, from the shared COVID-QU-Ex data, with its own code.

Trains the recipe ``src/covidcxr/pretrained/recipes/<name>.toml`` through
:class:`covidcxr.Pipeline` on COVID-QU-Ex Train (Val for monitoring, calibration and the
operating points), evaluates it on Test and records that evaluation in its model card,
with a second one on Val with the lung fields filled grey (``bench_shortcuts.py``: how
much the model reads outside the lungs), then packages it into the library (float16
weights, SHA-256 per file, the command below as its rebuild command) with
:func:`covidcxr.pretrained.package`, checking the float16 copy against the trained model
on Val.

    nice -n 5 python benchmarks/build_pretrained.py covidqu-lungs-vgg19-64 --force

A model of that name already in the package is replaced only with ``--force``; the name,
its aliases and ``--force`` are checked before training starts. The recorded rebuild
command always carries ``--force`` (rebuilding a shipped model replaces it), so it works
as recorded.

``--limit N`` (a smoke run on N images per split, one epoch each) writes to a scratch
registry instead of the package, never into ``src/``.

The lung U-Net, the classifier and the lesion detector each write a checkpoint after every
epoch under ``--work/checkpoints/NAME`` (the classifier's in that folder, the others in
``lungs/`` and ``detector/``): the same command run again after an interruption (a
session's end, ``kill -9``) takes up each finished network without training it again and
resumes the interrupted one from its last epoch. A resumed network ends as an
uninterrupted one would, so what trains after it sees the same data. A checkpoint of
other parameters or other data is never mixed in: it is refused (``ConfigurationError``
naming the file); delete it to start afresh.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from bench_classifier_common import DEFAULT_DATA, REPO, configure_tensorflow, require_data
from bench_shortcuts import LUNGS_REMOVED_SOURCE, MARGIN, altered, split_images

from covidcxr import Pipeline, XRay, open_source
from covidcxr.pipeline import PipelineConfig, record_evaluation
from covidcxr.pretrained import check_packaging, package

RECIPES = REPO / "src" / "covidcxr" / "pretrained" / "recipes"
SUMMARIES = {
    "covidqu-lungs-vgg19-64": (
        "COVID-19 / normal / pneumonia from a frontal CXR: lung crop, VGG19-BN x0.25 at "
        "64 px from scratch, local lesion detector, input gate, calibration (COVID-QU-Ex)"
    ),
    "covidqu-lungs-vgg19-128": (
        "COVID-19 / normal / pneumonia from a frontal CXR: lung crop, VGG19-BN x0.25 at "
        "128 px from scratch, local lesion detector, input gate, calibration (COVID-QU-Ex)"
    ),
}


#: How each model's weights are stored. float16 halves the files, but packaging refuses it
#: when it moves a class probability or an infected share of a lung by more than 0.01 on
#: Val images. Thresholded masks are what float16 moves: stored whole as float16,
#: covidqu-lungs-vgg19-64 moved a class probability by 0.087; of covidqu-lungs-vgg19-128,
#: the lung U-Net alone as float16 moved one by 0.033 (through the crop the classifier
#: reads) and the detector an infected share by 0.016, while the classifier and the input
#: gate as float16 moved no probability by more than 0.003 on 300 Val radiographs. So
#: those two are halved and the U-Nets keep float32 (a file not named does).
HALVED: dict[str, Literal["float16", "float32"]] = {"classifier": "float16", "gate": "float16"}
PRECISIONS: dict[str, Mapping[str, Literal["float16", "float32"]]] = {
    "covidqu-lungs-vgg19-64": HALVED,
    "covidqu-lungs-vgg19-128": HALVED,
}

#: Other names each model loads by: "covid-qu-ex" is the recommended COVID-QU-Ex model
#: (``covidcxr predict covid-qu-ex SCANS --output preds.csv``), the 128 px one since it
#: shipped (moved from the 64 px one with ``python -m covidcxr.pretrained alias``).
ALIASES = {"covidqu-lungs-vgg19-128": ("covid-qu-ex",)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(SUMMARIES))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "covidcxr-build")
    parser.add_argument("--limit", type=int, help="a smoke run: N images per split, 1 epoch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="replace a shipped model")
    return parser.parse_args()


def split(root: Path, name: str, limit: int | None) -> Any:
    source = open_source(root, layout="covid-qu-ex", split=name)
    if not limit:
        return source
    by_class: dict[str | None, list[XRay]] = {}
    for xray in source:  # every class, in turn
        by_class.setdefault(xray.label, []).append(xray)
    return [x for group in zip(*by_class.values(), strict=False) for x in group][:limit]


def build_config(config: PipelineConfig, checkpoint_dir: Path, *, smoke: bool) -> dict[str, Any]:
    """The recipe as trained: every network checkpointing each epoch; one epoch each if smoke.

    The classifier's checkpoint is in ``checkpoint_dir``, the lung U-Net's and the
    detector's in its ``lungs`` and ``detector`` folders. ``checkpoint_dir`` is run-time
    wiring: it is left out of the saved model's description.
    """
    data = config.to_dict()
    data["classifier"] = {**data["classifier"], "checkpoint_dir": str(checkpoint_dir)}
    if data.get("lungs"):
        segmenter = {
            **data["lungs"].get("segmenter", {}),
            "checkpoint_dir": str(checkpoint_dir / "lungs"),
        }
        data["lungs"] = {**data["lungs"], "segmenter": segmenter}
    if data.get("detector") and data["detector"].get("name") == "local":
        data["detector"] = {**data["detector"], "checkpoint_dir": str(checkpoint_dir / "detector")}
    if not smoke:
        return data
    for part in ("classifier", "detector"):
        data[part] = {**data[part], "epochs": 1}
    data["classifier"].pop("early_stopping", None)
    data["classifier"]["warmup_epochs"] = 0
    data["lungs"]["segmenter"] = {**data["lungs"]["segmenter"], "epochs": 1}
    return data


def source_revision() -> str | None:
    """The git commit of this checkout, marked when its tracked code has local changes.

    Recorded in the model's manifest and card: the build command reproduces the model with
    that code. ``None`` outside a git checkout.
    """
    git = shutil.which("git")
    if git is None:
        return None
    try:
        commit = subprocess.run(
            [git, "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            [git, "status", "--porcelain", "--untracked-files=no", "--", "src", "benchmarks"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit} (with local changes)" if changed else commit


def rebuild_command(argv: list[str]) -> str:
    """The command recorded as the model's rebuild command: this one, with ``--force``.

    Rebuilding a shipped model replaces it, and the model is in the package when anyone
    runs its recorded command; without ``--force`` that command would train for hours
    and then be refused.
    """
    recorded = argv if "--force" in argv else [*argv, "--force"]
    return "python benchmarks/build_pretrained.py " + shlex.join(recorded)


def main() -> int:
    args = parse_args()
    require_data(args.data)
    configure_tensorflow(args.threads)
    recipe = RECIPES / f"{args.name}.toml"
    config = PipelineConfig.from_toml(recipe)
    command = rebuild_command(sys.argv[1:])
    revision = source_revision()  # before training: the code that trains
    root = (args.work / "smoke-registry") if args.limit else None
    force = args.force or bool(args.limit)
    aliases = ALIASES.get(args.name, ())
    # What packaging would refuse (a model of that name without --force, an alias of
    # another model), refused now: not after hours of training.
    check_packaging(
        args.name,
        build_command=command,
        root=root,
        force=force,
        aliases=aliases,
        revision=revision,
    )
    run = f"{args.name}-limit-{args.limit}" if args.limit else args.name
    checkpoints = args.work / "checkpoints" / run
    pipeline = Pipeline(
        build_config(config, checkpoints, smoke=bool(args.limit)),
        progress=True,
        cache_dir=args.work / "cache",
    )
    started = time.perf_counter()
    pipeline.fit(
        split(args.data, "Train", args.limit), validation=split(args.data, "Val", args.limit)
    )
    print(f"trained in {time.perf_counter() - started:.0f} s", flush=True)
    model_dir = args.work / args.name
    pipeline.save(model_dir, overwrite=True)
    test = split(args.data, "Test", args.limit)
    report = pipeline.evaluate(test)
    record_evaluation(model_dir, report, source=f"COVID-QU-Ex Test ({args.data})")
    print(report.to_dict()["classification"]["accuracy"], flush=True)
    # The shortcut check: how much the model reads outside the lungs, on its card too.
    val = split_images(args.data, "Val", args.limit)
    removed = pipeline.evaluate([altered(x, "lungs_removed", MARGIN) for x in val])
    record_evaluation(model_dir, removed, source=LUNGS_REMOVED_SOURCE)
    print(removed.to_dict()["classification"]["macro"], flush=True)
    info = package(
        args.name,
        model_dir,
        build_command=command,
        summary=SUMMARIES[args.name],
        root=root,
        force=force,
        check_images=split(args.data, "Val", args.limit or 300),
        check_description="COVID-QU-Ex Val",
        aliases=aliases,
        precision=PRECISIONS.get(args.name, "float16"),
        revision=revision,
    )
    print(info, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
