"""Tests of the example plugin, using the fixture covidcxr provides for plugin authors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import covidcxr_brightspot
import numpy as np

import covidcxr
import covidcxr.hookspecs

pytest_plugins = ["covidcxr.testing"]


def test_the_installed_plugin_is_found_through_its_entry_point() -> None:
    assert covidcxr.plugins.available_detectors()["bright-spot"].plugin == "brightspot"


def test_bright_regions_are_boxed_brightest_first() -> None:
    pixels = np.full((64, 64), 20, np.uint8)
    pixels[4:8, 10:20] = 200
    pixels[40:50, 30:34] = 250
    detector = covidcxr.create_detector("bright-spot", percentile=95)
    found = detector.detect(covidcxr.XRay(pixels, id="two-spots"))
    assert [d.box for d in found] == [covidcxr.Box(30, 40, 4, 10), covidcxr.Box(10, 4, 10, 4)]


def test_a_flat_image_has_no_detections() -> None:
    detector = covidcxr.create_detector("bright-spot")
    assert detector.detect(covidcxr.XRay(np.zeros((16, 16), np.uint8), id="flat")) == []


def test_the_source_reads_class_folders(tmp_path: Path) -> None:
    (tmp_path / "Viral Pneumonia").mkdir()
    np.save(tmp_path / "Viral Pneumonia" / "a.npy", np.ones((8, 8), np.uint8))
    source = covidcxr.open_source(f"npy-folder://{tmp_path}")
    assert [xray.label for xray in source] == ["pneumonia"]


class StrictVariant:
    """A run-time plugin, registered by the fixture for one test only."""

    @covidcxr.hookimpl
    def covidcxr_register_detectors(self, register: covidcxr.hookspecs.Register) -> None:
        register("bright-spot-strict", self.build)

    @staticmethod
    def build() -> covidcxr_brightspot.BrightSpotDetector:
        return covidcxr_brightspot.BrightSpotDetector(percentile=99.9)


def test_the_fixture_registers_a_plugin_for_one_test(covidcxr_plugin: Callable[..., str]) -> None:
    covidcxr_plugin(StrictVariant(), name="strict")
    assert covidcxr.plugins.available_detectors()["bright-spot-strict"].plugin == "strict"
    assert isinstance(covidcxr.create_detector("bright-spot-strict"), covidcxr.LesionDetector)
