"""An on-disk cache of preprocessed radiographs, keyed by content and parameters.

An entry is addressed by a hash of (the preprocessor's cache token, the input's content
digest): a changed parameter, OpenCV version or input file gives a different address, so
stale entries are never returned, only left unused. Entries hold what preprocessing
derived from the content (pixels, boxes, masks, the geometric transform, and any other
new metadata that is plain JSON); ids, labels and provenance come from the input on every
pass, so one cached result serves every copy of a file.

On disk, a cache folder holds::

    CACHEDIR.TAG                 marks the folder as a cache for backup tools
    entries/<token hash>/*.cxrpack   entries of one preprocessor configuration
    digests/*.digests            content digests remembered under source fingerprints

Entries are records in append-only pack files (:mod:`covidcxr.preprocess._packs`): a small
JSON header followed by the raw array bytes, read with one system call. Every writing
process appends to a pack of its own, so worker processes and concurrent runs can share
a folder without locks; readers use a pack only once its writer has flushed it to disk
and sealed it (:meth:`PreprocessCache.close`, or the writing process's exit), so a crash
leaves an ignored pack, never a torn entry. Every entry carries a checksum, checked on
every read: an entry damaged later is a miss (:meth:`PreprocessCache.lookup` says so), is
recomputed and written again, and is never served. Float32 pixels that are exactly
``uint8 / 255`` (the usual output) are stored as the ``uint8`` values, a quarter of the
bytes, and restored bit for bit.

With a source that can fingerprint its items (a local folder), the content digest of an
unchanged file is remembered (:mod:`covidcxr.preprocess._digests`), so a warm pass reads
neither the images nor their masks, only the cache. Delete the folder to clear the cache.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import numpy as np
from attrs import frozen

from covidcxr.preprocess._digests import DigestMemo
from covidcxr.preprocess._geometry import ResizeTransform
from covidcxr.preprocess._packs import PackStore
from covidcxr.preprocess._pixels import PackedPixels, compact_pixels, expand_pixels
from covidcxr.records import Box

__all__ = ["CacheNotFilledWarning", "CachedOutput", "PreprocessCache"]

_TRANSFORM_TAG: Final = "__resize_transform__"
# Part of every entry address: bump when the entry format changes.
# cxrpack-2: records carry a checksum. Entries of cxrpack-1 are in other folders, unread.
# cxrpack-3: records list the input's metadata keys preprocessing removed, and hold only
# values that come back as they went in (cxrpack-2 entries may hold neither rightly).
_FORMAT: Final = "cxrpack-3"
_CACHEDIR_TAG: Final = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by covidcxr.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)


class CacheNotFilledWarning(UserWarning):
    """The preprocessing cache could not be written (a full or read-only disk).

    Results are still computed and correct; they are only not cached, so the next pass
    computes them again. The message names the cache folder and the reason (such as
    ``ENOSPC``); :attr:`BatchStats.uncachable <covidcxr.preprocess.BatchStats.uncachable>`
    counts the results that were not kept. Also issued, and nothing cached, for a
    preprocessor without ``cache_token()`` whose ``repr`` holds a memory address (the
    default ``<... object at 0x...>``): its key would change every run, so no run would
    ever read what another wrote.
    """


@frozen
class CachedOutput:
    """What a cache entry restores: the content-derived part of a preprocessed record.

    ``removed`` names the input's metadata keys that preprocessing removed: a record
    rebuilt from the input's metadata and this entry's leaves them out.
    """

    pixels: np.ndarray[Any, Any]
    boxes: tuple[Box, ...]
    meta: Mapping[str, Any]
    removed: tuple[str, ...] = ()


def _encode_value(value: Any) -> Any:
    if isinstance(value, ResizeTransform):
        return {
            _TRANSFORM_TAG: [
                value.scale_x,
                value.scale_y,
                value.offset_x,
                value.offset_y,
                list(value.input_shape),
                list(value.output_shape),
            ]
        }
    if not _survives_json(value):
        # A tuple would come back a list, an int key a str, a float subclass a float: a
        # hit would then differ from the computed result, so such a result is not cached.
        raise TypeError(f"{type(value).__name__} does not come back from JSON as it went in")
    return value


def _survives_json(value: Any) -> bool:
    """Whether ``value`` comes back from a JSON round trip equal, with the same types."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):  # not JSON, or a circular reference
        return False
    return _same_plain(json.loads(text), value)


def _same_plain(decoded: Any, value: Any) -> bool:
    if type(decoded) is not type(value):
        return False
    if type(value) is dict:
        return len(decoded) == len(value) and all(
            key in decoded and _same_plain(decoded[key], item) for key, item in value.items()
        )
    if type(value) is list:
        return len(decoded) == len(value) and all(
            _same_plain(back, item) for back, item in zip(decoded, value, strict=True)
        )
    return bool(decoded == value)  # NaN is not equal to itself: not cached, which is safe


def _cachable_array(array: np.ndarray[Any, Any]) -> bool:
    """Whether the cache gives ``array`` back as it is: its bytes and dtype say it all.

    Object arrays hold references, not values; structured dtypes lose their field names
    in ``dtype.str``; subclasses (masked arrays) would come back as plain arrays.
    """
    dtype = array.dtype
    return (
        type(array) is np.ndarray
        and not dtype.hasobject
        and dtype.fields is None
        and np.dtype(dtype.str) == dtype
    )


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {_TRANSFORM_TAG}:
        sx, sy, ox, oy, input_shape, output_shape = value[_TRANSFORM_TAG]
        return ResizeTransform(sx, sy, ox, oy, tuple(input_shape), tuple(output_shape))
    return value


class PreprocessCache:
    """A folder of preprocessed results for one preprocessor configuration.

    Parameters
    ----------
    directory
        The cache folder (created if missing; ``~`` is expanded). It may be shared by
        several configurations, runs and processes.
    token
        The preprocessor's cache token: a string that changes whenever its output could.

    Notes
    -----
    An instance sees the entries sealed when it first looked one up, including none of
    its own until :meth:`close`; create a new instance to see later ones. It pickles to
    its folder and token only (and which instance it is), and each process that
    unpickles it shares one copy per instance, so worker processes index the packs once
    per run, not once per task, and a new instance's copies see what earlier runs sealed.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> cache = PreprocessCache(tempfile.mkdtemp(), token="gaussian-clahe:v2")
    >>> cache.store("content-digest", np.zeros((4, 4), np.float32), (), {})
    True
    >>> cache.close()  # seals what was written: other instances read it from now on
    >>> PreprocessCache(cache.directory, "gaussian-clahe:v2").load("content-digest").pixels.shape
    (4, 4)
    >>> PreprocessCache(cache.directory, "other-parameters").load("content-digest") is None
    True
    """

    def __init__(self, directory: str | os.PathLike[str], token: str) -> None:
        self.directory = Path(directory).expanduser()
        self.directory.mkdir(parents=True, exist_ok=True)
        tag = self.directory / "CACHEDIR.TAG"
        if not tag.exists():
            with contextlib.suppress(OSError):  # a read-only cache still serves hits
                tag.write_text(_CACHEDIR_TAG, encoding="ascii")
        self.token = token
        self._token_hash = hashlib.blake2b(
            f"{_FORMAT}:{token}".encode(), digest_size=16
        ).hexdigest()
        self._packs = PackStore(self.directory / "entries" / self._token_hash)
        self._memo = DigestMemo(self.directory / "digests")
        # Which instance this is: the copies made by unpickling it share it, so that a
        # worker process kept between runs makes a fresh copy for each new instance.
        self._instance = os.urandom(8).hex()

    def __reduce__(self) -> tuple[Any, tuple[str, str, str]]:
        return _shared_cache, (str(self.directory), self.token, self._instance)

    def __repr__(self) -> str:
        return f"PreprocessCache({str(self.directory)!r})"

    def _key(self, content_digest: str) -> bytes:
        return hashlib.blake2b(
            f"{self._token_hash}:{content_digest}".encode(), digest_size=20
        ).digest()

    def load(self, content_digest: str) -> CachedOutput | None:
        """The cached output, or ``None`` when absent or damaged (a miss)."""
        return self.lookup(content_digest)[0]

    def lookup(self, content_digest: str) -> tuple[CachedOutput | None, bool]:
        """The cached output (or ``None``: a miss), and whether a damaged entry was found.

        A damaged entry (its checksum does not match, or its header is not one this
        version wrote) is never returned: the lookup is a miss, and the caller recomputes
        and stores the result again.
        """
        damaged_before = self._packs.damaged
        record = self._packs.get(self._key(content_digest))
        damaged = self._packs.damaged != damaged_before
        if record is None:
            return None, damaged
        try:
            return _parse(*record), damaged
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return None, True  # a damaged entry of any shape is a miss, not an error

    def store(
        self,
        content_digest: str,
        pixels: np.ndarray[Any, Any],
        boxes: tuple[Box, ...],
        meta: Mapping[str, Any],
        *,
        packed: PackedPixels | None = None,
        removed: Collection[str] = (),
    ) -> bool:
        """Write an entry.

        Parameters
        ----------
        content_digest
            The input's digest.
        pixels, boxes
            The preprocessed pixels and boxes.
        meta
            The metadata preprocessing added or changed: arrays and plain JSON values.
        packed
            ``compact_pixels(pixels)``, when the caller has it already.
        removed
            The input's metadata keys that preprocessing removed
            (:attr:`CachedOutput.removed`).

        Returns
        -------
        bool
            ``False`` (nothing written) if a metadata value is neither an array of plain
            values nor plain JSON that comes back as it went in (a tuple would come back
            a list), or a key is not a string: such results are recomputed on every pass
            rather than cached wrongly. ``False`` too if the entry could not be written
            (a full disk: the cache then stops writing for this run, and
            :attr:`write_error` says why). ``True`` when the entry was appended to the
            pack being written: it is in the cache once that pack is sealed
            (:attr:`sealed_path` exists), which a later failure prevents.
        """
        encoding, stored = packed if packed is not None else compact_pixels(np.asarray(pixels))
        if not _cachable_array(np.asarray(stored)):
            return False
        arrays: dict[str, np.ndarray[Any, Any]] = {"pixels": np.ascontiguousarray(stored)}
        plain: dict[str, Any] = {}
        removed = list(removed)
        if not all(type(key) is str for key in [*meta, *removed]):
            return False  # JSON would bring a key back as another type
        try:
            for key, value in meta.items():
                if isinstance(value, np.ndarray):
                    if not _cachable_array(value):
                        return False
                    arrays[f"meta:{key}"] = np.ascontiguousarray(value)
                else:
                    plain[key] = _encode_value(value)
        except TypeError:
            return False
        layout = []
        offset = 0
        for name, array in arrays.items():
            layout.append([name, array.dtype.str, list(array.shape), offset, array.nbytes])
            offset += array.nbytes
        header = json.dumps(
            {
                "arrays": layout,
                "boxes": [[box.x, box.y, box.width, box.height] for box in boxes],
                "meta": plain,
                "pixels": encoding,
                "removed": sorted(removed),
            }
        ).encode()
        body = [array.reshape(-1).view(np.uint8).data for array in arrays.values()]
        return self._packs.put(self._key(content_digest), header, body)

    @property
    def sealed_path(self) -> str | None:
        """The file that will hold the entries stored since the last seal, once sealed.

        ``None`` when none is being written. The entries :meth:`store` accepted are in
        the cache only once this file exists (see :meth:`close`).
        """
        return self._packs.sealed_path

    @property
    def write_error(self) -> OSError | None:
        """Why the cache stopped writing or could not seal its entries; ``None`` if it did not."""
        return self._packs.error

    def digest_for(self, fingerprint: str) -> str | None:
        """The content digest remembered for a source fingerprint, or ``None``."""
        return self._memo.get(fingerprint)

    def remember_digest(self, fingerprint: str, content_digest: str) -> None:
        """Remember a content digest under a source fingerprint (written by :meth:`close`)."""
        self._memo.add(fingerprint, content_digest)

    def close(self) -> None:
        """Seal the entries written, write the remembered digests, close the open files.

        The instance can still be used afterwards.
        """
        self._memo.flush()
        self._packs.close()


@functools.lru_cache(maxsize=8)
def _shared_cache(directory: str, token: str, instance: str) -> PreprocessCache:
    cache = PreprocessCache(directory, token)
    cache._instance = instance
    return cache


#: Parsed headers kept for reuse, at most this many (the memo is cleared when full).
_HEADER_MEMO_SIZE: Final = 256


def _copy_plain(value: Any) -> Any:
    """A deep copy of a plain JSON value (its dicts and lists are new; the rest immutable)."""
    if type(value) is dict:
        return {key: _copy_plain(item) for key, item in value.items()}
    if type(value) is list:
        return [_copy_plain(item) for item in value]
    return value


@frozen
class _Header:
    """A cache entry's parsed header: everything in an entry but its array bytes."""

    arrays: tuple[tuple[str, np.dtype[Any], tuple[int, ...], int, int], ...]
    boxes: tuple[Box, ...]
    meta: Mapping[str, Any]
    #: The keys of ``meta`` whose values are dicts or lists: every record gets its own copy.
    mutable: tuple[str, ...]
    encoding: str
    removed: tuple[str, ...]

    @classmethod
    def parse(cls, header_bytes: bytes) -> _Header:
        header = json.loads(header_bytes)
        meta = {key: _decode_value(value) for key, value in header["meta"].items()}
        return cls(
            arrays=tuple(
                (str(name), np.dtype(dtype), tuple(shape), int(offset), int(nbytes))
                for name, dtype, shape, offset, nbytes in header["arrays"]
            ),
            boxes=tuple(Box(*values) for values in header["boxes"]),
            meta=MappingProxyType(meta),
            mutable=tuple(key for key, value in meta.items() if type(value) in (dict, list)),
            encoding=str(header["pixels"]),
            removed=tuple(str(key) for key in header["removed"]),
        )

    def fresh_meta(self) -> dict[str, Any]:
        """The metadata, with copies of its dicts and lists: a record's own."""
        meta = dict(self.meta)
        for key in self.mutable:
            meta[key] = _copy_plain(meta[key])
        return meta


# Entries of one configuration and one input size have byte-identical headers (same
# layout, same transform, no boxes), so a warm pass parses one header, not one per image.
_headers: dict[bytes, _Header] = {}


def _header(header_bytes: bytes) -> _Header:
    header = _headers.get(header_bytes)
    if header is None:
        header = _Header.parse(header_bytes)
        if len(_headers) >= _HEADER_MEMO_SIZE:
            _headers.clear()
        _headers[header_bytes] = header
    return header


def _parse(header_bytes: bytes, body: memoryview) -> CachedOutput:
    header = _header(header_bytes)
    arrays_meta: dict[str, np.ndarray[Any, Any]] = {}
    pixels: np.ndarray[Any, Any] | None = None
    for name, dtype, shape, offset, nbytes in header.arrays:
        if offset + nbytes > len(body):
            raise ValueError("truncated cache entry")
        array = np.frombuffer(body[offset : offset + nbytes], dtype=dtype).reshape(shape)
        if name == "pixels":
            pixels = array
        elif name.startswith("meta:"):
            arrays_meta[name[5:]] = array
    if pixels is None:
        raise KeyError("cache entry without pixels")
    meta = header.fresh_meta()
    meta.update(arrays_meta)
    return CachedOutput(
        pixels=expand_pixels(header.encoding, pixels),
        boxes=header.boxes,
        meta=meta,
        removed=header.removed,
    )
