"""Preprocess a whole source on several processes, in order, in bounded memory, with a cache.

:func:`preprocess_batch` ships items, in chunks, to a pool of worker processes that decode
and preprocess them. A local folder (:class:`~covidcxr.sources.FolderSource`) is read by
the workers themselves: they receive only the catalogue entries, so reading, decoding and
preprocessing all run in parallel and the file bytes never pass through the main process.
Other catalogued sources (zip archives, COS) are read in the main process and the workers
receive the still-encoded bytes. At most a few chunks are in flight at a time, so memory
does not grow with the dataset, and results are yielded in input order.

Workers send their results back as ``uint8`` when the float32 output is exactly
``uint8 / 255`` (:mod:`covidcxr.preprocess._pixels`), a quarter of the bytes; the main
process restores the float32 pixels bit for bit. A preprocessor may offer a
``packed(xray) -> (record, encoding)`` method, as
:meth:`~covidcxr.preprocess.GaussianClahePreprocessor.packed` does, so that workers never
make the float32 array at all.

Workers are started with ``forkserver`` (or ``spawn`` where that is unavailable), never
``fork``: a forked child inherits OpenCV's thread pool in whatever state the parent left
it, and can deadlock in its first parallel call. Each worker runs OpenCV single-threaded,
so ``workers`` processes use ``workers`` cores. The workers outlive the run: the next run
in the process reuses them, and they exit after a while unused
(:mod:`covidcxr.preprocess._workers`, :func:`~covidcxr.preprocess.release_workers`).

With ``cache_dir``, each result is stored under a hash of the input's *content* (the file
bytes, or the pixels, boxes and masks of an :class:`~covidcxr.XRay`) and the
preprocessor's parameters (see :mod:`covidcxr.preprocess._cache`), and a second pass reads
it back instead of decoding and preprocessing again. For a source that can fingerprint
its files (a local folder: see :meth:`~covidcxr.sources.CatalogSource.fingerprint`), the
content digest of each unchanged file is remembered, so the second pass opens neither
images nor masks: it reads the cache and nothing else.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import multiprocessing
import os
import pickle
import re
import traceback
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Final, Literal

import cv2
import numpy as np
from attrs import define, field

from covidcxr._contracts import checked_preprocessed, checked_source_item, who
from covidcxr.errors import ComponentOutputError, ConfigurationError, InvalidImageError
from covidcxr.preprocess._cache import CachedOutput, CacheNotFilledWarning, PreprocessCache
from covidcxr.preprocess._pixels import PackedPixels, compact_pixels, expand_pixels
from covidcxr.preprocess._workers import WorkerPool, borrow_pool
from covidcxr.protocols import Preprocessor
from covidcxr.records import Box, XRay
from covidcxr.sources._base import CatalogSource
from covidcxr.sources._items import (
    DECODE_REVISION,
    INFECTION_MASK,
    Entry,
    RawItem,
    decode_item,
    entry_meta,
)

__all__ = ["BatchStats", "preprocess_batch", "xray_digest"]

# Chunks in flight per worker: one being processed, one queued so the worker never idles.
_CHUNKS_PER_WORKER: Final = 2
# Items per task when the caller does not say and the input's length is unknown, and the
# most chosen automatically. A worker needs about a millisecond per 256 px radiograph, so
# a task of 128 takes some 140 ms: long enough that handing it over, and waking the main
# process to collect it, costs little (measured: 16 per task ran ~15 % slower than 64,
# and 64 ~3 % slower than 128, on 2 cores).
_DEFAULT_CHUNK: Final = 32
_MAX_AUTO_CHUNK: Final = 128
# Automatic chunks shrink towards the end of a run (to half of each worker's share of what
# is left, "guided" scheduling), so the workers finish together instead of one waiting for
# the other's last large chunk; never below this.
_MIN_AUTO_CHUNK: Final = 8

_Kind = Literal["entry", "raw", "xray", "cached"]
# (id, label, patient_id, pixels, boxes, meta) of an XRay, as plain picklable data.
_XRayPayload = tuple[
    str, str | None, str | None, np.ndarray[Any, Any], tuple[tuple[float, ...], ...], dict[str, Any]
]
# ("ok", (id, label, patient_id, (pixel encoding, pixels), boxes, meta), _Stored | None,
#  content digest, served from the cache?, a damaged entry found?), ("cached", XRay, found
#  from a remembered digest?), ("invalid", message, source) or ("error", the exception the
#  item raised)
_Result = tuple[Any, ...]
# How storing a result went: ("pack", the pack's sealed name: written once that exists),
# ("uncachable", None: metadata the cache would not give back as it is) or ("failed",
# why: a full disk).
_Stored = tuple[Literal["pack", "uncachable", "failed"], str | None]


@define
class BatchStats:
    """Counters filled in by :func:`preprocess_batch` when passed as ``stats``."""

    #: Radiographs yielded.
    items: int = 0
    #: Of those, served from the cache.
    cache_hits: int = 0
    #: Of the hits, found from a remembered digest without reading the input's files.
    memo_hits: int = 0
    #: Results written to the cache: in packs flushed to disk and sealed when the run
    #: ended (counted then), so readers will find them.
    cache_writes: int = 0
    #: Results that could not be cached (metadata that would not come back from the cache
    #: as it went in, a full disk, a preprocessor whose cache key would change every run),
    #: including those accepted by a pack that could not then be written to the end.
    uncachable: int = 0
    #: Cache entries found damaged (their checksum did not match): not served, computed
    #: again (and stored again).
    cache_damaged: int = 0
    #: Unreadable items left out (``on_error="skip"``).
    skipped: int = 0


def xray_digest(xray: XRay) -> str:
    """A hash of what preprocessing an :class:`~covidcxr.XRay` depends on.

    It covers the pixels (with dtype and shape), the boxes, and every ``*_mask`` array in
    ``meta``; not the id, label or other metadata.

    Examples
    --------
    >>> import numpy as np
    >>> a = XRay(np.zeros((40, 40), np.uint8), id="a")
    >>> b = XRay(np.zeros((40, 40), np.uint8), id="b", label="normal")
    >>> xray_digest(a) == xray_digest(b)
    True
    """
    hasher = hashlib.blake2b(digest_size=20)

    def add_array(array: np.ndarray[Any, Any]) -> None:
        contiguous = np.ascontiguousarray(array)
        hasher.update(f"{contiguous.dtype.str}{contiguous.shape}".encode())
        hasher.update(contiguous.tobytes())

    add_array(xray.pixels)
    hasher.update(repr([(b.x, b.y, b.width, b.height) for b in xray.boxes]).encode())
    for key in sorted(xray.meta):
        value = xray.meta[key]
        if key.endswith("_mask") and isinstance(value, np.ndarray):
            hasher.update(key.encode())
            add_array(value)
    return hasher.hexdigest()


def _worker_init() -> None:
    cv2.setNumThreads(1)


def _same(value: Any, original: Any) -> bool:
    if value is original:
        return True
    if isinstance(value, np.ndarray) or isinstance(original, np.ndarray):
        return False
    try:
        return bool(value == original)
    except Exception:  # noqa: BLE001 - exotic __eq__; treat as changed, which is safe
        return False


def _process_one(
    preprocessor: Preprocessor,
    kind: _Kind,
    task: Any,
    digest: str | None,
    *,
    reader: Callable[[Entry], RawItem] | None,
    decode_options: Mapping[str, int],
    cache: PreprocessCache | None,
    compact: bool,
) -> _Result:
    damaged = False  # a damaged cache entry was found (and not served)
    if kind == "entry":
        assert reader is not None  # noqa: S101 - entries are only sent with a reader
        try:
            task = reader(task)
        except InvalidImageError as exc:
            return ("invalid", str(exc), exc.source)
        kind = "raw"
        if cache is not None:
            digest = task.digest()
            cached, damaged = cache.lookup(digest)
            if cached is not None:
                return _cached_result(task, cached, digest, damaged)
    if kind == "raw":
        raw: RawItem = task
        input_meta: Mapping[str, Any] = raw.meta
        try:
            xray = decode_item(raw, **decode_options)
        except InvalidImageError as exc:
            return ("invalid", str(exc), exc.source)
    else:
        id_, label, patient_id, pixels, boxes, meta = task
        input_meta = meta
        xray = XRay(
            pixels,
            id=id_,
            label=label,
            patient_id=patient_id,
            boxes=[Box(*b) for b in boxes],
            meta=meta,
        )
    pack = compact or cache is not None
    packed: PackedPixels
    packer = _packer(preprocessor) if pack else None
    if packer is not None:
        # The preprocessor hands over its float32 output as the uint8 values it scales,
        # so no float32 array is made here only to be packed again.
        out, encoding = packer(xray)
        packed = (encoding, np.asarray(out.pixels))
    else:
        out = checked_preprocessed(preprocessor(xray), xray, preprocessor)
        packed = compact_pixels(np.asarray(out.pixels)) if pack else ("raw", np.asarray(out.pixels))
    out_meta = dict(out.meta)
    # Workers write their own cache entries, so writing runs in parallel like the rest.
    stored: _Stored | None = None
    if cache is not None and digest is not None:
        # Only what preprocessing added or changed is cached; the rest comes from the
        # input on every pass.
        derived_meta = {
            key: value
            for key, value in out_meta.items()
            if key not in input_meta or not _same(value, input_meta[key])
        }
        # ... so what it removed must be recorded, or a hit would bring it back. Against
        # the record the preprocessor was given: a decoded item's too (its format, tags
        # and "annotated" are added back on a hit otherwise).
        removed = [key for key in xray.meta if key not in out_meta]
        stored = _store(cache, digest, packed, out.boxes, derived_meta, removed=removed)
    boxes_out = tuple((b.x, b.y, b.width, b.height) for b in out.boxes)
    if not compact and packed[0] != "raw":
        packed = ("raw", expand_pixels(*packed))  # in this process: nothing to send
    record = (out.id, out.label, out.patient_id, packed, boxes_out, out_meta)
    return ("ok", record, stored, digest, False, damaged)


def _store(
    cache: PreprocessCache,
    digest: str,
    packed: PackedPixels,
    boxes: tuple[Box, ...],
    meta: Mapping[str, Any],
    *,
    removed: list[str],
) -> _Stored:
    if cache.store(digest, packed[1], boxes, meta, packed=packed, removed=removed):
        return ("pack", cache.sealed_path)
    if cache.write_error is not None:
        return ("failed", _reason(cache.write_error))
    return ("uncachable", None)


def _reason(error: OSError) -> str:
    """An OS error in words, with its symbolic name: ``ENOSPC (No space left on device)``."""
    name = errno.errorcode.get(error.errno or 0)
    text = error.strerror or str(error)
    return f"{name} ({text})" if name else text


def _packer(preprocessor: Preprocessor) -> Callable[[XRay], tuple[XRay, str]] | None:
    """The preprocessor's ``packed`` method, if it has one that matches its ``__call__``.

    A subclass that overrides ``__call__`` but inherits ``packed`` would have its override
    skipped: ``packed`` is used only when it is defined by the same class as ``__call__``,
    or by a subclass of it.
    """
    mro = type(preprocessor).__mro__
    owner = {
        name: next((index for index, cls in enumerate(mro) if name in vars(cls)), None)
        for name in ("packed", "__call__")
    }
    if owner["packed"] is None or owner["__call__"] is None:
        return None
    if owner["packed"] > owner["__call__"]:
        return None
    packed: Callable[[XRay], tuple[XRay, str]] = preprocessor.packed  # type: ignore[attr-defined]
    return packed


def _cached_result(raw: RawItem, cached: CachedOutput, digest: str, damaged: bool) -> _Result:
    xray = _cached_record(raw.id, raw.label, raw.patient_id, raw.meta, cached, decoded=True)
    boxes = tuple((b.x, b.y, b.width, b.height) for b in xray.boxes)
    packed = compact_pixels(np.asarray(xray.pixels))
    record = (xray.id, xray.label, xray.patient_id, packed, boxes, dict(xray.meta))
    return ("ok", record, None, digest, True, damaged)


def _process_chunk(
    preprocessor: Preprocessor,
    kind: _Kind,
    tasks: list[tuple[Any, str | None]],
    *,
    reader: Callable[[Entry], RawItem] | None,
    decode_options: Mapping[str, int],
    cache: PreprocessCache | None,
    compact: bool,
) -> list[_Result]:
    results: list[_Result] = []
    for task, digest in tasks:
        try:
            results.append(
                _process_one(
                    preprocessor,
                    kind,
                    task,
                    digest,
                    reader=reader,
                    decode_options=decode_options,
                    cache=cache,
                    compact=compact,
                )
            )
        except Exception as exc:  # noqa: BLE001 - re-raised in order by the main process
            # One item's failure must not take the items before it down with it: the
            # error is raised when the runner reaches this item's place in the input.
            error: Exception = exc
            if compact:  # it crosses to the main process, which loses the traceback
                formatted = traceback.format_exc()
                exc.add_note(f"Raised in a worker process:\n{formatted}")
                error = _sendable(exc, preprocessor, _task_id(kind, task), formatted)
            results.append(("error", error))
    if compact and cache is not None:
        # In a worker, which outlives the run: seal what this task wrote, so that it is in
        # the cache (and counted) when the main process receives the results.
        cache.close()
    return results


def _task_id(kind: _Kind, task: Any) -> str:
    """The id of the item a worker task is about (an entry's name before it is read)."""
    if kind == "entry":
        return str(task.name)
    if kind == "raw":
        return str(task.id)
    return str(task[0])


def _sendable(
    exc: Exception, preprocessor: Preprocessor, identifier: str, formatted: str
) -> Exception:
    """``exc``, or an error that says what it was if it cannot reach the main process.

    The results travel pickled, and an exception that pickles but does not unpickle (a
    class whose ``__init__`` takes other arguments than it gives ``Exception``) fails in
    the pool's result thread, which then breaks the whole pool (``BrokenProcessPool``,
    naming neither the item nor the error). So the round trip is tried here, in the
    worker, where the failure can still be reported.
    """
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes, made just above
    except Exception as why:  # noqa: BLE001 - any failure means it cannot be sent
        error = ComponentOutputError(
            f"{who(preprocessor)} failed on {identifier!r} with {exc!r}, an exception a "
            f"worker process cannot send back ({type(why).__name__}: {why}). Its class, "
            f"{type(exc).__module__}.{type(exc).__qualname__}, must survive pickling (an "
            "__init__ that takes other arguments than it passes to Exception.__init__ "
            "needs a __reduce__); workers=0 raises it as it is"
        )
        error.add_note(f"Raised in a worker process:\n{formatted}")
        return error
    return exc


@define
class _Input:
    """One item on its way through the runner."""

    position: int
    kind: _Kind
    task: Any  # Entry, RawItem, _XRayPayload or (for "cached") the record's XRay
    digest: str | None = None
    fingerprint: str | None = None
    entry: Entry | None = None
    #: A damaged cache entry was found for it (and not served).
    damaged: bool = False


@define
class _Slot:
    """A chunk, in input order: some results known at once, the rest from one task.

    ``prefilled`` holds the known ones by position (cache hits, unreadable items).
    """

    inputs: list[_Input]
    prefilled: dict[int, _Result]
    future: Future[list[_Result]] | None = None
    computed: list[_Result] | None = None
    results: list[_Result] | None = field(default=None)

    def ready(self) -> bool:
        return self.future is None or self.future.done()

    def collect(self) -> list[_Result]:
        if self.results is None:
            if self.computed is None:
                self.computed = self.future.result() if self.future is not None else []
            computed = iter(self.computed)
            self.results = [
                self.prefilled[position] if position in self.prefilled else next(computed)
                for position in range(len(self.inputs))
            ]
            assert next(computed, None) is None  # noqa: S101 - one result per task
        return self.results


def _payload(xray: XRay) -> _XRayPayload:
    boxes = tuple((b.x, b.y, b.width, b.height) for b in xray.boxes)
    return (xray.id, xray.label, xray.patient_id, np.asarray(xray.pixels), boxes, dict(xray.meta))


def _cached_record(
    identifier: str,
    label: str | None,
    patient_id: str | None,
    meta: Mapping[str, Any],
    cached: CachedOutput,
    *,
    decoded: bool,
) -> XRay:
    """The record a cache entry restores.

    Identity and metadata come from the input; what preprocessing derived (pixels, boxes,
    masks, transform) comes from the entry, and the keys it removed are left out.
    ``decoded``: the input is a source's item, which :func:`decode_item` would have
    turned into the record the preprocessor was given; an :class:`~covidcxr.XRay` was
    given as it is, and gets nothing decode_item adds.
    """
    merged = {**meta, **cached.meta}
    if decoded:
        # What decode_item derives from the file, which a hit does not decode: the
        # patient from the DICOM tags (cached with the entry's metadata), and, for
        # entries cached before decode_item recorded "annotated", that word, decided as
        # decode_item does (the entry keeps the resized infection mask when there was one).
        patient_id = patient_id or merged.get("dicom_patient_id")
        merged.setdefault("annotated", INFECTION_MASK in merged)
    for key in cached.removed:
        merged.pop(key, None)
    return XRay(
        cached.pixels,
        id=identifier,
        label=label,
        patient_id=patient_id,
        boxes=cached.boxes,
        meta=merged,
    )


def _from_cache(source: CatalogSource, entry: Entry, cached: CachedOutput) -> XRay:
    identifier = source.record_id(entry)
    meta = entry_meta(entry, identifier)
    return _cached_record(identifier, entry.label, entry.patient_id, meta, cached, decoded=True)


def _source_inputs(
    source: CatalogSource, cache: PreprocessCache | None, read_in_workers: bool
) -> Iterator[_Input | tuple[_Input, InvalidImageError]]:
    for position, entry in enumerate(source.pending_entries()):
        fingerprint = source.fingerprint(entry) if cache is not None else None
        damaged = False
        if cache is not None and fingerprint is not None:
            # An unchanged file whose digest is remembered: the cache alone answers.
            digest = cache.digest_for(fingerprint)
            cached, damaged = cache.lookup(digest) if digest is not None else (None, False)
            if cached is not None:
                xray = _from_cache(source, entry, cached)
                yield _Input(position, "cached", xray, entry=entry, damaged=damaged)
                continue
        if read_in_workers:
            yield _Input(
                position, "entry", entry, fingerprint=fingerprint, entry=entry, damaged=damaged
            )
            continue
        try:
            raw = source.read_item(entry)
        except InvalidImageError as exc:
            yield _Input(position, "raw", None, entry=entry), exc
            continue
        digest = raw.digest() if cache is not None else None
        yield _Input(position, "raw", raw, digest, fingerprint, entry, damaged)


def _inputs(
    items: Iterable[XRay] | CatalogSource,
    cache: PreprocessCache | None,
    read_in_workers: bool,
) -> Iterator[_Input | tuple[_Input, InvalidImageError]]:
    if isinstance(items, CatalogSource):
        yield from _source_inputs(items, cache, read_in_workers)
        return
    for position, item in enumerate(items):
        xray = checked_source_item(item, position, items)
        digest = xray_digest(xray) if cache is not None else None
        yield _Input(position, "xray", _payload(xray), digest)


def _start_method(requested: str | None) -> str:
    available = multiprocessing.get_all_start_methods()
    if requested is None:
        return "forkserver" if "forkserver" in available else "spawn"
    if requested == "fork":
        raise ConfigurationError(
            "start_method='fork' is refused: forked workers can deadlock in OpenCV; "
            "use 'forkserver' or 'spawn'"
        )
    if requested not in available:
        raise ConfigurationError(f"start_method {requested!r} is not available here ({available})")
    return requested


def preprocess_batch(
    xrays_or_source: Iterable[XRay] | CatalogSource,
    preprocessor: Preprocessor,
    *,
    workers: int = 2,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    chunk_size: int | None = None,
    start_method: str | None = None,
    stats: BatchStats | None = None,
) -> Iterator[XRay]:
    """Preprocess every radiograph of a source or iterable, in parallel, in order.

    Parameters
    ----------
    xrays_or_source
        A catalogued source (folder, zip, COS: decoding then runs in the workers too) or
        any iterable of :class:`~covidcxr.XRay` (read lazily).
    preprocessor
        Any :class:`~covidcxr.Preprocessor`; it must be picklable to reach the workers.
    workers
        Worker processes; ``0`` runs everything in this process (no pool).
    cache_dir
        A folder for the on-disk cache; ``None`` disables it. The preprocessor's
        ``cache_token()`` (if it has one) keys it, otherwise its ``repr``.
    progress
        Show a tqdm progress bar on stderr.
    chunk_size
        Items per task sent to a worker: large enough to amortise inter-process overhead,
        small enough to keep memory low and the workers evenly loaded. ``None`` (the
        default) starts at 128 and shrinks towards the end of the input, so the workers
        finish together (32 throughout when the input's length is unknown).
    start_method
        ``"forkserver"`` (default where available) or ``"spawn"``; ``"fork"`` is refused.
    stats
        A :class:`BatchStats` to fill in (items, cache hits and writes, skips).

    Yields
    ------
    XRay
        The preprocessed radiographs, in input order. Items a source with
        ``on_error="skip"`` cannot decode are left out and recorded on the source.

    Raises
    ------
    InvalidImageError
        For an unreadable item, when the source says ``on_error="raise"`` (or the input is
        a plain iterable).
    ConfigurationError
        For ``workers < 0``, ``chunk_size < 1`` or a refused start method.

    Examples
    --------
    >>> import numpy as np
    >>> from covidcxr import XRay
    >>> from covidcxr.preprocess import GaussianClahePreprocessor
    >>> xrays = [XRay(np.full((64, 64), i, np.uint8), id=str(i)) for i in range(3)]
    >>> out = preprocess_batch(xrays, GaussianClahePreprocessor(output_size=32), workers=0,
    ...                        progress=False)
    >>> [(x.id, x.pixels.shape) for x in out]
    [('0', (32, 32)), ('1', (32, 32)), ('2', (32, 32))]
    """
    if workers < 0:
        raise ConfigurationError(f"workers must be >= 0, got {workers}")
    if chunk_size is not None and chunk_size < 1:
        raise ConfigurationError(f"chunk_size must be >= 1, got {chunk_size}")
    method = _start_method(start_method) if workers > 0 else None
    runner = _Runner(
        preprocessor,
        workers=workers,
        cache_dir=cache_dir,
        chunk_size=chunk_size,
        method=method,
        stats=stats if stats is not None else BatchStats(),
    )
    return runner.run(xrays_or_source, progress)


# A repr that holds a memory address ("<mod.Class object at 0x7f...>", or a parameter
# shown as "<function f at 0x...>") changes every run.
_ADDRESS: Final = re.compile(r" at 0x[0-9a-fA-F]+")


def _unkeyable(preprocessor: Preprocessor) -> str | None:
    """Why ``preprocessor`` cannot key a cache (``None``: it can).

    Without ``cache_token()`` its ``repr`` keys the cache. The default ``repr`` holds the
    object's memory address: every run would write under a new key and no run would read
    another's entries, so the cache would only grow.
    """
    if callable(getattr(preprocessor, "cache_token", None)):
        return None
    shown = repr(preprocessor)
    if _ADDRESS.search(shown) is None:
        return None
    return (
        f"{who(preprocessor)} has no cache_token() and its repr, {shown}, holds a memory "
        "address, which changes from run to run, so no later run would find what this one "
        "wrote. Give it a cache_token() method that returns a string which changes "
        "whenever its output could (or a repr made of its parameters)"
    )


def _cache_token(
    preprocessor: Preprocessor, decode_options: Mapping[str, int] | None = None
) -> str:
    # The class is always part of it: a subclass that changes what __call__ does but
    # inherits cache_token() must not be served its parent's results.
    cls = type(preprocessor)
    token = getattr(preprocessor, "cache_token", None)
    own = str(token()) if callable(token) else repr(preprocessor)
    key = f"{cls.__module__}.{cls.__qualname__}:{own}"
    if decode_options:
        # How a source's files are decoded (the size limits, the smallest lesion that gets
        # a box) changes the result as much as the preprocessor's own parameters do.
        # So does the decoder itself: files cached by a covidcxr that decoded them
        # differently (DECODE_REVISION) are misses, not stale pixels.
        key += "|decode:" + json.dumps(dict(decode_options), sort_keys=True)
        key += f"|decoder:{DECODE_REVISION}"
    return key


class _Runner:
    """The state of one :func:`preprocess_batch` run: pool, cache, ordered slots."""

    def __init__(
        self,
        preprocessor: Preprocessor,
        *,
        workers: int,
        cache_dir: str | os.PathLike[str] | None,
        chunk_size: int | None,
        method: str | None,
        stats: BatchStats,
    ) -> None:
        self.preprocessor = preprocessor
        self.workers = workers
        self.cache_dir = cache_dir
        self.cache: PreprocessCache | None = None
        self.requested_chunk_size = chunk_size
        self.chunk_size = chunk_size or _DEFAULT_CHUNK
        self.total: int | None = None
        self.seen = 0
        self.method = method
        self.stats = stats
        self.max_in_flight = max(1, workers) * _CHUNKS_PER_WORKER
        self.slots: deque[_Slot] = deque()
        self.chunk: list[_Input] = []
        self.prefilled: dict[int, _Result] = {}
        self.chunk_kind: _Kind | None = None
        self.decode_options: dict[str, int] = {}
        self.reader: Callable[[Entry], RawItem] | None = None
        self.pool: WorkerPool | None = None
        # Results each pack accepted: they are in the cache once it is sealed.
        self.pending_writes: Counter[str] = Counter()
        self.warned_not_filled = False
        # A cache_dir was given but the preprocessor cannot key it: nothing is cached.
        self.uncachable = False

    def run(self, items: Iterable[XRay] | CatalogSource, progress: bool) -> Iterator[XRay]:
        from tqdm.auto import tqdm  # noqa: PLC0415 - only needed once a run starts

        source = items if isinstance(items, CatalogSource) else None
        if source is not None:
            self.decode_options = source.decode_options
            # Where the source can be read from another process, the workers read the
            # files themselves: the bytes never pass through this process.
            self.reader = source.item_reader()
        unkeyable = _unkeyable(self.preprocessor) if self.cache_dir is not None else None
        if unkeyable is not None:
            self.uncachable = True
            # Called by the first next() of whoever iterates over the run.
            self._warn_not_filled(unkeyable, stacklevel=3, advice="")
        elif self.cache_dir is not None:
            # How files are decoded (the size limits, the smallest lesion that gets a box)
            # changes the result as much as the preprocessor's own parameters do.
            token = _cache_token(self.preprocessor, self.decode_options)
            self.cache = PreprocessCache(self.cache_dir, token)
        total = self.total = len(items) if isinstance(items, Sized) else None
        if self.workers > 0 and self.method is not None:
            # Kept between runs (see covidcxr.preprocess._workers): starting workers costs
            # about a second each time.
            self.pool = borrow_pool(self.workers, self.method, _worker_init)
        skipped_before = len(source.skipped) if source is not None else 0
        bar = tqdm(total=total, desc="preprocess", unit="img", disable=not progress)
        broken = False
        try:
            for produced in _inputs(items, self.cache, self.reader is not None):
                self._add(produced)
                while self.slots and self._must_drain():
                    yield from self._finish(self.slots.popleft(), source, bar)
            self._submit()
            while self.slots:
                yield from self._finish(self.slots.popleft(), source, bar)
        except BrokenProcessPool:
            broken = True  # a worker died: the pool is not reused
            raise
        finally:
            bar.close()
            if self.pool is not None:
                futures = [slot.future for slot in self.slots if slot.future is not None]
                self.pool.give_back(futures, broken=broken)
            if self.cache is not None:
                self.cache.close()
                self._count_sealed_writes()
            if source is not None:
                source.warn_skipped(len(source.skipped) - skipped_before)

    def _add(self, produced: _Input | tuple[_Input, InvalidImageError]) -> None:
        self.seen += 1
        # Results known here (an unreadable item, a cache hit) take their place in the
        # chunk being filled, so that hits among misses do not cut the tasks short.
        if isinstance(produced, tuple):
            item, error = produced
            self._keep(item, ("invalid", str(error), error.source))
        elif produced.kind == "cached":
            self._keep(produced, ("cached", produced.task, True))
        elif (cached := self._main_process_hit(produced)) is not None:
            self._keep(produced, ("cached", cached, False))
        else:
            if self.chunk_kind not in (None, produced.kind):
                self._submit()
            self.chunk_kind = produced.kind
            self.chunk.append(produced)
        if len(self.chunk) >= self._chunk_target():
            self._submit()

    def _keep(self, item: _Input, result: _Result) -> None:
        if self.chunk_kind is None:
            # Nothing in the chunk being filled waits for a worker: pass it on at once (a
            # warm pass then yields each hit as it is read, and reuses its memory).
            self.slots.append(_Slot([item], {0: result}))
            return
        self.prefilled[len(self.chunk)] = result
        self.chunk.append(item)

    def _main_process_hit(self, item: _Input) -> XRay | None:
        if self.cache is None or item.digest is None:
            return None
        cached, damaged = self.cache.lookup(item.digest)
        item.damaged |= damaged
        if cached is None:
            return None
        self._remember(item, item.digest)
        if item.kind == "raw":
            raw: RawItem = item.task
            return _cached_record(raw.id, raw.label, raw.patient_id, raw.meta, cached, decoded=True)
        identifier, label, patient_id, _, _, meta = item.task
        return _cached_record(identifier, label, patient_id, meta, cached, decoded=False)

    def _chunk_target(self) -> int:
        """How many items the chunk being filled should hold."""
        if self.requested_chunk_size is not None or self.total is None or self.workers == 0:
            return self.chunk_size
        # Large chunks amortise the cost of each task; shrinking them as the input runs
        # out keeps the workers evenly loaded to the end.
        remaining = max(0, self.total - self.seen)
        return max(_MIN_AUTO_CHUNK, min(_MAX_AUTO_CHUNK, remaining // (2 * self.workers)))

    def _remember(self, item: _Input, digest: str | None) -> None:
        if self.cache is not None and item.fingerprint is not None and digest is not None:
            self.cache.remember_digest(item.fingerprint, digest)

    def _must_drain(self) -> bool:
        in_flight = sum(
            1 for slot in self.slots if slot.future is not None and slot.results is None
        )
        return (
            self.slots[0].ready()
            or in_flight >= self.max_in_flight
            or len(self.slots) > self.max_in_flight * self.chunk_size
        )

    def _submit(self) -> None:
        if not self.chunk:
            return
        chunk, prefilled, kind = self.chunk, self.prefilled, self.chunk_kind
        self.chunk, self.prefilled, self.chunk_kind = [], {}, None
        tasks = [
            (item.task, item.digest)
            for position, item in enumerate(chunk)
            if position not in prefilled
        ]
        if kind is None:  # every result is known already
            self.slots.append(_Slot(chunk, prefilled))
            return
        job = functools.partial(
            _process_chunk,
            self.preprocessor,
            kind,
            tasks,
            reader=self.reader if kind == "entry" else None,
            decode_options=self.decode_options,
            cache=self.cache,
            compact=self.pool is not None,
        )
        if self.pool is None:
            self.slots.append(_Slot(chunk, prefilled, computed=job()))
        else:
            self.slots.append(_Slot(chunk, prefilled, future=self.pool.submit(job)))

    def _finish(self, slot: _Slot, source: CatalogSource | None, bar: Any) -> Iterator[XRay]:
        for item, result in zip(slot.inputs, slot.collect(), strict=True):
            bar.update(1)
            xray = self._finish_one(item, result, source)
            if xray is not None:
                yield xray

    def _finish_one(
        self, item: _Input, result: _Result, source: CatalogSource | None
    ) -> XRay | None:
        stats = self.stats
        status = result[0]
        if status == "error":
            error: Exception = result[1]
            error.add_note(
                f"While preprocessing {self._item_id(item, source)!r}, item {item.position} "
                "of the input (counting from 0)"
            )
            raise error
        if status == "invalid":
            message, where = result[1], result[2]
            prefix = f"{where}: "
            error = InvalidImageError(message.removeprefix(prefix) if where else message, where)
            if source is None or item.entry is None:
                raise error
            source.report_invalid(item.entry.name, error)
            stats.skipped += 1
            return None
        stats.items += 1
        if status == "cached":
            stats.cache_hits += 1
            stats.memo_hits += int(result[2])
            stats.cache_damaged += int(item.damaged)
            cached_xray: XRay = result[1]
            return cached_xray
        _, record, stored, digest, hit, damaged = result
        self._remember(item, digest)
        identifier, label, patient_id, (encoding, packed), boxes, meta = record
        stats.cache_damaged += int(item.damaged or damaged)
        if hit:
            stats.cache_hits += 1
        elif self.uncachable:
            stats.uncachable += 1
        elif stored is not None:
            outcome, detail = stored
            if outcome == "pack" and detail is not None:
                self.pending_writes[detail] += 1  # counted once the pack is sealed
            else:
                stats.uncachable += 1
                if outcome == "failed":
                    self._warn_not_filled(detail, stacklevel=5)
        return XRay(
            expand_pixels(encoding, packed),
            id=identifier,
            label=label,
            patient_id=patient_id,
            boxes=tuple(Box(*values) for values in boxes),
            meta=meta,
        )

    @staticmethod
    def _item_id(item: _Input, source: CatalogSource | None) -> str:
        if item.entry is not None and source is not None:
            return source.record_id(item.entry)
        if item.kind == "xray":
            return str(item.task[0])
        return str(getattr(item.task, "id", "?"))  # a RawItem, or a cached XRay

    def _count_sealed_writes(self) -> None:
        """Count the results in packs that were sealed; warn if some were not.

        Run when every writer has sealed its pack (this process closed its cache, each
        worker task sealed its own before returning). A pack that failed later (a full
        disk), or could not be flushed or renamed, lost every result it had accepted.
        """
        assert self.cache is not None  # noqa: S101 - only called with a cache
        lost = 0
        for pack, count in self.pending_writes.items():
            if Path(pack).exists():
                self.stats.cache_writes += count
            else:
                lost += count
        self.pending_writes.clear()
        if lost:
            self.stats.uncachable += lost
            error = self.cache.write_error
            self._warn_not_filled(
                _reason(error) if error is not None else "its pack files could not be sealed",
                stacklevel=4,
            )

    def _warn_not_filled(
        self,
        reason: str | None,
        *,
        stacklevel: int,
        advice: str = "; free space there or pass another cache_dir",
    ) -> None:
        """Warn, once a run, that the cache is not being written.

        ``stacklevel`` counts from here to the code iterating over the run.
        """
        if self.warned_not_filled:
            return
        self.warned_not_filled = True
        warnings.warn(
            f"the preprocessing cache in {self.cache_dir} is not being filled: {reason}. "
            "Preprocessing goes on without writing to it (results are unchanged, but the "
            f"next pass computes them again){advice}",
            CacheNotFilledWarning,
            stacklevel=stacklevel,
        )


#: What :func:`fill_cache` did with an item.
FillOutcome = Literal["cached", "written", "uncachable", "skipped"]


def fill_cache(
    items: Iterable[tuple[Entry, str | None]],
    reader: Callable[[Entry], RawItem],
    preprocessor: Preprocessor,
    cache_dir: str | os.PathLike[str],
    decode_options: Mapping[str, int],
) -> list[tuple[FillOutcome, str | None]]:
    """Preprocess entries into the cache, in this process, as a distributed worker does.

    The entries' results land under the keys :func:`preprocess_batch` (and so
    :class:`~covidcxr.Pipeline`) looks up: the preprocessor's cache token and each item's
    content digest, remembered under its source fingerprint when there is one, so that a
    later pass over the same files on the machine that fingerprinted them reads only the
    cache. Entries already cached are not preprocessed again.

    Parameters
    ----------
    items
        ``(entry, fingerprint)`` pairs: the fingerprint as the source gave it on the
        machine that will read the cache (``None``: none).
    reader
        Reads an entry (a source's :meth:`~covidcxr.sources.CatalogSource.remote_reader`).
    preprocessor
        The pipeline's preprocessor.
    cache_dir
        The cache folder, shared with the later runs.
    decode_options
        ``min_side``, ``max_pixels`` and ``min_lesion_area`` of the source.

    Returns
    -------
    list of tuple
        Per item, in order: ``"cached"`` (found, not recomputed), ``"written"``,
        ``"uncachable"`` (metadata the cache cannot hold, a full disk, or a preprocessor
        whose key would change every run: see ``_unkeyable``) or ``"skipped"``
        (unreadable), with the reason for the last two (``None`` otherwise). Written
        entries are sealed before this returns.
    """
    unkeyable = _unkeyable(preprocessor)
    if unkeyable is not None:  # what it wrote no later run would find: write nothing
        return [("uncachable", unkeyable) for _ in items]
    cache = PreprocessCache(cache_dir, _cache_token(preprocessor, decode_options))
    outcomes: list[tuple[FillOutcome, str | None]] = []
    try:
        for entry, fingerprint in items:
            remembered = cache.digest_for(fingerprint) if fingerprint is not None else None
            if remembered is not None and cache.load(remembered) is not None:
                outcomes.append(("cached", None))
                continue
            try:
                raw = reader(entry)
            except InvalidImageError as exc:
                outcomes.append(("skipped", str(exc)))
                continue
            digest = raw.digest()
            if cache.load(digest) is not None:
                outcome: tuple[FillOutcome, str | None] = ("cached", None)
            else:
                result = _process_one(
                    preprocessor,
                    "raw",
                    raw,
                    digest,
                    reader=None,
                    decode_options=decode_options,
                    cache=cache,
                    compact=True,
                )
                if result[0] == "invalid":
                    outcomes.append(("skipped", str(result[1])))
                    continue
                stored: _Stored = result[2]
                outcome = ("written", None) if stored[0] == "pack" else ("uncachable", stored[1])
            if fingerprint is not None:
                cache.remember_digest(fingerprint, digest)
            outcomes.append(outcome)
    finally:
        cache.close()
    if cache.write_error is not None:  # the pack was not sealed: nothing was written
        reason = _reason(cache.write_error)
        outcomes = [("uncachable", reason) if o[0] == "written" else o for o in outcomes]
    return outcomes
