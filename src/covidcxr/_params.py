"""The estimators' base: :class:`sklearn.base.BaseEstimator`, with covidcxr's typed error.

:class:`~covidcxr.VGG19Classifier`, :class:`~covidcxr.LocalDetector`,
:class:`~covidcxr.lungs.LungSegmenter`, :class:`~covidcxr.gate.ChestXrayGate` and
:class:`~covidcxr.evaluate.TemperatureScaling` inherit scikit-learn's ``get_params``,
``set_params`` (nested ``step__param`` names included), ``repr`` of the parameters that
differ from their defaults, and :func:`sklearn.base.clone` support. An unknown parameter
is a :class:`~covidcxr.errors.ConfigurationError` (a :class:`ValueError`, as scikit-learn
raises), like every other configuration mistake in covidcxr.

``import sklearn.base`` costs about a second (it imports SciPy), so the modules that
define estimators are not imported by a plugin lookup: the built-in plugins register
references (``"covidcxr.classify._vgg19:VGG19Classifier"``, or factories that import on
call), and the packages that hold them load their classes on first use
(:mod:`covidcxr._lazy`). ``tests/foundation/test_public_api.py`` checks that a lookup,
``open_source``, ``covidcxr plugins`` and ``covidcxr --help`` import neither scikit-learn
nor TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

from covidcxr.errors import ConfigurationError

if TYPE_CHECKING:
    # scikit-learn ships no type information: what the subclasses rely on, typed.
    class _BaseEstimator:
        def get_params(self, deep: bool = True) -> dict[str, Any]: ...
        def set_params(self, **params: Any) -> Self: ...

else:
    from sklearn.base import BaseEstimator as _BaseEstimator

__all__ = ["Estimator"]


class Estimator(_BaseEstimator):
    """:class:`sklearn.base.BaseEstimator` that refuses unknown parameters with a typed error.

    Examples
    --------
    >>> from covidcxr.gate import ChestXrayGate
    >>> ChestXrayGate(epochs=3)
    ChestXrayGate(epochs=3)
    >>> ChestXrayGate().set_params(epoch=3)
    Traceback (most recent call last):
    ...
    covidcxr.errors.ConfigurationError: ChestXrayGate has no parameter 'epoch'; known: ...
    """

    def set_params(self, **params: Any) -> Self:
        """Set constructor parameters by name (``component__param`` for nested ones).

        Raises
        ------
        ConfigurationError
            For a name that is not a constructor parameter.
        """
        known = self.get_params(deep=False)
        for name in params:
            if name.partition("__")[0] not in known:
                raise ConfigurationError(
                    f"{type(self).__name__} has no parameter {name!r}; known: {', '.join(known)}"
                )
        return super().set_params(**params)
