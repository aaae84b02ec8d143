"""Specification of preprocess_batch and its on-disk cache."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from covidcxr.errors import ConfigurationError, InvalidImageError
from covidcxr.preprocess import (
    BatchStats,
    GaussianClahePreprocessor,
    PreprocessCache,
    preprocess_batch,
)
from covidcxr.records import XRay
from covidcxr.sources import FolderSource, SkippedItemsWarning, mask_boxes

PREPROCESSOR = GaussianClahePreprocessor(output_size=32)


def _signature(xray: XRay) -> tuple[Any, ...]:
    masks = tuple(
        (key, value.tobytes())
        for key, value in sorted(xray.meta.items())
        if key.endswith("_mask") and isinstance(value, np.ndarray)
    )
    return (xray.id, xray.label, xray.pixels.tobytes(), xray.boxes, masks, xray.meta["transform"])


def test_in_process_batch_equals_calling_the_preprocessor(qu_ex_folder: Path) -> None:
    source = FolderSource(qu_ex_folder, layout="covid-qu-ex")
    expected = [_signature(PREPROCESSOR(xray)) for xray in source]
    got = [_signature(x) for x in preprocess_batch(source, PREPROCESSOR, workers=0, progress=False)]
    assert got == expected


@pytest.mark.slow
def test_worker_pool_output_is_byte_identical_and_in_order(qu_ex_folder: Path) -> None:
    source = FolderSource(qu_ex_folder, layout="covid-qu-ex")
    expected = [_signature(PREPROCESSOR(xray)) for xray in source]
    batch = preprocess_batch(source, PREPROCESSOR, workers=2, chunk_size=2, progress=False)
    assert [_signature(x) for x in batch] == expected


def test_plain_iterables_of_xrays_are_accepted(make: Any) -> None:
    xrays = [XRay(make.gradient(seed=i), id=f"x{i}", label="normal") for i in range(5)]
    out = list(preprocess_batch(iter(xrays), PREPROCESSOR, workers=0, progress=False))
    assert [x.id for x in out] == [f"x{i}" for i in range(5)]
    assert all(x.pixels.shape == (32, 32) and x.label == "normal" for x in out)


def test_second_pass_is_served_from_the_cache(qu_ex_folder: Path, tmp_path: Path) -> None:
    source = FolderSource(qu_ex_folder, layout="covid-qu-ex")
    cache = str(tmp_path / "cache")
    first_stats, second_stats = BatchStats(), BatchStats()
    first = list(
        preprocess_batch(
            source, PREPROCESSOR, workers=0, cache_dir=cache, progress=False, stats=first_stats
        )
    )
    second = list(
        preprocess_batch(
            source, PREPROCESSOR, workers=0, cache_dir=cache, progress=False, stats=second_stats
        )
    )
    assert (first_stats.cache_hits, first_stats.cache_writes) == (0, 18)
    assert (second_stats.cache_hits, second_stats.cache_writes) == (18, 0)
    assert [_signature(x) for x in second] == [_signature(x) for x in first]
    assert [x.meta["path"] for x in second] == [x.meta["path"] for x in first]


def test_cache_is_keyed_by_parameters(qu_ex_folder: Path, tmp_path: Path) -> None:
    source = FolderSource(qu_ex_folder, layout="covid-qu-ex", split="Test")
    cache = str(tmp_path / "cache")
    list(preprocess_batch(source, PREPROCESSOR, workers=0, cache_dir=cache, progress=False))
    stats = BatchStats()
    other = GaussianClahePreprocessor(output_size=32, clip_limit=3.0)
    list(preprocess_batch(source, other, workers=0, cache_dir=cache, progress=False, stats=stats))
    assert stats.cache_hits == 0


def test_cache_is_keyed_by_content_not_name(qu_ex_folder: Path, tmp_path: Path) -> None:
    source = FolderSource(qu_ex_folder, layout="covid-qu-ex", split="Test")
    cache = str(tmp_path / "cache")
    list(preprocess_batch(source, PREPROCESSOR, workers=0, cache_dir=cache, progress=False))
    image = qu_ex_folder / "Test" / "Normal" / "images" / "normal_0.png"
    image.write_bytes((qu_ex_folder / "Test" / "Normal" / "images" / "normal_1.png").read_bytes())
    stats = BatchStats()
    out = list(
        preprocess_batch(
            source, PREPROCESSOR, workers=0, cache_dir=cache, progress=False, stats=stats
        )
    )
    assert stats.cache_hits == 6
    by_name = {Path(x.id).name: x.pixels.tobytes() for x in out}
    assert by_name["normal_0.png"] == by_name["normal_1.png"]


def test_damaged_cache_entries_are_misses(qu_ex_folder: Path, tmp_path: Path) -> None:
    source = FolderSource(qu_ex_folder, layout="covid-qu-ex", split="Test")
    cache = tmp_path / "cache"
    list(preprocess_batch(source, PREPROCESSOR, workers=0, cache_dir=str(cache), progress=False))
    for entry in cache.rglob("*.cxr"):
        entry.write_bytes(entry.read_bytes()[:50])
    stats = BatchStats()
    out = list(
        preprocess_batch(
            source, PREPROCESSOR, workers=0, cache_dir=str(cache), progress=False, stats=stats
        )
    )
    assert stats.cache_hits == 0
    assert len(out) == 6


def test_unreadable_items_follow_the_sources_on_error_policy(classes_folder: Path) -> None:
    (classes_folder / "COVID" / "broken.png").write_text("not a png")
    with pytest.raises(InvalidImageError, match=r"broken\.png"):
        list(
            preprocess_batch(FolderSource(classes_folder), PREPROCESSOR, workers=0, progress=False)
        )
    source = FolderSource(classes_folder, on_error="skip")
    with pytest.warns(SkippedItemsWarning, match="skipped 1"):
        out = list(preprocess_batch(source, PREPROCESSOR, workers=0, progress=False))
    assert len(out) == 5
    assert [Path(s.path).name for s in source.skipped] == ["broken.png"]


def test_fork_start_method_is_refused(classes_folder: Path) -> None:
    with pytest.raises(ConfigurationError, match="fork"):
        preprocess_batch(FolderSource(classes_folder), PREPROCESSOR, start_method="fork")


def test_negative_workers_are_refused(classes_folder: Path) -> None:
    with pytest.raises(ConfigurationError, match="workers"):
        preprocess_batch(FolderSource(classes_folder), PREPROCESSOR, workers=-1)


@pytest.mark.slow
def test_abandoning_the_iterator_shuts_the_pool_down(classes_folder: Path) -> None:
    batch = preprocess_batch(
        FolderSource(classes_folder), PREPROCESSOR, workers=2, chunk_size=1, progress=False
    )
    assert len(list(itertools.islice(batch, 2))) == 2
    batch.close()  # type: ignore[attr-defined]


def test_cache_round_trips_arrays_boxes_and_transform(tmp_path: Path, make: Any) -> None:
    mask = np.zeros((48, 48), np.uint8)
    mask[4:20, 4:20] = 255
    xray = XRay(
        make.gradient(48, 48), id="a", boxes=mask_boxes(mask), meta={"infection_mask": mask}
    )
    out = PREPROCESSOR(xray)
    cache = PreprocessCache(tmp_path, PREPROCESSOR.cache_token())
    derived = {key: out.meta[key] for key in ("infection_mask", "transform")}
    assert cache.store("digest", out.pixels, out.boxes, derived)
    restored = cache.load("digest")
    assert restored is not None
    assert restored.pixels.tobytes() == out.pixels.tobytes()
    assert restored.pixels.dtype == np.float32
    assert restored.boxes == out.boxes
    assert restored.meta["transform"] == out.meta["transform"]
    np.testing.assert_array_equal(restored.meta["infection_mask"], out.meta["infection_mask"])


def test_values_that_are_not_plain_json_are_not_cached(tmp_path: Path, make: Any) -> None:
    cache = PreprocessCache(tmp_path, "token")
    assert not cache.store("d", make.gradient(), (), {"odd": object()})
    assert cache.load("d") is None
