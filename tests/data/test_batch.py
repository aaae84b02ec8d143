"""Specification of preprocess_batch and its on-disk cache."""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest

from covidcxr.errors import ConfigurationError, InvalidImageError
from covidcxr.preprocess import (
    BatchStats,
    CacheNotFilledWarning,
    GaussianClahePreprocessor,
    PreprocessCache,
    preprocess_batch,
)
from covidcxr.records import XRay
from covidcxr.sources import FolderSource, SkippedItemsWarning, ZipSource, mask_boxes
from covidcxr.sources import _folder as folder_module

PREPROCESSOR = GaussianClahePreprocessor(output_size=32)


def _signature(xray: XRay) -> tuple[Any, ...]:
    """Everything a record holds: arrays by their bytes, other metadata by value."""
    arrays = tuple(
        (key, value.dtype.str, value.shape, value.tobytes())
        for key, value in sorted(xray.meta.items())
        if isinstance(value, np.ndarray)
    )
    plain = tuple(
        (key, repr(value))
        for key, value in sorted(xray.meta.items())
        if not isinstance(value, np.ndarray)
    )
    return (
        xray.id,
        xray.label,
        xray.patient_id,
        xray.pixels.dtype.str,
        xray.pixels.tobytes(),
        xray.boxes,
        arrays,
        plain,
    )


def _signatures(
    items: Any,
    *,
    cache: str | None = None,
    stats: BatchStats | None = None,
    workers: int = 0,
    **options: Any,
) -> list[tuple[Any, ...]]:
    """The signatures of a whole batch run with the default preprocessor."""
    return [
        _signature(x)
        for x in preprocess_batch(
            items,
            PREPROCESSOR,
            workers=workers,
            cache_dir=cache,
            progress=False,
            stats=stats,
            **options,
        )
    ]


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


def test_an_entry_cached_before_annotated_was_recorded_is_not_taken_as_annotated() -> None:
    # Entries written before sources recorded meta["annotated"] lack it; an image without
    # an infection mask must not come back as annotated (its empty boxes would be scored).
    from covidcxr.preprocess._batch import _cached_record
    from covidcxr.preprocess._cache import CachedOutput

    pixels = np.zeros((8, 8), np.float32)
    old = CachedOutput(pixels, (), {"format": "png"})
    assert _cached_record("a", "normal", None, {}, old, decoded=True).meta["annotated"] is False
    mask = np.zeros((8, 8), np.uint8)
    with_mask = CachedOutput(pixels, (), {"infection_mask": mask})
    restored = _cached_record("b", "normal", None, {}, with_mask, decoded=True)
    assert restored.meta["annotated"] is True


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
    second = _signatures(source, cache=cache, stats=stats)
    assert second == first
    assert stats.cache_hits == 18
    assert reads == []  # neither images nor masks were opened


def test_a_same_size_rewrite_with_its_old_timestamps_is_read_again(
    classes_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: Any
) -> None:
    monkeypatch.setattr(folder_module, "RACY_SECONDS", 0.0)
    target = classes_folder / "COVID" / "img_0.png"
    before_image, after_image = (
        make.encode(np.full((48, 48), value, np.uint8)) for value in (60, 200)
    )
    assert len(before_image) == len(after_image)  # the size cannot give the change away
    target.write_bytes(before_image)
    cache = str(tmp_path / "cache")
    source = FolderSource(classes_folder)
    list(preprocess_batch(source, PREPROCESSOR, workers=0, cache_dir=cache, progress=False))
    status = target.stat()
    target.write_bytes(after_image)
    # What `cp -p` or an archive tool does: the old modification time is put back. The
    # change time cannot be, so the fingerprint still changes.
    os.utime(target, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (
        status.st_size,
        status.st_mtime_ns,
    )
    stats = BatchStats()
    out = {
        x.id: x
        for x in preprocess_batch(
            source, PREPROCESSOR, workers=0, cache_dir=cache, progress=False, stats=stats
        )
    }
    assert (stats.memo_hits, stats.cache_writes) == (len(out) - 1, 1)
    fresh = PREPROCESSOR(XRay(np.full((48, 48), 200, np.uint8), id="x"))
    assert out[str(target)].pixels.tobytes() == fresh.pixels.tobytes()


def test_recently_changed_files_have_no_fingerprint(
    qu_ex_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FolderSource(qu_ex_folder, layout="covid-qu-ex", split="Test")
    entry = source.entries[0]
    monkeypatch.setattr(folder_module, "RACY_SECONDS", 0.0)
    assert source.fingerprint(entry) is not None
    monkeypatch.setattr(folder_module, "RACY_SECONDS", 3600.0)
    assert source.fingerprint(entry) is None  # changed within the last RACY_SECONDS
    old = time.time() - 7200
    for name in (entry.name, *(mask for _, mask in entry.masks)):
        os.utime(qu_ex_folder / name, (old, old))
    # The change time is still recent (utime itself sets it), so still none.
    assert source.fingerprint(entry) is None


def test_fingerprints_can_be_turned_off(
    qu_ex_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(folder_module, "RACY_SECONDS", 0.0)
    source = FolderSource(qu_ex_folder, layout="covid-qu-ex", fingerprints=False)
    assert source.fingerprint(source.entries[0]) is None


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
        first = _signatures(source, cache=cache)
        stats = BatchStats()
        second = _signatures(source, cache=cache, stats=stats)
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
    cache.close()  # seals the pack: readers see it from now on
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
            got = _signatures(source, cache=cache, stats=stats, workers=2)
        assert got == expected
        assert (stats.cache_hits, stats.skipped) == (hits, 1)
        # The workers' packs are sealed as they exit: their entries count as written.
        assert stats.cache_writes == 5 - hits
        assert [Path(s.path).name for s in source.skipped] == ["broken.png"]


def test_decoding_options_key_the_cache(classes_folder: Path, tmp_path: Path, make: Any) -> None:
    mask_source = FolderSource(classes_folder)
    cache = str(tmp_path / "cache")
    list(preprocess_batch(mask_source, PREPROCESSOR, workers=0, cache_dir=cache, progress=False))
    stats = BatchStats()
    stricter = FolderSource(classes_folder, min_side=40)
    list(
        preprocess_batch(
            stricter, PREPROCESSOR, workers=0, cache_dir=cache, progress=False, stats=stats
        )
    )
    assert stats.cache_hits == 0


def test_real_lesion_boxes_follow_min_lesion_area_through_the_cache(
    qu_ex_folder: Path, tmp_path: Path
) -> None:
    cache = str(tmp_path / "cache")

    def boxes(min_area: int) -> list[int]:
        source = FolderSource(qu_ex_folder, layout="covid-qu-ex", min_lesion_area=min_area)
        return [
            len(x.boxes)
            for x in preprocess_batch(
                source, PREPROCESSOR, workers=0, cache_dir=cache, progress=False
            )
        ]

    with_small = boxes(1)
    assert any(with_small)
    assert not any(boxes(10**6))  # not the boxes cached under min_lesion_area=1
    assert boxes(1) == with_small


class _Tagging(GaussianClahePreprocessor):
    """A subclass that overrides __call__ but inherits packed()."""

    def __call__(self, xray: XRay) -> XRay:
        out = super().__call__(xray)
        return attrs.evolve(out, meta={**out.meta, "tagged": True})


def test_a_subclass_overriding_call_is_not_bypassed(classes_folder: Path, tmp_path: Path) -> None:
    source = FolderSource(classes_folder)
    cache = str(tmp_path / "cache")
    # The parent first, into the same cache: the subclass must not be served its results.
    list(preprocess_batch(source, PREPROCESSOR, workers=0, cache_dir=cache, progress=False))
    preprocessor = _Tagging(output_size=32)
    for cache_dir in (None, cache, cache):
        out = list(
            preprocess_batch(source, preprocessor, workers=0, cache_dir=cache_dir, progress=False)
        )
        assert all(x.meta["tagged"] is True for x in out)


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_results_before_a_failing_item_come_out_before_its_error(make: Any, workers: int) -> None:
    xrays = [XRay(make.gradient(seed=i), id=f"x{i}") for i in range(6)]
    # Float pixels: the preprocessor refuses them as preprocessed already. (Built-in
    # classes only: a worker process cannot import classes defined in a test module.)
    xrays[3] = XRay(make.gradient().astype(np.float32) / 255, id="x3")
    batch = preprocess_batch(xrays, PREPROCESSOR, workers=workers, chunk_size=16, progress=False)
    got = [next(batch).id for _ in range(3)]
    with pytest.raises(InvalidImageError, match="preprocessed already"):
        next(batch)
    assert got == ["x0", "x1", "x2"]


@pytest.mark.slow
def test_worker_pool_warm_pass_reads_nothing_and_matches(
    qu_ex_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(folder_module, "RACY_SECONDS", 0.0)  # fingerprints are made here
    cache = str(tmp_path / "cache")
    source = FolderSource(qu_ex_folder, layout="covid-qu-ex")
    expected = [_signature(PREPROCESSOR(x)) for x in source]
    for memo_hits in (0, len(expected)):
        stats = BatchStats()
        got = _signatures(source, cache=cache, stats=stats, workers=2)
        assert got == expected
        assert stats.memo_hits == memo_hits


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
@pytest.mark.parametrize("chunk_size", [1, 3, None])
def test_hits_among_misses_keep_their_order(
    classes_folder: Path, tmp_path: Path, workers: int, chunk_size: int | None
) -> None:
    every = list(FolderSource(classes_folder))
    cached = every[1::3]
    cache = str(tmp_path / "cache")
    _signatures(cached, cache=cache)
    stats = BatchStats()
    got = _signatures(every, cache=cache, stats=stats, workers=workers, chunk_size=chunk_size)
    assert got == [_signature(PREPROCESSOR(x)) for x in every]
    assert (stats.cache_hits, stats.cache_writes) == (len(cached), len(every) - len(cached))


def test_a_flipped_byte_in_a_sealed_entry_is_recomputed_not_served(
    qu_ex_folder: Path, tmp_path: Path
) -> None:
    from covidcxr.preprocess._packs import scan_pack

    source = FolderSource(qu_ex_folder, layout="covid-qu-ex", split="Test")
    cache = tmp_path / "cache"
    expected = _signatures(source, cache=str(cache))
    (pack,) = cache.rglob("*.cxrpack")
    _, offset, header_length, body_length = list(scan_pack(pack))[2]
    data = bytearray(pack.read_bytes())
    body = offset + 40 + header_length  # prefix (36) and checksum (4), then the header
    data[body + body_length // 2] ^= 0x01  # one pixel of the third entry
    pack.write_bytes(bytes(data))
    # Damage on disk (a flipped bit) leaves the time stamps as they were; the rewrite
    # goes to a newer pack, found first from then on.
    os.utime(pack, ns=(1, 1))
    for damaged, hits, writes in ((1, 5, 1), (0, 6, 0)):  # recomputed, then served again
        stats = BatchStats()
        assert _signatures(source, cache=str(cache), stats=stats) == expected
        assert (stats.cache_damaged, stats.cache_hits, stats.cache_writes) == (
            damaged,
            hits,
            writes,
        )


def _full_after(writes: int) -> Any:
    """An ``os.write`` that writes ``writes`` times, then fails as a full disk does."""
    real_write = os.write
    calls = itertools.count()

    def write(descriptor: int, data: Any) -> int:
        if next(calls) >= writes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(descriptor, data)

    return write


def test_a_disk_that_fills_up_counts_nothing_written_and_warns_once(
    qu_ex_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FolderSource(qu_ex_folder, layout="covid-qu-ex")
    expected = _signatures(source)
    cache = str(tmp_path / "cache")
    stats = BatchStats()
    monkeypatch.setattr(os, "write", _full_after(3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = _signatures(source, cache=cache, stats=stats)
    monkeypatch.undo()
    assert got == expected  # the results, without the cache
    # Three entries went into the pack before the disk was full; the pack, with its
    # torn fourth entry, was dropped: nothing is in the cache.
    assert (stats.cache_writes, stats.uncachable) == (0, 18)
    not_filled = [w for w in caught if issubclass(w.category, CacheNotFilledWarning)]
    assert len(not_filled) == 1
    assert "ENOSPC" in str(not_filled[0].message)
    assert cache in str(not_filled[0].message)
    assert not_filled[0].filename == __file__  # points at the code iterating
    again = BatchStats()
    assert _signatures(source, cache=cache, stats=again) == expected
    assert (again.cache_hits, again.cache_writes) == (0, 18)


def test_entries_whose_pack_cannot_be_flushed_are_not_counted_as_written(
    qu_ex_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FolderSource(qu_ex_folder, layout="covid-qu-ex", split="Test")
    cache = str(tmp_path / "cache")

    def no_space(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    stats = BatchStats()
    with pytest.warns(CacheNotFilledWarning, match="ENOSPC"):
        _signatures(source, cache=cache, stats=stats)
    assert (stats.cache_writes, stats.uncachable) == (0, 6)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, mounted for the test (needs root; skipped where it cannot be)."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    mount = shutil.which("mount")
    if mount is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run([shutil.which("umount") or "umount", str(mount_point)], check=False)


def test_a_real_full_disk_counts_only_what_the_cache_holds(
    qu_ex_folder: Path, small_tmpfs: Path
) -> None:
    from covidcxr.preprocess._packs import scan_pack

    source = FolderSource(qu_ex_folder, layout="covid-qu-ex")
    expected = _signatures(source)
    cache = small_tmpfs / "cache"
    PreprocessCache(cache, token="tags the folder")
    # Fill the file system to two pages short: room for a couple of entries, not 18.
    free = os.statvfs(small_tmpfs)
    (small_tmpfs / "filler").write_bytes(b"\0" * ((free.f_bavail - 2) * free.f_frsize))
    stats = BatchStats()
    with pytest.warns(CacheNotFilledWarning, match="ENOSPC") as caught:
        got = _signatures(source, cache=str(cache), stats=stats)
    assert got == expected
    assert len([w for w in caught if issubclass(w.category, CacheNotFilledWarning)]) == 1
    on_disk = sum(len(list(scan_pack(pack))) for pack in cache.rglob("*.cxrpack"))
    assert stats.cache_writes == on_disk
    assert stats.cache_writes + stats.uncachable == 18
