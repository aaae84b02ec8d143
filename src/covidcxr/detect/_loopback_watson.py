"""An in-memory Visual Recognition v4 server on 127.0.0.1, for tests and offline demos.

IBM retired Watson Visual Recognition on 2021-12-01, so :class:`~covidcxr.WatsonDetector`
can no longer be exercised against IBM. This server speaks the part of the v4 REST protocol
the detector uses (``analyze``, collections, images with training data, ``train``,
``get_collection``) plus an IAM token endpoint, records every request it receives, and
can be told to fail (HTTP status, ``Retry-After``, per-image errors, a connection dropped
mid-answer) so that error paths can be tested with the real SDK. It binds to the loopback
interface only.

Its "model" is a lookup: ``analyze`` answers with the training boxes of the identical
image in the queried collections (score 0.95), or with whatever :attr:`objects_for`
returns.

Examples
--------
>>> from covidcxr.detect import WatsonDetector
>>> with LoopbackWatsonServer() as server:  # doctest: +SKIP
...     detector = WatsonDetector(url=server.url, iam_url=server.url, apikey=server.apikey,
...                               collection_ids=server.add_collection("demo"))
...     detector.detect(xray)
[]
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hmac
import json
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from hashlib import sha256
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np
from attrs import define, field, frozen

__all__ = ["FormPart", "LoopbackWatsonServer", "RecordedRequest"]

_JWT_SUBJECT: Final = "loopback-watson"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _make_jwt(lifetime: int = 3600) -> str:
    """A signed HS256 JWT: the SDK decodes (without verifying) it to learn its expiry."""
    now = int(time.time())
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps({"sub": _JWT_SUBJECT, "iat": now, "exp": now + lifetime}).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = hmac.new(secrets.token_bytes(32), signing_input, "sha256").digest()
    return f"{header}.{payload}.{_b64url(signature)}"


@frozen
class FormPart:
    """One part of a ``multipart/form-data`` request body."""

    name: str
    filename: str | None
    content_type: str
    data: bytes

    @property
    def text(self) -> str:
        """The part decoded as UTF-8."""
        return self.data.decode("utf-8")


@frozen
class RecordedRequest:
    """A request the server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = field(repr=False)
    parts: tuple[FormPart, ...] = field(repr=False)

    def values(self, name: str) -> list[str]:
        """The text of every form part called ``name``."""
        return [part.text for part in self.parts if part.name == name and part.filename is None]

    def files(self, name: str) -> list[FormPart]:
        """Every file part called ``name``."""
        return [part for part in self.parts if part.name == name and part.filename is not None]

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@define
class _Failure:
    status: int
    retry_after: str | None
    path_prefix: str
    remaining: int
    body: dict[str, Any]


def _parse_multipart(content_type: str, body: bytes) -> tuple[FormPart, ...]:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    parts = []
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        parts.append(
            FormPart(
                name=str(part.get_param("name", header="content-disposition") or ""),
                filename=part.get_filename(),
                content_type=part.get_content_type(),
                data=payload if isinstance(payload, bytes) else b"",
            )
        )
    return tuple(parts)


def _png_size(data: bytes) -> tuple[int, int]:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        return 0, 0
    return int(image.shape[0]), int(image.shape[1])


class LoopbackWatsonServer:
    """A Visual Recognition v4 (and IAM token) server on ``127.0.0.1``.

    Parameters
    ----------
    apikey
        The only apikey the IAM endpoint accepts.
    training_polls
        How many ``get_collection`` calls report training in progress before it is ready.

    Attributes
    ----------
    requests
        Every request received, in order (IAM token requests included).
    objects_for
        ``objects_for(filename, png_bytes, collection_id)``: extra objects (dicts with
        ``object``, ``score`` and ``location``) for ``analyze`` to return.
    image_errors
        ``{filename: (code, message)}``: ``analyze`` reports these as per-image errors.
    fail_training
        Make training end with ``latest_failed``.
    response_delay
        Seconds to wait before answering any ``/v4/`` request (to test timeouts).
    drip_interval
        Seconds between the bytes of each answer's body under :attr:`drip_path_prefix`,
        sent one at a time after the headers (to test that a timeout bounds the whole
        request, not each read); ``0`` (the default) sends the body at once.
    drip_path_prefix
        The paths whose answers :attr:`drip_interval` slows: ``"/v4/"`` (the default), or
        ``"/identity/token"`` for the IAM token endpoint.
    honour_threshold
        Drop objects scoring under the request's ``threshold`` (the default); set it to
        ``False`` to act as a lenient endpoint that ignores it.
    rewrite_analysis
        ``rewrite_analysis(document)``: what ``analyze`` sends instead of the document it
        built (any JSON value), to test answers of an unexpected shape; ``None`` (the
        default) sends the document as built.
    """

    def __init__(self, *, apikey: str = "loopback-apikey", training_polls: int = 1) -> None:
        self.apikey = apikey
        self.training_polls = training_polls
        self.requests: list[RecordedRequest] = []
        self.collections: dict[str, dict[str, Any]] = {}
        self.objects_for: Callable[[str, bytes, str], list[dict[str, Any]]] = (
            lambda filename, png, collection_id: []
        )
        self.image_errors: dict[str, tuple[str, str]] = {}
        self.fail_training = False
        self.honour_threshold = True
        self.response_delay = 0.0
        self.drip_interval = 0.0
        self.drip_path_prefix = "/v4/"
        self.rewrite_analysis: Callable[[dict[str, Any]], Any] | None = None
        self._images: dict[str, dict[str, Any]] = {}
        self._failures: deque[_Failure] = deque()
        self._drops: deque[_Failure] = deque()
        self._polls_left: dict[str, int] = {}
        self._lock = threading.Lock()
        self._token = _make_jwt()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:<port>``; also the IAM URL."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> LoopbackWatsonServer:
        """Serve in a daemon thread; returns ``self``."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._stopping.set()  # ends any dripping answer
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> LoopbackWatsonServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        retry_after: str | None = None,
        path_prefix: str = "/v4/",
        message: str = "injected failure",
    ) -> None:
        """Answer the next ``times`` requests under ``path_prefix`` with ``status``."""
        body = {"errors": [{"code": HTTPStatus(status).phrase, "message": message}]}
        self._failures.append(_Failure(status, retry_after, path_prefix, times, body))

    def drop_next(self, *, times: int = 1, path_prefix: str = "/v4/") -> None:
        """Drop the connection mid-answer for the next ``times`` requests under ``path_prefix``.

        Each request is carried out as usual (a collection or image is stored), then its
        answer is cut off: the status line, the headers with the full ``Content-Length``
        and half of the body are sent, and the connection is closed, as when a proxy or
        the network fails while the answer is on its way.
        """
        self._drops.append(_Failure(200, None, path_prefix, times, {}))

    def add_collection(self, name: str = "collection") -> str:
        """Create a trained, empty collection directly; returns its id."""
        with self._lock:
            return str(self._new_collection({"name": name}, ready=True)["collection_id"])

    def requests_to(self, path: str, method: str = "POST") -> list[RecordedRequest]:
        """The recorded requests for ``path`` (query string excluded)."""
        return [r for r in self.requests if r.path == path and r.method == method]

    # -- protocol ----------------------------------------------------------------------------

    def _new_collection(self, document: dict[str, Any], *, ready: bool) -> dict[str, Any]:
        collection_id = str(uuid.uuid4())
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        collection = {
            "collection_id": collection_id,
            "name": document.get("name", ""),
            "description": document.get("description", ""),
            "created": now,
            "updated": now,
            "image_count": 0,
            "training_status": {
                "objects": {
                    "ready": ready,
                    "in_progress": False,
                    "data_changed": False,
                    "latest_failed": False,
                    "rscnn_ready": ready,
                    "description": "",
                }
            },
        }
        self.collections[collection_id] = collection
        return collection

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Stay quiet: tests read :attr:`requests` instead."""

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def _dispatch(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                content_type = self.headers.get("Content-Type", "")
                parts = (
                    _parse_multipart(content_type, body)
                    if content_type.startswith("multipart/form-data")
                    else ()
                )
                request = RecordedRequest(
                    method=method,
                    path=split.path,
                    query=parse_qs(split.query),
                    headers={key.lower(): value for key, value in self.headers.items()},
                    body=body,
                    parts=parts,
                )
                with server._lock:
                    server.requests.append(request)
                    status, payload, headers = server._answer(request)
                    dropped = server._take_drop(request.path)
                if server.response_delay and request.path.startswith("/v4/"):
                    time.sleep(server.response_delay)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    if dropped:
                        self.wfile.write(data[: len(data) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                    elif server.drip_interval and request.path.startswith(server.drip_path_prefix):
                        self._drip(data, server.drip_interval)
                    else:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (a timeout test)

            def _drip(self, data: bytes, interval: float) -> None:
                for index in range(len(data)):
                    if server._stopping.wait(interval):
                        self.close_connection = True
                        return
                    self.wfile.write(data[index : index + 1])
                    self.wfile.flush()

        return Handler

    def _take_drop(self, path: str) -> bool:
        for drop in self._drops:
            if path.startswith(drop.path_prefix):
                drop.remaining -= 1
                if drop.remaining <= 0:
                    self._drops.remove(drop)
                return True
        return False

    # A flat routing table reads better here than a dispatch dictionary of small functions.
    def _answer(  # noqa: PLR0911, PLR0912
        self, request: RecordedRequest
    ) -> tuple[int, Any, dict[str, str]]:
        for failure in self._failures:
            if request.path.startswith(failure.path_prefix):
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
                headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
                return failure.status, failure.body, headers
        if request.path == "/identity/token":
            return self._token_answer(request)
        if request.headers.get("authorization") != f"Bearer {self._token}":
            return 401, {"code": 401, "error": "Unauthorized"}, {}
        if "version" not in request.query:
            return 400, _errors("missing_field", "the version query parameter is required"), {}
        segments = request.path.strip("/").split("/")
        if segments == ["v4", "analyze"] and request.method == "POST":
            return self._analyze(request)
        if segments == ["v4", "collections"] and request.method == "POST":
            created = self._new_collection(request.json(), ready=False)
            return 201, created, {}
        if len(segments) < 3 or segments[:2] != ["v4", "collections"]:
            return 404, _errors("not_found", f"no route for {request.path}"), {}
        collection = self.collections.get(segments[2])
        if collection is None:
            return 404, _errors("not_found", f"collection {segments[2]} was not found"), {}
        rest = segments[3:]
        if not rest and request.method == "GET":
            return 200, self._poll(collection), {}
        if rest == ["images"] and request.method == "POST":
            return self._add_images(collection, request)
        if len(rest) == 3 and rest[0] == "images" and rest[2] == "training_data":
            image = self._images.get(rest[1])
            if image is None or image["collection_id"] != collection["collection_id"]:
                return 404, _errors("not_found", f"image {rest[1]} was not found"), {}
            image["training_data"] = request.json()
            collection["training_status"]["objects"]["data_changed"] = True
            return 200, image["training_data"], {}
        if rest == ["train"] and request.method == "POST":
            status = collection["training_status"]["objects"]
            status.update(in_progress=True, data_changed=False, latest_failed=False)
            self._polls_left[collection["collection_id"]] = self.training_polls
            return 202, collection, {}
        return 404, _errors("not_found", f"no route for {request.method} {request.path}"), {}

    def _token_answer(self, request: RecordedRequest) -> tuple[int, Any, dict[str, str]]:
        form = parse_qs(request.body.decode())
        if form.get("grant_type") != ["urn:ibm:params:oauth:grant-type:apikey"]:
            return 400, {"errorCode": "BXNIM0109E", "errorMessage": "bad grant_type"}, {}
        if form.get("apikey") != [self.apikey]:
            message = "Provided API key could not be found."
            return 400, {"errorCode": "BXNIM0415E", "errorMessage": message}, {}
        now = int(time.time())
        self._token = _make_jwt()
        token = {
            "access_token": self._token,
            "refresh_token": "not-supported",
            "token_type": "Bearer",
            "expires_in": 3600,
            "expiration": now + 3600,
        }
        return 200, token, {}

    def _poll(self, collection: dict[str, Any]) -> dict[str, Any]:
        status = collection["training_status"]["objects"]
        if status["in_progress"]:
            left = self._polls_left.get(collection["collection_id"], 0)
            if left > 0:
                self._polls_left[collection["collection_id"]] = left - 1
            else:
                status["in_progress"] = False
                if self.fail_training:
                    status.update(latest_failed=True, description="not enough training data")
                else:
                    status.update(ready=True, rscnn_ready=True)
        return collection

    def _add_images(
        self, collection: dict[str, Any], request: RecordedRequest
    ) -> tuple[int, Any, dict[str, str]]:
        files = request.files("images_file")
        training = request.values("training_data")
        if training and len(files) != 1:
            message = "training_data is accepted only with a single image"
            return 400, _errors("invalid_field", message), {}
        answers = []
        for part in files:
            image_id = uuid.uuid4().hex
            height, width = _png_size(part.data)
            image = {
                "image_id": image_id,
                "collection_id": collection["collection_id"],
                "source": {"type": "file", "filename": part.filename},
                "dimensions": {"height": height, "width": width},
                "training_data": json.loads(training[0]) if training else {"objects": []},
                "digest": sha256(part.data).hexdigest(),
            }
            self._images[image_id] = image
            collection["image_count"] += 1
            collection["training_status"]["objects"]["data_changed"] = True
            answers.append({k: v for k, v in image.items() if k not in ("digest",)})
        return 200, {"images": answers}, {}

    def _analyze(self, request: RecordedRequest) -> tuple[int, Any, dict[str, str]]:
        collection_ids = request.values("collection_ids")
        if not collection_ids or request.values("features") != ["objects"]:
            message = "collection_ids and features=objects are required"
            return 400, _errors("missing_field", message), {}
        for collection_id in collection_ids:
            if collection_id not in self.collections:
                return 404, _errors("not_found", f"collection {collection_id} was not found"), {}
        threshold = float((request.values("threshold") or ["0.5"])[0])
        images = []
        for part in request.files("images_file"):
            filename = part.filename or ""
            height, width = _png_size(part.data)
            result: dict[str, Any] = {
                "source": {"type": "file", "filename": filename},
                "dimensions": {"height": height, "width": width},
            }
            if filename in self.image_errors:
                code, message = self.image_errors[filename]
                result["errors"] = [{"code": code, "message": message, "more_info": ""}]
            else:
                digest = sha256(part.data).hexdigest()
                collections = []
                for collection_id in collection_ids:
                    found = [
                        {"object": item["object"], "location": item["location"], "score": 0.95}
                        for image in self._images.values()
                        if image["collection_id"] == collection_id and image["digest"] == digest
                        for item in image["training_data"].get("objects", [])
                    ]
                    found += self.objects_for(filename, part.data, collection_id)
                    if self.honour_threshold:
                        found = [item for item in found if item["score"] >= threshold]
                    collections.append({"collection_id": collection_id, "objects": found})
                result["objects"] = {"collections": collections}
            images.append(result)
        document: dict[str, Any] = {"images": images, "trace": uuid.uuid4().hex}
        if self.rewrite_analysis is not None:
            return 200, self.rewrite_analysis(document), {}
        return 200, document, {}


def _errors(code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message, "more_info": ""}], "trace": ""}
