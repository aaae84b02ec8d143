"""Connecting to Ray: an existing cluster, or a local one started for the call.

Nothing else in covidcxr imports Ray; this module imports it when a function of
:mod:`covidcxr.ray` is called, and says how to install it when it is missing.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from covidcxr.errors import ConfigurationError

__all__ = ["check_workers", "connected", "import_ray"]

_INSTALL_HINT = "install the extra: pip install 'covidcxr[ray]'"


def import_ray(module: str = "ray") -> ModuleType:
    """Import ``module`` (``ray``, ``ray.data``, ``ray.train`` ...), or explain how to get it.

    Raises
    ------
    ConfigurationError
        If Ray is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(f"{module} is not installed: {_INSTALL_HINT}") from exc


def check_workers(workers: object, what: str = "workers") -> int | None:
    """``workers`` as a count of Ray workers (``None``: as many as the cluster has CPUs).

    Raises
    ------
    ConfigurationError
        For anything but ``None`` or a whole number >= 1.

    Examples
    --------
    >>> check_workers(2)
    2
    >>> check_workers(0)
    Traceback (most recent call last):
    ...
    covidcxr.errors.ConfigurationError: workers must be a whole number >= 1 (or None), got 0
    """
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigurationError(f"{what} must be a whole number >= 1 (or None), got {workers!r}")
    return workers


@contextlib.contextmanager
def connected(address: str | None = None, **init_options: Any) -> Iterator[ModuleType]:
    """Use the Ray cluster already connected, or connect to ``address``, for a ``with`` block.

    With no connection and no ``address`` (nor ``RAY_ADDRESS``), a local cluster is
    started on this machine and shut down at the end of the block; a connection made here
    is closed at the end, one made by the caller is left open.

    Parameters
    ----------
    address
        A cluster's address (``"ray://head:10001"``, ``"auto"``), as for :func:`ray.init`.
    **init_options
        Passed to :func:`ray.init` (``num_cpus`` for a local cluster, ``runtime_env``).
        Credentials do not belong here: Ray shows a job's runtime environment in its
        dashboard. Give them to the cluster's nodes as environment variables instead (see
        :doc:`/ray`).

    Yields
    ------
    module
        The ``ray`` module.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    options: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": "WARNING",
        **init_options,
    }
    if address is not None or os.environ.get("RAY_ADDRESS"):
        options.pop("num_cpus", None)  # a property of the cluster, not of the connection
        options.pop("include_dashboard", None)
    ray.init(address=address, **options)
    try:
        yield ray
    finally:
        ray.shutdown()
