"""Readers for other processes (Ray workers): they read what the source reads, and carry
nothing but the source's address (never an open file, a client or a credential)."""

from __future__ import annotations

import base64
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import pytest

from covidcxr.errors import ConfigurationError
from covidcxr.sources import CatalogSource, FolderSource, ZipSource


def _assert_reads_like(source: CatalogSource, payload: bytes) -> None:
    reader = pickle.loads(payload)  # noqa: S301 - our own object
    for entry in source.entries:
        assert reader(entry) == source.read_item(entry)


def test_folder_reader(classes_folder: Path) -> None:
    source = FolderSource(classes_folder)
    reader = source.remote_reader()
    assert reader is not None
    _assert_reads_like(source, pickle.dumps(reader))


def test_zip_reader_reopens_the_archive_by_path(classes_folder: Path, tmp_path: Path) -> None:
    archive = tmp_path / "cxr.zip"
    with zipfile.ZipFile(archive, "w") as written:
        for path in sorted(classes_folder.rglob("*.png")):
            written.write(path, f"cxr/{path.relative_to(classes_folder).as_posix()}")
    source = ZipSource(archive)
    reader = source.remote_reader()
    assert reader is not None
    list(source)  # the reader is pickled after use too: the open archive stays behind
    reader(source.entries[0])
    payload = pickle.dumps(reader)
    assert len(payload) < 1_000  # the path, not the archive
    _assert_reads_like(source, payload)
    # An archive read from a stream cannot be reopened by another process.
    assert ZipSource(io.BytesIO(archive.read_bytes())).remote_reader() is None


@pytest.mark.usefixtures("s3_endpoint")
def test_cos_reader_makes_its_own_client_from_the_workers_environment(
    classes_folder: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ibm_boto3")
    from covidcxr.sources import COSSource, cos_client, upload_folder

    access, secret = "AKIDREMOTEREADER0001", "s3cr3t-Remote-Reader-2b7d"
    options: dict[str, Any] = {
        "endpoint_url": s3_endpoint,
        "aws_access_key_id": access,
        "aws_secret_access_key": secret,
    }
    cos_client(**options).create_bucket(Bucket="remote-readers")
    upload_folder(classes_folder, "remote-readers/cxr", **options)
    for name in ("COS_HMAC_ACCESS_KEY_ID", "COS_HMAC_SECRET_ACCESS_KEY", "COS_API_KEY_ID"):
        monkeypatch.delenv(name, raising=False)
    source = COSSource("remote-readers/cxr", **options)  # credentials given, not in env
    reader = source.remote_reader()
    assert reader is not None
    payload = pickle.dumps(reader)
    for text in (access, secret):
        assert text.encode() not in payload
        assert base64.b64encode(text.encode()) not in payload
    assert secret not in repr(reader)
    # A worker without credentials says so, naming the variables to set, not the secret.
    with pytest.raises(ConfigurationError, match="COS_HMAC_ACCESS_KEY_ID") as refused:
        pickle.loads(payload)(source.entries[0])  # noqa: S301
    assert secret not in str(refused.value)
    # A worker with the cluster's credentials in its environment reads every entry.
    monkeypatch.setenv("COS_HMAC_ACCESS_KEY_ID", access)
    monkeypatch.setenv("COS_HMAC_SECRET_ACCESS_KEY", secret)
    _assert_reads_like(source, payload)
