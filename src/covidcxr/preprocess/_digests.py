"""Remembered content digests: what a file holds, known from its status without reading it.

The preprocessing cache is keyed by a hash of each input's *content*, so a renamed or
copied file still hits it. Hashing means reading every file, which on a warm pass costs
more than the cache lookup itself. A source that can *fingerprint* an item cheaply (a
folder: the files' device, inode, size and timestamps; see
:meth:`covidcxr.sources.CatalogSource.fingerprint`) lets the cache remember the digest
under the fingerprint, as git's index remembers blob ids under file status; the next
pass over unchanged files then reads only the cache.

The memo is a folder of small text files, one per run that learned something, each
written to a temporary name and renamed into place (readers never see half a file).
Lines are ``<fingerprint hash> <content digest>``; anything else is ignored. When there
are many files, the next run merges them into one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Final

from covidcxr.files import new_file_mode

__all__ = ["DigestMemo"]

# Part of every key: bump when RawItem.digest() changes, so old memos are never used.
_VERSION: Final = "1"
_SUFFIX: Final = ".digests"
_LINE: Final = re.compile(r"([0-9a-f]{32}) ([0-9a-f]{8,128})")
#: Memo files beyond this many are merged into one by the next run that writes.
MERGE_ABOVE: Final = 8


def _key(fingerprint: str) -> str:
    return hashlib.blake2b(f"{_VERSION}\0{fingerprint}".encode(), digest_size=16).hexdigest()


class DigestMemo:
    """Content digests remembered under source fingerprints, in ``folder``.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> memo = DigestMemo(folder)
    >>> memo.get("image.png:ino=7:size=100:mtime=1") is None
    True
    >>> memo.add("image.png:ino=7:size=100:mtime=1", "0123456789abcdef")
    >>> memo.flush()
    >>> DigestMemo(folder).get("image.png:ino=7:size=100:mtime=1")
    '0123456789abcdef'
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._known: dict[str, str] | None = None
        self._files: list[Path] = []
        self._new: dict[str, str] = {}

    def _load(self) -> dict[str, str]:
        known: dict[str, str] = {}
        try:
            self._files = sorted(self.folder.glob(f"*{_SUFFIX}"))
        except OSError:
            self._files = []
        for path in self._files:
            try:
                text = path.read_text(encoding="ascii", errors="replace")
            except OSError:
                continue  # removed by a concurrent merge: its entries are in the merged file
            for line in text.splitlines():
                match = _LINE.fullmatch(line)
                if match is not None:
                    known[match[1]] = match[2]
        return known

    def get(self, fingerprint: str) -> str | None:
        """The digest remembered for ``fingerprint``, or ``None``."""
        if self._known is None:
            self._known = self._load()
        key = _key(fingerprint)
        return self._new.get(key) or self._known.get(key)

    def add(self, fingerprint: str, digest: str) -> None:
        """Remember ``digest`` for ``fingerprint`` (written by :meth:`flush`)."""
        self._new[_key(fingerprint)] = digest

    def flush(self) -> None:
        """Write what was learned since the last flush, as one new memo file.

        When the folder holds more than :data:`MERGE_ABOVE` memo files, everything known
        is written into the new file instead and the files read are removed. A failure to
        write is silent: the memo is an optimisation, and a miss only costs a re-hash.
        """
        if not self._new:
            return
        if self._known is None:
            self._known = self._load()
        merge = len(self._files) >= MERGE_ABOVE
        lines = {**self._known, **self._new} if merge else self._new
        temporary: str | None = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")
            if hasattr(os, "fchmod"):  # mkstemp's 0600 would hide it from other users
                os.fchmod(descriptor, new_file_mode())
            with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                handle.writelines(f"{key} {digest}\n" for key, digest in lines.items())
            final = self.folder / f"{Path(temporary).name.removeprefix('.tmp-')}{_SUFFIX}"
            Path(temporary).replace(final)
        except OSError:
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
            return
        if merge:
            for path in self._files:
                with contextlib.suppress(OSError):  # left for the next merge
                    path.unlink(missing_ok=True)
            self._files = [final]
        else:
            self._files.append(final)
        self._known.update(self._new)
        self._new = {}
