"""Hook specifications: how plugins add detectors, dataset sources, preprocessors and classifiers.

Every hook follows one pattern (borrowed from ``llm``): covidcxr calls the hook with a
``register`` callback, and the plugin calls ``register(name, factory)`` once per thing it
provides. covidcxr owns naming, duplicate detection and error messages, so a plugin is a
few lines::

    import covidcxr

    @covidcxr.hookimpl
    def covidcxr_register_detectors(register):
        register("my-detector", MyDetector)

A *factory* is any callable that returns the thing: usually the class itself. Options
given to :func:`covidcxr.create_detector` and friends are passed to it as keyword
arguments. Keep module-level imports in a plugin light, because every plugin module is
imported whenever covidcxr looks a name up: import heavy libraries inside the factory, or
register a reference to it, ``"package.module:Name"`` (as in an entry point), which
covidcxr imports only when the factory is first needed (to build, load or check options)::

    @covidcxr.hookimpl
    def covidcxr_register_detectors(register):
        register("my-detector", "my_package._detector:MyDetector")

Plugins are found through the ``covidcxr`` entry-point group (see :doc:`/plugins`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import pluggy

from covidcxr.protocols import Classifier, DatasetSource, LesionDetector, Preprocessor

__all__ = [
    "PROJECT_NAME",
    "ClassifierFactory",
    "DetectorFactory",
    "PreprocessorFactory",
    "Register",
    "SourceFactory",
    "covidcxr_register_classifiers",
    "covidcxr_register_detectors",
    "covidcxr_register_preprocessors",
    "covidcxr_register_sources",
    "hookimpl",
    "hookspec",
]

#: The pluggy project name, also the entry-point group plugins are discovered through.
PROJECT_NAME = "covidcxr"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Marks a plugin's hook implementations; exported as ``covidcxr.hookimpl``.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

#: ``factory(**options) -> LesionDetector``
DetectorFactory: TypeAlias = Callable[..., LesionDetector]
#: ``factory(location, **options) -> DatasetSource``; ``location`` is the URI with its
#: ``scheme://`` removed (a path for ``file``, ``bucket/prefix`` for ``cos``).
SourceFactory: TypeAlias = Callable[..., DatasetSource]
#: ``factory(**options) -> Preprocessor``
PreprocessorFactory: TypeAlias = Callable[..., Preprocessor]
#: ``factory(**options) -> Classifier``; give the class itself, so that saved models can
#: be loaded again through its ``load`` classmethod.
ClassifierFactory: TypeAlias = Callable[..., Classifier]
#: The callback passed to every ``covidcxr_register_*`` hook: ``register(name, factory)``,
#: where ``factory`` is a callable or a ``"package.module:Name"`` reference to one.
Register: TypeAlias = Callable[[str, Callable[..., Any] | str], None]


@hookspec
def covidcxr_register_detectors(register: Register) -> None:
    """Register lesion detectors.

    Parameters
    ----------
    register
        Call ``register(name, factory)`` for each detector, where ``factory(**options)``
        returns a :class:`~covidcxr.LesionDetector`. Names are lower case, for example
        ``"watson"`` or ``"my-yolo"``; :func:`covidcxr.create_detector` finds them.
    """


@hookspec
def covidcxr_register_sources(register: Register) -> None:
    """Register dataset sources for URI schemes.

    Parameters
    ----------
    register
        Call ``register(scheme, factory)`` for each scheme, where
        ``factory(location, **options)`` returns a :class:`~covidcxr.DatasetSource`.
        :func:`covidcxr.open_source` with ``"scheme://location"`` calls it.
    """


@hookspec
def covidcxr_register_preprocessors(register: Register) -> None:
    """Register preprocessors.

    Parameters
    ----------
    register
        Call ``register(name, factory)`` for each preprocessor, where
        ``factory(**options)`` returns a :class:`~covidcxr.Preprocessor`.
    """


@hookspec
def covidcxr_register_classifiers(register: Register) -> None:
    """Register classifiers.

    Parameters
    ----------
    register
        Call ``register(name, factory)`` for each classifier, where ``factory(**options)``
        returns a :class:`~covidcxr.Classifier`. Pass the class itself so that
        :meth:`~covidcxr.Classifier.load` is reachable from the registered name.
    """
