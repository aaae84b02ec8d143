"""Specification: a cache hit gives what computing the result gives; failures name the item."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import attrs
import cv2
import numpy as np
import pytest

from covidcxr.errors import ComponentOutputError
from covidcxr.preprocess import (
    BatchStats,
    CacheNotFilledWarning,
    GaussianClahePreprocessor,
    PreprocessCache,
    preprocess_batch,
)
from covidcxr.preprocess import _batch as batch_module
from covidcxr.records import XRay
from covidcxr.sources import FolderSource
from covidcxr.sources import _folder as folder_module
from covidcxr.sources._items import DECODE_REVISION, Entry

from .test_batch import _signature


def _passes(
    items: Any, preprocessor: Any, cache: Path | None, stats: BatchStats | None = None
) -> list[tuple[Any, ...]]:
    out = preprocess_batch(
        items() if callable(items) else items,
        preprocessor,
        workers=0,
        cache_dir=cache,
        progress=False,
        stats=stats,
    )
    return [_signature(x) for x in out]


def _cold_and_warm(items: Any, preprocessor: Any, cache: Path) -> list[list[tuple[Any, ...]]]:
    """Without a cache, then twice with one (filling it, then reading it)."""
    return [_passes(items, preprocessor, where) for where in (None, cache, cache)]


@attrs.frozen
class _DropKeys:
    """Removes metadata keys (to save memory, say) and changes nothing else."""

    keys: tuple[str, ...]

    def cache_token(self) -> str:
        return f"drop-keys:{self.keys}"

    def __call__(self, xray: XRay) -> XRay:
        return attrs.evolve(xray, meta={k: v for k, v in xray.meta.items() if k not in self.keys})


@attrs.frozen
class _AddMeta:
    """Adds ``meta[key] = value``."""

    key: str
    value: Any = attrs.field(hash=False)

    def cache_token(self) -> str:
        return f"add-meta:{self.key}"

    def __call__(self, xray: XRay) -> XRay:
        return attrs.evolve(xray, meta={**xray.meta, self.key: self.value})


def test_a_hit_on_an_xray_adds_nothing_a_source_would_decode(tmp_path: Path) -> None:
    # An XRay is given as it is: no "annotated" word invented (empty boxes would then be
    # "no lesion" instead of "never annotated"), no patient taken from other metadata.
    def xrays() -> list[XRay]:
        return [
            XRay(
                np.full((64, 64), 100, np.uint8),
                id="a",
                label="covid-19",
                meta={"dicom_patient_id": "P-from-dicom"},
            )
        ]

    preprocessor = GaussianClahePreprocessor(output_size=32)
    uncached, cold, warm = _cold_and_warm(xrays, preprocessor, tmp_path)
    assert uncached == cold == warm
    assert [(patient, dict(plain).get("annotated")) for _, _, patient, *_, plain in warm] == [
        (None, None)
    ]


def test_keys_a_preprocessor_removes_from_an_xray_stay_removed_on_a_hit(tmp_path: Path) -> None:
    def xrays() -> list[XRay]:
        mask = np.full((40, 40), 255, np.uint8)
        return [XRay(np.full((40, 40), 7, np.uint8), id="a", meta={"lung_mask": mask, "n": 1})]

    uncached, cold, warm = _cold_and_warm(xrays, _DropKeys(("lung_mask", "n")), tmp_path)
    assert uncached == cold == warm
    assert warm[0][-2:] == ((), ())


@pytest.mark.parametrize("remembered", [False, True], ids=["read", "remembered-digest"])
def test_keys_a_preprocessor_removes_from_a_decoded_item_stay_removed_on_a_hit(
    classes_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remembered: bool
) -> None:
    if remembered:  # the warm pass finds the digests by the files' status: reads nothing
        monkeypatch.setattr(folder_module, "RACY_SECONDS", 0.0)
    # What decode_item adds ("format", "annotated") and what the layout gives ("path").
    preprocessor = _DropKeys(("format", "annotated", "path"))
    stats = BatchStats()
    uncached = _passes(FolderSource(classes_folder), preprocessor, None)
    cold = _passes(FolderSource(classes_folder), preprocessor, tmp_path / "cache")
    warm = _passes(FolderSource(classes_folder), preprocessor, tmp_path / "cache", stats)
    assert stats.cache_hits == stats.items == 5
    assert stats.memo_hits == (5 if remembered else 0)
    assert uncached == cold == warm
    assert not any({"format", "annotated", "path"} & {k for k, _ in s[-1]} for s in warm)


@pytest.mark.parametrize(
    "value",
    [
        (10, 20),  # JSON has no tuples: it came back a list
        [1, (2, 3)],
        {1: "a"},  # JSON keys are strings
        {"window": (0.5, 99.5)},
        np.float64(0.5),  # a float subclass came back a float
        float("nan"),  # not equal to itself: cannot be checked, so not cached
    ],
    ids=repr,
)
def test_values_that_json_would_change_are_not_cached(tmp_path: Path, value: Any) -> None:
    def xrays() -> list[XRay]:
        return [XRay(np.full((40, 40), 7, np.uint8), id="a")]

    stats = BatchStats()
    cold = _passes(xrays, _AddMeta("value", value), tmp_path, stats)
    assert (stats.uncachable, stats.cache_writes) == (1, 0)
    assert _passes(xrays, _AddMeta("value", value), tmp_path) == cold
    cache = PreprocessCache(tmp_path / "unit", "token")
    assert not cache.store("d", np.zeros((4, 4), np.uint8), (), {"value": value})


def test_plain_json_values_are_still_cached(tmp_path: Path) -> None:
    value: dict[str, Any] = {"a": [1, 2.5, None, True, "x", {"b": []}]}
    cache = PreprocessCache(tmp_path, "token")
    assert cache.store("d", np.zeros((4, 4), np.uint8), (), {"value": value}, removed=["gone"])
    cache.close()
    restored = PreprocessCache(tmp_path, "token").load("d")
    assert restored is not None
    assert restored.meta["value"] == value
    assert restored.removed == ("gone",)


@pytest.mark.parametrize(
    "array",
    [
        np.array(["a", None], dtype=object),
        np.zeros(2, dtype=[("x", np.float32), ("y", np.float32)]),  # dtype.str loses fields
        np.ma.masked_array([1, 2], mask=[False, True]),
    ],
    ids=["object", "structured", "masked"],
)
def test_arrays_the_cache_cannot_give_back_are_not_cached(tmp_path: Path, array: Any) -> None:
    cache = PreprocessCache(tmp_path, "token")
    assert not cache.store("d", np.zeros((4, 4), np.uint8), (), {"notes": array})
    assert cache.write_error is None


def test_an_object_array_in_meta_does_not_break_a_cached_run(tmp_path: Path) -> None:
    notes = np.array(["a", None], dtype=object)

    def xrays() -> list[XRay]:
        return [XRay(np.full((40, 40), i, np.uint8), id=str(i)) for i in range(3)]

    stats = BatchStats()
    preprocessor = _AddMeta("notes", notes)
    batch = preprocess_batch(
        xrays(), preprocessor, workers=0, cache_dir=tmp_path, progress=False, stats=stats
    )
    out = list(batch)
    assert [x.meta["notes"].tolist() for x in out] == [["a", None]] * 3
    assert (stats.uncachable, stats.cache_writes) == (3, 0)


@attrs.frozen
class _FailsOn:
    bad: str

    def cache_token(self) -> str:
        return "fails-on"

    def __call__(self, xray: XRay) -> XRay:
        if xray.id == self.bad:
            raise ValueError("cannot handle this image")
        return xray


def test_a_preprocessors_error_names_the_item_in_process() -> None:
    xrays = [XRay(np.full((40, 40), i, np.uint8), id=c) for i, c in enumerate("abc")]
    with pytest.raises(ValueError, match="cannot handle") as caught:
        list(preprocess_batch(xrays, _FailsOn("b"), workers=0, progress=False))
    assert any("'b', item 1 of the input" in note for note in caught.value.__notes__)


# Worker processes cannot import this test module: the failing preprocessor lives in a
# module of its own, which a script run in a fresh interpreter imports.
_FAILING = """
import attrs

class OddError(Exception):
    # Its __init__ takes two arguments but gives Exception one: it pickles, and does
    # not unpickle.
    def __init__(self, image_id, reason):
        super().__init__(f"{image_id}: {reason}")

@attrs.frozen
class FailsOn:
    bad: str = "b"
    odd: bool = False

    def cache_token(self):
        return "fails-on"

    def __call__(self, xray):
        if xray.id == self.bad:
            if self.odd:
                raise OddError(xray.id, "bad")
            raise ValueError("cannot handle this image")
        return xray
"""

_RUN = """
import json
import numpy as np
from covidcxr import XRay
from covidcxr.preprocess import preprocess_batch, release_workers
from failing import FailsOn

if __name__ == "__main__":
    report = []
    for odd in (False, True, False):  # the last: the pool still works after an odd one
        xrays = [XRay(np.full((40, 40), i, np.uint8), id=c) for i, c in enumerate("abc")]
        try:
            list(preprocess_batch(xrays, FailsOn(odd=odd), workers=1, progress=False))
        except Exception as error:
            report.append([type(error).__name__, str(error), getattr(error, "__notes__", [])])
    release_workers()
    print(json.dumps(report))
"""


@pytest.mark.slow
def test_a_workers_error_names_the_item_and_one_that_cannot_be_sent_breaks_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / "failing.py").write_text(_FAILING)
    (tmp_path / "run.py").write_text(_RUN)
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(tmp_path / "run.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    plain, odd, again = json.loads(done.stdout.splitlines()[-1])
    assert plain[0] == again[0] == "ValueError"
    for _, _, notes in (plain, again):
        assert any("'b', item 1 of the input" in note for note in notes)
        assert any("Raised in a worker process" in note for note in notes)
    kind, message, notes = odd
    assert kind == ComponentOutputError.__name__
    assert "'b'" in message
    assert "OddError('b: bad')" in message
    assert any('raise OddError(xray.id, "bad")' in note for note in notes)


class _PlainInvert:
    """A preprocessor without cache_token() and with the default repr (an address)."""

    def __call__(self, xray: XRay) -> XRay:
        return attrs.evolve(xray, pixels=255 - xray.pixels)


def _xrays() -> list[XRay]:
    return [XRay(np.full((40, 40), i, np.uint8), id=str(i)) for i in range(4)]


def test_a_preprocessor_whose_key_would_change_every_run_is_not_cached(tmp_path: Path) -> None:
    for _ in range(2):
        stats = BatchStats()
        with pytest.warns(CacheNotFilledWarning, match="memory address") as caught:
            out = _passes(_xrays, _PlainInvert(), tmp_path, stats)
        assert len([w for w in caught if w.category is CacheNotFilledWarning]) == 1
        assert out == _passes(_xrays, _PlainInvert(), None)
        assert (stats.cache_hits, stats.cache_writes, stats.uncachable) == (0, 0, 4)
    assert not list(tmp_path.rglob("*.cxrpack"))


def test_a_distributed_fill_writes_nothing_under_a_key_that_changes(tmp_path: Path) -> None:
    from covidcxr.preprocess._batch import fill_cache

    def reader(entry: Entry) -> Any:
        raise AssertionError("nothing is read for a cache that would never be found")

    outcomes = fill_cache([(Entry("a.png"), None)], reader, _PlainInvert(), tmp_path, {})
    assert [(outcome, "memory address" in str(reason)) for outcome, reason in outcomes] == [
        ("uncachable", True)
    ]


@attrs.frozen
class _Invert:
    """No cache_token(), but a repr made of its parameters: the same every run."""

    level: int = 255

    def __call__(self, xray: XRay) -> XRay:
        return attrs.evolve(xray, pixels=self.level - xray.pixels)


def test_a_preprocessor_with_a_repr_of_its_parameters_is_cached(tmp_path: Path) -> None:
    stats = BatchStats()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheNotFilledWarning)
        _passes(_xrays, _Invert(), tmp_path)
        _passes(_xrays, _Invert(), tmp_path, stats)
    assert stats.cache_hits == 4


def test_files_decoded_by_another_decoder_revision_are_misses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upgrade that decodes files differently is not served the older pixels."""
    folder = tmp_path / "scans"
    (folder / "COVID").mkdir(parents=True)
    for index in range(3):
        pixels = np.full((40, 40), 40 * index, np.uint8)
        pixels[10:20, 10:20] = 255
        cv2.imwrite(str(folder / "COVID" / f"{index}.png"), pixels)
    cache = tmp_path / "cache"
    preprocessor = GaussianClahePreprocessor(output_size=32)
    first = BatchStats()
    _passes(FolderSource(folder), preprocessor, cache, first)
    assert first.cache_writes == 3
    same = BatchStats()
    _passes(FolderSource(folder), preprocessor, cache, same)
    assert same.cache_hits == 3
    monkeypatch.setattr(batch_module, "DECODE_REVISION", DECODE_REVISION + 1)
    upgraded = BatchStats()
    _passes(FolderSource(folder), preprocessor, cache, upgraded)
    assert (upgraded.cache_hits, upgraded.cache_writes) == (0, 3)
