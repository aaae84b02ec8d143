"""Specification of the IBM COS source and uploads, run against a loopback S3 server.

The real ``ibm_boto3`` SDK talks to a real S3-compatible server (moto in server mode) on
127.0.0.1; a small loopback proxy in front of it injects throttling and denials, so the
SDK's own retry and error handling is what gets tested.
"""

from __future__ import annotations

import gc
import http.client
import io
import json
import logging
import threading
import time
import traceback
import warnings
import zipfile
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, quote_plus, urlsplit

import pytest

import covidcxr
from covidcxr.errors import ConfigurationError, InvalidImageError, SourceError
from covidcxr.sources import COSSource, ZipLimits, cos_client, upload_folder, upload_folder_as_zip
from covidcxr.sources import _cos as cos_module

from ..conftest import free_port

pytest.importorskip("ibm_boto3")
pytest.importorskip("moto.server")

ACCESS_KEY = "AKIDCOVIDCXRTEST0001"
SECRET_KEY = "s3cr3t-Do-Not-Leak-7f9c2e41"


class FaultProxy:
    """A loopback HTTP proxy to the S3 server that can answer with injected errors."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.fail_next = 0
        self.fail_status = 503
        self.fail_code = "SlowDown"
        self.always: tuple[int, str] | None = None
        # Whether an injected error's message repeats the request's Authorization header.
        self.echo_authorization = False
        # Answers to cut short: headers with the full Content-Length, half the body, close.
        self.drop_next = 0
        # Faults apply only to requests whose path starts with this (``/bucket/`` is every
        # object request, leaving the bucket listing alone).
        self.fault_prefix = "/"
        self.requests = 0
        self.injected = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                proxy.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                faulty = self.path.startswith(proxy.fault_prefix)
                fault = proxy.always if faulty else None
                if fault is None and faulty and proxy.fail_next > 0:
                    proxy.fail_next -= 1
                    fault = (proxy.fail_status, proxy.fail_code)
                if fault is not None:
                    proxy.injected += 1
                    status, code = fault
                    message = f"injected {code}"
                    if proxy.echo_authorization:
                        message += f" for {self.headers.get('Authorization')}"
                    payload = (
                        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                        f"<Message>{message}</Message></Error>"
                    ).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                connection = http.client.HTTPConnection(
                    str(proxy.upstream.hostname), proxy.upstream.port
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = self.headers.get("Host", "")
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                connection.close()
                drop = faulty and proxy.drop_next > 0 and len(data) > 1
                if drop:
                    proxy.drop_next -= 1
                    proxy.injected += 1
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in {"transfer-encoding", "connection", "content-length"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if drop else data)
                if drop:
                    self.wfile.flush()
                    self.close_connection = True

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._handler = Handler
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._serve()

    def _serve(self) -> None:
        # Polled every 50 ms, not the default 500: stopping (every test's teardown) waits
        # for the next poll.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        """Stop listening: connections are refused until :meth:`start`."""
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()
            self.thread.join()

    def start(self) -> None:
        """Listen again on the same port (a server restart)."""
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler)
        self._serve()

    def close(self) -> None:
        self.stop()


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(s3_endpoint)
    try:
        yield fault_proxy
    finally:
        fault_proxy.close()


def _options(endpoint: str, **extra: Any) -> dict[str, Any]:
    return {
        "endpoint_url": endpoint,
        "aws_access_key_id": ACCESS_KEY,
        "aws_secret_access_key": SECRET_KEY,
        **extra,
    }


_bucket_counter = iter(range(10_000))


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    name = f"cxr-test-{next(_bucket_counter)}"
    cos_client(**_options(s3_endpoint)).create_bucket(Bucket=name)
    return name


def test_loose_objects_are_read_with_classes_from_key_paths(
    s3_endpoint: str, bucket: str, classes_folder: Path
) -> None:
    keys = upload_folder(classes_folder, f"{bucket}/datasets/cxr", **_options(s3_endpoint))
    assert "datasets/cxr/COVID/img_0.png" in keys
    source = COSSource(f"{bucket}/datasets/cxr", **_options(s3_endpoint))
    xrays = list(source)
    assert len(xrays) == 5
    assert source.classes == ("covid-19", "normal", "pneumonia")
    assert xrays[0].id == f"cos://{bucket}/datasets/cxr/COVID/img_0.png"


def test_zip_object_is_streamed_and_read_like_a_zip_source(
    s3_endpoint: str, bucket: str, qu_ex_folder: Path
) -> None:
    key = upload_folder_as_zip(
        qu_ex_folder, f"{bucket}/archives/qu-ex.zip", **_options(s3_endpoint)
    )
    assert key == "archives/qu-ex.zip"
    with COSSource(
        f"{bucket}/archives/qu-ex.zip", layout="covid-qu-ex", split="Val", **_options(s3_endpoint)
    ) as source:
        xrays = list(source)
    assert len(xrays) == 6
    covid = next(x for x in xrays if x.label == "covid-19")
    assert len(covid.boxes) == 2
    assert covid.id.startswith(f"cos://{bucket}/archives/qu-ex.zip!/Val/COVID-19/images/")


def test_open_source_reaches_cos(s3_endpoint: str, bucket: str, classes_folder: Path) -> None:
    upload_folder(classes_folder, f"{bucket}/cxr", **_options(s3_endpoint))
    source = covidcxr.open_source(f"cos://{bucket}/cxr", **_options(s3_endpoint))
    assert isinstance(source, COSSource)
    assert len(source) == 5


def test_environment_variables_are_the_fallback(
    s3_endpoint: str, bucket: str, classes_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload_folder(classes_folder, f"{bucket}/cxr", **_options(s3_endpoint))
    monkeypatch.setenv("COS_ENDPOINT", s3_endpoint)
    monkeypatch.setenv("COS_HMAC_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("COS_HMAC_SECRET_ACCESS_KEY", SECRET_KEY)
    assert len(COSSource(f"{bucket}/cxr")) == 5


def test_missing_credentials_are_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("COS_API_KEY_ID", "COS_HMAC_ACCESS_KEY_ID", "COS_HMAC_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ConfigurationError, match="no COS credentials"):
        COSSource("bucket/prefix", endpoint_url="http://127.0.0.1:9")


def test_missing_bucket_is_a_clear_source_error(s3_endpoint: str) -> None:
    with pytest.raises(SourceError, match="cos://no-such-bucket/x: the bucket does not exist"):
        COSSource("no-such-bucket/x", **_options(s3_endpoint))


def test_empty_prefix_is_a_source_error(s3_endpoint: str, bucket: str) -> None:
    with pytest.raises(SourceError, match="no objects under this prefix"):
        COSSource(f"{bucket}/nothing-here", **_options(s3_endpoint))


def test_throttling_is_retried_with_backoff(
    proxy: FaultProxy, bucket: str, s3_endpoint: str, classes_folder: Path
) -> None:
    upload_folder(classes_folder, f"{bucket}/cxr", **_options(s3_endpoint))
    proxy.fail_next = 2
    source = COSSource(f"{bucket}/cxr", **_options(proxy.url, max_attempts=4))
    assert proxy.injected == 2
    assert len(list(source)) == 5


def test_server_errors_are_retried_then_reported(proxy: FaultProxy, bucket: str) -> None:
    proxy.fail_next = 10
    proxy.fail_status, proxy.fail_code = 500, "InternalError"
    with pytest.raises(SourceError, match="InternalError"):
        COSSource(f"{bucket}/cxr", **_options(proxy.url, max_attempts=2))
    assert proxy.injected == 2


def test_denied_access_is_a_clear_source_error(proxy: FaultProxy, bucket: str) -> None:
    proxy.always = (403, "AccessDenied")
    with pytest.raises(SourceError, match="access denied"):
        COSSource(f"{bucket}/cxr", **_options(proxy.url))


def test_wrong_key_is_reported_as_rejected_credentials(proxy: FaultProxy, bucket: str) -> None:
    proxy.always = (403, "InvalidAccessKeyId")
    with pytest.raises(SourceError, match="credentials were rejected"):
        COSSource(f"{bucket}/cxr", **_options(proxy.url))


def test_credentials_never_appear_in_reprs_errors_or_logs(
    proxy: FaultProxy,
    s3_endpoint: str,
    bucket: str,
    classes_folder: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="covidcxr")
    upload_folder(classes_folder, f"{bucket}/cxr", **_options(s3_endpoint))
    source = COSSource(f"{bucket}/cxr", **_options(s3_endpoint))
    texts = [repr(source), str(source.__dict__)]
    proxy.always = (403, "SignatureDoesNotMatch")
    with pytest.raises(SourceError) as info:
        COSSource(f"{bucket}/cxr", **_options(proxy.url))
    texts += [str(info.value), repr(info.value), caplog.text]
    for text in texts:
        assert SECRET_KEY not in text
        assert ACCESS_KEY not in text


def test_upload_never_replaces_existing_objects_unless_asked(
    s3_endpoint: str, bucket: str, classes_folder: Path
) -> None:
    options = _options(s3_endpoint)
    upload_folder(classes_folder, f"{bucket}/cxr", **options)
    client = cos_client(**options)
    client.put_object(Bucket=bucket, Key="cxr/COVID/img_0.png", Body=b"the user's object")
    with pytest.raises(SourceError, match="already exists"):
        upload_folder(classes_folder, f"{bucket}/cxr", **options)
    body = client.get_object(Bucket=bucket, Key="cxr/COVID/img_0.png")["Body"].read()
    assert body == b"the user's object"
    upload_folder(classes_folder, f"{bucket}/cxr", overwrite=True, **options)
    body = client.get_object(Bucket=bucket, Key="cxr/COVID/img_0.png")["Body"].read()
    assert body == (classes_folder / "COVID" / "img_0.png").read_bytes()


def test_zip_upload_refuses_to_replace_and_round_trips(
    s3_endpoint: str, bucket: str, classes_folder: Path
) -> None:
    options = _options(s3_endpoint)
    upload_folder_as_zip(classes_folder, f"{bucket}/cxr.zip", **options)
    with pytest.raises(SourceError, match="already exists"):
        upload_folder_as_zip(classes_folder, f"{bucket}/cxr.zip", **options)
    data = cos_client(**options).get_object(Bucket=bucket, Key="cxr.zip")["Body"].read()
    names = sorted(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert names == sorted(
        p.relative_to(classes_folder).as_posix() for p in classes_folder.rglob("*") if p.is_file()
    )


def test_a_prefix_of_loose_scans_is_read_unlabelled(
    s3_endpoint: str, bucket: str, tmp_path: Path, make: Any
) -> None:
    scans = tmp_path / "new-scans"
    (scans / "ward-2").mkdir(parents=True)
    (scans / "a.png").write_bytes(make.encode(make.gradient(seed=1)))
    (scans / "ward-2" / "b.png").write_bytes(make.encode(make.gradient(seed=2)))
    upload_folder(scans, f"{bucket}/incoming", **_options(s3_endpoint))
    source = covidcxr.open_source(f"cos://{bucket}/incoming", **_options(s3_endpoint))
    assert isinstance(source, COSSource)
    assert source.layout == "unlabelled"
    assert [x.label for x in source] == [None, None]


def test_a_zipped_qu_ex_root_is_recognised_without_options(
    s3_endpoint: str, bucket: str, qu_ex_folder: Path
) -> None:
    upload_folder_as_zip(qu_ex_folder, f"{bucket}/qu-ex.zip", **_options(s3_endpoint))
    with COSSource(f"{bucket}/qu-ex.zip", split="Val", **_options(s3_endpoint)) as source:
        assert source.layout == "covid-qu-ex"
        assert len(source) == 6


# --- secrets in every encoding (issue 12, item 21) --------------------------------------

PLUS_SECRET = "s3cr3t+Do/Not=Leak+7f9c=="
# The same, with lower-case hex digits in its percent-escapes.
PLUS_SECRET_LOWER_HEX = quote(PLUS_SECRET, safe="").replace("%2B", "%2b").replace("%2F", "%2f")


@pytest.mark.parametrize("option", ["endpoint_url", "ibm_auth_endpoint"])
def test_endpoints_carrying_credentials_are_refused_without_echoing_them(option: str) -> None:
    url = f"http://user:{quote(PLUS_SECRET, safe='')}@127.0.0.1:9"
    options = _options("http://127.0.0.1:9", **{option: url})
    with pytest.raises(ConfigurationError, match="must not carry credentials") as raised:
        cos_client(**options)
    text = str(raised.value)
    assert quote(PLUS_SECRET, safe="") not in text
    assert PLUS_SECRET not in text


def test_an_error_echoing_the_secret_url_encoded_does_not_leak_it(
    proxy: FaultProxy, bucket: str
) -> None:
    proxy.always = (500, f"Echo{quote_plus(PLUS_SECRET)}{PLUS_SECRET_LOWER_HEX}")
    with pytest.raises(SourceError) as raised:
        COSSource(
            f"{bucket}/cxr",
            **_options(proxy.url, aws_secret_access_key=PLUS_SECRET, max_attempts=1),
        )
    text = str(raised.value)
    assert "Echo***" in text
    for encoded in (quote_plus(PLUS_SECRET), PLUS_SECRET_LOWER_HEX):
        assert encoded not in text


def _everything_shown(error: BaseException) -> str:
    """The traceback of ``error``, and the text and repr of every error chained to it."""
    texts = ["".join(traceback.format_exception(error))]
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or any(current is known for known in seen):
            continue
        seen.append(current)
        texts += [str(current), repr(current)]
        pending += [current.__cause__, current.__context__]
    return "\n".join(texts)


def _upload_behind(proxy: FaultProxy, bucket: str, classes_folder: Path) -> None:
    options = _options(proxy.url, aws_secret_access_key=PLUS_SECRET, max_attempts=1)
    upload_folder(classes_folder, f"{bucket}/new", overwrite=True, **options)


def _zip_upload_behind(proxy: FaultProxy, bucket: str, classes_folder: Path) -> None:
    options = _options(proxy.url, aws_secret_access_key=PLUS_SECRET, max_attempts=1)
    upload_folder_as_zip(classes_folder, f"{bucket}/new.zip", overwrite=True, **options)


def _listing_behind(proxy: FaultProxy, bucket: str, classes_folder: Path) -> None:
    options = _options(proxy.url, aws_secret_access_key=PLUS_SECRET, max_attempts=1)
    COSSource(f"{bucket}/cxr", **options)


def _object_behind(proxy: FaultProxy, bucket: str, classes_folder: Path) -> None:
    options = _options(proxy.url, aws_secret_access_key=PLUS_SECRET, max_attempts=1)
    source = COSSource(f"{bucket}/cxr", **options)
    proxy.fault_prefix = f"/{bucket}/cxr/"  # the objects, not the listing
    list(source)


@pytest.mark.parametrize(
    "act",
    [_listing_behind, _object_behind, _upload_behind, _zip_upload_behind],
    ids=["listing", "object", "upload", "zip upload"],
)
def test_an_sdk_error_echoing_the_secret_is_not_chained_to_the_source_error(
    act: Callable[[FaultProxy, str, Path], None],
    proxy: FaultProxy,
    s3_endpoint: str,
    bucket: str,
    classes_folder: Path,
) -> None:
    # The message is redacted; the SDK's own error, with the secret as the service echoed
    # it, must not come along as __cause__ or __context__ (a traceback prints them).
    upload_folder(classes_folder, f"{bucket}/cxr", **_options(s3_endpoint))
    proxy.always = (500, f"Echo{quote_plus(PLUS_SECRET)}")
    with pytest.raises(SourceError, match=r"Echo\*\*\*") as raised:
        act(proxy, bucket, classes_folder)
    shown = _everything_shown(raised.value)
    for encoded in (PLUS_SECRET, quote_plus(PLUS_SECRET), quote(PLUS_SECRET, safe="")):
        assert encoded not in shown


# --- network failures are retried, never taken for bad images (issue 12, item 9) --------


def _source_behind(
    proxy: FaultProxy, s3_endpoint: str, bucket: str, classes_folder: Path, **extra: Any
) -> COSSource:
    """Five loose images, read through the proxy, which then faults object requests only."""
    upload_folder(classes_folder, f"{bucket}/cxr", **_options(s3_endpoint))
    options = {"on_error": "skip", "backoff": 0.01, **extra}
    source = COSSource(f"{bucket}/cxr", **_options(proxy.url, **options))
    proxy.fault_prefix = f"/{bucket}/"
    return source


def _all_ids(bucket: str, classes_folder: Path) -> list[str]:
    return sorted(
        f"cos://{bucket}/cxr/{path.relative_to(classes_folder).as_posix()}"
        for path in classes_folder.rglob("*.png")
    )


def _cut_bodies_short(proxy: FaultProxy) -> None:
    proxy.drop_next = 2


def _answer_server_errors(proxy: FaultProxy) -> None:
    proxy.fail_next = 2
    proxy.fail_status, proxy.fail_code = 500, "InternalError"


@pytest.mark.parametrize(
    "inject",
    [_cut_bodies_short, _answer_server_errors],
    ids=["bodies cut short are fetched again", "server errors are retried"],
)
def test_two_faults_while_iterating_cost_no_image(
    inject: Callable[[FaultProxy], None],
    proxy: FaultProxy,
    s3_endpoint: str,
    bucket: str,
    classes_folder: Path,
) -> None:
    source = _source_behind(proxy, s3_endpoint, bucket, classes_folder, max_attempts=3)
    inject(proxy)  # the first object fails twice, then arrives whole
    ids = [xray.id for xray in source]
    assert proxy.injected == 2
    assert sorted(ids) == _all_ids(bucket, classes_folder)
    assert source.skipped == ()


def test_a_server_restart_while_iterating_loses_no_image(
    proxy: FaultProxy, s3_endpoint: str, bucket: str, classes_folder: Path
) -> None:
    source = _source_behind(proxy, s3_endpoint, bucket, classes_folder, max_attempts=6)
    images = iter(source)
    ids = [next(images).id]
    proxy.stop()
    restart = threading.Timer(0.5, proxy.start)
    restart.start()
    try:
        ids += [xray.id for xray in images]
    finally:
        restart.join()
    assert sorted(ids) == _all_ids(bucket, classes_folder)
    assert source.skipped == ()


def test_an_outage_outlasting_the_retries_raises_source_error_and_skips_nothing(
    proxy: FaultProxy, s3_endpoint: str, bucket: str, classes_folder: Path
) -> None:
    source = _source_behind(proxy, s3_endpoint, bucket, classes_folder, max_attempts=2)
    first = _all_ids(bucket, classes_folder)[0]
    proxy.always = (500, "InternalError")
    with pytest.raises(SourceError, match=f"{first}: .*InternalError.* after 2 attempts"):
        list(source)
    assert source.skipped == ()
    proxy.always = None  # the service is back: every image is still there
    assert sorted(xray.id for xray in source) == _all_ids(bucket, classes_folder)


def test_bodies_cut_short_on_every_attempt_raise_source_error_not_invalid_image(
    proxy: FaultProxy, s3_endpoint: str, bucket: str, classes_folder: Path
) -> None:
    source = _source_behind(proxy, s3_endpoint, bucket, classes_folder, max_attempts=3)
    first = _all_ids(bucket, classes_folder)[0]
    proxy.drop_next = 100
    with pytest.raises(SourceError, match=f"{first}: .*after 3 attempts") as raised:
        list(source)
    assert not isinstance(raised.value, InvalidImageError)
    assert proxy.injected == 3
    assert source.skipped == ()


def test_a_zip_object_cut_short_is_downloaded_again(
    proxy: FaultProxy, s3_endpoint: str, bucket: str, qu_ex_folder: Path
) -> None:
    upload_folder_as_zip(qu_ex_folder, f"{bucket}/qu-ex.zip", **_options(s3_endpoint))
    proxy.fault_prefix = f"/{bucket}/"
    proxy.drop_next = 1
    options = _options(proxy.url, backoff=0.01)
    with COSSource(f"{bucket}/qu-ex.zip", split="Val", **options) as source:
        assert proxy.injected == 1
        assert len(list(source)) == 6


def test_access_denied_while_iterating_is_a_source_error_not_a_skip(
    proxy: FaultProxy, s3_endpoint: str, bucket: str, classes_folder: Path
) -> None:
    source = _source_behind(proxy, s3_endpoint, bucket, classes_folder)
    proxy.always = (403, "AccessDenied")
    with pytest.raises(SourceError, match="access denied"):
        list(source)
    assert source.skipped == ()


def test_a_listing_cut_short_is_listed_again(
    proxy: FaultProxy, s3_endpoint: str, bucket: str, classes_folder: Path
) -> None:
    upload_folder(classes_folder, f"{bucket}/cxr", **_options(s3_endpoint))
    proxy.fault_prefix = f"/{bucket}?"  # the listing, not the objects
    proxy.drop_next = 1
    source = COSSource(f"{bucket}/cxr", **_options(proxy.url, backoff=0.01))
    assert proxy.injected == 1
    assert sorted(xray.id for xray in source) == _all_ids(bucket, classes_folder)


def test_an_object_gone_since_listing_is_that_item_s_error(
    s3_endpoint: str, bucket: str, classes_folder: Path
) -> None:
    upload_folder(classes_folder, f"{bucket}/cxr", **_options(s3_endpoint))
    source = COSSource(f"{bucket}/cxr", on_error="skip", **_options(s3_endpoint))
    gone = _all_ids(bucket, classes_folder)[0]
    cos_client(**_options(s3_endpoint)).delete_object(
        Bucket=bucket, Key=gone.removeprefix(f"cos://{bucket}/")
    )
    with pytest.warns(covidcxr.sources.SkippedItemsWarning):
        assert len(list(source)) == 4
    assert [skip.path for skip in source.skipped] == [gone]


def test_a_loose_object_over_the_size_limit_is_skipped_unread(
    s3_endpoint: str, bucket: str, classes_folder: Path
) -> None:
    # A loose object is read whole into memory to be decoded: one of several gigabytes
    # named .png would exhaust it before the decoder's pixel limit could refuse it.
    upload_folder(classes_folder, f"{bucket}/cxr", **_options(s3_endpoint))
    big = "cxr/COVID/huge.png"
    cos_client(**_options(s3_endpoint)).put_object(Bucket=bucket, Key=big, Body=b"\0" * 300_000)
    source = COSSource(
        f"{bucket}/cxr",
        on_error="skip",
        limits=ZipLimits(max_member_size=200_000),
        **_options(s3_endpoint),
    )
    with pytest.warns(covidcxr.sources.SkippedItemsWarning):
        assert len(list(source)) == 5
    (skipped,) = source.skipped
    assert skipped.path == f"cos://{bucket}/{big}"
    assert "larger than 200,000 bytes" in skipped.reason


@pytest.mark.parametrize("backoff", [-1.0, float("nan"), float("inf")])
def test_a_backoff_that_is_not_a_number_of_seconds_is_refused(backoff: float) -> None:
    with pytest.raises(ConfigurationError, match="backoff"):
        COSSource("bucket/prefix", **_options("http://127.0.0.1:9", backoff=backoff))


# --- the IAM token endpoint (issue 12, item 15) ------------------------------------------

API_KEY = "iam+ApiKey/Do=Not-Leak-0c1d"


class LoopbackIAM:
    """A loopback IAM token server: ``fail_status`` for the first ``fail_next`` requests.

    With ``echo_form``, a failure's ``errorMessage`` repeats the request's form, API key
    included (URL-encoded), as a careless token server might.
    """

    def __init__(self) -> None:
        self.fail_next = 0
        self.fail_status = 503
        self.echo_form = False
        self.requests = 0
        iam = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                iam.requests += 1
                form = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                if iam.fail_next > 0:
                    iam.fail_next -= 1
                    message = f"bad form: {form}" if iam.echo_form else "try later"
                    status = iam.fail_status
                    payload = json.dumps({"errorMessage": message}).encode()
                else:
                    status, payload = (
                        200,
                        json.dumps(
                            {
                                "access_token": "loopback-token",
                                "refresh_token": "loopback-refresh",
                                "token_type": "Bearer",
                                "expires_in": 3600,
                                "expiration": int(time.time()) + 3600,
                            }
                        ).encode(),
                    )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/identity/token"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def iam() -> Iterator[LoopbackIAM]:
    server = LoopbackIAM()
    try:
        yield server
    finally:
        server.close()


def _iam_options(endpoint: str, auth_endpoint: str, **extra: Any) -> dict[str, Any]:
    return {
        "endpoint_url": endpoint,
        "ibm_api_key_id": API_KEY,
        "ibm_service_instance_id": "crn:v1:loopback",
        "ibm_auth_endpoint": auth_endpoint,
        **extra,
    }


def test_an_unreachable_iam_endpoint_is_a_source_error_naming_its_host(
    s3_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    closed_port = free_port()
    auth_endpoint = f"http://127.0.0.1:{closed_port}/identity/token"
    options = _iam_options(s3_endpoint, auth_endpoint, max_attempts=3, backoff=0.01)
    with pytest.raises(SourceError, match=f"IAM token endpoint 127.0.0.1:{closed_port}") as raised:
        COSSource("some-bucket/cxr", **options)
    assert "after 3 attempts" in str(raised.value)
    for text in (str(raised.value), repr(raised.value), caplog.text):
        for encoded in (API_KEY, quote(API_KEY, safe=""), quote_plus(API_KEY)):
            assert encoded not in text


def test_a_busy_iam_endpoint_is_asked_again(
    s3_endpoint: str, bucket: str, classes_folder: Path, iam: LoopbackIAM
) -> None:
    upload_folder(classes_folder, f"{bucket}/cxr", **_options(s3_endpoint))
    iam.fail_next = 2
    options = _iam_options(s3_endpoint, iam.url, max_attempts=3, backoff=0.01)
    source = COSSource(f"{bucket}/cxr", **options)
    assert iam.requests == 3
    assert len(list(source)) == 5


def test_a_busy_iam_endpoint_that_stays_busy_is_a_source_error(
    s3_endpoint: str, iam: LoopbackIAM
) -> None:
    iam.fail_next = 100
    options = _iam_options(s3_endpoint, iam.url, max_attempts=2, backoff=0.01)
    with pytest.raises(SourceError, match=r"IAM token endpoint .*HttpCode\(503\).*after 2"):
        COSSource("some-bucket/cxr", **options)
    assert iam.requests == 2


@pytest.mark.parametrize("status", [400, 503], ids=["key refused", "endpoint busy"])
def test_an_iam_answer_echoing_the_api_key_leaks_it_nowhere(
    s3_endpoint: str, iam: LoopbackIAM, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    # The SDK logs the token request's failure with its traceback (ibm_botocore.credentials,
    # WARNING: in the log of any application that configures logging) before covidcxr sees
    # it; the error must be redacted before it reaches the SDK, and chain nothing.
    caplog.set_level(logging.DEBUG)
    iam.fail_next, iam.fail_status, iam.echo_form = 100, status, True
    options = _iam_options(s3_endpoint, iam.url, max_attempts=2, backoff=0.01)
    with pytest.raises(SourceError, match=rf"HttpCode\({status}\).*apikey=\*\*\*") as raised:
        COSSource("some-bucket/cxr", **options)
    assert "Problem fetching initial IAM token" in caplog.text  # the SDK's own log line
    shown = _everything_shown(raised.value) + caplog.text
    for encoded in (API_KEY, quote(API_KEY, safe=""), quote_plus(API_KEY)):
        assert encoded not in shown


def test_an_error_echoing_the_iam_token_does_not_leak_it(
    proxy: FaultProxy, iam: LoopbackIAM
) -> None:
    # The API key is exchanged for a token, sent as "Authorization: Bearer <token>".
    proxy.always, proxy.echo_authorization = (500, "InternalError"), True
    with pytest.raises(SourceError, match=r"injected InternalError for Bearer \*\*\*") as raised:
        COSSource("some-bucket/cxr", **_iam_options(proxy.url, iam.url, max_attempts=1))
    assert iam.requests == 1
    assert "loopback-token" not in _everything_shown(raised.value)


# --- the spooled archive is released (issue 12, item 20) ---------------------------------


@pytest.fixture
def spilling_zip(
    s3_endpoint: str, bucket: str, qu_ex_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A zip object large enough to spill its spool to a real temporary file."""
    monkeypatch.setattr(cos_module, "_SPOOL_IN_MEMORY", 1024)
    upload_folder_as_zip(qu_ex_folder, f"{bucket}/qu-ex.zip", **_options(s3_endpoint))
    return f"{bucket}/qu-ex.zip"


def _resource_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


def test_an_abandoned_zip_source_leaves_no_file_open(s3_endpoint: str, spilling_zip: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        source = COSSource(spilling_zip, split="Val", **_options(s3_endpoint))
        assert len(list(source)) == 6
        del source
        gc.collect()
    assert _resource_warnings(caught) == []


def test_a_zip_source_that_fails_to_open_leaves_no_file_open(
    s3_endpoint: str, spilling_zip: str
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(ConfigurationError):
            COSSource(spilling_zip, split="NoSuchSplit", **_options(s3_endpoint))
        gc.collect()
    assert _resource_warnings(caught) == []


def _is_closed(file: IO[bytes]) -> bool:
    return file.closed


def test_closing_a_zip_source_closes_its_spool_at_once(s3_endpoint: str, spilling_zip: str) -> None:
    with COSSource(spilling_zip, split="Val", **_options(s3_endpoint)) as source:
        spool = source._spool
        assert spool is not None
        assert not _is_closed(spool)
    assert _is_closed(spool)
    source.close()  # twice is harmless
