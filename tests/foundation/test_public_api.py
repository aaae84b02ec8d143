"""The top-level package: every advertised name resolves, and importing it stays light."""

from __future__ import annotations

import json
import subprocess
import sys

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
