"""The one data path: read and preprocess each item of a source once per call.

Every :class:`~covidcxr.Pipeline` call goes through :func:`prepare`, which runs the
preprocessor over the source with :func:`~covidcxr.preprocess.preprocess_batch` (and its
cache, when the pipeline has one). :meth:`~covidcxr.Pipeline.fit` collects the result in a
:class:`PreparedSet`, an indexable sequence that the classifier permutes fully every epoch
and the detector trains on, with no second pass over the source; ``predict`` and
``evaluate`` consume it in chunks, so their memory does not grow with the source.
"""

from __future__ import annotations

import contextvars
import os
import queue
import threading
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar, overload

import numpy as np
from attrs import define, field

from covidcxr._contracts import describe
from covidcxr.errors import ConfigurationError
from covidcxr.evaluate._provenance import DataFingerprint
from covidcxr.labels import LABELS
from covidcxr.plugins import open_source
from covidcxr.preprocess import BatchStats, preprocess_batch
from covidcxr.preprocess._pixels import compact_pixels, expand_pixels
from covidcxr.protocols import Preprocessor
from covidcxr.records import Box, XRay
from covidcxr.sources import ReportsSkips, Skipped

__all__ = ["DataPass", "PreparedSet", "SourceLike", "ahead", "as_source", "prepare"]

_T = TypeVar("_T")

#: What the pipeline's methods accept as data: a :class:`~covidcxr.DatasetSource` (or any
#: iterable of :class:`~covidcxr.XRay`), or a path or URI, or a sequence of them, for
#: :func:`~covidcxr.open_source`.
SourceLike: TypeAlias = Iterable[XRay] | str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def as_source(source: object, what: str) -> Iterable[XRay]:
    """``source`` as something that can be iterated (opened, if a path or URI).

    A one-shot iterator is kept as the list of what it yields: a pipeline may need it
    again (``fit`` with the detector's training, for example). ``source`` is checked at
    run time, whatever its static type: callers are not always type-checked.
    """
    if isinstance(source, str | os.PathLike):
        return open_source(source)
    if isinstance(source, Iterator):
        source = list(source)
    if (
        isinstance(source, Sequence)
        and source
        and all(isinstance(item, str | os.PathLike) for item in source)
    ):
        return open_source(source)  # several files, folders or patterns
    if isinstance(source, Sequence) and any(isinstance(item, np.ndarray) for item in source):
        raise ConfigurationError(
            f"{what} holds arrays; radiographs are covidcxr.XRay(pixels, id=...) records"
        )
    if isinstance(source, list | tuple):  # the user's own records (a source reads lazily)
        for position, item in enumerate(source):
            if not isinstance(item, XRay):
                kind = "paths and records" if isinstance(item, str | os.PathLike) else "records"
                raise ConfigurationError(
                    f"{what} mixes {kind}: item {position} is {describe(item)}; pass "
                    "covidcxr.XRay records, or paths and URIs only (a "
                    "list of paths is opened as a source)"
                )
    if isinstance(source, XRay):
        raise ConfigurationError(
            f"{what} is one radiograph ({source.id!r}); pass a list of radiographs: [xray]"
        )
    if not isinstance(source, Iterable) or isinstance(source, np.ndarray | bytes | bytearray):
        # An array iterates over its rows: radiographs are XRay(pixels, id=...).
        hint = ""
        if hasattr(source, "shape"):
            hint = " (wrap pixels as covidcxr.XRay(pixels, id=...))"
        elif isinstance(source, bytes | bytearray):
            hint = (
                " (a file's content: decode it with covidcxr.io.read_image(data) and wrap "
                "the pixels as covidcxr.XRay(pixels, id=...))"
            )
        raise ConfigurationError(
            f"{what} must be a dataset source, a path or URI, or radiographs; got "
            f"{type(source).__name__}{hint}"
        )
    return source


@define
class DataPass:
    """How one pass over a source went (see :attr:`covidcxr.Pipeline.data_stats_`)."""

    #: The counters of the preprocessing run (items, cache hits, writes, skips).
    batch: BatchStats = field(factory=BatchStats)
    #: Items whose files were read (not answered from the cache by fingerprint alone).
    reads: int = 0
    #: Worker processes used (0: this process).
    workers: int = 0
    #: What the source did not yield, with reasons, as it stood when the pass ended: items
    #: its layout left out and, opened with ``on_error="skip"``, unreadable ones.
    skipped: tuple[Skipped, ...] = ()


def prepare(
    source: Iterable[XRay],
    preprocessor: Preprocessor | None,
    *,
    cache_dir: str | os.PathLike[str] | None,
    workers: int,
    progress: bool,
    stats: DataPass,
) -> Iterator[XRay]:
    """The preprocessed radiographs of ``source``, in order, each item read once.

    Parameters
    ----------
    source
        A source or iterable of radiographs.
    preprocessor
        ``None`` passes the radiographs on as read.
    cache_dir
        The preprocessing cache (see :func:`~covidcxr.preprocess.preprocess_batch`).
    workers
        Worker processes; 0 preprocesses in this process.
    progress
        Show a progress bar.
    stats
        Filled in as the pass goes.
    """
    if preprocessor is None:
        for xray in source:
            stats.batch.items += 1
            stats.reads += 1
            yield xray
    else:
        stats.workers = workers
        yield from preprocess_batch(
            source,
            preprocessor,
            workers=stats.workers,
            cache_dir=cache_dir,
            progress=progress,
            stats=stats.batch,
        )
        stats.reads = stats.batch.items - stats.batch.memo_hits
    if isinstance(source, ReportsSkips):
        stats.skipped = tuple(source.skipped)


def chunks(xrays: Iterable[XRay], *, max_pixels: int, max_items: int) -> Iterator[list[XRay]]:
    """``xrays`` in consecutive lists of at most ``max_items`` and about ``max_pixels``.

    A list is closed as soon as its images hold ``max_pixels`` pixels or more, so small
    images come in large lists (fewer calls into the model, each with its set-up cost)
    and large images in small ones (bounded memory).

    Examples
    --------
    >>> import numpy as np
    >>> images = [XRay(np.zeros((10, 10), np.uint8), id=str(i)) for i in range(5)]
    >>> [len(c) for c in chunks(images, max_pixels=250, max_items=100)]
    [3, 2]
    >>> [len(c) for c in chunks(images, max_pixels=10**6, max_items=2)]
    [2, 2, 1]
    """
    chunk: list[XRay] = []
    pixels = 0
    for xray in xrays:
        chunk.append(xray)
        pixels += xray.pixels.size
        if pixels >= max_pixels or len(chunk) >= max_items:
            yield chunk
            chunk, pixels = [], 0
    if chunk:
        yield chunk


def ahead(items: Iterable[_T], *, depth: int = 1) -> Generator[_T, None, None]:
    """``items`` in order, the next ``depth`` of them produced in a thread meanwhile.

    Reading and preprocessing (OpenCV, file reads) and the networks (TensorFlow) both
    release the GIL, so the next chunk of a source is prepared while this one is scored.
    The producer runs in a copy of the caller's :mod:`contextvars` context; an exception
    it raises is raised here, in order; closing this generator early stops it and closes
    ``items``.

    Examples
    --------
    >>> list(ahead(iter(range(5))))
    [0, 1, 2, 3, 4]
    """
    handoff: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put((True, item)):
                    return
            put((True, done))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            put((False, error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    context = contextvars.copy_context()
    producer = threading.Thread(
        target=context.run, args=(produce,), name="covidcxr-ahead", daemon=True
    )
    producer.start()
    try:
        while True:
            ok, item = handoff.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        producer.join()


@define
class _Stored:
    """One prepared radiograph, its pixels kept as ``uint8`` when they are ``uint8 / 255``."""

    id: str
    label: str | None
    patient_id: str | None
    encoding: str
    pixels: np.ndarray[Any, Any]
    boxes: tuple[Box, ...]
    meta: Mapping[str, Any]


class PreparedSet(Sequence[XRay]):
    """Preprocessed radiographs in memory, indexable: what ``fit`` trains on.

    Pixels that are exactly ``uint8 / 255`` (the output of the built-in preprocessor) are
    kept as their ``uint8`` values, a quarter of the float32 bytes, and expanded bit for
    bit on access: 3,728 radiographs at 224 px take 187 MB. Indexing returns a new
    :class:`~covidcxr.XRay` each time.

    Examples
    --------
    >>> import numpy as np
    >>> from covidcxr import XRay
    >>> images = [XRay(np.full((4, 4), i / 255, np.float32), id=str(i), label="normal")
    ...           for i in range(3)]
    >>> prepared = PreparedSet.collect(images)
    >>> len(prepared), prepared[2].id, prepared.classes
    (3, '2', ('normal',))
    >>> float(prepared[2].pixels[0, 0]) == float(np.float32(2 / 255))
    True
    """

    def __init__(self) -> None:
        self._items: list[_Stored] = []
        self._fingerprint = DataFingerprint()

    @classmethod
    def collect(cls, xrays: Iterable[XRay]) -> PreparedSet:
        """Keep every radiograph ``xrays`` yields (one pass)."""
        prepared = cls()
        for xray in xrays:
            prepared.append(xray)
        return prepared

    def append(self, xray: XRay) -> None:
        """Keep one more radiograph (and add it to :attr:`fingerprint`)."""
        self._fingerprint.update(xray)
        encoding, pixels = compact_pixels(np.asarray(xray.pixels))
        self._items.append(
            _Stored(xray.id, xray.label, xray.patient_id, encoding, pixels, xray.boxes, xray.meta)
        )

    @property
    def fingerprint(self) -> str:
        """:func:`~covidcxr.evaluate.data_fingerprint` of the prepared images."""
        return self._fingerprint.hexdigest()

    @property
    def classes(self) -> tuple[str, ...]:
        """The canonical labels present, in :data:`~covidcxr.LABELS` order."""
        present = {item.label for item in self._items}
        return tuple(label for label in LABELS if label in present)

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> XRay: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[XRay]: ...

    def __getitem__(self, index: int | slice) -> XRay | Sequence[XRay]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        item = self._items[index]
        return XRay(
            expand_pixels(item.encoding, item.pixels),
            id=item.id,
            label=item.label,
            patient_id=item.patient_id,
            boxes=item.boxes,
            meta=item.meta,
        )

    def __iter__(self) -> Iterator[XRay]:
        for index in range(len(self._items)):
            yield self[index]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} radiographs, classes={self.classes})"
