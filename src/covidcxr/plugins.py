"""The plugin manager, entry-point loading, and name lookups.

covidcxr's own detectors, sources, preprocessors and classifiers are plugins like any
other: they register through the hooks in :mod:`covidcxr.hookspecs`. Third-party plugins
are found through the ``covidcxr`` entry-point group; the environment variable
``COVIDCXR_PLUGINS`` (a comma-separated list of entry-point names; empty for none) limits
which of them load. Built-in plugins always load.

Registries are rebuilt from the hooks at every lookup, so registering or unregistering a
plugin object at run time (see :func:`register_plugin` and :mod:`covidcxr.testing`) takes
effect at once.

An installed plugin that cannot load (it fails to import, or its hooks do not match the
specifications) does not take the others down: it is left out with a
:class:`~covidcxr.errors.PluginLoadWarning` that names it, its distribution and the two
ways out, and a lookup of a name it might have provided says so (:func:`broken_plugins`
lists them).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Final, TypeVar, cast
from urllib.parse import unquote, urlsplit

import pluggy
from attrs import frozen

from covidcxr import hookspecs
from covidcxr.errors import ConfigurationError, PluginError, PluginLoadWarning, UnknownNameError
from covidcxr.protocols import Classifier, DatasetSource, LesionDetector, Preprocessor

__all__ = [
    "ALLOW_LIST_ENV",
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "Registration",
    "available_classifiers",
    "available_detectors",
    "available_preprocessors",
    "available_sources",
    "broken_plugins",
    "check_options",
    "create_classifier",
    "create_detector",
    "create_preprocessor",
    "get_plugin_manager",
    "open_source",
    "parse_source_uri",
    "provenance",
    "register_plugin",
    "reset_plugin_manager",
    "unregister_plugin",
]

ENTRY_POINT_GROUP: Final = hookspecs.PROJECT_NAME
ALLOW_LIST_ENV: Final = "COVIDCXR_PLUGINS"

#: Modules of the built-in plugins, registered under their module names. Each keeps its
#: imports light and imports heavy dependencies (TensorFlow, the IBM SDKs) inside factories.
BUILTIN_PLUGINS: Final[tuple[str, ...]] = (
    "covidcxr.detect.plugin",
    "covidcxr.classify.plugin",
    "covidcxr.sources.plugin",
    "covidcxr.preprocess.plugin",
)

_NAME_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9_.+-]*$")
# A source is looked up by its URI scheme, so its name follows RFC 3986's scheme syntax
# (lower case here): a letter, then letters, digits, "+", "." or "-".
_SCHEME_PATTERN: Final = re.compile(r"^[a-z][a-z0-9+.-]*$")
#: In a pipeline configuration ``name = "none"`` means "no detector" (and is refused for
#: the classifier); the built-in ``none`` preprocessor is the identity, so it stays free.
_RESERVED_NAMES: Final[Mapping[str, frozenset[str]]] = {
    "detector": frozenset({"none"}),
    "classifier": frozenset({"none"}),
}
# A lazy factory: "package.module:Name" (or "...:Outer.Name"), as in an entry point.
_REFERENCE_PATTERN: Final = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_UNEXPECTED_KEYWORD: Final = re.compile(r"unexpected keyword argument '(?P<key>[^']+)'")
_URI_SCHEME: Final = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$", re.DOTALL)

_T = TypeVar("_T")

_manager: pluggy.PluginManager | None = None
_manager_lock = threading.Lock()
#: Entry-point name -> why it was left out, for the plugins that could not load.
_broken: dict[str, str] = {}
#: Plugin (entry-point) name -> the distribution that installed it.
_distributions: dict[str, str] = {}


@frozen
class Registration:
    """One registered factory and the plugin that provided it.

    Parameters
    ----------
    kind
        ``"detector"``, ``"source"``, ``"preprocessor"`` or ``"classifier"``.
    name
        The name (or URI scheme, for sources) it is looked up by.
    target
        What the plugin registered: the callable that builds it, or a reference to one,
        ``"package.module:Name"`` (as in an entry point), imported when first needed.
    plugin
        The name of the plugin that registered it: an entry-point name, or a module name
        for built-in plugins.

    Examples
    --------
    >>> from covidcxr.plugins import available_classifiers
    >>> vgg19 = available_classifiers()["vgg19"]
    >>> vgg19.target
    'covidcxr.classify._vgg19:VGG19Classifier'
    >>> vgg19.factory.__name__
    'VGG19Classifier'
    """

    kind: str
    name: str
    target: Callable[..., Any] | str
    plugin: str

    @property
    def factory(self) -> Callable[..., Any]:
        """The callable that builds it (a reference is imported on first access).

        Raises
        ------
        PluginError
            If a reference cannot be imported, or does not name a callable.
        """
        if not isinstance(self.target, str):
            return self.target
        module_name, _, qualname = self.target.partition(":")
        try:
            found: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                found = getattr(found, part)
        except Exception as exc:
            raise PluginError(
                f"plugin {self.plugin!r} registered {self.kind} {self.name!r} as "
                f"{self.target!r}, which cannot be imported: {exc!r}"
            ) from exc
        if not callable(found):
            raise PluginError(
                f"plugin {self.plugin!r} registered {self.kind} {self.name!r} as "
                f"{self.target!r}, which is not callable: {found!r}"
            )
        return cast(Callable[..., Any], found)

    def refers_to(self, factory: object) -> bool:
        """Whether this registration builds with ``factory``, without importing a reference.

        Examples
        --------
        >>> from covidcxr.plugins import available_classifiers
        >>> from covidcxr.classify import VGG19Classifier
        >>> available_classifiers()["vgg19"].refers_to(VGG19Classifier)
        True
        """
        if not isinstance(self.target, str):
            return self.target is factory
        module = getattr(factory, "__module__", None)
        qualname = getattr(factory, "__qualname__", None)
        return f"{module}:{qualname}" == self.target


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager, creating it on first use.

    Creating it adds the hook specifications, loads the allowed entry points of the
    ``covidcxr`` group, registers the built-in plugins, and checks that every hook
    implementation matches a specification.

    An installed plugin that fails to import, declares a hook with wrong arguments, or
    implements a hook that does not exist (a misspelling, usually) is left out, with one
    :class:`~covidcxr.errors.PluginLoadWarning` naming every such plugin, its
    distribution and the fix; the others load.
    """
    global _manager  # noqa: PLW0603 - one manager per process, created lazily
    with _manager_lock:
        if _manager is None:
            _broken.clear()
            _distributions.clear()
            _manager = _create_plugin_manager()
            if _broken:
                warnings.warn(_broken_message(), PluginLoadWarning, stacklevel=2)
        return _manager


def broken_plugins() -> Mapping[str, str]:
    """The installed plugins left out because they could not load: entry-point name -> why.

    Examples
    --------
    >>> broken_plugins()
    {}
    """
    get_plugin_manager()
    return dict(_broken)


def provenance(kind: str, name: str) -> dict[str, str] | None:
    """Which installed distribution provides the ``kind`` registered as ``name``, and its version.

    ``None`` for covidcxr's own components and for plugins registered at run time (no
    distribution installed them). A saved pipeline records it, so that a machine without
    the plugin is told what to install.

    Examples
    --------
    >>> provenance("classifier", "vgg19") is None
    True
    """
    registration = _collect(kind).get(name)
    if registration is None or registration.plugin in BUILTIN_PLUGINS:
        return None
    distribution = _distributions.get(registration.plugin)
    if distribution is None:
        return None
    try:
        version = metadata.version(distribution)
    except metadata.PackageNotFoundError:  # pragma: no cover - installed a moment ago
        return None
    return {"plugin": registration.plugin, "distribution": distribution, "version": version}


def _origin(plugin: str) -> str:
    """``'name'``, with the distribution that installed it where known."""
    distribution = _distributions.get(plugin)
    return f"{plugin!r} (distribution {distribution!r})" if distribution else repr(plugin)


def _way_out(plugins: Iterable[str]) -> str:
    """How to be rid of ``plugins``: uninstall them, or load only the others."""
    plugins = list(plugins)
    distributions = sorted({_distributions[p] for p in plugins if p in _distributions})
    if not distributions:  # registered at run time: the allow list does not apply
        return "rename what it registers, or unregister it (covidcxr.plugins.unregister_plugin)"
    others = sorted(
        name
        for name in _distributions
        if name not in plugins and name not in _broken and name not in BUILTIN_PLUGINS
    )
    uninstall = f"uninstall it (pip uninstall {' '.join(distributions)})" if distributions else ""
    allow = (
        f"set {ALLOW_LIST_ENV}={','.join(others)} to load only the other plugins"
        if others
        else f"set {ALLOW_LIST_ENV}= (empty) to load no installed plugin"
    )
    return f"{uninstall} or {allow}" if uninstall else allow


def _broken_message() -> str:
    listed = "; ".join(f"{_origin(name)}: {why}" for name, why in sorted(_broken.items()))
    return (
        f"{len(_broken)} installed covidcxr plugin(s) could not load and were left out: "
        f"{listed}. To silence this, {_way_out(_broken)}"
    )


def reset_plugin_manager() -> None:
    """Forget the plugin manager, so the next lookup loads every plugin afresh.

    Call it after installing or removing a plugin package in a running process (a notebook,
    a test), or after changing ``COVIDCXR_PLUGINS``.
    """
    global _manager  # noqa: PLW0603 - see get_plugin_manager
    with _manager_lock:
        _manager = None


def _create_plugin_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    for module_name in BUILTIN_PLUGINS:
        _register_checked(manager, importlib.import_module(module_name), module_name)
    _load_entry_points(manager)
    return manager


def _allowed_entry_points() -> frozenset[str] | None:
    raw = os.environ.get(ALLOW_LIST_ENV)
    if raw is None:
        return None
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


def _load_entry_points(manager: pluggy.PluginManager) -> None:
    """Register every allowed entry point; those that cannot load go to ``_broken``."""
    allowed = _allowed_entry_points()
    entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    if allowed:
        unknown = sorted(allowed - set(entry_points.names))
        if unknown:
            # A misspelt name would otherwise load nothing, silently.
            hints = "".join(did_you_mean(name, entry_points.names) for name in unknown)
            warnings.warn(
                f"{ALLOW_LIST_ENV} names {', '.join(map(repr, unknown))}, which no installed "
                f"plugin provides.{hints} Installed: "
                f"{', '.join(map(repr, sorted(entry_points.names))) or 'none'}",
                PluginLoadWarning,
                stacklevel=4,
            )
    for entry_point in entry_points:
        if allowed is not None and entry_point.name not in allowed:
            continue
        distribution = entry_point.dist.name if entry_point.dist is not None else None
        if manager.has_plugin(entry_point.name) or entry_point.name in _broken:
            # Two distributions chose the same entry-point name: the second is left out.
            key = f"{entry_point.name} ({distribution or 'unknown distribution'})"
            if distribution is not None:
                _distributions[key] = distribution  # so the message can say what to remove
            _broken[key] = (
                f"its entry-point name {entry_point.name!r} is taken by another installed "
                "plugin; one of the two must rename its entry point"
            )
            continue
        if distribution is not None:
            _distributions[entry_point.name] = distribution
        try:
            plugin = entry_point.load()
        except Exception as exc:  # noqa: BLE001 - any import failure leaves this plugin out
            _broken[entry_point.name] = f"importing {entry_point.value} failed: {exc!r}"
            continue
        try:
            _register_checked(manager, plugin, entry_point.name)
        except PluginError as exc:
            _broken[entry_point.name] = str(exc)


def _hook_name_hints(plugin: object) -> str:
    """``" 'covidcxr_register_detector': did you mean ...?"`` for unknown hook names."""
    known = [name for name in dir(hookspecs) if name.startswith("covidcxr_")]
    hints = []
    for name in dir(plugin):
        if name.startswith("covidcxr_") and name not in known:
            hints.append(f"{name!r} is no covidcxr hook.{did_you_mean(name, known)}")
    return " ".join(hints)


def _register_checked(manager: pluggy.PluginManager, plugin: object, name: str) -> None:
    if manager.has_plugin(name):
        raise PluginError(
            f"a plugin named {name!r} is already registered; register this one under "
            "another name, or unregister the first (covidcxr.plugins.unregister_plugin)"
        )
    if manager.is_registered(plugin):
        raise PluginError(
            f"this plugin object is already registered (as {manager.get_name(plugin)!r})"
        )
    try:
        manager.register(plugin, name=name)
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        manager.unregister(name=name)
        hints = _hook_name_hints(plugin)
        raise PluginError(
            f"plugin {_origin(name)} is invalid: {exc}" + (f" ({hints})" if hints else "")
        ) from exc


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register a plugin object (a module or any object with hook implementations).

    Parameters
    ----------
    plugin
        The object whose :data:`covidcxr.hookimpl`-marked functions to register.
    name
        The plugin's name in listings and error messages; pluggy chooses one if omitted.

    Returns
    -------
    str
        The name it was registered under; pass it to :func:`unregister_plugin`.

    Raises
    ------
    PluginError
        If the plugin's hooks do not match the specifications or the name is taken.

    Examples
    --------
    >>> import covidcxr
    >>> class Hello:
    ...     @covidcxr.hookimpl
    ...     def covidcxr_register_detectors(self, register):
    ...         register("hello", lambda: None)
    >>> name = covidcxr.plugins.register_plugin(Hello(), name="hello-plugin")
    >>> covidcxr.plugins.available_detectors()["hello"].plugin
    'hello-plugin'
    >>> covidcxr.plugins.unregister_plugin(name)
    """
    manager = get_plugin_manager()
    registered_name = name if name is not None else manager.get_canonical_name(plugin)
    _register_checked(manager, plugin, registered_name)
    return registered_name


def unregister_plugin(name: str) -> None:
    """Unregister the plugin registered under ``name``.

    Raises
    ------
    UnknownNameError
        If no plugin has that name.
    """
    manager = get_plugin_manager()
    if not manager.has_plugin(name):
        raise UnknownNameError(f"no plugin named {name!r} is registered")
    manager.unregister(name=name)


def _collect(kind: str) -> dict[str, Registration]:
    manager = get_plugin_manager()
    hook = getattr(manager.hook, f"covidcxr_register_{kind}s")
    found: dict[str, Registration] = {}
    # In registration order (built-ins first), so that a clash is blamed on the newcomer.
    # pluggy's own order is not that: it moves an implementation marked trylast (or
    # tryfirst) to one end, which would let a plugin claim a built-in's name first.
    registered = {name: rank for rank, (name, _) in enumerate(manager.list_name_plugin())}
    impls = sorted(hook.get_hookimpls(), key=lambda impl: registered.get(impl.plugin_name, 0))
    for impl in impls:
        plugin_name = impl.plugin_name
        # What this plugin registers joins the registry only if all of it is valid.
        mine: dict[str, Registration] = {}

        # Typed loosely on purpose: plugins are not type-checked, so check at run time.
        def register(
            name: object,
            factory: object,
            _plugin: str = plugin_name,
            mine: dict[str, Registration] = mine,
        ) -> None:
            if kind == "source":
                if not isinstance(name, str) or not _SCHEME_PATTERN.match(name):
                    raise PluginError(
                        f"plugin {_origin(_plugin)} registered the source scheme {name!r}; a "
                        "scheme is what a URI starts with (scheme://...): a lower-case "
                        "letter, then lower-case letters, digits and '+.-'"
                    )
            elif not isinstance(name, str) or not _NAME_PATTERN.match(name):
                raise PluginError(
                    f"plugin {_origin(_plugin)} registered the {kind} name {name!r}; names "
                    "are lower case letters, digits and '_.+-', starting with a letter or digit"
                )
            if name in _RESERVED_NAMES.get(kind, ()):
                raise PluginError(
                    f"plugin {_origin(_plugin)} registered the {kind} name {name!r}, which is "
                    f"reserved: in a pipeline configuration name = {name!r} means no {kind}"
                )
            if isinstance(factory, str):
                if not _REFERENCE_PATTERN.match(factory):
                    raise PluginError(
                        f"plugin {_plugin!r} registered {kind} {name!r} as {factory!r}; a "
                        "reference is 'package.module:Name', as in an entry point"
                    )
            elif not callable(factory):
                raise PluginError(
                    f"plugin {_plugin!r} registered {kind} {name!r} with a factory that is "
                    f"not callable: {factory!r}"
                )
            earlier = found.get(name) or mine.get(name)
            if earlier is not None:
                raise PluginError(
                    f"plugin {_origin(_plugin)} registered {kind} {name!r}, which plugin "
                    f"{_origin(earlier.plugin)} already registered; {_way_out([_plugin])}"
                )
            mine[name] = Registration(kind=kind, name=name, target=factory, plugin=_plugin)

        try:
            try:
                impl.function(**dict.fromkeys(impl.argnames, register))
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {_origin(plugin_name)} raised in covidcxr_register_{kind}s: {exc!r}"
                ) from exc
        except PluginError as exc:
            if plugin_name not in _distributions:
                raise  # built in, or registered at run time: its caller is right there
            # An installed plugin's bad registration leaves out its own entries, not the
            # built-ins' and the other plugins' (as a plugin that cannot import is).
            warnings.warn(f"{exc}; its {kind}s were left out", PluginLoadWarning, stacklevel=3)
            continue
        found.update(mine)
    return dict(sorted(found.items()))


def available_detectors() -> Mapping[str, Registration]:
    """The registered lesion detectors, by name.

    Examples
    --------
    >>> "watson" in available_detectors()  # doctest: +SKIP
    True
    """
    return _collect("detector")


def available_sources() -> Mapping[str, Registration]:
    """The registered dataset sources, by URI scheme."""
    return _collect("source")


def available_preprocessors() -> Mapping[str, Registration]:
    """The registered preprocessors, by name."""
    return _collect("preprocessor")


def available_classifiers() -> Mapping[str, Registration]:
    """The registered classifiers, by name."""
    return _collect("classifier")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" Did you mean 'x'?"`` for the closest of ``choices``, or ``""`` if none is close.

    Examples
    --------
    >>> did_you_mean("epoch", ["epochs", "seed"])
    " Did you mean 'epochs'?"
    >>> did_you_mean("zzz", ["epochs"])
    ''
    """
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _lookup(kind: str, name: str, registry: Mapping[str, Registration]) -> Registration:
    try:
        return registry[name]
    except KeyError:
        known = ", ".join(repr(key) for key in registry) or "none"
        broken = (
            f" {len(_broken)} installed plugin(s) could not load and may provide it: "
            + "; ".join(f"{_origin(plugin)}: {why}" for plugin, why in sorted(_broken.items()))
            if _broken
            else ""
        )
        raise UnknownNameError(
            f"no {kind} named {name!r} is registered.{did_you_mean(name, registry)} "
            f"Available: {known}; is the plugin that provides it installed and allowed by "
            f"{ALLOW_LIST_ENV}?{broken}"
        ) from None


def _declared_options(factory: Callable[..., Any]) -> tuple[str, ...] | None:
    """The keyword options ``factory`` declares, or ``None`` if it takes ``**options``."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    keywords = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in parameters if p.kind in keywords)


def _default_options(registration: Registration) -> tuple[str, ...] | None:
    """The options a ``**options`` factory forwards, from a default build's ``get_params()``.

    ``None`` when that cannot be had (the factory needs options to build anything).
    """
    if registration.kind == "source":
        return None  # a source needs its location; nothing to build by default
    try:
        built = registration.factory()
        params = built.get_params()
    except Exception:  # noqa: BLE001 - only a hint for an error message is at stake
        return None
    return tuple(params) if isinstance(params, Mapping) else None


def check_options(
    kind: str, name: str, options: Mapping[str, Any], *, where: str | None = None
) -> None:
    """Refuse options the factory registered as ``name`` does not declare.

    Only factories with an explicit signature (a class such as
    :class:`~covidcxr.VGG19Classifier`) are checked; one that takes ``**options`` is left
    to refuse unknown options itself when it is called.

    Parameters
    ----------
    kind
        ``"detector"``, ``"source"``, ``"preprocessor"`` or ``"classifier"``.
    name
        The registered name.
    options
        The options that would be passed.
    where
        What to name in the message instead of the component (a configuration table).

    Raises
    ------
    UnknownNameError
        If nothing is registered as ``name`` (the message suggests the closest name).
    ConfigurationError
        For an option the factory does not take; the message names it, suggests the
        closest valid option and lists them all.

    Examples
    --------
    >>> check_options("classifier", "vgg19", {"epoch": 3})
    Traceback (most recent call last):
    ...
    covidcxr.errors.ConfigurationError: classifier 'vgg19' has no option 'epoch'. Did you ...
    """
    registry = _collect(kind)
    registration = _lookup(kind, name, registry)
    declared = _declared_options(registration.factory)
    if declared is None:
        return
    _refuse_unknown(registration, options, declared, where)


def _refuse_unknown(
    registration: Registration,
    options: Mapping[str, Any],
    declared: Sequence[str],
    where: str | None,
) -> None:
    unknown = [key for key in options if key not in declared]
    if not unknown:
        return
    key = unknown[0]
    what = where or f"{registration.kind} {registration.name!r}"
    raise ConfigurationError(
        f"{what} has no option {key!r}.{did_you_mean(key, declared)} "
        f"Its options: {', '.join(declared)}"
    )


# What a freshly built component must have, by role. Methods only: fitted attributes such
# as a classifier's ``classes_`` exist only after ``fit`` (scikit-learn's convention), so
# ``isinstance`` against the runtime-checkable protocol (which also checks data members)
# would wrongly refuse every unfitted estimator.
_REQUIRED_METHODS: Final[Mapping[str, tuple[str, ...]]] = {
    "detector": ("detect",),
    "source": ("__iter__", "__len__"),
    "preprocessor": ("__call__",),
    "classifier": ("fit", "predict_proba", "predict", "save", "load"),
}


def _build(registration: Registration, expected: type[_T], *args: Any, **options: Any) -> _T:
    declared = _declared_options(registration.factory)
    if declared is not None:
        _refuse_unknown(registration, options, declared, None)
    try:
        built = registration.factory(*args, **options)
    except TypeError as exc:
        # A ``**options`` factory passed on an option its class does not take: say which
        # component it was for, and what it could have been.
        unexpected = _UNEXPECTED_KEYWORD.search(str(exc))
        if unexpected is None or unexpected["key"] not in options:
            raise
        known = _default_options(registration)
        if known is None:
            raise ConfigurationError(
                f"{registration.kind} {registration.name!r} has no option "
                f"{unexpected['key']!r} ({exc})"
            ) from exc
        _refuse_unknown(registration, {unexpected["key"]: None}, known, None)
        raise  # pragma: no cover - the option is not among ``known``, so refused above
    missing = [
        name
        for name in _REQUIRED_METHODS[registration.kind]
        if not callable(getattr(built, name, None))
    ]
    if registration.kind == "source" and not hasattr(built, "classes"):
        missing.append("classes")
    if missing:
        raise PluginError(
            f"{registration.kind} {registration.name!r} from plugin {registration.plugin!r} "
            f"built {type(built).__name__}, which is not a {expected.__name__} "
            f"(it lacks {', '.join(missing)})"
        )
    return cast(_T, built)


def create_detector(name: str, **options: Any) -> LesionDetector:
    """Build the lesion detector registered under ``name``.

    Parameters
    ----------
    name
        A name from :func:`~covidcxr.plugins.available_detectors`.
    **options
        Passed to the detector's factory.

    Raises
    ------
    UnknownNameError
        If no plugin registered ``name``; the message lists those that did.
    PluginError
        If the factory returns something that is not a :class:`~covidcxr.LesionDetector`.
    """
    registration = _lookup("detector", name, available_detectors())
    return _build(registration, LesionDetector, **options)  # type: ignore[type-abstract]


def create_preprocessor(name: str, **options: Any) -> Preprocessor:
    """Build the preprocessor registered under ``name`` (see :func:`create_detector`)."""
    registration = _lookup("preprocessor", name, available_preprocessors())
    return _build(registration, Preprocessor, **options)  # type: ignore[type-abstract]


def create_classifier(name: str, **options: Any) -> Classifier:
    """Build the classifier registered under ``name`` (see :func:`create_detector`)."""
    registration = _lookup("classifier", name, available_classifiers())
    return _build(registration, Classifier, **options)  # type: ignore[type-abstract]


def parse_source_uri(uri: str | os.PathLike[str]) -> tuple[str, str]:
    """Split a source URI into its scheme and location.

    A plain path (or ``file://`` URI) is a folder, scheme ``"file"``; a plain path ending in
    ``.zip`` is an archive, scheme ``"zip"``; ``scheme://rest`` gives ``(scheme, rest)``.

    Examples
    --------
    >>> parse_source_uri("data/cxr")
    ('file', 'data/cxr')
    >>> parse_source_uri("data/cxr.ZIP")
    ('zip', 'data/cxr.ZIP')
    >>> parse_source_uri("file:///srv/cxr%20set")
    ('file', '/srv/cxr set')
    >>> parse_source_uri("cos://bucket/covid/train")
    ('cos', 'bucket/covid/train')
    """
    text = os.fspath(uri)
    match = _URI_SCHEME.match(text)
    if match is None:
        return ("zip" if Path(text).suffix.lower() == ".zip" else "file", text)
    scheme = match["scheme"].lower()
    if scheme == "file":
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise UnknownNameError(
                f"file URI {text!r} names host {parts.netloc!r}; only local files are supported"
            )
        return "file", unquote(parts.path)
    return scheme, match["rest"]


def open_source(
    uri: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], **options: Any
) -> DatasetSource:
    """Open a dataset source: a folder, files, a glob pattern, an archive or a URI.

    Parameters
    ----------
    uri
        A folder path or ``file://`` URI (its layout is chosen from the file names unless
        ``layout=`` says; without class folders its images are read unlabelled); a single
        image file; a glob pattern such as ``"scans/**/*.png"``; a sequence of files,
        folders and patterns (read unlabelled, in the order given); a ``.zip`` path or
        ``zip://`` URI; ``cos://bucket/prefix`` for IBM Cloud Object Storage; or any
        scheme a plugin registered (see :func:`~covidcxr.plugins.available_sources`). A
        sequence of one item is that item.
    **options
        Passed to the source's factory (for example ``on_error="skip"``,
        ``layout="covid-qu-ex"``, ``split="Val"``).

    Raises
    ------
    UnknownNameError
        If no plugin handles the URI's scheme; the message lists the schemes that exist.
    SourceError
        If a path does not exist or a pattern matches nothing (from the source).

    Examples
    --------
    >>> import cv2, numpy as np, pathlib, tempfile
    >>> scans = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("a.png", "b.png"):
    ...     _ = cv2.imwrite(str(scans / name), np.full((64, 64), 9, np.uint8))
    >>> source = open_source(scans)
    >>> source.layout, len(source), [xray.label for xray in source]
    ('unlabelled', 2, [None, None])
    >>> len(open_source(scans / "a.png")), len(open_source([scans / "a.png", scans / "b.png"]))
    (1, 2)
    """
    if not isinstance(uri, str | os.PathLike):
        paths = [os.fspath(path) for path in uri]
        if len(paths) == 1:
            return open_source(paths[0], **options)
        registration = _lookup("source", "file", available_sources())
        return _build(registration, DatasetSource, paths, **options)  # type: ignore[type-abstract]
    scheme, location = parse_source_uri(uri)
    registration = _lookup("source", scheme, available_sources())
    return _build(registration, DatasetSource, location, **options)  # type: ignore[type-abstract]
