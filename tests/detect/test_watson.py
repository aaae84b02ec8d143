"""WatsonDetector: the real ibm-watson SDK against a loopback Visual Recognition v4 server."""

from __future__ import annotations

import base64
import json
import logging
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

import cv2
import numpy as np
import pytest

import covidcxr
from covidcxr.detect import LoopbackWatsonServer, ServiceRetiredWarning, WatsonDetector
from covidcxr.errors import ConfigurationError, DetectorServiceError
from covidcxr.records import Box, XRay

pytestmark = pytest.mark.filterwarnings("ignore::covidcxr.detect.ServiceRetiredWarning")

APIKEY = "s3cr3t-apikey-for-tests"


@pytest.fixture
def server() -> Iterator[LoopbackWatsonServer]:
    with LoopbackWatsonServer(apikey=APIKEY, training_polls=2) as running:
        yield running


def make_detector(server: LoopbackWatsonServer, **options: Any) -> WatsonDetector:
    settings: dict[str, Any] = {
        "url": server.url,
        "iam_url": server.url,
        "apikey": APIKEY,
        "backoff": 0.01,
        "timeout": 5.0,
    }
    settings.update(options)
    return WatsonDetector(**settings)


def xray(index: int = 0, shape: tuple[int, int] = (48, 64), boxes: tuple[Box, ...] = ()) -> XRay:
    pixels = np.random.default_rng(index).integers(0, 256, shape, dtype=np.uint8)
    return XRay(pixels, id=f"img-{index}", boxes=boxes)


def lesion(score: float, left: int, top: int, width: int, height: int) -> dict[str, Any]:
    return {
        "object": "opacity",
        "score": score,
        "location": {"left": left, "top": top, "width": width, "height": height},
    }


# --- detection --------------------------------------------------------------------------


def test_analyze_request_carries_collections_features_threshold_and_png_parts(
    server: LoopbackWatsonServer,
) -> None:
    first, second = server.add_collection("a"), server.add_collection("b")
    detector = make_detector(server, collection_ids=[first, second], threshold=0.35)
    detector.detect_batch([xray(0), xray(1)])
    (request,) = server.requests_to("/v4/analyze")
    assert request.values("collection_ids") == [first, second]
    assert request.values("features") == ["objects"]
    assert request.values("threshold") == ["0.35"]
    assert request.query["version"] == ["2019-02-11"]
    files = request.files("images_file")
    assert [part.content_type for part in files] == ["image/png", "image/png"]
    decoded = cv2.imdecode(np.frombuffer(files[1].data, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded, xray(1).pixels)


def test_apikey_is_exchanged_for_a_bearer_token_at_the_iam_url(
    server: LoopbackWatsonServer,
) -> None:
    make_detector(server, collection_ids=server.add_collection()).detect(xray())
    (token_request,) = server.requests_to("/identity/token")
    assert f"apikey={APIKEY}" in token_request.body.decode()
    (analyze,) = server.requests_to("/v4/analyze")
    assert analyze.headers["authorization"].startswith("Bearer ey")


def test_objects_are_parsed_into_detections_sorted_by_score(
    server: LoopbackWatsonServer,
) -> None:
    server.objects_for = lambda filename, png, cid: [
        lesion(0.6, 1, 2, 10, 12),
        lesion(0.9, 20, 5, 8, 8),
    ]
    detections = make_detector(server, collection_ids=server.add_collection()).detect(xray())
    assert [(d.label, d.score, d.box) for d in detections] == [
        ("opacity", 0.9, Box(20, 5, 8, 8)),
        ("opacity", 0.6, Box(1, 2, 10, 12)),
    ]


def test_scores_below_threshold_are_dropped_even_if_the_service_returns_them(
    server: LoopbackWatsonServer,
) -> None:
    # A lenient endpoint may ignore the threshold it is sent.
    server.objects_for = lambda filename, png, cid: [lesion(0.55, 1, 1, 5, 5)]
    server.honour_threshold = False
    detector = make_detector(server, collection_ids=server.add_collection(), threshold=0.6)
    assert detector.detect(xray()) == []


def test_small_images_are_enlarged_for_upload_and_boxes_mapped_back(
    server: LoopbackWatsonServer,
) -> None:
    # 16x24 is below the service's 30 px minimum: it is uploaded at 32x48 (scale 2).
    server.objects_for = lambda filename, png, cid: [lesion(0.8, 4, 6, 10, 20)]
    detections = make_detector(server, collection_ids=server.add_collection()).detect(
        xray(shape=(16, 24))
    )
    (upload,) = server.requests_to("/v4/analyze")[0].files("images_file")
    decoded = cv2.imdecode(np.frombuffer(upload.data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None
    assert decoded.shape == (32, 48)
    assert [d.box for d in detections] == [Box(2, 3, 5, 10)]


def test_boxes_reaching_past_the_image_are_clipped(server: LoopbackWatsonServer) -> None:
    server.objects_for = lambda filename, png, cid: [lesion(0.8, 50, 40, 30, 30)]
    detections = make_detector(server, collection_ids=server.add_collection()).detect(xray())
    assert [d.box for d in detections] == [Box(50, 40, 14, 8)]


def test_batches_hold_at_most_batch_size_images(server: LoopbackWatsonServer) -> None:
    detector = make_detector(server, collection_ids=server.add_collection(), batch_size=2)
    results = detector.detect_batch([xray(i) for i in range(5)])
    assert len(results) == 5
    sizes = [len(r.files("images_file")) for r in server.requests_to("/v4/analyze")]
    assert sizes == [2, 2, 1]


def test_results_are_matched_to_images_by_filename(server: LoopbackWatsonServer) -> None:
    server.objects_for = lambda filename, png, cid: (
        [lesion(0.7, 1, 1, 3, 3)] if filename == "image-01.png" else []
    )
    results = make_detector(server, collection_ids=server.add_collection()).detect_batch(
        [xray(0), xray(1), xray(2)]
    )
    assert [len(r) for r in results] == [0, 1, 0]


def test_per_image_error_raises_naming_the_image(server: LoopbackWatsonServer) -> None:
    server.image_errors["image-01.png"] = ("invalid_image", "could not decode the image")
    detector = make_detector(server, collection_ids=server.add_collection())
    with pytest.raises(DetectorServiceError, match=r"'img-1'.*invalid_image"):
        detector.detect_batch([xray(0), xray(1)])


def test_per_image_error_is_skipped_and_recorded_when_asked(
    server: LoopbackWatsonServer,
) -> None:
    server.image_errors["image-00.png"] = ("invalid_image", "could not decode the image")
    server.objects_for = lambda filename, png, cid: [lesion(0.7, 1, 1, 3, 3)]
    detector = make_detector(server, collection_ids=server.add_collection(), on_error="skip")
    with pytest.warns(RuntimeWarning, match="img-0"):
        results = detector.detect_batch([xray(0), xray(1)])
    assert [len(r) for r in results] == [0, 1]
    assert [(f.xray_id, f.code) for f in detector.failures_] == [("img-0", "invalid_image")]


# --- retries and errors -----------------------------------------------------------------


def test_429_is_retried_honouring_retry_after(server: LoopbackWatsonServer) -> None:
    server.fail_next(429, times=2, retry_after="0.3", path_prefix="/v4/analyze")
    detector = make_detector(server, collection_ids=server.add_collection(), max_wait=5)
    started = time.monotonic()
    assert detector.detect(xray()) == []
    assert time.monotonic() - started >= 0.6
    assert len(server.requests_to("/v4/analyze")) == 3


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried(server: LoopbackWatsonServer, status: int) -> None:
    server.fail_next(status, path_prefix="/v4/analyze")
    make_detector(server, collection_ids=server.add_collection()).detect(xray())
    assert len(server.requests_to("/v4/analyze")) == 2


def test_retries_give_up_after_max_retries(
    server: LoopbackWatsonServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.fail_next(503, times=10, retry_after="0", path_prefix="/v4/analyze")
    detector = make_detector(server, collection_ids=server.add_collection(), max_retries=2)
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(DetectorServiceError, match=r"HTTP 503.*after 3 attempts") as raised,
    ):
        detector.detect(xray())
    assert raised.value.status_code == 503
    assert len(server.requests_to("/v4/analyze")) == 3
    assert "retrying" in caplog.text
    assert APIKEY not in caplog.text


@pytest.mark.parametrize(
    ("status", "hint"),
    [(401, "credentials were rejected"), (403, "may not use"), (404, "check the url")],
)
def test_client_errors_fail_at_once_with_a_hint(
    server: LoopbackWatsonServer, status: int, hint: str
) -> None:
    server.fail_next(status, path_prefix="/v4/analyze")
    detector = make_detector(server, collection_ids=server.add_collection())
    with pytest.raises(DetectorServiceError, match=hint) as raised:
        detector.detect(xray())
    assert raised.value.status_code == status
    assert len(server.requests_to("/v4/analyze")) == 1


def test_unknown_collection_is_a_404_naming_the_collection(
    server: LoopbackWatsonServer,
) -> None:
    detector = make_detector(server, collection_ids="no-such-collection")
    with pytest.raises(DetectorServiceError, match="no-such-collection") as raised:
        detector.detect(xray())
    assert raised.value.status_code == 404


def test_wrong_apikey_fails_without_revealing_it(server: LoopbackWatsonServer) -> None:
    wrong = "wrong-apikey-0123456789"
    detector = make_detector(server, collection_ids=server.add_collection(), apikey=wrong)
    with pytest.raises(DetectorServiceError, match="IAM token server refused") as raised:
        detector.detect(xray())
    assert wrong not in str(raised.value)
    assert wrong not in repr(raised.value)


def test_apikey_never_appears_in_repr(server: LoopbackWatsonServer) -> None:
    detector = make_detector(server, collection_ids="c")
    assert APIKEY not in repr(detector)
    assert APIKEY not in str(detector)
    assert "apikey='***'" in repr(detector)


def test_unreachable_endpoint_is_retried_then_reported() -> None:
    from ibm_cloud_sdk_core.authenticators import NoAuthAuthenticator

    with LoopbackWatsonServer() as closed:
        url = closed.url
    detector = WatsonDetector(
        url=url,
        collection_ids="c",
        authenticator=NoAuthAuthenticator(),
        max_retries=1,
        backoff=0.01,
    )
    with pytest.raises(DetectorServiceError, match=r"no answer.*ConnectionError"):
        detector.detect(xray())


def test_slow_answers_time_out_and_are_retried(server: LoopbackWatsonServer) -> None:
    server.response_delay = 0.5
    detector = make_detector(
        server, collection_ids=server.add_collection(), timeout=0.1, max_retries=1
    )
    with pytest.raises(DetectorServiceError, match=r"no answer.*Timeout.*after 2 attempts"):
        detector.detect(xray())
    assert len(server.requests_to("/v4/analyze")) == 2


# --- SDK notice, configuration ------------------------------------------------------------


def test_sdk_retirement_notice_becomes_a_warning_not_stdout(
    server: LoopbackWatsonServer, capsys: pytest.CaptureFixture[str]
) -> None:
    detector = make_detector(server, collection_ids=server.add_collection())
    images = [xray(0), xray(1)]
    with pytest.warns(ServiceRetiredWarning, match="1 December 2021") as record:
        [detector.detect(image) for image in images]
    assert len(record) == 1
    assert capsys.readouterr().out == ""


def test_environment_variables_configure_the_detector(
    server: LoopbackWatsonServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    collection = server.add_collection()
    monkeypatch.setenv("COVIDCXR_WATSON_URL", server.url)
    monkeypatch.setenv("COVIDCXR_WATSON_IAM_URL", server.url)
    monkeypatch.setenv("COVIDCXR_WATSON_APIKEY", APIKEY)
    monkeypatch.setenv("COVIDCXR_WATSON_COLLECTION_IDS", f" {collection} ,")
    detector = WatsonDetector()
    assert detector.collection_ids == (collection,)
    assert detector.detect(xray()) == []


def test_missing_url_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("COVIDCXR_WATSON_URL", "VISUAL_RECOGNITION_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="COVIDCXR_WATSON_URL"):
        WatsonDetector(collection_ids="c", apikey="k").detect(xray())


def test_missing_collection_ids_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COVIDCXR_WATSON_COLLECTION_IDS", raising=False)
    with pytest.raises(ConfigurationError, match="collection_ids"):
        WatsonDetector(url="http://127.0.0.1:9", apikey="k").detect(xray())


@pytest.mark.parametrize(
    "options",
    [
        {"threshold": 1.5},
        {"batch_size": 21},
        {"batch_size": 0},
        {"on_error": "ignore"},
        {"backoff": -1.0},
        {"backoff": float("inf")},
        {"max_wait": -1.0},
        {"max_wait": float("nan")},
        {"timeout": float("inf")},
    ],
)
def test_invalid_options_are_rejected(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        WatsonDetector(url="http://127.0.0.1:9", **options)


def test_an_authenticator_can_replace_the_apikey(server: LoopbackWatsonServer) -> None:
    from ibm_cloud_sdk_core.authenticators import BearerTokenAuthenticator

    server.requests.clear()
    token_detector = make_detector(server, collection_ids=server.add_collection())
    token_detector.detect(xray())  # obtains the loopback token through IAM
    token = server.requests_to("/v4/analyze")[0].headers["authorization"].split()[1]
    detector = WatsonDetector(
        url=server.url,
        collection_ids=server.add_collection(),
        authenticator=BearerTokenAuthenticator(token),
    )
    assert detector.detect(xray()) == []
    assert "BearerTokenAuthenticator" in repr(detector)


def test_registered_as_the_watson_detector(server: LoopbackWatsonServer) -> None:
    detector = covidcxr.create_detector(
        "watson", url=server.url, iam_url=server.url, apikey=APIKEY, collection_ids="c"
    )
    assert isinstance(detector, WatsonDetector)


# --- training -----------------------------------------------------------------------------


def test_train_collection_uploads_boxes_trains_and_waits(server: LoopbackWatsonServer) -> None:
    images = [
        xray(0, boxes=(Box(2, 3, 10, 12),)),
        xray(1, boxes=(Box(5.5, 6.2, 4, 4), Box(30, 20, 8, 9))),
        xray(2),
    ]
    detector = make_detector(server)
    collection_id = detector.train_collection(images, name="cxr", poll_interval=0.01)

    (created,) = server.requests_to("/v4/collections")
    assert created.json() == {"name": "cxr"}
    uploads = server.requests_to(f"/v4/collections/{collection_id}/images")
    assert [len(u.files("images_file")) for u in uploads] == [1, 1, 1]
    second = json.loads(uploads[1].values("training_data")[0])
    assert second == {
        "objects": [
            {"object": "opacity", "location": {"left": 5, "top": 6, "width": 5, "height": 5}},
            {"object": "opacity", "location": {"left": 30, "top": 20, "width": 8, "height": 9}},
        ]
    }
    assert uploads[2].values("training_data") == []
    assert len(server.requests_to(f"/v4/collections/{collection_id}/train")) == 1
    polls = server.requests_to(f"/v4/collections/{collection_id}", method="GET")
    assert len(polls) == 3  # in progress twice, then ready

    # The loopback "model" answers with the training boxes of an identical image.
    trained = make_detector(server, collection_ids=collection_id)
    assert [d.box for d in trained.detect(images[0])] == [Box(2, 3, 10, 12)]


def test_failed_training_is_reported(server: LoopbackWatsonServer) -> None:
    server.fail_training = True
    with pytest.raises(DetectorServiceError, match="not enough training data"):
        make_detector(server).train_collection([xray(0)], name="cxr", poll_interval=0.01)


def test_training_that_does_not_finish_in_time_is_reported(server: LoopbackWatsonServer) -> None:
    server.training_polls = 1000
    detector = make_detector(server)
    collection_id = detector.create_collection("slow")
    detector.train(collection_id)
    with pytest.raises(DetectorServiceError, match="did not finish"):
        detector.wait_for_training(collection_id, poll_interval=0.01, timeout=0.05)


def test_invalid_object_name_is_rejected(server: LoopbackWatsonServer) -> None:
    with pytest.raises(ConfigurationError, match="object_name"):
        make_detector(server).add_training_images("c", [xray()], object_name="sys-opacity")


# --- answers of an unexpected shape (issue 12, item 14) ---------------------------------


def _reshape_first_image(key: str, value: Any) -> Any:
    def rewrite(document: dict[str, Any]) -> dict[str, Any]:
        document["images"][0][key] = value
        return document

    return rewrite


def _reshape_collections(value: Any) -> Any:
    def rewrite(document: dict[str, Any]) -> dict[str, Any]:
        document["images"][0]["objects"]["collections"] = value
        return document

    return rewrite


@pytest.mark.parametrize(
    ("rewrite", "named"),
    [
        (_reshape_first_image("objects", [{"collections": []}]), "'objects'"),
        (_reshape_collections({"collection_id": "c", "objects": []}), "'objects.collections'"),
        (_reshape_first_image("errors", "invalid_image"), "'errors'"),
        (_reshape_first_image("errors", ["invalid_image"]), r"errors\[0\]"),
        (_reshape_collections(["not-a-collection"]), r"objects.collections\[0\]"),
        (_reshape_collections([{"objects": {"score": 1}}]), r"collections\[0\].objects"),
        (_reshape_collections([{"objects": ["box"]}]), r"collections\[0\].objects\[0\]"),
        (
            _reshape_collections([{"objects": [{"score": 0.9, "object": "x", "location": 3}]}]),
            r"collections\[0\].objects\[0\]",
        ),
        (lambda document: ["not", "an", "object"], "the analyze answer"),
        (lambda document: {"images": {"image-00.png": {}}}, "'images'"),
        (lambda document: {"images": [{"source": "image-00.png"}]}, r"images\[0\].source"),
    ],
)
def test_answers_of_an_unexpected_shape_raise_naming_what_is_malformed(
    server: LoopbackWatsonServer, rewrite: Any, named: str
) -> None:
    server.objects_for = lambda filename, png, cid: [lesion(0.7, 1, 1, 3, 3)]
    server.rewrite_analysis = rewrite
    detector = make_detector(server, collection_ids=server.add_collection(), on_error="skip")
    with pytest.raises(DetectorServiceError, match=f"malformed.*{named}"):
        detector.detect(xray())


# --- secrets in every encoding (issue 12, item 21) --------------------------------------

PLUS_APIKEY = "k3y+with/slash=and+plus=="


def _encodings(secret: str) -> list[str]:
    return [
        secret,
        quote(secret, safe=""),
        quote(secret, safe="").lower(),
        quote_plus(secret),
        base64.b64encode(secret.encode()).decode(),
    ]


@pytest.mark.parametrize(
    "echo",
    [
        lambda key: "bad form: " + urlencode({"grant_type": "apikey", "apikey": key}),
        lambda key: f"bad form: apikey={quote(key, safe='').lower()}",
        lambda key: "bad header: Basic " + base64.b64encode(f"apikey:{key}".encode()).decode(),
        lambda key: "bad key: " + base64.b64encode(key.encode()).decode(),
    ],
)
def test_an_iam_error_echoing_the_apikey_encoded_does_not_leak_it(echo: Any) -> None:
    with LoopbackWatsonServer(apikey=PLUS_APIKEY) as server:
        server.fail_next(400, path_prefix="/identity/token", message=echo(PLUS_APIKEY))
        detector = make_detector(server, collection_ids=server.add_collection(), apikey=PLUS_APIKEY)
        with pytest.raises(DetectorServiceError, match="IAM token server refused") as raised:
            detector.detect(xray())
    text = str(raised.value) + repr(raised.value)
    assert "***" in text
    for encoded in _encodings(PLUS_APIKEY):
        assert encoded not in text
    assert "k3y" not in text


BEARER_TOKEN = "bearer+Token/Do=Not-Leak-5e6f"
PASSWORD = "pass+Word/Do=Not-Leak-9a8b"


def _credentials(kind: str) -> dict[str, Any]:
    from ibm_cloud_sdk_core.authenticators import BasicAuthenticator, BearerTokenAuthenticator

    if kind == "bearer token":
        return {"apikey": None, "authenticator": BearerTokenAuthenticator(BEARER_TOKEN)}
    if kind == "basic password":
        return {"apikey": None, "authenticator": BasicAuthenticator("vr-user", PASSWORD)}
    return {}  # the apikey, exchanged at IAM for a token


@pytest.mark.parametrize("kind", ["bearer token", "basic password", "issued IAM token"])
def test_a_service_error_echoing_the_authorization_header_does_not_leak_it(
    server: LoopbackWatsonServer, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    answer = server._answer

    def echo(request: Any) -> tuple[int, Any, dict[str, str]]:
        if request.path != "/v4/analyze":
            return answer(request)
        header = request.headers.get("authorization", "")
        return 401, {"errors": [{"code": "Unauthorized", "message": f"sent: {header}"}]}, {}

    monkeypatch.setattr(server, "_answer", echo)
    detector = make_detector(server, collection_ids=server.add_collection(), **_credentials(kind))
    with pytest.raises(DetectorServiceError, match=r"HTTP 401.*sent: \w+ \*\*\*") as raised:
        detector.detect(xray())
    sent = server.requests_to("/v4/analyze")[-1].headers["authorization"].split()[1]
    text = str(raised.value) + repr(raised.value)
    # The token, or base64 of user:password, as sent; and the given secret in any encoding.
    assert sent not in text
    secret = {"bearer token": BEARER_TOKEN, "basic password": PASSWORD}.get(kind, sent)
    for encoded in _encodings(secret):
        assert encoded not in text


def test_a_token_that_requests_will_not_send_is_refused_without_showing_it(
    server: LoopbackWatsonServer,
) -> None:
    from ibm_cloud_sdk_core.authenticators import BearerTokenAuthenticator

    # Read from a file with its newline: requests refuses the header, quoting it (repr).
    authenticator = BearerTokenAuthenticator(BEARER_TOKEN + "\n")
    detector = make_detector(
        server, collection_ids=server.add_collection(), apikey=None, authenticator=authenticator
    )
    with pytest.raises(
        DetectorServiceError, match=r"not sent: InvalidHeader.*'Bearer \*\*\*'"
    ) as raised:
        detector.detect(xray())
    assert server.requests_to("/v4/analyze") == []
    shown = "".join(traceback.format_exception(raised.value))
    for encoded in _encodings(BEARER_TOKEN):
        assert encoded not in shown


@pytest.mark.parametrize(
    "escape",
    [
        repr,
        lambda secret: repr(secret.encode()),
        json.dumps,
        lambda secret: json.dumps(secret).replace("/", "\\/"),
    ],
    ids=["repr", "repr of bytes", "JSON", "JSON with escaped slashes"],
)
def test_a_secret_quoted_with_escapes_is_redacted(escape: Any) -> None:
    from covidcxr._secrets import Redactor

    secret = 'pässwörd/with"quote\\and\nnewline'
    text = f"echo: {escape(secret)}"
    assert Redactor([secret])(text) == f"echo: {escape('***')}"


@pytest.mark.parametrize("scheme", ["https:", ""], ids=["https", "scheme-relative"])
@pytest.mark.parametrize("option", ["url", "iam_url"])
def test_urls_carrying_credentials_are_refused_without_echoing_them(
    option: str, scheme: str
) -> None:
    options: dict[str, Any] = {option: f"{scheme}//user:pa%2Bss%2Fword@vr.example.org"}
    with pytest.raises(ConfigurationError, match="must not carry credentials") as raised:
        WatsonDetector(**options, apikey="k")
    assert "pa%2Bss" not in str(raised.value)
    assert "pa+ss" not in str(raised.value)


# --- caps on detections and on the answer's size (issue 12, item 18) --------------------


def _many_lesions(count: int) -> Any:
    return lambda filename, png, cid: [
        lesion(0.5 + 0.4 * i / count, i % 40, i % 30, 5, 5) for i in range(count)
    ]


def test_detections_past_max_detections_are_dropped_lowest_scores_first_with_a_warning(
    server: LoopbackWatsonServer,
) -> None:
    server.objects_for = _many_lesions(300)
    detector = make_detector(server, collection_ids=server.add_collection())
    assert detector.max_detections == 100
    with pytest.warns(RuntimeWarning, match=r"300 detections.*'img-0'.*kept the 100"):
        detections = detector.detect(xray())
    assert len(detections) == 100
    expected = sorted((0.5 + 0.4 * i / 300 for i in range(300)), reverse=True)[:100]
    assert [d.score for d in detections] == pytest.approx(expected)


def test_max_detections_is_configurable_and_validated(server: LoopbackWatsonServer) -> None:
    server.objects_for = _many_lesions(10)
    detector = make_detector(server, collection_ids=server.add_collection(), max_detections=3)
    with pytest.warns(RuntimeWarning, match="kept the 3"):
        assert len(detector.detect(xray())) == 3
    with pytest.raises(ConfigurationError, match="max_detections"):
        make_detector(server, max_detections=0)


def test_a_box_partly_outside_the_image_is_cut_to_it_not_a_malformed_batch(
    server: LoopbackWatsonServer,
) -> None:
    # Watson may place a box past the image's edge; the other images of the batch and
    # the part of the box inside the image both stay.
    server.objects_for = lambda filename, png, cid: [
        lesion(0.9, -4, -2, 10, 8),
        lesion(0.8, 60, 40, 10, 10),
    ]
    detections = make_detector(server, collection_ids=server.add_collection()).detect_batch(
        [xray(0), xray(1)]
    )
    expected = [Box(0, 0, 6, 6), Box(60, 40, 4, 8)]
    assert [[d.box for d in found] for found in detections] == [expected, expected]


def test_boxes_wholly_outside_the_image_do_not_count_towards_max_detections(
    server: LoopbackWatsonServer,
) -> None:
    # The two highest scores lie outside the 48x64 image: the cap keeps the boxes that
    # are inside, not fewer.
    server.objects_for = lambda filename, png, cid: [
        lesion(0.99, 100, 100, 5, 5),
        lesion(0.98, -20, 0, 5, 5),
        lesion(0.7, 1, 1, 5, 5),
        lesion(0.6, 10, 10, 5, 5),
        lesion(0.5, 20, 20, 5, 5),
    ]
    detector = make_detector(server, collection_ids=server.add_collection(), max_detections=2)
    with pytest.warns(RuntimeWarning, match="3 detections.*kept the 2"):
        detections = detector.detect(xray())
    assert [d.score for d in detections] == [0.7, 0.6]


@pytest.mark.parametrize(
    ("location", "named"),
    [
        ({"left": True, "top": 1, "width": 5, "height": 5}, "should be a number"),
        ({"left": "1", "top": 1, "width": 5, "height": 5}, "should be a number"),
        ({"left": 1, "top": 1, "width": float("nan"), "height": 5}, "finite"),
        ({"left": 1, "top": 1, "width": -5, "height": 5}, ">= 0"),
        ({"left": 1, "top": 1, "width": 5}, "height"),
    ],
)
def test_a_location_that_is_not_numbers_is_a_malformed_answer(
    server: LoopbackWatsonServer, location: dict[str, Any], named: str
) -> None:
    server.objects_for = lambda filename, png, cid: [
        {"object": "opacity", "score": 0.9, "location": location}
    ]
    detector = make_detector(server, collection_ids=server.add_collection())
    with pytest.raises(DetectorServiceError, match=rf"malformed .*objects\[0\].*{named}"):
        detector.detect(xray())


def test_an_answer_larger_than_max_response_bytes_is_abandoned(
    server: LoopbackWatsonServer,
) -> None:
    server.objects_for = _many_lesions(500)
    detector = make_detector(
        server, collection_ids=server.add_collection(), max_response_bytes=20_000
    )
    with pytest.raises(DetectorServiceError, match="larger than max_response_bytes=20000"):
        detector.detect(xray())
    assert len(server.requests_to("/v4/analyze")) == 1  # not retried
    # Under the limit it is read as usual.
    server.objects_for = _many_lesions(2)
    assert len(detector.detect(xray())) == 2


# --- a deadline for the whole request (issue 12, item 17) -------------------------------


@pytest.mark.parametrize(
    ("max_retries", "message", "within_seconds"),
    [
        (0, r"did not answer within 1 s", 3.0),
        (1, r"within 1 s.*after 2 attempts", 5.0),
    ],
    ids=["abandoned at the timeout", "retried, each attempt bounded"],
)
def test_an_answer_dripped_a_byte_at_a_time_is_abandoned_at_each_attempts_timeout(
    server: LoopbackWatsonServer, max_retries: int, message: str, within_seconds: float
) -> None:
    # Each byte comes well within the per-read timeout; only a deadline on the whole
    # request ends this (the answer is ~250 bytes: about 50 s at this pace).
    server.drip_interval = 0.2
    detector = make_detector(
        server, collection_ids=server.add_collection(), timeout=1.0, max_retries=max_retries
    )
    started = time.monotonic()
    with pytest.raises(DetectorServiceError, match=message):
        detector.detect(xray())
    assert time.monotonic() - started < within_seconds
    assert len(server.requests_to("/v4/analyze")) == max_retries + 1
    # A prompt answer under the same deadline is read as usual.
    server.drip_interval = 0.0
    server.objects_for = lambda filename, png, cid: [lesion(0.7, 1, 1, 3, 3)]
    assert len(detector.detect(xray())) == 1


def test_a_slow_but_steady_answer_within_the_timeout_is_read(
    server: LoopbackWatsonServer,
) -> None:
    server.drip_interval = 0.001
    server.objects_for = lambda filename, png, cid: [lesion(0.7, 1, 1, 3, 3)]
    detector = make_detector(server, collection_ids=server.add_collection(), timeout=30.0)
    assert len(detector.detect(xray())) == 1


# --- review C: dropped answers, IAM failures, duplicates, thresholds --------------------


def _token_manager(detector: WatsonDetector) -> Any:
    return detector._service.authenticator.token_manager


def test_a_connection_dropped_mid_answer_is_retried(server: LoopbackWatsonServer) -> None:
    server.drop_next(path_prefix="/v4/analyze")
    server.objects_for = lambda filename, png, cid: [lesion(0.7, 1, 1, 3, 3)]
    detections = make_detector(server, collection_ids=server.add_collection()).detect(xray())
    assert len(detections) == 1
    assert len(server.requests_to("/v4/analyze")) == 2


def test_connections_dropped_every_time_end_in_a_detector_service_error(
    server: LoopbackWatsonServer,
) -> None:
    server.drop_next(times=10, path_prefix="/v4/analyze")
    detector = make_detector(server, collection_ids=server.add_collection(), max_retries=1)
    with pytest.raises(
        DetectorServiceError, match=r"no answer.*ChunkedEncodingError.*after 2 attempts"
    ):
        detector.detect(xray())
    assert len(server.requests_to("/v4/analyze")) == 2


def test_a_failed_token_request_does_not_hold_the_next_one(server: LoopbackWatsonServer) -> None:
    # The SDK's pacing keeps a failed request's start time and makes every token request
    # in the next 60 s wait for it; it must be cleared, so the next attempt asks at once.
    server.fail_next(503, path_prefix="/identity/token")
    detector = make_detector(server, collection_ids=server.add_collection(), max_retries=0)
    with pytest.raises(DetectorServiceError) as raised:
        detector.detect(xray())
    assert _token_manager(detector).request_time == 0
    assert server.requests_to("/v4/analyze") == []
    assert "(HTTP 503): the IAM token request failed" in str(raised.value)


def test_a_failed_token_request_is_retried_and_logged_as_such(
    server: LoopbackWatsonServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.fail_next(503, path_prefix="/identity/token")
    detector = make_detector(server, collection_ids=server.add_collection())
    with caplog.at_level(logging.WARNING):
        assert detector.detect(xray()) == []
    assert len(server.requests_to("/identity/token")) == 2
    assert len(server.requests_to("/v4/analyze")) == 1
    assert "analyze: the IAM token request failed (HTTP 503)" in caplog.text
    assert "analyze: HTTP 503" not in caplog.text


def test_the_token_request_is_bounded_by_timeout(server: LoopbackWatsonServer) -> None:
    # ~350 bytes, one every 0.03 s: well within each read's timeout, ~10 s in all.
    server.drip_path_prefix = "/identity/token"
    server.drip_interval = 0.03
    detector = make_detector(
        server, collection_ids=server.add_collection(), timeout=0.5, max_retries=1
    )
    with pytest.raises(
        DetectorServiceError,
        match=r"IAM token request failed: Timeout: .*within 0.5 s.*after 2 attempts",
    ):
        detector.detect(xray())
    assert len(server.requests_to("/identity/token")) == 2
    assert server.requests_to("/v4/analyze") == []


def test_the_token_answer_is_bounded_by_max_response_bytes(
    server: LoopbackWatsonServer,
) -> None:
    detector = make_detector(server, collection_ids=server.add_collection(), max_response_bytes=10)
    with pytest.raises(DetectorServiceError, match=r"/identity/token is larger than"):
        detector.detect(xray())
    assert server.requests_to("/v4/analyze") == []


@pytest.mark.parametrize(
    "payload",
    ["maintenance", {}, {"access_token": "abc", "expires_in": 3600, "expiration": 0}],
    ids=["not an object", "no access_token", "not a JWT"],
)
def test_a_token_answer_of_the_wrong_shape_is_a_detector_service_error(
    server: LoopbackWatsonServer, monkeypatch: pytest.MonkeyPatch, payload: Any
) -> None:
    monkeypatch.setattr(server, "_token_answer", lambda request: (200, payload, {}))
    detector = make_detector(server, collection_ids=server.add_collection())
    with pytest.raises(DetectorServiceError, match="not an access token") as raised:
        detector.detect(xray())
    assert APIKEY not in str(raised.value)
    assert len(server.requests_to("/identity/token")) == 1
    assert _token_manager(detector).request_time == 0


@pytest.mark.parametrize(
    ("answer", "named"),
    [
        ({"images": [{"source": {"filename": "image-00.png"}}]}, r"images\[0\].image_id"),
        ({"images": ["oops"]}, r"images\[0\] should be a JSON object"),
        ({"images": [{"errors": "quota exceeded"}]}, r"images\[0\].errors should be"),
        ({"images": [{"errors": ["quota"]}]}, r"images\[0\].errors\[0\]"),
        ({"images": {}}, "'images' should be a JSON array"),
        (["not", "an", "object"], "the add images answer"),
        ({"images": []}, "returned no image"),
    ],
)
def test_add_images_answers_of_the_wrong_shape_are_detector_service_errors(
    server: LoopbackWatsonServer, monkeypatch: pytest.MonkeyPatch, answer: Any, named: str
) -> None:
    collection = server.add_collection()
    monkeypatch.setattr(server, "_add_images", lambda collection, request: (200, answer, {}))
    detector = make_detector(server)
    with pytest.raises(DetectorServiceError, match=named):
        detector.add_training_images(collection, [xray(0, boxes=(Box(1, 1, 5, 5),))])


def test_an_object_with_an_empty_name_is_a_malformed_answer(
    server: LoopbackWatsonServer,
) -> None:
    server.objects_for = lambda filename, png, cid: [{**lesion(0.9, 1, 1, 5, 5), "object": ""}]
    detector = make_detector(server, collection_ids=server.add_collection(), on_error="skip")
    with pytest.raises(DetectorServiceError, match=r"malformed .*objects\[0\].*label"):
        detector.detect(xray())


def test_a_threshold_of_zero_is_sent(server: LoopbackWatsonServer) -> None:
    # Left out, the endpoint's default (0.5 here, as Watson's) would drop the lesion.
    server.objects_for = lambda filename, png, cid: [lesion(0.3, 1, 1, 5, 5)]
    detector = make_detector(server, collection_ids=server.add_collection(), threshold=0)
    assert len(detector.detect(xray())) == 1
    (request,) = server.requests_to("/v4/analyze")
    assert [float(value) for value in request.values("threshold")] == [0.0]


def test_a_collection_is_not_created_twice_when_its_answer_is_lost(
    server: LoopbackWatsonServer,
) -> None:
    server.drop_next(path_prefix="/v4/collections")
    detector = make_detector(server)
    with pytest.raises(DetectorServiceError, match=r"not sent again.*duplicate"):
        detector.create_collection("c")
    assert len(server.requests_to("/v4/collections")) == 1
    assert len(server.collections) == 1


@pytest.mark.parametrize("failure", ["503", "timeout", "dropped"])
def test_a_training_image_is_not_uploaded_twice_after_it_may_have_arrived(
    server: LoopbackWatsonServer, failure: str
) -> None:
    collection = server.add_collection()
    path = f"/v4/collections/{collection}/images"
    options: dict[str, Any] = {}
    if failure == "503":
        server.fail_next(503, path_prefix=path)
    elif failure == "timeout":
        server.response_delay = 1.0
        options["timeout"] = 0.3
    else:
        server.drop_next(path_prefix=path)
    detector = make_detector(server, **options)
    with pytest.raises(DetectorServiceError, match="not sent again"):
        detector.add_training_images(collection, [xray(0, boxes=(Box(1, 1, 5, 5),))])
    assert len(server.requests_to(path)) == 1
    assert server.collections[collection]["image_count"] == (0 if failure == "503" else 1)


def test_uploads_are_retried_after_429_and_failed_token_requests(
    server: LoopbackWatsonServer,
) -> None:
    # Neither reached the operation: the service cannot have acted on it.
    collection = server.add_collection()
    path = f"/v4/collections/{collection}/images"
    server.fail_next(429, retry_after="0", path_prefix=path)
    server.fail_next(503, path_prefix="/identity/token")
    detector = make_detector(server)
    (image_id,) = detector.add_training_images(collection, [xray(0, boxes=(Box(1, 1, 5, 5),))])
    assert image_id
    assert len(server.requests_to("/identity/token")) == 2
    assert len(server.requests_to(path)) == 2
    assert server.collections[collection]["image_count"] == 1


def test_creating_a_collection_is_retried_when_no_connection_was_made() -> None:
    from ibm_cloud_sdk_core.authenticators import NoAuthAuthenticator

    with LoopbackWatsonServer() as closed:
        url = closed.url
    detector = WatsonDetector(
        url=url, authenticator=NoAuthAuthenticator(), max_retries=1, backoff=0.01
    )
    with pytest.raises(DetectorServiceError, match=r"ConnectionError.*after 2 attempts"):
        detector.create_collection("c")


def test_the_documented_retry_statuses_are_the_retried_ones() -> None:
    from covidcxr.detect._watson_service import _RETRY_STATUSES

    docs = Path(__file__).parents[2] / "docs" / "detection.rst"
    for text in (WatsonDetector.__doc__ or "", docs.read_text(encoding="utf-8")):
        flat = " ".join(text.split())
        assert "429 and 5xx" not in flat
        assert "429 or 5xx" not in flat
        for status in sorted(_RETRY_STATUSES):
            assert str(status) in flat
