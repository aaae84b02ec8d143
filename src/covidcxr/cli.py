"""The ``covidcxr`` command line: a thin layer over the public API.

Built on click: it is the de-facto standard for Python command lines, typed, composable
(subcommands live in their own functions), testable in-process with ``CliRunner``, and
already a dependency of much of the scientific Python stack.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping

import click

import covidcxr
from covidcxr.errors import CovidCXRError
from covidcxr.plugins import Registration

__all__ = ["cli", "main"]

_LISTINGS: tuple[tuple[str, Callable[[], Mapping[str, Registration]]], ...] = (
    ("detectors", covidcxr.available_detectors),
    ("sources", covidcxr.available_sources),
    ("preprocessors", covidcxr.available_preprocessors),
    ("classifiers", covidcxr.available_classifiers),
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(covidcxr.__version__, prog_name="covidcxr")
def cli() -> None:
    """Chest X-ray analysis: classify radiographs and box their lesions."""


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print the listing as JSON.")
def plugins_command(as_json: bool) -> None:
    """List every registered detector, source, preprocessor and classifier.

    Each line names the plugin that provided the entry: a module name for built-ins, an
    entry-point name for installed plugins.
    """
    listing = {kind: dict(lookup()) for kind, lookup in _LISTINGS}
    if as_json:
        payload = {
            kind: [{"name": reg.name, "plugin": reg.plugin} for reg in entries.values()]
            for kind, entries in listing.items()
        }
        click.echo(json.dumps(payload, indent=2))
        return
    for kind, entries in listing.items():
        click.echo(f"{kind}:")
        if not entries:
            click.echo("  (none)")
        width = max((len(name) for name in entries), default=0)
        for name, reg in entries.items():
            click.echo(f"  {name:<{width}}  from {reg.plugin}")


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
    except CovidCXRError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
