"""scikit-learn's ``set_params``, once, for the estimators that keep their own ``get_params``.

They do not inherit :class:`sklearn.base.BaseEstimator`: importing it pulls in SciPy, a
second on every plugin lookup.
"""

from __future__ import annotations

from typing import Any, Self

from covidcxr.errors import ConfigurationError

__all__ = ["SetParamsMixin"]


class SetParamsMixin:
    """Adds ``set_params`` to a class that has ``get_params``."""

    def get_params(self, deep: bool = True) -> dict[str, Any]:  # pragma: no cover - abstract
        """The constructor parameters, by name."""
        raise NotImplementedError

    def set_params(self, **params: Any) -> Self:
        """Set constructor parameters by name, as scikit-learn's ``set_params`` does.

        Raises
        ------
        ConfigurationError
            For a name that is not a constructor parameter.
        """
        known = self.get_params()
        for name, value in params.items():
            if name not in known:
                raise ConfigurationError(
                    f"{type(self).__name__} has no parameter {name!r}; known: {', '.join(known)}"
                )
            setattr(self, name, value)
        return self
