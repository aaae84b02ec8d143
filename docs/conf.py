"""Sphinx configuration for the covidcxr documentation."""

from __future__ import annotations

import os
from pathlib import Path

import covidcxr

project = "covidcxr"
author = "covidcxr developers"
copyright = "2026, covidcxr developers"
release = covidcxr.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
    # MyST renders the Markdown result tables that the benchmark scripts write.
    "myst_parser",
]

autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False

# Cross-references to Python and NumPy. Inventories come from a local cache
# (docs/_intersphinx/<name>.inv) when present, or from the web when
# COVIDCXR_DOCS_INTERSPHINX=1 (as on a hosted build). The development and CI machines have
# no network, and a failed download would be a warning (an error under -W), so by default
# the build contacts no host and those references stay plain text.
_INVENTORIES = {
    "python": "https://docs.python.org/3",
    "numpy": "https://numpy.org/doc/stable",
}
_CACHE = Path(__file__).parent / "_intersphinx"
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
for _name, _url in _INVENTORIES.items():
    _cached = _CACHE / f"{_name}.inv"
    if _cached.is_file():
        intersphinx_mapping[_name] = (_url, str(_cached))
    elif os.environ.get("COVIDCXR_DOCS_INTERSPHINX") == "1":
        intersphinx_mapping[_name] = (_url, None)
intersphinx_timeout = 10

nitpicky = False
html_theme = "furo"
html_title = f"covidcxr {release}"
templates_path: list[str] = []
exclude_patterns = ["_build"]
doctest_global_setup = "import numpy as np\nimport covidcxr"

# Docstring examples (plain ``>>>`` blocks pulled in by autodoc) run under pytest
# --doctest-modules, in their module's namespace; the doctest builder runs the
# ``.. doctest::`` blocks written in these pages.
doctest_test_doctest_blocks = ""
