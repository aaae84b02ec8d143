"""The five roles of the pipeline, as structural protocols.

A plugin implements a role by having the right methods; it never needs to import or
subclass anything from covidcxr. Each protocol is :func:`typing.runtime_checkable`, so
``isinstance(obj, LesionDetector)`` checks that the methods exist (not their signatures:
``mypy`` does that).

Data flows one way::

    DatasetSource ──XRay──▶ Preprocessor ──XRay──▶ Classifier / LesionDetector ──▶ Evaluator

Optional abilities are declared by small protocols of their own: a component that has the
methods of :class:`BatchDetector`, :class:`TrainableDetector`, :class:`Persistable`,
:class:`ReportsEpochs`, :class:`SegmentsLesions`, :class:`CacheablePreprocessor`,
:class:`DescribedPreprocessor` or :class:`RecordsPreprocessing` is used that way by the
:class:`~covidcxr.Pipeline`; one that has not is used through its role's methods alone.
The pipeline asks with ``isinstance`` against these protocols, never by probing for
attributes, so a plugin author can read here everything the pipeline may call.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, Self, TypeAlias, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from covidcxr.records import Detection, GateDecision, GroundTruth, Prediction, XRay

__all__ = [
    "BatchDetector",
    "CacheablePreprocessor",
    "Classifier",
    "DatasetSource",
    "DescribedPreprocessor",
    "EpochCallback",
    "Evaluator",
    "InputGate",
    "LesionDetector",
    "Persistable",
    "Preprocessor",
    "RecordsPreprocessing",
    "Report",
    "ReportsEpochs",
    "SegmentsLesions",
    "TrainableDetector",
]


@runtime_checkable
class DatasetSource(Protocol):
    """A collection of radiographs that can be iterated more than once.

    Contract
    --------
    - Iterating yields :class:`~covidcxr.XRay` records, in a stable order, reading lazily
      (a source over 100,000 files must not hold them all in memory).
    - Every iteration yields the same images; ``len(source)`` is their number.
    - :attr:`classes` lists the canonical labels present, in :data:`covidcxr.LABELS` order.
    - Unreadable items raise :class:`~covidcxr.InvalidImageError` naming the item, or, if the
      source was opened with ``on_error="skip"``, are recorded and reported, never silently
      dropped.
    """

    @property
    def classes(self) -> tuple[str, ...]:
        """The canonical labels present in the source."""
        ...

    def __iter__(self) -> Iterator[XRay]:
        """Yield the radiographs one at a time."""
        ...

    def __len__(self) -> int:
        """The number of radiographs an iteration yields."""
        ...


@runtime_checkable
class Preprocessor(Protocol):
    """Turns a radiograph into the form a model expects.

    Contract
    --------
    - Returns a *new* :class:`~covidcxr.XRay` (records are immutable) with the same ``id``,
      ``label`` and ``patient_id``.
    - Any ``boxes`` are transformed with the pixels, so they still frame the same anatomy.
    - A preprocessor that changes the geometry (resizing, padding, cropping) records it in
      ``meta["transform"]`` as a :class:`~covidcxr.boxes.ResizeTransform`, which
      knows its inverse: the pipeline maps detections found on the output back onto the
      radiograph as read with it (in the spirit of MONAI's ``InvertibleTransform``). One
      that records no transform must leave the geometry alone.
    - Deterministic: the same input and parameters give byte-identical output.
    """

    def __call__(self, xray: XRay) -> XRay:
        """Preprocess one radiograph."""
        ...


@runtime_checkable
class Classifier(Protocol):
    """Assigns each radiograph a probability for each class (scikit-learn conventions).

    Contract
    --------
    - ``__init__`` only stores parameters; :meth:`fit` learns and returns ``self``.
    - Learned state ends in an underscore; :attr:`classes_` is set by :meth:`fit` or
      :meth:`load`.
    - :meth:`predict_proba` rows sum to 1, columns in :attr:`classes_` order;
      :meth:`predict` returns the label of the largest probability.
    - :meth:`save` never leaves a half-written model behind; :meth:`load` refuses models it
      cannot read correctly, with a :class:`~covidcxr.errors.ModelFormatError`.

    ``isinstance(obj, Classifier)`` is true only for a *fitted* classifier, because the
    runtime check also looks for :attr:`classes_`; :func:`covidcxr.create_classifier`
    checks unfitted ones by their methods.
    """

    classes_: tuple[str, ...]

    def fit(self, xrays: Iterable[XRay], validation: Iterable[XRay] | None = None) -> Self:
        """Learn from labelled radiographs; ``validation`` is used for monitoring only."""
        ...

    def predict_proba(self, xrays: Iterable[XRay]) -> NDArray[np.float32]:
        """Class probabilities, shape ``(n_images, len(classes_))``."""
        ...

    def predict(self, xrays: Iterable[XRay]) -> list[str]:
        """The most probable label of each radiograph."""
        ...

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted model to ``path`` atomically."""
        ...

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read a model written by :meth:`save`."""
        ...


@runtime_checkable
class LesionDetector(Protocol):
    """Finds lesions (opacities) in a radiograph and boxes them.

    Contract
    --------
    - Boxes are in the pixel coordinates of the :class:`~covidcxr.XRay` passed in, whatever
      resizing the detector does internally.
    - Detections are sorted by descending score; an image with no lesion gives ``[]``.
    """

    def detect(self, xray: XRay) -> list[Detection]:
        """Detect lesions in one radiograph."""
        ...


@runtime_checkable
class Report(Protocol):
    """The result of an evaluation: any object that can present itself as plain data."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable figures of the report."""
        ...


@runtime_checkable
class Evaluator(Protocol):
    """Turns ground truth and predictions into a :class:`~covidcxr.protocols.Report`.

    Contract
    --------
    - ``truths`` and ``predictions`` are aligned by position (and share their ids).
    - A prediction's ``probabilities`` hold one value per class of ``classes``.
    - Detections are scored against the truths' boxes only when ``detections`` is true and
      every truth is ``annotated``; both are in the same pixel coordinates.
    """

    def evaluate(
        self,
        truths: Sequence[GroundTruth],
        predictions: Sequence[Prediction],
        *,
        classes: Sequence[str],
        detections: bool = True,
    ) -> Report:
        """Compute the report."""
        ...


# -- optional abilities -------------------------------------------------------------------

#: ``on_epoch_end(epoch, logs)``: called after each training epoch (1-based) with its logs.
EpochCallback: TypeAlias = Callable[[int, Mapping[str, float]], None]


@runtime_checkable
class InputGate(Protocol):
    """Decides, before any diagnosis, whether an image is one the model can read.

    Contract
    --------
    - :meth:`fit` learns from the prepared training radiographs alone (no outliers are
      shown to it) and sets the threshold it refuses above.
    - :meth:`assess` returns one :class:`~covidcxr.GateDecision` per prepared image, in
      order; a refused image gets a reason a person can act on.
    """

    def fit(self, xrays: Sequence[XRay]) -> Self:
        """Learn what the training radiographs look like."""
        ...

    def assess(self, xrays: Sequence[XRay]) -> list[GateDecision]:
        """Accept or refuse each prepared image."""
        ...


@runtime_checkable
class BatchDetector(Protocol):
    """A detector that is faster on many radiographs at once (one network call, one request).

    The pipeline hands it chunks of preprocessed radiographs instead of one at a time.
    """

    def detect_batch(self, xrays: Sequence[XRay]) -> list[list[Detection]]:
        """Detect lesions in each radiograph; one list per radiograph, in input order."""
        ...


@runtime_checkable
class TrainableDetector(Protocol):
    """A detector that learns from radiographs with ground-truth ``boxes``.

    :meth:`covidcxr.Pipeline.fit` trains it on the same prepared radiographs as the
    classifier, after the classifier.
    """

    def fit(self, xrays: Sequence[XRay], validation: Sequence[XRay] | None = None) -> Self:
        """Learn from the radiographs' boxes; ``validation`` is for monitoring only."""
        ...


@runtime_checkable
class SegmentsLesions(Protocol):
    """A detector that draws a lesion probability map and boxes its components.

    With a lung stage, the pipeline asks for the maps, sets them to 0 outside the lungs
    (unless the stage's ``constrain_detections`` is off), boxes what is left with
    :meth:`masks_to_detections`, and measures each lung's
    infected share (:class:`~covidcxr.Severity`) from the same maps at
    :attr:`mask_threshold`.
    """

    #: The probability at which a pixel of a map counts as lesion.
    mask_threshold: float

    def predict_masks(self, xrays: Sequence[XRay]) -> NDArray[np.float32]:
        """Lesion probability maps, shape ``(n, height, width)``, one per radiograph.

        A map covers its whole radiograph, at any resolution.
        """
        ...

    def masks_to_detections(
        self, maps: NDArray[np.floating[Any]], xrays: Sequence[XRay]
    ) -> list[list[Detection]]:
        """Boxes from the maps, in each radiograph's own pixel coordinates."""
        ...


@runtime_checkable
class Persistable(Protocol):
    """A component that writes its fitted state and reads it back.

    A saved pipeline stores such a detector's model; a detector that is not persistable is
    saved by name and options and rebuilt from them (a remote service, for example).
    """

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted state to ``path`` atomically."""
        ...

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read what :meth:`save` wrote."""
        ...


@runtime_checkable
class ReportsEpochs(Protocol):
    """A classifier that calls ``on_epoch_end`` after each training epoch.

    With ``Pipeline(progress=True)`` the pipeline sets it for the duration of
    :meth:`~covidcxr.Pipeline.fit` (to drive a progress bar) and restores it afterwards.
    """

    on_epoch_end: EpochCallback | None


@runtime_checkable
class CacheablePreprocessor(Protocol):
    """A preprocessor whose results may be cached under a token of its parameters.

    ``cache_token()`` must change whenever the output would; the preprocessing cache also
    keys on the class. A preprocessor without it is cached under its ``repr``.
    """

    def __call__(self, xray: XRay) -> XRay:
        """Preprocess one radiograph."""
        ...

    def cache_token(self) -> str:
        """A string that identifies everything the output depends on."""
        ...


@runtime_checkable
class DescribedPreprocessor(Protocol):
    """A preprocessor that describes its parameters as plain data.

    ``describe()`` returns what every output records in ``meta["preprocessing"]``; a model
    trained on the output keeps it (see :class:`RecordsPreprocessing`), and the
    :class:`~covidcxr.Pipeline` compares the two.
    """

    def __call__(self, xray: XRay) -> XRay:
        """Preprocess one radiograph."""
        ...

    def describe(self) -> dict[str, Any]:
        """The parameters, as plain JSON data (with a ``name``)."""
        ...


@runtime_checkable
class RecordsPreprocessing(Protocol):
    """A fitted classifier or detector that kept the preprocessing of its training images.

    ``preprocessing_`` is the ``meta["preprocessing"]`` its training images carried, or
    ``None`` when they carried none (or it is unknown). A :class:`~covidcxr.Pipeline`
    refuses to pair such a component with a :class:`DescribedPreprocessor` that describes
    another preprocessing: the model would see images unlike those it learnt from.
    """

    preprocessing_: Any
