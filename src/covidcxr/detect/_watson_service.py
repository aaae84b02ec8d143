"""The Watson detector's plumbing: configuration, the SDK client, retries and uploads.

:class:`_ServiceConnection` is the part of :class:`~covidcxr.WatsonDetector` that
talks HTTP: it builds the ``ibm_watson.VisualRecognitionV4`` client (imported only when a
request is made), authenticates, and runs each SDK operation with retries on HTTP 429,
500, 502, 503 and 504 answers, timeouts and dropped connections, honouring
``Retry-After``; an operation that is not idempotent (creating a collection, adding
images) is retried only when the service cannot have acted on it (HTTP 429, or no
connection made). Images are uploaded as PNG, resized into the range of sizes the service
accepts (:func:`_prepare_upload`); the record of that resize maps the service's boxes back.
"""

from __future__ import annotations

import contextlib
import email.utils
import io
import itertools
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import cv2
import numpy as np
from attrs import frozen

from covidcxr._secrets import Redactor
from covidcxr.boxes import ResizeTransform
from covidcxr.detect._imaging import encode_png, to_uint8
from covidcxr.errors import ConfigurationError, DetectorServiceError
from covidcxr.records import XRay

__all__ = [
    "API_VERSION",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "ENV_APIKEY",
    "ENV_COLLECTION_IDS",
    "ENV_IAM_URL",
    "ENV_URL",
    "MAX_IMAGES_PER_REQUEST",
    "ServiceRetiredWarning",
    "watson_configured",
]

# The logger keeps the name it had when all of Watson lived in covidcxr.detect.watson, so
# logging configured for it goes on working.
logger = logging.getLogger("covidcxr.detect.watson")

ENV_URL: Final = "COVIDCXR_WATSON_URL"
ENV_APIKEY: Final = "COVIDCXR_WATSON_APIKEY"
ENV_IAM_URL: Final = "COVIDCXR_WATSON_IAM_URL"
ENV_COLLECTION_IDS: Final = "COVIDCXR_WATSON_COLLECTION_IDS"
_SDK_ENV_URL: Final = "VISUAL_RECOGNITION_URL"
_SDK_ENV_APIKEY: Final = "VISUAL_RECOGNITION_APIKEY"

#: The v4 API version date the client asks for (the last one the service published).
API_VERSION: Final = "2019-02-11"
#: The service's limit on images in one ``analyze`` or ``add_images`` request.
MAX_IMAGES_PER_REQUEST: Final = 20
#: The default cap on an answer's body: 20 images of 100 detections are about 300 kB.
DEFAULT_MAX_RESPONSE_BYTES: Final = 32 << 20
_READ_CHUNK: Final = 1 << 16
# The service refuses images under 30 px or over 5400 px on a side; smaller ones are
# enlarged to 32 px, with a little margin over the limit.
_MIN_SERVICE_SIDE: Final = 30
_MIN_UPLOAD_SIDE: Final = 32
_MAX_SERVICE_SIDE: Final = 5400
#: Answers worth another attempt: overload and transient gateway or server failures. Other
#: 5xx answers (501 Not Implemented, 507 Insufficient Storage ...) would answer the same.
_RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
#: The one answer that says the service did not act on the request, so that even an
#: operation that is not idempotent can be sent again.
_NOT_ACTED_STATUSES: Final = frozenset({429})

#: Where ibm-cloud-sdk-core's authenticators and token managers keep credentials: given
#: ones (an apikey, a password, a bearer token, a client secret) and issued ones (tokens).
_CREDENTIAL_ATTRIBUTES: Final = (
    "apikey",
    "password",
    "bearer_token",
    "client_secret",
    "access_token",
    "refresh_token",
)

# redirect_stdout swaps the process-wide sys.stdout; serialise the clients that need it.
_SDK_PRINT_LOCK = threading.Lock()


class ServiceRetiredWarning(UserWarning):
    """The Watson SDK announced that Visual Recognition is no longer available."""


def watson_configured() -> bool:
    """Whether the environment names a Watson endpoint, an apikey and collection ids.

    :func:`covidcxr.detect.default_detector_name` uses it to pick ``"watson"`` over the
    offline ``"local"`` detector.

    Examples
    --------
    >>> detector_name = "watson" if watson_configured() else "local"
    """
    return all(os.environ.get(name) for name in (ENV_URL, ENV_APIKEY, ENV_COLLECTION_IDS))


def _retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    text = value.strip()
    with contextlib.suppress(ValueError):
        return max(0.0, float(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@frozen
class _Upload:
    filename: str
    png: bytes
    # From the XRay's pixels to the uploaded image's (a stretch; identity when not resized).
    transform: ResizeTransform

    def as_file(self) -> dict[str, Any]:
        return {"data": self.png, "filename": self.filename, "content_type": "image/png"}


class _ServiceConnection:
    """The SDK client of a :class:`~covidcxr.WatsonDetector`, and its requests.

    The detector sets these attributes in its ``__init__``; this class only reads them.
    """

    url: str | None
    collection_ids: tuple[str, ...]
    authenticator: Any
    iam_url: str | None
    max_retries: int
    timeout: float
    backoff: float
    max_wait: float
    version: str
    max_response_bytes: int
    _apikey: str | None
    _service: Any
    _service_lock: threading.Lock

    def _make_authenticator(self) -> Any:
        if self.authenticator is not None:
            return self.authenticator
        if not self._apikey:
            raise ConfigurationError(
                f"Watson needs credentials: pass apikey= or authenticator=, or set ${ENV_APIKEY}"
            )
        from ibm_cloud_sdk_core.authenticators import IAMAuthenticator  # noqa: PLC0415

        try:
            return IAMAuthenticator(self._apikey, url=self.iam_url)
        except ValueError as exc:
            raise ConfigurationError(
                f"the Watson apikey was refused: {self._scrub(str(exc))}"
            ) from None

    def _client(self) -> Any:
        with self._service_lock:
            if self._service is not None:
                return self._service
            if not self.url:
                raise ConfigurationError(
                    f"Watson needs a service url: pass url= or set ${ENV_URL} (IBM retired "
                    "the public Visual Recognition endpoints on 2021-12-01; point it at a "
                    "compatible deployment)"
                )
            try:
                # Imported here: the SDK is an optional extra and slow to import.
                from ibm_watson import VisualRecognitionV4  # noqa: PLC0415
            except ImportError as exc:
                raise ConfigurationError(
                    "the Watson detector needs ibm-watson 5.3.1, the last release with "
                    "VisualRecognitionV4: pip install 'covidcxr[watson]'"
                ) from exc
            authenticator = self._make_authenticator()
            # The SDK prints its retirement notice to stdout on every construction; a
            # library must not write to its user's stdout, so it becomes a warning.
            with _SDK_PRINT_LOCK, contextlib.redirect_stdout(io.StringIO()) as printed:
                service = VisualRecognitionV4(version=self.version, authenticator=authenticator)
            notice = printed.getvalue().strip()
            if notice:
                warnings.warn(
                    f"ibm-watson: {notice.removeprefix('warning:').strip()}",
                    ServiceRetiredWarning,
                    stacklevel=4,
                )
            service.set_service_url(self.url)
            service.set_http_config({"timeout": self.timeout})
            # The SDK reads whole bodies (a 600 MB answer took 1.9 GB), each socket read
            # bounded by timeout but not their sum; a response hook runs before requests
            # reads the body, so it can read it with a size limit and a deadline.
            service.get_http_client().hooks["response"].append(
                _bounded_body(self.max_response_bytes, self.timeout)
            )
            _bound_token_requests(service.authenticator, self.max_response_bytes, self.timeout)
            self._service = service
            return service

    def _scrub(self, text: str) -> str:
        # Every encoding: an IAM error may echo the form body, with the apikey URL-encoded.
        return Redactor(self._credentials())(text)

    def _credentials(self) -> list[str | None]:
        """The apikey, and what the authenticator holds: a service may echo any of them.

        A service that repeats a request's ``Authorization`` header shows the bearer token
        (given, or issued for the apikey) or the Basic password, as it was sent.
        """
        authenticator = getattr(self._service, "authenticator", None) or self.authenticator
        manager = getattr(authenticator, "token_manager", None)
        # IAMAssumeAuthenticator's manager asks a delegate, which holds the apikey.
        holders = (authenticator, manager, getattr(manager, "iam_delegate", None))
        found: list[str | None] = [self._apikey]
        for holder in holders:
            values = (getattr(holder, name, None) for name in _CREDENTIAL_ATTRIBUTES)
            found += [value for value in values if isinstance(value, str)]
        # BasicAuthenticator's "Basic <base64 of user:password>", whole: a short password
        # leaves too few characters of its own in the base64 to be recognised there.
        header = getattr(authenticator, "authorization_header", None)
        if isinstance(header, str):
            found.append(header.rpartition(" ")[2])
        return found

    def _failure_message(
        self, action: str, status: int | None, detail: str, where: str, *, token: bool = False
    ) -> str:
        ids = ", ".join(self.collection_ids) or "none"
        if token or where.rstrip("/").endswith("/identity/token"):
            if status in (400, 401, 403):
                hint = "the IAM token server refused the apikey; check apikey= and iam_url="
            else:
                hint = "no access token was issued; check iam_url= (or try again later)"
        elif status == 401:
            hint = f"the credentials were rejected; check apikey= (or ${ENV_APIKEY}) and iam_url="
        elif status == 403:
            hint = f"the credentials may not use collection(s) {ids}"
        elif status == 404:
            hint = f"check the url ({self.url}) and the collection id(s) ({ids})"
        else:
            hint = ""
        code = f"HTTP {status}" if status is not None else "no answer"
        message = f"Watson {action} failed ({code}): {detail}"
        return self._scrub(f"{message}; {hint}" if hint else message)

    def _token_manager(self) -> Any:
        """The client's token manager (IAM, Cloud Pak ...), or ``None`` for other schemes."""
        authenticator = getattr(self._service, "authenticator", None)
        manager = getattr(authenticator, "token_manager", None)
        return manager if callable(getattr(manager, "get_token", None)) else None

    def _token_label(self) -> str:
        # An apikey is exchanged at IAM; a given authenticator may use another token server.
        return "IAM token request" if self.authenticator is None else "token request"

    def _fetch_token(self) -> None:
        """Get (or reuse) the access token, so that its failures are told apart."""
        manager = self._token_manager()
        if manager is not None:
            manager.get_token()

    def _reset_token_pacing(self) -> None:
        """Let the next attempt request a token at once.

        ibm-cloud-sdk-core's ``TokenManager.paced_request_token`` records when a token
        request starts and clears the record only when it succeeds; while the record is
        under 60 s old, every other request for a token sleeps, taking it for a request in
        flight. After a failed token request that held the retry for a minute whatever
        ``backoff`` and ``timeout`` said.
        """
        manager = self._token_manager()
        if manager is None or not hasattr(manager, "request_time"):
            return
        lock = getattr(manager, "lock", None)
        with lock if lock is not None else contextlib.nullcontext():
            manager.request_time = 0

    def _call(
        self,
        action: str,
        operation: Callable[..., Any],
        *,
        idempotent: bool = True,
        **arguments: Any,
    ) -> Any:
        """Run one SDK operation, retrying 429/500/502/503/504/timeouts; return the JSON result.

        An operation that is not ``idempotent`` (one that creates something) is sent again
        only when the service cannot have acted on it: after HTTP 429, a failure to connect,
        or a failure to get the access token (sent before the operation itself). After a
        5xx answer, a timeout or a connection dropped once the request went out, it may
        have been carried out, and a second one could store a duplicate.
        """
        # Hand-written on purpose. ibm-cloud-sdk-core's BaseService.enable_retries (3.28:
        # urllib3 Retry on the session; 429/500/502/503/504, POST included, Retry-After
        # honoured) would retry the same requests, but: when it gives up it raises
        # requests' RetryError, which has no status code, headers or service message, so
        # DetectorServiceError could say neither "HTTP 503" nor why; it does not cap
        # Retry-After (urllib3's retry_after_max, 6 h, is left as is), so max_wait is lost;
        # its backoff factor is fixed at 1 s with an immediate first retry, so backoff is
        # lost; it logs retries only at DEBUG; a timeout that exhausts it surfaces as a
        # ConnectionError; it retries a POST that created something; and IAM token requests
        # bypass the session, so are not retried.
        from ibm_cloud_sdk_core import ApiException  # noqa: PLC0415
        from requests import exceptions  # noqa: PLC0415

        # A dropped connection surfaces as ConnectionError before the answer's head, as
        # ChunkedEncodingError (or ContentDecodingError, when compressed) within its body.
        dropped = (
            exceptions.Timeout,
            exceptions.ConnectionError,
            exceptions.ChunkedEncodingError,
            exceptions.ContentDecodingError,
        )
        for attempt in itertools.count(1):
            token_step = True
            try:
                self._fetch_token()
                token_step = False
                return operation(**arguments).get_result()
            except ApiException as exc:
                status: int | None = exc.status_code
                response = exc.http_response
                where = str(getattr(response, "url", "") or "")
                detail = str(exc.message)
                headers: Mapping[str, str] = response.headers if response is not None else {}
                retryable = status in _RETRY_STATUSES
                acted = status not in _NOT_ACTED_STATUSES
            except dropped as exc:
                status, where, headers, retryable = None, "", {}, True
                detail = f"{type(exc).__name__}: {exc}"
                acted = not _never_sent(exc)
            except exceptions.RequestException as exc:
                # Refused before sending (InvalidHeader: a token read from a file with its
                # newline); the message quotes the header, so it is scrubbed like the others.
                status, where, headers, retryable, acted = None, "", {}, False, False
                detail = f"not sent: {type(exc).__name__}: {exc}"
            except DetectorServiceError:
                self._reset_token_pacing()
                raise
            except Exception as exc:
                if not token_step:
                    raise
                # A token answer of the wrong shape (not an object, no access_token, not a
                # JWT) fails inside the SDK with AttributeError, KeyError, jwt's DecodeError.
                self._reset_token_pacing()
                raise DetectorServiceError(
                    self._scrub(
                        f"Watson {action} failed: the {self._token_label()} returned an "
                        f"answer that is not an access token ({type(exc).__name__}: {exc}); "
                        "check iam_url="
                    )
                ) from None
            self._reset_token_pacing()
            reason = f"HTTP {status}" if status is not None else self._scrub(detail)
            if token_step:
                reason = f"the {self._token_label()} failed ({reason})"
                detail = f"the {self._token_label()} failed: {detail}"
            may_repeat = retryable and (token_step or idempotent or not acted)
            if not may_repeat or attempt > self.max_retries:
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                if retryable and not may_repeat:
                    tries += (
                        "; not sent again, as the service may have carried it out: check "
                        "for a duplicate before repeating it"
                    )
                raise DetectorServiceError(
                    self._failure_message(action, status, detail + tries, where, token=token_step),
                    status,
                ) from None
            wait = _retry_after_seconds(headers.get("Retry-After"))
            if wait is None:
                wait = self.backoff * 2 ** (attempt - 1)
            wait = min(wait, self.max_wait)
            logger.warning(
                "Watson %s: %s; attempt %d of %d, retrying in %.1f s",
                action,
                reason,
                attempt,
                self.max_retries + 1,
                wait,
            )
            time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover


def _never_sent(exc: BaseException) -> bool:
    """Whether a requests failure happened before the request left (no connection made)."""
    from requests.exceptions import ConnectTimeout  # noqa: PLC0415
    from urllib3.exceptions import ConnectTimeoutError  # noqa: PLC0415

    if isinstance(exc, ConnectTimeout):
        return True
    # requests wraps urllib3's MaxRetryError, whose reason is the underlying failure;
    # NewConnectionError (refused, unreachable, name not resolved) is a ConnectTimeoutError.
    cause = exc.args[0] if exc.args else None
    return isinstance(getattr(cause, "reason", cause), ConnectTimeoutError)


def _bound_token_requests(authenticator: Any, limit: int, timeout: float) -> None:
    """Give the authenticator's token requests the deadline and size cap of the others.

    ibm-cloud-sdk-core's token managers send with ``requests.request`` (a session of its
    own each time), passing their ``http_config`` on as keyword arguments, so a ``hooks``
    entry there runs :func:`_bounded_body` on the token server's answer too. The
    manager gets a dict of its own: ``set_http_config`` shares the service's, which must
    not carry the hook a second time.
    """
    manager = getattr(authenticator, "token_manager", None)
    config = getattr(manager, "http_config", None)
    if manager is None or not isinstance(config, dict):
        return
    manager.http_config = {
        **config,
        "timeout": timeout,
        "hooks": {"response": [_bounded_body(limit, timeout)]},
    }


def _bounded_body(limit: int, timeout: float) -> Callable[..., Any]:
    """A requests response hook that reads the body within ``limit`` bytes and ``timeout`` s.

    requests' ``timeout`` bounds each socket read, not the request: a server that sends a
    byte every half second held a call with ``timeout=3`` for two minutes. The hook runs
    once the status line and headers are in, ``response.elapsed`` after the request went
    out (connecting and uploading included), so the body gets what is left of ``timeout``;
    a watchdog shuts the socket down when that runs out, which ends a read in progress.
    The overrun raises requests' ``Timeout``, which :meth:`_ServiceConnection._call`
    retries like any other timeout.
    """
    from requests.exceptions import RequestException, Timeout  # noqa: PLC0415

    def read_within_limits(response: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("stream"):
            return response
        declared = str(response.headers.get("Content-Length") or "")
        if declared.isdigit() and int(declared) > limit:
            response.close()
            raise _too_large(response, limit)
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            # Ends a blocked read at once (urllib3 >= 2.3); the socket is closed below.
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                response.raw.shutdown()

        watchdog = threading.Timer(max(0.0, timeout - response.elapsed.total_seconds()), expire)
        watchdog.daemon = True
        watchdog.start()
        size = 0
        chunks: list[bytes] = []
        try:
            # iter_content decodes gzip, so a compressed bomb is counted as it inflates.
            for chunk in response.iter_content(_READ_CHUNK):
                size += len(chunk)
                if size > limit:
                    break
                chunks.append(chunk)
        except (RequestException, OSError):
            if not expired.is_set():
                raise
        finally:
            watchdog.cancel()
        # Checked even when the loop ended quietly: a body without Content-Length that
        # was cut by the watchdog looks complete.
        if expired.is_set():
            response.close()
            raise Timeout(
                f"Watson did not answer within {timeout:g} s (timeout= bounds the whole "
                "request, the answer's body included)",
                response=response,
            )
        if size > limit:
            response.close()
            raise _too_large(response, limit)
        # What requests would have read itself; Response.content returns it as is.
        response._content = b"".join(chunks)
        return response

    return read_within_limits


def _too_large(response: Any, limit: int) -> DetectorServiceError:
    return DetectorServiceError(
        f"Watson's answer from {response.url.split('?')[0]} is larger than "
        f"max_response_bytes={limit}; it was abandoned before parsing (raise the "
        "limit only for an endpoint you trust)",
        response.status_code,
    )


def _prepare_upload(xray: XRay, index: int) -> _Upload:
    """PNG-encode ``xray``, resized into the service's accepted size range if needed."""
    pixels = to_uint8(xray.pixels)
    height, width = pixels.shape
    scale = 1.0
    if min(height, width) < _MIN_SERVICE_SIDE:
        scale = _MIN_UPLOAD_SIDE / min(height, width)
    if max(height, width) * scale > _MAX_SERVICE_SIDE:
        scale = _MAX_SERVICE_SIDE / max(height, width)
    if scale != 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        interpolation = cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
        pixels = np.asarray(cv2.resize(pixels, size, interpolation=interpolation), np.uint8)
    return _Upload(
        filename=f"image-{index:02d}.png",
        png=encode_png(pixels),
        transform=ResizeTransform.stretch((height, width), (pixels.shape[0], pixels.shape[1])),
    )
