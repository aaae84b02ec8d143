"""What makes two runs comparable: a fingerprint of the data and the versions of the software."""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Iterable
from importlib import metadata

import numpy as np

from covidcxr.records import GroundTruth, XRay

__all__ = ["DataFingerprint", "data_fingerprint", "software_versions", "truth_fingerprint"]

# The distributions whose versions can change a result; missing ones are reported as absent.
_DISTRIBUTIONS = (
    "covidcxr",
    "numpy",
    "opencv-python-headless",
    "scikit-learn",
    "tensorflow",
    "keras",
    "matplotlib",
)


class DataFingerprint:
    """An incremental :func:`data_fingerprint`: feed radiographs one at a time.

    Examples
    --------
    >>> import numpy as np
    >>> from covidcxr import XRay
    >>> xray = XRay(np.zeros((8, 8), np.uint8), id="a.png", label="normal")
    >>> running = DataFingerprint()
    >>> running.update(xray)
    >>> running.hexdigest() == data_fingerprint([xray])
    True
    """

    def __init__(self) -> None:
        self._digest = hashlib.sha256()

    def update(self, xray: XRay) -> None:
        """Add one radiograph (its pixels, label and boxes)."""
        pixels = np.ascontiguousarray(xray.pixels)
        header = f"{pixels.dtype.str}|{pixels.shape}|{xray.label}|" + ";".join(
            f"{b.x:g},{b.y:g},{b.width:g},{b.height:g}" for b in xray.boxes
        )
        self._digest.update(header.encode())
        self._digest.update(pixels.tobytes())

    def hexdigest(self) -> str:
        """``"sha256:"`` and 64 hexadecimal digits."""
        return f"sha256:{self._digest.hexdigest()}"


def data_fingerprint(xrays: Iterable[XRay]) -> str:
    """A SHA-256 digest of the images, labels and boxes, in order.

    Two evaluations with the same fingerprint saw the same pixels, ground truth and order;
    any change to an image, a label or a box changes it. Ids are not part of it, so moving
    a dataset to another folder keeps its fingerprint.

    Parameters
    ----------
    xrays
        The radiographs, read once.

    Returns
    -------
    str
        ``"sha256:"`` followed by 64 hexadecimal digits.

    Examples
    --------
    >>> import numpy as np
    >>> from covidcxr import XRay
    >>> a = XRay(np.zeros((8, 8), np.uint8), id="a.png", label="normal")
    >>> b = XRay(np.zeros((8, 8), np.uint8), id="moved/a.png", label="normal")
    >>> data_fingerprint([a]) == data_fingerprint([b])
    True
    >>> data_fingerprint([a]).startswith("sha256:")
    True
    """
    running = DataFingerprint()
    for xray in xrays:
        running.update(xray)
    return running.hexdigest()


def truth_fingerprint(truths: Iterable[GroundTruth]) -> str:
    """A SHA-256 digest of ground truth without pixels: ids, labels, boxes, ``annotated``.

    What :meth:`~covidcxr.ClassificationEvaluator.evaluate` puts in a report's
    ``data_fingerprint``, since it sees no pixels. Unlike :func:`data_fingerprint` it
    includes the ids, which are all that tells one radiograph from another here; so the
    two kinds of fingerprint never coincide, and a report from a caller that read the
    images (the :class:`~covidcxr.Pipeline`) carries :func:`data_fingerprint` instead.

    Parameters
    ----------
    truths
        The ground truth, read once, in order.

    Returns
    -------
    str
        ``"sha256:"`` followed by 64 hexadecimal digits.

    Examples
    --------
    >>> from covidcxr import GroundTruth
    >>> a = GroundTruth("a.png", "normal")
    >>> truth_fingerprint([a]) == truth_fingerprint([GroundTruth("a.png", "normal")])
    True
    >>> truth_fingerprint([a]) == truth_fingerprint([GroundTruth("b.png", "normal")])
    False
    >>> truth_fingerprint([a]).startswith("sha256:")
    True
    """
    digest = hashlib.sha256()
    for truth in truths:
        # One JSON line per truth: unambiguous whatever characters an id holds, and exact
        # for the box coordinates (JSON writes floats by their shortest round-trip repr).
        record = [
            truth.id,
            truth.label,
            [[b.x, b.y, b.width, b.height] for b in truth.boxes],
            truth.annotated,
        ]
        digest.update(json.dumps(record).encode() + b"\n")
    return f"sha256:{digest.hexdigest()}"


def software_versions() -> dict[str, str]:
    """The versions of Python and of the packages that can change a result.

    Examples
    --------
    >>> "python" in software_versions()
    True
    """
    versions = {"python": platform.python_version()}
    for name in _DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
