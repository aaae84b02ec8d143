"""scikit-learn's ``set_params``, once, for the estimators that keep their own ``get_params``.

:class:`~covidcxr.VGG19Classifier`, :class:`~covidcxr.LocalDetector`,
:class:`~covidcxr.gate.ChestXrayGate` and :class:`~covidcxr.evaluate.TemperatureScaling`
follow scikit-learn's conventions (``__init__`` stores, ``get_params``/``set_params``,
:func:`sklearn.base.clone` works: ``tests/foundation/test_estimator_params.py``) without
inheriting :class:`sklearn.base.BaseEstimator`, because importing ``sklearn.base`` pulls in
SciPy, and two of these classes are imported by every plugin lookup: the built-in plugins
register :class:`~covidcxr.VGG19Classifier` itself (``covidcxr.classify.plugin``, so that a
saved pipeline reaches its ``load``), and ``covidcxr.detect.plugin`` lives in a package whose
``__init__`` imports :class:`~covidcxr.LocalDetector`. ``covidcxr``'s own ``_LAZY`` does not
help there: ``open_source``, ``create_preprocessor`` and the other lookups load every
built-in plugin.

Measured on this project's 2-core machine (December 2026, Python 3.11, scikit-learn 1.9;
medians of 5 fresh interpreters, wall clock, load average about 1.8):

============================================  ==========  ===========================
path                                          today       with ``sklearn.base`` added
============================================  ==========  ===========================
``import covidcxr``                           0.8 s       (unchanged: nothing imported)
a plugin lookup (``create_preprocessor``)     1.0 s       4.5 s
``import covidcxr.classify``                  1.0 s       3.8 s
``covidcxr --help``                           0.9 s       (unchanged: no lookup)
``import covidcxr.pipeline`` (``predict``)    4.5 s       4.5 s (imports SciPy already)
============================================  ==========  ===========================

On an idle machine ``import sklearn.base`` alone took 2.4-2.6 s against 0.4 s for
``import covidcxr`` and 0.8 s for a plugin lookup; ``python -X importtime`` puts
``sklearn.base``'s cumulative import at 3.4-5.5 s after a lookup on the loaded machine.
So inheriting would cost every lookup, and every command that opens a source without a
model, two to four seconds; it is free only on paths that build a
:class:`~covidcxr.Pipeline`. Until the plugin registrations are lazy (register a factory,
not the class; make ``covidcxr.detect`` load its modules on first use), the mixin stays.
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
