"""What makes two runs comparable: a fingerprint of the data and the versions of the software."""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Iterable
from importlib import metadata

import numpy as np

from covidcxr.records import XRay

__all__ = ["data_fingerprint", "software_versions"]

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
    digest = hashlib.sha256()
    for xray in xrays:
        pixels = np.ascontiguousarray(xray.pixels)
        header = f"{pixels.dtype.str}|{pixels.shape}|{xray.label}|" + ";".join(
            f"{b.x:g},{b.y:g},{b.width:g},{b.height:g}" for b in xray.boxes
        )
        digest.update(header.encode())
        digest.update(pixels.tobytes())
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
