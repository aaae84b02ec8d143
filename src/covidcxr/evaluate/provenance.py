"""What makes two runs comparable: a fingerprint of the data and the versions of the software."""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Iterable
from importlib import metadata

import numpy as np

from covidcxr.records import XRay

__all__ = ["DataFingerprint", "data_fingerprint", "software_versions"]

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
