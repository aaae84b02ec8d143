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

An API key (IAM, OAuth signing) is used when present, HMAC keys otherwise. Credentials
are handed to the SDK and not kept: they appear in no repr, log line or error message of
covidcxr.

Network failures are retried, ``max_attempts`` times in all, and never taken for a bad
image:

* requests (throttling: ``SlowDown``, HTTP 429/503; server errors: HTTP 5xx; refused,
  reset and timed-out connections) by the SDK's ``standard`` retry mode, exponential
  backoff with jitter;
* reading an object's body, which can fail after its headers arrived (a connection
  dropped mid-body, a read timeout) and which the SDK does not retry: the object is
  requested again, after ``backoff``, ``2 * backoff``, ... seconds (at most 20 each);
* fetching the IAM token (an unreachable IAM endpoint, HTTP 429/5xx), with the same
  ``backoff``.

When the attempts are spent the error is a :class:`~covidcxr.errors.SourceError` naming
the key (or the IAM host), which ends the iteration whatever ``on_error`` says: an item
that could not be fetched is not known to be bad, and skipping it would lose it silently.
Only an object that vanished after it was listed (``NoSuchKey``) is an
:class:`~covidcxr.errors.InvalidImageError` of that item.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import tempfile
import time
import weakref
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any, Final, TypeVar
from urllib.parse import urlsplit

from covidcxr._secrets import Redactor, refuse_url_credentials
from covidcxr.errors import ConfigurationError, InvalidImageError, SourceError
from covidcxr.io._reader import MAX_PIXELS, MIN_SIDE
from covidcxr.sources._archive import SafeZipArchive, ZipLimits
from covidcxr.sources._base import CatalogSource
from covidcxr.sources._items import Entry, RawItem, read_entry

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
_log = logging.getLogger("covidcxr.sources")
_T = TypeVar("_T")
_CHUNK: Final = 1 << 20
# The longest wait between two attempts of a body read or an IAM token request, seconds.
_MAX_WAIT: Final = 20.0
# What the SDK uses when no ibm_auth_endpoint is given (DefaultTokenManager.API_TOKEN_URL).
_DEFAULT_IAM_URL: Final = "https://iam.cloud.ibm.com/identity/token"
# The SDK reports an IAM answer other than 200 only in its message: "HttpCode(503) - ...".
_IAM_HTTP_CODE: Final = re.compile(r"HttpCode\((\d{3})\)")
_TRANSIENT_STATUS: Final = frozenset({429, 500, 502, 503, 504})
_TRANSIENT_CODES: Final = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError"}
)
_GAVE_UP: Final = (
    "(gave up after {attempts} attempts; a network or service failure, not a bad image: "
    "try again later)"
)
# An object listed a moment ago and gone now: that item's failure, not the service's.
_GONE_CODES: Final = frozenset({"NoSuchKey", "404"})
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


def _wait(backoff: float, attempt: int) -> float:
    """Seconds to wait after the failed attempt number ``attempt`` (from 1)."""
    return min(backoff * 2.0 ** (attempt - 1), _MAX_WAIT)


def _retrying(
    operation: Callable[[], _T],
    *,
    transient: tuple[type[BaseException], ...],
    attempts: int,
    backoff: float,
    what: str,
    redact: Callable[[str], str],
) -> _T:
    """Run ``operation``; after a ``transient`` error wait and run it again, ``attempts`` in all.

    Hand-written because neither SDK covers these two cases: ibm_botocore retries a request
    but not the reading of its body, and its IAM token manager retries every error (a
    rejected API key too) three times one second apart. The request itself is left to
    the SDK's ``standard`` retry mode, so attempts never multiply.

    Raises
    ------
    SourceError
        When the last attempt fails with a transient error; it names ``what``. It chains
        no error: the SDK's, which may repeat a secret, is kept only as redacted text.
    """
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except transient as exc:
            reason = redact(f"{type(exc).__name__}: {exc}")
        if attempt >= attempts:
            # Raised outside the except clause, so not even __context__ holds the SDK's error.
            raise SourceError(f"{what}: {reason} {_GAVE_UP.format(attempts=attempts)}") from None
        wait = _wait(backoff, attempt)
        _log.warning(
            "%s: %s (attempt %d of %d); trying again in %.2g s",
            what,
            reason,
            attempt,
            attempts,
            wait,
        )
        time.sleep(wait)
    raise AssertionError("attempts must be >= 1")  # pragma: no cover - checked by callers


def _body_errors() -> tuple[type[BaseException], ...]:
    """What reading a response body raises when the connection fails part-way through."""
    from ibm_botocore import exceptions as sdk  # noqa: PLC0415 - optional extra
    from urllib3.exceptions import HTTPError as URLLib3Error  # noqa: PLC0415

    # HTTPClientError covers ResponseStreamingError (a body cut short), ReadTimeoutError
    # and ConnectionClosedError; the urllib3, http.client and socket errors are what would
    # come through if the SDK left one unwrapped.
    return (
        sdk.HTTPClientError,
        sdk.ConnectionError,
        sdk.IncompleteReadError,
        URLLib3Error,
        http.client.HTTPException,
        ConnectionError,
    )


def _is_transient(exc: Exception) -> bool:
    """Whether a request error is the network's or the service's, not the request's."""
    from ibm_botocore import exceptions as sdk  # noqa: PLC0415

    if isinstance(exc, sdk.HTTPClientError | sdk.ConnectionError):
        return True
    if isinstance(exc, sdk.ClientError):
        response = exc.response or {}
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = response.get("Error", {}).get("Code", "")
        return status in _TRANSIENT_STATUS or code in _TRANSIENT_CODES
    return False


class _TransientIAMError(Exception):
    """The IAM token server answered HTTP 429 or 5xx: worth asking again."""


def _iam_token_manager(
    *,
    api_key_id: str,
    service_instance_id: str | None,
    auth_endpoint: str | None,
    attempts: int,
    backoff: float,
    redact: Callable[[str], str],
) -> Any:
    """The SDK's IAM token manager, retrying transient failures like the object reads.

    An unreachable IAM endpoint or an HTTP 429/5xx answer is retried with ``backoff``;
    when the attempts are spent the error is a :class:`SourceError` naming the IAM host
    (never the API key). Other IAM answers (a rejected key) fail at once, as the SDK's
    ``CredentialRetrievalError``.
    """
    import requests  # noqa: PLC0415 - a dependency of ibm-cos-sdk
    from ibm_botocore.credentials import DefaultTokenManager  # noqa: PLC0415
    from ibm_botocore.exceptions import CredentialRetrievalError  # noqa: PLC0415

    url = auth_endpoint or _DEFAULT_IAM_URL
    what = f"the IAM token endpoint {urlsplit(url).netloc or url}"
    transient = (requests.ConnectionError, requests.Timeout, _TransientIAMError)

    class RetryingTokenManager(DefaultTokenManager):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(
                api_key_id=api_key_id,
                service_instance_id=service_instance_id,
                auth_endpoint=auth_endpoint,
            )
            # Used for the first token and for every refresh.
            self.auth_function = self._authenticate

        def _get_initial_token(self, retry_count: int = 1, retry_delay: float = 0) -> None:
            # One call: _authenticate retries already, and the SDK's own loop (any error,
            # three times, one second apart) would multiply the attempts.
            super()._get_initial_token(retry_count=1, retry_delay=0)

        def _authenticate(self) -> Any:
            return _retrying(
                self._request_token,
                transient=transient,
                attempts=attempts,
                backoff=backoff,
                what=what,
                redact=redact,
            )

        def _request_token(self) -> Any:
            try:
                return self._default_auth_function()
            except CredentialRetrievalError as exc:
                # IAM's answer, in the message, may echo the API key, and the SDK logs what
                # this raises with its traceback: only a redacted copy leaves, unchained.
                redacted = CredentialRetrievalError(
                    **{key: redact(str(value)) for key, value in exc.kwargs.items()}
                )
            status = _IAM_HTTP_CODE.search(str(redacted))
            if status is not None and int(status.group(1)) in _TRANSIENT_STATUS:
                raise _TransientIAMError(str(redacted)) from None
            raise redacted from None

    return RetryingTokenManager()


def cos_client(
    *,
    endpoint_url: str | None = None,
    ibm_api_key_id: str | None = None,
    ibm_service_instance_id: str | None = None,
    ibm_auth_endpoint: str | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    max_attempts: int = 5,
    backoff: float = 0.5,
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
        backoff with jitter on throttling, 5xx responses and failed connections), and per
        IAM token request.
    backoff
        Seconds to wait before the second attempt of an IAM token request, doubled for
        each further one (at most 20 s each).
    connect_timeout, read_timeout
        Seconds.

    Returns
    -------
    ibm_boto3 S3 client

    Raises
    ------
    ConfigurationError
        If no endpoint or no credentials are given or found, if an endpoint carries
        ``user:password@`` (the error does not repeat it), ``max_attempts < 1`` or
        ``backoff`` is negative.
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
    _check_retry_options(max_attempts, backoff)
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
    secrets = [options[key] for key in _SECRET_OPTIONS]
    redactor: Callable[[str], str] = Redactor(secrets)
    kwargs: dict[str, Any] = {"endpoint_url": options["endpoint_url"], "config": config}
    if use_api_key:
        kwargs["ibm_service_instance_id"] = options["ibm_service_instance_id"]
        kwargs["token_manager"] = token_manager = _iam_token_manager(
            api_key_id=str(options["ibm_api_key_id"]),
            service_instance_id=options["ibm_service_instance_id"],
            auth_endpoint=options["ibm_auth_endpoint"],
            attempts=max_attempts,
            backoff=backoff,
            redact=redactor,
        )
        # The requests' errors also redact the IAM tokens, which a service echoing the
        # Authorization header ("Bearer <token>") would show.
        redactor = _with_tokens(secrets, token_manager)
    else:
        kwargs["aws_access_key_id"] = options["aws_access_key_id"]
        kwargs["aws_secret_access_key"] = options["aws_secret_access_key"]
    client = ibm_boto3.client("s3", **kwargs)
    client._covidcxr_redact = redactor
    return client


def _with_tokens(secrets: Sequence[str | None], token_manager: Any) -> Callable[[str], str]:
    """Redact ``secrets`` and the access and refresh tokens ``token_manager`` holds now."""

    def redact(text: str) -> str:
        # Where the SDK's DefaultTokenManager keeps them; its _get_cache_token() would hide
        # an expired token, which a service may still echo, and takes a lock.
        tokens = (getattr(token_manager, name, None) for name in ("_token", "_refresh_token"))
        return Redactor([*secrets, *(token for token in tokens if isinstance(token, str))])(text)

    return redact


def _check_retry_options(max_attempts: int, backoff: float) -> None:
    if max_attempts < 1:
        raise ConfigurationError(f"max_attempts must be >= 1, got {max_attempts}")
    if not 0 <= backoff < float("inf"):
        raise ConfigurationError(f"backoff must be a number of seconds >= 0, got {backoff!r}")


def _redact(client: Any, text: str) -> str:
    redactor = getattr(client, "_covidcxr_redact", None)
    return redactor(text) if redactor is not None else text


def _client_error(client: Any, exc: Exception, what: str) -> SourceError:
    """Turn an SDK error into a :class:`SourceError` that says what to do, without secrets."""
    from ibm_boto3.exceptions import S3UploadFailedError  # noqa: PLC0415
    from ibm_botocore.exceptions import ClientError  # noqa: PLC0415

    if isinstance(exc, S3UploadFailedError) and isinstance(exc.__context__, ClientError):
        exc = exc.__context__  # upload_file's wrapper of the service's answer
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


def _sdk_errors() -> tuple[type[Exception], ...]:
    from ibm_boto3.exceptions import Boto3Error  # noqa: PLC0415
    from ibm_botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    # Boto3Error: upload_file reports a refused upload as S3UploadFailedError.
    return (ClientError, BotoCoreError, Boto3Error)


def _unchained(operation: Callable[[], _T], convert: Callable[[Exception], Exception]) -> _T:
    """``operation()``; an SDK error is replaced by ``convert(error)``.

    The replacement chains nothing: raised outside the except clause and ``from None``, it
    holds the SDK's error, whose text may repeat a secret unredacted, in neither
    ``__cause__`` nor ``__context__`` (nor so in a traceback or a logged exception).
    """
    try:
        return operation()
    except _sdk_errors() as exc:
        error = convert(exc)
    raise error from None


class _Objects:
    """Fetching objects of one bucket with retries: what a source and its remote reader share."""

    def __init__(self, client: Any, bucket: str, max_attempts: int, backoff: float) -> None:
        self.client = client
        self.bucket = bucket
        self.max_attempts = max_attempts
        self.backoff = backoff

    def fetch(self, key: str, what: str, consume: Callable[[Any], _T]) -> _T:
        """GET an object and ``consume`` its body; fetch it again if the body is cut short.

        The request's own failures were retried by the SDK already; they end here as a
        :class:`SourceError` (or, for an object gone since it was listed,
        :class:`InvalidImageError`).
        """

        def attempt() -> _T:
            body = _unchained(
                lambda: self.client.get_object(Bucket=self.bucket, Key=key)["Body"],
                lambda exc: self.request_error(exc, what),
            )
            try:
                return consume(body)
            finally:
                body.close()

        return _retrying(
            attempt,
            transient=_body_errors(),
            attempts=self.max_attempts,
            backoff=self.backoff,
            what=what,
            redact=lambda text: _redact(self.client, text),
        )

    def request_error(self, exc: Exception, what: str) -> Exception:
        """The error for a request that failed after the SDK's retries.

        Only an object gone since it was listed is that item's error; anything else (the
        network, the service, the credentials) is the source's.
        """
        error = _client_error(self.client, exc, what)
        response = getattr(exc, "response", None) or {}
        if response.get("Error", {}).get("Code") in _GONE_CODES:
            return InvalidImageError(str(error).removeprefix(f"{what}: "), what)
        if _is_transient(exc):
            return SourceError(f"{error} {_GAVE_UP.format(attempts=self.max_attempts)}")
        return error


_MIB: Final = 1 << 20


def _bounded_body(limit: int, what: str) -> Callable[[Any], bytes]:
    """Read a response body a MiB at a time, refusing one over ``limit`` bytes.

    A loose object is read whole into memory to be decoded; a 5 GB object named ``.png``
    would otherwise exhaust it before the decoder's pixel limit could refuse it.
    """

    def consume(body: Any) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while chunk := body.read(_MIB):
            size += len(chunk)
            if size > limit:
                raise InvalidImageError(
                    f"object larger than {limit:,} bytes, the most read for one radiograph "
                    "(ZipLimits.max_member_size)",
                    what,
                )
            chunks.append(bytes(chunk))
        return b"".join(chunks)

    return consume


class _RemoteObjectReader:
    """Reads a bucket's entries in another process (a Ray worker) with its own client.

    It pickles to the bucket, prefix, endpoint and retry settings only: never a client or
    a credential. The client is made in the worker on first use, from the worker's own
    environment variables (see :func:`cos_client`), so credentials never travel in task
    arguments.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str,
        uri: str,
        *,
        endpoint_url: str | None,
        max_attempts: int,
        backoff: float,
        max_size: int = ZipLimits().max_member_size,
    ) -> None:
        self.bucket, self.prefix, self.uri = bucket, prefix, uri
        self.endpoint_url = endpoint_url
        self.max_attempts, self.backoff = max_attempts, backoff
        self.max_size = max_size
        self._objects: _Objects | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_objects": None}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    def _item_id(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def _read(self, name: str) -> bytes:
        if self._objects is None:
            client = cos_client(
                endpoint_url=self.endpoint_url,
                max_attempts=self.max_attempts,
                backoff=self.backoff,
            )
            self._objects = _Objects(client, self.bucket, self.max_attempts, self.backoff)
        key = f"{self.prefix}/{name}" if self.prefix else name
        what = self._item_id(name)
        return self._objects.fetch(key, what, _bounded_body(self.max_size, what))

    def __call__(self, entry: Entry) -> RawItem:
        return read_entry(entry, self._read, self._item_id)


class COSSource(CatalogSource):
    """Radiographs in an IBM Cloud Object Storage bucket.

    ``"bucket/prefix"`` lists the loose images under the prefix, laid out like a folder
    (class from the key path: ``prefix/COVID/img.png``). ``"bucket/path/data.zip"`` streams
    the archive object to a spooled temporary file (at most 64 MiB in memory, the rest on
    disk, never two copies) and reads it like :class:`~covidcxr.sources.ZipSource`.
    Record ids are ``cos://bucket/key`` (with ``!/member`` for archives).

    Network failures are retried (see the module description) and, once the attempts are
    spent, raise :class:`~covidcxr.errors.SourceError` naming the key, whatever
    ``on_error`` says: an object that could not be fetched is not known to be a bad image.
    The downloaded archive is released by :meth:`close` (or the ``with`` block), and at
    the latest when the source is garbage-collected.

    Parameters
    ----------
    bucket_prefix
        ``"bucket/prefix"`` or ``"bucket/key.zip"`` (a leading ``cos://`` is accepted).
    layout, split, label_aliases, on_error, load_masks, min_side, max_pixels, min_lesion_area
        As for :class:`~covidcxr.sources.FolderSource`.
    client
        A ready ``ibm_boto3`` S3 client (its own request and IAM retries apply);
        otherwise one is made from the options below with :func:`cos_client`.
    endpoint_url, ibm_api_key_id, ibm_service_instance_id, ibm_auth_endpoint
        See :func:`cos_client`.
    aws_access_key_id, aws_secret_access_key
        See :func:`cos_client`.
    max_attempts
        Attempts per object, the first included: per request (the SDK's retries), per
        read of an object's body, and per IAM token request.
    backoff
        Seconds to wait before fetching an object again after its body was cut short
        (or its IAM token request failed), doubled for each further attempt (at most
        20 s each).
    limits
        Zip-bomb limits for archives (:class:`~covidcxr.sources.ZipLimits`); the download
        itself is capped at ``limits.max_total_size`` bytes, and a loose object at
        ``limits.max_member_size`` (larger ones are refused unread, as bad items).
    spool_dir
        Where an archive larger than 64 MiB spills (default: the system temp folder).

    Raises
    ------
    SourceError
        For a missing bucket, rejected credentials, denied access, an empty prefix, or an
        unreachable endpoint (object store or IAM) after ``max_attempts``; the message
        names the bucket or key and never the credentials.
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
        backoff: float = 0.5,
        limits: ZipLimits | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.bucket, self.prefix = parse_bucket_location(bucket_prefix)
        _check_retry_options(max_attempts, backoff)
        self.max_attempts = max_attempts
        self.backoff = float(backoff)
        self._client = client or cos_client(
            endpoint_url=endpoint_url,
            ibm_api_key_id=ibm_api_key_id,
            ibm_service_instance_id=ibm_service_instance_id,
            ibm_auth_endpoint=ibm_auth_endpoint,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            max_attempts=max_attempts,
            backoff=backoff,
        )
        self.uri = f"cos://{self.bucket}/{self.prefix}".rstrip("/")
        self._objects = _Objects(self._client, self.bucket, max_attempts, self.backoff)
        self._limits = limits or ZipLimits()
        self._archive: SafeZipArchive | None = None
        self._archive_root = ""
        self._spool: IO[bytes] | None = None
        # What close() releases; also run when the source is garbage-collected unclosed,
        # so an abandoned source leaves no temporary file open (and no ResourceWarning).
        self._open: list[SafeZipArchive | IO[bytes]] = []
        self._release = weakref.finalize(self, _close_all, self._open)
        try:
            if self.prefix.lower().endswith(".zip"):
                self._spool = self._download(self.prefix, spool_dir)
                self._open.append(self._spool)
                self._archive = SafeZipArchive(self._spool, self.uri, self._limits)
                self._open.append(self._archive)
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
        except BaseException:
            self.close()
            raise

    def _fetch(self, key: str, what: str, consume: Callable[[Any], _T]) -> _T:
        return self._objects.fetch(key, what, consume)

    def _request_error(self, exc: Exception, what: str) -> Exception:
        return self._objects.request_error(exc, what)

    def _download(self, key: str, spool_dir: str | os.PathLike[str] | None) -> IO[bytes]:
        spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by close() or on failure
            max_size=_SPOOL_IN_MEMORY, dir=None if spool_dir is None else os.fspath(spool_dir)
        )

        def copy(body: Any) -> None:
            # A new attempt starts the copy over.
            spool.seek(0)
            spool.truncate()
            written = 0
            for chunk in body.iter_chunks(_CHUNK):
                written += len(chunk)
                self._check_download_size(written)
                spool.write(chunk)

        try:
            self._fetch(key, self.uri, copy)
        except InvalidImageError as exc:
            spool.close()
            raise SourceError(str(exc)) from None
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

        def list_names() -> None:
            # A listing page cut short is a ConnectionClosedError the SDK retries itself.
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    key = item["Key"]
                    if not key.endswith("/"):
                        names.append(key[len(prefix) :])

        _unchained(list_names, lambda exc: self._request_error(exc, self.uri))
        if not names:
            raise SourceError(f"{self.uri}: no objects under this prefix")
        return sorted(names)

    def _read(self, name: str) -> bytes:
        if self._archive is not None:
            return self._archive.read(self._archive_root + name, self._item_id(name))
        key = f"{self.prefix}/{name}" if self.prefix else name
        what = self._item_id(name)
        return self._fetch(key, what, _bounded_body(self._limits.max_member_size, what))

    def _item_id(self, name: str) -> str:
        if self._archive is not None:
            return f"{self.uri}!/{self._archive_root}{name}"
        return f"{self.uri}/{name}"

    def remote_reader(self) -> Callable[[Entry], RawItem] | None:
        """A reader for Ray workers: they fetch the objects with clients of their own.

        Workers make their client from their own environment (``COS_*`` variables, see
        :func:`cos_client`), never from credentials sent to them. ``None`` for an archive
        object, which is downloaded whole by this process.
        """
        if self._archive is not None:
            return None
        return _RemoteObjectReader(
            self.bucket,
            self.prefix,
            self.uri,
            endpoint_url=getattr(getattr(self._client, "meta", None), "endpoint_url", None),
            max_attempts=self.max_attempts,
            backoff=self.backoff,
            max_size=self._limits.max_member_size,
        )

    def close(self) -> None:
        """Release the downloaded archive, if any (closing twice is harmless)."""
        self._release()

    def __enter__(self) -> COSSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _close_all(resources: list[SafeZipArchive | IO[bytes]]) -> None:
    """Close what a source holds open, the archive before the file under it."""
    for resource in reversed(resources):
        resource.close()
    resources.clear()


def _existing_keys(client: Any, bucket: str, prefix: str, what: str) -> set[str]:
    keys: set[str] = set()

    def list_keys() -> None:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.update(item["Key"] for item in page.get("Contents", []))

    _unchained(list_keys, lambda exc: _client_error(client, exc, what))
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

    def upload() -> None:
        for path, key in uploads:
            client.upload_file(str(path), bucket, key)

    _unchained(upload, lambda exc: _client_error(client, exc, f"cos://{bucket}/{prefix}"))
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
        _unchained(
            lambda: client.upload_fileobj(spool, bucket, key),
            lambda exc: _client_error(client, exc, uri),
        )
    return key
