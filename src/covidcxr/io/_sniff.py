"""Recognise an image format by its magic bytes and read its size without decoding it.

Reading the size from the header first is what makes the pixel limit a real defence: a
decompression bomb is a tiny file that *declares* an enormous image, so it is refused
before any pixel buffer is allocated.
"""

from __future__ import annotations

import struct
from typing import Final, Literal

from covidcxr.errors import InvalidImageError

__all__ = ["ImageFormat", "jpeg_size", "png_size", "sniff_format", "webp_size"]

ImageFormat = Literal["png", "jpeg", "webp", "dicom"]

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
JPEG_SOI: Final = b"\xff\xd8\xff"
DICOM_PREAMBLE_LENGTH: Final = 128
DICOM_MAGIC: Final = b"DICM"
#: A WebP file is a RIFF container (``RIFF``, a 4-byte length, ``WEBP``).
RIFF_MAGIC: Final = b"RIFF"
WEBP_MAGIC: Final = b"WEBP"

# Start-of-frame markers carry the image size; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_JPEG_SOF_MARKERS: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field.
_JPEG_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})


def sniff_format(data: bytes, source: str | None = None) -> ImageFormat:
    r"""Tell PNG, JPEG, WebP and DICOM apart by their magic bytes, whatever the file is named.

    Public datasets ship WebP images under ``.jpg`` and ``.png`` names; the content decides.

    Parameters
    ----------
    data
        The file's content (at least the first 132 bytes).
    source
        Where it came from, for error messages.

    Raises
    ------
    InvalidImageError
        If ``data`` is empty or starts like none of the four formats.

    Examples
    --------
    >>> sniff_format(b"\x89PNG\r\n\x1a\n" + bytes(24))
    'png'
    >>> sniff_format(b"RIFF" + bytes(4) + b"WEBPVP8L")
    'webp'
    >>> sniff_format(bytes(128) + b"DICM")
    'dicom'
    """
    if not data:
        raise InvalidImageError("the file is empty (0 bytes)", source)
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SOI):
        return "jpeg"
    if data[:4] == RIFF_MAGIC and data[8:12] == WEBP_MAGIC:
        return "webp"
    if data[DICOM_PREAMBLE_LENGTH : DICOM_PREAMBLE_LENGTH + 4] == DICOM_MAGIC:
        return "dicom"
    raise InvalidImageError(
        f"not a PNG, JPEG, WebP or DICOM file (it starts with {data[:16]!r}); "
        "the content, not the file name, decides the format",
        source,
    )


def png_size(data: bytes, source: str | None = None) -> tuple[int, int]:
    """``(height, width)`` from a PNG's IHDR chunk, checking that the file is complete.

    Raises
    ------
    InvalidImageError
        If the header is cut short or malformed, or the ``IEND`` chunk is missing (the file
        was truncated).
    """
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise InvalidImageError("truncated or malformed PNG header (no IHDR chunk)", source)
    width, height = struct.unpack(">II", data[16:24])
    if not _png_complete(data):
        raise InvalidImageError("truncated PNG: the closing IEND chunk is missing", source)
    return int(height), int(width)


def _png_complete(data: bytes) -> bool:
    """Whether the chunks, walked from the first, reach ``IEND`` within ``data``.

    Walking the chunk lengths, not looking at the last bytes: some writers append data
    after ``IEND`` (decoders ignore it), and a truncated file ends before it.
    """
    offset = 8
    while offset + 12 <= len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        if data[offset + 4 : offset + 8] == b"IEND":
            return True
        offset += 12 + length  # length, type, data, CRC
    return False


def jpeg_size(data: bytes, source: str | None = None) -> tuple[int, int]:
    """``(height, width)`` from a JPEG's start-of-frame segment, checking that it is complete.

    Raises
    ------
    InvalidImageError
        If no start-of-frame segment is found or the end-of-image marker is missing.
    """
    size: tuple[int, int] | None = None
    scan = -1  # where the first scan starts: the image's end-of-image marker follows it
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            break
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in _JPEG_STANDALONE:
            offset += 2
            continue
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        if marker in _JPEG_SOF_MARKERS and size is None:
            if offset + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[offset + 5 : offset + 9])
            size = (int(height), int(width))
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            scan = offset
            break
        offset += 2 + length
    if size is None:
        raise InvalidImageError("truncated or malformed JPEG: no frame header found", source)
    # The end-of-image marker after the first scan (an EXIF thumbnail, before it, has one
    # of its own); anything after it, as some cameras and phones append, is ignored.
    # 0xFF 0xD9 cannot occur inside entropy-coded data, where 0xFF is stuffed as 0xFF00.
    if scan < 0 or data.find(b"\xff\xd9", scan) < 0:
        raise InvalidImageError("truncated JPEG: the end-of-image marker is missing", source)
    return size


def webp_size(data: bytes, source: str | None = None) -> tuple[int, int]:
    """``(height, width)`` from a WebP's first chunk, checking that the file is complete.

    The three WebP forms store the size differently: ``VP8X`` (extended) as 24-bit canvas
    sizes minus one, ``VP8L`` (lossless) as 14-bit sizes minus one after a ``0x2f``
    signature byte, ``VP8`` (lossy) as 14-bit sizes after the key frame's start code.

    Raises
    ------
    InvalidImageError
        If the file is shorter than its RIFF header declares (truncated), or its first
        chunk is none of the three or is malformed.
    """
    if len(data) < 30:
        raise InvalidImageError("truncated or malformed WebP header", source)
    (riff_size,) = struct.unpack("<I", data[4:8])
    if len(data) < riff_size + 8:
        raise InvalidImageError(
            f"truncated WebP: the header declares {riff_size + 8:,} bytes, the file has "
            f"{len(data):,}",
            source,
        )
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return height, width
    if chunk == b"VP8L" and data[20] == 0x2F:
        (bits,) = struct.unpack("<I", data[21:25])
        return 1 + ((bits >> 14) & 0x3FFF), 1 + (bits & 0x3FFF)
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return int(height) & 0x3FFF, int(width) & 0x3FFF
    raise InvalidImageError(f"malformed WebP: unknown first chunk {chunk!r}", source)
