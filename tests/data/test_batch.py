"""Specification of preprocess_batch and its on-disk cache."""

from __future__ import annotations

import itertools
import os
import shutil
import time
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
from covidcxr.sources import FolderSource, SkippedItemsWarning, ZipSource, mask_boxes
from covidcxr.sources import folder as folder_module

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
    packs = list(cache.rglob("*.cxrpack"))
    assert packs
    for pack in packs:
        pack.write_bytes(pack.read_bytes()[:50])  # a writer that died in its first record
    stats = BatchStats()
    out = list(
        preprocess_batch(
            source, PREPROCESSOR, workers=0, cache_dir=str(cache), progress=False, stats=stats
        )
    )
    assert (stats.cache_hits, stats.cache_writes) == (0, 6)
    assert len(out) == 6


def test_a_garbled_entry_header_is_a_miss_not_an_error(qu_ex_folder: Path, tmp_path: Path) -> None:
    source = FolderSource(qu_ex_folder, layout="covid-qu-ex", split="Test")
    cache = tmp_path / "cache"
    expected = [
        _signature(x)
        for x in preprocess_batch(
            source, PREPROCESSOR, workers=0, cache_dir=str(cache), progress=False
        )
    ]
    (pack,) = cache.rglob("*.cxrpack")
    data = bytearray(pack.read_bytes())
    header_start = data.index(b'{"arrays"')
    data[header_start : header_start + 9] = b"#garbled#"
    pack.write_bytes(bytes(data))
    stats = BatchStats()
    got = [
        _signature(x)
        for x in preprocess_batch(
            source, PREPROCESSOR, workers=0, cache_dir=str(cache), progress=False, stats=stats
        )
    ]
    assert got == expected
    assert (stats.cache_hits, stats.cache_writes) == (5, 1)


def test_warm_pass_over_unchanged_files_reads_only_the_cache(
    qu_ex_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(folder_module, "RACY_SECONDS", 0.0)
    source = FolderSource(qu_ex_folder, layout="covid-qu-ex")
    cache = str(tmp_path / "cache")
    first = [
        _signature(x)
        for x in preprocess_batch(source, PREPROCESSOR, workers=0, cache_dir=cache, progress=False)
    ]
    reads: list[str] = []
    original = folder_module._read_file

    def counting(prefix: str, name: str) -> bytes:
        reads.append(name)
        return original(prefix, name)

    monkeypatch.setattr(folder_module, "_read_file", counting)
    stats = BatchStats()
    second = [
        _signature(x)
        for x in preprocess_batch(
            source, PREPROCESSOR, workers=0, cache_dir=cache, progress=False, stats=stats
        )
    ]
    assert second == first
    assert stats.cache_hits == 18
    assert reads == []  # neither images nor masks were opened


def test_a_file_rewritten_with_its_old_timestamps_is_read_again(
    qu_ex_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(folder_module, "RACY_SECONDS", 0.0)
    source = FolderSource(qu_ex_folder, layout="covid-qu-ex", split="Test")
    cache = str(tmp_path / "cache")
    list(preprocess_batch(source, PREPROCESSOR, workers=0, cache_dir=cache, progress=False))
    images = qu_ex_folder / "Test" / "Normal" / "images"
    target = images / "normal_0.png"
    before = target.stat()
    target.write_bytes((images / "normal_1.png").read_bytes())
    # What `cp -p` or an archive tool does: the old modification time is put back. The
    # change time cannot be, so the fingerprint still changes.
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    out = {
        Path(x.id).name: x.pixels.tobytes()
        for x in preprocess_batch(source, PREPROCESSOR, workers=0, cache_dir=cache, progress=False)
    }
    assert out["normal_0.png"] == out["normal_1.png"]


def test_recently_changed_files_have_no_fingerprint(qu_ex_folder: Path) -> None:
    source = FolderSource(qu_ex_folder, layout="covid-qu-ex", split="Test")
    entry = source.entries[0]
    assert source.fingerprint(entry) is None  # just written: within RACY_SECONDS
    old = time.time() - 3600
    for name in (entry.name, *(mask for _, mask in entry.masks)):
        os.utime(qu_ex_folder / name, (old, old))
    # The change time is still recent (utime itself sets it), so still none.
    assert source.fingerprint(entry) is None


def test_fingerprints_name_every_file_of_an_entry(
    qu_ex_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(folder_module, "RACY_SECONDS", 0.0)
    with_masks = FolderSource(qu_ex_folder, layout="covid-qu-ex", split="Val")
    without = FolderSource(qu_ex_folder, layout="covid-qu-ex", split="Val", load_masks=False)
    entry = with_masks.entries[0]
    assert entry.masks
    printed = with_masks.fingerprint(entry)
    assert printed is not None
    assert all(name in printed for _, name in entry.masks)
    assert printed != without.fingerprint(without.entries[0])
    (qu_ex_folder / entry.masks[0][1]).unlink()
    assert with_masks.fingerprint(entry) is None


def test_zip_sources_are_cached_by_content(classes_folder: Path, tmp_path: Path) -> None:
    archive = shutil.make_archive(str(tmp_path / "data"), "zip", classes_folder)
    cache = str(tmp_path / "cache")
    with ZipSource(archive) as source:
        first = [
            _signature(x)
            for x in preprocess_batch(
                source, PREPROCESSOR, workers=0, cache_dir=cache, progress=False
            )
        ]
        stats = BatchStats()
        second = [
            _signature(x)
            for x in preprocess_batch(
                source, PREPROCESSOR, workers=0, cache_dir=cache, progress=False, stats=stats
            )
        ]
    assert second == first
    assert stats.cache_hits == len(first) > 0


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


@pytest.mark.slow
def test_worker_pool_reads_caches_and_skips_like_this_process(
    classes_folder: Path, tmp_path: Path
) -> None:
    (classes_folder / "COVID" / "broken.png").write_text("not a png")
    with pytest.warns(SkippedItemsWarning, match="skipped 1"):
        expected = [
            _signature(x)
            for x in preprocess_batch(
                FolderSource(classes_folder, on_error="skip"),
                PREPROCESSOR,
                workers=0,
                progress=False,
            )
        ]
    cache = str(tmp_path / "cache")
    for hits in (0, 5):
        stats = BatchStats()
        source = FolderSource(classes_folder, on_error="skip")
        with pytest.warns(SkippedItemsWarning, match="skipped 1"):
            got = [
                _signature(x)
                for x in preprocess_batch(
                    source, PREPROCESSOR, workers=2, cache_dir=cache, progress=False, stats=stats
                )
            ]
        assert got == expected
        assert (stats.cache_hits, stats.skipped) == (hits, 1)
        assert [Path(s.path).name for s in source.skipped] == ["broken.png"]
