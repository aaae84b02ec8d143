"""``python -m covidcxr.pretrained``: list, verify, show, add and name shipped models.

``add`` is for whoever builds a release: it copies a saved pipeline into covidcxr's models
folder (``src/covidcxr/pretrained/models`` in a source checkout) as float16 (or float32,
for every file or for those named), with its manifest and checksums::

    python -m covidcxr.pretrained add covid-qu-ex runs/covid-qu-ex
        --build-command "covidcxr train data/COVID-QU-Ex -s layout=covid-qu-ex ..."
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import cast

import click

from covidcxr._logging import import_tensorflow
from covidcxr.errors import CovidCXRError
from covidcxr.pretrained._registry import available, card, format_size, verify
from covidcxr.pretrained._shipping import (
    DEFAULT_TOLERANCE,
    Precision,
    PrecisionSpec,
    package,
    set_aliases,
)

__all__ = ["main"]

_ROOT_OPTION = click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="A models folder of your own instead of covidcxr's.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The models that ship with covidcxr."""


@main.command("list")
@_ROOT_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the listing as JSON.")
def list_command(root: Path | None, as_json: bool) -> None:
    """List the shipped models: name, size, precision and summary."""
    models = available(root)
    if as_json:
        payload = [
            {"name": i.name, "aliases": list(i.aliases), "summary": i.summary,
             "size_bytes": i.size_bytes, "precision": i.precision,
             "precisions": dict(i.precisions), "weights": i.weights,
             "build_command": i.build_command, "revision": i.revision}
            for i in models.values()
        ]  # fmt: skip
        click.echo(json.dumps(payload, indent=2))
        return
    if not models:
        click.echo("(no model is shipped with this installation of covidcxr)")
    for info in models.values():
        click.echo(str(info))


@main.command("verify")
@click.argument("name")
@_ROOT_OPTION
def verify_command(name: str, root: Path | None) -> None:
    """Check every file of model NAME against its SHA-256."""
    info = verify(name, root)
    click.echo(f"{info.name}: {len(info.files)} file(s), {info.size}, every SHA-256 matches")


@main.command("card")
@click.argument("name")
@_ROOT_OPTION
def card_command(name: str, root: Path | None) -> None:
    """Print the model card of model NAME (Markdown)."""
    click.echo(card(name, root).text, nl=False)


@main.command("add")
@click.argument("name")
@click.argument("pipeline_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--build-command",
    required=True,
    help="The exact command that rebuilds the model from the shared data (goes into its "
    "manifest and card).",
)
@click.option("--summary", help="What the model is, in one line (default: from its card).")
@click.option(
    "--precision",
    "precisions",
    multiple=True,
    default=("float16",),
    show_default=True,
    help="How the Keras weights are stored: float16 or float32 for every file, or "
    "FILE=PRECISION for one file of the saved pipeline (repeatable; a file not named keeps "
    "float32), e.g. --precision classifier=float16 --precision gate=float16.",
)
@click.option(
    "--check-source",
    help="Images to compare the original and shipped predictions on (a folder, archive "
    "or URI); nine synthetic phantoms by default.",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=DEFAULT_TOLERANCE,
    show_default=True,
    help="The largest change of a class probability, or of an infected share of a lung, "
    "accepted; an image the input gate admits in one copy only is never accepted.",
)
@click.option(
    "--alias",
    "aliases",
    multiple=True,
    help="Another name it loads by (repeatable), e.g. covid-qu-ex for the recommended model.",
)
@click.option(
    "--revision",
    help="The source revision of the code that trained it (a git commit), for its manifest "
    "and card.",
)
@_ROOT_OPTION
@click.option(
    "--force",
    is_flag=True,
    help="Replace a model of the same name (never a folder that holds no shipped model).",
)
def add_command(
    *,
    name: str,
    pipeline_dir: Path,
    build_command: str,
    summary: str | None,
    precisions: tuple[str, ...],
    check_source: str | None,
    tolerance: float,
    aliases: tuple[str, ...],
    revision: str | None,
    root: Path | None,
    force: bool,
) -> None:
    """Add the saved pipeline PIPELINE_DIR to the shipped models as NAME."""
    import_tensorflow(0)
    import covidcxr  # noqa: PLC0415 - only this command opens sources

    images = covidcxr.open_source(check_source) if check_source else None
    info = package(
        name,
        pipeline_dir,
        build_command=build_command,
        summary=summary,
        root=root,
        force=force,
        precision=_precision_spec(precisions),
        check_images=images,
        check_description=repr(images) if images is not None else None,
        tolerance=tolerance,
        aliases=aliases,
        revision=revision,
    )
    check = info.check
    for left_out in info.left_out:
        click.echo(f"left out {left_out}: the save did not write it", err=True)
    click.echo(
        f"added {info.name} at {info.path}: {info.size} ({format_size(info.original_size_bytes)}"
        f" as saved), weights as {info.weights}; largest probability change "
        f"{check['max_abs_probability_difference']:.2e} on {check['n_compared']} image(s)"
    )


def _precision_spec(values: tuple[str, ...]) -> PrecisionSpec:
    """``--precision`` values as :func:`package` takes them: one precision or one per file."""
    allowed = ("float16", "float32")
    if len(values) == 1 and "=" not in values[0]:
        if values[0] not in allowed:
            raise click.BadParameter(
                f"{values[0]!r} is not float16 or float32", param_hint="--precision"
            )
        return cast("Precision", values[0])
    spec: dict[str, Precision] = {}
    for value in values:
        path, equals, precision = value.partition("=")
        if not equals or not path or precision not in allowed or path in spec:
            raise click.BadParameter(
                f"{value!r}: give one precision (float16 or float32) or each file's once, as "
                "FILE=float16 or FILE=float32",
                param_hint="--precision",
            )
        spec[path] = cast("Precision", precision)
    return spec


@main.command("alias")
@click.argument("name")
@click.argument("aliases", nargs=-1)
@_ROOT_OPTION
def alias_command(name: str, aliases: tuple[str, ...], root: Path | None) -> None:
    """Give model NAME exactly the other names ALIASES (none: take its aliases away).

    To move the recommended "covid-qu-ex" to a new model: take it from the old one, then
    give it to the new one.
    """
    info = set_aliases(name, aliases, root=root)
    names = ", ".join(info.aliases) if info.aliases else "no other name"
    click.echo(f"{info.name}: {names}")


def run(argv: list[str] | None = None) -> None:
    """Run the command; covidcxr errors become one ``error:`` line and exit status 1."""
    try:
        main.main(args=argv, prog_name="python -m covidcxr.pretrained", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CovidCXRError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    run()
