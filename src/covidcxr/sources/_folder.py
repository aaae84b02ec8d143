"""Radiographs in local files: a dataset folder, or files named one by one."""

from __future__ import annotations

import functools
import glob
import os
import re
import stat
import time
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from covidcxr.errors import ConfigurationError, InvalidImageError, SourceError
from covidcxr.io._reader import MAX_PIXELS, MIN_SIDE
from covidcxr.io._sniff import DICOM_MAGIC, DICOM_PREAMBLE_LENGTH, sniff_format
from covidcxr.sources._base import CatalogSource
from covidcxr.sources._items import Entry, RawItem, read_entry
from covidcxr.sources._layouts import AUTO, Catalog, catalog, is_mask_folder, might_be_dicom
from covidcxr.sources._skips import Skipped, SkippedItemsWarning

__all__ = ["RACY_SECONDS", "FilesSource", "FolderSource", "is_glob_pattern", "open_local"]

#: Files changed less than this many seconds ago get no fingerprint (see
#: :meth:`FolderSource.fingerprint`): a later change within the same timestamp tick could
#: leave their status unchanged. Two seconds covers the coarsest common clock (FAT's).
RACY_SECONDS: Final = 2.0
# The characters that make a glob pattern (what the glob module itself looks for).
_GLOB_MAGIC: Final = re.compile(r"[*?[]")


class FolderSource(CatalogSource):
    """Radiographs in a local folder, arranged in one of the known layouts.

    Files are listed once, when the source is created; pixels are read lazily, one image
    at a time, on every iteration. Records get the file path as ``id`` and
    ``meta["path"]``, the split (for layouts with splits) as ``meta["split"]``, masks as
    0/255 ``uint8`` arrays in ``meta`` (``"infection_mask"``, ``"lung_mask"``), and the
    connected components of the infection mask as ``boxes``. A subfolder that is a
    symbolic link is followed when its target is inside ``root``; otherwise (outside, or a
    loop) it is listed in :attr:`skipped` with the reason and a
    :class:`~covidcxr.sources.SkippedItemsWarning` names it.

    Parameters
    ----------
    root
        The dataset folder.
    layout
        ``"auto"`` (choose from the file names, see
        :func:`~covidcxr.sources.detect_layout`; the choice is logged and kept in
        :attr:`layout`), ``"classes"`` (one subfolder per class), ``"covid-qu-ex"``,
        ``"covid-radiography"``, ``"ieee8023"`` or ``"unlabelled"`` (every image below
        ``root``, without labels); see :mod:`covidcxr.sources`.
    split
        For ``"covid-qu-ex"``: ``"Train"``, ``"Val"``, ``"Test"`` or a sequence of them
        (``None``: all). For ``"classes"``: the name(s) of split folders above the class
        folders (``None`` with ``"auto"``: every split folder found).
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

    Attributes
    ----------
    layout
        The layout the files are read with (the one chosen, with ``"auto"``).
    layout_reason
        What decided it, in words.

    Raises
    ------
    SourceError
        If ``root`` is not a folder or holds no images for the layout, or (``"auto"``) it
        is a folder of segmentation masks.
    UnknownLabelError
        If a class folder is not a known spelling; the message lists the folders found.
    ConfigurationError
        For an unknown layout, split or ``on_error``, or (``"auto"``) files that fit more
        than one layout; the message lists them.

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
    >>> source.layout, source.layout_reason
    ('classes', "class folders ['COVID', 'NORMAL']")
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        layout: str = AUTO,
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
        names, self._unfollowed_links = _walk_files(self.root)
        _warn_unfollowed(self._unfollowed_links)
        return sorted(names)

    def _skipped_while_listing(self) -> tuple[Skipped, ...]:
        return self._unfollowed_links

    def _content_images(self, names: Sequence[str]) -> Collection[str]:
        return _images_without_suffix(self._prefix, names)

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


def is_glob_pattern(text: str) -> bool:
    """Whether ``text`` has the wildcards of a :mod:`glob` pattern (``*``, ``?``, ``[``).

    Examples
    --------
    >>> is_glob_pattern("scans/**/*.png"), is_glob_pattern("scans/a.png")
    (True, False)
    """
    return _GLOB_MAGIC.search(text) is not None


PathLike = str | os.PathLike[str]


class FilesSource(FolderSource):
    """Radiographs named one by one: files, glob patterns and folders, read without labels.

    What a user has at hand for prediction: one scan, a few files, ``scans/**/*.png``.
    Files are read as a :class:`FolderSource` reads them (in worker processes by the batch
    runner, with fingerprints for the preprocessing cache), their paths standing for names.
    Records have ``label=None`` and the path as ``id``, in the order given (the files a
    pattern or folder yields are sorted). Named files are read whatever their suffix (the
    content decides the format); folders are read like ``FolderSource(folder,
    layout="unlabelled")``: every image below, none from mask folders.

    Parameters
    ----------
    paths
        A path or glob pattern, or a sequence of them. Patterns are expanded with
        :func:`glob.glob` (``**`` matches any depth) when no file has that very name.
    layout
        ``"auto"`` or ``"unlabelled"`` (the same here): loose files have no layout.
    split
        Must be ``None``.
    label_aliases
        Accepted for symmetry with the other sources; loose files have no class folders.
    on_error, load_masks, min_side, max_pixels, min_lesion_area, fingerprints
        As for :class:`FolderSource`.

    Raises
    ------
    SourceError
        If a path does not exist, a pattern matches nothing, a folder holds no images or
        is a folder of masks, or an entry is a zip archive or URI (open those on their own).
    ConfigurationError
        For a ``layout`` other than ``"auto"``/``"unlabelled"``, or a ``split``.

    Examples
    --------
    >>> import cv2, numpy as np, pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("a.png", "b.png"):
    ...     _ = cv2.imwrite(str(folder / name), np.full((64, 64), 9, np.uint8))
    >>> source = FilesSource([folder / "b.png", folder / "a.png"])
    >>> [(pathlib.Path(xray.id).name, xray.label) for xray in source]
    [('b.png', None), ('a.png', None)]
    >>> len(FilesSource(str(folder / "*.png")))
    2
    """

    def __init__(
        self,
        paths: PathLike | Sequence[PathLike],
        *,
        layout: str = AUTO,
        split: str | Sequence[str] | None = None,
        label_aliases: Mapping[str, str] | None = None,
        on_error: str = "raise",
        load_masks: bool = True,
        min_side: int = MIN_SIDE,
        max_pixels: int = MAX_PIXELS,
        min_lesion_area: int = 1,
        fingerprints: bool = True,
    ) -> None:
        if layout not in (AUTO, "unlabelled"):
            raise ConfigurationError(
                f"files named one by one have no layout; got layout={layout!r} (open a "
                "dataset folder on its own to use a layout)"
            )
        if split is not None:
            raise ConfigurationError("files named one by one have no splits; leave split=None")
        del label_aliases, load_masks  # loose files have neither class folders nor masks
        given = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
        if not given:
            raise SourceError("no files given")
        self._given = [os.fspath(path) for path in given]
        # Names are the paths themselves, read relative to the working directory.
        self.root = Path(".")
        self.fingerprints = fingerprints
        where = self._given[0] if len(self._given) == 1 else f"{len(self._given)} paths"
        CatalogSource.__init__(
            self,
            where=where,
            layout="unlabelled",
            split=None,
            label_aliases=None,
            on_error=on_error,
            load_masks=False,
            min_side=min_side,
            max_pixels=max_pixels,
            min_lesion_area=min_lesion_area,
        )
        self.layout_reason = "files named one by one; images are read without labels"

    @functools.cached_property
    def _prefix(self) -> str:
        return ""

    def _list_names(self) -> list[str]:
        names: dict[str, None] = {}  # ordered and without repeats
        unfollowed: list[Skipped] = []
        for path in self._given:
            for name in _expand(path, unfollowed):
                names[name] = None
        self._unfollowed_links = tuple(unfollowed)
        _warn_unfollowed(self._unfollowed_links)
        return list(names)

    def _content_images(self, names: Sequence[str]) -> Collection[str]:
        # Named files are read whatever their suffix; folders were sniffed when expanded.
        del names
        return frozenset()

    def _make_catalog(
        self,
        names: list[str],
        *,
        split: str | Sequence[str] | None,
        label_aliases: Mapping[str, str] | None,
        load_masks: bool,
        content_images: Collection[str] = frozenset(),
    ) -> Catalog:
        return Catalog(tuple(Entry(name) for name in names), ())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._where!r}, items={len(self)})"


def open_local(
    location: PathLike | Sequence[PathLike], **options: Any
) -> FolderSource | FilesSource:
    """Open local radiographs: a folder as a dataset, anything else as loose files.

    The factory of the ``file`` scheme of :func:`covidcxr.open_source`. A folder becomes a
    :class:`FolderSource` (its layout chosen automatically unless ``layout=`` says); a
    file, a glob pattern or a sequence of paths becomes a :class:`FilesSource`.

    Parameters
    ----------
    location
        A folder, a file, a glob pattern, or a sequence of files, folders and patterns.
    **options
        Passed to the source (``on_error="skip"``, ``layout="covid-qu-ex"`` ...).
    """
    if isinstance(location, str | os.PathLike):
        if os.path.isdir(location):
            return FolderSource(location, **options)
        path = os.fspath(location)
        if not os.path.exists(path) and not is_glob_pattern(path):
            # Said before any option is checked: a mistyped folder is the likely cause.
            raise SourceError(f"{path}: no such file or folder")
    return FilesSource(location, **options)


def _expand(path: str, unfollowed: list[Skipped]) -> list[str]:
    """The files one entry of :class:`FilesSource` names, as ``/``-separated paths."""
    if "://" in path or path.lower().endswith(".zip"):
        raise SourceError(
            f"{path}: archives and URIs cannot be mixed with loose files; open it on its "
            "own with covidcxr.open_source"
        )
    if os.path.isfile(path):
        return [Path(path).as_posix()]
    if os.path.isdir(path):
        return _folder_images(path, unfollowed)
    if is_glob_pattern(path):
        matches = sorted(glob.glob(path, recursive=True))
        if not matches:
            raise SourceError(f"{path}: no file matches this pattern")
        names: list[str] = []
        for match in matches:
            names.extend(
                _folder_images(match, unfollowed)
                if os.path.isdir(match)
                else [Path(match).as_posix()]
            )
        return names
    raise SourceError(f"{path}: no such file or folder")


def _folder_images(folder: str, unfollowed: list[Skipped]) -> list[str]:
    """Every image below ``folder`` (none from mask folders), as ``/``-separated paths."""
    if is_mask_folder(Path(folder).resolve().name):
        raise SourceError(
            f"{folder}: a folder of segmentation masks, not radiographs; name the images "
            "folder beside it"
        )
    root = Path(folder)
    relative, links = _walk_files(root)
    unfollowed.extend(links)
    names = sorted(relative)
    by_content = _images_without_suffix(os.path.join(folder, ""), names)
    entries = catalog("unlabelled", names, where=folder, content_images=by_content).entries
    return [(root / entry.name).as_posix() for entry in entries]


def _images_without_suffix(prefix: str, names: Sequence[str]) -> frozenset[str]:
    """The names among ``names`` that lack an image suffix but hold an image.

    PACS exports name DICOM files ``IM000001`` or by their UID, and some viewers save PNG
    or JPEG without a suffix; the content decides, as it does for every read. Only names
    :func:`~covidcxr.sources.might_be_dicom` picks are opened, and only their first 132
    bytes are read (the DICOM preamble and magic; PNG, JPEG and WebP need fewer); a file
    that cannot be opened, or that starts like none of the formats, is left out, as any
    other file that is not an image. Only regular files are read: a named pipe or a
    device would block the listing (opened without blocking, it is recognised and left
    out).
    """
    found: set[str] = set()
    size = DICOM_PREAMBLE_LENGTH + len(DICOM_MAGIC)
    for name in names:
        if not might_be_dicom(name):
            continue
        try:
            descriptor = os.open(_file_path(prefix, name), os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                continue
            head = os.pread(descriptor, size, 0)
        except OSError:
            continue
        finally:
            os.close(descriptor)
        try:
            sniff_format(head)
        except InvalidImageError:
            continue
        found.add(name)
    return frozenset(found)


def _walk_files(root: Path) -> tuple[list[str], tuple[Skipped, ...]]:
    """Every file below ``root`` (hidden folders left out), and the links not followed.

    A symbolic link to a folder inside ``root`` is followed, its files listed under the
    link's name (datasets often link a class folder to where the images really are). A
    link that points outside ``root``, or back to a folder it is inside (a loop), is not
    followed: it is returned as a :class:`Skipped` with the reason, never dropped silently.

    Returns
    -------
    tuple
        The files as ``/``-separated paths relative to ``root``, and the unfollowed links.
    """
    real_root = root.resolve()
    names: list[str] = []
    unfollowed: list[Skipped] = []

    def visit(directory: Path, relative: Path, followed: frozenset[Path]) -> None:
        for current, folders, files in os.walk(directory, followlinks=False):
            here = Path(current)
            base = relative / here.relative_to(directory)
            kept: list[str] = []
            for folder in folders:
                if folder.startswith("."):
                    continue
                path = here / folder
                if not path.is_symlink():
                    kept.append(folder)
                    continue
                target = path.resolve()
                if not target.is_relative_to(real_root):
                    reason = (
                        f"a symbolic link to {target}, outside {real_root}; not followed "
                        "(move or copy the folder in, or open it as a source of its own)"
                    )
                elif target in followed or here.resolve().is_relative_to(target):
                    reason = f"a symbolic link to {target}, a folder it is inside (a loop)"
                else:
                    visit(target, base / folder, followed | {target})
                    continue
                unfollowed.append(Skipped(str(path), reason))
            folders[:] = kept
            # Plain strings: a Path per file cost more than the walk itself.
            prefix = "" if base == Path() else base.as_posix() + "/"
            names.extend(prefix + file for file in files)

    visit(root, Path(), frozenset())
    return names, tuple(unfollowed)


def _warn_unfollowed(unfollowed: Sequence[Skipped]) -> None:
    if unfollowed:
        warnings.warn(
            SkippedItemsWarning.of(
                f"{len(unfollowed)} symbolic link(s) to folders not followed, the images in "
                f"them left out: {', '.join(item.path for item in unfollowed)}",
                "the source's skipped attribute gives the reasons",
            ),
            stacklevel=4,
        )
