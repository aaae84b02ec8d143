"""Where the backbone's pretrained weights come from, and the error when they cannot be had.

ImageNet weights for VGG19 are the ones Keras publishes (the "no top" file, convolutional
layers only). Keras downloads them on first use into its cache
(``$KERAS_HOME/models``, by default ``~/.keras/models``) and checks their md5. Without
network access the download fails; :func:`resolve_imagenet_weights` turns that into a
:class:`~covidcxr.errors.WeightsUnavailableError` that says how to supply the file by hand.
"""

# TensorFlow/Keras are imported inside functions on purpose: importing covidcxr stays fast.
# ruff: noqa: PLC0415

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from covidcxr.errors import WeightsUnavailableError

__all__ = [
    "IMAGENET_NOTOP_FILENAME",
    "IMAGENET_NOTOP_MD5",
    "IMAGENET_NOTOP_URL",
    "keras_cache_dir",
    "resolve_imagenet_weights",
    "resolve_weights_file",
]

#: The file name Keras caches the VGG19 ImageNet "no top" weights under.
IMAGENET_NOTOP_FILENAME: Final = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
#: Its md5, as Keras checks it (``keras.applications.vgg19``).
IMAGENET_NOTOP_MD5: Final = "253f8cb515780f3b799900260a226db6"
#: Where Keras downloads it from.
IMAGENET_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/" + IMAGENET_NOTOP_FILENAME
)


def keras_cache_dir() -> Path:
    """The folder Keras caches downloaded model weights in (``$KERAS_HOME/models``).

    Examples
    --------
    >>> keras_cache_dir().name
    'models'
    """
    # Mirrors keras.utils.get_file: KERAS_HOME, else ~/.keras (falling back to /tmp/.keras
    # only when the home folder is not writable, which we do not second-guess here).
    home = os.environ.get("KERAS_HOME") or str(Path("~").expanduser() / ".keras")
    return Path(home) / "models"


def resolve_imagenet_weights() -> Path:
    """Return the local path of the VGG19 ImageNet weights, downloading them if needed.

    Returns
    -------
    Path
        The cached, md5-checked weights file.

    Raises
    ------
    WeightsUnavailableError
        If the file is not cached (or fails its md5 check) and cannot be downloaded. The
        message gives the three ways out: a local file, the Keras cache, or
        ``weights=None``.
    """
    import keras

    try:
        fetched = keras.utils.get_file(
            IMAGENET_NOTOP_FILENAME,
            IMAGENET_NOTOP_URL,
            cache_subdir="models",
            file_hash=IMAGENET_NOTOP_MD5,
        )
    except Exception as exc:  # get_file raises bare Exception on any fetch failure
        cached = keras_cache_dir() / IMAGENET_NOTOP_FILENAME
        raise WeightsUnavailableError(
            f"VGG19 ImageNet weights could not be downloaded from {IMAGENET_NOTOP_URL} "
            f"({type(exc).__name__}: {exc}). Either (1) download that file elsewhere and pass "
            "weights='/path/to/" + IMAGENET_NOTOP_FILENAME + "', or (2) copy it to "
            f"{cached} (md5 {IMAGENET_NOTOP_MD5}) so Keras finds it in its cache, or (3) "
            "train from scratch with weights=None (see batch_norm=True in the training docs)."
        ) from exc
    return Path(fetched)


def resolve_weights_file(path: str | os.PathLike[str]) -> Path:
    """Check that a user-supplied weights file exists and is an HDF5 weights file.

    Raises
    ------
    WeightsUnavailableError
        If the file is missing or is not ``.h5``.

    Examples
    --------
    >>> resolve_weights_file("missing.weights.h5")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    covidcxr.errors.WeightsUnavailableError: weights file missing.weights.h5 does not exist...
    """
    weights = Path(path)
    if not weights.is_file():
        raise WeightsUnavailableError(
            f"weights file {weights} does not exist; pass weights='imagenet', weights=None "
            "or the path of an .h5 file with the backbone's weights"
        )
    if weights.suffix.lower() != ".h5":
        raise WeightsUnavailableError(
            f"weights file {weights} is not an .h5 weights file (Keras's "
            f"{IMAGENET_NOTOP_FILENAME} or a backbone's .weights.h5)"
        )
    return weights
