"""Development sessions: ``nox -s tests lint typing docs``.

Each session installs what it needs into its own virtual environment, so a fresh clone
needs only ``pip install nox``.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typing", "docs", "examples"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PYTHON = ["3.11"]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (tests needing ../shared skip with a reason when it is absent)."""
    session.install("-e", ".[test]")
    session.install("./tests/plugin_packages/covidcxr-example-plugin")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Check style and common bugs with ruff."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typing(session: nox.Session) -> None:
    """Type-check the library, its tests and its benchmarks with ``mypy --strict``."""
    session.install("-e", ".[typing]")
    session.run("mypy", *session.posargs)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the Sphinx documentation with warnings as errors, and run its doctests."""
    session.install("-e", ".[docs]")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")
    session.run(
        "sphinx-build", "-W", "--keep-going", "-b", "doctest", "docs", "docs/_build/doctest"
    )


@nox.session(python=PYTHON)
def examples(session: nox.Session) -> None:
    """Install the plugin-author example as a real package, run its tests, run the examples."""
    session.install("-e", ".[all]", "pytest>=8")
    session.install("./examples/plugin-author")
    session.run("pytest", "-q", "examples/plugin-author/tests")
    # The real-data example, at its small default size, where the shared data is present.
    data = Path(os.environ.get("COVIDCXR_SHARED_DATA", Path("..") / "shared" / "data"))
    if (data / "covid-qu-ex" / "Train").is_dir():
        out = Path(session.create_tmp()) / "covid-qu-ex-report"
        session.run("python", "examples/covid_qu_ex_small.py", "--out", str(out), "--overwrite")
    else:
        session.warn(f"skipping examples/covid_qu_ex_small.py: no COVID-QU-Ex data under {data}")
