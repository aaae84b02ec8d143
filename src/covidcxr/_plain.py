"""Plain data: the one place where options are read from text and values made JSON-ready.

Configuration comes from TOML files, ``KEY=VALUE`` command-line options and Python, and
goes out to model metadata, pipeline manifests and reports: every one of those paths uses
these functions, so ``"none"`` means ``None`` everywhere and a numpy scalar or a path is
written the same way everywhere.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any, Final, Literal

import numpy as np

__all__ = ["NONE", "option_from_text", "option_value", "plain_data"]

#: The word that stands for ``None`` in TOML files and command-line options (TOML has no
#: null).
NONE: Final = "none"


def option_value(value: Any) -> Any:
    """An option as given in a TOML table: the string ``"none"`` (any case) is ``None``.

    Examples
    --------
    >>> option_value("None"), option_value("imagenet"), option_value(3)
    (None, 'imagenet', 3)
    """
    return None if isinstance(value, str) and value.lower() == NONE else value


def option_from_text(text: str) -> Any:
    """An option given as text (``KEY=VALUE``): JSON when it parses, else the string.

    Examples
    --------
    >>> option_from_text("3"), option_from_text("[1, 2]"), option_from_text("none")
    (3, [1, 2], None)
    >>> option_from_text("covid-qu-ex")
    'covid-qu-ex'
    """
    try:
        value: Any = json.loads(text)
    except json.JSONDecodeError:
        value = text
    return option_value(value)


def plain_data(value: Any, *, unknown: Literal["repr", "keep"] = "repr") -> Any:
    """``value`` as JSON data.

    Mappings and sequences are converted recursively, numpy scalars and arrays become
    Python numbers and lists, paths strings, and nan and infinities ``None``.

    Parameters
    ----------
    value
        Anything.
    unknown
        What becomes of any other object: its ``repr`` (metadata and manifests must be
        written), or the object itself (for a caller that checks it).

    Examples
    --------
    >>> import numpy as np
    >>> from pathlib import Path
    >>> plain_data({"a": np.float32(0.5), "b": (1, float("nan")), "c": Path("x")})
    {'a': 0.5, 'b': [1, None], 'c': 'x'}
    >>> plain_data(object).startswith("<class")
    True
    """
    if isinstance(value, Mapping):
        return {str(key): plain_data(item, unknown=unknown) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_data(item, unknown=unknown) for item in value]
    if isinstance(value, np.ndarray):
        return plain_data(value.tolist(), unknown=unknown)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, float) and not math.isfinite(value):
        value = None
    plain = value is None or isinstance(value, str | int | float | bool)
    return value if plain or unknown == "keep" else repr(value)
