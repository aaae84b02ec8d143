"""Package attributes imported on first use (PEP 562), so that importing a package is cheap.

A plugin lookup imports each built-in plugin module, and with it the package that holds it
(``covidcxr.detect`` for ``covidcxr.detect.plugin``). Those packages re-export estimator
classes whose modules import scikit-learn (about a second) or the IBM SDK; loading them
lazily keeps a lookup from paying for what it does not build.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, homes: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__`` that import ``homes`` on first access.

    Parameters
    ----------
    package
        The package's ``__name__`` (for the error message).
    homes
        Attribute name -> the module that defines it.
    namespace
        The package's ``globals()``: an imported attribute is cached there.

    Examples
    --------
    >>> import covidcxr.detect
    >>> "LocalDetector" in dir(covidcxr.detect)
    True
    >>> covidcxr.detect.LocalDetector.__module__
    'covidcxr.detect._local'
    """

    def get_attribute(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        namespace[name] = value
        return value

    def list_attributes() -> list[str]:
        return sorted({*namespace, *homes})

    return get_attribute, list_attributes
