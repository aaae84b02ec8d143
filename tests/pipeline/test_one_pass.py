"""One data path: every Pipeline call reads and preprocesses each item of its source once.

A counting source counts the radiographs it yields; a counting folder source counts the
files its reader opens, in whichever process reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from covidcxr import XRay
from covidcxr.errors import ConfigurationError
from covidcxr.labels import LABELS
from covidcxr.phantoms import write_phantom_dataset
from covidcxr.pipeline import Pipeline, PreparedSet
from covidcxr.pipeline import _estimator as estimator_module
from covidcxr.sources import Entry, FolderSource, RawItem
from covidcxr.sources import _folder as folder_module

pytestmark = pytest.mark.usefixtures("test_components")


class CountingSource:
    """A :class:`~covidcxr.DatasetSource` over a list that counts what it yields."""

    def __init__(self, xrays: Sequence[XRay]) -> None:
        self._xrays = list(xrays)
        self.reads = 0

    @property
    def classes(self) -> tuple[str, ...]:
        present = {x.label for x in self._xrays}
        return tuple(label for label in LABELS if label in present)

    def __len__(self) -> int:
        return len(self._xrays)

    def __iter__(self) -> Iterator[XRay]:
        for xray in self._xrays:
            self.reads += 1
            yield xray


class CountingFolderSource(FolderSource):
    """A real folder source that counts the items it reads (in this process: ``workers=0``)."""

    reads = 0

    def item_reader(self) -> Callable[[Entry], RawItem]:
        parent = super().item_reader()

        def read(entry: Entry) -> RawItem:
            self.reads += 1
            return parent(entry)

        return read

    def read_item(self, entry: Entry) -> RawItem:
        self.reads += 1
        return super().read_item(entry)


def by_class(xrays: Sequence[XRay]) -> list[XRay]:
    """The radiographs sorted by class, as folder sources yield them."""
    return sorted(xrays, key=lambda x: str(x.label))


def test_fit_reads_each_training_and_validation_item_once(
    test_config: dict[str, Any], phantom_train: list[XRay], phantom_test: list[XRay]
) -> None:
    train, validation = CountingSource(phantom_train), CountingSource(phantom_test)
    Pipeline(test_config).fit(train, validation=validation)
    assert train.reads == len(phantom_train)
    assert validation.reads == len(phantom_test)


def test_predict_reads_each_item_once(
    test_config: dict[str, Any], phantom_train: list[XRay], phantom_test: list[XRay]
) -> None:
    pipeline = Pipeline(test_config).fit(phantom_train)
    source = CountingSource(phantom_test)
    predictions = pipeline.predict(source)
    assert source.reads == len(phantom_test)
    assert [p.id for p in predictions] == [x.id for x in phantom_test]


def test_evaluate_reads_each_item_once(
    test_config: dict[str, Any], phantom_train: list[XRay], phantom_test: list[XRay]
) -> None:
    pipeline = Pipeline(test_config).fit(phantom_train)
    source = CountingSource(phantom_test)
    pipeline.evaluate(source)
    assert source.reads == len(phantom_test)


def test_training_gets_an_indexable_set_whatever_order_the_source_yields(
    test_config: dict[str, Any], phantom_train: list[XRay]
) -> None:
    pipeline = Pipeline(test_config)
    seen: dict[str, Any] = {}
    pipeline.fit(CountingSource(by_class(phantom_train)))
    classifier, detector = pipeline.classifier_, pipeline.detector_
    assert detector is not None
    original_fit = classifier.fit

    def recording_fit(xrays: Any, validation: Any = None) -> Any:
        seen["classifier"] = xrays
        return original_fit(xrays, validation=validation)

    classifier.fit = recording_fit  # type: ignore[method-assign]
    Pipeline(test_config, classifier=classifier, detector=detector).fit(
        CountingSource(by_class(phantom_train))
    )
    received = seen["classifier"]
    assert isinstance(received, PreparedSet)
    assert len(received) == len(phantom_train)
    # Random access: a full permutation is possible every epoch.
    assert received[len(received) - 1].id == by_class(phantom_train)[-1].id


def test_a_folder_is_read_once_per_call(
    tmp_path: Path, test_config: dict[str, Any], phantom_test: list[XRay]
) -> None:
    root = write_phantom_dataset(tmp_path / "data", 4, size=48, seed=3)
    # Class folders carry no lesion boxes, so no detector could learn from them.
    test_config["detector"] = {"name": "test-fixed"}
    pipeline = Pipeline(test_config, workers=0)
    train = CountingFolderSource(root)
    pipeline.fit(train, validation=phantom_test)
    assert train.reads == len(train) == 12
    test = CountingFolderSource(root)
    pipeline.predict(test)
    assert test.reads == len(test)
    pipeline.evaluate(test)
    assert test.reads == 2 * len(test)


def test_a_warm_cache_answers_without_reading_the_files(
    tmp_path: Path,
    test_config: dict[str, Any],
    phantom_train: list[XRay],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Files written a moment ago get no fingerprint (they might change again within the
    # same timestamp tick); these will not.
    monkeypatch.setattr(folder_module, "RACY_SECONDS", 0.0)
    root = write_phantom_dataset(tmp_path / "data", 4, size=48, seed=3)
    config = {**test_config, "preprocessor": {"name": "gaussian-clahe", "output_size": 32}}
    pipeline = Pipeline(config, cache_dir=tmp_path / "cache", workers=0).fit(phantom_train)
    cold_source = CountingFolderSource(root)
    cold = pipeline.predict(cold_source)
    assert cold_source.reads == 12
    assert pipeline.data_stats_.reads == 12
    warm_source = CountingFolderSource(root)
    warm = pipeline.predict(warm_source)
    assert warm_source.reads == 0
    assert pipeline.data_stats_.batch.memo_hits == 12
    assert warm == cold


def test_detections_map_back_through_the_recorded_transform(
    test_config: dict[str, Any], phantom_train: list[XRay], phantom_test: list[XRay]
) -> None:
    config = {**test_config, "detector": {"name": "test-fixed", "x": 8, "y": 8, "size": 8}}
    pipeline = Pipeline(config).fit(phantom_train)
    # The test preprocessor shrinks 64 px phantoms to 32 px: the fixed box doubles.
    (prediction, *_) = pipeline.predict(phantom_test)
    box = prediction.detections[0].box
    assert (box.x, box.y, box.width, box.height) == (16.0, 16.0, 16.0, 16.0)


def test_validation_reads_are_reported_beside_the_training_reads(
    test_config: dict[str, Any], phantom_train: list[XRay], phantom_test: list[XRay]
) -> None:
    pipeline = Pipeline(test_config).fit(phantom_train, validation=phantom_test)
    assert pipeline.data_stats_.batch.items == len(phantom_train)
    assert pipeline.validation_data_stats_.batch.items == len(phantom_test)


@pytest.mark.parametrize("workers", [None, -1, 1.5, True])
def test_workers_must_be_a_whole_number(
    workers: Any, test_config: dict[str, Any], phantom_train: list[XRay]
) -> None:
    with pytest.raises(ConfigurationError, match="workers must be a whole number"):
        Pipeline(test_config, workers=workers).fit(phantom_train)


def test_callable_options_are_wiring_not_configuration(test_config: dict[str, Any]) -> None:
    test_config["classifier"] = {"name": "vgg19", "on_epoch_end": print}
    described = Pipeline(test_config).describe(strict=True)
    assert "on_epoch_end" not in described["classifier"]


def test_predictions_do_not_depend_on_how_the_stream_is_chunked(
    test_config: dict[str, Any],
    phantom_train: list[XRay],
    phantom_test: list[XRay],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipeline = Pipeline(test_config).fit(phantom_train)
    whole = pipeline.predict(phantom_test)
    monkeypatch.setattr(estimator_module, "_CHUNK_ITEMS", 4)
    chunked = pipeline.predict(phantom_test)
    assert len(phantom_test) > 4
    assert chunked == whole
    report = pipeline.evaluate(phantom_test)
    assert report.to_dict()["classification"]["n_images"] == len(phantom_test)


def test_worker_processes_started_from_the_read_ahead_thread_give_the_same_answers(
    tmp_path: Path, test_config: dict[str, Any], phantom_train: list[XRay]
) -> None:
    # predict prepares the next chunk in a thread; with workers, that thread runs the
    # batch runner's process pool. Small chunks make several hand-offs.
    root = write_phantom_dataset(tmp_path / "data", 4, size=48, seed=3)
    # The library's preprocessor: worker processes import it by name (the test suite's
    # own components live in modules a worker process cannot import).
    config = {**test_config, "preprocessor": {"name": "gaussian-clahe", "output_size": 32}}
    pipeline = Pipeline(config, workers=0).fit(phantom_train)
    alone = pipeline.predict(root)
    pipeline.workers = 2
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(estimator_module, "_CHUNK_ITEMS", 5)
        pooled = pipeline.predict(root)
    assert pipeline.data_stats_.workers == 2
    assert pipeline.data_stats_.batch.items == 12
    assert pooled == alone
