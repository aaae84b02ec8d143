"""The models that ship with covidcxr: list them, load them, read their cards.

A shipped model is a trained :class:`~covidcxr.Pipeline` stored inside the installed
package, so that it works offline right after ``pip install`` (no download, ever)::

    >>> import covidcxr.pretrained
    >>> for info in covidcxr.pretrained.available().values():  # doctest: +SKIP
    ...     print(info)
    covidqu-lungs-vgg19-128 (also covid-qu-ex)  4.4 MiB, float16 (float32: detector, lungs)  ...
    >>> pipeline = covidcxr.pretrained.load("covid-qu-ex")  # doctest: +SKIP

Each model's folder holds ``shipped.json`` (name, one-line summary, sizes, the exact
command that rebuilds it from the shared data, and the SHA-256 and size of every file) and
the saved pipeline, its Keras weights stored as float16 (or, for a network float16 would
move, float32) and loaded back as float32.
:func:`load` verifies every file before TensorFlow reads it and refuses a file that does
not match, naming it; :func:`card` gives the model card. :func:`available` reads only the
manifests (TensorFlow is not imported).

Models are added with :func:`package` or ``python -m covidcxr.pretrained add NAME
PIPELINE_DIR --build-command "..."``; :func:`set_aliases` (``python -m covidcxr.pretrained
alias NAME [ALIAS...]``) moves a role name such as ``"covid-qu-ex"`` from one model to
another. Every function takes ``root=`` for a models folder
of one's own (the tests use a temporary one). See :doc:`/model-zoo`.
"""

from covidcxr.pretrained._docs import models_rst
from covidcxr.pretrained._registry import (
    PIPELINE_FOLDER,
    SHIPPED_MANIFEST,
    FileDigest,
    ModelCard,
    ModelInfo,
    available,
    card,
    default_root,
    file_sha256,
    format_size,
    load,
    load_pipeline,
    model_info,
    verify,
)
from covidcxr.pretrained._shipping import (
    DEFAULT_TOLERANCE,
    PrecisionCheck,
    ShippableCopy,
    check_packaging,
    compare_predictions,
    package,
    set_aliases,
    write_shippable_copy,
)

__all__ = [
    "DEFAULT_TOLERANCE",
    "PIPELINE_FOLDER",
    "SHIPPED_MANIFEST",
    "FileDigest",
    "ModelCard",
    "ModelInfo",
    "PrecisionCheck",
    "ShippableCopy",
    "available",
    "card",
    "check_packaging",
    "compare_predictions",
    "default_root",
    "file_sha256",
    "format_size",
    "load",
    "load_pipeline",
    "model_info",
    "models_rst",
    "package",
    "set_aliases",
    "verify",
    "write_shippable_copy",
]
