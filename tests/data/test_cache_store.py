"""Specification of the cache's storage: pack files, remembered digests, packed pixels."""

from __future__ import annotations

import gc
import os
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from covidcxr.preprocess import (
    UINT8_OVER_255,
    GaussianClahePreprocessor,
    PreprocessCache,
    compact_pixels,
    expand_pixels,
)
from covidcxr.preprocess._digests import MERGE_ABOVE, DigestMemo
from covidcxr.preprocess._packs import KEY_SIZE, STALE_OPEN_SECONDS, PackStore, scan_pack
from covidcxr.records import XRay


def _key(n: int) -> bytes:
    return n.to_bytes(KEY_SIZE, "big")


def test_records_round_trip_across_instances_and_writers(tmp_path: Path) -> None:
    first, second = PackStore(tmp_path), PackStore(tmp_path)
    assert first.put(_key(1), b"h1", [b"body-1"])
    assert second.put(_key(2), b"h2", [b"bo", memoryview(b"dy-2")])
    first.close()
    second.close()
    assert len(list(tmp_path.glob("*.cxrpack"))) == 2  # one pack per writer, no locks
    reader = PackStore(tmp_path)
    for n in (1, 2):
        record = reader.get(_key(n))
        assert record is not None
        header, body = record
        assert (header, bytes(body)) == (f"h{n}".encode(), f"body-{n}".encode())
    assert reader.get(_key(3)) is None


def test_readers_see_only_sealed_packs(tmp_path: Path) -> None:
    reader, writer = PackStore(tmp_path), PackStore(tmp_path)
    assert reader.get(_key(1)) is None
    writer.put(_key(1), b"h", [b"b"])
    assert [path.suffix for path in tmp_path.iterdir()] == [".open"]
    assert PackStore(tmp_path).get(_key(1)) is None  # still being written: not read
    writer.seal()
    assert [path.suffix for path in tmp_path.iterdir()] == [".cxrpack"]
    assert reader.get(_key(1)) is None  # indexed before the seal: a miss, never wrong
    assert PackStore(tmp_path).get(_key(1)) is not None


def test_a_pack_is_sealed_when_its_store_is_collected(tmp_path: Path) -> None:
    writer = PackStore(tmp_path)
    writer.put(_key(1), b"h", [b"b"])
    del writer
    gc.collect()
    assert PackStore(tmp_path).get(_key(1)) is not None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_a_forked_child_writes_and_seals_a_pack_of_its_own(tmp_path: Path) -> None:
    store = PackStore(tmp_path)
    store.put(_key(1), b"h", [b"parent"])
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            store.put(_key(2), b"h", [b"child"])
            store.seal()
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    sealed = PackStore(tmp_path)
    assert sealed.get(_key(1)) is None  # the parent's pack is still being written
    record = sealed.get(_key(2))
    assert record is not None
    assert bytes(record[1]) == b"child"
    assert len(list(tmp_path.glob("*.open"))) == 1  # the parent's, untouched by the child
    store.close()
    assert PackStore(tmp_path).get(_key(1)) is not None


def test_stale_unsealed_packs_are_removed_by_the_next_writer(tmp_path: Path) -> None:
    dead = tmp_path / "pack-dead.cxrpack.open"
    dead.write_bytes(b"a killed writer's records")
    recent = tmp_path / "pack-live.cxrpack.open"
    recent.write_bytes(b"a running writer's records")
    old = time.time() - STALE_OPEN_SECONDS - 60
    os.utime(dead, (old, old))
    PackStore(tmp_path).put(_key(1), b"h", [b"b"])
    assert not dead.exists()
    assert recent.exists()


def test_an_incomplete_last_record_is_ignored(tmp_path: Path) -> None:
    store = PackStore(tmp_path)
    store.put(_key(1), b"h", [b"complete"])
    store.put(_key(2), b"h", [b"cut short by a crash"])
    store.close()
    (pack,) = tmp_path.glob("*.cxrpack")
    pack.write_bytes(pack.read_bytes()[:-5])
    assert [key for key, *_ in scan_pack(pack)] == [_key(1)]
    reader = PackStore(tmp_path)
    assert reader.get(_key(1)) is not None
    assert reader.get(_key(2)) is None


def test_nothing_after_damage_is_trusted(tmp_path: Path) -> None:
    store = PackStore(tmp_path)
    for n in range(3):
        store.put(_key(n), b"h", [b"body"])
    store.close()
    (pack,) = tmp_path.glob("*.cxrpack")
    data = bytearray(pack.read_bytes())
    record_length = len(data) // 3
    data[record_length : record_length + 4] = b"XXXX"  # the second record's magic
    pack.write_bytes(bytes(data))
    assert [key for key, *_ in scan_pack(pack)] == [_key(0)]


def test_a_record_changed_after_indexing_is_a_miss(tmp_path: Path) -> None:
    store = PackStore(tmp_path)
    store.put(_key(1), b"h", [b"body"])
    store.seal()
    assert store.get(_key(1)) is not None
    (pack,) = tmp_path.glob("*.cxrpack")
    data = bytearray(pack.read_bytes())
    data[8] ^= 0xFF  # the body length, in the prefix
    pack.write_bytes(bytes(data))
    assert store.get(_key(1)) is None


def test_a_failed_write_stops_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PackStore(tmp_path)
    assert store.put(_key(1), b"h", [b"fine"])

    def full(descriptor: int, data: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    assert not store.put(_key(2), b"h", [b"lost"])
    assert isinstance(store.error, OSError)
    assert store.error.errno == 28  # why the store writes no more
    monkeypatch.undo()
    assert not store.put(_key(3), b"h", [b"not after a failure"])
    store.close()
    assert list(tmp_path.iterdir()) == []  # the damaged pack was dropped, not sealed
    assert PackStore(tmp_path).get(_key(1)) is None


def test_an_interrupted_write_drops_the_pack_and_propagates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PackStore(tmp_path)

    def interrupted(descriptor: int, data: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.put(_key(1), b"h", [b"body"])
    monkeypatch.undo()
    assert not store.put(_key(2), b"h", [b"body"])
    assert list(tmp_path.iterdir()) == []


def test_keys_must_be_twenty_bytes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="20 bytes"):
        PackStore(tmp_path).put(b"short", b"h", [])


def test_digest_memo_merges_many_files_into_one(tmp_path: Path) -> None:
    for n in range(MERGE_ABOVE):
        memo = DigestMemo(tmp_path)
        memo.add(f"file-{n}", f"{n:016x}")
        memo.flush()
    assert len(list(tmp_path.glob("*.digests"))) == MERGE_ABOVE
    memo = DigestMemo(tmp_path)
    memo.add("one more", "f" * 16)
    memo.flush()
    assert len(list(tmp_path.glob("*.digests"))) == 1
    merged = DigestMemo(tmp_path)
    assert [merged.get(f"file-{n}") for n in range(MERGE_ABOVE)] == [
        f"{n:016x}" for n in range(MERGE_ABOVE)
    ]
    assert merged.get("one more") == "f" * 16


def test_digest_memo_ignores_lines_it_did_not_write(tmp_path: Path) -> None:
    memo = DigestMemo(tmp_path)
    memo.add("a", "0" * 40)
    memo.flush()
    (tmp_path / "junk.digests").write_text("not a memo line\n\xff\nabc def\n", encoding="latin-1")
    assert DigestMemo(tmp_path).get("a") == "0" * 40


def test_digest_memo_is_silent_when_it_cannot_write(tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    memo = DigestMemo(blocked / "digests")
    memo.add("a", "0" * 40)
    memo.flush()  # an optimisation: a failure only costs hashing again
    assert memo.get("a") == "0" * 40


def test_cache_folder_is_tagged_and_pickles_to_one_instance_per_process(
    tmp_path: Path,
) -> None:
    cache = PreprocessCache(tmp_path / "cache", "token")
    assert (
        (tmp_path / "cache" / "CACHEDIR.TAG")
        .read_text()
        .startswith("Signature: 8a477f597d28d172789f06886806bc55")
    )
    first = pickle.loads(pickle.dumps(cache))  # noqa: S301 - our own object
    second = pickle.loads(pickle.dumps(cache))  # noqa: S301
    assert first is second
    assert first.directory == cache.directory
    assert first.token == cache.token
    assert "token" not in repr(cache)


def test_remembered_digests_are_written_on_close(tmp_path: Path) -> None:
    cache = PreprocessCache(tmp_path, "token")
    cache.remember_digest("fingerprint", "ab" * 20)
    assert PreprocessCache(tmp_path, "token").digest_for("fingerprint") is None
    cache.close()
    assert PreprocessCache(tmp_path, "token").digest_for("fingerprint") == "ab" * 20


@pytest.mark.parametrize(
    "values",
    [
        [np.nan, 0.0],
        [-1 / 255, 0.0],
        [-0.0, 1.0],
        [0.5 / 255, 1.0],
        [256 / 255, 0.0],
        [np.inf, 0.0],
    ],
)
def test_pixels_that_are_not_uint8_over_255_stay_raw(values: list[float]) -> None:
    pixels = np.array([values * 8] * 16, dtype=np.float32)
    encoding, stored = compact_pixels(pixels)
    assert encoding == "raw"
    assert stored is pixels


def test_every_uint8_value_packs_and_expands_bit_for_bit() -> None:
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    pixels = np.multiply(values, np.float32(1 / 255), dtype=np.float32)
    encoding, stored = compact_pixels(pixels)
    assert encoding == UINT8_OVER_255
    np.testing.assert_array_equal(stored, values)
    assert expand_pixels(encoding, stored).tobytes() == pixels.tobytes()


@pytest.mark.parametrize("output_dtype", ["float32", "uint8"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_packed_output_expands_to_the_called_output(
    make: Any, output_dtype: str, dtype: type[np.integer[Any]]
) -> None:
    pixels = make.gradient(80, 96).astype(dtype) * (257 if dtype is np.uint16 else 1)
    xray = XRay(pixels, id="a")
    preprocessor = GaussianClahePreprocessor(output_size=48, output_dtype=output_dtype)
    record, encoding = preprocessor.packed(xray)
    called = preprocessor(xray)
    assert expand_pixels(encoding, np.asarray(record.pixels)).tobytes() == called.pixels.tobytes()
    assert record.meta["preprocessing"] == called.meta["preprocessing"]
    assert record.boxes == called.boxes


def test_store_writes_nothing_for_values_that_are_not_plain_json(tmp_path: Path) -> None:
    cache = PreprocessCache(tmp_path, "token")
    assert not cache.store("d", np.zeros((4, 4), np.uint8), (), {"odd": object()})
    cache.close()
    assert not any((tmp_path / "entries").rglob("*.cxrpack"))
    assert (tmp_path / "CACHEDIR.TAG").exists()


def test_an_entry_header_of_the_wrong_shape_is_a_miss(tmp_path: Path) -> None:
    cache = PreprocessCache(tmp_path, "token")
    assert cache.store("d", np.zeros((4, 4), np.uint8), (), {})
    cache.close()
    (pack,) = tmp_path.rglob("*.cxrpack")
    data = pack.read_bytes()
    assert data.count(b'"meta": {}') == 1
    pack.write_bytes(data.replace(b'"meta": {}', b'"meta": []'))  # valid JSON, wrong type
    assert PreprocessCache(tmp_path, "token").load("d") is None


def test_entries_with_one_header_share_its_parse_but_never_a_mutable_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from covidcxr.preprocess import _cache

    transform = GaussianClahePreprocessor(output_size=8).transform_for((16, 16))
    meta = {"transform": transform, "preprocessing": {"tiles": [8, 8], "name": "x"}, "n": 3}
    cache = PreprocessCache(tmp_path, "token")
    for digest in ("a", "b", "c"):
        assert cache.store(digest, np.full((8, 8), 2 / 255, np.float32), (), meta)
    assert cache.store("d", np.zeros((8, 8), np.uint8), (), {**meta, "mask": np.ones((2, 2))})
    cache.close()
    parses: list[bytes] = []
    parse = _cache._Header.parse

    def counted(raw: bytes) -> _cache._Header:
        parses.append(raw)
        return parse(raw)

    monkeypatch.setattr(_cache._Header, "parse", counted)
    monkeypatch.setattr(_cache, "_headers", {})
    reader = PreprocessCache(tmp_path, "token")
    loaded = [reader.load(digest) for digest in ("a", "b", "c", "a")]
    assert len(parses) == 1  # one header, parsed once for four entries
    first, second = loaded[0], loaded[1]
    assert first is not None
    assert second is not None
    assert first.meta == second.meta == meta
    assert first.meta["transform"] == transform
    assert first.pixels.dtype == np.float32
    assert np.all(first.pixels == np.float32(2 / 255))
    # Each record owns its dicts and lists: changing one changes no other.
    assert first.meta["preprocessing"] is not second.meta["preprocessing"]
    first.meta["preprocessing"]["tiles"].append(1)
    assert second.meta["preprocessing"] == {"tiles": [8, 8], "name": "x"}
    assert reader.load("a").meta["preprocessing"]["tiles"] == [8, 8]  # type: ignore[union-attr]
    with_mask = reader.load("d")
    assert with_mask is not None
    assert len(parses) == 2
    assert np.array_equal(with_mask.meta["mask"], np.ones((2, 2)))
    assert with_mask.pixels.dtype == np.uint8  # a header of its own: stored raw


def _sealed_record(folder: Path) -> tuple[Path, int, int, int]:
    """The only pack in ``folder``, and its one record's offset, header and body lengths."""
    (pack,) = folder.glob("*.cxrpack")
    ((_, offset, header_length, body_length),) = scan_pack(pack)
    return pack, offset, header_length, body_length


def test_a_flipped_byte_anywhere_in_a_record_is_never_served(tmp_path: Path) -> None:
    store = PackStore(tmp_path)
    store.put(_key(1), b'{"header": 1}', [b"pixels " * 10])
    store.close()
    pack, offset, header_length, body_length = _sealed_record(tmp_path)
    sound = pack.read_bytes()
    body_start = len(sound) - body_length
    for position in range(offset, len(sound)):  # prefix, checksum, header and body
        damaged = bytearray(sound)
        damaged[position] ^= 0x01
        pack.write_bytes(bytes(damaged))
        reader = PackStore(tmp_path)
        assert reader.get(_key(1)) is None, position
        if position >= body_start - header_length - 4:  # the checksum, header or body
            assert reader.damaged == 1, position
    pack.write_bytes(sound)
    record = PackStore(tmp_path).get(_key(1))
    assert record is not None
    assert bytes(record[1]) == b"pixels " * 10


def test_a_damaged_record_is_counted_once_and_not_tried_again(tmp_path: Path) -> None:
    store = PackStore(tmp_path)
    store.put(_key(1), b"h", [b"body"])
    store.close()
    pack = next(tmp_path.glob("*.cxrpack"))
    data = bytearray(pack.read_bytes())
    data[-1] ^= 0xFF
    pack.write_bytes(bytes(data))
    reader = PackStore(tmp_path)
    assert reader.get(_key(1)) is None
    assert reader.get(_key(1)) is None
    assert reader.damaged == 1


def test_the_newest_copy_of_a_key_is_served_and_an_older_one_when_it_is_damaged(
    tmp_path: Path,
) -> None:
    older = PackStore(tmp_path)
    older.put(_key(1), b"h", [b"older"])
    older.close()
    newer = PackStore(tmp_path)
    newer.put(_key(1), b"h", [b"newer"])
    newer.close()
    old_pack, new_pack = sorted(tmp_path.glob("*.cxrpack"), key=lambda p: p.stat().st_mtime_ns)
    # Names are random: the newer pack must win by age, not by name.
    os.utime(old_pack, ns=(1, 1))
    record = PackStore(tmp_path).get(_key(1))
    assert record is not None
    assert bytes(record[1]) == b"newer"
    data = bytearray(new_pack.read_bytes())
    data[-1] ^= 0xFF
    new_pack.write_bytes(bytes(data))
    reader = PackStore(tmp_path)
    record = reader.get(_key(1))
    assert record is not None
    assert bytes(record[1]) == b"older"
    assert reader.damaged == 1


def test_packs_of_the_format_without_checksums_are_not_read(tmp_path: Path) -> None:
    import struct

    # A record as covidcxr wrote them before records had checksums.
    record = struct.pack("<4sIQ20s", b"CXPK", 1, 4, _key(1)) + b"h" + b"body"
    (tmp_path / "pack-old.cxrpack").write_bytes(record)
    assert list(scan_pack(tmp_path / "pack-old.cxrpack")) == []
    assert PackStore(tmp_path).get(_key(1)) is None


def test_a_flipped_pixel_byte_makes_the_cache_entry_a_miss(tmp_path: Path) -> None:
    cache = PreprocessCache(tmp_path, token="t")
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8)
    assert cache.store("digest", pixels, (), {})
    cache.close()
    (pack,) = tmp_path.rglob("*.cxrpack")
    data = bytearray(pack.read_bytes())
    data[-10] ^= 0x01  # one pixel
    pack.write_bytes(bytes(data))
    reader = PreprocessCache(tmp_path, token="t")
    assert reader.lookup("digest") == (None, True)
    assert reader.load("digest") is None


def test_a_sealing_failure_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PackStore(tmp_path)
    assert store.put(_key(1), b"h", [b"body"])
    sealed = store.sealed_path
    assert sealed is not None
    assert sealed.endswith(".cxrpack")

    def no_space(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    store.seal()
    assert isinstance(store.error, OSError)
    assert store.error.errno == 28
    assert not Path(sealed).exists()
    assert store.sealed_path is None


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="file modes are POSIX")
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_cache_files_get_the_mode_of_any_new_file_not_mkstemps_0600(
    tmp_path: Path, umask: int
) -> None:
    # A cache folder shared by a group (umask 002) must be readable by the group, or
    # every other user misses on every entry; a private umask stays private.
    previous = os.umask(umask)
    try:
        store = PackStore(tmp_path)
        store.put(_key(1), b"h", [b"b"])
        store.close()
        memo = DigestMemo(tmp_path)
        memo.add("a", "0" * 40)
        memo.flush()
    finally:
        os.umask(previous)
    written = [*tmp_path.glob("*.cxrpack"), *tmp_path.glob("*.digests")]
    assert len(written) == 2
    assert {path.stat().st_mode & 0o777 for path in written} == {0o666 & ~umask}
