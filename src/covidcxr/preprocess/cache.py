"""An on-disk cache of preprocessed radiographs, keyed by content and parameters.

A cache entry is addressed by a hash of (the preprocessor's cache token, the input's
content digest): a changed parameter, OpenCV version or input file gives a different
address, so stale entries are never returned, only left unused. Entries hold what
preprocessing derived from the content (pixels, boxes, masks, the geometric transform,
and any other new metadata that is plain JSON); ids, labels and provenance come from the
input on every pass, so one cached result serves every copy of a file.

The file format is a small JSON header followed by the raw array bytes, read with one
``read`` and no copies: a cache hit costs tens of microseconds. Files are written to a
temporary name and renamed into place, so a crash never leaves a half-written entry and
concurrent runs can share a cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
from attrs import frozen

from covidcxr.preprocess.geometry import ResizeTransform
from covidcxr.records import Box

__all__ = ["CachedOutput", "PreprocessCache", "compact_pixels", "expand_pixels"]

_MAGIC: Final = b"CXRCACHE2\n"
_HEADER_LENGTH: Final = struct.Struct("<I")
_TRANSFORM_TAG: Final = "__resize_transform__"
_UNIT_SCALE: Final = np.float32(1.0 / 255.0)
#: Marks a float32 array stored as the uint8 values it was scaled from.
UINT8_OVER_255: Final = "u8/255"


def compact_pixels(pixels: np.ndarray[Any, Any]) -> tuple[str, np.ndarray[Any, Any]]:
    """Store float32 pixels that are exactly ``uint8 / 255`` as the ``uint8`` values.

    Preprocessed radiographs usually are (8-bit enhancement, then scaling), so this
    quarters what the cache writes and what workers send back, and
    :func:`expand_pixels` restores the identical float32 array. Anything else is kept as
    it is.

    Returns
    -------
    tuple
        ``(encoding, array)``: ``("u8/255", uint8 array)`` or ``("raw", pixels)``.

    Examples
    --------
    >>> import numpy as np
    >>> pixels = np.multiply(np.arange(4, dtype=np.uint8), np.float32(1 / 255), dtype=np.float32)
    >>> encoding, stored = compact_pixels(pixels)
    >>> encoding, stored.dtype, expand_pixels(encoding, stored).tobytes() == pixels.tobytes()
    ('u8/255', dtype('uint8'), True)
    """
    if pixels.dtype == np.float32 and pixels.size:
        candidate = np.rint(pixels * np.float32(255.0))
        if candidate.min() >= 0 and candidate.max() <= 255:
            as_uint8 = candidate.astype(np.uint8)
            if np.array_equal(expand_pixels(UINT8_OVER_255, as_uint8), pixels):
                return UINT8_OVER_255, as_uint8
    return "raw", pixels


def expand_pixels(encoding: str, stored: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Undo :func:`compact_pixels`."""
    if encoding == UINT8_OVER_255:
        expanded: np.ndarray[Any, Any] = np.multiply(stored, _UNIT_SCALE, dtype=np.float32)
        return expanded
    return stored


@frozen
class CachedOutput:
    """What a cache entry restores: the content-derived part of a preprocessed record."""

    pixels: np.ndarray[Any, Any]
    boxes: tuple[Box, ...]
    meta: Mapping[str, Any]


def _encode_value(value: Any) -> Any:
    if isinstance(value, ResizeTransform):
        return {
            _TRANSFORM_TAG: [
                value.scale_x,
                value.scale_y,
                value.offset_x,
                value.offset_y,
                list(value.input_shape),
                list(value.output_shape),
            ]
        }
    json.dumps(value)  # raises TypeError for anything that is not plain JSON
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {_TRANSFORM_TAG}:
        sx, sy, ox, oy, input_shape, output_shape = value[_TRANSFORM_TAG]
        return ResizeTransform(sx, sy, ox, oy, tuple(input_shape), tuple(output_shape))
    return value


class PreprocessCache:
    """A folder of preprocessed results for one preprocessor configuration.

    Parameters
    ----------
    directory
        The cache folder (created if missing; ``~`` is expanded). It may be shared by
        several configurations and runs.
    token
        The preprocessor's cache token: a string that changes whenever its output could.
    """

    def __init__(self, directory: str | os.PathLike[str], token: str) -> None:
        self.directory = Path(directory).expanduser()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._token = hashlib.blake2b(token.encode(), digest_size=16).hexdigest()

    def path_for(self, content_digest: str) -> Path:
        """Where the entry for an input with ``content_digest`` lives."""
        key = hashlib.blake2b(
            f"{self._token}:{content_digest}".encode(), digest_size=20
        ).hexdigest()
        return self.directory / key[:2] / f"{key[2:]}.cxr"

    def load(self, content_digest: str) -> CachedOutput | None:
        """The cached output, or ``None`` when absent or unreadable (a miss)."""
        path = self.path_for(content_digest)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            return _parse(data)
        except (ValueError, KeyError, TypeError, struct.error):
            # A damaged entry is a miss; the next store replaces it.
            return None

    def store(
        self,
        content_digest: str,
        pixels: np.ndarray[Any, Any],
        boxes: tuple[Box, ...],
        meta: Mapping[str, Any],
    ) -> bool:
        """Write an entry atomically.

        Parameters
        ----------
        content_digest
            The input's digest.
        pixels, boxes
            The preprocessed pixels and boxes.
        meta
            The metadata preprocessing added or changed: arrays and plain JSON values.

        Returns
        -------
        bool
            ``False`` (nothing written) if a metadata value is neither an array nor plain
            JSON: such results are recomputed on every pass rather than cached wrongly.
        """
        encoding, stored = compact_pixels(np.asarray(pixels))
        arrays: dict[str, np.ndarray[Any, Any]] = {"pixels": np.ascontiguousarray(stored)}
        plain: dict[str, Any] = {}
        try:
            for key, value in meta.items():
                if isinstance(value, np.ndarray):
                    arrays[f"meta:{key}"] = np.ascontiguousarray(value)
                else:
                    plain[key] = _encode_value(value)
        except TypeError:
            return False
        layout = []
        offset = 0
        for name, array in arrays.items():
            layout.append([name, array.dtype.str, list(array.shape), offset, array.nbytes])
            offset += array.nbytes
        header = json.dumps(
            {
                "arrays": layout,
                "boxes": [[box.x, box.y, box.width, box.height] for box in boxes],
                "meta": plain,
                "pixels": encoding,
            }
        ).encode()
        path = self.path_for(content_digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(_MAGIC + _HEADER_LENGTH.pack(len(header)) + header)
                for array in arrays.values():
                    handle.write(array.tobytes())
            Path(temporary).replace(path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return True


def _parse(data: bytes) -> CachedOutput:
    if not data.startswith(_MAGIC):
        raise ValueError("not a cache entry")
    start = len(_MAGIC)
    (length,) = _HEADER_LENGTH.unpack_from(data, start)
    start += _HEADER_LENGTH.size
    header = json.loads(data[start : start + length])
    body = memoryview(data)[start + length :]
    arrays = {}
    for name, dtype, shape, offset, nbytes in header["arrays"]:
        if offset + nbytes > len(body):
            raise ValueError("truncated cache entry")
        arrays[name] = np.frombuffer(body[offset : offset + nbytes], dtype=np.dtype(dtype)).reshape(
            shape
        )
    meta: dict[str, Any] = {key: _decode_value(value) for key, value in header["meta"].items()}
    for name, array in arrays.items():
        if name.startswith("meta:"):
            meta[name[5:]] = array
    boxes = tuple(Box(*values) for values in header["boxes"])
    pixels = expand_pixels(header["pixels"], arrays["pixels"])
    return CachedOutput(pixels=pixels, boxes=boxes, meta=meta)
