"""Soft-voting ensembles: the mean of the probabilities of classifiers trained alike.

Why: two VGG19 models trained on the same data with the same recipe, differing only in their
seed (initialisation, dropout masks, shuffling, augmentation), disagree on a share of the
images, and their test accuracy varies from seed to seed. Averaging the probabilities of a
few such models cancels much of that variance: the ensemble depends less on the luck of
one seed, and in the library's classifier study it was more accurate than its average
member (the training docs give the figures).

What it costs: ``n_members`` times the training (each member trains in turn on the same
data, its frozen-backbone features included), ``n_members`` times the prediction and
``n_members`` times the saved model's size. Nothing is shared between members but the data.

An :class:`EnsembleClassifier` is one :class:`~covidcxr.Classifier`: a
:class:`~covidcxr.Pipeline` gates its input once, calibrates the averaged probabilities
once (on the validation radiographs) and saves it as one file, so a pipeline with
``[classifier] name = "ensemble"`` is used, saved and loaded like any other. What needs
one network (:class:`~covidcxr.detect.GradCAMDetector`, :func:`covidcxr.runtime.export`,
:func:`covidcxr.ray.fit`) refuses an ensemble with a
:class:`~covidcxr.errors.ConfigurationError`; use one of its
:attr:`~EnsembleClassifier.members_` for Grad-CAM.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, NoReturn, Self, cast

import numpy as np
from attrs import frozen
from numpy.typing import NDArray

from covidcxr._model_archive import (
    _DAMAGED_ARCHIVE_ERRORS,
    METADATA_MEMBER,
    ArchiveFormat,
    check_format,
    check_params,
    is_archive_of,
)
from covidcxr._params import Estimator
from covidcxr._plain import option_value, plain_data
from covidcxr._values import is_whole
from covidcxr._version import __version__
from covidcxr.classify._inputs import reiterable
from covidcxr.errors import (
    ComponentOutputError,
    ConfigurationError,
    CovidCXRError,
    ModelFormatError,
    OutputExistsError,
    UnknownNameError,
)
from covidcxr.files import atomic_write, remove_stale_files, staged_file
from covidcxr.plugins import available_classifiers, check_options, create_classifier
from covidcxr.protocols import (
    Classifier,
    EpochCallback,
    Persistable,
    RecordsPreprocessing,
    ReportsEpochs,
)
from covidcxr.records import XRay

__all__ = ["FORMAT", "EnsembleClassifier"]

_log = logging.getLogger(__name__)

#: The archive a saved ensemble is: ``covidcxr.json`` and each member's own saved model.
FORMAT: Final = ArchiveFormat("covidcxr.ensemble-classifier", 1, "covidcxr ensemble classifier")

# Options that wire a run to this machine: the ensemble's own, handed to each member.
_RUN_WIRING: Final = ("checkpoint_dir", "on_epoch_end")
_MEMBERS_FOLDER: Final = "members"
_LAYOUTS: Final = ("file", "folder")


@frozen
class _Plan:
    """The checked parameters: which classifier each member is, with which seed."""

    name: str
    options: Mapping[str, Any]
    seeds: tuple[int, ...]


def _fail(message: str) -> NoReturn:
    raise ConfigurationError(f"EnsembleClassifier: {message}")


def _mean_history(histories: Sequence[Any]) -> dict[str, list[float]]:
    """Each curve averaged over the members, epoch by epoch, as far as every member ran.

    Examples
    --------
    >>> _mean_history([{"loss": [1.0, 0.5, 0.4]}, {"loss": [0.8, 0.3]}])
    {'loss': [0.9, 0.4]}
    >>> _mean_history([{"loss": [1.0]}, None])
    {}
    """
    if not histories or not all(isinstance(h, Mapping) and h for h in histories):
        return {}
    first: Mapping[str, Any] = histories[0]
    averaged: dict[str, list[float]] = {}
    for key in first:
        if not all(key in history for history in histories):
            continue
        length = min(len(history[key]) for history in histories)
        averaged[str(key)] = [
            float(np.mean([float(history[key][epoch]) for history in histories]))
            for epoch in range(length)
        ]
    return averaged


def _remove_leftovers(target: Path) -> None:
    """Remove what a save of ``target`` killed part-way left beside it.

    The archive's own temporary file and the staged member files are named after
    ``target`` (:func:`covidcxr.files.remove_stale_files` knows them); a member's save,
    killed, leaves its temporaries named after its staged file in turn.
    """
    remove_stale_files(target)
    staged = re.compile(
        rf"\.(?P<staged>\.{re.escape(target.name)}\.\d+@[0-9a-f]{{8}}\.[a-z0-9_]{{8}}\.tmp)\..+"
    )
    with contextlib.suppress(OSError):
        for entry in os.scandir(target.parent if str(target.parent) else "."):
            match = staged.fullmatch(entry.name)
            if match is not None:
                remove_stale_files(target.parent / match["staged"])


def _remove_tree(path: Path) -> None:
    # A member that saves a folder: staged_file removes only files.
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)


class EnsembleClassifier(Estimator):
    """Several classifiers trained alike but for their seed; their probabilities averaged.

    Member ``i`` is ``create_classifier(name, **options, seed=seeds[i])``: the same
    registered classifier (``"vgg19"`` by default) with the same options, each with its own
    seed. :meth:`fit` trains the members in turn on the same radiographs;
    :meth:`predict_proba` is the mean of their :meth:`~covidcxr.Classifier.predict_proba`
    (soft voting). Registered as ``"ensemble"``; in a pipeline's TOML::

        [classifier]
        name = "ensemble"
        n_members = 3

        [classifier.member]
        name = "vgg19"
        input_size = 128

    Parameters
    ----------
    member
        The members' classifier: a registered classifier name, or a table of its name and
        options (``{"name": "vgg19", "input_size": 128, ...}``). ``"none"`` as a value is
        ``None``, as everywhere in a configuration. Its ``seed`` (default 0) is the first
        member's; member ``i`` gets ``seed + i``. Its ``checkpoint_dir`` and
        ``on_epoch_end`` are the ensemble's own parameters, not the member's.
    n_members
        How many members; at least 1 (a one-member ensemble is its member, behind the same
        interface and file format, so that a study can vary ``n_members`` from 1).
    seeds
        The members' seeds, ``n_members`` distinct integers ``>= 0``; by default the
        member's ``seed`` and the ones after it. Not together with the member's ``seed``.
    checkpoint_dir
        Checkpoint each member in its own subfolder, ``member-<i>-seed-<seed>``: a later
        :meth:`fit` with the same parameters and data resumes where an interrupted one
        stopped (members that finished are restored, not trained again). The member
        classifier must take a ``checkpoint_dir``.
    on_epoch_end
        ``on_epoch_end(epoch, logs)``, called after each epoch of each member that reports
        its epochs (:class:`~covidcxr.protocols.ReportsEpochs`). ``epoch`` counts through
        the whole ensemble: member ``i``'s epoch ``e`` is ``i * member_epochs + e``, and
        ``logs`` carries ``"member": i`` besides the member's own logs.

    Attributes
    ----------
    classes_ : tuple[str, ...]
        The labels, in the order of :meth:`predict_proba`'s columns (every member's).
    members_ : list[Classifier]
        The fitted members, in seed order.
    seeds_ : tuple[int, ...]
        Their seeds.
    member_name_ : str
        The name their classifier is registered under.
    history_ : dict[str, list[float]]
        Each training curve (``loss``, ``val_loss`` ...) averaged over the members, epoch
        by epoch, for as many epochs as every member ran (with early stopping they may
        stop at different epochs). It is the members' mean, not the ensemble's own loss
        (which is lower); each member's curves are in ``members_[i].history_``.

    Notes
    -----
    What a :class:`~covidcxr.Pipeline` reads from its classifier is read from the members,
    which share it: :attr:`preprocessing_` (set on every member by
    :meth:`~covidcxr.Pipeline.set_working_size`), :attr:`epochs` (the whole ensemble's,
    for the progress bar), :attr:`input_size` and :attr:`input_normalization` (for the
    model card) and :attr:`class_weight` (for the class priors).

    Examples
    --------
    >>> import numpy as np
    >>> from covidcxr import XRay
    >>> rng = np.random.default_rng(0)
    >>> xrays = [XRay(rng.random((32, 32), dtype=np.float32), f"x{i}", label)
    ...          for i, label in enumerate(["covid-19", "normal", "pneumonia"] * 2)]
    >>> tiny = {"name": "vgg19", "input_size": 32, "weights": None, "trainable_blocks": 0,
    ...         "width_multiplier": 0.125, "dense_units": 8, "epochs": 1, "batch_size": 4}
    >>> ensemble = EnsembleClassifier(member=tiny, n_members=2).fit(xrays)
    >>> ensemble.seeds_
    (0, 1)
    >>> members = [member.predict_proba(xrays) for member in ensemble.members_]
    >>> bool(np.allclose(ensemble.predict_proba(xrays), np.mean(members, axis=0)))
    True
    """

    # Set by fit() or load(); absent before, as scikit-learn's fitted attributes are.
    classes_: tuple[str, ...]

    #: The name ``covidcxr.classify.plugin`` registers it under.
    registered_name: ClassVar[str] = "ensemble"

    def __init__(
        self,
        *,
        member: str | Mapping[str, Any] = "vgg19",
        n_members: int = 3,
        seeds: Sequence[int] | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        on_epoch_end: EpochCallback | None = None,
    ) -> None:
        self.member = member
        self.n_members = n_members
        self.seeds = seeds
        self.checkpoint_dir = checkpoint_dir
        self.on_epoch_end = on_epoch_end

    # ------------------------------------------------------------------ parameters

    def _plan(self) -> _Plan:  # noqa: PLR0912 - one check per parameter
        """The checked parameters.

        Raises
        ------
        ConfigurationError
            Naming the first invalid parameter and the value it had.
        UnknownNameError
            If no plugin registered the member's name.
        """
        count = self.n_members
        if not (is_whole(count) and count >= 1):
            _fail(f"n_members must be an integer >= 1, got {count!r}")
        member: object = self.member  # checked as Any: callers and files may pass anything
        if isinstance(member, str):
            name, options = member, {}
        elif isinstance(member, Mapping) and isinstance(member.get("name"), str):
            name = member["name"]
            options = {key: option_value(v) for key, v in member.items() if key != "name"}
        else:
            _fail(
                "member must be a registered classifier name or a table with a 'name' "
                f"({{'name': 'vgg19', ...}}), got {member!r}"
            )
        if not all(isinstance(key, str) for key in options):
            _fail(f"member's options must be named by strings, got {sorted(map(repr, options))}")
        try:
            check_options("classifier", name, {})  # an unknown name: the closest is named
        except UnknownNameError as exc:
            raise UnknownNameError(f"EnsembleClassifier: member {name!r}: {exc}") from exc
        registration = available_classifiers()[name]
        if name == self.registered_name or registration.refers_to(type(self)):
            _fail(
                f"member {name!r} is an ensemble, and ensembles do not nest: make the member "
                "the classifier you want several of, and set n_members"
            )
        wiring = [key for key in _RUN_WIRING if key in options]
        if wiring:
            _fail(
                f"{wiring[0]} is the ensemble's own option, not the member's: set "
                f"EnsembleClassifier's {wiring[0]} (each member gets its part of it)"
            )
        seeds = self._seeds(count, options)
        try:
            check_options("classifier", name, {"seed": 0})
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"EnsembleClassifier: the member classifier {name!r} takes no 'seed' option, "
                "so its members would all be the same model; an ensemble needs a classifier "
                "that can be seeded"
            ) from exc
        check_options("classifier", name, options, where=f"EnsembleClassifier: member {name!r}")
        if self.checkpoint_dir is not None:
            if not isinstance(self.checkpoint_dir, str | os.PathLike):
                _fail(f"checkpoint_dir must be a folder path or None, got {self.checkpoint_dir!r}")
            try:
                check_options("classifier", name, {"checkpoint_dir": None})
            except ConfigurationError as exc:
                raise ConfigurationError(
                    f"EnsembleClassifier: the member classifier {name!r} takes no "
                    "checkpoint_dir, so its members cannot resume; leave checkpoint_dir unset"
                ) from exc
        if self.on_epoch_end is not None and not callable(self.on_epoch_end):
            _fail(f"on_epoch_end must be a function or None, got {self.on_epoch_end!r}")
        return _Plan(name, options, seeds)

    def _seeds(self, count: int, options: dict[str, Any]) -> tuple[int, ...]:
        """The members' seeds; removes the member's ``seed`` (the first) from ``options``."""
        given = self.seeds
        if given is None:
            first = options.pop("seed", 0)
            if not (is_whole(first) and first >= 0):
                _fail(
                    "the member's seed must be an integer >= 0 (the first member's; member i "
                    f"gets seed + i), got {first!r}"
                )
            return tuple(int(first) + index for index in range(count))
        if "seed" in options:
            _fail(
                "give either seeds or the member's seed, not both (the member's seed is the "
                "first of the default seeds)"
            )
        if isinstance(given, str | bytes) or not isinstance(given, Sequence):
            _fail(f"seeds must be a list of {count} distinct integers >= 0, got {given!r}")
        if not all(is_whole(seed) and seed >= 0 for seed in given):
            _fail(f"seeds must be integers >= 0, got {list(given)!r}")
        if len(given) != count:
            _fail(f"seeds has {len(given)} seed(s) for n_members={count}; give one per member")
        if len(set(given)) != len(given):
            _fail(
                f"seeds must differ, got {list(given)!r}: members trained with the same seed "
                "are the same model"
            )
        return tuple(int(seed) for seed in given)

    def _member(self, plan: _Plan, index: int) -> Classifier:
        """Member ``index``, unfitted, with its seed and its checkpoint subfolder."""
        seed = plan.seeds[index]
        options = dict(plan.options)
        if self.checkpoint_dir is not None:
            options["checkpoint_dir"] = Path(self.checkpoint_dir) / f"member-{index}-seed-{seed}"
        built = create_classifier(plan.name, **options, seed=seed)
        if isinstance(built, EnsembleClassifier):
            _fail(f"member {plan.name!r} built an EnsembleClassifier; ensembles do not nest")
        return built

    @property
    def epochs(self) -> int | None:
        """The epochs of the whole ensemble: ``n_members`` times the member's ``epochs``.

        ``None`` when the member classifier has no whole ``epochs`` or the parameters are
        invalid (:meth:`fit` says how). What a progress bar counts to.

        Examples
        --------
        >>> EnsembleClassifier(member={"name": "vgg19", "epochs": 5}, n_members=3).epochs
        15
        """
        try:
            plan = self._plan()
            per_member = getattr(self._member(plan, 0), "epochs", None)
        except CovidCXRError:
            return None
        return len(plan.seeds) * int(cast(int, per_member)) if is_whole(per_member) else None

    @property
    def input_size(self) -> int | None:
        """The members' input size, or ``None`` (unfitted, or a member without one)."""
        value = self._shared("input_size")
        return int(value) if is_whole(value) else None

    @property
    def input_normalization(self) -> str | None:
        """The members' input normalisation, or ``None`` (unfitted, or none)."""
        value = self._shared("input_normalization")
        return value if isinstance(value, str) else None

    @property
    def class_weight(self) -> Any:
        """The members' ``class_weight`` (the pipeline's class priors read it), or ``None``."""
        return self._shared("class_weight")

    def _shared(self, name: str) -> Any:
        members: list[Classifier] | None = self.__dict__.get("members_")
        return getattr(members[0], name, None) if members else None

    @property
    def preprocessing_(self) -> Any:
        """The preprocessing the members' training radiographs recorded (they agree).

        See :class:`~covidcxr.protocols.RecordsPreprocessing`. Setting it sets every
        member's. Absent (an :class:`AttributeError`) before fitting and for members that
        keep none, as it is for any classifier that is not ``RecordsPreprocessing``.
        """
        members: list[object] | None = self.__dict__.get("members_")
        first = members[0] if members else None
        if not isinstance(first, RecordsPreprocessing):
            # An AttributeError, so that hasattr() and the protocol check see it absent.
            raise AttributeError(  # noqa: TRY004
                f"{type(self).__name__} has no preprocessing_: it is not fitted, or its "
                "members keep none"
            )
        return first.preprocessing_

    @preprocessing_.setter
    def preprocessing_(self, value: Any) -> None:
        for member in self.__dict__.get("members_") or []:
            if isinstance(member, RecordsPreprocessing):
                member.preprocessing_ = value

    def _check_fitted(self) -> None:
        if "members_" not in self.__dict__:
            raise ConfigurationError(
                "this EnsembleClassifier is not fitted yet; call fit() or EnsembleClassifier.load()"
            )

    # ------------------------------------------------------------------ learning

    def fit(self, xrays: Iterable[XRay], validation: Iterable[XRay] | None = None) -> Self:
        """Train every member, in turn, on the same radiographs.

        Parameters
        ----------
        xrays
            Labelled training radiographs. A :class:`~covidcxr.DatasetSource` or a list is
            handed to every member (each reads it as it does alone); a one-shot iterator is
            kept in memory once, as the records it yields.
        validation
            Labelled radiographs for monitoring (and early stopping, if the member does
            it), handed to every member likewise.

        Returns
        -------
        EnsembleClassifier
            ``self``, fitted. A fit that fails leaves an earlier fit's members in place.

        Raises
        ------
        ConfigurationError
            If a parameter is invalid (before any member trains), or as a member's
            :meth:`fit` raises it.
        ComponentOutputError
            If the members learned different classes or training preprocessings.
        """
        plan = self._plan()
        members = [self._member(plan, index) for index in range(len(plan.seeds))]
        train = reiterable(xrays)
        valid = reiterable(validation) if validation is not None else None
        per_member = getattr(members[0], "epochs", None)
        for index, member in enumerate(members):
            _log.info(
                "training member %d of %d (%s, seed %d)",
                index + 1,
                len(members),
                plan.name,
                plan.seeds[index],
            )
            with self._reporting(member, index, per_member if is_whole(per_member) else None):
                member.fit(train, validation=valid)
        self._check_members(members, ComponentOutputError)
        self.members_ = members
        self.classes_ = tuple(members[0].classes_)
        self.seeds_ = plan.seeds
        self.member_name_ = plan.name
        self.history_ = _mean_history([getattr(m, "history_", None) for m in members])
        return self

    @contextlib.contextmanager
    def _reporting(self, member: Classifier, index: int, per_member: int | None) -> Iterator[None]:
        """Relay ``member``'s epochs to :attr:`on_epoch_end` while it trains."""
        if self.on_epoch_end is None or not isinstance(member, ReportsEpochs):
            yield
            return
        offset = index * per_member if per_member is not None else 0

        def on_epoch_end(epoch: int, logs: Mapping[str, float]) -> None:
            report = self.on_epoch_end
            if report is not None:
                report(offset + epoch, {**logs, "member": float(index)})

        previous = member.on_epoch_end
        member.on_epoch_end = on_epoch_end
        try:
            yield
        finally:
            member.on_epoch_end = previous

    @staticmethod
    def _check_members(members: Sequence[Classifier], error: Callable[[str], Exception]) -> None:
        """Refuse members that disagree on their classes or their training preprocessing."""
        classes = tuple(members[0].classes_)
        for index, member in enumerate(members[1:], start=1):
            if tuple(member.classes_) != classes:
                raise error(
                    f"EnsembleClassifier: member {index} has classes {tuple(member.classes_)}, "
                    f"member 0 has {classes}; the members must learn the same classes"
                )
        recorded = [m.preprocessing_ for m in members if isinstance(m, RecordsPreprocessing)]
        if any(value != recorded[0] for value in recorded[1:]):
            raise error(
                "EnsembleClassifier: the members recorded different training preprocessings "
                f"({recorded[0]!r} and others); they must be trained on the same radiographs"
            )

    # ------------------------------------------------------------------ prediction

    def predict_proba(self, xrays: Iterable[XRay]) -> NDArray[np.float32]:
        """The members' class probabilities, averaged; columns in :attr:`classes_` order.

        Each member predicts every radiograph (a one-shot iterator is kept in memory
        once); the mean is taken in float64 and returned as float32, so rows sum to 1 as
        the members' do.

        Raises
        ------
        ConfigurationError
            If the ensemble is not fitted.
        ComponentOutputError
            If a member returns probabilities of the wrong shape.
        """
        self._check_fitted()
        data = reiterable(xrays)
        total: NDArray[np.float64] | None = None
        for index, member in enumerate(self.members_):
            rows = np.asarray(member.predict_proba(data), np.float64)
            expected = (len(rows) if total is None else len(total), len(self.classes_))
            if rows.shape != expected:
                raise ComponentOutputError(
                    f"EnsembleClassifier: member {index} ({type(member).__name__}) returned "
                    f"probabilities of shape {rows.shape}, expected {expected}"
                )
            total = rows if total is None else total + rows
        assert total is not None  # noqa: S101 - an ensemble has at least one member
        return np.asarray(total / len(self.members_), np.float32)

    def predict(self, xrays: Iterable[XRay]) -> list[str]:
        """The most probable label of each radiograph, by the averaged probabilities."""
        probabilities = self.predict_proba(xrays)
        return [self.classes_[i] for i in probabilities.argmax(axis=1)]

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted ensemble to one file, atomically.

        The file is a zip archive (format ``covidcxr.ensemble-classifier``) holding
        ``covidcxr.json`` (the parameters, classes, and each member's registered name and
        seed) and each member's own saved model, as its :meth:`save` wrote it (a file, or a
        folder), under ``members/<i>``. The members save beside ``path`` first; the
        archive is then written to a temporary file, fsynced and renamed, so a crash
        leaves the earlier file or the new one. An existing file is replaced only if it
        is a saved ensemble itself.

        Raises
        ------
        ConfigurationError
            If the ensemble is not fitted.
        OutputExistsError
            If ``path`` exists and is not a saved ensemble (also a :class:`FileExistsError`).
        """
        self._check_fitted()
        target = Path(path)
        _remove_leftovers(target)
        if target.exists() and not is_archive_of(target, FORMAT):
            raise OutputExistsError(
                f"{target} exists and is not a saved {FORMAT.description}; refusing to "
                "overwrite it (choose another path or remove it)"
            )
        params = {k: v for k, v in self.get_params().items() if k not in _RUN_WIRING}
        entries: list[dict[str, Any]] = []
        with contextlib.ExitStack() as stack:
            saved: list[Path] = []
            for index, (member, seed) in enumerate(zip(self.members_, self.seeds_, strict=True)):
                scratch = stack.enter_context(staged_file(target, ".tmp"))
                stack.callback(_remove_tree, scratch)
                scratch.unlink()  # a fresh path: a member's save may refuse an existing file
                member.save(scratch)
                if not scratch.exists():
                    raise ComponentOutputError(
                        f"EnsembleClassifier: member {index} ({type(member).__name__}) saved "
                        f"nothing at {scratch}"
                    )
                layout = "folder" if scratch.is_dir() else "file"
                name = f"{_MEMBERS_FOLDER}/{index}"
                entries.append(
                    {"name": self.member_name_, "seed": seed, "path": name, "layout": layout}
                )
                saved.append(scratch)
            metadata = {
                "format": FORMAT.name,
                "format_version": FORMAT.version,
                "versions": {"covidcxr": __version__},
                "params": plain_data(params),
                "classes": list(self.classes_),
                "members": entries,
            }
            with atomic_write(target) as handle, zipfile.ZipFile(handle, "w") as archive:
                archive.writestr(METADATA_MEMBER, json.dumps(metadata, indent=2, sort_keys=True))
                for entry, scratch in zip(entries, saved, strict=True):
                    if entry["layout"] == "file":
                        # A saved model is usually a zip archive already: not compressed again.
                        archive.write(scratch, entry["path"], compress_type=zipfile.ZIP_STORED)
                        continue
                    for file in sorted(scratch.rglob("*")):
                        if file.is_file():
                            relative = file.relative_to(scratch).as_posix()
                            archive.write(
                                file,
                                f"{entry['path']}/{relative}",
                                compress_type=zipfile.ZIP_DEFLATED,
                            )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read an ensemble written by :meth:`save`.

        Each member is loaded by the ``load`` of the class its name is registered for.

        Raises
        ------
        ModelFormatError
            If the file is missing, not a saved ensemble (another model's archive, or not
            an archive), damaged, of another format version, its member classifier is not
            registered here, a member cannot be loaded, or the members' classes differ
            from the saved ones. The message names the file.

        Examples
        --------
        >>> EnsembleClassifier.load("no-such-model.cxr")
        Traceback (most recent call last):
        ...
        covidcxr.errors.ModelFormatError: no-such-model.cxr: no saved covidcxr ensemble ...
        """
        source = Path(path)
        _remove_leftovers(source)
        what = FORMAT.description
        if not source.is_file():
            raise ModelFormatError(f"{source}: no saved {what} at this path")
        try:
            with zipfile.ZipFile(source) as archive:
                names = set(archive.namelist())
                raw = archive.read(METADATA_MEMBER) if METADATA_MEMBER in names else None
            metadata: Any = json.loads(raw) if raw is not None else None
        except _DAMAGED_ARCHIVE_ERRORS as exc:
            raise ModelFormatError(
                f"{source}: corrupt or unreadable {what} archive ({type(exc).__name__}: {exc})"
            ) from exc
        if raw is None:
            raise ModelFormatError(f"{source}: not a saved {what} (missing {METADATA_MEMBER})")
        check_format(metadata, FORMAT, source)
        entries = _member_entries(metadata, names, source)
        with tempfile.TemporaryDirectory(prefix="covidcxr-load-") as scratch:
            try:
                with zipfile.ZipFile(source) as archive:
                    for name in sorted(names):
                        if name.startswith(f"{_MEMBERS_FOLDER}/") and not name.endswith("/"):
                            archive.extract(name, scratch)
            except _DAMAGED_ARCHIVE_ERRORS as exc:
                raise ModelFormatError(
                    f"{source}: corrupt or unreadable {what} archive ({type(exc).__name__}: {exc})"
                ) from exc
            members = [
                _load_member(entry, index, Path(scratch) / entry["path"], source)
                for index, entry in enumerate(entries)
            ]
        params = check_params(cls, metadata, source)
        if isinstance(params.get("seeds"), list):  # JSON has no tuples
            params["seeds"] = tuple(params["seeds"])
        try:
            estimator = cls(**params)
        except TypeError as exc:
            raise ModelFormatError(f"{source}: metadata parameters are invalid ({exc})") from exc
        classes = tuple(metadata.get("classes") or ())
        if not classes:
            raise ModelFormatError(f"{source}: metadata lacks the classes")
        for index, member in enumerate(members):
            if tuple(member.classes_) != classes:
                raise ModelFormatError(
                    f"{source}: member {index} has classes {tuple(member.classes_)}, the "
                    f"metadata says {classes}"
                )
        cls._check_members(members, ModelFormatError)
        estimator.members_ = members
        estimator.classes_ = classes
        estimator.seeds_ = tuple(int(entry["seed"]) for entry in entries)
        estimator.member_name_ = str(entries[0]["name"])
        estimator.history_ = _mean_history([getattr(m, "history_", None) for m in members])
        return estimator

    # Learned state, declared for type checkers.
    members_: list[Classifier]
    seeds_: tuple[int, ...]
    member_name_: str
    history_: dict[str, list[float]]


def _member_entries(metadata: dict[str, Any], names: set[str], source: Path) -> list[Any]:
    """The metadata's list of members, each checked against the archive's contents."""
    entries = metadata.get("members")
    if not isinstance(entries, list) or not entries:
        raise ModelFormatError(f"{source}: {METADATA_MEMBER} field 'members' is missing or empty")
    for index, entry in enumerate(entries):
        path = f"{_MEMBERS_FOLDER}/{index}"
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and is_whole(entry.get("seed"))
            and entry.get("path") == path
            and entry.get("layout") in _LAYOUTS
        ):
            raise ModelFormatError(
                f"{source}: {METADATA_MEMBER} member {index} is not an object with a name, "
                f"a seed, path {path!r} and a layout ({entry!r:.80}); the file is damaged"
            )
        present = (
            path in names
            if entry["layout"] == "file"
            else any(name.startswith(f"{path}/") for name in names)
        )
        if not present:
            raise ModelFormatError(f"{source}: member {index}'s saved model ({path}) is missing")
    if len({entry["name"] for entry in entries}) != 1:
        raise ModelFormatError(f"{source}: the members are of different classifiers")
    return entries


def _load_member(entry: Mapping[str, Any], index: int, path: Path, source: Path) -> Classifier:
    """Member ``index``, loaded from ``path`` by its registered class's ``load``."""
    name = entry["name"]
    registration = available_classifiers().get(name)
    if registration is None:
        raise ModelFormatError(
            f"{source}: its members are {name!r} classifiers, which no installed plugin "
            "registers; install the plugin that provides it"
        )
    factory: object = registration.factory
    if not isinstance(factory, Persistable):
        raise ModelFormatError(
            f"{source}: classifier {name!r} is registered with a factory that has no load()"
        )
    try:
        loaded: object = factory.load(path)
    except ModelFormatError as exc:
        raise ModelFormatError(
            f"{source}: member {index} ({name}, seed {entry['seed']}) cannot be loaded: {exc}"
        ) from exc
    if not isinstance(loaded, Classifier):
        raise ModelFormatError(
            f"{source}: member {index}: {name!r}.load() gave no fitted classifier"
        )
    return loaded
