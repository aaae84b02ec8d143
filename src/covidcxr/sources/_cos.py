"""IBM Cloud Object Storage: read datasets from a bucket, and upload them there.

Uses IBM's own SDK, ``ibm-cos-sdk`` (``ibm_boto3``; the optional ``cos`` extra), imported
only when a COS source or upload is used. Options carry the SDK's names; anything not
given falls back to environment variables:

======================================  ========================================
option                                  environment variable
======================================  ========================================
``endpoint_url``                        ``COS_ENDPOINT``
``ibm_api_key_id``                      ``COS_API_KEY_ID``
``ibm_service_instance_id``             ``COS_INSTANCE_CRN``
``ibm_auth_endpoint``                   ``COS_AUTH_ENDPOINT``
``aws_access_key_id`` (HMAC)            ``COS_HMAC_ACCESS_KEY_ID``
``aws_secret_access_key`` (HMAC)        ``COS_HMAC_SECRET_ACCESS_KEY``
======================================  ========================================

An API key (IAM, OAuth signing) is used when present, HMAC keys otherwise. Requests are
retried with exponential backoff and jitter on throttling (``SlowDown``, HTTP 429/503) and
on server errors (HTTP 5xx), by the SDK's ``standard`` retry mode, ``max_attempts`` times
in all. Credentials are handed to the SDK and not kept: they appear in no repr, log line
or error message of covidcxr.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any, Final

from covidcxr._secrets import Redactor, refuse_url_credentials
from covidcxr.errors import ConfigurationError, InvalidImageError, SourceError
from covidcxr.io._reader import MAX_PIXELS, MIN_SIDE
from covidcxr.sources._archive import SafeZipArchive, ZipLimits
from covidcxr.sources._base import CatalogSource

__all__ = [
    "COSSource",
    "cos_client",
    "parse_bucket_location",
    "upload_folder",
    "upload_folder_as_zip",
]

_ENV: Final[Mapping[str, str]] = {
    "endpoint_url": "COS_ENDPOINT",
    "ibm_api_key_id": "COS_API_KEY_ID",
    "ibm_service_instance_id": "COS_INSTANCE_CRN",
    "ibm_auth_endpoint": "COS_AUTH_ENDPOINT",
    "aws_access_key_id": "COS_HMAC_ACCESS_KEY_ID",
    "aws_secret_access_key": "COS_HMAC_SECRET_ACCESS_KEY",
}
_SECRET_OPTIONS: Final = ("ibm_api_key_id", "aws_secret_access_key", "aws_access_key_id")
_CHUNK: Final = 1 << 20
# Up to this much of a downloaded archive stays in memory; the rest spills to a temp file.
_SPOOL_IN_MEMORY: Final = 64 << 20
_DENIED_CODES: Final = frozenset({"AccessDenied", "Forbidden", "403", "AllAccessDisabled"})
_BAD_CREDENTIAL_CODES: Final = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "401"}
)


def parse_bucket_location(location: str) -> tuple[str, str]:
    """Split ``"bucket/prefix"`` (a ``cos://`` URI without its scheme) into its parts.

    Examples
    --------
    >>> parse_bucket_location("cxr-data/covid/train")
    ('cxr-data', 'covid/train')
    >>> parse_bucket_location("cos://cxr-data")
    ('cxr-data', '')
    """
    text = location.removeprefix("cos://").strip("/")
    bucket, _, prefix = text.partition("/")
    if not bucket:
        raise ConfigurationError(f"COS location {location!r} names no bucket; use 'bucket/prefix'")
    return bucket, prefix


def cos_client(
    *,
    endpoint_url: str | None = None,
    ibm_api_key_id: str | None = None,
    ibm_service_instance_id: str | None = None,
    ibm_auth_endpoint: str | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    max_attempts: int = 5,
    connect_timeout: float = 10.0,
    read_timeout: float = 60.0,
) -> Any:
    """Create an ``ibm_boto3`` S3 client, with environment fallbacks and retries.

    Parameters
    ----------
    endpoint_url, ibm_api_key_id, ibm_service_instance_id, ibm_auth_endpoint
        IBM COS endpoint and IAM credentials (see the module description for the
        environment variables used when they are omitted).
    aws_access_key_id, aws_secret_access_key
        HMAC credentials, used when no API key is given.
    max_attempts
        Attempts per request, the first included (``standard`` retry mode: exponential
        backoff with jitter on throttling and 5xx responses).
    connect_timeout, read_timeout
        Seconds.

    Returns
    -------
    ibm_boto3 S3 client

    Raises
    ------
    ConfigurationError
        If no endpoint or no credentials are given or found, if an endpoint carries
        ``user:password@`` (the error does not repeat it), or ``max_attempts < 1``.
    ImportError
        If ``ibm-cos-sdk`` is not installed (``pip install covidcxr[cos]``).
    """
    given = {
        "endpoint_url": endpoint_url,
        "ibm_api_key_id": ibm_api_key_id,
        "ibm_service_instance_id": ibm_service_instance_id,
        "ibm_auth_endpoint": ibm_auth_endpoint,
        "aws_access_key_id": aws_access_key_id,
        "aws_secret_access_key": aws_secret_access_key,
    }
    options = {key: value or os.environ.get(_ENV[key]) or None for key, value in given.items()}
    if max_attempts < 1:
        raise ConfigurationError(f"max_attempts must be >= 1, got {max_attempts}")
    if not options["endpoint_url"]:
        raise ConfigurationError(
            f"no COS endpoint: pass endpoint_url or set {_ENV['endpoint_url']}"
        )
    for key in ("endpoint_url", "ibm_auth_endpoint"):
        refuse_url_credentials(options[key], f"the COS {key} (or {_ENV[key]})")
    use_api_key = bool(options["ibm_api_key_id"])
    if not use_api_key and not (options["aws_access_key_id"] and options["aws_secret_access_key"]):
        raise ConfigurationError(
            "no COS credentials: pass ibm_api_key_id (with ibm_service_instance_id) or "
            "aws_access_key_id and aws_secret_access_key, or set "
            f"{_ENV['ibm_api_key_id']} or {_ENV['aws_access_key_id']} and "
            f"{_ENV['aws_secret_access_key']}"
        )
    try:
        import ibm_boto3  # noqa: PLC0415 - optional extra, imported on first use
        from ibm_botocore.client import Config  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("IBM COS support needs ibm-cos-sdk; install covidcxr[cos]") from exc

    config = Config(
        signature_version="oauth" if use_api_key else "s3v4",
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    kwargs: dict[str, Any] = {"endpoint_url": options["endpoint_url"], "config": config}
    if use_api_key:
        kwargs["ibm_api_key_id"] = options["ibm_api_key_id"]
        kwargs["ibm_service_instance_id"] = options["ibm_service_instance_id"]
        if options["ibm_auth_endpoint"]:
            kwargs["ibm_auth_endpoint"] = options["ibm_auth_endpoint"]
    else:
        kwargs["aws_access_key_id"] = options["aws_access_key_id"]
        kwargs["aws_secret_access_key"] = options["aws_secret_access_key"]
    client = ibm_boto3.client("s3", **kwargs)
    client._covidcxr_redact = Redactor([options[key] for key in _SECRET_OPTIONS])
    return client


def _redact(client: Any, text: str) -> str:
    redactor = getattr(client, "_covidcxr_redact", None)
    return redactor(text) if redactor is not None else text


def _client_error(client: Any, exc: Exception, what: str) -> SourceError:
    """Turn an SDK error into a :class:`SourceError` that says what to do, without secrets."""
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    code = str(error.get("Code", ""))
    status = (
        response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(response, dict)
        else None
    )
    if code in {"NoSuchBucket"}:
        message = f"{what}: the bucket does not exist (check the name and the endpoint's region)"
    elif code in _DENIED_CODES or (status == 403 and code not in _BAD_CREDENTIAL_CODES):
        message = f"{what}: access denied (the credentials lack permission for this bucket or key)"
    elif code in _BAD_CREDENTIAL_CODES or status == 401:
        message = (
            f"{what}: the credentials were rejected ({code or status}); "
            "check the key pair or API key"
        )
    elif code in {"NoSuchKey", "404"}:
        message = f"{what}: no such object"
    else:
        message = f"{what}: {type(exc).__name__}: {exc}"
    return SourceError(_redact(client, message))


class COSSource(CatalogSource):
    """Radiographs in an IBM Cloud Object Storage bucket.

    ``"bucket/prefix"`` lists the loose images under the prefix, laid out like a folder
    (class from the key path: ``prefix/COVID/img.png``). ``"bucket/path/data.zip"`` streams
    the archive object to a spooled temporary file (at most 64 MiB in memory, the rest on
    disk, never two copies) and reads it like :class:`~covidcxr.sources.ZipSource`.
    Record ids are ``cos://bucket/key`` (with ``!/member`` for archives).

    Parameters
    ----------
    bucket_prefix
        ``"bucket/prefix"`` or ``"bucket/key.zip"`` (a leading ``cos://`` is accepted).
    layout, split, label_aliases, on_error, load_masks, min_side, max_pixels, min_lesion_area
        As for :class:`~covidcxr.sources.FolderSource`.
    client
        A ready ``ibm_boto3`` S3 client; otherwise one is made from the options below
        with :func:`cos_client`.
    endpoint_url, ibm_api_key_id, ibm_service_instance_id, ibm_auth_endpoint
        See :func:`cos_client`.
    aws_access_key_id, aws_secret_access_key, max_attempts
        See :func:`cos_client`.
    limits
        Zip-bomb limits for archives (:class:`~covidcxr.sources.ZipLimits`); the download
        itself is capped at ``limits.max_total_size`` bytes.
    spool_dir
        Where an archive larger than 64 MiB spills (default: the system temp folder).

    Raises
    ------
    SourceError
        For a missing bucket, rejected credentials, denied access, an empty prefix, or an
        unreachable endpoint; the message names the bucket and never the credentials.
    """

    def __init__(
        self,
        bucket_prefix: str,
        *,
        layout: str = "auto",
        split: str | Sequence[str] | None = None,
        label_aliases: Mapping[str, str] | None = None,
        on_error: str = "raise",
        load_masks: bool = True,
        min_side: int = MIN_SIDE,
        max_pixels: int = MAX_PIXELS,
        min_lesion_area: int = 1,
        client: Any = None,
        endpoint_url: str | None = None,
        ibm_api_key_id: str | None = None,
        ibm_service_instance_id: str | None = None,
        ibm_auth_endpoint: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        max_attempts: int = 5,
        limits: ZipLimits | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.bucket, self.prefix = parse_bucket_location(bucket_prefix)
        self._client = client or cos_client(
            endpoint_url=endpoint_url,
            ibm_api_key_id=ibm_api_key_id,
            ibm_service_instance_id=ibm_service_instance_id,
            ibm_auth_endpoint=ibm_auth_endpoint,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            max_attempts=max_attempts,
        )
        self.uri = f"cos://{self.bucket}/{self.prefix}".rstrip("/")
        self._limits = limits or ZipLimits()
        self._archive: SafeZipArchive | None = None
        self._archive_root = ""
        self._spool: IO[bytes] | None = None
        if self.prefix.lower().endswith(".zip"):
            self._spool = self._download(self.prefix, spool_dir)
            self._archive = SafeZipArchive(self._spool, self.uri, self._limits)
            self._archive_root = self._archive.find_root(None, label_aliases)
        super().__init__(
            where=self.uri,
            layout=layout,
            split=split,
            label_aliases=label_aliases,
            on_error=on_error,
            load_masks=load_masks,
            min_side=min_side,
            max_pixels=max_pixels,
            min_lesion_area=min_lesion_area,
        )

    def _sdk_errors(self) -> tuple[type[Exception], ...]:
        from ibm_botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        return (ClientError, BotoCoreError)

    def _download(self, key: str, spool_dir: str | os.PathLike[str] | None) -> IO[bytes]:
        spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - lives as long as the source
            max_size=_SPOOL_IN_MEMORY, dir=None if spool_dir is None else os.fspath(spool_dir)
        )
        written = 0
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
            for chunk in body.iter_chunks(_CHUNK):
                written += len(chunk)
                self._check_download_size(written)
                spool.write(chunk)
        except self._sdk_errors() as exc:
            spool.close()
            raise _client_error(self._client, exc, self.uri) from exc
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool

    def _check_download_size(self, written: int) -> None:
        if written > self._limits.max_total_size:
            raise SourceError(
                f"{self.uri}: the archive is larger than the limit of "
                f"{self._limits.max_total_size:,} bytes"
            )

    def _list_names(self) -> list[str]:
        if self._archive is not None:
            root = self._archive_root
            return sorted(
                name[len(root) :] for name in self._archive.members if name.startswith(root)
            )
        prefix = f"{self.prefix}/" if self.prefix else ""
        names: list[str] = []
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    key = item["Key"]
                    if not key.endswith("/"):
                        names.append(key[len(prefix) :])
        except self._sdk_errors() as exc:
            raise _client_error(self._client, exc, self.uri) from exc
        if not names:
            raise SourceError(f"{self.uri}: no objects under this prefix")
        return sorted(names)

    def _read(self, name: str) -> bytes:
        if self._archive is not None:
            return self._archive.read(self._archive_root + name, self._item_id(name))
        key = f"{self.prefix}/{name}" if self.prefix else name
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()
        except self._sdk_errors() as exc:
            error = _client_error(self._client, exc, self._item_id(name))
            raise InvalidImageError(
                str(error).removeprefix(f"{self._item_id(name)}: "), self._item_id(name)
            ) from exc

    def _item_id(self, name: str) -> str:
        if self._archive is not None:
            return f"{self.uri}!/{self._archive_root}{name}"
        return f"{self.uri}/{name}"

    def close(self) -> None:
        """Release the downloaded archive, if any."""
        if self._archive is not None:
            self._archive.close()
        if self._spool is not None:
            self._spool.close()

    def __enter__(self) -> COSSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _existing_keys(client: Any, bucket: str, prefix: str, what: str) -> set[str]:
    from ibm_botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    keys: set[str] = set()
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.update(item["Key"] for item in page.get("Contents", []))
    except (ClientError, BotoCoreError) as exc:
        raise _client_error(client, exc, what) from exc
    return keys


def _files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            yield path


def upload_folder(
    folder: str | os.PathLike[str],
    bucket_prefix: str,
    *,
    overwrite: bool = False,
    client: Any = None,
    **client_options: Any,
) -> list[str]:
    """Upload every file of a folder to ``bucket/prefix``, keeping relative paths.

    The reverse of ``COSSource("bucket/prefix")``. Hidden files are left out.

    Parameters
    ----------
    folder
        The local folder.
    bucket_prefix
        ``"bucket/prefix"``.
    overwrite
        Replace objects that already exist. By default an existing object is an error and
        nothing is uploaded.
    client
        A ready client; otherwise one is made by :func:`cos_client` from ``client_options``.

    Returns
    -------
    list of str
        The keys written, sorted.

    Raises
    ------
    SourceError
        If the folder does not exist, an object exists (``overwrite=False``), or COS refuses.
    """
    from ibm_botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    root = Path(folder)
    if not root.is_dir():
        raise SourceError(f"{root}: no such folder")
    bucket, prefix = parse_bucket_location(bucket_prefix)
    client = client or cos_client(**client_options)
    base = f"{prefix}/" if prefix else ""
    uploads = [(path, base + path.relative_to(root).as_posix()) for path in _files(root)]
    if not overwrite:
        taken = _existing_keys(client, bucket, base, f"cos://{bucket}/{prefix}")
        clashes = sorted(key for _, key in uploads if key in taken)
        if clashes:
            raise SourceError(
                f"cos://{bucket}/{clashes[0]} already exists ({len(clashes)} object(s) would "
                "be replaced); pass overwrite=True to replace them"
            )
    try:
        for path, key in uploads:
            client.upload_file(str(path), bucket, key)
    except (ClientError, BotoCoreError) as exc:
        raise _client_error(client, exc, f"cos://{bucket}/{prefix}") from exc
    return sorted(key for _, key in uploads)


def upload_folder_as_zip(
    folder: str | os.PathLike[str],
    bucket_key: str,
    *,
    overwrite: bool = False,
    client: Any = None,
    spool_dir: str | os.PathLike[str] | None = None,
    **client_options: Any,
) -> str:
    """Zip a folder and upload the archive as one object: the published workflow.

    The archive is built in a spooled temporary file (64 MiB in memory at most) and sent
    with the SDK's managed (multipart) transfer. Images are stored without recompression:
    PNG and JPEG are compressed already, and deflating them again costs time for nothing.

    Parameters
    ----------
    folder
        The local folder.
    bucket_key
        ``"bucket/path/name.zip"``.
    overwrite
        Replace an existing object. By default that is an error.
    client, client_options
        As for :func:`upload_folder`.
    spool_dir
        Where a large archive spills while being built.

    Returns
    -------
    str
        The object's key.

    Raises
    ------
    SourceError
        If the folder does not exist, the object exists (``overwrite=False``), or COS
        refuses.
    ConfigurationError
        If ``bucket_key`` does not end in ``.zip``.
    """
    from ibm_botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    root = Path(folder)
    if not root.is_dir():
        raise SourceError(f"{root}: no such folder")
    bucket, key = parse_bucket_location(bucket_key)
    if not key.lower().endswith(".zip"):
        raise ConfigurationError(f"bucket_key must name a .zip object, got {bucket_key!r}")
    client = client or cos_client(**client_options)
    uri = f"cos://{bucket}/{key}"
    if not overwrite and key in _existing_keys(client, bucket, key, uri):
        raise SourceError(f"{uri} already exists; pass overwrite=True to replace it")
    with tempfile.SpooledTemporaryFile(
        max_size=_SPOOL_IN_MEMORY, dir=None if spool_dir is None else os.fspath(spool_dir)
    ) as spool:
        with zipfile.ZipFile(spool, "w") as archive:
            for path in _files(root):
                compression = (
                    zipfile.ZIP_STORED
                    if path.suffix.lower() in {".png", ".jpg", ".jpeg"}
                    else zipfile.ZIP_DEFLATED
                )
                archive.write(
                    path, PurePosixPath(path.relative_to(root).as_posix()).as_posix(), compression
                )
        spool.seek(0)
        try:
            client.upload_fileobj(spool, bucket, key)
        except (ClientError, BotoCoreError) as exc:
            raise _client_error(client, exc, uri) from exc
    return key
