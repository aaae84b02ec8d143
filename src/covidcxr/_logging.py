"""Quiet by default: the library's logger, and what the command line shows at each ``-v``.

The library only logs (``logging.getLogger("covidcxr")``, which carries a
:class:`logging.NullHandler`, so nothing is printed unless the application configures
logging) and warns. The command line configures both from its ``-v`` count:

0
    warnings as one ``warning: ...`` line each, progress bars, results; TensorFlow's
    start-up messages are silenced.
1 (``-v``)
    also the library's INFO log lines.
2 (``-vv``)
    also DEBUG lines, and TensorFlow's own C++ log as it prints it.

TensorFlow prints its start-up lines (CUDA probing such as "failed call to cuInit",
CPU-feature and oneDNN notices) from C++ before its logging is initialised, so
``TF_CPP_MIN_LOG_LEVEL`` alone does not silence all of them: :func:`import_tensorflow`
imports it with the process's standard error briefly pointed at ``os.devnull``. The GPU
is left alone (``CUDA_VISIBLE_DEVICES`` is never set), so a machine that has one still
uses it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Final, TextIO

__all__ = ["LOGGER_NAME", "configure_console", "import_tensorflow"]

LOGGER_NAME: Final = "covidcxr"
_LEVELS: Final = (logging.WARNING, logging.INFO, logging.DEBUG)


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at ``os.devnull`` (C++ writes there, not to sys.stderr)."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no standard error to silence
        yield
        return
    try:
        with Path(os.devnull).open("w", encoding="utf-8") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow(verbosity: int = 0) -> None:
    """Import TensorFlow now, silencing its start-up lines unless ``verbosity >= 2``.

    Errors still surface: a failed import raises as usual. Does nothing if TensorFlow is
    already imported or not installed.
    """
    if "tensorflow" in sys.modules:
        return
    if verbosity >= 2:
        with contextlib.suppress(ImportError):
            import tensorflow  # noqa: PLC0415 - imported for its side effects
        return
    # Errors only, from TensorFlow's C++ log, once it is initialised.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _stderr_silenced(), contextlib.suppress(ImportError):
        import tensorflow  # noqa: F401, PLC0415

    with contextlib.suppress(ImportError):
        import absl.logging  # noqa: PLC0415 - installed with TensorFlow

        absl.logging.set_verbosity(absl.logging.ERROR)


def _one_line_warning(  # noqa: PLR0917 - warnings.showwarning's signature
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    stream = file if file is not None else sys.stderr
    # A warning may say it in other words for the console (SkippedItemsWarning does).
    text = getattr(message, "console_text", message)
    with contextlib.suppress(OSError):
        stream.write(f"warning: {text}\n")


_console_handler: logging.Handler | None = None


def configure_console(verbosity: int) -> None:
    """Configure logging and warnings for a command-line run with ``verbosity`` ``-v``s.

    The ``covidcxr`` logger gets one handler writing ``level: message`` to standard error
    at WARNING, INFO (``-v``) or DEBUG (``-vv``); warnings print as one
    ``warning: message`` line each (Python's filters still decide which are shown).
    """
    global _console_handler  # noqa: PLW0603 - one handler per process, however often called
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(_LEVELS[min(max(verbosity, 0), len(_LEVELS) - 1)])
    if _console_handler is None:
        _console_handler = logging.StreamHandler()
        _console_handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(_console_handler)
    warnings.showwarning = _one_line_warning
