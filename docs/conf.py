"""Sphinx configuration for the covidcxr documentation."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.nodes import Node
from docutils.statemachine import StringList
from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

import covidcxr
from covidcxr.pretrained import models_rst

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
# Type hints name classes by their defining (often private) module; show the bare name,
# linked to where the class is documented.
python_use_unqualified_type_names = True
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


def _public_bases(
    app: object, name: str, obj: object, options: object, bases: list[object]
) -> None:
    """Show a base class from a private module by its public name, or not at all.

    A base such as ``covidcxr.sources._base.CatalogSource`` is listed as
    ``covidcxr.sources.CatalogSource``, where it is documented; a private helper base
    (one that no public namespace exports) is left out.
    """
    for index in reversed(range(len(bases))):
        base = bases[index]
        module = getattr(base, "__module__", "") or ""
        parts = module.split(".")
        if parts[0] != "covidcxr" or not any(part.startswith("_") for part in parts):
            continue
        base_name = getattr(base, "__name__", "")
        # Top-level names are documented as covidcxr.<name>, the rest in their namespace.
        candidates = ["covidcxr"] + [
            ".".join(parts[:depth])
            for depth in range(len(parts) - 1, 1, -1)
            if not parts[depth - 1].startswith("_")
        ]
        public = None
        for namespace in candidates:
            module_object = importlib.import_module(namespace)
            exported = getattr(module_object, "__all__", ())
            if base_name in exported and getattr(module_object, base_name, None) is base:
                public = f"{namespace}.{base_name}"
                break
        if public is None:
            # A private helper base: show what it stands on instead (so LocalDetector,
            # through covidcxr._unet.UNetEstimator, is a sklearn.base.BaseEstimator).
            inherited = [b for b in getattr(base, "__bases__", ()) if b is not object]
            bases[index : index + 1] = inherited or ([] if len(bases) > 1 else [object])
            _public_bases(app, name, obj, options, bases)
            return
        bases[index] = f":py:class:`{public}`"


# The public namespaces re-export constants defined in private modules; such a constant
# keeps the ``#:`` comment written where it is defined (autodoc reads these comments from
# the documented module only). api.rst lists the re-exported constants with autodata:
# autodoc does not find them by itself, as they have no comment in the namespace.
_MISSING = object()


def _defining_comment(name: str, obj: object) -> list[str]:
    short = name.rsplit(".", 1)[-1]
    for module_name in sorted(m for m in sys.modules if m.split(".")[0] == "covidcxr"):
        if getattr(sys.modules[module_name], short, _MISSING) is not obj:
            continue
        try:
            comments = ModuleAnalyzer.for_module(module_name).find_attr_docs()
        except PycodeError:
            continue
        if ("", short) in comments:
            return list(comments[("", short)])
    return []


def _public_docstring(  # noqa: PLR0917 - the signature of Sphinx's event
    app: object, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    if what == "data":
        # Without a comment where it is documented, autodoc falls back to the docstring of
        # the value's type ("Convert a string or number to a floating point number").
        type_doc = inspect.cleandoc(getattr(type(obj), "__doc__", None) or "")
        if "\n".join(lines).strip() in {"", type_doc.strip()}:
            lines[:] = _defining_comment(name, obj)


class ShippedModels(SphinxDirective):
    """``.. shipped-models::``: a section per model shipped in the documented package.

    Generated at build time from the models' manifests and cards
    (:func:`covidcxr.pretrained.models_rst`), so the page matches the package it documents.
    """

    has_content = False

    def run(self) -> list[Node]:
        content = StringList(models_rst(underline="~").splitlines(), "shipped-models")
        holder = nodes.Element()
        # Each model is a subsection ("~" titles) of the section holding the directive.
        nested_parse_with_titles(self.state, content, holder)
        return list(holder.children)


def _skip_inherited_machinery(  # noqa: PLR0917 - the signature of Sphinx's event
    app: object, what: str, name: str, obj: object, skip: bool, options: object
) -> bool | None:
    """Leave scikit-learn's metadata-routing methods out of the estimators' pages.

    ``BaseEstimator`` gives each subclass ``set_fit_request`` and the like, generated from
    the ``fit`` signature; covidcxr routes no metadata, and their docstrings cite
    scikit-learn's glossary, which these docs do not have.
    """
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app: Any) -> None:
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("autodoc-skip-member", _skip_inherited_machinery)
    app.connect("autodoc-process-docstring", _public_docstring)
    app.add_directive("shipped-models", ShippedModels)
