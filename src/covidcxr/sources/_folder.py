"""Datasets in a local folder."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

from covidcxr.errors import InvalidImageError, SourceError
from covidcxr.io._reader import MAX_PIXELS, MIN_SIDE
from covidcxr.sources._base import CatalogSource
from covidcxr.sources._items import Entry, RawItem, read_entry

__all__ = ["RACY_SECONDS", "FolderSource"]

#: Files changed less than this many seconds ago get no fingerprint (see
#: :meth:`FolderSource.fingerprint`): a later change within the same timestamp tick could
#: leave their status unchanged. Two seconds covers the coarsest common clock (FAT's).
RACY_SECONDS: Final = 2.0


class FolderSource(CatalogSource):
    """Radiographs in a local folder, arranged in one of the known layouts.

    Files are listed once, when the source is created; pixels are read lazily, one image
    at a time, on every iteration. Records get the file path as ``id`` and
    ``meta["path"]``, the split (for layouts with splits) as ``meta["split"]``, masks as
    0/255 ``uint8`` arrays in ``meta`` (``"infection_mask"``, ``"lung_mask"``), and the
    connected components of the infection mask as ``boxes``.

    Parameters
    ----------
    root
        The dataset folder.
    layout
        ``"classes"`` (one subfolder per class), ``"covid-qu-ex"``, ``"covid-radiography"``
        or ``"ieee8023"``; see :mod:`covidcxr.sources`.
    split
        For ``"covid-qu-ex"``: ``"Train"``, ``"Val"``, ``"Test"`` or a sequence of them
        (``None``: all). For ``"classes"``: the name(s) of split folders above the class
        folders.
    label_aliases
        Extra or overriding class-folder spellings, ``{folder name: canonical label}``.
    on_error
        ``"raise"``: an unreadable image raises :class:`~covidcxr.InvalidImageError`.
        ``"skip"``: it is left out, recorded in :attr:`skipped` and counted in a
        :class:`~covidcxr.sources.SkippedItemsWarning`.
    load_masks
        Read the masks of layouts that have them (turn off when only classifying).
    min_side, max_pixels
        Size limits for images, as for :func:`covidcxr.io.read_image`.
    min_lesion_area
        Infection-mask components smaller than this many pixels give no box.
    fingerprints
        Let the preprocessing cache recognise unchanged files from their status, without
        reading them (see :meth:`fingerprint`). Turn it off where the status cannot be
        trusted to change with the content: network file systems that cache attributes
        (NFS), or FUSE file systems that do not keep change times. Off, every pass reads
        and hashes the files, which is always correct.

    Raises
    ------
    SourceError
        If ``root`` is not a folder or holds no images for the layout.
    UnknownLabelError
        If a class folder is not a known spelling; the message lists the folders found.
    ConfigurationError
        For an unknown layout, split or ``on_error``.

    Examples
    --------
    >>> import cv2, numpy as np, pathlib, tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for folder in ("COVID", "NORMAL"):
    ...     (root / folder).mkdir()
    ...     _ = cv2.imwrite(str(root / folder / "a.png"), np.zeros((64, 64), np.uint8))
    >>> source = FolderSource(root)
    >>> len(source), source.classes
    (2, ('covid-19', 'normal'))
    >>> [xray.label for xray in source]
    ['covid-19', 'normal']
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        layout: str = "classes",
        split: str | Sequence[str] | None = None,
        label_aliases: Mapping[str, str] | None = None,
        on_error: str = "raise",
        load_masks: bool = True,
        min_side: int = MIN_SIDE,
        max_pixels: int = MAX_PIXELS,
        min_lesion_area: int = 1,
        fingerprints: bool = True,
    ) -> None:
        self.root = Path(root)
        self.fingerprints = fingerprints
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: no such folder")
        super().__init__(
            where=str(self.root),
            layout=layout,
            split=split,
            label_aliases=label_aliases,
            on_error=on_error,
            load_masks=load_masks,
            min_side=min_side,
            max_pixels=max_pixels,
            min_lesion_area=min_lesion_area,
        )

    def _list_names(self) -> list[str]:
        names: list[str] = []
        for directory, folders, files in os.walk(self.root, followlinks=False):
            folders[:] = [folder for folder in folders if not folder.startswith(".")]
            relative = Path(directory).relative_to(self.root)
            names.extend((relative / file).as_posix() for file in files)
        return sorted(names)

    def _read(self, name: str) -> bytes:
        return _read_file(self._prefix, name)

    def _item_id(self, name: str) -> str:
        return _file_path(self._prefix, name)

    @functools.cached_property
    def _prefix(self) -> str:
        # What file paths start with: the root and a separator, so that building a path
        # is one concatenation (this runs for every file of every pass). Paths come out
        # as ``str(root / name)`` would spell them.
        root = str(self.root)
        return "" if root == "." else os.path.join(root, "")

    def item_reader(self) -> Callable[[Entry], RawItem]:
        """Read entries in worker processes straight from the folder."""
        return functools.partial(_read_folder_item, self._prefix)

    def fingerprint(self, entry: Entry) -> str | None:
        """The status of the entry's image and mask files, or ``None`` for a recent change.

        The status is the device, inode, size, and modification and change times in
        nanoseconds of each file. On a local POSIX file system, writing to a file updates
        its change time, which no program can set back, so changed content gives a changed
        fingerprint (network and FUSE file systems may not keep that promise: see the
        ``fingerprints`` parameter). The one exception is a change within the file
        system's timestamp resolution of the last one; like git's index, this is avoided
        by giving no fingerprint to files changed in the last :data:`RACY_SECONDS`, which
        are therefore always read and hashed.
        ``None`` too when a file cannot be found (reading it will report why), and on
        systems other than POSIX ones: on Windows ``st_ctime`` is the creation time, which
        a write does not change, so a same-size rewrite that restores the modification
        time would keep its fingerprint.
        """
        if not self.fingerprints or os.name != "posix":
            return None
        parts = [self._prefix]
        recent = time.time_ns() - int(RACY_SECONDS * 1e9)
        for key, name in (("", entry.name), *entry.masks):
            try:
                status = os.stat(_file_path(self._prefix, name))
            except OSError:
                return None
            if max(status.st_mtime_ns, status.st_ctime_ns) > recent:
                return None
            parts.append(
                f"{key}\0{name}\0{status.st_dev}:{status.st_ino}:{status.st_size}:"
                f"{status.st_mtime_ns}:{status.st_ctime_ns}"
            )
        return "\0".join(parts)


def _file_path(prefix: str, name: str) -> str:
    return prefix + (name if os.sep == "/" else name.replace("/", os.sep))


def _read_file(prefix: str, name: str) -> bytes:
    path = _file_path(prefix, name)
    try:
        with open(path, "rb", buffering=0) as handle:  # one read: no buffer needed
            return handle.readall()
    except OSError as exc:
        raise InvalidImageError(f"could not read the file: {exc.strerror or exc}", path) from exc


def _read_folder_item(prefix: str, entry: Entry) -> RawItem:
    return read_entry(
        entry, functools.partial(_read_file, prefix), functools.partial(_file_path, prefix)
    )
