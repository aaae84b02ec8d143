"""The parameters of :class:`~covidcxr.VGG19Classifier`: recipes, checks, repr, run key.

Everything here reads the constructor parameters only (never fitted state), so a check, a
``repr`` or a checkpoint's run key is the same for an estimator and its
:func:`sklearn.base.clone`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from covidcxr._plain import plain_data
from covidcxr._values import is_finite_real, is_whole
from covidcxr.classify._inputs import Normalization
from covidcxr.errors import ConfigurationError
from covidcxr.labels import LABELS

__all__ = [
    "FROM_SCRATCH",
    "N_BLOCKS",
    "RUN_NEUTRAL",
    "check_params",
    "resolve_normalization",
    "resolve_trainable_blocks",
    "run_key",
]

#: VGG19's convolutional blocks.
N_BLOCKS: Final = 5

# Parameters that change neither the trained model nor how a run proceeds, so a checkpoint
# written under other values of them can still be resumed.
RUN_NEUTRAL: Final = frozenset({"checkpoint_dir", "on_epoch_end", "verbose", "test_time_rotations"})

# Parameters added after checkpoints were first written, with the value that changes
# nothing: at that value they are left out of the run key, so a checkpoint written before
# they existed still resumes.
ADDED_LATER: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "augmentation_scale": 0.0,
        "augmentation_shift": 0.0,
        "augmentation_contrast": 0.0,
        # XLA compiles other kernels, whose rounding differs: it shapes the run too (it
        # was once counted neutral, so a run without it keeps its old key).
        "jit_compile": False,
    }
)

#: The options with which VGG19 learns without pretrained weights on a CPU: the
#: from-scratch recipe of the training docs (batch-normalised, a quarter of the width,
#: 64 px, every block trained with Adam on a cosine schedule), with batches of 16 so that
#: a few dozen images still make several steps an epoch. ``Pipeline()`` trains with it
#: when the ImageNet weights cannot be had; pass it to train offline yourself:
#: ``VGG19Classifier(**FROM_SCRATCH)``.
FROM_SCRATCH: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "input_size": 64,
        "weights": None,
        "batch_norm": True,
        "width_multiplier": 0.25,
        "trainable_blocks": "all",
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "lr_schedule": "cosine",
        "warmup_epochs": 1,
        "augmentation": 10.0,
        "dense_units": 256,
        "weight_averaging": 0.6,
        "epochs": 24,
        "batch_size": 16,
    }
)


def resolve_trainable_blocks(trainable_blocks: Any, weights: Any) -> int:
    """``trainable_blocks`` as a number from 0 to 5, with ``"auto"`` resolved."""
    if trainable_blocks == "auto":
        return 0 if weights is not None else N_BLOCKS
    return N_BLOCKS if trainable_blocks == "all" else int(trainable_blocks)


def resolve_normalization(normalization: Any, weights: Any) -> Normalization:
    """``normalization``, with ``"auto"`` resolved for ``weights``."""
    if normalization != "auto":
        resolved: Normalization = normalization
        return resolved
    return "symmetric" if weights is None else "imagenet"


def check_params(p: Mapping[str, Any]) -> None:  # noqa: PLR0912, PLR0915 - one check per parameter
    """Refuse invalid parameters (``p`` as ``get_params()`` returns them).

    Values are checked as ``Any``: callers (and loaded metadata) may pass anything.

    Raises
    ------
    ConfigurationError
        Naming the first invalid parameter and the value it had.
    """

    def fail(message: str) -> None:
        raise ConfigurationError(f"VGG19Classifier: {message}")

    # True is no epoch count, batch size or seed; comparing a string (or NaN) would raise
    # TypeError or pass.
    integer, number = is_whole, is_finite_real

    if not integer(p["input_size"]) or p["input_size"] < 32:
        fail(f"input_size must be an integer >= 32, got {p['input_size']!r}")
    weights = p["weights"]
    if weights is not None and not isinstance(weights, str | os.PathLike):
        fail(f"weights must be 'imagenet', None or the path of an .h5 file, got {weights!r}")
    if p["trainable_blocks"] not in ("all", "auto") and (
        not integer(p["trainable_blocks"]) or not 0 <= p["trainable_blocks"] <= N_BLOCKS
    ):
        fail(f"trainable_blocks must be 0-5, 'all' or 'auto', got {p['trainable_blocks']!r}")
    if not (integer(p["epochs"]) and p["epochs"] >= 1):
        fail(f"epochs must be a positive integer, got {p['epochs']!r}")
    if not (integer(p["batch_size"]) and p["batch_size"] >= 1):
        fail(f"batch_size must be a positive integer, got {p['batch_size']!r}")
    if not (integer(p["seed"]) and p["seed"] >= 0):
        fail(f"seed must be a non-negative integer, got {p['seed']!r}")
    if not (number(p["learning_rate"]) and p["learning_rate"] > 0):
        fail(f"learning_rate must be a finite number > 0, got {p['learning_rate']!r}")
    if not (number(p["momentum"]) and 0 <= p["momentum"] <= 1):
        fail(f"momentum must be a number in [0, 1], got {p['momentum']!r}")
    if not (integer(p["dense_units"]) and p["dense_units"] >= 1):
        fail(f"dense_units must be a positive integer, got {p['dense_units']!r}")
    if p["optimizer"] not in ("sgd", "adam"):
        fail(f"optimizer must be 'sgd' or 'adam', got {p['optimizer']!r}")
    if p["lr_schedule"] not in ("constant", "cosine"):
        fail(f"lr_schedule must be 'constant' or 'cosine', got {p['lr_schedule']!r}")
    if not (integer(p["warmup_epochs"]) and 0 <= p["warmup_epochs"] < p["epochs"]):
        fail(f"warmup_epochs must be an integer in [0, epochs), got {p['warmup_epochs']!r}")
    if p["augmentation"] is not None and not (
        number(p["augmentation"]) and 0 <= p["augmentation"] <= 180
    ):
        fail(f"augmentation must be None or degrees in [0, 180], got {p['augmentation']!r}")
    for name, upper in (
        ("augmentation_scale", 0.5),
        ("augmentation_shift", 0.5),
        ("augmentation_contrast", 1.0),
    ):
        value = p[name]
        if not (number(value) and 0 <= value < upper):
            fail(f"{name} must be a number in [0, {upper}), got {value!r}")
    rotations = p["test_time_rotations"]
    if isinstance(rotations, str | bytes) or not all(
        number(angle) and -180 <= angle <= 180
        for angle in (rotations if isinstance(rotations, Sequence) else [math.nan])
    ):
        fail(f"test_time_rotations must be a sequence of degrees in [-180, 180], got {rotations!r}")
    if not (integer(p["augmentation_views"]) and p["augmentation_views"] >= 1):
        fail(f"augmentation_views must be a positive integer, got {p['augmentation_views']!r}")
    if p["early_stopping"] is not None and not (
        integer(p["early_stopping"]) and p["early_stopping"] >= 1
    ):
        fail(f"early_stopping must be None or a patience >= 1, got {p['early_stopping']!r}")
    if not (number(p["width_multiplier"]) and p["width_multiplier"] > 0):
        fail(f"width_multiplier must be a finite number > 0, got {p['width_multiplier']!r}")
    if not (number(p["dropout"]) and 0 <= p["dropout"] < 1):
        fail(f"dropout must be in [0, 1), got {p['dropout']!r}")
    if p["weight_averaging"] is not None and not (
        number(p["weight_averaging"]) and 0 <= p["weight_averaging"] < 1
    ):
        fail(f"weight_averaging must be None or in [0, 1), got {p['weight_averaging']!r}")
    for flag in ("batch_norm", "feature_cache"):
        # bool("false") is True: a flag given as text would be taken as on.
        if not isinstance(p[flag], bool):
            fail(f"{flag} must be true or false, got {p[flag]!r}")
    if not (integer(p["verbose"]) and p["verbose"] >= 0):
        fail(f"verbose must be an integer >= 0, got {p['verbose']!r}")
    if p["normalization"] not in ("auto", "imagenet", "symmetric"):
        fail(f"normalization must be 'auto', 'imagenet' or 'symmetric', got {p['normalization']!r}")
    if isinstance(p["class_weight"], str) and p["class_weight"] != "balanced":
        fail(
            f"class_weight must be None, 'balanced' or {{label: weight}}, got {p['class_weight']!r}"
        )
    class_weight = p["class_weight"]
    if class_weight is not None and not isinstance(class_weight, str | Mapping):
        fail(f"class_weight must be None, 'balanced' or {{label: weight}}, got {class_weight!r}")
    if isinstance(class_weight, Mapping) and not all(
        number(w) and w > 0 for w in class_weight.values()
    ):
        fail(f"class_weight's weights must be numbers > 0, got {dict(class_weight)!r}")
    if isinstance(class_weight, Mapping) and not set(class_weight) <= set(LABELS):
        unknown = sorted(map(repr, set(class_weight) - set(LABELS)))
        fail(f"class_weight names {', '.join(unknown)}, which are not labels; known: {LABELS}")
    if (
        isinstance(p["weights"], str)
        and p["weights"] == "imagenet"
        and (p["batch_norm"] or p["width_multiplier"] != 1.0)
    ):
        fail(
            "ImageNet weights exist only for plain VGG19; batch_norm=True and "
            "width_multiplier != 1 need weights=None (or a matching weights file)"
        )


def run_key(params: Mapping[str, Any], fingerprint: Mapping[str, Any]) -> str:
    """The key a checkpoint is resumed under: the parameters that shape the run, and the data.

    Parameters in :data:`RUN_NEUTRAL` are left out, so changing them keeps the checkpoint;
    so are those of ``ADDED_LATER`` at their neutral value. Weights given as a file count
    by their contents, not their path: the file replaced, the run is another.
    """
    shaping = {
        k: v
        for k, v in params.items()
        if k not in RUN_NEUTRAL and not (k in ADDED_LATER and v == ADDED_LATER[k])
    }
    weights = shaping.get("weights")
    if isinstance(weights, str | os.PathLike) and Path(weights).is_file():
        digest = hashlib.sha256()
        with Path(weights).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        shaping["weights"] = {"file": os.fspath(weights), "sha256": digest.hexdigest()}
    document = json.dumps({"params": plain_data(shaping), "data": fingerprint}, sort_keys=True)
    return hashlib.sha256(document.encode()).hexdigest()
