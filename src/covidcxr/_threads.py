"""How many CPU threads TensorFlow computes with, which a training's last bits depend on.

TensorFlow splits a convolution's or a reduction's work over its intra-op threads, and
the order in which partial sums are added follows the split: the same run with 1 and 2
threads ends with weights that differ in their last bits (measured on a U-Net: the loss
of the first epoch 1.1368874 with one thread, 1.1368876 with two; the same count gives
the same bits every time). A checkpoint records the count it was trained with, so a run
resumed under another one says that it will not end bit for bit like an uninterrupted run.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from covidcxr.errors import ResumeMismatchWarning

__all__ = ["compute_threads", "warn_on_other_threads"]


def compute_threads() -> int:
    """TensorFlow's intra-op thread count in this process (the CPUs it may use by default)."""
    import tensorflow as tf  # noqa: PLC0415 - only called while a network trains

    configured = int(tf.config.threading.get_intra_op_parallelism_threads())
    if configured > 0:
        return configured
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def warn_on_other_threads(saved: Any, where: os.PathLike[str] | str) -> None:
    """Warn when a checkpoint written with ``saved`` threads is resumed with another count.

    Checkpoints written before the count was recorded (``saved`` is ``None``) say nothing.
    """
    if not isinstance(saved, int) or isinstance(saved, bool):
        return
    now = compute_threads()
    if saved != now:
        warnings.warn(
            ResumeMismatchWarning(
                f"{os.fspath(where)} was written by a training with {saved} CPU thread(s) "
                f"and resumes with {now}: the result will differ from an uninterrupted run "
                "in the last bits of the weights (thread count changes float rounding)"
            ),
            stacklevel=3,
        )
