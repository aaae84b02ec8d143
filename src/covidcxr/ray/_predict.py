"""Batch inference on Ray Data: a saved pipeline over any source, one row per radiograph.

The driver lists the source (names only, no pixels) and ships the entries; each worker is
an actor that loads the pipeline once, reads its entries itself with the source's
:meth:`~covidcxr.sources.CatalogSource.remote_reader`, and predicts them in batches. The
rows are those :func:`covidcxr.pipeline.write_predictions` writes, plus the item's
``position`` in the source; they are written as partitions into a folder that appears
only when the job has finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

from attrs import frozen

from covidcxr.errors import (
    ConfigurationError,
    CovidCXRError,
    DistributedJobError,
    InvalidImageError,
)
from covidcxr.files import check_output_directory, output_directory
from covidcxr.pipeline import (
    Pipeline,
    model_note,
    prediction_columns,
    prediction_row,
    write_skipped,
)
from covidcxr.plugins import open_source
from covidcxr.pretrained import load_pipeline
from covidcxr.ray._cluster import check_workers, connected, import_ray
from covidcxr.records import Prediction
from covidcxr.sources import CatalogSource, Entry, RawItem, Skipped, decode_item, skip_reason

__all__ = ["SKIPPED", "RayPredictions", "job_error", "open_for_workers", "predict"]

#: The ``status`` of a row for an item that could not be read or decoded: such rows are
#: not written with the predictions but to ``_skipped.csv``, as single-process runs do.
SKIPPED: Final = "skipped"
#: The summary written beside the partitions.
SUMMARY_NAME: Final = "_summary.json"
SKIPPED_NAME: Final = "_skipped.csv"

RayFormat = Literal["parquet", "csv", "jsonl"]
_FORMATS: Final = ("parquet", "csv", "jsonl")


@frozen
class RayPredictions:
    """What :func:`predict` wrote.

    Attributes
    ----------
    output
        The folder of partitions (``*.parquet``, ``*.csv`` or ``*.json`` files, JSON Lines),
        with ``_summary.json``, ``_skipped.csv`` when items were skipped, and covidcxr's
        hidden marker ``.covidcxr-output.json`` (readers of the folder as one table, such
        as pyarrow's datasets, skip names starting with ``_`` or ``.``).
    format
        ``"parquet"``, ``"csv"`` or ``"jsonl"``.
    n_images
        Rows written: one per radiograph predicted.
    skipped
        The items that could not be read or decoded, with the reasons.
    workers
        The actors that predicted.
    seconds
        Wall time of the job, from listing to the folder in place.
    """

    output: Path
    format: str
    n_images: int
    skipped: tuple[Skipped, ...]
    workers: int
    seconds: float


# -- the worker side ----------------------------------------------------------------------


def _model_payload(model: str | os.PathLike[str]) -> tuple[str, Any]:
    """How an actor gets the model: a saved folder's files, or a shipped model's name."""
    folder = Path(model)
    if folder.is_dir():
        files = {
            path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*"))
            if path.is_file()
        }
        return "files", files
    return "shipped", os.fspath(model)


def _load_payload(payload: tuple[str, Any]) -> Pipeline:
    kind, value = payload
    if kind == "shipped":
        return load_pipeline(value)
    with tempfile.TemporaryDirectory(prefix="covidcxr-model-") as folder:
        for name, data in value.items():
            target = Path(folder, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return Pipeline.load(folder)


def _columns(classes: Sequence[str], *, severity: bool, note: bool) -> list[tuple[str, str]]:
    """The columns of ``write_predictions``, with the item's position first.

    ``detections`` is JSON text here: the same text in every format and every partition
    (a partition with no lesion at all would otherwise give its list column another type).
    """
    columns = [
        (name, "string" if kind == "detections" else kind)
        for name, kind in prediction_columns(classes, severity=severity, note=note)
    ]
    return [("position", "int"), *columns, ("error_source", "string")]  # the last: not written


def _table_row(
    prediction: Prediction, classes: Sequence[str], *, severity: bool, note: str | None
) -> dict[str, Any]:
    """A prediction as a row of a Ray partition.

    The local table's row, with its detections as JSON text: empty, as in a local CSV,
    for a radiograph the gate rejected.
    """
    row = prediction_row(prediction, classes, severity=severity, note=note)
    if row["detections"] is not None:  # None: rejected, the detector never looked
        row["detections"] = json.dumps(row["detections"])
    return row


class _Predictor:
    """A Ray Data actor: loads the pipeline once, then predicts batches of entries."""

    def __init__(
        self,
        *,
        model: tuple[str, Any],
        reader: Callable[[Entry], RawItem],
        decode_options: Mapping[str, int],
        severity: bool,
        on_error: str = "skip",
    ) -> None:
        import pyarrow as pa  # noqa: PLC0415 - installed with ray[data]

        self.pipeline = _load_payload(model)
        self.reader = reader
        self.decode_options = dict(decode_options)
        self.severity = severity
        self.on_error = on_error
        self.classes = self.pipeline.classes_
        self.note = model_note(self.pipeline.training_data_)
        kinds = {"int": pa.int64(), "float": pa.float64(), "string": pa.string()}
        self.schema = pa.schema(
            [
                (name, kinds[kind])
                for name, kind in _columns(
                    self.classes, severity=severity, note=self.note is not None
                )
            ]
        )

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa  # noqa: PLC0415

        positions = batch.column("position").to_pylist()
        entries = [pickle.loads(data) for data in batch.column("entry").to_pylist()]  # noqa: S301 - our own entries
        ids = batch.column("id").to_pylist()
        rows: list[dict[str, Any] | None] = [None] * len(entries)
        xrays, places = [], []
        for place, (entry, item_id) in enumerate(zip(entries, ids, strict=True)):
            try:
                xrays.append(decode_item(self.reader(entry), **self.decode_options))
            except InvalidImageError as exc:
                if self.on_error == "raise":
                    # Stops the job; Ray carries the error to the driver as the cause of
                    # its own, and job_error raises it as itself.
                    raise
                rows[place] = {
                    "id": item_id,
                    "status": SKIPPED,
                    "reason": skip_reason(exc, item_id),
                    "error_source": exc.source,
                }
                continue
            places.append(place)
        predictions = self.pipeline.predict(xrays) if xrays else []
        for place, prediction in zip(places, predictions, strict=True):
            rows[place] = _table_row(
                prediction, self.classes, severity=self.severity, note=self.note
            )
        table = [
            {**dict.fromkeys(self.schema.names), **(row or {}), "position": position}
            for row, position in zip(rows, positions, strict=True)
        ]
        return pa.Table.from_pylist(table, schema=self.schema)


# -- the driver side ----------------------------------------------------------------------


def open_for_workers(
    source: object, options: Mapping[str, Any] | None
) -> tuple[CatalogSource, Callable[[Entry], RawItem]]:
    """The source to list here, and the reader its workers read the entries with.

    Raises
    ------
    ConfigurationError
        If the workers cannot read it (not a catalogued source, or one with no
        :meth:`~covidcxr.sources.CatalogSource.remote_reader`).
    """
    if isinstance(source, str | os.PathLike):
        opened: object = open_source(source, **dict(options or {}))
    elif options:
        raise ConfigurationError("source options apply to a path or URI, not to a source object")
    else:
        opened = source
    if not isinstance(opened, CatalogSource):
        raise ConfigurationError(
            f"{type(opened).__name__} cannot be read by Ray workers: distributed runs need a "
            "catalogued source (a folder, a zip archive, a cos:// prefix or a plugin source "
            "built on covidcxr.sources.CatalogSource) whose items the workers read themselves"
        )
    reader = opened.remote_reader()
    if reader is None:
        raise ConfigurationError(
            f"{opened!r} cannot be read by Ray workers (an archive opened from a stream or "
            "downloaded from COS): pass a path the workers can open, or a folder"
        )
    return opened, reader


@contextlib.contextmanager
def _original_worker_errors(data: Any) -> Iterator[bool]:
    """Let a worker's own exception reach the driver, not Ray Data's wrapper of it.

    Ray Data wraps an exception raised in a map function in a ``UserCodeException`` whose
    cause does not cross processes, so an unreadable item's ``InvalidImageError`` (with
    ``on_error="raise"``) would arrive as text. Its ``raise_original_map_exception``
    option keeps the original; it is set for this job only. Yields whether this Ray has
    it (older ones: the workers report the item as a row, and the driver raises once the
    job is done).
    """
    context = data.DataContext.get_current()
    if not hasattr(context, "raise_original_map_exception"):
        yield False
        return
    before = context.raise_original_map_exception
    context.raise_original_map_exception = True
    try:
        yield True
    finally:
        context.raise_original_map_exception = before


def job_error(exc: BaseException) -> BaseException:
    """The error a failed Ray job raises: the covidcxr error inside it, or a plain account."""
    seen: BaseException = exc
    for _ in range(16):  # Ray wraps a worker's exception (RayTaskError, UserCodeException)
        if isinstance(seen, CovidCXRError):
            return seen
        cause: object = getattr(seen, "cause", None)
        if cause is None:
            cause = seen.__cause__
        if not isinstance(cause, BaseException):
            break
        seen = cause
    return DistributedJobError(f"the Ray job failed: {type(exc).__name__}: {exc}")


def _refuse_failures(failed: Sequence[Mapping[str, Any]], on_error: str) -> None:
    """With ``on_error="raise"``, raise the first unreadable item's error as the worker met it.

    Where the workers' own errors cannot reach the driver (see
    :func:`_original_worker_errors`), the job runs to its end and this raises then.
    """
    if not failed or on_error != "raise":
        return
    source = failed[0]["error_source"]
    message = str(failed[0]["reason"]).removeprefix(f"{source}: ")
    raise InvalidImageError(message, source)


def predict(
    model: str | os.PathLike[str],
    source: object,
    output: str | os.PathLike[str],
    *,
    format: RayFormat = "parquet",
    workers: int | None = None,
    address: str | None = None,
    batch_size: int = 32,
    overwrite: bool = False,
    source_options: Mapping[str, Any] | None = None,
    init_options: Mapping[str, Any] | None = None,
) -> RayPredictions:
    """Predict every radiograph of a source on a Ray cluster, into a folder of partitions.

    Parameters
    ----------
    model
        A saved pipeline folder (its files are sent to the workers through Ray's object
        store, so they need no shared disk) or the name of a shipped model.
    source
        A path or URI for :func:`covidcxr.open_source` (folder, glob, ``.zip``,
        ``cos://bucket/prefix``, a plugin's scheme), or a
        :class:`~covidcxr.sources.CatalogSource`. Its items are listed here and read by
        the workers (:meth:`~covidcxr.sources.CatalogSource.remote_reader`); a COS
        source's workers use their own ``COS_*`` environment variables for credentials.
    output
        The folder to write: partitions of one row per radiograph with the columns of
        :func:`~covidcxr.pipeline.write_predictions` (``detections`` as JSON text), plus
        ``position``, the item's place in the source's catalogue (its ``entries``). It
        appears only once every row is written. An existing predictions folder is
        replaced only with ``overwrite``; a folder holding anything else (your files) is
        never replaced (:func:`covidcxr.files.check_output_directory`).
    format
        ``"parquet"``, ``"csv"`` or ``"jsonl"``.
    workers
        Actors, each loading the pipeline once and using one CPU; ``None``: one per CPU
        of the cluster.
    address
        The cluster (see :func:`covidcxr.ray.connected`); by default the one connected,
        ``RAY_ADDRESS``, or a local cluster started for the call.
    batch_size
        Radiographs per call of an actor.
    overwrite
        Replace an existing ``output`` folder.
    source_options
        Passed to :func:`covidcxr.open_source` (``layout``, ``on_error`` ...). With
        ``on_error="skip"`` (or a source opened so) unreadable items are reported in
        ``_skipped.csv`` and the result's ``skipped``, with what the source left out
        itself (by its layout, or found unreadable by an earlier pass over it); with
        ``"raise"``, the first one a worker meets stops the job with its
        :class:`~covidcxr.InvalidImageError` and nothing is written (the workers read in
        parallel, so it need not be the first in the source). Either way an item is read
        once, never retried.
    init_options
        Passed to :func:`ray.init` when a cluster is started or connected here.

    Returns
    -------
    RayPredictions
        Where the rows went and how many there are.

    Raises
    ------
    OutputExistsError
        If ``output`` exists and ``overwrite`` is false, or it holds files covidcxr did
        not write (checked before anything runs, and again before the folder is put in
        place: a folder that appeared meanwhile is not replaced either).
    ConfigurationError
        For a source the workers cannot read, an unknown format, a bad ``workers``, or
        Ray not installed.
    DistributedJobError
        If the job failed for a reason other than a covidcxr error (which is raised as
        itself).

    Notes
    -----
    An actor that dies (its process killed, its node lost) is restarted by Ray and its
    unfinished batches are run again; rows are written only from finished batches, so
    every radiograph appears exactly once.
    """
    started = time.perf_counter()
    if format not in _FORMATS:
        raise ConfigurationError(f"format must be one of {', '.join(_FORMATS)}, got {format!r}")
    count = check_workers(workers)
    check_workers(batch_size, "batch_size")  # the same rule: a whole number >= 1
    if batch_size is None:
        raise ConfigurationError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    target = Path(output).expanduser().absolute()
    # Before anything runs; output_directory checks again when the folder is swapped in.
    check_output_directory(target, "predictions", overwrite=overwrite)
    dataset, reader = open_for_workers(source, source_options)
    pipeline = load_pipeline(model)  # fails here, before the cluster, on a bad model
    severity = pipeline.measures_severity
    # Positions are places in the whole catalogue; entries an earlier pass over the source
    # found unreadable are not read again, and are reported with the rest it left out.
    pending = {entry.name for entry in dataset.pending_entries()}
    rows = [
        {"position": index, "id": dataset.record_id(entry), "entry": pickle.dumps(entry)}
        for index, entry in enumerate(dataset.entries)
        if entry.name in pending
    ]
    decode_options = dataset.decode_options
    with (
        output_directory(target, "predictions", overwrite=overwrite) as staging,
        connected(address, **dict(init_options or {})) as ray,
    ):
        data = import_ray("ray.data")
        actors = count or max(1, int(ray.cluster_resources().get("CPU", 1)))
        blocks = max(1, min(len(rows), -(-len(rows) // batch_size)))
        try:
            with _original_worker_errors(data) as carried:
                results = (
                    data.from_items(rows, override_num_blocks=blocks)
                    .map_batches(
                        _Predictor,
                        fn_constructor_kwargs={
                            "model": _model_payload(model),
                            "reader": reader,
                            "decode_options": decode_options,
                            "severity": severity,
                            # Without the original errors, stop at the end (below).
                            "on_error": dataset.on_error if carried else "skip",
                        },
                        batch_size=batch_size,
                        batch_format="pyarrow",
                        compute=data.ActorPoolStrategy(size=actors),
                        # Ray Data restarts a dead actor and runs its unfinished batches
                        # again (max_restarts=-1, max_task_retries=-1 are its defaults).
                        num_cpus=1,
                    )
                    .materialize()
                )
            failed = results.filter(lambda row: row["status"] == SKIPPED).take_all()
            failed.sort(key=lambda row: int(row["position"]))
            _refuse_failures(failed, dataset.on_error)
            predicted = results.filter(lambda row: row["status"] != SKIPPED).drop_columns(
                ["error_source"]
            )
            writer = {
                "parquet": predicted.write_parquet,
                "csv": predicted.write_csv,
                "jsonl": predicted.write_json,
            }[format]
            writer(str(staging))
        except CovidCXRError:
            raise
        except Exception as exc:
            raise job_error(exc) from exc
        found = tuple(Skipped(str(row["id"]), str(row["reason"])) for row in failed)
        skipped = dataset.skipped + found
        if skipped:
            write_skipped(skipped, staging / SKIPPED_NAME)
        summary = {
            "format": format,
            "n_images": len(rows) - len(found),
            "n_skipped": len(skipped),
            "classes": list(pipeline.classes_),
            "workers": actors,
            "source": repr(dataset),
            "seconds": round(time.perf_counter() - started, 3),
        }
        (staging / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    return RayPredictions(
        output=target,
        format=format,
        n_images=len(rows) - len(found),
        skipped=skipped,
        workers=actors,
        seconds=time.perf_counter() - started,
    )
