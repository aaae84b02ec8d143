"""Telling a number from a value that merely converts to one, for option checks.

Options often arrive as text (``-s``/``-p KEY=VALUE``, a TOML file) or from a parameter
search (NumPy scalars). ``int("abc")`` raises an untyped error, ``int(2.7)`` quietly gives
2 and ``float(True)`` is 1.0, so checks ask what kind of value they were given instead of
converting it. NumPy's integers and floats count; booleans, Python's or NumPy's, do not.
"""

from __future__ import annotations

import math
import numbers
from typing import SupportsFloat, cast

import numpy as np

__all__ = ["is_finite_real", "is_real", "is_whole"]


def is_whole(value: object) -> bool:
    """Whether ``value`` is an integer (NumPy's included), not a boolean.

    Examples
    --------
    >>> is_whole(3), is_whole(np.int64(3)), is_whole(3.0), is_whole(True), is_whole("3")
    (True, True, False, False, False)
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def is_real(value: object) -> bool:
    """Whether ``value`` is a real number (NaN and infinities included), not a boolean.

    Examples
    --------
    >>> is_real(0.5), is_real(np.float32(0.5)), is_real(2), is_real(False), is_real("0.5")
    (True, True, True, False, False)
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def is_finite_real(value: object) -> bool:
    """Whether ``value`` is a finite real number, not a boolean.

    Examples
    --------
    >>> is_finite_real(0.5), is_finite_real(float("nan")), is_finite_real(float("inf"))
    (True, False, False)
    """
    return is_real(value) and math.isfinite(cast(SupportsFloat, value))
