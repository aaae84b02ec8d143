"""Distributed preprocessing into the library's cache, so that later runs read warm data."""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import frozen

from covidcxr.errors import ConfigurationError, CovidCXRError
from covidcxr.preprocess._batch import fill_cache
from covidcxr.protocols import Preprocessor
from covidcxr.ray._cluster import check_workers, connected, import_ray
from covidcxr.ray._predict import job_error, open_for_workers
from covidcxr.sources import Entry, Skipped

__all__ = ["RayPreprocessed", "preprocess"]


@frozen
class RayPreprocessed:
    """What :func:`preprocess` did.

    Attributes
    ----------
    cache_dir
        The cache folder.
    n_items
        Items of the source.
    written
        Results the workers computed and stored.
    cached
        Items whose result was in the cache already (not computed again).
    uncachable
        Items preprocessed but not stored (metadata the cache cannot hold, a full disk).
    skipped
        Unreadable items, with the reasons.
    seconds
        Wall time.
    """

    cache_dir: Path
    n_items: int
    written: int
    cached: int
    uncachable: int
    skipped: tuple[Skipped, ...]
    seconds: float


def _fill(
    batch: Any,
    *,
    reader: Any,
    preprocessor: Preprocessor,
    cache_dir: str,
    decode_options: Mapping[str, int],
) -> Any:
    import pyarrow as pa  # noqa: PLC0415 - installed with ray[data]

    entries: list[Entry] = [pickle.loads(data) for data in batch.column("entry").to_pylist()]  # noqa: S301 - our own entries
    fingerprints = batch.column("fingerprint").to_pylist()
    outcomes = fill_cache(
        zip(entries, fingerprints, strict=True), reader, preprocessor, cache_dir, decode_options
    )
    return pa.table(
        {
            "position": batch.column("position"),
            "id": batch.column("id"),
            "outcome": [outcome for outcome, _ in outcomes],
            "reason": [reason for _, reason in outcomes],
        }
    )


def preprocess(
    source: object,
    preprocessor: Preprocessor,
    cache_dir: str | os.PathLike[str],
    *,
    workers: int | None = None,
    address: str | None = None,
    batch_size: int = 64,
    source_options: Mapping[str, Any] | None = None,
    init_options: Mapping[str, Any] | None = None,
) -> RayPreprocessed:
    """Preprocess a source on a Ray cluster into the preprocessing cache.

    A later :class:`~covidcxr.Pipeline` with ``cache_dir=`` the same folder and the same
    preprocessor (``Pipeline.fit``, ``predict``, ``evaluate``, or
    :func:`covidcxr.ray.fit`) then reads the prepared images instead of decoding and
    preprocessing them; for a local folder, unchanged files are recognised by their status
    alone, without being read. The workers must all see ``cache_dir`` (a local cluster,
    or a shared file system).

    Parameters
    ----------
    source
        As for :func:`covidcxr.ray.predict`.
    preprocessor
        The preprocessor (``pipeline.preprocessor_`` of a fitted pipeline, or the one a
        configuration names; it must pickle).
    cache_dir
        The cache folder.
    workers
        Concurrent tasks; ``None``: one per CPU of the cluster.
    address, init_options
        As for :func:`covidcxr.ray.predict`.
    batch_size
        Items per task; each task seals its results into the cache when it ends.
    source_options
        As for :func:`covidcxr.ray.predict`; unreadable items are always reported in
        ``skipped`` (an item is read once, never retried).

    Returns
    -------
    RayPreprocessed
        Counts of written, already cached, uncachable and skipped items.

    Raises
    ------
    ConfigurationError
        For a source the workers cannot read, a bad ``workers`` or ``batch_size``, or Ray
        not installed.
    DistributedJobError
        If the job failed for a reason outside covidcxr.
    """
    started = time.perf_counter()
    count = check_workers(workers)
    check_workers(batch_size, "batch_size")
    folder = Path(cache_dir).expanduser().absolute()
    folder.mkdir(parents=True, exist_ok=True)
    dataset, reader = open_for_workers(source, source_options)
    entries = list(dataset.pending_entries())
    if not entries:
        raise ConfigurationError(f"{dataset!r} has no items to preprocess")
    rows = [
        {
            "position": index,
            "id": dataset.record_id(entry),
            "entry": pickle.dumps(entry),
            "fingerprint": dataset.fingerprint(entry),
        }
        for index, entry in enumerate(entries)
    ]
    decode_options = dataset.decode_options
    with connected(address, **dict(init_options or {})) as ray:
        data = import_ray("ray.data")
        tasks = count or max(1, int(ray.cluster_resources().get("CPU", 1)))
        blocks = max(1, min(len(rows), -(-len(rows) // batch_size)))
        try:
            results = (
                data.from_items(rows, override_num_blocks=blocks)
                .map_batches(
                    _fill,
                    fn_kwargs={
                        "reader": reader,
                        "preprocessor": preprocessor,
                        "cache_dir": str(folder),
                        "decode_options": decode_options,
                    },
                    batch_size=batch_size,
                    batch_format="pyarrow",
                    compute=data.TaskPoolStrategy(size=tasks),
                    num_cpus=1,  # a lost worker's task is run again; an error is not
                )
                .take_all()
            )
        except CovidCXRError:
            raise
        except Exception as exc:
            raise job_error(exc) from exc
    results.sort(key=lambda row: int(row["position"]))
    outcomes = [str(row["outcome"]) for row in results]
    skipped = tuple(
        # The reason without the path it starts with, which stands beside it.
        Skipped(str(row["id"]), str(row["reason"]).removeprefix(f"{row['id']}: "))
        for row in results
        if row["outcome"] == "skipped"
    )
    return RayPreprocessed(
        cache_dir=folder,
        n_items=len(rows),
        written=outcomes.count("written"),
        cached=outcomes.count("cached"),
        uncachable=outcomes.count("uncachable"),
        skipped=skipped,
        seconds=time.perf_counter() - started,
    )
