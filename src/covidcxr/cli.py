"""The ``covidcxr`` command line: a thin layer over the public API.

Built on click: it is the de-facto standard for Python command lines, typed, composable
(subcommands live in their own functions), testable in-process with ``CliRunner``, and
already a dependency of much of the scientific Python stack.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, cast

import click

import covidcxr
from covidcxr._contracts import checked_detections
from covidcxr._logging import configure_console, import_tensorflow
from covidcxr._plain import option_from_text
from covidcxr.errors import (
    ConfigurationError,
    CovidCXRError,
    InvalidImageError,
    OutputExistsError,
    WeightsUnavailableError,
)
from covidcxr.files import (
    check_new_files,
    check_output_directory,
    check_output_location,
    claim_file,
    file_batch,
    write_text,
)
from covidcxr.plugins import Registration
from covidcxr.records import ACCEPTED, REJECTED, UNCERTAIN, PredictionStatus, detection_to_dict

if TYPE_CHECKING:
    from covidcxr.pipeline import DetectionsTable
    from covidcxr.sources import Skipped

__all__ = ["cli", "main"]

_LISTINGS: tuple[tuple[str, Callable[[], Mapping[str, Registration]]], ...] = (
    ("detectors", covidcxr.plugins.available_detectors),
    ("sources", covidcxr.plugins.available_sources),
    ("preprocessors", covidcxr.plugins.available_preprocessors),
    ("classifiers", covidcxr.plugins.available_classifiers),
)


def _import_tensorflow() -> None:
    """Import TensorFlow quietly (at the group's ``-v`` level), before a Keras model runs.

    Commands call it after their cheap checks (an existing output, a bad option), so a
    refusal comes at once rather than after TensorFlow's seconds-long import; without
    the call, TensorFlow's start-up lines would reach the terminal when it is imported.
    """
    context = click.get_current_context(silent=True)
    verbose = context.find_root().params.get("verbose", 0) if context is not None else 0
    import_tensorflow(int(verbose or 0))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(covidcxr.__version__, prog_name="covidcxr")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Show more: -v adds the library's log, -vv also TensorFlow's own messages.",
)
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """Chest X-ray analysis: classify radiographs and box their lesions."""
    configure_console(verbose)


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print the listing as JSON.")
def plugins_command(as_json: bool) -> None:
    """List every registered detector, source, preprocessor and classifier.

    Each line names the plugin that provided the entry: a module name for built-ins, an
    entry-point name for installed plugins. Installed plugins that could not load are
    listed last, with the reason.
    """
    listing = {kind: dict(lookup()) for kind, lookup in _LISTINGS}
    broken = covidcxr.plugins.broken_plugins()
    if as_json:
        payload: dict[str, Any] = {
            kind: [{"name": reg.name, "plugin": reg.plugin} for reg in entries.values()]
            for kind, entries in listing.items()
        }
        payload["left_out"] = [{"plugin": name, "why": why} for name, why in broken.items()]
        click.echo(json.dumps(payload, indent=2))
        return
    for kind, entries in listing.items():
        click.echo(f"{kind}:")
        if not entries:
            click.echo("  (none)")
        width = max((len(name) for name in entries), default=0)
        for name, reg in entries.items():
            click.echo(f"  {name:<{width}}  from {reg.plugin}")
    if broken:
        click.echo("left out (could not load):")
        for name, why in broken.items():
            click.echo(f"  {name}: {why}")


# -- the end-to-end job: train, predict, evaluate, demo ----------------------------------
# The pipeline pulls in scikit-learn and (when training) TensorFlow: import it inside the
# commands so that `covidcxr --help` and `covidcxr plugins` stay fast.

_SOURCE_OPTION = click.option(
    "--source-option",
    "-s",
    "source_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="An option for the dataset source, e.g. -s layout=covid-qu-ex -s split=Val "
    "(values are read as JSON when they parse, 'none' is None). Repeatable.",
)

_CACHE_OPTION = click.option(
    "--cache-dir",
    envvar="COVIDCXR_CACHE_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep preprocessed images here, so a second run on the same files reads neither "
    "images nor masks [env: COVIDCXR_CACHE_DIR]; no cache without it.",
)


_PROGRESS_OPTION = click.option(
    "--no-progress",
    is_flag=True,
    help="Do not show progress bars (shown only when stderr is a terminal anyway).",
)

_ON_ERROR_OPTION = click.option(
    "--on-error",
    type=click.Choice(["raise", "skip"]),
    default="raise",
    show_default=True,
    help="What an unreadable image does: stop the command with an error (raise), or be "
    "left out (skip), counted, and listed with the reason in a CSV file beside the output "
    "(skipped.csv in an output folder; OUTPUT_STEM.skipped.csv beside a predictions "
    "file).",
)


def _parse_source_options(
    pairs: tuple[str, ...], option: str = "--source-option"
) -> dict[str, Any]:
    """``KEY=VALUE`` texts as options; ``option`` names the command-line option in errors."""
    options: dict[str, Any] = {}
    for number, pair in enumerate(pairs, start=1):
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            # Not repeated, nor its KEY: with a ":" typed for the "=", the secret is in
            # what would be echoed (up to a "=" of its own), and errors are logged.
            raise click.BadParameter(
                f"value {number} of {len(pairs)} is not KEY=VALUE with KEY an option's name "
                "(it is not repeated here, as it may hold a secret)",
                param_hint=option,
            )
        options[key.strip()] = option_from_text(raw)
    return options


def _source_options(pairs: tuple[str, ...], on_error: str) -> dict[str, Any]:
    """The options of ``-s KEY=VALUE`` with ``--on-error``; "skip" is the source's own option."""
    options = _parse_source_options(pairs)
    if on_error == "skip":
        options["on_error"] = "skip"
    return options


def _show_progress(no_progress: bool = False) -> bool:
    # Progress bars only where a person watches: a log (stderr to a file or pipe) gets
    # the messages, one line each, and no bar redrawn a hundred times.
    return not no_progress and sys.stderr.isatty()


def _skipping(options: Mapping[str, Any]) -> bool:
    return options.get("on_error") == "skip"


def _open_sources(sources: Sequence[str], options: Mapping[str, Any]) -> covidcxr.DatasetSource:
    """One SOURCE is opened as it is; several as one source over all of them, in order."""
    if len(sources) == 1:
        return covidcxr.open_source(sources[0], **options)
    return covidcxr.open_source(cast(Any, list(sources)), **options)


def _skipped_items(*sources: object) -> list[Skipped]:
    from covidcxr.sources import ReportsSkips  # noqa: PLC0415 - keep `covidcxr --help` fast

    return [
        item for source in sources if isinstance(source, ReportsSkips) for item in source.skipped
    ]


def _report_skipped(skipped: Sequence[Skipped], where: Path | None, *, overwrite: bool) -> None:
    """Say how many items were skipped; list them in ``where`` (or on stderr, without one)."""
    from covidcxr.pipeline import write_skipped  # noqa: PLC0415 - see above

    if where is None:
        for item in skipped:
            click.echo(f"skipped {item.path}: {item.reason}", err=True)
        click.echo(f"skipped {len(skipped)} item(s)", err=True)
        return
    write_skipped(skipped, where, overwrite=overwrite)
    claim_file(where.parent, where.name)  # in a model or report folder: covidcxr's own
    click.echo(f"skipped {len(skipped)} item(s); listed with reasons in {where}", err=True)


def _report_skips(
    options: Mapping[str, Any],
    skipped: Sequence[Skipped],
    where: Path | None,
    *,
    overwrite: bool,
) -> None:
    """Report what the sources did not yield, however they were opened.

    With ``--on-error skip``, every item is listed in ``where`` (see
    :func:`_report_skipped`). Without it nothing unreadable was skipped (it stopped the
    command), but a source may still have left files out (images in a format covidcxr does
    not read, links not followed, a layout's exclusions): the first few are named on
    stderr, so that none is left out in silence.
    """
    if _skipping(options):
        _report_skipped(skipped, where, overwrite=overwrite)
        return
    for item in skipped[:_LEFT_OUT_SHOWN]:
        click.echo(f"left out {item.path}: {item.reason}", err=True)
    if len(skipped) > _LEFT_OUT_SHOWN:
        click.echo(
            f"left out {len(skipped)} item(s) in all; --on-error skip lists every one, with "
            "its reason",
            err=True,
        )


_LEFT_OUT_SHOWN = 5  # items named on stderr without --on-error skip


def _emit(payload: Any, as_json: bool, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(payload, indent=2))
    else:
        for line in lines:
            click.echo(line)


def _trust_lines(data: Mapping[str, Any], number: Callable[[float | None], str]) -> list[str]:
    """What the input gate refused, calibration before and after, the decisions as given."""
    lines = []
    if data.get("rejected"):
        lines.append(f"refused:     {len(data['rejected'])} by the input gate (not scored)")
    calibration = data.get("calibration") or {}
    after = (calibration.get("after") or {}).get("expected_calibration_error")
    if after is not None:
        before = (calibration.get("before") or {}).get("expected_calibration_error")
        shown = f"{number(before)} before, {number(after)} after calibration"
        lines.append(f"ECE:         {shown if before is not None else number(after)}")
    decisions = data.get("decisions")
    if decisions and (decisions.get("n_abstained") or decisions.get("n_differing_from_argmax")):
        lines.append(
            f"as decided:  coverage {number(decisions['coverage'])}, accuracy "
            f"{number(decisions['accuracy_covered'])} on the covered, sensitivity "
            + ", ".join(f"{k} {number(v)}" for k, v in decisions["sensitivity"].items())
        )
    return lines


def _summary_lines(report: Any) -> list[str]:
    data = report.to_dict()
    lines = []

    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    classification = data.get("classification")
    if classification:
        intervals = classification["intervals"]

        def figure(name: str, value: float | None) -> str:
            ci = intervals.get(name)
            if value is None or not ci:
                return number(value)
            bounds = (
                "n/a"
                if ci["low"] is None or ci["high"] is None
                else f"{ci['low']:.3f}-{ci['high']:.3f}"
            )
            return f"{value:.3f} ({ci['level']:.0%} CI {bounds}, {ci['method']})"

        lines += [
            f"images:      {classification['n_images']}",
            f"accuracy:    {figure('accuracy', classification['accuracy'])}",
            f"macro F1:    {figure('macro_f1', classification['macro']['f1'])}",
            f"macro AUC:   {figure('macro_auc', classification['macro']['auc'])}",
        ]
        for scores in classification["per_class"]:
            label = scores["label"]
            lines.append(f"  {label:<10} recall {figure(f'recall[{label}]', scores['recall'])}")
    lines += _trust_lines(data, number)
    detection = data.get("detection")
    if detection:
        lines.append(
            f"detection:   AP@0.5 {number(detection['ap50'])}, "
            f"mAP@[.5:.95] {number(detection['map_50_95'])}"
        )
    return lines


@cli.command("train")
@click.argument("source")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="The model directory to write (not replaced unless --overwrite).",
)
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A pipeline TOML file (components and their options); library defaults otherwise.",
)
@click.option(
    "--validation",
    help="A validation source: it picks the epoch kept, draws the monitoring curves, and "
    "fits the calibration and the operating points of [trust] (held out of training).",
)
@_SOURCE_OPTION
@_ON_ERROR_OPTION
@_CACHE_OPTION
@click.option("--overwrite", is_flag=True, help="Replace an existing model directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_PROGRESS_OPTION
def train_command(
    *,
    no_progress: bool,
    source: str,
    out: Path,
    config: Path | None,
    validation: str | None,
    source_options: tuple[str, ...],
    on_error: str,
    cache_dir: Path | None,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Train a pipeline on the labelled radiographs in SOURCE and save it to --out.

    SOURCE is a folder of class subfolders, a .zip archive, or a URI such as
    cos://bucket/prefix.
    """
    from covidcxr.pipeline import Pipeline  # noqa: PLC0415 - see above

    check_output_directory(out, "pipeline", overwrite=overwrite)  # before training, not after
    options = _source_options(source_options, on_error)
    _import_tensorflow()
    settings: dict[str, Any] = {"progress": _show_progress(no_progress), "cache_dir": cache_dir}
    pipeline = Pipeline.from_toml(config, **settings) if config else Pipeline(**settings)
    train = covidcxr.open_source(source, **options)
    val = covidcxr.open_source(validation, **options) if validation else None
    pipeline.fit(train, validation=val)
    pipeline.save(out, overwrite=overwrite)
    _report_skips(options, _skipped_items(train, val), out / "skipped.csv", overwrite=True)
    final = {key: values[-1] for key, values in pipeline.history_.items() if values}
    payload = {
        "model_dir": str(out),
        "classes": list(pipeline.classes_),
        "n_train": len(train),
        "final_epoch": final,
        "training_data_fingerprint": pipeline.training_fingerprint_,
    }
    lines = [f"saved {out} (classes: {', '.join(pipeline.classes_)}; {len(train)} images)"]
    lines += [f"  {key}: {value:.4f}" for key, value in final.items()]
    _emit(payload, as_json, lines)


# MODEL: a saved pipeline directory, or the name of a model shipped with covidcxr (the
# directory wins when both exist); covidcxr.pretrained.load_pipeline decides.
_MODEL_ARGUMENT = click.argument("model_dir", metavar="MODEL")


@cli.command("predict")
@_MODEL_ARGUMENT
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    help="Write one row per radiograph (id, class, probabilities, boxes) to this .csv, "
    ".jsonl or .parquet file as the predictions are made, for any number of images (with "
    "--engine ray: a folder of partitions); not replaced unless --overwrite.",
)
@_SOURCE_OPTION
@_ON_ERROR_OPTION
@_CACHE_OPTION
@click.option("--overwrite", is_flag=True, help="Replace an existing --output file.")
@click.option("--json", "as_json", is_flag=True, help="Print every prediction as JSON.")
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this process. ray: a Ray cluster (pip install 'covidcxr[ray]'); workers "
    "read the images themselves and --output is a folder.",
)
@click.option(
    "--address",
    help="With --engine ray: the cluster to use (ray://host:10001, auto) [default: "
    "RAY_ADDRESS, else a local cluster started for the command].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="With --engine ray: workers, each loading the model once [default: one per CPU].",
)
@click.option(
    "--format",
    "table_format",
    type=click.Choice(["parquet", "csv", "jsonl"]),
    help="With --engine ray: the partitions' format [default: parquet, or the --output "
    "folder's suffix].",
)
@click.option(
    "--runtime",
    type=click.Choice(["auto", "tensorflow", "onnx", "openvino", "litert"]),
    default="auto",
    show_default=True,
    help="What runs the classifier: auto (the runtime the model was exported for with "
    "`covidcxr export`, else TensorFlow), tensorflow (the Keras model), onnx, openvino or "
    "litert.",
)
@click.option(
    "--priors",
    metavar="MIX",
    help="The class mix where the model is used, as CLASS=SHARE,... (e.g. "
    "covid-19=0.05,normal=0.75,pneumonia=0.2; counts work too: they are divided by their "
    "sum), 'estimate' to estimate it from the SOURCEs themselves (they are read twice), or "
    "'training' for the model's training mix: probabilities are moved to that mix by "
    "Bayes' rule (see Pipeline.set_priors) [default: the mix saved with the model, which "
    "is its training mix unless Pipeline.set_priors changed it].",
)
@_PROGRESS_OPTION
def predict_command(
    *,
    no_progress: bool,
    model_dir: str,
    sources: tuple[str, ...],
    output: Path | None,
    source_options: tuple[str, ...],
    on_error: str,
    cache_dir: Path | None,
    overwrite: bool,
    as_json: bool,
    engine: str,
    address: str | None,
    workers: int | None,
    table_format: str | None,
    runtime: str,
    priors: str | None,
) -> None:
    """Classify the radiographs in each SOURCE (and box their lesions) with a saved model.

    MODEL is a saved model directory or the name of a model shipped with covidcxr
    (`python -m covidcxr.pretrained list`). A SOURCE is an image file, a glob, a folder
    (of class subfolders, or of images), a .zip archive or a URI such as
    cos://bucket/prefix; labels are not needed.
    """
    # The cache given on the command line (not one set for every command by
    # COVIDCXR_CACHE_DIR): Ray's workers read and preprocess on their own machines.
    cache_given = (
        click.get_current_context().get_parameter_source("cache_dir")
        is click.core.ParameterSource.COMMANDLINE
    )
    for name, used in (
        ("--runtime", runtime != "auto"),
        ("--priors", priors is not None),
        ("--cache-dir", cache_given),
    ):
        if engine == "ray" and used:  # for Ray, save a model with Pipeline.set_priors
            raise click.UsageError(f"{name} applies to --engine local only")
    mix = _parse_priors(priors)
    if engine == "ray":
        _predict_on_ray(
            model_dir,
            sources,
            output,
            _source_options(source_options, on_error),
            overwrite=overwrite,
            as_json=as_json,
            address=address,
            workers=workers,
            table_format=table_format,
        )
        return
    for name, given in (("--address", address), ("--workers", workers), ("--format", table_format)):
        if given is not None:
            raise click.UsageError(f"{name} applies to --engine ray only")
    if output is not None and output.is_dir():
        raise OutputExistsError(
            f"{output} is a folder; --output names a .csv, .jsonl or .parquet file"
        )
    from covidcxr.pipeline import (  # noqa: PLC0415
        model_note,
        skipped_path_for,
        write_predictions,
    )
    from covidcxr.pretrained import load_pipeline  # noqa: PLC0415

    options = _source_options(source_options, on_error)
    skipped_file = skipped_path_for(output) if output is not None and _skipping(options) else None
    for target in (output, skipped_file):  # fail before predicting, not after
        if target is not None and target.exists() and not overwrite:
            raise OutputExistsError(f"{target} already exists; pass --overwrite to replace it")
    if output is not None:
        check_output_location(output)  # a read-only or full disk, before predicting
    # A mistyped model or source fails before TensorFlow loads, not seconds after.
    _check_model(model_dir)
    source = _open_sources(sources, options)
    _import_tensorflow()
    pipeline = load_pipeline(
        model_dir,
        progress=_show_progress(no_progress),
        cache_dir=cache_dir,
        runtime=None if runtime == "auto" else runtime,
    )
    # A model trained on phantoms says so: predicting warns (one "warning:" line on
    # stderr), and every row written or printed carries the note.
    note = model_note(pipeline.training_data_)
    _apply_priors(pipeline, mix, None)  # a mix it cannot use fails before any reading
    _apply_priors(pipeline, mix, source)
    if output is not None:
        tally = _StatusCount()
        count = write_predictions(
            tally(pipeline.iter_predict(source)),
            output,
            classes=pipeline.classes_,
            overwrite=overwrite,
            note=note,
            severity=pipeline.measures_severity,
        )
        statuses = {status: tally.counts[status] for status in (ACCEPTED, UNCERTAIN, REJECTED)}
        skipped = _skipped_items(source)
        # The same keys as the Ray summary: a script reading stdout sees what was left out.
        summary: dict[str, Any] = {
            "output": str(output),
            "n_images": count,
            "n_skipped": len(skipped),
            "status": statuses,
        }
        if skipped_file is not None:
            summary["skipped_file"] = str(skipped_file)
        lines = [f"wrote {count} prediction(s) to {output}", _status_line(tally.counts)]
        _report_skips(options, skipped, skipped_file, overwrite=overwrite)  # before naming it
        _emit(summary, as_json, lines)
        return
    predictions = pipeline.predict(source)
    noted = {"model_note": note} if note is not None else {}
    _emit([{**p.to_dict(), **noted} for p in predictions], as_json, _prediction_lines(predictions))
    _report_skips(options, _skipped_items(source), None, overwrite=overwrite)


def _apply_priors(pipeline: Any, mix: dict[str, float] | str | None, source: Any) -> None:
    """Set ``--priors`` on the pipeline; an estimate is printed on stderr.

    Called twice: before any radiograph is read (``source`` is ``None``: a given mix, or
    the training one) and with the opened sources (``estimate``, which reads them).
    """
    if source is not None:
        if mix == "estimate":
            _estimate_priors(pipeline, source)
    elif mix == "training":
        pipeline.set_priors(None)
    elif isinstance(mix, dict):
        pipeline.set_priors(mix)


def _estimate_priors(pipeline: Any, source: Any) -> None:
    """``--priors estimate``: EM on the sources, printed on stderr, then set."""
    estimate = pipeline.estimate_priors(source)
    shares = ", ".join(f"{c} {v:.3f}" for c, v in estimate.as_dict().items())
    n = estimate.n_items
    click.echo(f"estimated class mix: {shares} (EM on {n} radiographs)", err=True)
    pipeline.set_priors(estimate.as_dict(), source=f"EM estimate from {n} radiographs")


def _parse_priors(text: str | None) -> dict[str, float] | str | None:
    """``--priors``: ``None``, ``"estimate"``, ``"training"``, or the shares by class name."""
    if text is None:
        return None
    if text.strip() in ("estimate", "training"):
        return text.strip()
    shares: dict[str, float] = {}
    for part in text.split(","):
        label, equals, value = part.partition("=")
        try:
            share = float(value)
        except ValueError:
            share = float("nan")
        if not equals or not label.strip() or label.strip() in shares or share != share:  # noqa: PLR0124
            raise click.BadParameter(
                f"{part!r}: give CLASS=SHARE for each class once, separated by commas "
                "(covid-19=0.05,normal=0.75,pneumonia=0.2), 'estimate' or 'training'",
                param_hint="--priors",
            )
        shares[label.strip()] = share
    return shares


@cli.command("export")
@click.argument("model_dir", metavar="MODEL", type=click.Path(file_okay=False, exists=True))
@click.argument("out_dir", metavar="OUT", type=click.Path(path_type=Path))
@click.option(
    "--validation",
    required=True,
    help="Labelled held-out radiographs the accuracy guard compares the export with the "
    "Keras model on (never the calibration images).",
)
@click.option(
    "--runtime",
    type=click.Choice(["openvino", "onnx", "litert"]),
    default="openvino",
    show_default=True,
    help="The runtime the copy's networks are exported for (OpenVINO measured fastest; "
    "see docs/export.rst).",
)
@click.option(
    "--precision", type=click.Choice(["fp32", "int8", "bf16"]), default="fp32", show_default=True
)
@click.option("--calibration", help="Training radiographs that calibrate int8 quantisation.")
@click.option(
    "--calibration-limit", type=click.IntRange(min=1), default=256, show_default=True,
    help="The most calibration images used.",
)  # fmt: skip
@_SOURCE_OPTION
@click.option("--overwrite", is_flag=True, help="Replace an existing exported model.")
@click.option("--json", "as_json", is_flag=True, help="Print the guard's figures as JSON.")
def export_command(
    *,
    model_dir: str,
    out_dir: Path,
    validation: str,
    runtime: str,
    precision: str,
    calibration: str | None,
    calibration_limit: int,
    source_options: tuple[str, ...],
    overwrite: bool,
    as_json: bool,
) -> None:
    """Export a saved MODEL's classifier to OUT for ONNX Runtime, OpenVINO or LiteRT.

    The export is refused, and nothing written, when on --validation its accuracy drops
    by more than 0.5 points or a class's recall by more than 1 point against the Keras
    model. `covidcxr predict OUT ...` then runs it.
    """
    from covidcxr.runtime import export  # noqa: PLC0415

    if calibration is not None and precision != "int8":
        raise click.UsageError(
            f"--calibration applies only to --precision int8 (not {precision}): leave it out, "
            "or add --precision int8"
        )
    options = _source_options(source_options, "raise")
    check_output_directory(out_dir, "pipeline", overwrite=overwrite)  # before loading
    _import_tensorflow()
    report = export(
        model_dir,
        out_dir,
        validation=_open_sources([validation], options),
        validation_description=validation,
        runtime=runtime,
        precision=precision,
        calibration=_open_sources([calibration], options) if calibration else None,
        calibration_description=calibration,
        calibration_limit=calibration_limit,
        overwrite=overwrite,
    )
    guard = report.guard
    _emit(
        {
            "path": str(report.path),
            "artifact": report.artifact,
            "artifacts": dict(report.artifacts),
            "guard": guard.to_dict(),
            "mask_guards": {name: g.to_dict() for name, g in report.mask_guards.items()},
        },
        as_json,
        [
            f"exported {runtime} ({precision}) to {report.path / report.artifact}",
            f"accuracy on {guard.n_images} held-out images: Keras "
            f"{100 * guard.reference_accuracy:.2f}%, exported "
            f"{100 * guard.exported_accuracy:.2f}% (drop {guard.accuracy_drop:.2f} points)",
            *(
                f"{name} network to {report.path / report.artifacts[name]}: masks agree at a "
                f"mean Dice of {masks.mean_dice:.4f} (lowest {masks.min_dice:.4f})"
                for name, masks in report.mask_guards.items()
            ),
        ],
    )


def _predict_on_ray(
    model: str,
    sources: Sequence[str],
    output: Path | None,
    options: dict[str, Any],
    *,
    overwrite: bool,
    as_json: bool,
    address: str | None,
    workers: int | None,
    table_format: str | None,
) -> None:
    """``predict --engine ray``: covidcxr.ray.predict into the --output folder."""
    import covidcxr.ray  # noqa: PLC0415 - Ray is optional, and slow to import

    if output is None:
        raise click.UsageError("--engine ray writes a folder: give it with --output")
    _import_tensorflow()
    suffix = output.suffix.lstrip(".")
    fmt = table_format or (suffix if suffix in {"parquet", "csv", "jsonl"} else "parquet")
    if len(sources) == 1:
        result = covidcxr.ray.predict(
            model,
            sources[0],
            output,
            format=cast(Any, fmt),
            workers=workers,
            address=address,
            overwrite=overwrite,
            source_options=options,
        )
    else:
        result = covidcxr.ray.predict(
            model,
            _open_sources(sources, options),
            output,
            format=cast(Any, fmt),
            workers=workers,
            address=address,
            overwrite=overwrite,
        )
    summary = {
        "output": str(result.output),
        "format": result.format,
        "n_images": result.n_images,
        "n_skipped": len(result.skipped),
        "workers": result.workers,
    }
    if result.skipped:  # listed beside the partitions, as RayPredictions says
        summary["skipped_file"] = str(result.output / "_skipped.csv")
    lines = [
        f"wrote {result.n_images} prediction(s) to {result.output} ({result.format}, "
        f"{result.workers} Ray worker(s), {result.seconds:.1f} s)"
    ]
    if result.skipped:
        lines.append(f"skipped {len(result.skipped)} item(s): see _skipped.csv there")
    _emit(summary, as_json, lines)


def _prediction_lines(predictions: Sequence[covidcxr.Prediction]) -> list[str]:
    """One line per prediction, then how many were diagnosed, uncertain or rejected."""
    width = max((len(p.id) for p in predictions), default=2)
    lines = []
    for p in predictions:
        confidence = "  -  " if p.confidence is None else f"{p.confidence:.3f}"
        # The detector never sees a rejected radiograph: no count rather than "0 lesion(s)".
        lesions = "-" if p.status == REJECTED else f"{len(p.detections)} lesion(s)"
        line = f"{p.id:<{width}}  {p.label:<9}  {confidence}  {lesions}"
        if p.severity is not None:
            line += (
                f"  severity {p.severity.score}/8 (patient's right lung {p.severity.right:.0%}, "
                f"left {p.severity.left:.0%})"
            )
        lines.append(f"{line}  ({p.reason})" if p.reason else line)
    lines.append(_status_line(Counter(p.status for p in predictions)))
    return lines


def _status_line(counts: Mapping[PredictionStatus, int]) -> str:
    """How many radiographs were diagnosed, left uncertain, and rejected by the gate."""
    line = (
        f"{sum(counts.values())} radiograph(s): {counts.get(ACCEPTED, 0)} diagnosed, "
        f"{counts.get(UNCERTAIN, 0)} uncertain, {counts.get(REJECTED, 0)} rejected"
    )
    if counts.get(REJECTED, 0):
        line += " by the input gate (not a frontal chest radiograph like the training ones)"
    return line


class _StatusCount:
    """Counts the statuses of the predictions passing through it, on their way to a file."""

    def __init__(self) -> None:
        self.counts: Counter[PredictionStatus] = Counter()

    def __call__(self, predictions: Iterable[covidcxr.Prediction]) -> Iterator[covidcxr.Prediction]:
        for prediction in predictions:
            self.counts[prediction.status] += 1
            yield prediction


@cli.command("evaluate")
@_MODEL_ARGUMENT
@click.argument("source")
@click.option(
    "--report",
    "report_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write report.html, report.md, report.json and figures/.",
)
@_SOURCE_OPTION
@_ON_ERROR_OPTION
@_CACHE_OPTION
@click.option(
    "--record",
    is_flag=True,
    help="Also add this evaluation (data fingerprint, figures with confidence intervals) "
    "to the model's card (metadata.json, model_card.md) and changelog.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing report.")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@_PROGRESS_OPTION
def evaluate_command(
    *,
    no_progress: bool,
    model_dir: str,
    source: str,
    report_dir: Path,
    source_options: tuple[str, ...],
    on_error: str,
    cache_dir: Path | None,
    record: bool,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Score a saved model on the labelled radiographs in SOURCE and write a report.

    MODEL is a saved model directory or the name of a model shipped with covidcxr. With
    --record the evaluation is added to the model's card, so that external validations
    accumulate with the model.
    """
    from covidcxr.evaluate import EvaluationReport  # noqa: PLC0415 - see above
    from covidcxr.pipeline import record_evaluation  # noqa: PLC0415
    from covidcxr.pretrained import load_pipeline  # noqa: PLC0415

    if record and not Path(model_dir).is_dir():
        raise click.UsageError(
            f"--record writes into a saved model directory; {model_dir!r} is not one (a "
            "shipped model is read-only: copy it with Pipeline.save first)"
        )
    options = _source_options(source_options, on_error)
    check_output_directory(report_dir, "report", overwrite=overwrite)  # before loading
    _check_model(model_dir)
    opened = covidcxr.open_source(source, **options)
    _import_tensorflow()
    pipeline = load_pipeline(model_dir, progress=_show_progress(no_progress), cache_dir=cache_dir)
    report = pipeline.evaluate(opened, report_dir, overwrite=overwrite)
    _report_skips(options, _skipped_items(opened), report_dir / "skipped.csv", overwrite=overwrite)
    lines = [*_summary_lines(report), f"report:      {report_dir / 'report.html'}"]
    if record and isinstance(report, EvaluationReport):
        record_evaluation(model_dir, report, source=repr(opened))
        lines.append(f"recorded:    {Path(model_dir) / 'model_card.md'}")
    _emit(report.to_dict(), as_json, lines)


def _refuse_unused_demo_options(with_data: bool) -> None:
    """Refuse the options of ``demo`` that do nothing with (or without) ``--data``."""
    context = click.get_current_context()
    given = {
        param.name: param
        for param in context.command.params
        if context.get_parameter_source(str(param.name)) is click.core.ParameterSource.COMMANDLINE
    }
    unused = ["n_per_class"] if with_data else ["source_options", "on_error", "max_per_class"]
    flags = [given[name].opts[0] for name in unused if name in given]
    if flags:
        raise click.UsageError(
            f"{', '.join(flags)} {'applies' if len(flags) == 1 else 'apply'} only "
            + ("without --data (to the phantoms)" if with_data else "with --data")
        )


@cli.command("demo")
@click.option(
    "--data",
    help="A real dataset folder, archive or URI; without it, synthetic phantoms are used.",
)
@click.option(
    "--out",
    "out",
    default="covidcxr-demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Gets model/ and report/.",
)
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A pipeline TOML file instead of the demo's small model.",
)
@click.option("--size", default=64, show_default=True, help="Image size in pixels.")
@click.option("--n-per-class", default=40, show_default=True, help="Training phantoms per class.")
@click.option(
    "--max-per-class", default=100, show_default=True, help="With --data: images per class used."
)
@click.option("--epochs", default=30, show_default=True, help="Training epochs.")
@click.option("--seed", default=0, show_default=True, help="Seed of everything random.")
@_SOURCE_OPTION
@_ON_ERROR_OPTION
@click.option("--overwrite", is_flag=True, help="Replace an earlier demo's model and report.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_PROGRESS_OPTION
def demo_command(
    *,
    no_progress: bool,
    data: str | None,
    out: Path,
    config: Path | None,
    size: int,
    n_per_class: int,
    max_per_class: int,
    epochs: int,
    seed: int,
    source_options: tuple[str, ...],
    on_error: str,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Run the whole pipeline offline and write an HTML report.

    Without --data it trains on synthetic chest phantoms with known lesions. They are
    drawings: they prove the software works end to end, not anything about medicine.
    """
    from covidcxr.demo import run_demo  # noqa: PLC0415 - see above
    from covidcxr.pipeline import PipelineConfig  # noqa: PLC0415 - see above

    _refuse_unused_demo_options(data is not None)
    check_output_directory(out, "demo", overwrite=overwrite)  # before TensorFlow's import
    _import_tensorflow()
    result = run_demo(
        out,
        data=data,
        source_options=_parse_source_options(source_options),
        on_error=on_error,
        config=PipelineConfig.from_toml(config) if config else None,
        size=size,
        n_per_class=n_per_class,
        max_per_class=max_per_class,
        epochs=epochs,
        seed=seed,
        progress=_show_progress(no_progress),
        overwrite=overwrite,
    )
    if data is not None and on_error == "skip":
        _report_skipped(result.skipped, out / "skipped.csv", overwrite=overwrite)
    counts = ", ".join(f"{n} {split}" for split, n in result.counts.items())
    lines = [
        f"images:      {counts}",
        *_summary_lines(result.report)[1:],
        f"model:       {result.model_dir}",
        f"report:      {result.report_dir / 'report.html'}",
    ]
    _emit(result.report.to_dict(), as_json, lines)


# -- lesion detection --------------------------------------------------------------------


def _png_name(image_id: str, used: set[str], base: PurePath | None = None) -> str:
    """A filesystem-safe PNG name for an image id, distinct from every name in ``used``.

    The name keeps the id's path below ``base`` (``COVID/1.png`` -> ``COVID__1.png``), so
    radiographs of the same file name in different folders keep apart; a clash that is
    left gets a counter.
    """
    path = PurePath(image_id)
    if base is not None and path.is_relative_to(base) and path != base:
        path = path.relative_to(base)
    else:
        path = PurePath(path.name)
    flat = "__".join((*path.parent.parts, path.stem)) if path.parent.parts else path.stem
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in flat).strip("._") or "image"
    name, count = f"{stem}.png", 0
    while name in used:
        count += 1
        name = f"{stem}-{count}.png"
    used.add(name)
    return name


def _common_folder(ids: Sequence[str]) -> PurePath | None:
    """The folder all ids are below, if they share one (``None`` for one id or none)."""
    if len(ids) < 2:
        return None
    try:
        return PurePath(os.path.commonpath(ids))
    except ValueError:  # absolute and relative ids mixed
        return None


def _planned_png_names(
    dataset: Sequence[covidcxr.XRay] | covidcxr.DatasetSource, used: set[str]
) -> dict[str, list[str]]:
    """The PNG names of every radiograph id, in order, known before any is detected."""
    from covidcxr.sources import CatalogSource  # noqa: PLC0415 - see above

    ids: list[str]
    if isinstance(dataset, CatalogSource):
        ids = [dataset.record_id(entry) for entry in dataset.pending_entries()]  # no reads
    else:  # a list, or a plugin's source: its ids are only known by reading it
        ids = [xray.id for xray in dataset]
    base = _common_folder(ids)
    names: dict[str, list[str]] = {}
    for image_id in ids:
        names.setdefault(image_id, []).append(_png_name(image_id, used, base))
    return names


@cli.command("detect")
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the annotated PNGs and detections.json (created if missing).",
)
@click.option(
    "--detector",
    "detector_name",
    default=None,
    help="A registered detector: local, watson, gradcam, or a plugin's. Default: watson "
    "when COVIDCXR_WATSON_URL, _APIKEY and _COLLECTION_IDS are set, else local.",
)
@click.option(
    "--model",
    metavar="MODEL",
    help="The name of a model shipped with covidcxr (e.g. covid-qu-ex) or a saved model "
    "directory: its input gate, lung crop and detector box the lesions, as `covidcxr "
    "predict` reports them. Or a saved model file: a LocalDetector (local) or a "
    "VGG19Classifier (gradcam). A file or folder at the path wins over a shipped name.",
)
@click.option(
    "--detector-option",
    "-d",
    "detector_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="An option for the detector, e.g. -d threshold=0.6 -d collection_ids=abc "
    "(values are read as JSON when they parse). Repeatable.",
)
@click.option(
    "--preprocess",
    default=None,
    help="Preprocess each radiograph first with this registered preprocessor (boxes are "
    "drawn on its output), e.g. gaussian-clahe with -p output_size=null. Default: the "
    "preprocessing a saved detector was trained with, at each image's own size.",
)
@click.option(
    "--preprocess-option",
    "-p",
    "preprocess_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="An option for the preprocessor. Repeatable.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write one row per radiograph (id, path, size, boxes) to this .csv, .jsonl or "
    ".parquet file, as the detections are made.",
)
@_SOURCE_OPTION
@_ON_ERROR_OPTION
@click.option("--truths/--no-truths", default=True, help="Also draw known lesion boxes.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@_PROGRESS_OPTION
def detect_command(
    *,
    sources: tuple[str, ...],
    out: Path,
    output: Path | None,
    detector_name: str | None,
    model: str | None,
    detector_options: tuple[str, ...],
    preprocess: str | None,
    preprocess_options: tuple[str, ...],
    source_options: tuple[str, ...],
    on_error: str,
    truths: bool,
    overwrite: bool,
    no_progress: bool,
) -> None:
    """Box the lesions in every radiograph of each SOURCE (a file, glob, folder, .zip, cos://...).

    Writes one annotated PNG per radiograph and detections.json (boxes in each original
    radiograph's pixels unless --preprocess resizes it) into --out; never replaces a file
    there unless --overwrite is given. With a whole model (--model covid-qu-ex, or a saved
    model directory) the boxes are those `covidcxr predict` reports, and a radiograph its
    input gate rejects is drawn without boxes, its status and reason in detections.json.
    """
    from tqdm import tqdm  # noqa: PLC0415 - keep `covidcxr --help` fast

    from covidcxr.detect import default_detector_name, draw_detections, write_png  # noqa: PLC0415

    whole_model = _whole_model(
        model,
        {
            "--detector": detector_name not in (None, "local"),
            "--detector-option": bool(detector_options),
            "--preprocess": preprocess is not None,
            "--preprocess-option": bool(preprocess_options),
        },
    )
    name = "local" if whole_model else (detector_name or default_detector_name())
    options = _parse_source_options(detector_options, "--detector-option")
    if model is not None and not whole_model:
        try:
            covidcxr.plugins.check_options("detector", name, {"model": model})
        except ConfigurationError:
            raise click.UsageError(
                f"--model {model}: detector {name!r} takes no model file (only local and "
                "gradcam load one; a shipped model's name or a saved model directory runs "
                "the whole model, without --detector). Pass the detector's own options "
                "with --detector-option KEY=VALUE"
            ) from None
        options["model"] = model
    elif model is None and name in ("local", "gradcam"):
        raise click.UsageError(
            "the local detector needs --model: the name of a shipped model (such as "
            "covid-qu-ex) or a saved model directory, or a saved LocalDetector file"
            if name == "local"
            else "the gradcam detector needs --model PATH (a saved VGG19Classifier)"
        )
    source_opts = _source_options(source_options, on_error)
    dataset = _open_sources(sources, source_opts)
    report_path = out / "detections.json"
    used_names: set[str] = set()
    png_names = _planned_png_names(dataset, used_names)
    planned = [out / name for names in png_names.values() for name in names]
    # Every output name is checked before anything is written.
    _cli_wording(
        check_new_files,
        [report_path, *planned, *([output] if output is not None else [])],
        overwrite=overwrite,
    )
    _import_tensorflow()
    found_in = (
        _pipeline_detections(cast(str, model))
        if whole_model
        else _detector_detections(name, options, preprocess, preprocess_options)
    )
    records: list[dict[str, Any]] = []
    # The PNGs and detections.json appear together, once every radiograph is done: an
    # error or Ctrl-C part-way leaves --out as it was (the --output table cleans up too).
    with (
        file_batch(out, overwrite=overwrite) as staging,
        tqdm(
            total=len(dataset),
            unit="image",
            desc="detect",
            disable=not _show_progress(no_progress),
            file=sys.stderr,
        ) as progress,
        _detections_output(output, overwrite, verdicts=whole_model) as table,
    ):
        for image, detections, verdict in found_in(dataset):
            if table is not None:
                table.add(image, detections, **verdict)
            queued = png_names.get(image.id)
            png_name = queued.pop(0) if queued else _png_name(image.id, used_names)
            drawn = draw_detections(image, detections, truths=image.boxes if truths else None)
            write_png(staging / png_name, drawn)
            height, width = image.shape
            records.append(
                {
                    "id": image.id,
                    "png": png_name,
                    "width": width,
                    "height": height,
                    "detections": [detection_to_dict(d) for d in detections],
                    **verdict,
                }
            )
            progress.update()
        source = sources[0] if len(sources) == 1 else list(sources)
        used = {"model": model} if whole_model else {}
        document = {"detector": name, **used, "source": source, "images": records}
        write_text(staging / report_path.name, json.dumps(document, indent=2) + "\n")
    found = sum(len(r["detections"]) for r in records)
    click.echo(f"{found} lesion(s) in {len(records)} image(s); wrote {out}")
    if whole_model:
        click.echo(_status_line(Counter(r["status"] for r in records)))
    _report_skips(source_opts, _skipped_items(dataset), out / "skipped.csv", overwrite=overwrite)


#: What ``detect`` gets for each radiograph: the image the boxes are drawn on, the boxes,
#: and (from a whole model) the input gate's verdict for ``detections.json``.
_Found = tuple[covidcxr.XRay, Sequence[covidcxr.Detection], dict[str, Any]]


def _whole_model(model: str | None, lone_detector_options: Mapping[str, bool]) -> bool:
    """Whether ``detect --model`` names a whole model (shipped, or a saved directory).

    A file at the path is a lone detector's (or classifier's) saved model; a folder is a
    saved pipeline; a path that is neither must be a shipped model's name.
    ``lone_detector_options`` says which of the options for a lone detector were given.

    Raises
    ------
    ConfigurationError
        If ``model`` is no file, no folder and no shipped model's name (listing those).
    click.UsageError
        If options for a lone detector come with a whole model.
    """
    if model is None or Path(model).is_file():
        return False
    _check_model(model, "--model ", "no such file or folder")
    for flag, given in lone_detector_options.items():
        if given:
            raise click.UsageError(
                f"{flag} does not apply to --model {model}: a whole model boxes lesions with "
                "its own preprocessing, input gate, lung crop and detector"
            )
    return True


def _check_model(model: str, what: str = "", missing: str = "no such folder") -> None:
    """Refuse a model that is neither a folder nor a shipped model's name, cheaply.

    Only the shipped models' manifests are read (no TensorFlow), so a mistyped name fails
    at once, listing the shipped models.
    """
    if Path(model).is_dir():
        return
    from covidcxr.pretrained import model_info  # noqa: PLC0415 - see above

    try:
        model_info(model)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{what}{model}: {missing}, nor a shipped model ({exc})") from None


def _detector_detections(
    name: str,
    options: Mapping[str, Any],
    preprocess: str | None,
    preprocess_options: tuple[str, ...],
) -> Callable[[Iterable[covidcxr.XRay]], Iterator[_Found]]:
    """A lone detector's boxes, on each radiograph as its preprocessing prepares it.

    That is ``--preprocess`` when given, else what a saved detector was trained behind.
    """
    detector = covidcxr.create_detector(name, **options)
    enhance = (
        covidcxr.create_preprocessor(
            preprocess, **_parse_source_options(preprocess_options, "--preprocess-option")
        )
        if preprocess
        else covidcxr.preprocess.recorded_preprocessor(detector)
    )

    def found(radiographs: Iterable[covidcxr.XRay]) -> Iterator[_Found]:
        for xray in radiographs:
            image = enhance(xray) if enhance is not None else xray
            yield image, checked_detections(detector.detect(image), image, detector), {}

    return found


def _pipeline_detections(model: str) -> Callable[[Iterable[covidcxr.XRay]], Iterator[_Found]]:
    """A whole model's boxes, on each radiograph as it was read: what ``predict`` reports.

    A radiograph the input gate rejects is drawn without boxes, and ``detections.json``
    says why (``status`` and ``reason``, as in a prediction).

    Raises
    ------
    ConfigurationError
        If the model has no lesion detector.
    """
    from covidcxr.pretrained import load_pipeline  # noqa: PLC0415 - see above

    # No bars of its own: each chunk would leave one; detect's bar counts the images.
    pipeline = load_pipeline(model, progress=False)
    if pipeline.detector_ is None:
        raise ConfigurationError(f"{model} has no lesion detector: it only classifies")

    def found(radiographs: Iterable[covidcxr.XRay]) -> Iterator[_Found]:
        iterator = iter(radiographs)
        while chunk := list(itertools.islice(iterator, _DETECT_CHUNK)):
            for xray, prediction in zip(chunk, pipeline.predict(chunk), strict=True):
                verdict = {"status": prediction.status, "reason": prediction.reason}
                yield xray, prediction.detections, verdict

    return found


_DETECT_CHUNK = 16  # radiographs a whole model scores at once in ``detect``


def _cli_wording(write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``write``; an existing output is refused in the command line's words."""
    try:
        return write(*args, **kwargs)
    except FileExistsError as exc:
        message = str(exc).replace("overwrite=True (--overwrite)", "--overwrite")
        message = message.replace("overwrite=True", "--overwrite")
        raise OutputExistsError(message) from None


def _detections_output(
    output: Path | None, overwrite: bool, *, verdicts: bool
) -> contextlib.AbstractContextManager[DetectionsTable | None]:
    """The ``--output`` table of ``detect`` (with the gate's verdicts), or nothing."""
    from covidcxr.pipeline import detections_table  # noqa: PLC0415 - see above

    if output is None:
        return contextlib.nullcontext()
    return detections_table(output, overwrite=overwrite, verdicts=verdicts)


def _command_line_advice(error: WeightsUnavailableError) -> str:
    """The error's advice in the command line's terms: TOML options, not Python arguments."""
    text = str(error).replace("weights=None", 'weights = "none"')
    text = re.sub(r"weights='([^']*)'", r'weights = "\1"', text)
    text = re.sub(r"\bpass (weights = )", r"set \1", text)
    text = re.sub(r"\b(\w+)=True\b", r"\1 = true", text)
    return (
        f"{text} On the command line these are [classifier] options of the pipeline TOML "
        'file given with --config (with weights = "none" use the from-scratch options of '
        "covidcxr.classify.FROM_SCRATCH; without --config, train falls back to them "
        "itself when the ImageNet weights cannot be downloaded)."
    )


def main(argv: list[str] | None = None) -> None:
    """Run the command line; covidcxr errors become a one-line message and exit status 1."""
    try:
        cli.main(args=argv, prog_name="covidcxr", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except WeightsUnavailableError as exc:
        click.echo(f"error: {_command_line_advice(exc)}", err=True)
        sys.exit(1)
    except CovidCXRError as exc:
        # One line, whatever the message holds: a log shows one line per failure.
        message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        if isinstance(exc, InvalidImageError):
            # The library's advice in the command line's terms.
            message = message.replace("raise max_pixels", "raise it with -s max_pixels=N")
            message += " (pass --on-error skip to leave unreadable images out)"
        click.echo(f"error: {message}", err=True)
        sys.exit(1)
