"""Writing files safely: atomically, and never over what the user owns unless asked.

Every file covidcxr writes for a user (saved models, reports, annotated images) goes
through this module. A file is written to a temporary file beside its target, flushed and
fsynced, then renamed (or, when replacing is not allowed, hard-linked) into place, and the
folder is fsynced: a crash at any moment leaves the old file or the new one, never a torn
one, and a refused overwrite leaves the existing file untouched.

A directory written as a unit (a saved pipeline, a report, a demo's output) is staged
beside its target and renamed into place by :func:`output_directory`. It carries a marker
(:data:`MARKER_NAME`) naming what wrote it and every file it holds; ``overwrite=True``
replaces only such a directory (or one laid out exactly as covidcxr wrote it before
markers), never a folder holding the user's files, a file or a symbolic link
(:func:`check_output_directory`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final, Literal, TypeAlias

from covidcxr._version import __version__
from covidcxr.errors import OutputError, OutputExistsError

__all__ = [
    "CHECKPOINT_LOCK_NAME",
    "MARKER_NAME",
    "OutputKind",
    "atomic_write",
    "check_checkpoint_location",
    "check_new_files",
    "check_output_directory",
    "check_output_location",
    "checkpoint_lock",
    "claim_file",
    "file_batch",
    "new_file_mode",
    "output_directory",
    "recover_output_directory",
    "remove_stale_files",
    "staged_file",
    "write_bytes",
    "write_text",
]


_log = logging.getLogger(__name__)

# The errors that mean "this place cannot take the output" rather than a bug: they become
# an OutputError naming the path, not a traceback.
_WRITE_REFUSALS: Final = frozenset(
    {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG}
)
_WRITE_REASONS: Final[Mapping[int, str]] = {
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EFBIG: "the file is too large for the file system",
}


def _refusal(error: OSError, target: Path) -> OutputError | None:
    """The :class:`OutputError` an ``OSError`` met while writing ``target`` stands for.

    ``None`` when it is not a refusal to write, or when a permission error concerns a file
    elsewhere (an input being read, say): that one is not the output's fault.
    """
    if error.errno not in _WRITE_REFUSALS:
        return None
    if error.errno in (errno.EACCES, errno.EPERM) and error.filename is not None:
        concerned = Path(os.fsdecode(error.filename)).absolute()
        if not concerned.is_relative_to(target.absolute().parent):
            return None
    reason = _WRITE_REASONS[error.errno]
    where = ""
    if error.filename is not None:  # named unless it is covidcxr's own staging
        concerned = Path(os.fsdecode(error.filename)).absolute()
        if not concerned.is_relative_to(target.absolute().parent):
            where = f" ({concerned})"
    return _output_error(
        error.errno,
        f"cannot write {target}: {reason}{where}; nothing was replaced there: choose "
        "another location or free space, and run again",
    )


def _output_error(code: int, message: str) -> OutputError:
    # OutputError(code, message) would print as "[Errno 30] ...": the message alone
    # reads better on one line, and errno is still there for code that checks it.
    error = OutputError(message)
    error.errno = code
    return error


@contextlib.contextmanager
def _refusals_as_output_errors(target: Path) -> Iterator[None]:
    try:
        yield
    except OutputError:
        raise
    except OSError as error:
        refusal = _refusal(error, target)
        if refusal is None:
            raise
        raise refusal from error


# Names of what covidcxr stages beside a target carry the process that made them (and a
# digest of its host name): a later save or load can tell a leftover of a process that
# died (removed) from the work of one still running (left alone).
_HOST: Final = hashlib.sha256(socket.gethostname().encode("utf-8")).hexdigest()[:8]


def _owner_tag() -> str:
    return f"{os.getpid()}@{_HOST}"


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would terminate it there; never call it stale
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def _stale_owner(pid: str, host: str) -> bool:
    """Whether the process ``pid`` on host digest ``host`` is known to be gone."""
    return host == _HOST and not _process_alive(int(pid))


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not possible (nor needed) on Windows.
    if os.name == "nt":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _current_umask() -> int:
    """The process's umask, read without changing it where the system allows.

    ``os.umask`` can only be read by setting it, and for that moment every file another
    thread creates gets the wrong mode; Linux reports it in ``/proc/self/status``.
    """
    try:
        with Path("/proc/self/status").open(encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o077)  # the strictest moment, should another thread create a file
    os.umask(umask)
    return umask


def new_file_mode() -> int:
    """The mode a new file gets from :func:`open`: ``0o666`` less the process's umask.

    :func:`tempfile.mkstemp` creates its file ``0o600``; a file written through one and
    renamed into place (a cache entry, a saved model) is given this mode instead, so that
    it is as readable as any other file the user creates there.

    Examples
    --------
    >>> new_file_mode() & ~0o666
    0
    """
    return 0o666 & ~_current_umask()


def _file_mode(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        return new_file_mode()


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
    temporary file is removed (after a hard crash it is left as
    ``.<name>.<pid>@<host>.*.tmp``; :func:`remove_stale_files` removes it). The new file
    gets the existing file's permissions, or those a plain ``open`` would give.

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
        end; the existing file is never touched), or ``path`` is a directory.
    OutputError
        If the file system refuses the write (read-only, full, no permission).

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
    if target.is_dir() and not target.is_symlink():
        raise OutputExistsError(
            f"{target} is a directory; refusing to replace it with a file (choose another path)"
        )
    if not overwrite and target.exists():  # fail before the caller does the work
        raise OutputExistsError(f"{target} already exists; pass overwrite=True to replace it")
    directory = target.parent if str(target.parent) else Path()
    with _refusals_as_output_errors(target):
        descriptor, name = tempfile.mkstemp(
            prefix=f".{target.name}.{_owner_tag()}.", suffix=".tmp", dir=directory
        )
    temporary = Path(name)
    try:
        with _refusals_as_output_errors(target):
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
    with _refusals_as_output_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target, overwrite=overwrite) as handle:
        handle.write(data)
    return target


def write_text(path: str | os.PathLike[str], text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`write_bytes`)."""
    return write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


# -- directories written as a unit ------------------------------------------------------

#: The file that marks a directory covidcxr wrote as a unit (a saved pipeline, a report, a
#: demo's output): JSON naming what wrote it (``kind``, ``covidcxr_version``) and every
#: file it wrote (``files``). ``overwrite=True`` replaces such a directory only while it
#: holds nothing else.
MARKER_NAME: Final = ".covidcxr-output.json"

OutputKind: TypeAlias = Literal["pipeline", "report", "demo", "predictions"]

_WRITER: Final = "covidcxr"


def _leftover_temporary(name: str) -> bool:
    # What a crashed atomic_write (".name.XXXX.tmp") or older report writer (".name.tmp")
    # left behind: covidcxr's own, safe to delete with the directory.
    return name.startswith(".") and name.endswith(".tmp")


def _foreign_entry(directory: Path, allowed: Callable[[str], bool]) -> str | None:
    """The first entry below ``directory`` (relative, ``/``-separated) not ``allowed``.

    Symbolic links are never allowed (covidcxr writes none); directories are allowed when
    everything in them is.
    """

    def unreadable(error: OSError) -> None:
        raise error  # a folder that cannot be listed cannot be known to be ours

    try:
        walk = list(os.walk(directory, onerror=unreadable))
    except OSError as error:
        return f"{error.filename} (cannot be read)"
    for root, dirs, files in walk:
        base = Path(root)
        for name in sorted([*dirs, *files]):
            path = base / name
            relative = path.relative_to(directory).as_posix()
            if path.is_symlink():
                return f"{relative} (a symbolic link)"
            if name in files and not allowed(relative):
                return relative
    return None


def _written_by_others(directory: Path, allowed: Callable[[str], bool]) -> str | None:
    foreign = _foreign_entry(directory, allowed)
    return None if foreign is None else f"{foreign} was not written by covidcxr"


def _marker(directory: Path) -> dict[str, Any] | None:
    path = directory / MARKER_NAME
    if path.is_symlink() or not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("written_by") == _WRITER else None


_LEGACY_PIPELINE_FILES: Final = frozenset(
    {"pipeline.json", "classifier", "detector", "metadata.json", "model_card.md"}
)


def _legacy_pipeline(directory: Path) -> str | None:
    # What covidcxr wrote before markers: pipeline.json (format covidcxr-pipeline) beside
    # the classifier's and detector's saved models, and the model card an evaluation
    # recorded into such a folder adds (covidcxr.pipeline.record_evaluation).
    foreign = _written_by_others(
        directory,
        lambda path: path.split("/")[0] in _LEGACY_PIPELINE_FILES,
    )
    if foreign is not None:
        return foreign
    try:
        manifest = json.loads((directory / "pipeline.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "it has neither a covidcxr marker nor a pipeline.json"
    if not isinstance(manifest, dict) or manifest.get("format") != "covidcxr-pipeline":
        return "its pipeline.json is not a covidcxr pipeline manifest"
    return None


def _legacy_report(directory: Path) -> str | None:
    # report.html, report.md, report.json and figures/*.png, as written before markers.
    def allowed(path: str) -> bool:
        parts = path.split("/")
        if _leftover_temporary(parts[-1]):
            return len(parts) == 1 or (len(parts) == 2 and parts[0] == "figures")
        if len(parts) == 1:
            return parts[0] in ("report.html", "report.md", "report.json")
        return len(parts) == 2 and parts[0] == "figures" and parts[1].endswith(".png")

    return _written_by_others(directory, allowed)


def _legacy_demo(directory: Path) -> str | None:
    # model/ (a saved pipeline) and report/ (a report), as written before markers.
    for entry in sorted(directory.iterdir()):
        if entry.name not in ("model", "report") or entry.is_symlink() or not entry.is_dir():
            return f"{entry.name} was not written by covidcxr"
        reason = _not_written_by_us(entry, "pipeline" if entry.name == "model" else "report")
        if reason is not None:
            return f"in {entry.name}/: {reason}"
    return None


_PARTITION_SUFFIXES: Final = (".parquet", ".csv", ".json")


def _legacy_predictions(directory: Path) -> str | None:
    # A folder of prediction partitions (covidcxr.ray.predict) as written before markers:
    # partition files beside _summary.json, and _skipped.csv when items were skipped.
    def allowed(path: str) -> bool:
        if "/" in path:
            return False
        return path in ("_summary.json", "_skipped.csv") or path.endswith(_PARTITION_SUFFIXES)

    foreign = _written_by_others(directory, allowed)
    if foreign is not None:
        return foreign
    if not (directory / "_summary.json").is_file():
        return "it has neither a covidcxr marker nor a _summary.json"
    return None


_DESCRIPTIONS: Final[Mapping[str, str]] = {
    "pipeline": "saved pipeline",
    "report": "report",
    "demo": "demo",
    "predictions": "predictions folder",
}
_LEGACY: Final[Mapping[str, Callable[[Path], str | None]]] = {
    "pipeline": _legacy_pipeline,
    "report": _legacy_report,
    "demo": _legacy_demo,
    "predictions": _legacy_predictions,
}
# A report, a demo or a predictions folder may go into an empty folder made for it; a
# saved pipeline's folder must not exist yet unless overwrite is given.
_EMPTY_IS_FREE: Final = frozenset({"report", "demo", "predictions"})


def _not_written_by_us(directory: Path, kind: str) -> str | None:
    """Why ``directory`` is not a ``kind`` covidcxr wrote (``None`` when it is)."""
    marker = _marker(directory)
    if marker is None:
        return _LEGACY[kind](directory)
    if marker.get("kind") != kind:
        return f"it holds a covidcxr {marker.get('kind')!s}, not a {_DESCRIPTIONS[kind]}"
    listed = marker.get("files")
    written = set(listed) if isinstance(listed, list) else set()
    return _written_by_others(directory, lambda path: path in written or path == MARKER_NAME)


def check_output_directory(
    path: str | os.PathLike[str], kind: OutputKind, *, overwrite: bool = False
) -> None:
    """Refuse to write a ``kind`` directory at ``path`` unless it is free or covidcxr's own.

    A path is free when nothing is there (or, for anything but a saved pipeline, an empty
    folder). With ``overwrite``, a directory covidcxr wrote as a ``kind`` (it carries the
    :data:`MARKER_NAME` marker and nothing else, or it is laid out exactly as covidcxr
    wrote it before markers) may be replaced too. Anything else — a file, a symbolic link,
    a folder holding files covidcxr did not write — is never replaced. Call it before
    long work; :func:`output_directory` checks again when it writes.

    It first puts back what a crashed save had moved aside and removes what crashed saves
    left (:func:`recover_output_directory`), and last checks that the location can be
    written at all (:func:`check_output_location`).

    Parameters
    ----------
    path
        Where the directory is to be written.
    kind
        ``"pipeline"``, ``"report"``, ``"demo"`` or ``"predictions"`` (a folder of
        prediction partitions, :func:`covidcxr.ray.predict`).
    overwrite
        Whether a ``kind`` directory covidcxr wrote earlier may be replaced.

    Raises
    ------
    OutputExistsError
        Naming ``path`` and why it may not be written.
    OutputError
        If nothing can be written there (read-only, full, no permission).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "thesis.txt").write_text("mine")
    >>> check_output_directory(folder, "report", overwrite=True)
    Traceback (most recent call last):
    ...
    covidcxr.errors.OutputExistsError: ... not written by covidcxr ...
    """
    target = Path(path)
    recover_output_directory(target, kind)
    _check_not_taken(target, kind, overwrite=overwrite)
    check_output_location(target)


def _check_not_taken(target: Path, kind: OutputKind, *, overwrite: bool) -> None:
    what = _DESCRIPTIONS[kind]
    if not os.path.lexists(target):
        return
    if target.is_symlink():
        raise OutputExistsError(
            f"{target} is a symbolic link, not a {what} directory written by covidcxr; "
            "refusing to replace it (choose another path)"
        )
    if not target.is_dir():
        raise OutputExistsError(
            f"{target} is a file, not a {what} directory written by covidcxr; refusing to "
            "replace it (choose another path)"
        )
    entries = sorted(entry.name for entry in target.iterdir())
    if not entries:
        if overwrite or kind in _EMPTY_IS_FREE:
            return
        raise OutputExistsError(
            f"{target} already exists; pass overwrite=True (--overwrite) to replace it"
        )
    reason = _not_written_by_us(target, kind)
    if reason is not None:
        raise OutputExistsError(
            f"{target} already exists and was not written by covidcxr as a {what} ({reason}); "
            "refusing to replace it: choose another path, or move your files out first"
        )
    if not overwrite:
        shown = ", ".join(name for name in entries if name != MARKER_NAME)
        raise OutputExistsError(
            f"{target} already holds a {what} written by covidcxr ({shown}); choose another "
            "directory or pass overwrite=True (--overwrite) to replace it"
        )


def _directory_mode(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o777 & ~_current_umask()


# -- staging beside the target, and recovering from a crash ----------------------------
#
# A directory is staged as ``.<name>.<pid>@<host>.<hex>.new`` beside its target, with a
# marker saying it is covidcxr's staging from the first moment. It replaces the target by
# one atomic exchange (Linux ``renameat2(RENAME_EXCHANGE)``): the target path never stops
# holding a complete directory, and the old one is left under the staging name, to be
# removed. Elsewhere (or on a file system without the exchange) the old target is renamed
# to ``.<name>.<pid>@<host>.<hex>.old`` first: a crash between the two renames leaves no
# directory at the path, only that complete backup, which the next save or load of the
# path (:func:`recover_output_directory`) renames back. Whatever is to be removed is
# renamed ``….del`` first, so a crash while removing never leaves half a directory that
# could be taken for a backup.

_ROLES: Final = ("new", "old", "del")
# What covidcxr versions before process-tagged names left: ``.<name>.<8 chars>.new`` /
# ``.old`` and, earlier, ``.<name>.old``. That last name is one a person might give a
# backup too: it is put back when nothing is at the path, but never removed.
_LEGACY_QUIET_SECONDS: Final = 15 * 60
_TEMPORARY_FILE_SUFFIXES: Final = ("tmp", "keras")


def _stage_path(target: Path, role: str) -> Path:
    return target.with_name(f".{target.name}.{_owner_tag()}.{secrets.token_hex(4)}.{role}")


def _leftover_pattern(name: str) -> re.Pattern[str]:
    escaped = re.escape(name)
    return re.compile(
        rf"\.{escaped}\.(?P<pid>\d+)@(?P<host>[0-9a-f]{{8}})\.[0-9a-f]{{8}}\.(?P<role>new|old|del)"
        rf"|\.{escaped}(?:\.(?P<oldest>old)|\.[a-z0-9_]{{8}}\.(?P<legacy>new|old))"
    )


def _quiet_for(path: Path, seconds: float) -> bool:
    """Whether nothing in ``path`` (a folder) changed for ``seconds``."""
    newest = 0.0
    for root, dirs, files in os.walk(path):
        for name in [".", *dirs, *files]:
            with contextlib.suppress(OSError):
                newest = max(newest, (Path(root) / name).lstat().st_mtime)
    return time.time() - newest >= seconds


def _emptied(directory: Path) -> bool:
    """Whether ``directory`` holds nothing but empty folders and leftover temporaries."""
    return _foreign_entry(directory, lambda path: _leftover_temporary(path.split("/")[-1])) is None


def _removable(folder: Path, kind: OutputKind) -> bool:
    """Whether a leftover beside a target is covidcxr's own (so removing it loses nothing).

    It carries covidcxr's marker (a staging marker, or a written directory's), or it is
    laid out exactly as covidcxr wrote it before markers, or nothing is left in it.
    """
    if folder.is_symlink() or not folder.is_dir():
        return False
    return _marker(folder) is not None or _emptied(folder) or _LEGACY[kind](folder) is None


def _remove_tree(folder: Path) -> None:
    """Remove a folder covidcxr wrote, its marker and manifest last in every folder.

    A crash part-way leaves a folder that still carries them (or is empty), so the next
    recovery still knows it for covidcxr's and finishes the job.
    """
    last = (MARKER_NAME, "pipeline.json")

    def remove(directory: Path) -> None:
        entries = sorted(directory.iterdir(), key=lambda entry: entry.name in last)
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                remove(entry)
            else:
                entry.unlink()
        directory.rmdir()

    remove(folder)


def _discard(folder: Path) -> None:
    """Rename ``folder`` to a ``….del`` name, then remove it."""
    doomed = folder
    match = re.fullmatch(r"(?P<stem>.*)\.(?:new|old)", folder.name)
    if match is not None:
        doomed = folder.with_name(f"{match['stem']}.del")
        folder.rename(doomed)
    _remove_tree(doomed)


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library without it (glibc < 2.28, musl < 1.2.?)
        return None
    function.argtypes = [
        ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint,
    ]  # fmt: skip
    function.restype = ctypes.c_int
    return function


_AT_FDCWD: Final = -100
_RENAME_EXCHANGE: Final = 2


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step; ``False`` where the system cannot.

    Linux's ``renameat2(RENAME_EXCHANGE)`` (through ctypes: Python has no binding). Not
    every file system supports it (some network and FUSE ones answer ``EINVAL``); then
    the caller falls back to two renames.
    """
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    result = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(first), None, os.fspath(second))


def _stale_leftovers(target: Path) -> list[tuple[Path, str]]:
    """The folders beside ``target`` that crashed writes of it left: (folder, role)."""
    pattern = _leftover_pattern(target.name)
    try:
        names = sorted(entry.name for entry in os.scandir(target.parent))
    except OSError:
        return []
    stale: list[tuple[Path, str]] = []
    for name in names:
        match = pattern.fullmatch(name)
        folder = target.parent / name
        if match is None or name == target.name or folder.is_symlink() or not folder.is_dir():
            continue
        if match["pid"] is not None:
            if _stale_owner(match["pid"], match["host"]):
                stale.append((folder, match["role"]))
        elif _quiet_for(folder, _LEGACY_QUIET_SECONDS):
            # Written by a covidcxr without process ids: only an old enough one is stale.
            role = "kept" if match["oldest"] else match["legacy"]
            stale.append((folder, role))
    return stale


def recover_output_directory(path: str | os.PathLike[str], kind: OutputKind) -> None:
    """Put back what a crashed write of a ``kind`` directory at ``path`` moved aside; tidy up.

    A process killed while writing leaves covidcxr's staging folders beside ``path``,
    named after it with the process id. For every one whose process is gone (and only
    those: a save running in another live process is left alone):

    - if nothing is at ``path``, the complete directory a crashed replacement had moved
      aside (``.<name>.<pid>@<host>.<hex>.old``) is renamed back: the path holds the
      directory it held before that save began;
    - everything else is removed, once it is known to be covidcxr's (it carries covidcxr's
      marker, or is laid out as covidcxr wrote it before markers). A folder of the user's
      files is never removed, whatever its name.

    :func:`output_directory` and :func:`check_output_directory` call it first; so does
    loading a saved pipeline. It never raises: what cannot be tidied (a read-only disk,
    say) is left, with a log message.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "model"
    >>> recover_output_directory(target, "pipeline")  # nothing to do
    """
    target = _absolute(Path(path))
    stale = _stale_leftovers(target)
    try:
        if not os.path.lexists(target):
            backups = [
                folder
                for folder, role in stale
                if role in ("old", "kept") and _not_written_by_us(folder, kind) is None
            ]
            if backups:
                newest = max(backups, key=lambda folder: folder.stat().st_mtime)
                newest.rename(target)
                _fsync_directory(target.parent)
                _log.warning(
                    "%s: put back the %s a crashed save had moved aside (%s)",
                    target,
                    _DESCRIPTIONS[kind],
                    newest.name,
                )
        for folder, role in stale:
            if role == "kept" or (role == "old" and not os.path.lexists(target)):
                # A name a person might give a backup; or the only copy left, which is
                # never removed while nothing is at the path.
                continue
            if os.path.lexists(folder) and _removable(folder, kind):
                _discard(folder)
                _log.info("%s: removed %s, left by a crashed save", target, folder.name)
    except OSError as error:
        _log.warning("%s: could not tidy what a crashed save left (%s)", target, error)


def check_checkpoint_location(path: str | os.PathLike[str]) -> None:
    """Make the folder of checkpoint file ``path`` ready before training starts.

    Refuses a folder that is a file or cannot be made, so that training does not run an
    epoch before failing to save it, and removes what a killed process left half-written
    there (:func:`remove_stale_files`), which would otherwise pile up one per kill.

    Raises
    ------
    OutputError
        If the folder is a file or cannot be made.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> check_checkpoint_location(pathlib.Path(tempfile.mkdtemp()) / "run" / "checkpoint.npz")
    """
    folder = Path(path).parent
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: a file, not a folder; checkpoint_dir must be a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{folder}: cannot make the checkpoint folder ({error})") from error
    remove_stale_files(path)


#: The file a training process holds locked in its checkpoint folder.
CHECKPOINT_LOCK_NAME: Final = ".covidcxr-training.lock"


@contextlib.contextmanager
def checkpoint_lock(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Hold checkpoint folder ``folder`` for this process while a training runs.

    Two processes training into one folder would each resume from, and overwrite, the
    other's checkpoint: the file would flip between two runs, and whichever saved last
    would win. The lock is an advisory ``flock`` on :data:`CHECKPOINT_LOCK_NAME` in the
    folder, which the system releases when the process ends, even on ``kill -9``: the lock
    file, left in the folder, holds nothing by itself. It says which process (and host)
    last held it. Nothing is locked where it cannot be: on Windows (no ``fcntl``), in a
    read-only folder (where this process writes nothing either: a finished checkpoint is
    only read), and on a file system that cannot lock files, which is said in a warning.

    Raises
    ------
    OutputError
        If another process holds the folder (the message names it), or the folder cannot
        be made.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with checkpoint_lock(folder):
    ...     pass
    """
    try:
        import fcntl  # noqa: PLC0415 - POSIX only
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(folder) / CHECKPOINT_LOCK_NAME
    descriptor = _open_lock_file(path)
    if descriptor is None:  # a read-only folder: this process writes nothing there either
        yield
        return
    try:
        locked = _lock(fcntl, descriptor, folder)
        if locked:
            with contextlib.suppress(OSError):  # a lock file of another user's: not writable
                os.ftruncate(descriptor, 0)
                os.pwrite(descriptor, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        try:
            yield
        finally:
            if locked:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _lock(fcntl: Any, descriptor: int, folder: str | os.PathLike[str]) -> bool:
    """Take the lock on ``descriptor``: ``True``, or ``False`` where nothing can lock."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in _NO_LOCKING:
            warnings.warn(
                f"{os.fspath(folder)}: this file system cannot lock files ({error.strerror}); "
                "training goes on unlocked: make sure no other run uses this checkpoint_dir",
                stacklevel=4,
            )
            return False
        if error.errno not in {errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK}:
            message = f"{os.fspath(folder)}: cannot lock the checkpoint folder ({error})"
            raise OutputError(message) from error
        holder = os.pread(descriptor, 200, 0).decode("utf-8", "replace").strip()
        raise OutputError(
            f"{os.fspath(folder)}: another training process ({holder or 'unknown'}) is using "
            "this checkpoint folder; give each run its own checkpoint_dir, or wait for that "
            "one to finish"
        ) from None
    return True


# flock's errors where the file system cannot lock at all (NFS without lockd, some FUSE
# and SMB mounts, Lustre without -o flock).
_NO_LOCKING: Final = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP})


def _open_lock_file(path: Path) -> int | None:
    """A descriptor of the lock file (made if need be), or ``None`` in a read-only folder.

    A lock file another user made (``0644``) cannot be opened for writing, but ``flock``
    needs only a descriptor: it is opened for reading then.
    """
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{folder}: cannot make the checkpoint folder ({error})") from error
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        pass
    except OSError as error:
        if error.errno != errno.EROFS:
            raise OutputError(f"{folder}: cannot lock the checkpoint folder ({error})") from error
    try:
        return os.open(path, os.O_RDONLY)
    except OSError:
        return None


def remove_stale_files(path: str | os.PathLike[str]) -> None:
    """Remove the temporary files a killed process left while writing ``path``.

    :func:`atomic_write` (and a saved model's staging) name their temporary files
    ``.<name>.<pid>@<host>.<random>.tmp`` (or ``.keras``) beside ``path``; those of a
    process that is gone are removed. Nothing else is touched. Never raises.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> remove_stale_files(pathlib.Path(tempfile.mkdtemp()) / "model.cxr")
    """
    target = _absolute(Path(path))
    pattern = re.compile(
        rf"\.{re.escape(target.name)}\.(?P<pid>\d+)@(?P<host>[0-9a-f]{{8}})\.[a-z0-9_]{{8}}"
        rf"\.(?:{'|'.join(_TEMPORARY_FILE_SUFFIXES)})"
    )
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        if _stale_owner(match["pid"], match["host"]):
            try:
                Path(entry.path).unlink()
            except OSError as error:
                _log.warning("%s: could not remove %s (%s)", target, entry.name, error)


@contextlib.contextmanager
def staged_file(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """A fresh temporary file name beside ``path``, removed when the block ends.

    For a file another library writes by name (Keras writes a model only to a path
    ending in ``.keras``): it is staged beside its target, never in the system's temporary
    folder, and named ``.<name>.<pid>@<host>.<random><suffix>`` so that, if the process is
    killed, the next write or read of ``path`` removes it (:func:`remove_stale_files`).
    ``suffix`` is ``".tmp"`` or ``".keras"``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "model.cxr"
    >>> with staged_file(target, ".keras") as scratch:
    ...     _ = scratch.write_bytes(b"...")
    ...     scratch.name.startswith(".model.cxr.")
    True
    >>> scratch.exists()
    False
    """
    if suffix.lstrip(".") not in _TEMPORARY_FILE_SUFFIXES:
        raise ValueError(f"suffix must be one of {_TEMPORARY_FILE_SUFFIXES}, not {suffix!r}")
    target = _absolute(Path(path))
    remove_stale_files(target)
    with _refusals_as_output_errors(target):
        descriptor, name = tempfile.mkstemp(
            prefix=f".{target.name}.{_owner_tag()}.", suffix=suffix, dir=target.parent
        )
    os.close(descriptor)
    scratch = Path(name)
    try:
        yield scratch
    finally:
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()


_BATCH_PATTERN: Final = re.compile(
    r"\.covidcxr-batch\.(?P<pid>\d+)@(?P<host>[0-9a-f]{8})\.[0-9a-f]{8}\.new"
)


def _remove_stale_batches(directory: Path) -> None:
    """Remove the staging folders of :func:`file_batch` whose process is gone."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        match = _BATCH_PATTERN.fullmatch(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False):
            continue
        folder = Path(entry.path)
        marker = _marker(folder)
        if marker is None or marker.get("kind") != "batch":
            continue  # named like one, but not covidcxr's: never removed
        if _stale_owner(match["pid"], match["host"]):
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def file_batch(directory: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Write several files into ``directory`` together: all of them, or none.

    For outputs written file by file into a folder the user chose, which may hold the
    user's own files (``covidcxr detect --out``). The ``with`` block writes into a
    staging folder inside ``directory`` (flat: files only). When it ends without error,
    every file is checked against ``directory`` again (as :func:`check_new_files`), then
    moved into place; if it raises (Ctrl-C included), nothing in ``directory`` changes and
    the staging folder is removed, with ``directory`` itself if this call created it. A
    killed process leaves a hidden ``.covidcxr-batch.<pid>@<host>.<random>.new`` folder
    (marked as covidcxr's), removed by the next batch written there.

    Raises
    ------
    OutputExistsError
        If a file to be moved into place exists and ``overwrite`` is false, or is a
        directory; nothing is moved then.
    OutputError
        If the location cannot be written (read-only, full, no permission).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "out"
    >>> with file_batch(folder) as staging:
    ...     _ = write_text(staging / "a.txt", "one")
    ...     _ = write_text(staging / "b.txt", "two")
    >>> sorted(p.name for p in folder.iterdir())
    ['a.txt', 'b.txt']
    >>> try:
    ...     with file_batch(folder, overwrite=True) as staging:
    ...         _ = write_text(staging / "a.txt", "changed")
    ...         raise KeyboardInterrupt
    ... except KeyboardInterrupt:
    ...     pass
    >>> (folder / "a.txt").read_text(), sorted(p.name for p in folder.iterdir())
    ('one', ['a.txt', 'b.txt'])
    """
    target = _absolute(Path(directory))
    created = not os.path.lexists(target)
    with _refusals_as_output_errors(target):
        target.mkdir(parents=True, exist_ok=True)
        _remove_stale_batches(target)
        staging = target / f".covidcxr-batch.{_owner_tag()}.{secrets.token_hex(4)}.new"
        staging.mkdir(mode=0o700)
    try:
        with _refusals_as_output_errors(target):
            marker = {"written_by": _WRITER, "kind": "batch", "state": "staging"}
            write_text(staging / MARKER_NAME, json.dumps(marker) + "\n")
            yield staging
            names = sorted(e.name for e in os.scandir(staging) if e.name != MARKER_NAME)
            check_new_files([target / name for name in names], overwrite=overwrite)
            for name in names:
                if overwrite:
                    (staging / name).replace(target / name)
                else:
                    _link_without_replacing(staging / name, target / name)
            _fsync_directory(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                target.rmdir()  # only if empty: never what others put there meanwhile
        raise
    shutil.rmtree(staging, ignore_errors=True)


def _write_marker(staging: Path, kind: OutputKind) -> None:
    files = sorted(
        relative
        for root, _, names in os.walk(staging)
        for name in names
        if (relative := (Path(root) / name).relative_to(staging).as_posix()) != MARKER_NAME
    )
    marker = {
        "written_by": _WRITER,
        "kind": kind,
        "covidcxr_version": __version__,
        "files": files,
    }
    write_text(staging / MARKER_NAME, json.dumps(marker, indent=2) + "\n", overwrite=True)


def claim_file(directory: str | os.PathLike[str], relative: str) -> None:
    """Add ``relative`` to the files the marker of ``directory`` lists as covidcxr's.

    For a file written into a directory after :func:`output_directory` put it in place
    (the command line's ``skipped.csv``, listed once the work is done): without it, the
    directory would hold a file its marker does not name, and ``overwrite`` would refuse
    to replace it as holding the user's files. A directory without covidcxr's marker is
    left as it is.
    """
    folder = Path(directory)
    marker = _marker(folder)
    if marker is None:
        return
    listed = marker.get("files")
    files = set(listed) if isinstance(listed, list) else set()
    if relative in files:
        return
    marker["files"] = sorted({*files, relative})
    write_text(folder / MARKER_NAME, json.dumps(marker, indent=2) + "\n", overwrite=True)


def _make_staging(target: Path, kind: OutputKind) -> Path:
    """A new folder beside ``target``, marked as covidcxr's staging from the start."""
    staging = _stage_path(target, "new")
    staging.mkdir(mode=0o700)
    try:
        marker = {
            "written_by": _WRITER,
            "kind": kind,
            "state": "staging",
            "pid": os.getpid(),
            "covidcxr_version": __version__,
        }
        write_text(staging / MARKER_NAME, json.dumps(marker, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _swap_into_place(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``; an existing ``target`` is swapped out, then removed.

    With an atomic exchange the path always holds a complete directory. Without one, a
    crash between the two renames leaves the old directory as ``….old`` beside
    ``target``, which :func:`recover_output_directory` puts back.
    """
    if not os.path.lexists(target):
        try:
            staging.rename(target)
        except OSError as error:
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            raise OutputExistsError(f"{target} appeared while writing; nothing replaced") from error
        return
    if _exchange(staging, target):
        _fsync_directory(target.parent)
        _discard_replaced(staging, target)  # it now holds the old directory
        return
    backup = _stage_path(target, "old")
    target.rename(backup)
    try:
        staging.rename(target)
    except BaseException:
        backup.rename(target)
        raise
    _fsync_directory(target.parent)
    _discard_replaced(backup, target)


def _discard_replaced(old: Path, target: Path) -> None:
    # The new directory is in place: the write succeeded. Failing to remove the old one
    # is no reason to report it failed; the next save or load of the path removes it.
    try:
        _discard(old)
    except OSError as error:
        _log.warning("%s: could not remove the directory it replaced (%s)", target, error)


def _absolute(path: Path) -> Path:
    # Resolve the folders above, not the last part: a symbolic link there is refused, not
    # followed. "." and ".." are resolved so the directory has a name to stage beside.
    given = path.absolute()
    return given.resolve() if given.name in ("", "..") else given.parent.resolve() / given.name


@contextlib.contextmanager
def output_directory(
    path: str | os.PathLike[str], kind: OutputKind, *, overwrite: bool = False
) -> Iterator[Path]:
    """Write a ``kind`` directory as a unit: into a staging folder, then swapped into place.

    The ``with`` block writes into the staging folder it is given (beside ``path``). On
    success the marker (:data:`MARKER_NAME`, listing every file) is added and the folder
    replaces ``path`` in one atomic exchange where the system has one (Linux), else by two
    renames, replacing what :func:`check_output_directory` allows, checked on entry and
    again just before. If the block raises, ``path`` is untouched and the staging folder
    is removed. If the process dies at any moment, ``path`` holds the old directory or
    the new one, or (between the two renames) the old one is beside it and the next save
    or load puts it back (:func:`recover_output_directory`); leftovers are removed then.

    Raises
    ------
    OutputExistsError
        If ``path`` may not be written (see :func:`check_output_directory`).
    OutputError
        If the location cannot be written (read-only, full, no permission).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "report"
    >>> with output_directory(target, "report") as staging:
    ...     _ = write_text(staging / "report.md", "# Results")
    >>> sorted(p.name for p in target.iterdir())
    ['.covidcxr-output.json', 'report.md']
    >>> with output_directory(target, "report", overwrite=True) as staging:
    ...     _ = write_text(staging / "report.md", "# Better results")
    >>> (target / "report.md").read_text()
    '# Better results'
    """
    target = _absolute(Path(path))
    check_output_directory(target, kind, overwrite=overwrite)
    with _refusals_as_output_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = _make_staging(target, kind)
    try:
        with _refusals_as_output_errors(target):
            yield staging
            _write_marker(staging, kind)
            staging.chmod(_directory_mode(target))
            _fsync_directory(staging)
            _check_not_taken(target, kind, overwrite=overwrite)  # it may have changed
            _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_directory(target.parent)


def check_output_location(path: str | os.PathLike[str]) -> None:
    """Refuse, before any work, a place where an output cannot be written.

    The nearest folder that exists at or above ``path``'s parent (missing folders are
    created when writing) must be a folder in which a file can be created and written:
    a small probe file is written, flushed to disk and removed. This finds a read-only
    file system, a folder without write permission and a full disk before a long job,
    not after it. (A disk with a little room left can still fill up while writing: that
    is reported then, as an :class:`~covidcxr.errors.OutputError`.)

    Raises
    ------
    OutputError
        Naming ``path`` and why nothing can be written there.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> check_output_location(pathlib.Path(tempfile.mkdtemp()) / "new" / "model")
    """
    target = _absolute(Path(path))
    folder = target.parent
    while not os.path.lexists(folder) and folder.parent != folder:
        folder = folder.parent
    if not folder.is_dir():
        raise _output_error(
            errno.ENOTDIR,
            f"cannot write {target}: {folder} is a file, not a folder; choose another location",
        )
    with _refusals_as_output_errors(folder / target.name):
        descriptor, name = tempfile.mkstemp(
            prefix=f".{target.name}.{_owner_tag()}.", suffix=".tmp", dir=folder
        )
        try:
            os.write(descriptor, b"covidcxr")
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
            with contextlib.suppress(OSError):
                Path(name).unlink()


def check_new_files(paths: Iterable[str | os.PathLike[str]], *, overwrite: bool = False) -> None:
    """Refuse, before anything is written, if any of ``paths`` is taken.

    For outputs written file by file into a folder the user chose (``covidcxr detect``):
    without ``overwrite`` every path must be free; with it, existing files may be replaced,
    but never a directory.

    Raises
    ------
    OutputExistsError
        Naming the taken paths (the first few).
    OutputError
        If a folder they go into cannot be written (see :func:`check_output_location`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = write_text(folder / "b.png", "")
    >>> check_new_files([folder / "a.png", folder / "b.png"])
    Traceback (most recent call last):
    ...
    covidcxr.errors.OutputExistsError: ...b.png already exists; pass overwrite=True ...
    """
    targets = [Path(path) for path in paths]
    by_folder = {target.absolute().parent: target for target in reversed(targets)}
    for target in by_folder.values():
        check_output_location(target)
    folders = [t for t in targets if t.is_dir() and not t.is_symlink()]
    if folders:
        raise OutputExistsError(
            f"{_first_few(folders)} {'is a directory' if len(folders) == 1 else 'are directories'}"
            "; refusing to replace it with a file (choose another output folder)"
        )
    if overwrite:
        return
    taken = [t for t in targets if os.path.lexists(t)]
    if taken:
        raise OutputExistsError(
            f"{_first_few(taken)} already exist{'s' if len(taken) == 1 else ''}; pass "
            "overwrite=True (--overwrite) to replace, or choose another output folder"
        )


def _first_few(paths: Sequence[Path], limit: int = 3) -> str:
    shown = ", ".join(str(p) for p in paths[:limit])
    return shown if len(paths) <= limit else f"{shown} and {len(paths) - limit} more"
