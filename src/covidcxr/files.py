"""Writing files safely: atomically, and never over what the user owns unless asked.

Every file covidcxr writes for a user (saved models, reports, annotated images) goes
through this module. A file is written to a temporary file beside its target, flushed and
fsynced, then renamed (or, when replacing is not allowed, hard-linked) into place, and the
folder is fsynced: a crash at any moment leaves the old file or the new one, never a torn
one, and a refused overwrite leaves the existing file untouched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from covidcxr.errors import OutputExistsError

__all__ = ["atomic_write", "write_bytes", "write_text"]


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not possible (nor needed) on Windows.
    if os.name == "nt":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _file_mode(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _link_without_replacing(temporary: Path, target: Path) -> None:
    # A hard link fails if the target exists, atomically: no window between checking for
    # the file and creating it. Filesystems without hard links fall back to a check.
    try:
        os.link(temporary, target)
    except FileExistsError:
        raise OutputExistsError(
            f"{target} already exists; pass overwrite=True to replace it"
        ) from None
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        if target.exists():
            raise OutputExistsError(
                f"{target} already exists; pass overwrite=True to replace it"
            ) from None
        temporary.replace(target)
    else:
        temporary.unlink()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[IO[bytes]]:
    """Open a temporary file beside ``path``; on success, fsync it and move it to ``path``.

    If the ``with`` block raises (or the process dies), ``path`` is untouched and the
    temporary file is removed (after a hard crash it is left as ``.<name>.*.tmp``). The new
    file gets the existing file's permissions, or those a plain ``open`` would give.

    Parameters
    ----------
    path
        The file to write.
    overwrite
        Whether an existing file may be replaced.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false (checked again, atomically, at the
        end; the existing file is never touched).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.bin"
    >>> with atomic_write(target) as handle:
    ...     _ = handle.write(b"complete")
    >>> target.read_bytes()
    b'complete'
    """
    target = Path(path)
    if not overwrite and target.exists():  # fail before the caller does the work
        raise OutputExistsError(f"{target} already exists; pass overwrite=True to replace it")
    directory = target.parent if str(target.parent) else Path()
    descriptor, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            # mkstemp creates the file 0600; give it the mode it would otherwise have.
            if hasattr(os, "fchmod"):  # POSIX; Windows files have no such modes
                os.fchmod(handle.fileno(), _file_mode(target))
            os.fsync(handle.fileno())
        if overwrite:
            temporary.replace(target)
        else:
            _link_without_replacing(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    _fsync_directory(directory)


def write_bytes(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically, creating missing parent folders.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out" / "a.bin"
    >>> write_bytes(target, b"1").read_bytes()
    b'1'
    >>> write_bytes(target, b"2")
    Traceback (most recent call last):
    ...
    covidcxr.errors.OutputExistsError: ... already exists; pass overwrite=True to replace it
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target, overwrite=overwrite) as handle:
        handle.write(data)
    return target


def write_text(path: str | os.PathLike[str], text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`write_bytes`)."""
    return write_bytes(path, text.encode("utf-8"), overwrite=overwrite)
