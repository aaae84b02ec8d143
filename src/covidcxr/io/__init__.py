r"""Reading radiographs: PNG (8/16-bit, gray/RGB/RGBA), JPEG, WebP and DICOM.

One reader sniffs the format from the content's magic bytes (``\\x89PNG``, ``\\xff\\xd8``,
``RIFF....WEBP``, ``DICM`` at offset 128), whatever the file is named, checks the declared
size against a pixel limit *before* decoding, and returns a 2-D grayscale array that keeps
the file's bit depth: ``uint8`` for 8-bit images, ``uint16`` for 16-bit PNG and DICOM.
Bad input of every kind raises :class:`~covidcxr.InvalidImageError` naming the file.
"""

from covidcxr.io._reader import (
    MAX_PIXELS,
    MIN_SIDE,
    DecodedImage,
    decode_image,
    read_image,
    read_xray,
)
from covidcxr.io._sniff import ImageFormat, sniff_format

__all__ = [
    "MAX_PIXELS",
    "MIN_SIDE",
    "DecodedImage",
    "ImageFormat",
    "decode_image",
    "read_image",
    "read_xray",
    "sniff_format",
]
