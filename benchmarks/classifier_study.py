"""Issue 14's classifier study: run its arms through ``bench_classifier_real.py``, one table.

Each arm is the same run of ``bench_classifier_real.py`` (a fresh ``Pipeline`` per seed,
fitted on COVID-QU-Ex Train with Val for epoch selection, scored once on Test with the
library's evaluator) with one thing changed from the baseline, the 64 px whole-frame
recipe of the committed headline figure. Every arm also scores test-time augmentation
(rotations of ±5°, the same models), COVID-19 operating points chosen on Val (sensitivity
0.95 and 0.97) and the ensemble of its seeds, which cost prediction only. The arms:

``whole-frame-64``
    The baseline (``results/classifier_real.json`` is this arm when its recipe matches).
``lung-crop-64``
    The classifier sees the lung crop: ``--lungs --preprocess-size 256``.
``lung-crop-128``
    The lung crop at 128 px, the crop's own size: ``--lungs --preprocess-size 256
    --input-size 128``.
``whole-frame-128``
    128 px instead of 64 (4x the compute): ``--input-size 128``.
``gamma``
    Gamma correction after CLAHE: ``--gamma 0.8``.
``gamma-only``
    Gamma correction instead of CLAHE: ``--gamma 0.8 --no-clahe``.
``rotation-15``
    Stronger augmentation, the published ±15° rather than ±10°: ``--augmentation 15``.
``whole-frame-128-rotation-15``
    The two best single changes together: 128 px and the published ±15° rotation
    (``--input-size 128 --augmentation 15``).
``whole-frame-160-rotation-15``
    The same at 160 px (about 1.6x the compute of 128 px): 64 to 128 px was the largest
    single gain of the study (Test accuracy +0.017, pneumonia recall +0.027), so the next
    step in resolution that two CPU cores can train in a session.
``lung-crop-128-gamma``
    ``lung-crop-128`` with gamma correction after CLAHE (``--gamma 0.8``): the 128 px crop
    errs most on normal radiographs called pneumonia, and ``gamma`` had the best normal
    recall of the 64 px arms on its first seed.
``lung-crop-128-balanced``
    ``lung-crop-128`` with the loss weighted inversely to class frequency
    (``--class-weight balanced``): normal and pneumonia are a quarter of Train each,
    COVID-19 half, and the crop's recalls follow that order.
``zoom-shift-contrast``
    Augmentation beyond rotation, against the overfitting the baseline shows (Train
    accuracy 0.99 by the last epoch, Val 0.88) and towards other hospitals' framing and
    exposure: zoom ±10 %, shift ±6 % of the side, gamma in [0.8, 1.25]
    (``--augment-scale 0.1 --augment-shift 0.06 --augment-contrast 0.25``).

``ensemble --arms A B [--tta -5 5]`` scores every saved pipeline of the named arms' seeds
as one ensemble (``results/classifier_study/ensemble_A+B[_tta].json``): arms that look at
different things (the whole frame, the lung crop) err on different radiographs.
``--paired`` instead scores one ensemble per seed, of the arms' models of that seed
(``ensemble_A+B[_tta]_paired.json``), and reports the mean and spread over the seeds: the
figure of the recipe "train one model of each arm", comparable with an arm's own
mean over seeds, where the pooled ensemble is one figure of a larger model set.

``recalibrate --arms A [--method bias-corrected]`` calibrates every saved pipeline of
the arm's seeds again on Val by another method (``Pipeline.fit_trust``; the models and
gates stay as they are), scores Test again, and scores the recalibrated seeds as one
ensemble (``results/classifier_study/<arm>_calibrated-<method>.json``): a bias-corrected
calibration can change decisions, so its accuracy and recalls are figures of their own.

``run`` runs the arms named (all by default) one after the other, each into
``results/classifier_study/<arm>.json``/``.md``, and runs only the seeds an arm's results
do not hold yet (``--append``), so an arm can be spread over sessions. Within a session an
interrupted seed resumes from its checkpoint (``bench_classifier_real.py``'s
``--checkpoint-dir``, under the temporary folder). The ensemble needs every member's saved
pipeline, so it is scored only when they are all still there: trained in one session, or
kept in a ``--checkpoint-dir`` that outlives sessions. ``table`` reads whatever arms have
results and writes ``results/classifier_study.json``/``.md``: mean ± std over the seeds of
Test accuracy and every class's recall, then TTA and the ensemble, and issue 14's targets
(accuracy >= 0.93, COVID-19 recall >= 0.97, normal and pneumonia recall >= 0.88).

Cost on 2 CPU cores: 45-60 min per seed and arm at 64 px (about 3x that at 128 px), so
the whole study is a day of CPU time, best spread over several sessions (it resumes)::

    nice -n 10 python benchmarks/classifier_study.py run --arms lung-crop-64 gamma
    python benchmarks/classifier_study.py table

Smoke run (a couple of minutes)::

    python benchmarks/classifier_study.py run --limit 24 --epochs 1 --seeds 0 1 \\
        --results /tmp/study_smoke
    python benchmarks/classifier_study.py table --results /tmp/study_smoke
"""

# Markdown rows read better unbroken.
# ruff: noqa: E501

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench_classifier_common import DEFAULT_DATA, REPO, RESULTS, spread, write_outputs
from bench_classifier_real import (
    COVID,
    STUDY_ACCURACY,
    STUDY_RECALL,
    _f,
    _ms,
    seed_ensemble,
)

#: Each arm's options for bench_classifier_real.py, beside the common ones below.
ARMS: Mapping[str, tuple[str, ...]] = {
    "whole-frame-64": (),
    "lung-crop-64": ("--lungs", "--preprocess-size", "256"),
    "whole-frame-128": ("--input-size", "128"),
    "lung-crop-128": ("--lungs", "--preprocess-size", "256", "--input-size", "128"),
    "whole-frame-128-rotation-15": ("--input-size", "128", "--augmentation", "15"),
    "whole-frame-160-rotation-15": ("--input-size", "160", "--augmentation", "15"),
    "lung-crop-128-gamma": (
        "--lungs",
        "--preprocess-size",
        "256",
        "--input-size",
        "128",
        "--gamma",
        "0.8",
    ),
    "lung-crop-128-balanced": (
        "--lungs",
        "--preprocess-size",
        "256",
        "--input-size",
        "128",
        "--class-weight",
        "balanced",
    ),
    "gamma": ("--gamma", "0.8"),
    "gamma-only": ("--gamma", "0.8", "--no-clahe"),
    "rotation-15": ("--augmentation", "15"),
    "zoom-shift-contrast": (
        "--augment-scale",
        "0.1",
        "--augment-shift",
        "0.06",
        "--augment-contrast",
        "0.25",
    ),
}
#: What every arm shares: the committed headline recipe (24 epochs), TTA, COVID-19
#: operating points chosen on Val, and the ensemble.
COMMON: tuple[str, ...] = ("--tta", "-5", "5", "--sensitivity", "0.95", "0.97", "--ensemble")
DEFAULT_RESULTS = RESULTS / "classifier_study"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run arms (resumable)")
    run.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    run.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    run.add_argument("--epochs", type=int, default=24)
    run.add_argument("--limit", type=int, help="N images per split: a smoke run")
    run.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    run.add_argument(
        "--checkpoint-dir",
        type=Path,
        help="where the seeds' checkpoints and saved pipelines go (bench_classifier_real.py's "
        "default is under the temporary folder; a folder that outlives the session lets an "
        "interrupted seed resume, and the ensemble span seeds trained in other sessions)",
    )
    ensemble = commands.add_parser(
        "ensemble", help="score the saved pipelines of several arms' seeds as one ensemble"
    )
    ensemble.add_argument("--arms", nargs="+", choices=list(ARMS), required=True)
    ensemble.add_argument(
        "--tta",
        type=float,
        nargs="*",
        default=[],
        metavar="DEGREES",
        help="test-time rotations for every member (none by default)",
    )
    ensemble.add_argument(
        "--paired",
        action="store_true",
        help="one ensemble per seed (the arms' models of that seed), mean and spread over seeds",
    )
    ensemble.add_argument("--n-bootstrap", type=int, default=1000)
    ensemble.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ensemble.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    recalibrate = commands.add_parser(
        "recalibrate",
        help="calibrate the arms' saved pipelines again on Val, by another method, and score Test",
    )
    recalibrate.add_argument("--arms", nargs="+", choices=list(ARMS), required=True)
    recalibrate.add_argument(
        "--method", choices=["temperature", "bias-corrected"], default="bias-corrected"
    )
    recalibrate.add_argument("--n-bootstrap", type=int, default=1000)
    recalibrate.add_argument("--data", type=Path, default=DEFAULT_DATA)
    recalibrate.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    assemble = commands.add_parser(
        "assemble",
        help="fit an EnsembleClassifier pipeline of an arm's seeds, resumed from their checkpoints",
    )
    assemble.add_argument("--arm", choices=list(ARMS), required=True)
    assemble.add_argument("--seeds", type=int, nargs="+", required=True)
    assemble.add_argument("--n-bootstrap", type=int, default=1000)
    assemble.add_argument("--data", type=Path, default=DEFAULT_DATA)
    assemble.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    assemble.add_argument(
        "--work",
        type=Path,
        required=True,
        help="a folder for the ensemble's checkpoints (copies of the seeds') and its saved "
        "pipeline",
    )
    table = commands.add_parser("table", help="one table from the arms' results")
    table.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    args = parser.parse_args()
    args.results = args.results.resolve()  # the arms run in the repository root
    return args


def arm_command(arm: str, args: argparse.Namespace, seeds: list[int]) -> list[str]:
    """The ``bench_classifier_real.py`` command line of one arm, for ``seeds``.

    ``--append`` adds them to the seeds the arm's results already hold (from an earlier
    session, whose checkpoints are gone), so an arm can be spread over sessions.
    """
    command = [
        sys.executable,  # run in the repository root, so the results show a relative path
        "benchmarks/bench_classifier_real.py",
        "--epochs",
        str(args.epochs),
        "--seeds",
        *map(str, seeds),
        *COMMON,
        *ARMS[arm],
        "--out",
        str(args.results / arm),
        "--append",
    ]
    if args.limit:
        command += ["--limit", str(args.limit)]
    if args.checkpoint_dir:
        command += ["--checkpoint-dir", str(args.checkpoint_dir.resolve())]
    return command


def missing_seeds(path: Path, seeds: list[int]) -> list[int]:
    """The ``seeds`` that ``path`` holds no results for (all of them when it is absent)."""
    if not path.is_file():
        return list(seeds)
    done = set(json.loads(path.read_text()).get("seeds", ()))
    return [seed for seed in seeds if seed not in done]


def run(args: argparse.Namespace) -> int:
    for arm in args.arms:
        seeds = missing_seeds(args.results / f"{arm}.json", args.seeds)
        if not seeds:
            print(f"{arm}: results hold seeds {args.seeds}; skipped", flush=True)
            continue
        command = arm_command(arm, args, seeds)
        print(f"{arm}: {' '.join(command[1:])}", flush=True)
        subprocess.run(command, check=True, cwd=REPO)
    return 0


def ensemble_name(arms: list[str], rotations: list[float], paired: bool = False) -> str:
    """The results stem of a cross-arm ensemble: ``ensemble_<arm>+<arm>[_tta][_paired]``."""
    return (
        "ensemble_" + "+".join(arms) + ("_tta" if rotations else "") + ("_paired" if paired else "")
    )


def ensemble_members(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    """The named arms' seeds, each with its saved pipeline; ``None`` (said why) if one is gone."""
    members: list[dict[str, Any]] = []
    for arm in args.arms:
        path = args.results / f"{arm}.json"
        if not path.is_file():
            print(f"{arm} has no results at {path}", file=sys.stderr)
            return None
        for seed in json.loads(path.read_text())["per_seed"]:
            if not Path(seed["saved_pipeline"], "pipeline.json").is_file():
                print(
                    f"{arm} seed {seed['seed']}: its saved pipeline {seed['saved_pipeline']} "
                    "is gone",
                    file=sys.stderr,
                )
                return None
            members.append({**seed, "member": f"{arm}/{seed['seed']}"})
    return members


def ensemble_command(args: argparse.Namespace) -> str:
    """The command line that scores this ensemble, for its results."""
    command = "python benchmarks/classifier_study.py ensemble --arms " + " ".join(args.arms)
    if args.tta:
        command += " --tta " + " ".join(f"{r:g}" for r in args.tta)
    return command + (" --paired" if args.paired else "")


def cross_arm_ensemble(args: argparse.Namespace) -> int:
    """Score every saved pipeline of the named arms' seeds as one ensemble on Test.

    The arms look at different things (the whole frame, the lung crop), so their models
    err on different radiographs; averaging them costs prediction only. The members are
    the seeds each arm's results hold, read from their saved pipelines (which must still
    exist: ``run --checkpoint-dir`` keeps them). With ``--paired``, see
    :func:`paired_ensembles`.
    """
    members = ensemble_members(args)
    if members is None:
        return 1
    if args.paired:
        return paired_ensembles(args, members)
    print(f"ensemble of {[m['member'] for m in members]}", flush=True)
    figures = seed_ensemble(members, args.data, args, tuple(args.tta))
    command = ensemble_command(args)
    result = {
        "benchmark": "classifier_study_ensemble",
        "arms": args.arms,
        "ensemble": figures,
        "command": command,
    }
    labels = [COVID, "normal", "pneumonia"]
    lines = [
        f"# Ensemble of {' + '.join(args.arms)}"
        + (f", test-time rotations {args.tta}" if args.tta else ""),
        "",
        f"{len(members)} pipelines ({', '.join(figures['members'])}), each through "
        "`Pipeline.predict` on COVID-QU-Ex Test, probabilities averaged over the members "
        f"whose input gate admitted the radiograph ({figures['admitted_by_some_members_only']} "
        f"admitted by some members only, {figures['refused_by_every_member']} by none), "
        "scored by `ClassificationEvaluator`.",
        "",
        "| images | accuracy | "
        + " | ".join(f"recall {label}" for label in labels)
        + " | macro F1 |",
        "|---|---|" + "---|" * len(labels) + "---|",
        f"| {figures['n_images']} | {_f(figures['accuracy'])} | "
        + " | ".join(_f(figures["per_class"][label]["recall"]) for label in labels)
        + f" | {_f(figures['macro_f1'])} |",
        "",
        f"Command: `{command}`",
    ]
    write_outputs(
        args.results / ensemble_name(args.arms, args.tta), result, "\n".join(lines) + "\n"
    )
    print("\n".join(lines))
    return 0


def recalibrated_name(arm: str, method: str) -> str:
    """The results stem of an arm calibrated again: ``<arm>_calibrated-<method>``."""
    return f"{arm}_calibrated-{method}"


def recalibrate_seed(seed: Mapping[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Calibrate one seed's saved pipeline again on Val by ``args.method``; score it on Test.

    Through the public API: ``Pipeline.load``, ``fit_trust(validation=Val, trust=...)``
    (the classifier and the gate stay as they are), ``evaluate`` on Test. The recalibrated
    pipeline is saved beside the original (``pipeline-calibrated-<method>``), so the seeds'
    ensemble can be scored from it.
    """
    from bench_classifier_real import test_figures

    from covidcxr import Pipeline, open_source

    saved = Path(seed["saved_pipeline"])
    lungs = "lungs" in json.loads((saved / "pipeline.json").read_text())

    def source(split: str) -> Any:
        return open_source(args.data, layout="covid-qu-ex", split=split, load_masks=lungs)

    started = time.perf_counter()
    pipeline = Pipeline.load(saved)
    # Scored again as loaded, by the same code in the same run, for a like-for-like pair.
    as_trained = pipeline.evaluate(source("Test"))
    # A mapping changes only the options it names: the gate and operating points stay.
    pipeline.fit_trust(validation=source("Val"), trust={"calibrate": args.method})
    report = pipeline.evaluate(source("Test"))
    out = saved.with_name(f"pipeline-calibrated-{args.method}")
    pipeline.save(out, overwrite=True)
    calibration = pipeline.trust_.calibration
    return {
        "seed": seed["seed"],
        "saved_pipeline": str(out),
        "calibration": calibration.to_dict() if calibration is not None else None,
        "validation": dict(pipeline.trust_.validation),
        "test": test_figures(report),
        "test_as_trained": test_figures(as_trained),
        "seconds": round(time.perf_counter() - started, 1),
    }


def recalibrate(args: argparse.Namespace) -> int:
    """Calibrate every saved seed of the named arms again, by ``--method``; one file per arm.

    The same models, gates and Test images: only the calibration fitted on Val changes.
    A bias-corrected calibration (a temperature and one bias per class, fitted on Val by
    likelihood) can change decisions, so accuracy and recalls are scored again, beside
    the figures as trained; with several seeds, their recalibrated pipelines are also
    scored as one ensemble.
    """
    from bench_classifier_real import seed_ensemble

    labels = [COVID, "normal", "pneumonia"]
    for arm in args.arms:
        path = args.results / f"{arm}.json"
        if not path.is_file():
            print(f"{arm} has no results at {path}", file=sys.stderr)
            return 1
        seeds = [
            seed
            for seed in json.loads(path.read_text())["per_seed"]
            if Path(seed["saved_pipeline"], "pipeline.json").is_file()
        ]
        if not seeds:
            print(f"{arm}: no saved pipeline is left to calibrate", file=sys.stderr)
            return 1
        per_seed = []
        for seed in seeds:
            print(f"{arm} seed {seed['seed']}: calibrating by {args.method}", flush=True)
            per_seed.append(recalibrate_seed(seed, args))

        def summary(key: str, rows: list[dict[str, Any]] = per_seed) -> dict[str, Any]:
            return {
                "accuracy": spread([row[key]["accuracy"] for row in rows]),
                "recall": {
                    label: spread([row[key]["per_class"][label]["recall"] for row in rows])
                    for label in labels
                },
                "expected_calibration_error": spread(
                    [row[key]["expected_calibration_error"] for row in rows]
                ),
                "brier_score": spread([row[key]["brier_score"] for row in rows]),
            }

        recalibrated, as_trained = summary("test"), summary("test_as_trained")
        ensemble = seed_ensemble(per_seed, args.data, args) if len(per_seed) > 1 else None
        command = (
            f"python benchmarks/classifier_study.py recalibrate --arms {arm} --method {args.method}"
        )
        result = {
            "benchmark": "classifier_study_recalibrated",
            "arm": arm,
            "method": args.method,
            "seeds": [row["seed"] for row in per_seed],
            "summary": {"recalibrated": recalibrated, "as_trained": as_trained},
            "ensemble": ensemble,
            "per_seed": per_seed,
            "command": command,
        }
        lines = [
            f"# `{arm}` calibrated again on Val: {args.method}",
            "",
            "The arm's saved pipelines (same classifier, gate and Test images), calibrated "
            "again on COVID-QU-Ex Val with `Pipeline.fit_trust(validation=..., "
            f'trust={{"calibrate": "{args.method}"}})` and scored on Test with '
            "`Pipeline.evaluate`, as loaded and again after, in the same run. Mean ± sample "
            "std over the seeds; ECE and the Brier score (both lower is better) are on Test.",
            "",
            "| calibration | seeds | accuracy | "
            + " | ".join(f"recall {label}" for label in labels)
            + " | Test ECE | Test Brier |",
            "|---|---|---|" + "---|" * len(labels) + "---|---|",
        ]
        for name, figures in (("as trained", as_trained), (args.method, recalibrated)):
            lines.append(
                f"| {name} | {result['seeds']} | {_ms(figures['accuracy'])} | "
                + " | ".join(_ms(figures["recall"][label]) for label in labels)
                + f" | {_ms(figures['expected_calibration_error'])} "
                f"| {_ms(figures['brier_score'])} |"
            )
        if ensemble is not None:
            lines.append(
                f"| {args.method}, ensemble of the seeds | {ensemble['members']} | "
                f"{_f(ensemble['accuracy'])} | "
                + " | ".join(_f(ensemble["per_class"][label]["recall"]) for label in labels)
                + f" | {_f(ensemble['expected_calibration_error'])} "
                f"| {_f(ensemble['brier_score'])} |"
            )
        lines += ["", f"Command: `{command}`"]
        write_outputs(
            args.results / recalibrated_name(arm, args.method), result, "\n".join(lines) + "\n"
        )
        print("\n".join(lines), flush=True)
    return 0


def assembled_name(arm: str, seeds: list[int]) -> str:
    """The results stem of an assembled ensemble: ``<arm>_ensemble-<seed>-<seed>...``."""
    return f"{arm}_ensemble-" + "-".join(map(str, seeds))


def assemble(args: argparse.Namespace) -> int:
    """Fit a ``Pipeline`` whose classifier is an ``EnsembleClassifier`` of the arm's seeds.

    The pipeline is the arm's recipe with ``[classifier] name = "ensemble"``, its member
    the arm's classifier and ``seeds`` the arm's seeds, fitted by ``Pipeline.fit`` on
    Train with Val, as a user would. Training the members again would cost an hour each on
    two cores, so each member's checkpoint folder starts as a copy of the arm's finished
    checkpoint of that seed: the library resumes a member from it (the run key, made of
    the member's parameters and the training data, must match, or the fit refuses), so the
    members are the arm's models, and what the pipeline fits afresh is what an ensemble
    changes: the input gate, and the calibration on the averaged probabilities. Scored on
    Test with ``Pipeline.evaluate`` twice in one run: with the default calibration (a
    temperature), then after ``fit_trust(trust={"calibrate": "bias-corrected"})``.
    """
    import shutil

    from bench_classifier_real import test_figures

    from covidcxr import Pipeline, open_source

    path = args.results / f"{args.arm}.json"
    if not path.is_file():
        print(f"{args.arm} has no results at {path}", file=sys.stderr)
        return 1
    result = json.loads(path.read_text())
    by_seed = {seed["seed"]: seed for seed in result["per_seed"]}
    missing = [seed for seed in args.seeds if seed not in by_seed]
    if missing:
        print(f"{args.arm} has no seeds {missing}", file=sys.stderr)
        return 1
    config = result["config"]
    if "lungs" in config:
        print("assemble: arms with a lung stage are not supported yet", file=sys.stderr)
        return 1
    work = args.work.resolve()
    checkpoints = work / "checkpoints"
    for index, seed in enumerate(args.seeds):
        source = Path(by_seed[seed]["saved_pipeline"]).parent / "checkpoint"
        if not (source / "checkpoint.npz").is_file():
            print(f"seed {seed}: no checkpoint at {source}", file=sys.stderr)
            return 1
        target = checkpoints / f"member-{index}-seed-{seed}"
        if not target.exists():
            # A copy: resuming writes to the folder, and the arm's own must stay as it is.
            shutil.copytree(source, target, ignore=shutil.ignore_patterns(".covidcxr-*"))
    member = dict(config["classifier"])
    ensemble_config = {
        **config,
        "classifier": {
            "name": "ensemble",
            "member": member,
            "n_members": len(args.seeds),
            "seeds": list(args.seeds),
            "checkpoint_dir": str(checkpoints),
        },
        "evaluation": {"n_bootstrap": args.n_bootstrap, "seed": 0},
    }

    def split(name: str) -> Any:
        return open_source(args.data, layout="covid-qu-ex", split=name)

    started = time.perf_counter()
    pipeline = Pipeline(ensemble_config)
    pipeline.fit(split("Train"), validation=split("Val"))
    fit_seconds = time.perf_counter() - started
    temperature = test_figures(pipeline.evaluate(split("Test")))
    calibration_temperature = pipeline.trust_.calibration
    pipeline.fit_trust(validation=split("Val"), trust={"calibrate": "bias-corrected"})
    corrected = test_figures(pipeline.evaluate(split("Test")))
    calibration_corrected = pipeline.trust_.calibration
    saved = pipeline.save(work / "pipeline", overwrite=True)
    labels = [COVID, "normal", "pneumonia"]
    command = (
        f"python benchmarks/classifier_study.py assemble --arm {args.arm} --seeds "
        + " ".join(map(str, args.seeds))
        + " --work WORK"
    )
    output = {
        "benchmark": "classifier_study_assembled_ensemble",
        "arm": args.arm,
        "seeds": list(args.seeds),
        "pipeline_config": {
            **ensemble_config,
            "classifier": {**ensemble_config["classifier"], "checkpoint_dir": "WORK/checkpoints"},
        },
        "test": {"temperature": temperature, "bias-corrected": corrected},
        "calibration": {
            "temperature": calibration_temperature.to_dict() if calibration_temperature else None,
            "bias-corrected": calibration_corrected.to_dict() if calibration_corrected else None,
        },
        "fit_seconds": round(fit_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "saved_pipeline": str(saved),
        "command": command,
    }
    lines = [
        f"# `{args.arm}`: an EnsembleClassifier pipeline of seeds {args.seeds}",
        "",
        'A `Pipeline` with `[classifier] name = "ensemble"` (member: the arm\'s classifier, '
        f"seeds {args.seeds}), fitted by `Pipeline.fit` on COVID-QU-Ex Train with Val. Each "
        "member resumed from a copy of the arm's finished checkpoint of its seed (so the "
        "members are the arm's models); the input gate and the calibration of the averaged "
        "probabilities were fitted by this run. Scored on Test by `Pipeline.evaluate`, with "
        "the default calibration and again after "
        '`fit_trust(trust={"calibrate": "bias-corrected"})`.',
        "",
        "| calibration | images | accuracy | "
        + " | ".join(f"recall {label}" for label in labels)
        + " | Test ECE | Test Brier |",
        "|---|---|---|" + "---|" * len(labels) + "---|---|",
    ]
    for name, figures in (("temperature", temperature), ("bias-corrected", corrected)):
        lines.append(
            f"| {name} | {figures['n_images']} | {_f(figures['accuracy'])} | "
            + " | ".join(_f(figures["per_class"][label]["recall"]) for label in labels)
            + f" | {_f(figures['expected_calibration_error'])} | {_f(figures['brier_score'])} |"
        )
    lines += ["", f"Fit {output['fit_seconds']} s; in all {output['seconds']} s.", ""]
    lines += [f"Command: `{command}`"]
    write_outputs(
        args.results / assembled_name(args.arm, list(args.seeds)), output, "\n".join(lines) + "\n"
    )
    print("\n".join(lines), flush=True)
    return 0


def _mean_at_least(figure: Mapping[str, Any], target: float) -> bool:
    """Whether a :func:`spread` figure's mean reaches ``target`` (never, without one)."""
    return figure["mean"] is not None and bool(figure["mean"] >= target)


def paired_ensembles(args: argparse.Namespace, members: list[dict[str, Any]]) -> int:
    """One ensemble per seed of the arms' models of that seed; mean and spread over seeds.

    Only seeds that every arm holds are scored. Each seed's ensemble is scored as the
    pooled one is (:func:`bench_classifier_real.seed_ensemble`), so the per-seed figures
    and their mean read like an arm's own.
    """
    by_seed: dict[int, list[dict[str, Any]]] = {}
    for member in members:
        by_seed.setdefault(member["seed"], []).append(member)
    seeds = sorted(seed for seed, group in by_seed.items() if len(group) == len(args.arms))
    if not seeds:
        print(f"no seed is held by every arm of {args.arms}", file=sys.stderr)
        return 1
    labels = [COVID, "normal", "pneumonia"]
    per_seed = []
    for seed in seeds:
        print(f"seed {seed}: ensemble of {[m['member'] for m in by_seed[seed]]}", flush=True)
        figures = seed_ensemble(by_seed[seed], args.data, args, tuple(args.tta))
        per_seed.append({"seed": seed, **figures})
    accuracy = spread([figures["accuracy"] for figures in per_seed])
    recall = {
        label: spread([figures["per_class"][label]["recall"] for figures in per_seed])
        for label in labels
    }
    summary: dict[str, Any] = {
        "accuracy": accuracy,
        "recall": recall,
        "targets_issue_14": {
            f"mean Test accuracy >= {STUDY_ACCURACY}": _mean_at_least(accuracy, STUDY_ACCURACY),
            **{
                f"mean {label} recall >= {target}": _mean_at_least(recall[label], target)
                for label, target in STUDY_RECALL.items()
            },
        },
    }
    command = ensemble_command(args)
    result = {
        "benchmark": "classifier_study_paired_ensemble",
        "arms": args.arms,
        "test_time_rotations": list(args.tta),
        "seeds": seeds,
        "summary": summary,
        "per_seed": per_seed,
        "command": command,
    }
    lines = [
        f"# Paired ensembles of {' + '.join(args.arms)}"
        + (f", test-time rotations {args.tta}" if args.tta else ""),
        "",
        "For each seed, the arms' pipelines of that seed, each through `Pipeline.predict` on "
        "COVID-QU-Ex Test, probabilities averaged over the members whose input gate "
        "admitted the radiograph, scored by `ClassificationEvaluator`; then mean ± sample "
        "std over the seeds.",
        "",
        "| seed | images | accuracy | " + " | ".join(f"recall {label}" for label in labels) + " |",
        "|---|---|---|" + "---|" * len(labels),
    ]
    lines += [
        f"| {figures['seed']} | {figures['n_images']} | {_f(figures['accuracy'])} | "
        + " | ".join(_f(figures["per_class"][label]["recall"]) for label in labels)
        + " |"
        for figures in per_seed
    ]
    lines += [
        f"| mean | | {_ms(accuracy)} | "
        + " | ".join(_ms(recall[label]) for label in labels)
        + " |",
        "",
        "Issue 14's targets: "
        + "; ".join(
            f"{name}: {'met' if met else 'not met'}"
            for name, met in summary["targets_issue_14"].items()
        )
        + ".",
        "",
        f"Command: `{command}`",
    ]
    write_outputs(
        args.results / ensemble_name(args.arms, args.tta, paired=True),
        result,
        "\n".join(lines) + "\n",
    )
    print("\n".join(lines))
    return 0


def arm_row(arm: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """The study's figures for one arm, from its ``bench_classifier_real.py`` result."""
    summary = result["summary"]
    ensemble = result.get("ensemble")
    return {
        "arm": arm,
        "options": list(ARMS.get(arm, ())),
        "seeds": result["seeds"],
        "n_test": result["n_test"],
        # What the figures count: the Test images each seed's input gate admitted.
        "n_scored": [seed["test"]["n_images"] for seed in result["per_seed"]],
        "limit_per_split": result.get("limit_per_split"),
        "accuracy": summary["test_accuracy"],
        "recall": summary["recall"],
        "tta": summary.get("tta"),
        "operating_points": summary.get("operating_points"),
        "ensemble": None
        if ensemble is None
        else {
            "members": ensemble["members"],
            "accuracy": ensemble["accuracy"],
            "recall": {
                label: figures["recall"] for label, figures in ensemble["per_class"].items()
            },
        },
        "targets_met": summary.get("targets_issue_14"),
        "commands": result.get("commands", [result["command"]]),
    }


def operating_point(row: Mapping[str, Any], target: float) -> str:
    """``accuracy / COVID-19 recall`` at a COVID-19 sensitivity chosen on Val (no TTA)."""
    for point in row.get("operating_points") or ():
        if point["target"] == target and not point["rotations"]:
            return f"{_ms(point['test_accuracy'])} / {_ms(point['recall'].get(COVID))}"
    return "n/a"


def _ensemble_table_head(intro: str, count: str, labels: list[str]) -> list[str]:
    """The lines that open an ensembles table: a blank line, ``intro``, the header rows."""
    return [
        "",
        intro,
        "",
        f"| arms | {count} | test-time rotations | accuracy | "
        + " | ".join(f"recall {label}" for label in labels)
        + " |",
        "|---|---|---|---|" + "---|" * len(labels),
    ]


def _recalibrated_lines(recalibrated: list[dict[str, Any]], labels: list[str]) -> list[str]:
    """The table of arms calibrated again (``recalibrate``), or nothing without any."""
    if not recalibrated:
        return []
    lines = [
        "",
        "Calibrated again on Val (`classifier_study.py recalibrate`: the same saved "
        "models and gates, `Pipeline.fit_trust` with another `[trust] calibrate`; a "
        "bias-corrected calibration can change decisions). Mean ± std over the seeds "
        "that still have a saved pipeline, beside the same seeds as loaded, scored in the same run; ECE and Brier score on Test:",
        "",
        "| arm | calibration | seeds | accuracy | "
        + " | ".join(f"recall {label}" for label in labels)
        + " | Test ECE | Test Brier | ensemble accuracy | ensemble recalls (C / N / P) |",
        "|---|---|---|---|" + "---|" * len(labels) + "---|---|---|---|",
    ]
    for result in recalibrated:
        ensemble = result["ensemble"]
        for name, figures in (
            ("as trained (temperature)", result["summary"]["as_trained"]),
            (result["method"], result["summary"]["recalibrated"]),
        ):
            lines.append(
                f"| `{result['arm']}` | {name} | {result['seeds']} | "
                f"{_ms(figures['accuracy'])} | "
                + " | ".join(_ms(figures["recall"][label]) for label in labels)
                + f" | {_ms(figures['expected_calibration_error'])} | "
                + f"{_ms(figures.get('brier_score'))} | "
                + (
                    f"{_f(ensemble['accuracy'])} | "
                    + " / ".join(_f(ensemble["per_class"][label]["recall"]) for label in labels)
                    if ensemble is not None and name == result["method"]
                    else "n/a | n/a"
                )
                + " |"
            )
    return lines


def _assembled_lines(assembled: list[dict[str, Any]], labels: list[str]) -> list[str]:
    """The table of ``EnsembleClassifier`` pipelines (``assemble``), or nothing without any."""
    if not assembled:
        return []
    lines = [
        "",
        "`EnsembleClassifier` pipelines (`classifier_study.py assemble`: `[classifier] name = "
        '"ensemble"` fitted by `Pipeline.fit`, each member resumed from its seed\'s '
        "checkpoint; the gate and the calibration of the averaged probabilities fitted "
        "afresh; one figure each):",
        "",
        "| arm | seeds | calibration | accuracy | "
        + " | ".join(f"recall {label}" for label in labels)
        + " | Test ECE | Test Brier |",
        "|---|---|---|---|" + "---|" * len(labels) + "---|---|",
    ]
    for result in assembled:
        for name, figures in result["test"].items():
            lines.append(
                f"| `{result['arm']}` | {result['seeds']} | {name} | {_f(figures['accuracy'])} | "
                + " | ".join(_f(figures["per_class"][label]["recall"]) for label in labels)
                + f" | {_f(figures['expected_calibration_error'])} | {_f(figures['brier_score'])} |"
            )
    return lines


def table(args: argparse.Namespace) -> int:
    rows = []
    for arm in ARMS:
        path = args.results / f"{arm}.json"
        if arm == "whole-frame-64" and not path.is_file() and args.results == DEFAULT_RESULTS:
            path = RESULTS / "classifier_real.json"  # the committed headline, same recipe
        if path.is_file():
            rows.append(arm_row(arm, json.loads(path.read_text())))
    if not rows:
        print(f"no arm has results under {args.results}", file=sys.stderr)
        return 1
    labels = [COVID, "normal", "pneumonia"]
    lines = [
        "# Classifier study (issue 14): what makes the classifier stronger",
        "",
        "Each arm changes one thing from the 64 px whole-frame recipe and trains a fresh "
        "`Pipeline` per seed on COVID-QU-Ex Train (Val selects the epoch), scored once on "
        "Test by the library's evaluator: on the Test images the seed's input gate admitted "
        "(the images scored per seed are the JSON's `n_scored`; the ensembles' on the images "
        "some member admitted). Mean ± sample std over the seeds; TTA (rotations "
        "±5°, the same models), the COVID-19 operating point (the threshold at which Val "
        "COVID-19 recall reaches 0.95, `[trust] sensitivity`) and the ensemble (the seeds' "
        "probabilities averaged: one figure) cost prediction only. Targets: accuracy ≥ "
        f"{STUDY_ACCURACY}, "
        + ", ".join(f"{label} recall ≥ {value}" for label, value in STUDY_RECALL.items())
        + ". These are COVID-QU-Ex's own test split: an upper bound for data from other "
        "hospitals. Later arms were chosen by earlier arms' Test figures (the two best "
        "single changes combined, the lung crop that ships), so the best arm's Test figure "
        "is optimistic by that choice too.",
        "",
        "| arm | seeds | Test accuracy | "
        + " | ".join(f"recall {label}" for label in labels)
        + " | TTA accuracy | TTA COVID-19 recall | COVID-19 sensitivity 0.95 on Val: accuracy / COVID-19 recall | ensemble accuracy | ensemble recalls (C / N / P) |",
        "|---|---|---|" + "---|" * len(labels) + "---|---|---|---|---|",
    ]
    for row in rows:
        tta, ensemble = row["tta"], row["ensemble"]
        smoke = f" (--limit {row['limit_per_split']})" if row["limit_per_split"] else ""
        lines.append(
            f"| `{row['arm']}`{smoke} | {row['seeds']} | {_ms(row['accuracy'])} | "
            + " | ".join(_ms(row["recall"].get(label)) for label in labels)
            + f" | {_ms(tta['test_accuracy']) if tta else 'n/a'} | "
            f"{_ms(tta['recall'].get(COVID)) if tta else 'n/a'} | "
            f"{operating_point(row, 0.95)} | "
            f"{_f(ensemble['accuracy']) if ensemble else 'n/a'} | "
            + (
                " / ".join(_f(ensemble["recall"].get(label)) for label in labels)
                if ensemble
                else "n/a"
            )
            + " |"
        )
    found = [json.loads(path.read_text()) for path in sorted(args.results.glob("ensemble_*.json"))]
    ensembles = [r for r in found if r["benchmark"] == "classifier_study_ensemble"]
    paired = [r for r in found if r["benchmark"] == "classifier_study_paired_ensemble"]
    if ensembles:
        lines += _ensemble_table_head(
            "Ensembles across arms (`classifier_study.py ensemble`: every saved pipeline of "
            "the arms' seeds, probabilities averaged; one figure each):",
            "members",
            labels,
        )
        for result in ensembles:
            figures = result["ensemble"]
            lines.append(
                f"| {' + '.join(f'`{arm}`' for arm in result['arms'])} | "
                f"{len(figures['members'])} | {figures['test_time_rotations'] or 'none'} | "
                f"{_f(figures['accuracy'])} | "
                + " | ".join(_f(figures["per_class"][label]["recall"]) for label in labels)
                + " |"
            )
    if paired:
        lines += _ensemble_table_head(
            "Paired ensembles (`classifier_study.py ensemble --paired`: for each seed, the "
            "arms' models of that seed averaged; mean ± std over the seeds, like an arm):",
            "seeds",
            labels,
        )
        for result in paired:
            summary = result["summary"]
            lines.append(
                f"| {' + '.join(f'`{arm}`' for arm in result['arms'])} | {result['seeds']} | "
                f"{result['test_time_rotations'] or 'none'} | {_ms(summary['accuracy'])} | "
                + " | ".join(_ms(summary["recall"][label]) for label in labels)
                + " |"
            )
    recalibrated = [
        json.loads(path.read_text()) for path in sorted(args.results.glob("*_calibrated-*.json"))
    ]
    lines += _recalibrated_lines(recalibrated, labels)
    assembled = [
        json.loads(path.read_text()) for path in sorted(args.results.glob("*_ensemble-*.json"))
    ]
    lines += _assembled_lines(assembled, labels)
    lines += ["", "Commands:", ""]
    lines += [
        f"- `{row['arm']}`: " + "; then ".join(f"`{command}`" for command in row["commands"])
        for row in rows
    ]
    lines += [f"- ensemble: `{result['command']}`" for result in ensembles + paired]
    lines += [f"- calibrated again: `{result['command']}`" for result in recalibrated]
    lines += [f"- assembled: `{result['command']}`" for result in assembled]
    missing = [arm for arm in ARMS if arm not in {row["arm"] for row in rows}]
    if missing:
        lines += ["", f"Not run yet: {', '.join(f'`{arm}`' for arm in missing)}."]
    write_outputs(
        args.results,
        {
            "benchmark": "classifier_study",
            "arms": rows,
            "ensembles": [
                {"arms": r["arms"], "command": r["command"], **r["ensemble"]} for r in ensembles
            ],
            "paired_ensembles": [
                {
                    "arms": r["arms"],
                    "seeds": r["seeds"],
                    "test_time_rotations": r["test_time_rotations"],
                    "command": r["command"],
                    **r["summary"],
                }
                for r in paired
            ],
            "recalibrated": [
                {
                    "arm": r["arm"],
                    "method": r["method"],
                    "seeds": r["seeds"],
                    "command": r["command"],
                    **r["summary"],
                    "ensemble": r["ensemble"],
                }
                for r in recalibrated
            ],
            "assembled": [
                {"arm": r["arm"], "seeds": r["seeds"], "command": r["command"], "test": r["test"]}
                for r in assembled
            ],
            "not_run": missing,
        },
        "\n".join(lines) + "\n",
    )
    print("\n".join(lines))
    return 0


def main() -> int:
    args = parse_args()
    commands = {
        "run": run,
        "ensemble": cross_arm_ensemble,
        "recalibrate": recalibrate,
        "assemble": assemble,
        "table": table,
    }
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
