"""``Pipeline.fit`` on a Ray cluster: Ray Train's TensorFlow trainer, data-parallel.

:func:`fit` runs one training process per Ray worker under
:class:`ray.train.tensorflow.TensorflowTrainer`. Ray sets ``TF_CONFIG`` on each, and
each builds a :class:`tf.distribute.MultiWorkerMirroredStrategy` under which the
classifier trains data-parallel (see :mod:`covidcxr.classify._distributed` for why that
is a ``strategy.run`` step rather than ``keras.Model.fit``). Rank 0 reports a
:class:`ray.train.Checkpoint` after every epoch and the fitted pipeline at the end.
"""

# Ray and TensorFlow are imported inside functions on purpose: nothing in covidcxr imports
# Ray unless a function of covidcxr.ray is called.
# ruff: noqa: PLC0415

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from covidcxr.classify._distributed import DistributedTraining, training_strategy
from covidcxr.classify._training import CHECKPOINT_FILENAME
from covidcxr.classify._vgg19 import VGG19Classifier
from covidcxr.errors import ConfigurationError, CovidCXRError, DistributedJobError
from covidcxr.pipeline import Pipeline
from covidcxr.ray._cluster import check_workers, connected, import_ray

__all__ = ["fit"]

#: The Ray Train run's name inside ``checkpoint_dir``: the same folder, the same run.
RUN_NAME: Final = "covidcxr-fit"
_CLASSIFIER_FOLDER: Final = "classifier"
_PIPELINE_FOLDER: Final = "pipeline"


def _check_data_parallel(pipeline: Pipeline) -> None:
    """Refuse a classifier that would train whole on every worker instead of data-parallel."""
    given = pipeline.classifier
    if given is not None:
        if isinstance(given, VGG19Classifier):
            return
        what = type(given).__name__
    else:
        name = pipeline.config.classifier.name
        if name == VGG19Classifier.registered_name:
            return
        what = repr(name)
    raise ConfigurationError(
        f"covidcxr.ray.fit trains the vgg19 classifier data-parallel, and this pipeline's "
        f"classifier is {what}, which does not train under a tf.distribute strategy: "
        "train it with Pipeline.fit instead"
    )


def _shippable(data: Any, what: str, ray: Any) -> Any:
    """``data`` as the workers receive it: a path or URI as such, anything else by reference.

    Paths and URIs are opened on each worker (relative paths made absolute first:
    workers do not share the caller's working directory); sources and radiographs go
    through Ray's object store once, never inside a task's arguments.
    """
    if data is None:
        return None
    if isinstance(data, str | os.PathLike):
        return _absolute(data)
    if (
        isinstance(data, Sequence)
        and data
        and all(isinstance(item, str | os.PathLike) for item in data)
    ):
        return [_absolute(item) for item in data]
    if isinstance(data, Iterator):
        data = list(data)
    if not isinstance(data, Iterable):
        raise ConfigurationError(
            f"{what} must be a dataset source, a path or URI, or radiographs; got "
            f"{type(data).__name__}"
        )
    return _put(data, what, ray)


def _put(value: Any, what: str, ray: Any) -> Any:
    """``value`` in Ray's object store, or a clear error when it cannot be pickled."""
    try:
        return ray.put(value)
    except TypeError:  # "Could not serialize" (an open client, a lock): its text has the repr
        raise ConfigurationError(
            f"covidcxr.ray.fit: {what} (a {type(value).__name__}) cannot be sent to the Ray "
            "workers, as it cannot be pickled; pass its path or URI instead, which each "
            "worker opens itself"
        ) from None


def _absolute(path: str | os.PathLike[str]) -> str:
    text = os.fspath(path)
    return text if "://" in text else str(Path(text).resolve())


def _received(data: Any) -> Any:
    ray = import_ray()
    return ray.get(data) if isinstance(data, ray.ObjectRef) else data


def _copy_checkpoint(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / CHECKPOINT_FILENAME, target / CHECKPOINT_FILENAME)


def _leave_lung_checkpoint_to_rank_0(pipeline: Pipeline) -> None:
    """Train this rank's lung stage without the checkpoint folder rank 0 holds.

    Every rank fits the same lung U-Net (same data, same seed); a training process holds
    its checkpoint folder while it trains (:func:`~covidcxr.files.checkpoint_lock`), so
    ranks sharing a file system would refuse each other. Only rank 0 checkpoints it.
    """
    stage = pipeline.lungs
    if stage is not None:
        if not stage.fitted and stage.segmenter.checkpoint_dir is not None:
            stage.segmenter.set_params(checkpoint_dir=None)  # this rank's own copy
        return
    lungs = pipeline.config.lungs
    if lungs is None:
        return
    segmenter = lungs.get("segmenter")
    if isinstance(segmenter, Mapping) and segmenter.get("checkpoint_dir") is not None:
        options = {key: value for key, value in segmenter.items() if key != "checkpoint_dir"}
        pipeline.config = attrs.evolve(pipeline.config, lungs={**lungs, "segmenter": options})


def _train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: fit the pipeline with the classifier under MWMS.

    Every worker opens the data itself and runs ``Pipeline.fit``; the classifier's epochs
    are data-parallel steps (identical weights on every worker); the lung stage, the input
    gate and calibration are fitted by every worker on its own copy, and the detector by
    rank 0 alone (the others drop it). Rank 0's pipeline is the result.
    """
    import tensorflow as tf

    ray_train = import_ray("ray.train")
    rank = ray_train.get_context().get_world_rank()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    pipeline: Pipeline = _received(config["pipeline"])
    train = _received(config["train"])
    validation = _received(config["validation"])
    if rank != 0:
        # Not data-parallel and not needed to train the classifier: left to rank 0.
        pipeline.detector = None
        pipeline.config = attrs.evolve(pipeline.config, detector=None)
        _leave_lung_checkpoint_to_rank_0(pipeline)
    with tempfile.TemporaryDirectory(prefix=f"covidcxr-fit-{rank}-") as scratch:
        local = Path(scratch) / _CLASSIFIER_FOLDER
        restored = ray_train.get_checkpoint()
        if restored is not None:
            with restored.as_directory() as directory:
                saved = Path(directory) / _CLASSIFIER_FOLDER
                if (saved / CHECKPOINT_FILENAME).exists():
                    _copy_checkpoint(saved, local)

        def report(epoch: int, logs: Mapping[str, float]) -> None:
            metrics = {"epoch": epoch, **{key: float(value) for key, value in logs.items()}}
            if rank != 0:
                ray_train.report(metrics, checkpoint=None)
                return
            with tempfile.TemporaryDirectory(prefix="covidcxr-epoch-") as staging:
                _copy_checkpoint(local, Path(staging) / _CLASSIFIER_FOLDER)
                checkpoint = ray_train.Checkpoint.from_directory(staging)
                ray_train.report(metrics, checkpoint=checkpoint)

        training = DistributedTraining(strategy, checkpoint_dir=local, on_epoch_end=report)
        with training_strategy(training):
            pipeline.fit(train, validation)
        epochs = len(next(iter(pipeline.history_.values()), []))
        final = {"epoch": epochs, "done": 1}
        if rank != 0:
            ray_train.report(final, checkpoint=None)
            return
        with tempfile.TemporaryDirectory(prefix="covidcxr-result-") as staging:
            pipeline.save(Path(staging) / _PIPELINE_FOLDER)
            if (local / CHECKPOINT_FILENAME).exists():
                _copy_checkpoint(local, Path(staging) / _CLASSIFIER_FOLDER)
            ray_train.report(final, checkpoint=ray_train.Checkpoint.from_directory(staging))


def _worker_error(error: BaseException) -> tuple[int | None, BaseException]:
    """The first worker's rank and exception in Ray Train's ``error``, unwrapped."""
    failures: Mapping[int, BaseException] = getattr(error, "worker_failures", None) or {}
    rank, cause = next(iter(sorted(failures.items())), (None, error.__cause__ or error))
    # A worker's exception arrives as a RayTaskError wrapping it, or as a class deriving
    # from both; either way the original is what the caller should see.
    original = getattr(cause, "cause", None)
    if isinstance(original, BaseException):
        cause = original
    return rank, cause


@contextlib.contextmanager
def _storage(checkpoint_dir: str | os.PathLike[str] | None) -> Iterator[str]:
    if checkpoint_dir is not None:
        yield _absolute(checkpoint_dir)
        return
    with tempfile.TemporaryDirectory(prefix="covidcxr-ray-fit-") as directory:
        yield directory


def fit(
    pipeline: Pipeline,
    train: Any,
    validation: Any = None,
    *,
    workers: int = 2,
    address: str | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    max_failures: int = 0,
    use_gpu: bool = False,
    **init_options: Any,
) -> Pipeline:
    """Fit ``pipeline`` on a Ray cluster, its classifier data-parallel over ``workers``.

    The same inputs as :meth:`Pipeline.fit <covidcxr.Pipeline.fit>`, and a fitted
    pipeline like the one it returns (same classes, saved and loaded the same way).
    Ray Train's :class:`~ray.train.tensorflow.TensorflowTrainer` starts ``workers``
    processes; each builds a :class:`tf.distribute.MultiWorkerMirroredStrategy` from the
    ``TF_CONFIG`` Ray sets, opens the data itself and runs ``Pipeline.fit`` with the
    :class:`~covidcxr.VGG19Classifier` training data-parallel: each worker computes the
    gradients of its share of every batch, the strategy's collective all-reduce sums
    them, and every worker applies the same update, so all end with identical weights
    and, with dropout 0, with the weights single-process training gives (to rounding).
    A batch is ``batch_size`` images across all workers, as in single-process training.

    Keras 3's own ``Model.fit`` cannot run under this strategy with two or more workers
    (keras-team/keras#20585), so the classifier's epochs run as ``strategy.run`` steps
    instead of ``Model.fit`` (what stays per worker: batch normalisation's batch
    statistics; its moving averages are averaged every epoch). The frozen-backbone
    recipe's feature extraction and each batch's input pipeline run on every worker for
    the whole data set; the backbone's forward and backward passes of the trained blocks
    are what is divided. The lung segmenter, the input gate and calibration are fitted
    by every worker on the same data (cheap, or needed before the classifier's crops);
    the lesion detector by rank 0 alone; rank 0's pipeline is the result.

    Parameters
    ----------
    pipeline
        The pipeline to fit (as configured; it is not changed: a fitted copy is
        returned). Its classifier must be the ``vgg19`` classifier.
    train, validation
        As for :meth:`Pipeline.fit <covidcxr.Pipeline.fit>`. Paths and URIs are opened
        by each worker (on a cluster, every node must reach them); sources and
        radiographs are put in Ray's object store once and read from there by each
        worker. Credentials belong in the nodes' environment, not in a source object.
    workers
        Training processes (Ray Train workers), one CPU (or GPU) each.
    address
        The Ray cluster, as for :func:`covidcxr.ray.connected`; by default the one
        already connected, or a local cluster started for the call.
    checkpoint_dir
        Where Ray Train keeps the run (``checkpoint_dir/covidcxr-fit``): rank 0
        reports a :class:`ray.train.Checkpoint` with the classifier's state after every
        epoch, and the fitted pipeline at the end. Calling again with the same folder,
        pipeline and data resumes from the last epoch reported, and ends with the
        model an uninterrupted run gives; other parameters or data are refused
        (:class:`~covidcxr.errors.ConfigurationError`). On a multi-node cluster it must
        be storage every node reaches (a shared file system, or an ``s3://``/``gs://``
        URI). ``None``: a temporary folder, removed at the end (no resuming).
    max_failures
        How many times Ray Train restarts the workers after a failure, each time
        resuming from the last checkpoint.
    use_gpu
        One GPU per worker.
    **init_options
        For :func:`ray.init` when a local cluster is started (``num_cpus`` ...).

    Returns
    -------
    Pipeline
        The fitted pipeline, as :meth:`Pipeline.load <covidcxr.Pipeline.load>` reads
        it (with ``pipeline``'s ``progress``, ``cache_dir`` and ``workers``);
        ``history_`` holds the classifier's epochs. ``data_stats_`` is not carried
        back: the reads happened on the workers. ``pipeline.workers`` (preprocessing
        processes) and ``cache_dir`` apply on each Ray worker as they would here, so a
        ``cache_dir`` every node reaches lets a second run skip preprocessing.

    Raises
    ------
    ConfigurationError
        If ``workers`` is not a whole number >= 1, the classifier is not ``vgg19``, or
        Ray is not installed.
    DistributedJobError
        If a worker fails for any reason other than a covidcxr error (which is raised
        as itself); ``__cause__`` is Ray Train's error.

    Examples
    --------
    >>> import covidcxr, covidcxr.ray
    >>> pipeline = covidcxr.Pipeline({"classifier": {"name": "vgg19", "input_size": 64,
    ...                               "weights": None, "epochs": 10}})
    >>> fitted = covidcxr.ray.fit(pipeline, "data/train", "data/val", workers=4,
    ...                           checkpoint_dir="runs/vgg19")  # doctest: +SKIP
    >>> fitted.save("models/vgg19")  # doctest: +SKIP
    """
    count = check_workers(workers)
    if count is None:
        raise ConfigurationError("covidcxr.ray.fit: workers must be a whole number >= 1")
    retries: object = max_failures  # checked here: callers may pass anything
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigurationError(
            f"covidcxr.ray.fit: max_failures must be a whole number >= 0, got {max_failures!r}"
        )
    if train is None:
        raise ConfigurationError("covidcxr.ray.fit: train is required")
    _check_data_parallel(pipeline)
    ray_train = import_ray("ray.train")
    tensorflow_train = import_ray("ray.train.tensorflow")
    with connected(address, **init_options) as ray, _storage(checkpoint_dir) as storage:
        config = {
            "pipeline": _put(pipeline, "the pipeline", ray),
            "train": _shippable(train, "train", ray),
            "validation": _shippable(validation, "validation", ray),
        }
        trainer = tensorflow_train.TensorflowTrainer(
            _train_worker,
            train_loop_config=config,
            scaling_config=ray_train.ScalingConfig(num_workers=count, use_gpu=use_gpu),
            run_config=ray_train.RunConfig(
                name=RUN_NAME,
                storage_path=storage,
                failure_config=ray_train.FailureConfig(max_failures=max_failures),
                checkpoint_config=ray_train.CheckpointConfig(num_to_keep=2),
            ),
        )
        try:
            result = trainer.fit()
        except ray_train.TrainingFailedError as error:
            rank, cause = _worker_error(error)
            if isinstance(cause, CovidCXRError):
                raise cause from error
            where = f"worker {rank}" if rank is not None else "the Ray Train run"
            lines = str(cause).strip().splitlines()
            resume = (
                f"; calling again with checkpoint_dir={os.fspath(checkpoint_dir)!r} resumes "
                "from the last epoch"
                if checkpoint_dir is not None
                else ""
            )
            raise DistributedJobError(
                f"covidcxr.ray.fit: training failed on {where}: {type(cause).__name__}: "
                f"{lines[-1] if lines else ''}{resume}"
            ) from error
        if result.checkpoint is None:  # pragma: no cover - rank 0 always reports one
            raise DistributedJobError("covidcxr.ray.fit: the run reported no result")
        with result.checkpoint.as_directory() as directory:
            return Pipeline.load(
                Path(directory) / _PIPELINE_FOLDER,
                progress=pipeline.progress,
                cache_dir=pipeline.cache_dir,
                workers=pipeline.workers,
            )
