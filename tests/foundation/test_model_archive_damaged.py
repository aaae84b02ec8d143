"""A model archive whose members are damaged is refused with a ModelFormatError naming it.

:mod:`zipfile` raises more than ``BadZipFile`` for a damaged member: ``RuntimeError`` for
one flagged as encrypted, ``NotImplementedError`` for an unknown compression method,
``zlib.error`` for corrupt deflated data (and ``EOFError`` for data cut short). Each must
reach the caller as the library's own error, and an archive so damaged is never taken for
one of covidcxr's (so a save never replaces it).
"""

from __future__ import annotations

import json
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from covidcxr._model_archive import (
    METADATA_MEMBER,
    MODEL_MEMBER,
    ArchiveFormat,
    is_archive_of,
    read_model_archive,
    write_model_archive,
)
from covidcxr.errors import ModelFormatError, OutputExistsError

FORMAT = ArchiveFormat("covidcxr.test-model", 1, "test model")
METADATA = json.dumps(
    {"format": FORMAT.name, "format_version": FORMAT.version, "versions": {"keras": "3.0.0"}}
).encode()


def _archive(path: Path, *, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """An archive of :data:`FORMAT` whose metadata is compressed with ``compression``."""
    with zipfile.ZipFile(path, "w") as archive:
        # Long enough that deflate writes several blocks of data to damage.
        archive.writestr(METADATA_MEMBER, METADATA + b" " * 2000, compress_type=compression)
        archive.writestr(MODEL_MEMBER, b"the keras model", compress_type=zipfile.ZIP_STORED)
    return path


def _central_entry(data: bytes, member: str) -> int:
    """The offset of ``member``'s entry in the archive's central directory."""
    start = data.find(b"PK\x01\x02")
    while start != -1:
        (length,) = struct.unpack("<H", data[start + 28 : start + 30])
        if data[start + 46 : start + 46 + length] == member.encode():
            return start
        start = data.find(b"PK\x01\x02", start + 4)
    raise AssertionError(f"{member} not in the central directory")


def _local_data(data: bytes, member: str) -> int:
    """The offset of ``member``'s (compressed) data after its local header."""
    start = data.find(b"PK\x03\x04")
    while start != -1:
        name_length, extra_length = struct.unpack("<HH", data[start + 26 : start + 30])
        if data[start + 30 : start + 30 + name_length] == member.encode():
            return start + 30 + int(name_length) + int(extra_length)
        start = data.find(b"PK\x03\x04", start + 4)
    raise AssertionError(f"{member} has no local header")


def _flag_encrypted(data: bytearray) -> None:
    data[_central_entry(bytes(data), METADATA_MEMBER) + 8] |= 0x01


def _unknown_method(data: bytearray) -> None:
    entry = _central_entry(bytes(data), METADATA_MEMBER)
    data[entry + 10 : entry + 12] = struct.pack("<H", 99)


def _corrupt_deflate(data: bytearray) -> None:
    start = _local_data(bytes(data), METADATA_MEMBER)
    data[start : start + 40] = b"\xff" * 40


def _change_deflate(data: bytearray) -> None:
    # Still a valid deflate stream, of other bytes: the CRC-32 no longer matches.
    start = _local_data(bytes(data), METADATA_MEMBER)
    data[start + 8 : start + 30] = b"\x00" * 22


DAMAGES: dict[str, Callable[[bytearray], None]] = {
    "encrypted flag": _flag_encrypted,
    "unknown compression method": _unknown_method,
    "corrupt deflated data": _corrupt_deflate,
    "deflated data that fails its checksum": _change_deflate,
}


def _write_blob(path: Path) -> None:
    path.write_bytes(b"new")


@pytest.fixture(params=sorted(DAMAGES))
def damaged(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = _archive(tmp_path / "model.cxr")
    data = bytearray(path.read_bytes())
    DAMAGES[request.param](data)
    path.write_bytes(bytes(data))
    return path


def test_an_intact_archive_reads(tmp_path: Path) -> None:
    path = _archive(tmp_path / "model.cxr")
    assert is_archive_of(path, FORMAT)
    with zipfile.ZipFile(path) as archive:
        assert json.loads(archive.read(METADATA_MEMBER))["format"] == FORMAT.name


def test_a_damaged_member_is_a_model_format_error_naming_the_file(
    damaged: Path, tmp_path: Path
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(ModelFormatError, match=rf"{damaged}: corrupt or unreadable test model"):
        read_model_archive(damaged, FORMAT, scratch)


def test_a_damaged_archive_is_not_taken_for_one_of_covidcxrs(damaged: Path) -> None:
    assert not is_archive_of(damaged, FORMAT)
    before = damaged.read_bytes()
    with pytest.raises(OutputExistsError, match="is not a saved test model"):
        write_model_archive(damaged, FORMAT, _write_blob, {}, overwrite=True)
    assert damaged.read_bytes() == before


def test_a_missing_member_is_named(tmp_path: Path) -> None:
    path = tmp_path / "model.cxr"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(METADATA_MEMBER, METADATA)
    with pytest.raises(ModelFormatError, match=rf"not a saved test model \(missing {MODEL_MEMBER}"):
        read_model_archive(path, FORMAT, tmp_path)
