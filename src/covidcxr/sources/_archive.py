"""Datasets in a zip archive, read by streaming members, never trusting the archive.

The published workflow ships the dataset as one zip. An archive is untrusted input: its
member names can point outside any folder (``../../.bashrc``, ``/etc/passwd``), members
can be symbolic links, and a few kilobytes can declare terabytes (a zip bomb).
:class:`ZipSource` checks the whole central directory when it opens the archive and
refuses it, naming the member, if any of that is found; it then reads members one at a
time straight from the archive, with no extraction. :meth:`ZipSource.extract_to` writes
the members below a folder the caller chooses, never outside it, never over a file.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any, Final

from attrs import frozen

from covidcxr.errors import (
    ConfigurationError,
    InvalidImageError,
    OutputExistsError,
    SourceError,
    UnknownLabelError,
)
from covidcxr.files import atomic_write
from covidcxr.io._reader import MAX_PIXELS, MIN_SIDE
from covidcxr.labels import canonical_label
from covidcxr.sources._base import CatalogSource
from covidcxr.sources._items import Entry, RawItem, read_entry
from covidcxr.sources._layouts import QU_EX_SPLITS
from covidcxr.sources._skips import OnError

__all__ = ["SafeZipArchive", "ZipLimits", "ZipSource"]

_GIB: Final = 1 << 30
_MIB: Final = 1 << 20
_READ_METHODS: Final = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
# Compression ratios are only meaningful for members large enough to matter.
_RATIO_CHECK_MIN_SIZE: Final = _MIB


@frozen
class ZipLimits:
    """Limits that make a zip bomb fail fast instead of filling memory or disk.

    Parameters
    ----------
    max_members
        Files in the archive (COVID-QU-Ex has 33,920).
    max_member_size
        Uncompressed size of one member.
    max_total_size
        Uncompressed size of all members together.
    max_compression_ratio
        Uncompressed over compressed size, for members over 1 MiB. Radiographs are
        already compressed (PNG, JPEG), so their ratio is near 1; text and DICOM reach
        perhaps 10; bombs reach 1,000 and more.
    """

    max_members: int = 200_000
    max_member_size: int = 512 * _MIB
    max_total_size: int = 64 * _GIB
    max_compression_ratio: float = 100.0


def _member_problem(info: zipfile.ZipInfo) -> str | None:  # noqa: PLR0911 - one per problem
    """Why a member must not be trusted, or ``None``."""
    name = info.filename
    if "\\" in name:
        return "uses backslashes in its path"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "climbs out of the archive with '..'"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if info.flag_bits & 0x1:
        return "is encrypted"
    if info.compress_type not in _READ_METHODS:
        # bzip2 and LZMA decompress a whole input chunk at once, however far it expands:
        # a few hundred bytes can become hundreds of megabytes before any limit applies.
        return (
            f"is compressed with method {info.compress_type} (not stored or deflate, which "
            "are what covidcxr reads: the size others expand to cannot be bounded while "
            "reading); rebuild the archive with deflate, zip's default"
        )
    return None


def _is_apple_extra(name: str) -> bool:
    """Whether ``name`` is Finder's: ``__MACOSX/...`` resource forks or a hidden file."""
    parts = PurePosixPath(name).parts
    return bool(parts) and (parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts))


class SafeZipArchive:
    """A zip archive whose every member was checked before any is read.

    Parameters
    ----------
    archive
        A path or a seekable binary file object.
    name
        How to call the archive in ids and messages.
    limits
        See :class:`ZipLimits`.

    Raises
    ------
    SourceError
        If the archive is unreadable, a member's name escapes the archive or appears twice,
        a member is a symbolic link, encrypted or compressed with a method other than stored
        or deflate, or the limits are exceeded; the message names the member.
    """

    def __init__(
        self, archive: str | os.PathLike[str] | IO[bytes], name: str, limits: ZipLimits
    ) -> None:
        self.name = name
        self.limits = limits
        try:
            self._zip = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise SourceError(f"{name}: not a readable zip archive ({exc})") from exc
        self.members = self._check_members()

    def _check_members(self) -> dict[str, zipfile.ZipInfo]:
        infos = self._zip.infolist()
        limits = self.limits
        if len(infos) > limits.max_members:
            raise SourceError(
                f"{self.name}: {len(infos):,} members, more than the limit of "
                f"{limits.max_members:,} (raise ZipLimits.max_members if genuine)"
            )
        total = 0
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            problem = _member_problem(info)
            if problem:
                raise SourceError(
                    f"{self.name}: member {info.filename!r} {problem}; refusing the archive"
                )
            if info.is_dir():
                continue
            # Archives made as "zip -r x.zip ./" or by tar-minded tools name members
            # "./COVID/a.png": the same member as "COVID/a.png", not a hidden file.
            name = info.filename.removeprefix("./")
            if name in members:
                # zipfile resolves a name to its last entry, so one of the two would be
                # read and the other silently lost; which one the author meant is unknowable.
                raise SourceError(
                    f"{self.name}: member {info.filename!r} appears more than once; the "
                    "archive is ambiguous, refusing it (rebuild it with unique member names)"
                )
            if info.file_size > limits.max_member_size:
                raise SourceError(
                    f"{self.name}: member {info.filename!r} expands to "
                    f"{info.file_size:,} bytes, more than the limit of {limits.max_member_size:,}"
                )
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size >= _RATIO_CHECK_MIN_SIZE and ratio > limits.max_compression_ratio:
                raise SourceError(
                    f"{self.name}: member {info.filename!r} has a compression ratio of "
                    f"{ratio:,.0f}:1, over the limit of {limits.max_compression_ratio:,.0f}:1 "
                    "(a zip bomb?)"
                )
            total += info.file_size
            if total > limits.max_total_size:
                raise SourceError(
                    f"{self.name}: members expand to more than the limit of "
                    f"{limits.max_total_size:,} bytes (a zip bomb?)"
                )
            members[name] = info
        return members

    def find_root(self, root: str | None, label_aliases: Mapping[str, str] | None) -> str:
        """The member-name prefix of the dataset (``""`` or ``"folder/"``).

        ``root=None`` strips a single top-level folder that wraps everything, unless that
        folder is itself a class or split folder.
        """
        if root is not None:
            prefix = root.strip("/") + "/"
            if not any(name.startswith(prefix) for name in self.members):
                raise ConfigurationError(f"{self.name}: no member under root {root!r}")
            return prefix
        # macOS's Finder adds __MACOSX/ and .DS_Store beside the folder it compresses.
        names = [name for name in self.members if not _is_apple_extra(name)]
        tops = {PurePosixPath(name).parts[0] for name in names if "/" in name}
        loose = any("/" not in name for name in names)
        if len(tops) != 1 or loose:
            return ""
        (top,) = tops
        if top.lower() in {split.lower() for split in QU_EX_SPLITS}:
            return ""
        try:
            canonical_label(top, label_aliases)
        except UnknownLabelError:
            return top + "/"
        return ""

    def read(self, member: str, where: str) -> bytes:
        """One member's content; :class:`InvalidImageError` naming ``where`` on failure."""
        info = self.members.get(member)
        if info is None:
            raise InvalidImageError("no such member in the archive", where)
        try:
            with self._zip.open(info) as handle:
                # In chunks: one read() decompresses up to 2 GiB before zipfile cuts it to
                # the declared size (which _check_members bounded); a chunk at a time,
                # zipfile stops there having held a chunk more at most.
                chunks = []
                while chunk := handle.read(_MIB):
                    chunks.append(chunk)
                return b"".join(chunks)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            # zipfile ends some messages with " for file 'NAME'": the member is ``where``.
            detail = str(exc).removesuffix(f" for file {info.filename!r}")
            raise InvalidImageError(f"corrupt archive member: {detail}", where) from exc

    def extract_to(
        self, directory: str | os.PathLike[str], *, on_exists: OnError = "raise"
    ) -> Path:
        """Extract every member below ``directory``, safely (see :meth:`ZipSource.extract_to`)."""
        target = Path(directory).resolve()
        target.mkdir(parents=True, exist_ok=True)
        for member, info in self.members.items():
            destination = (target / member).resolve()
            if not destination.is_relative_to(target):
                raise SourceError(
                    f"{self.name}: member {member!r} would be written to "
                    f"{destination}, outside {target}; nothing more is extracted"
                )
            destination.parent.mkdir(parents=True, exist_ok=True)
            # Atomic: an interrupted extraction leaves no truncated file that a rerun with
            # on_exists="skip" would keep as if it were whole.
            try:
                with (
                    atomic_write(destination, overwrite=False) as output,
                    self._zip.open(info) as handle,
                ):
                    shutil.copyfileobj(handle, output, length=_MIB)
            except OutputExistsError:
                if on_exists == "skip":
                    continue
                raise SourceError(
                    f"{destination} already exists; covidcxr does not overwrite files "
                    "(extract to an empty folder, or pass on_exists='skip')"
                ) from None
        return target

    def close(self) -> None:
        """Close the archive."""
        self._zip.close()


class _RemoteArchiveReader:
    """Reads a zip archive's entries in another process; pickles to the archive's path."""

    def __init__(self, path: str, name: str, root: str, limits: ZipLimits) -> None:
        self.path, self.name, self.root, self.limits = path, name, root, limits
        self._archive: SafeZipArchive | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_archive": None}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def _item_id(self, name: str) -> str:
        return f"{self.name}!/{self.root}{name}"

    def _read(self, name: str) -> bytes:
        if self._archive is None:
            self._archive = SafeZipArchive(self.path, self.name, self.limits)
        return self._archive.read(self.root + name, self._item_id(name))

    def __call__(self, entry: Entry) -> RawItem:
        return read_entry(entry, self._read, self._item_id)


class ZipSource(CatalogSource):
    """Radiographs in a zip archive, read member by member without extracting.

    Takes the same layouts and options as :class:`~covidcxr.sources.FolderSource`.
    Record ids are ``"{archive}!/{member}"``.

    Parameters
    ----------
    archive
        The archive's path, or a seekable binary file object holding it.
    layout, split, label_aliases, on_error, load_masks, min_side, max_pixels, min_lesion_area
        As for :class:`~covidcxr.sources.FolderSource`.
    root
        The folder inside the archive that holds the dataset. ``None``: if every member
        sits in one top-level folder that is not itself a class or split folder (archives
        usually wrap the dataset in one), that folder; the ``__MACOSX/`` folder and hidden
        files that macOS's Finder adds beside it do not count.
    limits
        See :class:`ZipLimits`.
    name
        How to call the archive in ids and messages (default: its path, or ``<stream>``).

    Raises
    ------
    SourceError
        If the archive is unreadable, or a member's name escapes the archive, appears twice,
        is a symbolic link, is encrypted or is compressed with a method other than stored or
        deflate (bzip2 and LZMA cannot be read with bounded memory), or the limits are
        exceeded; the message names the member.

    Examples
    --------
    >>> import cv2, io, numpy as np, zipfile
    >>> png = cv2.imencode(".png", np.zeros((64, 64), np.uint8))[1].tobytes()
    >>> buffer = io.BytesIO()
    >>> with zipfile.ZipFile(buffer, "w") as archive:
    ...     archive.writestr("cxr/COVID/a.png", png)
    ...     archive.writestr("cxr/Normal/b.png", png)
    >>> source = ZipSource(buffer)
    >>> [(xray.label, xray.id) for xray in source]
    [('covid-19', '<stream>!/cxr/COVID/a.png'), ('normal', '<stream>!/cxr/Normal/b.png')]
    """

    def __init__(
        self,
        archive: str | os.PathLike[str] | IO[bytes],
        *,
        layout: str = "auto",
        split: str | Sequence[str] | None = None,
        label_aliases: Mapping[str, str] | None = None,
        on_error: str = "raise",
        load_masks: bool = True,
        min_side: int = MIN_SIDE,
        max_pixels: int = MAX_PIXELS,
        min_lesion_area: int = 1,
        root: str | None = None,
        limits: ZipLimits | None = None,
        name: str | None = None,
    ) -> None:
        if isinstance(archive, str | os.PathLike):
            archive_name = name or str(archive)
            if not Path(archive).is_file():
                raise SourceError(f"{archive_name}: no such archive")
        else:
            archive_name = name or "<stream>"
        self.archive_name = archive_name
        self._path = os.fspath(archive) if isinstance(archive, str | os.PathLike) else None
        self._archive = SafeZipArchive(archive, archive_name, limits or ZipLimits())
        self._root = self._archive.find_root(root, label_aliases)
        super().__init__(
            where=archive_name,
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
        prefix = self._root
        return sorted(
            name[len(prefix) :] for name in self._archive.members if name.startswith(prefix)
        )

    def _read(self, name: str) -> bytes:
        return self._archive.read(self._root + name, self._item_id(name))

    def _item_id(self, name: str) -> str:
        return f"{self.archive_name}!/{self._root}{name}"

    def remote_reader(self) -> Callable[[Entry], RawItem] | None:
        """A reader for other processes: each opens (and checks) the archive once.

        ``None`` for an archive read from a file object, which other processes cannot open.
        """
        if self._path is None:
            return None
        return _RemoteArchiveReader(self._path, self.archive_name, self._root, self._archive.limits)

    def extract_to(
        self, directory: str | os.PathLike[str], *, on_exists: OnError = "raise"
    ) -> Path:
        """Extract every member below ``directory``, safely.

        Parameters
        ----------
        directory
            Where to extract; created if missing.
        on_exists
            ``"raise"``: a file already at a member's destination is an error, and nothing
            is overwritten. ``"skip"``: such members are left as they are.

        Returns
        -------
        pathlib.Path
            ``directory``, resolved.

        Raises
        ------
        SourceError
            If a destination exists (``on_exists="raise"``), or a member would land outside
            ``directory`` (through a symlinked folder already there, for example).
        """
        return self._archive.extract_to(directory, on_exists=on_exists)

    def close(self) -> None:
        """Close the archive."""
        self._archive.close()

    def __enter__(self) -> ZipSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
