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
import errno
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final, Literal, TypeAlias

from covidcxr._version import __version__
from covidcxr.errors import OutputExistsError

__all__ = [
    "MARKER_NAME",
    "OutputKind",
    "atomic_write",
    "check_new_files",
    "check_output_directory",
    "output_directory",
    "write_bytes",
    "write_text",
]


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
        end; the existing file is never touched), or ``path`` is a directory.

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


# -- directories written as a unit ------------------------------------------------------

#: The file that marks a directory covidcxr wrote as a unit (a saved pipeline, a report, a
#: demo's output): JSON naming what wrote it (``kind``, ``covidcxr_version``) and every
#: file it wrote (``files``). ``overwrite=True`` replaces such a directory only while it
#: holds nothing else.
MARKER_NAME: Final = ".covidcxr-output.json"

OutputKind: TypeAlias = Literal["pipeline", "report", "demo"]

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


_DESCRIPTIONS: Final[Mapping[str, str]] = {
    "pipeline": "saved pipeline",
    "report": "report",
    "demo": "demo",
}
_LEGACY: Final[Mapping[str, Callable[[Path], str | None]]] = {
    "pipeline": _legacy_pipeline,
    "report": _legacy_report,
    "demo": _legacy_demo,
}
# A report or a demo may go into an empty folder made for it; a saved pipeline's folder
# must not exist yet unless overwrite is given.
_EMPTY_IS_FREE: Final = frozenset({"report", "demo"})


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

    A path is free when nothing is there (or, for a report or a demo, an empty folder).
    With ``overwrite``, a directory covidcxr wrote as a ``kind`` (it carries the
    :data:`MARKER_NAME` marker and nothing else, or it is laid out exactly as covidcxr
    wrote it before markers) may be replaced too. Anything else — a file, a symbolic link,
    a folder holding files covidcxr did not write — is never replaced. Call it before
    long work; :func:`output_directory` checks again when it writes.

    Parameters
    ----------
    path
        Where the directory is to be written.
    kind
        ``"pipeline"``, ``"report"`` or ``"demo"``.
    overwrite
        Whether a ``kind`` directory covidcxr wrote earlier may be replaced.

    Raises
    ------
    OutputExistsError
        Naming ``path`` and why it may not be written.

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
        umask = os.umask(0)
        os.umask(umask)
        return 0o777 & ~umask


def _write_marker(staging: Path, kind: OutputKind) -> None:
    files = sorted(
        (Path(root) / name).relative_to(staging).as_posix()
        for root, _, names in os.walk(staging)
        for name in names
    )
    marker = {
        "written_by": _WRITER,
        "kind": kind,
        "covidcxr_version": __version__,
        "files": files,
    }
    write_text(staging / MARKER_NAME, json.dumps(marker, indent=2) + "\n")


def _swap_into_place(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``; an existing ``target`` is moved aside, then removed.

    A crash between the two renames leaves the old directory as ``.<name>.<hex>.old``
    beside ``target``: never a half-written directory at ``target``.
    """
    if not os.path.lexists(target):
        try:
            staging.rename(target)
        except OSError as error:  # appeared meanwhile, and not empty
            raise OutputExistsError(f"{target} appeared while writing; nothing replaced") from error
        return
    backup = target.with_name(f".{target.name}.{secrets.token_hex(4)}.old")
    target.rename(backup)
    try:
        staging.rename(target)
    except BaseException:
        backup.rename(target)
        raise
    shutil.rmtree(backup)


def _absolute(path: Path) -> Path:
    # Resolve the folders above, not the last part: a symbolic link there is refused, not
    # followed. "." and ".." are resolved so the directory has a name to stage beside.
    given = path.absolute()
    return given.resolve() if given.name in ("", "..") else given.parent.resolve() / given.name


@contextlib.contextmanager
def output_directory(
    path: str | os.PathLike[str], kind: OutputKind, *, overwrite: bool = False
) -> Iterator[Path]:
    """Write a ``kind`` directory as a unit: into a staging folder, then renamed into place.

    The ``with`` block writes into the staging folder it is given (beside ``path``). On
    success the marker (:data:`MARKER_NAME`, listing every file) is added and the folder is
    renamed to ``path``, replacing what :func:`check_output_directory` allows, checked on
    entry and again just before the rename. If the block raises, ``path`` is untouched and
    the staging folder is removed.

    Raises
    ------
    OutputExistsError
        If ``path`` may not be written (see :func:`check_output_directory`).

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
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".new", dir=target.parent))
    try:
        yield staging
        _write_marker(staging, kind)
        staging.chmod(_directory_mode(target))
        _fsync_directory(staging)
        check_output_directory(target, kind, overwrite=overwrite)  # it may have changed
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_directory(target.parent)


def check_new_files(paths: Iterable[str | os.PathLike[str]], *, overwrite: bool = False) -> None:
    """Refuse, before anything is written, if any of ``paths`` is taken.

    For outputs written file by file into a folder the user chose (``covidcxr detect``):
    without ``overwrite`` every path must be free; with it, existing files may be replaced,
    but never a directory.

    Raises
    ------
    OutputExistsError
        Naming the taken paths (the first few).

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
