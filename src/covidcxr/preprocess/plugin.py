"""Built-in plugin: registers the ``gaussian-clahe`` and ``none`` preprocessors."""

from __future__ import annotations

from covidcxr.hookspecs import Register, hookimpl
from covidcxr.preprocess._gaussian_clahe import GaussianClahePreprocessor, IdentityPreprocessor

__all__ = ["covidcxr_register_preprocessors"]


@hookimpl
def covidcxr_register_preprocessors(register: Register) -> None:
    """Register ``gaussian-clahe`` (the default) and ``none`` (identity)."""
    register("gaussian-clahe", GaussianClahePreprocessor)
    register("none", IdentityPreprocessor)
