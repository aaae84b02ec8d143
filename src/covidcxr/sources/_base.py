"""The behaviour every catalogued source shares: lazy reading, error policy, skip records."""

from __future__ import annotations

import logging
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Final

import numpy as np

from covidcxr._values import is_whole
from covidcxr.errors import ConfigurationError, InvalidImageError, SourceError
from covidcxr.io._reader import check_limits, decode_image
from covidcxr.records import XRay
from covidcxr.sources._items import Entry, RawItem, decode_item, read_entry
from covidcxr.sources._layouts import AUTO, CITATIONS, TERMS, Catalog, catalog, detect_layout
from covidcxr.sources._skips import (
    OnError,
    Skipped,
    SkippedItemsWarning,
    check_on_error,
    skip_reason,
)

__all__ = ["CatalogSource"]

_log = logging.getLogger("covidcxr.sources")

# How many images of an automatically unlabelled source are looked at to tell
# segmentation masks from radiographs.
_MASK_PROBES: Final = 3


def _check_options(
    *,
    layout: object,
    split: object,
    label_aliases: object,
    load_masks: object,
    min_side: object,
    max_pixels: object,
    min_lesion_area: object,
) -> None:
    """Refuse option values of the wrong kind when the source is opened, not while reading.

    Options often come from text (``-s KEY=VALUE`` on the command line, a TOML file): a
    value of the wrong type would otherwise fail as a ``TypeError`` deep in a read, or,
    for a flag, be taken as true.

    Raises
    ------
    ConfigurationError
        Naming the option and the value given.
    """

    def refuse(name: str, wanted: str, value: object) -> ConfigurationError:
        return ConfigurationError(f"{name} must be {wanted}, got {value!r}")

    if not isinstance(layout, str):
        raise refuse("layout", "a layout name", layout)
    splits_ok = split is None or isinstance(split, str)
    if not splits_ok and isinstance(split, Sequence):
        splits_ok = all(isinstance(name, str) for name in split)
    if not splits_ok:
        raise refuse("split", "a split name, a list of them, or None", split)
    if label_aliases is not None and not (
        isinstance(label_aliases, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in label_aliases.items())
    ):
        raise refuse("label_aliases", "a mapping of folder names to labels", label_aliases)
    if not isinstance(load_masks, bool):
        raise refuse("load_masks", "true or false", load_masks)
    check_limits(min_side, max_pixels)
    if not is_whole(min_lesion_area) or min_lesion_area < 0:  # type: ignore[operator]
        raise refuse("min_lesion_area", "a whole number of pixels, 0 or more", min_lesion_area)


class CatalogSource(ABC):
    """A :class:`~covidcxr.DatasetSource` over a catalogue of named files.

    Subclasses say how to list names and read bytes; this class applies the layout, reads
    lazily (one item in memory at a time), and carries out the ``on_error`` policy.

    ``len(source)`` is the number of catalogued items minus those already skipped. With
    ``on_error="skip"``, an item that fails to decode is only known to be bad once an
    iteration reaches it; from then on it is excluded from ``len`` and from later
    iterations, and listed in :attr:`skipped`.
    """

    def __init__(
        self,
        *,
        where: str,
        layout: str,
        split: str | Sequence[str] | None,
        label_aliases: Mapping[str, str] | None,
        on_error: str,
        load_masks: bool,
        min_side: int,
        max_pixels: int,
        min_lesion_area: int,
    ) -> None:
        self._where = where
        self.on_error: OnError = check_on_error(on_error)
        _check_options(
            layout=layout,
            split=split,
            label_aliases=label_aliases,
            load_masks=load_masks,
            min_side=min_side,
            max_pixels=max_pixels,
            min_lesion_area=min_lesion_area,
        )
        self.min_side = min_side
        self.max_pixels = max_pixels
        self.min_lesion_area = min_lesion_area
        names = self._list_names()
        content_images = self._content_images(names)
        self._failed: dict[str, Skipped] = {}
        #: Why :attr:`layout` was chosen, in words.
        self.layout_reason = f"layout={layout!r} was given"
        automatic = layout == AUTO
        if automatic:
            detected = detect_layout(
                names,
                where=where,
                split=split,
                label_aliases=label_aliases,
                content_images=content_images,
            )
            layout, split, self.layout_reason = detected.layout, detected.split, detected.reason
            _log.info("%s: layout %r: %s", where, layout, self.layout_reason)
        #: The layout the files are read with (the one chosen, with ``layout="auto"``).
        self.layout = layout
        #: The split folders read (as given, or as chosen with ``layout="auto"``); ``None``
        #: for every split, or a layout without splits.
        self.split = split
        self._catalog: Catalog = self._make_catalog(
            names,
            split=split,
            label_aliases=label_aliases,
            load_masks=load_masks,
            content_images=content_images,
        )
        if automatic and layout == "unlabelled":
            self._refuse_masks()
        if self._catalog.excluded:
            self._warn(
                len(self._catalog.excluded),
                "images in formats it does not read, or left out by the layout",
            )

    def _make_catalog(
        self,
        names: list[str],
        *,
        split: str | Sequence[str] | None,
        label_aliases: Mapping[str, str] | None,
        load_masks: bool,
        content_images: Collection[str] = frozenset(),
    ) -> Catalog:
        """Catalogue the names with :attr:`layout` (sources of loose files override it)."""
        return catalog(
            self.layout,
            names,
            where=self._where,
            split=split,
            label_aliases=label_aliases,
            read_text=lambda name: self._read(name).decode("utf-8-sig"),
            load_masks=load_masks,
            content_images=content_images,
        )

    def _refuse_masks(self) -> None:
        """Refuse a source whose images, read without labels, are all binary masks.

        Radiographs have many grey levels; segmentation masks have two (0 and the
        maximum). A few images spread over the catalogue are decoded; if every one of them
        is binary and at least one is not blank, the folder holds masks.
        """
        entries = self._catalog.entries
        probes = entries[:: max(1, len(entries) // _MASK_PROBES)][:_MASK_PROBES]
        binary = 0
        for entry in probes:
            try:
                data = self._read(entry.name)
                pixels = decode_image(
                    data, entry.name, min_side=1, max_pixels=self.max_pixels
                ).pixels
            except InvalidImageError:
                return  # reading will report it, under the on_error policy
            values = np.unique(pixels)
            top = np.iinfo(pixels.dtype).max
            if not set(values.tolist()) <= {0, top}:
                return
            binary += len(values) == 2
        if binary:
            raise SourceError(
                f"{self._where}: the images look like segmentation masks (only the values 0 "
                f"and the maximum in {len(probes)} sampled), not radiographs; open the images "
                "folder beside them, or pass layout='unlabelled' to read them anyway"
            )

    # -- what subclasses provide ------------------------------------------------------------

    @abstractmethod
    def _list_names(self) -> list[str]:
        """Every file in the source, as sorted ``/``-separated relative paths."""

    @abstractmethod
    def _read(self, name: str) -> bytes:
        """The content of one file; raise :class:`InvalidImageError` naming it on failure."""

    def _content_images(self, names: Sequence[str]) -> Collection[str]:
        """Names without an image suffix that are images by their content.

        None by default: a source whose reads are cheap (a local folder) overrides it to
        find images (DICOM, PNG, JPEG, WebP) saved without a suffix.
        """
        del names
        return frozenset()

    def _skipped_while_listing(self) -> tuple[Skipped, ...]:
        """What :meth:`_list_names` found and left out (unfollowed links, for example)."""
        return ()

    @abstractmethod
    def _item_id(self, name: str) -> str:
        """The id of the record read from ``name`` (a path, an archive member, a URI)."""

    # -- DatasetSource ----------------------------------------------------------------------

    @property
    def classes(self) -> tuple[str, ...]:
        """The canonical labels present, in :data:`covidcxr.LABELS` order."""
        return self._catalog.classes

    @property
    def entries(self) -> tuple[Entry, ...]:
        """Every catalogued item, including any that later fail to decode."""
        return self._catalog.entries

    @property
    def skipped(self) -> tuple[Skipped, ...]:
        """Items not yielded, with reasons: excluded by the layout, or failed (``skip``).

        Each is named as its record would have been (:meth:`record_id`: the file's path,
        the archive member or the object's URI), whichever way it was left out.
        """
        excluded = tuple(
            Skipped(self._item_id(item.path), item.reason) for item in self._catalog.excluded
        )
        return self._skipped_while_listing() + excluded + tuple(self._failed.values())

    def __len__(self) -> int:
        return len(self._catalog.entries) - len(self._failed)

    def __iter__(self) -> Iterator[XRay]:
        new_failures = 0
        for entry in self.pending_entries():
            try:
                xray = decode_item(self.read_item(entry), **self.decode_options)
            except InvalidImageError as exc:
                self.report_invalid(entry.name, exc)
                new_failures += 1
                continue
            yield xray
        if new_failures:
            self._warn(new_failures, "unreadable")

    def iter_raw(self) -> Iterator[tuple[Entry, RawItem | InvalidImageError]]:
        """Read items without decoding them, for the batch runner.

        Yields
        ------
        tuple
            Each catalogued entry (skipping those already known bad) with its
            :class:`RawItem`, or the :class:`~covidcxr.InvalidImageError` met reading it;
            pass errors to :meth:`report_invalid`.
        """
        for entry in self.pending_entries():
            try:
                yield entry, self.read_item(entry)
            except InvalidImageError as exc:
                yield entry, exc

    def read_item(self, entry: Entry) -> RawItem:
        """Read one entry's image and mask files."""
        return read_entry(entry, self._read, self._item_id)

    def record_id(self, entry: Entry) -> str:
        """The id of the record read from ``entry`` (a path, an archive member, a URI)."""
        return self._item_id(entry.name)

    def pending_entries(self) -> Iterator[Entry]:
        """The catalogued entries, less those already found unreadable (``skip``)."""
        return (entry for entry in self._catalog.entries if entry.name not in self._failed)

    def item_reader(self) -> Callable[[Entry], RawItem] | None:
        """A picklable function that reads entries in another process, or ``None``.

        Batch runners give it to their worker processes, so that file reading runs in
        parallel too and the bytes never pass through the main process. Sources whose
        reading depends on state that cannot cross processes (an open archive, a network
        client) return ``None``, and are read in the main process.
        """
        return None

    @property
    def decode_options(self) -> dict[str, int]:
        """How items are decoded: the keyword arguments of :func:`decode_item`.

        Part of the preprocessing cache's key: the size limits and the smallest lesion
        that gets a box change the result as much as the preprocessor does.
        """
        return {
            "min_side": self.min_side,
            "max_pixels": self.max_pixels,
            "min_lesion_area": self.min_lesion_area,
        }

    def remote_reader(self) -> Callable[[Entry], RawItem] | None:
        """A picklable function that reads entries on another machine, or ``None``.

        What distributed engines (:mod:`covidcxr.ray`) send to their workers with the
        entries listed here, so that each worker reads its items itself and no image
        passes through this process. Unlike :meth:`item_reader` it may not rely on this
        machine's state beyond the source's own address (a path the workers share, a
        bucket), and it never carries credentials: workers find their own. The default is
        :meth:`item_reader`.
        """
        return self.item_reader()

    def fingerprint(self, entry: Entry) -> str | None:
        """A cheap identity of an entry's files, or ``None`` when there is none.

        Two calls return the same string only if the files' content has not changed in
        between; it is found without reading the files (a local folder uses the files'
        status: device, inode, size, modification and change times). The preprocessing
        cache keeps each fingerprint's content digest, so a second pass over unchanged
        files reads only the cache. The default, ``None``, means "read and hash the
        content every time", which is always correct.
        """
        return None

    def report_invalid(self, name: str, error: InvalidImageError) -> None:
        """Apply the ``on_error`` policy to an item that could not be read or decoded.

        Raises
        ------
        InvalidImageError
            ``error`` itself, when ``on_error="raise"``.
        """
        if self.on_error == "raise":
            raise error
        item_id = self._item_id(name)
        self._failed[name] = Skipped(item_id, skip_reason(error, item_id))

    def warn_skipped(self, count: int) -> None:
        """Warn that ``count`` items were skipped in an iteration (used by batch runners)."""
        if count:
            self._warn(count, "unreadable")

    def _warn(self, count: int, why: str) -> None:
        # One total in every warning: the images the source found (catalogued or left out),
        # not every file listed (notes, masks) nor only the catalogued ones.
        total = len(self._catalog.entries) + len(self._catalog.excluded)
        warnings.warn(
            SkippedItemsWarning.of(
                f"{self._where}: skipped {count} of {total} item(s) ({why})",
                "the source's skipped attribute lists their paths and reasons",
            ),
            stacklevel=3,
        )

    @property
    def citation(self) -> str | None:
        """The reference to cite for the public dataset read, when the layout is one.

        Examples
        --------
        >>> from covidcxr.sources._layouts import CITATIONS
        >>> CITATIONS["covid-qu-ex"].startswith("A. M. Tahir et al.")
        True
        """
        return CITATIONS.get(self.layout)

    @property
    def terms(self) -> str | None:
        """The terms of use of the public dataset read, when the layout is one.

        Examples
        --------
        >>> from covidcxr.sources._layouts import TERMS
        >>> "not redistribute" in TERMS["covid-qu-ex"]
        True
        """
        return TERMS.get(self.layout)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._where!r}, layout={self.layout!r}, "
            f"items={len(self)}, classes={self.classes})"
        )
