"""The top-level package: every advertised name resolves, and importing it stays light."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import covidcxr


def test_every_name_in_all_resolves() -> None:
    missing = [name for name in covidcxr.__all__ if getattr(covidcxr, name, None) is None]
    assert missing == []


def test_unknown_attributes_raise_attribute_error() -> None:
    assert not hasattr(covidcxr, "NoSuchThing")


def test_importing_covidcxr_loads_neither_tensorflow_nor_scikit_learn() -> None:
    code = (
        "import json, sys, covidcxr;"
        "print(json.dumps([m for m in ('tensorflow', 'keras', 'sklearn', 'matplotlib')"
        " if m in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == []


HEAVY = ("tensorflow", "keras", "sklearn", "scipy", "ibm_watson", "ibm_boto3")

# Each a step a user takes without building a model: none may import what only models need
# (scikit-learn alone costs about a second; the estimators' modules import it, so the
# built-in plugins register references to them and their packages load them lazily).
LIGHT_STEPS = {
    "a plugin lookup": "covidcxr.create_preprocessor('gaussian-clahe')",
    "listing every registry": (
        "from covidcxr import plugins as p; "
        "p.available_classifiers(); p.available_detectors(); p.available_sources(); "
        "p.available_preprocessors()"
    ),
    "opening a folder": "covidcxr.open_source(sys.argv[1])",
    "the namespaces that hold estimators": "import covidcxr.classify, covidcxr.detect",
    "covidcxr plugins": (
        "from covidcxr.cli import main\ntry:\n    main(['plugins'])\nexcept SystemExit:\n    pass"
    ),
    "covidcxr --help": (
        "from covidcxr.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    ),
}


@pytest.mark.parametrize("step", sorted(LIGHT_STEPS))
def test_steps_without_a_model_import_no_model_library(step: str, tmp_path: Path) -> None:
    (tmp_path / "normal").mkdir()
    cv2.imwrite(str(tmp_path / "normal" / "a.png"), np.zeros((8, 8), np.uint8))
    code = (
        "import json, sys, covidcxr\n"
        f"{LIGHT_STEPS[step]}\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout.splitlines()[-1]) == [], step


def test_the_top_level_api_fits_on_one_screen() -> None:
    assert len(covidcxr.__all__) <= 28
    assert sorted(dir(covidcxr)) == sorted(covidcxr.__all__)


def test_importing_covidcxr_loads_only_the_concept_modules() -> None:
    code = (
        "import json, sys, covidcxr;"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('covidcxr'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(result.stdout))
    assert not {"covidcxr.classify", "covidcxr.detect", "covidcxr.preprocess"} & loaded


def test_namespaces_are_reachable_after_a_plain_import() -> None:
    code = "import covidcxr; print(covidcxr.sources.ZipSource.__name__)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "ZipSource"


@pytest.mark.parametrize("name", sorted(covidcxr._MOVED))
def test_a_name_that_left_the_top_level_still_resolves_with_a_deprecation_warning(
    name: str,
) -> None:
    home = importlib.import_module(covidcxr._MOVED[name])
    with pytest.warns(DeprecationWarning, match=rf"covidcxr\.{name} has moved to {home.__name__}"):
        value = getattr(covidcxr, name)
    assert value is getattr(home, name)
    assert name in home.__all__


def test_every_public_namespace_lists_only_names_it_has() -> None:
    for name in sorted(covidcxr._NAMESPACES):
        module = importlib.import_module(f"covidcxr.{name}")
        missing = [item for item in module.__all__ if not hasattr(module, item)]
        assert missing == [], name


def test_every_public_class_and_function_has_a_docstring() -> None:
    # ruff's pydocstyle rules treat everything in an _private module as private, so they
    # no longer ask for the docstrings of the classes and functions re-exported from one.
    undocumented = []
    for name in sorted(covidcxr._NAMESPACES):
        module = importlib.import_module(f"covidcxr.{name}")
        for item in module.__all__:
            value = getattr(module, item)
            if (inspect.isclass(value) or inspect.isroutine(value)) and not (
                value.__doc__ or ""
            ).strip():
                undocumented.append(f"covidcxr.{name}.{item}")
    assert undocumented == []
