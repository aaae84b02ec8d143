"""Lesion detection with IBM Watson Visual Recognition v4 object detection.

The published pipeline trained a Visual Recognition *collection* on radiologist-drawn
boxes and sent radiographs to its ``analyze`` endpoint. IBM retired the service on
2021-12-01, so this backend is useful against a compatible endpoint (an IBM Cloud Pak
deployment, a re-implementation of the v4 REST protocol, or the loopback server in
:class:`~covidcxr.detect.LoopbackWatsonServer`); give its address as ``url``. It is built on the
real ``ibm_watson.VisualRecognitionV4`` client from ibm-watson 5.3.1 (the ``watson``
extra), imported only when a request is made.

The HTTP side (client, retries, uploads) is in :mod:`covidcxr.detect._watson_service`.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal

from attrs import frozen

from covidcxr._secrets import refuse_url_credentials
from covidcxr.boxes import box_to_location, clip_location
from covidcxr.detect._watson_service import (
    _SDK_ENV_APIKEY,
    _SDK_ENV_URL,
    API_VERSION,
    DEFAULT_MAX_RESPONSE_BYTES,
    ENV_APIKEY,
    ENV_COLLECTION_IDS,
    ENV_IAM_URL,
    ENV_URL,
    MAX_IMAGES_PER_REQUEST,
    _prepare_upload,
    _ServiceConnection,
    _Upload,
)
from covidcxr.errors import ConfigurationError, DetectorServiceError
from covidcxr.records import Detection, XRay

__all__ = ["ImageFailure", "WatsonDetector"]

#: The default cap on detections kept per image.
DEFAULT_MAX_DETECTIONS: Final = 100


@frozen
class ImageFailure:
    """An image the service could not analyse (kept when ``on_error="skip"``).

    Parameters
    ----------
    xray_id
        The :attr:`~covidcxr.XRay.id` of the image.
    code
        The service's error code, for example ``"invalid_image"``.
    message
        The service's explanation.
    """

    xray_id: str
    code: str
    message: str


class WatsonDetector(_ServiceConnection):
    """Detect lesions with a trained Watson Visual Recognition v4 collection.

    Parameters
    ----------
    url
        The service endpoint, for example ``https://vr.example.org``. Falls back to
        ``$COVIDCXR_WATSON_URL``, then ``$VISUAL_RECOGNITION_URL``. There is no default:
        IBM's public endpoints were switched off with the service.
    collection_ids
        The collection(s) to analyse against: one id, a comma-separated string, or a
        sequence. Falls back to ``$COVIDCXR_WATSON_COLLECTION_IDS``. Only
        :meth:`detect` and :meth:`detect_batch` need it.
    threshold
        The least score returned, in ``[0, 1]``; sent to the service and applied again to
        its answer.
    apikey
        An IBM Cloud IAM apikey; falls back to ``$COVIDCXR_WATSON_APIKEY``, then
        ``$VISUAL_RECOGNITION_APIKEY``. Never shown in reprs, logs or error messages,
        raw or encoded (URL-encoded, base64).
    authenticator
        Any ``ibm_cloud_sdk_core`` ``Authenticator`` (bearer token, Cloud Pak, no-auth ...),
        used instead of ``apikey``.
    iam_url
        The IAM token server for ``apikey`` (private or staging deployments); falls back
        to ``$COVIDCXR_WATSON_IAM_URL``, then the SDK's default.
    max_retries
        Extra attempts after an HTTP 429, 500, 502, 503 or 504 answer (other statuses,
        501 and 507 included, fail at once), a timeout or a dropped connection. A request
        that creates something (:meth:`create_collection`, :meth:`add_training_images`)
        is sent again only when the service cannot have acted on it: after HTTP 429 or a
        failure to connect. After a 5xx answer, a timeout or a connection dropped once it
        was sent, it fails with :class:`~covidcxr.errors.DetectorServiceError` instead of
        risking a duplicate collection or image.
    timeout
        The longest one HTTP request may take, in seconds: from sending it to the last
        byte of the answer (not only each read, so a server that trickles its answer
        cannot hold the call), IAM token requests included. A request that overruns it
        is abandoned and retried like a dropped connection.
    batch_size
        Images per ``analyze`` request, 1 to 20 (the service's limit).
    backoff
        First wait, in seconds, between attempts when the service gives no ``Retry-After``;
        it doubles with each attempt. Finite and ``>= 0``.
    max_wait
        The longest single wait between attempts, ``Retry-After`` included. Finite and
        ``>= 0``.
    on_error
        What to do when the service reports an error for one image of a batch:
        ``"raise"`` a :class:`~covidcxr.errors.DetectorServiceError`, or ``"skip"`` the image (it
        gets no detections, a warning is issued and the failure is appended to
        :attr:`failures_`).
    version
        The API version date sent with every request.
    max_detections
        The most detections kept per image. When the service returns more (at or above
        ``threshold`` and not wholly outside the image: a box partly outside is cut to
        the image), the ``max_detections`` highest-scoring are kept and a
        :class:`RuntimeWarning` names the image and how many were dropped: a chest
        radiograph has a handful of lesions, so a flood of boxes means a misconfigured
        collection or endpoint, and must not exhaust memory downstream.
    max_response_bytes
        The largest answer body read, in bytes (after any gzip decoding); a larger one
        is abandoned while it arrives and raises
        :class:`~covidcxr.errors.DetectorServiceError`, before it is parsed.

    Examples
    --------
    >>> detector = WatsonDetector(url="https://vr.example.org", collection_ids="c-1",
    ...                           apikey="secret")
    >>> detector
    WatsonDetector(url='https://vr.example.org', collection_ids=('c-1',), threshold=0.5, \
apikey='***', authenticator=None)
    """

    def __init__(
        self,
        url: str | None = None,
        collection_ids: str | Sequence[str] | None = None,
        threshold: float = 0.5,
        *,
        apikey: str | None = None,
        authenticator: Any = None,
        iam_url: str | None = None,
        max_retries: int = 4,
        timeout: float = 60.0,
        batch_size: int = MAX_IMAGES_PER_REQUEST,
        backoff: float = 1.0,
        max_wait: float = 60.0,
        on_error: Literal["raise", "skip"] = "raise",
        version: str = API_VERSION,
        max_detections: int = DEFAULT_MAX_DETECTIONS,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ConfigurationError(f"threshold must be in [0, 1], got {threshold!r}")
        if not 1 <= batch_size <= MAX_IMAGES_PER_REQUEST:
            raise ConfigurationError(
                f"batch_size must be 1 to {MAX_IMAGES_PER_REQUEST} (the service's limit per "
                f"request), got {batch_size!r}"
            )
        if max_retries < 0:
            raise ConfigurationError(f"max_retries must be >= 0, got {max_retries!r}")
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ConfigurationError(
                f"timeout must be a finite number > 0 seconds, got {timeout!r}"
            )
        for name, wait in (("backoff", backoff), ("max_wait", max_wait)):
            if not (wait >= 0 and math.isfinite(wait)):
                raise ConfigurationError(
                    f"{name} must be a finite number >= 0 seconds, got {wait!r}"
                )
        if on_error not in ("raise", "skip"):
            raise ConfigurationError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if max_detections < 1:
            raise ConfigurationError(f"max_detections must be >= 1, got {max_detections!r}")
        if max_response_bytes < 1:
            raise ConfigurationError(f"max_response_bytes must be >= 1, got {max_response_bytes!r}")
        if apikey is not None and authenticator is not None:
            raise ConfigurationError("give either apikey or authenticator, not both")
        self.url = url or os.environ.get(ENV_URL) or os.environ.get(_SDK_ENV_URL)
        refuse_url_credentials(self.url, "the Watson url")
        self.collection_ids = _as_ids(
            collection_ids if collection_ids is not None else os.environ.get(ENV_COLLECTION_IDS)
        )
        self.threshold = float(threshold)
        self.authenticator = authenticator
        self.iam_url = iam_url or os.environ.get(ENV_IAM_URL)
        refuse_url_credentials(self.iam_url, "the Watson iam_url")
        self.max_retries = max_retries
        self.timeout = float(timeout)
        self.batch_size = batch_size
        self.backoff = float(backoff)
        self.max_wait = float(max_wait)
        self.on_error = on_error
        self.version = version
        self.max_detections = max_detections
        self.max_response_bytes = max_response_bytes
        self._apikey = (
            apikey
            if apikey is not None or authenticator is not None
            else os.environ.get(ENV_APIKEY) or os.environ.get(_SDK_ENV_APIKEY)
        )
        self._service: Any = None
        self._service_lock = threading.Lock()
        #: Images the service could not analyse, when ``on_error="skip"``.
        self.failures_: list[ImageFailure] = []

    def __repr__(self) -> str:
        apikey = "'***'" if self._apikey else "None"
        authenticator = type(self.authenticator).__name__ if self.authenticator else None
        return (
            f"{type(self).__name__}(url={self.url!r}, collection_ids={self.collection_ids!r}, "
            f"threshold={self.threshold!r}, apikey={apikey}, authenticator={authenticator})"
        )

    # -- detection -------------------------------------------------------------------------

    def _require_collections(self) -> tuple[str, ...]:
        if not self.collection_ids:
            raise ConfigurationError(
                f"Watson detection needs collection_ids= (or ${ENV_COLLECTION_IDS}): the "
                "trained collection(s) to analyse against"
            )
        return self.collection_ids

    def detect(self, xray: XRay) -> list[Detection]:
        """Detect lesions in one radiograph.

        Returns
        -------
        list of Detection
            Boxes in the coordinates of ``xray``, by descending score.

        Raises
        ------
        DetectorServiceError
            If the service refuses the request (the message names the HTTP status and
            what to check) or, with ``on_error="raise"``, cannot analyse the image.
        ConfigurationError
            If the url, the credentials or the collection ids are missing.
        """
        return self.detect_batch([xray])[0]

    def detect_batch(self, xrays: Iterable[XRay]) -> list[list[Detection]]:
        """Detect lesions in many radiographs, ``batch_size`` per ``analyze`` request.

        Returns
        -------
        list of list of Detection
            One list per radiograph, in input order.
        """
        collection_ids = self._require_collections()
        images = list(xrays)
        if not images:
            return []
        service = self._client()
        results: list[list[Detection]] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            uploads = [_prepare_upload(xray, index) for index, xray in enumerate(chunk)]
            answer = self._call(
                "analyze",
                service.analyze,
                collection_ids=list(collection_ids),
                features=["objects"],
                images_file=[upload.as_file() for upload in uploads],
                # Always sent, as text: the SDK drops a falsy threshold (0.0), and the
                # endpoint's default (0.5 for Watson) would then apply.
                threshold=str(self.threshold),
            )
            results.extend(self._parse_analysis(answer, chunk, uploads))
        return results

    def _parse_analysis(
        self, answer: Any, xrays: Sequence[XRay], uploads: Sequence[_Upload]
    ) -> list[list[Detection]]:
        hint = f"; is the url ({self.url}) a Visual Recognition v4 endpoint?"
        document = _object(answer, "the analyze answer", hint)
        images = _array(document.get("images"), "'images'", hint)
        by_name: dict[str, Mapping[str, Any]] = {}
        for position, entry in enumerate(images):
            named = _object(entry, f"images[{position}]", hint)
            source = _object(named.get("source"), f"images[{position}].source", hint)
            by_name[str(source.get("filename"))] = named
        parsed: list[list[Detection]] = []
        for xray, upload in zip(xrays, uploads, strict=True):
            image = by_name.get(upload.filename)
            if image is None:
                self._image_failed(xray, "missing", "the service returned no result for it")
                parsed.append([])
                continue
            where = f" for {xray.id!r}"
            errors = _array(image.get("errors") or [], "'errors'", where)
            if errors:
                first = _object(errors[0], "errors[0]", where)
                self._image_failed(
                    xray, str(first.get("code", "error")), str(first.get("message", first))
                )
                parsed.append([])
                continue
            parsed.append(self._parse_objects(image, xray, upload))
        return parsed

    def _image_failed(self, xray: XRay, code: str, message: str) -> None:
        text = f"Watson could not analyse {xray.id!r}: {code}: {message}"
        if self.on_error == "raise":
            raise DetectorServiceError(text)
        warnings.warn(text, RuntimeWarning, stacklevel=4)
        self.failures_.append(ImageFailure(xray.id, code, message))

    def _parse_objects(
        self, image: Mapping[str, Any], xray: XRay, upload: _Upload
    ) -> list[Detection]:
        # (score, collection index, object index, object): names are built only for errors.
        candidates: list[tuple[float, int, int, Mapping[str, Any]]] = []
        to_xray = upload.transform.inverse()
        where = f" for {xray.id!r}"
        objects = _object(image.get("objects") or {}, "'objects'", where)
        collections = _array(objects.get("collections") or [], "'objects.collections'", where)
        for index, entry in enumerate(collections):
            collection = _object(entry, f"objects.collections[{index}]", where)
            found_list = _array(
                collection.get("objects") or [], f"objects.collections[{index}].objects", where
            )
            for position, item in enumerate(found_list):
                found = _object(item, _object_name(index, position), where)
                try:
                    score = float(found["score"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise DetectorServiceError(
                        f"Watson returned a malformed {_object_name(index, position)}{where}: "
                        f"{exc!r}"
                    ) from None
                if score >= self.threshold:
                    candidates.append((score, index, position, found))
        # Boxes first, then the cap: a box wholly outside the uploaded image is dropped
        # before it can take the place of one that is kept.
        detections: list[Detection] = []
        for score, index, position, found in candidates:
            try:
                label = str(found["object"])
                # Cut to the uploaded image first: Watson may place a box partly outside
                # it (a negative left), which is no reason to lose the batch.
                inside = clip_location(found["location"], upload.transform.output_shape)
                box = None if inside is None else to_xray.map_box(inside)
                # Inside the try: Detection refuses an empty label (InvalidRecordError, a
                # ValueError), which is the service's malformed answer, not a caller's.
                if box is not None:
                    detections.append(Detection(box, label, min(max(score, 0.0), 1.0)))
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                raise DetectorServiceError(
                    f"Watson returned a malformed {_object_name(index, position)}{where}: {exc!r}"
                ) from None
        if len(detections) > self.max_detections:
            warnings.warn(
                f"Watson returned {len(detections)} detections at or above the threshold "
                f"for {xray.id!r}; kept the {self.max_detections} highest-scoring "
                "(max_detections)",
                RuntimeWarning,
                stacklevel=5,
            )
            detections = heapq.nlargest(
                self.max_detections, detections, key=lambda detection: detection.score
            )
        detections.sort(key=lambda detection: -detection.score)
        return detections

    # -- training --------------------------------------------------------------------------

    def create_collection(self, name: str, description: str | None = None) -> str:
        """Create an empty collection and return its id.

        Examples
        --------
        >>> detector.create_collection("covid-opacities")  # doctest: +SKIP
        '5826c5ec-6f86-44b1-ab2b-cca6c75f2fc7'
        """
        answer = self._call(
            "create collection",
            self._client().create_collection,
            idempotent=False,
            name=name,
            description=description,
        )
        return _collection_id(answer)

    def add_training_images(
        self, collection_id: str, xrays: Iterable[XRay], *, object_name: str = "opacity"
    ) -> list[str]:
        """Upload radiographs with their :attr:`~covidcxr.XRay.boxes` as training data.

        One image per request: the service accepts ``training_data`` only for a single
        image. Images without boxes are uploaded without training data. Each box is sent
        as the smallest whole-pixel rectangle covering it, clipped to the image; a box of
        zero area marks no pixel and is left out. An upload is not repeated once it may
        have reached the service (see ``max_retries``).

        Returns
        -------
        list of str
            The service's image ids, in input order.

        Raises
        ------
        DetectorServiceError
            If the service refuses an image, answers with a document of the wrong shape,
            or fails in a way that leaves unknown whether it stored the image.
        """
        if not object_name or len(object_name) > 32 or object_name.startswith("sys-"):
            raise ConfigurationError(
                f"object_name must be 1 to 32 characters and not start with 'sys-', got "
                f"{object_name!r}"
            )
        service = self._client()
        image_ids: list[str] = []
        for xray in xrays:
            upload = _prepare_upload(xray, 0)
            on_upload = upload.transform.map_boxes(xray.boxes)
            objects = [
                {"object": object_name, "location": box_to_location(box)} for box in on_upload
            ]
            answer = self._call(
                "add images",
                service.add_images,
                idempotent=False,
                collection_id=collection_id,
                images_file=[upload.as_file()],
                training_data=json.dumps({"objects": objects}) if objects else None,
            )
            image_ids.append(_added_image_id(answer, xray))
        return image_ids

    def train(self, collection_id: str) -> None:
        """Start (or queue) training of ``collection_id``."""
        self._call("train", self._client().train, collection_id=collection_id)

    def wait_for_training(
        self, collection_id: str, *, poll_interval: float = 30.0, timeout: float = 6 * 3600.0
    ) -> Mapping[str, Any]:
        """Poll ``get_collection`` until object training is finished.

        Returns
        -------
        Mapping
            The collection document once ``training_status.objects`` is ready and no
            longer in progress.

        Raises
        ------
        DetectorServiceError
            If training failed (with the service's description) or did not finish within
            ``timeout`` seconds.
        """
        service = self._client()
        deadline = time.monotonic() + timeout
        while True:
            collection = self._call(
                "get collection", service.get_collection, collection_id=collection_id
            )
            status = ((collection or {}).get("training_status") or {}).get("objects") or {}
            if status.get("latest_failed"):
                raise DetectorServiceError(
                    f"Watson training of collection {collection_id!r} failed: "
                    f"{status.get('description') or 'no description given'}"
                )
            if status.get("ready") and not status.get("in_progress"):
                return dict(collection)
            if time.monotonic() + poll_interval > deadline:
                raise DetectorServiceError(
                    f"Watson training of collection {collection_id!r} did not finish within "
                    f"{timeout:.0f} s (last status: {status})"
                )
            time.sleep(poll_interval)

    def train_collection(
        self,
        xrays: Iterable[XRay],
        *,
        name: str,
        description: str | None = None,
        object_name: str = "opacity",
        poll_interval: float = 30.0,
        timeout: float = 6 * 3600.0,
    ) -> str:
        """The published workflow: create a collection, upload, train, wait; return its id.

        Examples
        --------
        >>> collection_id = detector.train_collection(train_xrays, name="cxr")  # doctest: +SKIP
        >>> trained = WatsonDetector(url=detector.url, collection_ids=collection_id,
        ...                          apikey="...")  # doctest: +SKIP
        """
        collection_id = self.create_collection(name, description)
        self.add_training_images(collection_id, xrays, object_name=object_name)
        self.train(collection_id)
        self.wait_for_training(collection_id, poll_interval=poll_interval, timeout=timeout)
        return collection_id


def _as_ids(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(item.strip() for item in items if item.strip())


def _object_name(collection: int, position: int) -> str:
    return f"objects.collections[{collection}].objects[{position}]"


def _object(value: Any, what: str, where: str, action: str = "analyze") -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else a DetectorServiceError naming ``what``."""
    if isinstance(value, Mapping):
        return value
    raise _malformed(what, "a JSON object", value, where, action)


def _array(value: Any, what: str, where: str, action: str = "analyze") -> list[Any]:
    """``value`` if it is a JSON array, else a DetectorServiceError naming ``what``."""
    if isinstance(value, list):
        return value
    raise _malformed(what, "a JSON array", value, where, action)


def _malformed(
    what: str, expected: str, value: Any, where: str, action: str = "analyze"
) -> DetectorServiceError:
    return DetectorServiceError(
        f"Watson {action} returned a malformed document: {what} should be {expected}, "
        f"got {type(value).__name__}{where}"
    )


def _added_image_id(answer: Any, xray: XRay) -> str:
    """The image id in an ``add_images`` answer for one image, checked as analyze's are."""
    action, where = "add images", f" for {xray.id!r}"
    document = _object(answer, "the add images answer", where, action)
    images = _array(document.get("images"), "'images'", where, action)
    if not images:
        raise DetectorServiceError(f"Watson add images returned no image for {xray.id!r}")
    image = _object(images[0], "images[0]", where, action)
    errors = _array(image.get("errors") or [], "images[0].errors", where, action)
    if errors:
        first = _object(errors[0], "images[0].errors[0]", where, action)
        raise DetectorServiceError(
            f"Watson refused training image {xray.id!r}: "
            f"{first.get('code', 'error')}: {first.get('message', first)}"
        )
    image_id = image.get("image_id")
    if not isinstance(image_id, str) or not image_id:
        raise _malformed("images[0].image_id", "a non-empty string", image_id, where, action)
    return image_id


def _collection_id(answer: Any) -> str:
    try:
        return str(answer["collection_id"])
    except (KeyError, TypeError):
        raise DetectorServiceError("Watson create collection returned no collection_id") from None
