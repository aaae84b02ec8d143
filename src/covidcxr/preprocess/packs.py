"""Append-only pack files: many small records in a few files, each record self-describing.

A cache of thousands of preprocessed radiographs kept as one file each spends most of a
warm pass opening files. A *pack* holds many records back to back; each starts with a
fixed prefix (magic, header length, body length, key), so a folder of packs is its own
index: opening a :class:`PackStore` walks the prefixes (no record bodies are read) and
maps every key to where its record lies.

Each writing process appends to a pack of its own, created with a unique name and never
shared, so concurrent writers (worker processes, other runs) need no locks. A record is
written with as few ``write`` calls as the system allows; if a process dies, or a write
fails, part-way through a record, the tail of its pack is incomplete: readers stop at the
first record that does not fit in the file or does not start with the magic, and the
writer never appends after a failed write. Readers see the records that were complete
when they opened the folder; a record written later is a miss for them, never a wrong
answer.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Final

__all__ = ["KEY_SIZE", "PackStore", "scan_pack"]

_MAGIC: Final = b"CXPK"
#: magic, header length, body length, key.
_PREFIX: Final = struct.Struct("<4sIQ20s")
#: Length of a record key in bytes.
KEY_SIZE: Final = 20
_SUFFIX: Final = ".cxrpack"

Buffer = bytes | bytearray | memoryview


def scan_pack(path: str | os.PathLike[str]) -> Iterator[tuple[bytes, int, int, int]]:
    """The complete records of a pack: ``(key, offset, header length, body length)``.

    Stops at the first record that is incomplete or does not start with the magic
    (the tail of a pack whose writer died, or damage): nothing after it is trusted.
    """
    with open(path, "rb", buffering=0) as handle:
        size = os.fstat(handle.fileno()).st_size
        offset = 0
        while offset + _PREFIX.size <= size:
            handle.seek(offset)
            prefix = handle.read(_PREFIX.size)
            if len(prefix) < _PREFIX.size:
                return
            magic, header_length, body_length, key = _PREFIX.unpack(prefix)
            end = offset + _PREFIX.size + header_length + body_length
            if magic != _MAGIC or end > size:
                return
            yield key, offset, header_length, body_length
            offset = end


def _read_at(handle: IO[bytes], offset: int, length: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(handle.fileno(), length, offset)
    handle.seek(offset)  # pragma: no cover - Windows has no pread
    return handle.read(length)  # pragma: no cover


class PackStore:
    """Records addressed by 20-byte keys, in the pack files of one folder.

    Parameters
    ----------
    folder
        Where the packs are; created on the first write.

    Notes
    -----
    The index of existing records is built on the first :meth:`get`; records appended
    after that (by this or another process) are not seen by this instance. When a key
    was written more than once, the record met last is used; all are equivalent for a
    content-addressed cache.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._index: dict[bytes, tuple[str, int, int, int]] | None = None
        self._readers: dict[str, IO[bytes]] = {}
        self._writer: int | None = None
        self._writer_failed = False

    # -- reading ----------------------------------------------------------------------------

    def _load_index(self) -> dict[bytes, tuple[str, int, int, int]]:
        index: dict[bytes, tuple[str, int, int, int]] = {}
        try:
            names = sorted(entry.name for entry in os.scandir(self.folder))
        except OSError:
            names = []
        for name in names:
            if not name.endswith(_SUFFIX):
                continue
            path = os.path.join(self.folder, name)
            try:
                for key, offset, header_length, body_length in scan_pack(path):
                    index[key] = (path, offset, header_length, body_length)
            except OSError:
                continue  # unreadable pack: its records are misses
        return index

    def get(self, key: bytes) -> tuple[bytes, memoryview] | None:
        """The ``(header, body)`` of the record stored under ``key``, or ``None``."""
        if self._index is None:
            self._index = self._load_index()
        found = self._index.get(key)
        if found is None:
            return None
        path, offset, header_length, body_length = found
        length = _PREFIX.size + header_length + body_length
        try:
            handle = self._readers.get(path)
            if handle is None:
                handle = self._readers[path] = open(path, "rb", buffering=0)  # noqa: SIM115
            data = _read_at(handle, offset, length)
        except OSError:
            return None
        if len(data) != length or data[: _PREFIX.size] != _PREFIX.pack(
            _MAGIC, header_length, body_length, key
        ):
            return None  # the pack changed under us: a miss
        view = memoryview(data)
        return bytes(view[_PREFIX.size : _PREFIX.size + header_length]), view[
            _PREFIX.size + header_length :
        ]

    # -- writing ----------------------------------------------------------------------------

    def put(self, key: bytes, header: bytes, body: Sequence[Buffer]) -> bool:
        """Append a record; ``False`` if it could not be written.

        After a failed write the store writes no more, so a partial record is always the
        last one of its pack.
        """
        if len(key) != KEY_SIZE:
            raise ValueError(f"keys are {KEY_SIZE} bytes, got {len(key)}")
        if self._writer_failed:
            return False
        body_length = sum(memoryview(part).nbytes for part in body)
        record = b"".join([_PREFIX.pack(_MAGIC, len(header), body_length, key), header, *body])
        try:
            if self._writer is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                self._writer, _ = tempfile.mkstemp(dir=self.folder, prefix="pack-", suffix=_SUFFIX)
            view = memoryview(record)
            while view:
                written = os.write(self._writer, view)
                view = view[written:]
        except OSError:
            self._writer_failed = True
            self._close_writer()
            return False
        return True

    def _close_writer(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError):
                os.close(self._writer)
            self._writer = None

    def close(self) -> None:
        """Close the open files (the store can still be used; it reopens them)."""
        self._close_writer()
        for handle in self._readers.values():
            handle.close()
        self._readers.clear()

    def __del__(self) -> None:
        self.close()
