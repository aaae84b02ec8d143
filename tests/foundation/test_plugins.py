"""The plugin machinery: registration, lookups, and clear errors that name the plugin."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import covidcxr
from covidcxr.errors import (
    ConfigurationError,
    PluginError,
    PluginLoadWarning,
    UnknownNameError,
)
from covidcxr.hookspecs import Register
from covidcxr.plugins import ALLOW_LIST_ENV, get_plugin_manager, parse_source_uri


class EchoDetector:
    """A detector that reports a fixed detection, configured by its options."""

    def __init__(self, score: float = 0.5) -> None:
        self.score = score

    def detect(self, xray: covidcxr.XRay) -> list[covidcxr.Detection]:
        return [covidcxr.Detection(covidcxr.Box(0, 0, 1, 1), "echo", self.score)]


class ListSource:
    """A source over XRays made in memory; remembers the location it was opened with."""

    def __init__(self, location: str, count: int = 2) -> None:
        self.location = location
        self._xrays = [
            covidcxr.XRay(np.zeros((4, 4), np.uint8), id=f"{location}/{i}", label="normal")
            for i in range(count)
        ]

    @property
    def classes(self) -> tuple[str, ...]:
        return ("normal",)

    def __iter__(self) -> Iterator[covidcxr.XRay]:
        return iter(self._xrays)

    def __len__(self) -> int:
        return len(self._xrays)


class TestPlugin:
    @covidcxr.hookimpl
    def covidcxr_register_detectors(self, register: Register) -> None:
        register("echo", EchoDetector)

    @covidcxr.hookimpl
    def covidcxr_register_sources(self, register: Register) -> None:
        register("mem", ListSource)


def test_registered_detector_is_listed_with_its_plugin(
    covidcxr_plugin: Callable[..., str],
) -> None:
    covidcxr_plugin(TestPlugin(), name="test-plugin")
    registration = covidcxr.plugins.available_detectors()["echo"]
    assert registration.plugin == "test-plugin"
    assert registration.factory is EchoDetector


def test_create_detector_passes_options_to_the_factory(
    covidcxr_plugin: Callable[..., str],
) -> None:
    covidcxr_plugin(TestPlugin())
    detector = covidcxr.create_detector("echo", score=0.75)
    assert isinstance(detector, covidcxr.LesionDetector)
    assert detector.detect(covidcxr.XRay(np.zeros((2, 2), np.uint8), id="x"))[0].score == 0.75


def test_open_source_dispatches_on_the_uri_scheme(covidcxr_plugin: Callable[..., str]) -> None:
    covidcxr_plugin(TestPlugin())
    source = covidcxr.open_source("mem://ward-3/scans", count=3)
    assert isinstance(source, ListSource)
    assert source.location == "ward-3/scans"
    assert len(source) == 3


def test_fixture_unregisters_plugins_after_the_test(covidcxr_plugin: Callable[..., str]) -> None:
    assert "echo" not in covidcxr.plugins.available_detectors()


def test_registered_plugin_context_manager_unregisters_on_error() -> None:
    from covidcxr.testing import registered_plugin

    def use_then_fail() -> None:
        with registered_plugin(TestPlugin()):
            assert "echo" in covidcxr.plugins.available_detectors()
            raise RuntimeError

    with pytest.raises(RuntimeError):
        use_then_fail()
    assert "echo" not in covidcxr.plugins.available_detectors()


def test_unknown_detector_error_lists_the_available_ones(
    covidcxr_plugin: Callable[..., str],
) -> None:
    covidcxr_plugin(TestPlugin())
    with pytest.raises(UnknownNameError, match=r"'no-such'.*'echo'.*COVIDCXR_PLUGINS"):
        covidcxr.create_detector("no-such")


def test_unknown_source_scheme_is_a_clear_error() -> None:
    with pytest.raises(UnknownNameError, match=r"no source named 'gopher'"):
        covidcxr.open_source("gopher://host/path")


def test_duplicate_names_name_both_plugins(covidcxr_plugin: Callable[..., str]) -> None:
    covidcxr_plugin(TestPlugin(), name="first")
    covidcxr_plugin(TestPlugin(), name="second")
    with pytest.raises(PluginError, match=r"'second' registered detector 'echo'.*'first'"):
        covidcxr.plugins.available_detectors()


class LateClaimPlugin:
    """Claims a built-in's name from a hook pluggy calls first (``trylast``)."""

    @covidcxr.hookimpl(trylast=True)
    def covidcxr_register_detectors(self, register: Register) -> None:
        register("watson", EchoDetector)


def test_a_clash_is_blamed_on_the_plugin_whatever_its_hook_order(
    covidcxr_plugin: Callable[..., str],
) -> None:
    covidcxr_plugin(LateClaimPlugin(), name="late")
    with pytest.raises(
        PluginError, match=r"'late' registered detector 'watson', which plugin 'covidcxr\.detect"
    ):
        covidcxr.plugins.available_detectors()


def test_a_plugin_name_taken_is_refused_plainly(covidcxr_plugin: Callable[..., str]) -> None:
    covidcxr_plugin(TestPlugin(), name="first")
    with pytest.raises(PluginError, match=r"^a plugin named 'first' is already registered;"):
        covidcxr.plugins.register_plugin(TestPlugin(), name="first")


class UnderscoreSchemePlugin:
    @covidcxr.hookimpl
    def covidcxr_register_sources(self, register: Register) -> None:
        register("my_store", EchoDetector)


class NonePlugin:
    @covidcxr.hookimpl
    def covidcxr_register_detectors(self, register: Register) -> None:
        register("none", EchoDetector)


def test_a_source_scheme_must_be_one_a_uri_can_carry(covidcxr_plugin: Callable[..., str]) -> None:
    # "my_store://x" is no URI scheme, so open_source could never reach it.
    covidcxr_plugin(UnderscoreSchemePlugin(), name="underscore")
    with pytest.raises(PluginError, match=r"source scheme 'my_store'; a scheme is"):
        covidcxr.plugins.available_sources()


def test_none_is_reserved(covidcxr_plugin: Callable[..., str]) -> None:
    covidcxr_plugin(NonePlugin(), name="none-plugin")
    with pytest.raises(PluginError, match=r"'none', which is reserved"):
        covidcxr.plugins.available_detectors()


class BadNamePlugin:
    @covidcxr.hookimpl
    def covidcxr_register_detectors(self, register: Register) -> None:
        register("Has Spaces", EchoDetector)


def test_invalid_names_are_refused(covidcxr_plugin: Callable[..., str]) -> None:
    covidcxr_plugin(BadNamePlugin(), name="bad-name")
    with pytest.raises(PluginError, match=r"'bad-name' registered the detector name 'Has Spaces'"):
        covidcxr.plugins.available_detectors()


class NotCallablePlugin:
    @covidcxr.hookimpl
    def covidcxr_register_detectors(self, register: Register) -> None:
        register("oops", 42)  # type: ignore[arg-type]


class MalformedReferencePlugin:
    @covidcxr.hookimpl
    def covidcxr_register_detectors(self, register: Register) -> None:
        register("oops", "EchoDetector")


def test_malformed_references_are_refused(covidcxr_plugin: Callable[..., str]) -> None:
    covidcxr_plugin(MalformedReferencePlugin(), name="malformed")
    with pytest.raises(PluginError, match=r"'EchoDetector'; a reference is 'package.module:Name'"):
        covidcxr.plugins.available_detectors()


LAZY_MODULE = """
from covidcxr import Detection

class LazyDetector:
    def __init__(self, label="lazy"):
        self.label = label

    def detect(self, xray):
        return []
"""


class LazyPlugin:
    @covidcxr.hookimpl
    def covidcxr_register_detectors(self, register: Register) -> None:
        register("lazy", "covidcxr_lazy_test_module:LazyDetector")
        register("missing", "covidcxr_lazy_test_module:NoSuchDetector")


def test_references_are_imported_only_when_needed(
    covidcxr_plugin: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "covidcxr_lazy_test_module.py").write_text(LAZY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "covidcxr_lazy_test_module", raising=False)
    covidcxr_plugin(LazyPlugin(), name="lazy-plugin")

    registry = covidcxr.plugins.available_detectors()
    assert registry["lazy"].target == "covidcxr_lazy_test_module:LazyDetector"
    assert "covidcxr_lazy_test_module" not in sys.modules  # listed, not imported

    detector = covidcxr.create_detector("lazy", label="x")
    assert type(detector).__name__ == "LazyDetector"
    assert detector.label == "x"  # type: ignore[attr-defined]
    assert registry["lazy"].refers_to(type(detector))
    assert not registry["missing"].refers_to(type(detector))
    with pytest.raises(ConfigurationError, match="no option 'lable'"):
        covidcxr.create_detector("lazy", lable="x")  # options checked against the class
    with pytest.raises(
        PluginError, match="'covidcxr_lazy_test_module:NoSuchDetector', which cannot be imported"
    ):
        covidcxr.create_detector("missing")


def test_non_callable_factories_are_refused(covidcxr_plugin: Callable[..., str]) -> None:
    covidcxr_plugin(NotCallablePlugin(), name="not-callable")
    with pytest.raises(PluginError, match="not callable"):
        covidcxr.plugins.available_detectors()


class RaisingPlugin:
    @covidcxr.hookimpl
    def covidcxr_register_sources(self, register: Register) -> None:
        raise KeyError("config missing")


def test_a_plugin_raising_in_its_hook_is_named(covidcxr_plugin: Callable[..., str]) -> None:
    covidcxr_plugin(RaisingPlugin(), name="raiser")
    with pytest.raises(PluginError, match=r"'raiser' raised in covidcxr_register_sources"):
        covidcxr.plugins.available_sources()


class WrongProductPlugin:
    @covidcxr.hookimpl
    def covidcxr_register_detectors(self, register: Register) -> None:
        register("not-a-detector", object)


def test_factories_must_build_the_right_role(covidcxr_plugin: Callable[..., str]) -> None:
    covidcxr_plugin(WrongProductPlugin(), name="wrong")
    with pytest.raises(PluginError, match=r"'not-a-detector' from plugin 'wrong'.*LesionDetector"):
        covidcxr.create_detector("not-a-detector")


class MisspelledHookPlugin:
    @covidcxr.hookimpl
    def covidcxr_register_detector(self, register: Register) -> None:  # missing "s"
        register("never", EchoDetector)


def test_a_misspelled_hook_is_refused_by_name() -> None:
    with pytest.raises(PluginError, match=r"'typo'.*covidcxr_register_detector"):
        covidcxr.plugins.register_plugin(MisspelledHookPlugin(), name="typo")
    assert not get_plugin_manager().has_plugin("typo")


class WrongArgumentPlugin:
    @covidcxr.hookimpl
    def covidcxr_register_detectors(self, callback: Register) -> None:
        callback("never", EchoDetector)


def test_a_hook_with_wrong_arguments_is_refused() -> None:
    with pytest.raises(PluginError, match=r"(?s)'wrong-args'.*callback"):
        covidcxr.plugins.register_plugin(WrongArgumentPlugin(), name="wrong-args")


def test_unregistering_an_unknown_plugin_is_an_error() -> None:
    with pytest.raises(UnknownNameError, match="no plugin named 'ghost'"):
        covidcxr.plugins.unregister_plugin("ghost")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("data/cxr", ("file", "data/cxr")),
        (Path("data/cxr"), ("file", "data/cxr")),
        ("data/cxr.zip", ("zip", "data/cxr.zip")),
        ("zip://data/cxr.zip", ("zip", "data/cxr.zip")),
        ("file:///srv/cxr%20set", ("file", "/srv/cxr set")),
        ("file://localhost/srv/cxr", ("file", "/srv/cxr")),
        ("COS://bucket/prefix/x", ("cos", "bucket/prefix/x")),
        ("C:\\data\\cxr", ("file", "C:\\data\\cxr")),
    ],
)
def test_source_uris_split_into_scheme_and_location(uri: Any, expected: tuple[str, str]) -> None:
    assert parse_source_uri(uri) == expected


def test_file_uris_on_other_hosts_are_refused() -> None:
    with pytest.raises(UnknownNameError, match="only local files"):
        parse_source_uri("file://server/share")


# --- entry points -----------------------------------------------------------------------

GOOD_PLUGIN = """
import covidcxr

class Detector:
    def detect(self, xray):
        return []

@covidcxr.hookimpl
def covidcxr_register_detectors(register):
    register("from-entry-point", Detector)
"""


def test_entry_point_plugins_are_discovered(fake_distribution: Callable[..., None]) -> None:
    fake_distribution("good", "covidcxr_good_plugin", GOOD_PLUGIN)
    assert covidcxr.plugins.available_detectors()["from-entry-point"].plugin == "good"


def test_allow_list_limits_which_entry_points_load(
    fake_distribution: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_distribution("good", "covidcxr_good_plugin", GOOD_PLUGIN)
    monkeypatch.setenv(ALLOW_LIST_ENV, "something-else")
    assert "from-entry-point" not in covidcxr.plugins.available_detectors()


def test_empty_allow_list_loads_no_entry_points(
    fake_distribution: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_distribution("good", "covidcxr_good_plugin", GOOD_PLUGIN)
    monkeypatch.setenv(ALLOW_LIST_ENV, "")
    assert "from-entry-point" not in covidcxr.plugins.available_detectors()


def test_a_plugin_failing_on_import_is_left_out_named_and_the_others_load(
    fake_distribution: Callable[..., None],
) -> None:
    fake_distribution("good", "covidcxr_good_plugin", GOOD_PLUGIN)
    fake_distribution("broken", "covidcxr_broken_plugin", "import no_such_module_anywhere\n")
    with pytest.warns(
        PluginLoadWarning,
        match=r"'broken' \(distribution 'covidcxr_broken_plugin'\): importing "
        r"covidcxr_broken_plugin failed.*no_such_module_anywhere.*"
        r"pip uninstall covidcxr_broken_plugin.*COVIDCXR_PLUGINS=(\S+,)?good ",
    ):
        detectors = covidcxr.plugins.available_detectors()
    # One broken plugin does not take the built-ins or the other plugins down.
    assert {"local", "from-entry-point"} <= set(detectors)
    assert set(covidcxr.plugins.broken_plugins()) == {"broken"}
    # Asking for what it might have provided says that it could not load.
    with pytest.raises(UnknownNameError, match=r"could not load and may provide it: 'broken'"):
        covidcxr.create_detector("from-the-broken-one")


def test_an_entry_point_with_a_misspelled_hook_is_named_with_the_right_spelling(
    fake_distribution: Callable[..., None],
) -> None:
    source = GOOD_PLUGIN.replace("covidcxr_register_detectors", "covidcxr_register_detectorz")
    fake_distribution("typo", "covidcxr_typo_plugin", source)
    with pytest.warns(
        PluginLoadWarning,
        match=r"'typo'.*covidcxr_register_detectorz.*Did you mean 'covidcxr_register_detectors'",
    ):
        covidcxr.plugins.available_detectors()


def test_two_distributions_with_one_entry_point_name_leave_the_second_out_naming_it(
    fake_distribution: Callable[..., None],
) -> None:
    fake_distribution("shared", "covidcxr_first_shared", GOOD_PLUGIN)
    fake_distribution("shared", "covidcxr_second_shared", GOOD_PLUGIN)
    with pytest.warns(PluginLoadWarning, match=r"is taken by another.*pip uninstall covidcxr_"):
        assert "from-entry-point" in covidcxr.plugins.available_detectors()


def test_an_installed_plugins_bad_registration_leaves_out_only_its_own_entries(
    fake_distribution: Callable[..., None],
) -> None:
    bad = (
        GOOD_PLUGIN
        + """
@covidcxr.hookimpl
def covidcxr_register_sources(register):
    register("my_store", Detector)
"""
    )
    fake_distribution("underscored", "covidcxr_underscored_plugin", bad)
    with pytest.warns(PluginLoadWarning, match=r"source scheme 'my_store'.*sources were left out"):
        sources = covidcxr.plugins.available_sources()
    assert "file" in sources
    assert "my_store" not in sources
    # Its detectors were valid: they stay.
    assert "from-entry-point" in covidcxr.plugins.available_detectors()


def test_an_allow_list_naming_no_installed_plugin_warns(
    fake_distribution: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_distribution("good", "covidcxr_good_plugin", GOOD_PLUGIN)
    monkeypatch.setenv(ALLOW_LIST_ENV, "goood")
    with pytest.warns(PluginLoadWarning, match=r"names 'goood'.*Did you mean 'good'"):
        covidcxr.plugins.available_detectors()


class UnfittedClassifier:
    """A scikit-learn style classifier: ``classes_`` appears only after ``fit``."""

    def fit(self, xrays: Any, validation: Any = None) -> UnfittedClassifier:
        self.classes_ = ("normal",)
        return self

    def predict_proba(self, xrays: Any) -> Any:
        return np.ones((len(list(xrays)), 1), np.float32)

    def predict(self, xrays: Any) -> list[str]:
        return ["normal" for _ in xrays]

    def save(self, path: Any) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, path: Any) -> UnfittedClassifier:
        return cls()


class HalfClassifier:
    """Has ``fit`` and nothing else a classifier needs."""

    def fit(self, xrays: Any) -> HalfClassifier:
        return self


class ClassifierPlugin:
    @covidcxr.hookimpl
    def covidcxr_register_classifiers(self, register: Register) -> None:
        register("unfitted", UnfittedClassifier)
        register("half", HalfClassifier)


def test_unfitted_classifiers_are_accepted_by_their_methods(
    covidcxr_plugin: Callable[..., str],
) -> None:
    covidcxr_plugin(ClassifierPlugin(), name="classifiers")
    classifier = covidcxr.create_classifier("unfitted")
    assert not hasattr(classifier, "classes_")


def test_a_classifier_missing_methods_is_refused_naming_them(
    covidcxr_plugin: Callable[..., str],
) -> None:
    covidcxr_plugin(ClassifierPlugin(), name="classifiers")
    with pytest.raises(PluginError, match=r"lacks predict_proba, predict, save, load"):
        covidcxr.create_classifier("half")
