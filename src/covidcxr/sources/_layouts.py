"""Dataset layouts: how a public dataset arranges its files, classes, masks and patients.

A layout turns the list of file names in a source (a folder, a zip archive, a bucket
prefix) into :class:`~covidcxr.sources.Entry` records, from names alone. The same
layouts therefore work for every source.

``"classes"``
    ``{class}/**/*.png``: one folder per class, any nesting below it. With ``split``,
    ``{split}/{class}/**``.
``"covid-qu-ex"``
    COVID-QU-Ex: ``{Train,Val,Test}/{class}/images/*.png`` with masks of the same name in
    the sibling folders ``infection masks`` and ``lung masks`` (the Test split of the
    infection-segmentation set has none).
``"covid-radiography"``
    The COVID-19 Radiography Database: ``{class}/images/*.png`` with lung masks in
    ``{class}/masks``; the older flat ``{class}/*.png`` form is accepted too.
``"ieee8023"``
    The ieee8023 COVID-19 image data collection: ``metadata.csv`` with ``patientid``,
    ``finding``, ``view``, ``modality``, ``folder`` and ``filename`` columns. Only frontal
    X-rays are used; other rows are recorded as excluded.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Final

from attrs import frozen

from covidcxr.errors import ConfigurationError, SourceError, UnknownLabelError
from covidcxr.labels import COVID19, LABELS, NORMAL, PNEUMONIA, canonical_label
from covidcxr.sources._items import INFECTION_MASK, LUNG_MASK, Entry
from covidcxr.sources._skips import Skipped

__all__ = [
    "IMAGE_SUFFIXES",
    "LAYOUTS",
    "QU_EX_SPLITS",
    "Catalog",
    "catalog",
    "normalize_splits",
]

LAYOUTS: Final[tuple[str, ...]] = ("classes", "covid-qu-ex", "covid-radiography", "ieee8023")
#: The split folders of COVID-QU-Ex, spelled as in the archive.
QU_EX_SPLITS: Final[tuple[str, ...]] = ("Train", "Val", "Test")
#: File suffixes (lower case) treated as images; everything else is ignored.
IMAGE_SUFFIXES: Final = frozenset({".png", ".jpg", ".jpeg", ".dcm", ".dicom"})

_QU_EX_MASK_FOLDERS: Final = ((INFECTION_MASK, "infection masks"), (LUNG_MASK, "lung masks"))
_IEEE_METADATA: Final = "metadata.csv"
_IEEE_REQUIRED_COLUMNS: Final = ("patientid", "finding", "filename")


@frozen
class Catalog:
    """The entries a layout found, and the items it deliberately left out (with reasons)."""

    entries: tuple[Entry, ...]
    excluded: tuple[Skipped, ...]

    @property
    def classes(self) -> tuple[str, ...]:
        """The canonical labels present, in :data:`covidcxr.LABELS` order."""
        present = {entry.label for entry in self.entries}
        return tuple(label for label in LABELS if label in present)


def normalize_splits(layout: str, split: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """Validate a ``split`` option: one split name, a sequence of them, or ``None`` (all).

    For ``"covid-qu-ex"`` names are matched case-insensitively to ``Train``, ``Val`` and
    ``Test``; for ``"classes"`` they are folder names.

    Raises
    ------
    ConfigurationError
        For an unknown COVID-QU-Ex split, an empty sequence, or a split given to a layout
        that has none.

    Examples
    --------
    >>> normalize_splits("covid-qu-ex", "train")
    ('Train',)
    >>> normalize_splits("covid-qu-ex", ["Val", "Test"])
    ('Val', 'Test')
    """
    if split is None:
        return None
    names = (split,) if isinstance(split, str) else tuple(split)
    if not names:
        raise ConfigurationError("split must name at least one split, or be None for all")
    if layout == "covid-qu-ex":
        canonical = {name.lower(): name for name in QU_EX_SPLITS}
        unknown = [name for name in names if name.lower() not in canonical]
        if unknown:
            raise ConfigurationError(
                f"unknown COVID-QU-Ex split(s) {unknown}; choose from {list(QU_EX_SPLITS)}"
            )
        return tuple(dict.fromkeys(canonical[name.lower()] for name in names))
    if layout == "classes":
        return tuple(dict.fromkeys(names))
    raise ConfigurationError(f"layout {layout!r} has no splits; leave split=None")


def _is_image(name: str) -> bool:
    path = PurePosixPath(name)
    return path.suffix.lower() in IMAGE_SUFFIXES and not any(
        part.startswith(".") for part in path.parts
    )


def _labels_for(
    folders: Iterable[str], aliases: Mapping[str, str] | None, where: str
) -> dict[str, str]:
    """Map class folder names to labels, failing with the full list of folders found."""
    folders = sorted(set(folders))
    labels: dict[str, str] = {}
    unknown: list[str] = []
    for folder in folders:
        try:
            labels[folder] = canonical_label(folder, aliases)
        except UnknownLabelError:
            unknown.append(folder)
    if unknown:
        raise UnknownLabelError(
            f"{where}: class folder(s) {unknown} are not a known spelling of "
            f"{', '.join(LABELS)} (folders found: {folders}); pass "
            f"label_aliases={{{unknown[0]!r}: 'pneumonia'}} (or another label) to map them"
        )
    return labels


def catalog(
    layout: str,
    names: Sequence[str],
    *,
    where: str,
    split: str | Sequence[str] | None = None,
    label_aliases: Mapping[str, str] | None = None,
    read_text: Callable[[str], str] | None = None,
    load_masks: bool = True,
) -> Catalog:
    """Catalogue a source's files according to a layout.

    Parameters
    ----------
    layout
        One of :data:`LAYOUTS`.
    names
        Every file in the source, as ``/``-separated relative paths.
    where
        The source's location, for error messages.
    split
        See :func:`normalize_splits`.
    label_aliases
        Extra class spellings, as for :func:`covidcxr.labels.canonical_label`.
    read_text
        Reads a text file of the source by name (``ieee8023`` reads ``metadata.csv``).
    load_masks
        Whether entries should list their masks.

    Raises
    ------
    ConfigurationError
        For an unknown layout or split.
    UnknownLabelError
        For a class folder no alias matches; the message lists the folders found.
    SourceError
        If the layout finds no images, or ``metadata.csv`` is missing or malformed.
    """
    if layout not in LAYOUTS:
        raise ConfigurationError(f"unknown layout {layout!r}; choose from {list(LAYOUTS)}")
    splits = normalize_splits(layout, split)
    if layout == "classes":
        result = _classes(names, splits, label_aliases, where)
    elif layout == "covid-qu-ex":
        result = _qu_ex(names, splits, label_aliases, where, load_masks)
    elif layout == "covid-radiography":
        result = _radiography(names, label_aliases, where, load_masks)
    else:
        if read_text is None:
            raise ConfigurationError("the ieee8023 layout needs read_text to read metadata.csv")
        result = _ieee8023(names, label_aliases, where, read_text)
    if not result.entries:
        scope = f" in split(s) {list(splits)}" if splits else ""
        raise SourceError(f"{where}: no images found for layout {layout!r}{scope}")
    return result


def _classes(
    names: Sequence[str],
    splits: tuple[str, ...] | None,
    aliases: Mapping[str, str] | None,
    where: str,
) -> Catalog:
    by_split = {name.lower(): name for name in splits} if splits else None
    chosen: list[tuple[str, str, str | None]] = []  # (name, class folder, split)
    for name in names:
        parts = PurePosixPath(name).parts
        if not _is_image(name):
            continue
        if by_split is None:
            if len(parts) >= 2:
                chosen.append((name, parts[0], None))
        elif len(parts) >= 3 and parts[0].lower() in by_split:
            chosen.append((name, parts[1], by_split[parts[0].lower()]))
    labels = _labels_for((folder for _, folder, _ in chosen), aliases, where)
    entries = [
        Entry(name, label=labels[folder], meta={"split": split} if split else {})
        for name, folder, split in sorted(chosen)
    ]
    return Catalog(tuple(entries), ())


def _qu_ex(
    names: Sequence[str],
    splits: tuple[str, ...] | None,
    aliases: Mapping[str, str] | None,
    where: str,
    load_masks: bool,
) -> Catalog:
    wanted = {name.lower(): name for name in (splits or QU_EX_SPLITS)}
    present = set(names)
    images: list[tuple[str, str, str, str]] = []  # (name, split, class folder, file name)
    for name in names:
        parts = PurePosixPath(name).parts
        if len(parts) != 4 or parts[2] != "images" or not _is_image(name):
            continue
        if parts[0].lower() in wanted:
            images.append((name, wanted[parts[0].lower()], parts[1], parts[3]))
    labels = _labels_for((folder for _, _, folder, _ in images), aliases, where)
    entries = []
    for name, split, folder, file_name in sorted(images):
        masks = {}
        for key, mask_folder in _QU_EX_MASK_FOLDERS:
            mask_name = f"{PurePosixPath(name).parts[0]}/{folder}/{mask_folder}/{file_name}"
            if mask_name in present:
                masks[key] = mask_name
        meta = {"split": split, "annotated": INFECTION_MASK in masks}
        entries.append(
            Entry(name, label=labels[folder], masks=masks if load_masks else {}, meta=meta)
        )
    return Catalog(tuple(entries), ())


def _radiography(
    names: Sequence[str],
    aliases: Mapping[str, str] | None,
    where: str,
    load_masks: bool,
) -> Catalog:
    present = set(names)
    images: list[tuple[str, str, str | None]] = []  # (name, class folder, mask name)
    for name in names:
        parts = PurePosixPath(name).parts
        if not _is_image(name):
            continue
        if len(parts) == 3 and parts[1] == "images":
            mask_name = f"{parts[0]}/masks/{parts[2]}"
            images.append((name, parts[0], mask_name if mask_name in present else None))
        elif len(parts) == 2:
            images.append((name, parts[0], None))
    labels = _labels_for((folder for _, folder, _ in images), aliases, where)
    entries = [
        Entry(
            name,
            label=labels[folder],
            masks={LUNG_MASK: mask} if mask and load_masks else {},
        )
        for name, folder, mask in sorted(images)
    ]
    return Catalog(tuple(entries), ())


def _ieee_label(finding: str, aliases: Mapping[str, str] | None) -> str | None:
    """Map an ieee8023 ``finding`` such as ``Pneumonia/Viral/COVID-19`` to a label."""
    try:
        return canonical_label(finding, aliases)
    except UnknownLabelError:
        pass
    parts = [part.strip() for part in finding.split("/")]
    if any(canonical_label_or_none(part) == COVID19 for part in parts):
        return COVID19
    if parts and parts[0].lower() == "pneumonia":
        return PNEUMONIA
    if finding.strip().lower() == "no finding":
        return NORMAL
    return None


def canonical_label_or_none(name: str) -> str | None:
    """:func:`covidcxr.labels.canonical_label`, or ``None`` where it raises."""
    try:
        return canonical_label(name)
    except UnknownLabelError:
        return None


def _ieee8023(
    names: Sequence[str],
    aliases: Mapping[str, str] | None,
    where: str,
    read_text: Callable[[str], str],
) -> Catalog:
    if _IEEE_METADATA not in set(names):
        raise SourceError(f"{where}: the ieee8023 layout needs {_IEEE_METADATA} at the top level")
    rows = list(csv.DictReader(io.StringIO(read_text(_IEEE_METADATA))))
    columns = set(rows[0]) if rows else set()
    missing = [column for column in _IEEE_REQUIRED_COLUMNS if column not in columns]
    if missing:
        raise SourceError(f"{where}/{_IEEE_METADATA}: missing column(s) {missing}")
    present = set(names)
    entries: list[Entry] = []
    excluded: list[Skipped] = []
    seen: dict[str, int] = defaultdict(int)
    for row in rows:
        name = f"{row.get('folder') or 'images'}/{row['filename']}"
        modality = (row.get("modality") or "X-ray").strip()
        view = (row.get("view") or "").strip()
        label = _ieee_label(row["finding"], aliases)
        if modality.lower() != "x-ray":
            excluded.append(Skipped(name, f"modality {modality!r} is not a radiograph"))
        elif view.upper().startswith("L"):
            excluded.append(Skipped(name, f"view {view!r} is not frontal"))
        elif label is None:
            excluded.append(
                Skipped(name, f"finding {row['finding']!r} has no label; map it with label_aliases")
            )
        elif name not in present:
            excluded.append(Skipped(name, f"listed in {_IEEE_METADATA} but not found"))
        else:
            seen[name] += 1
            if seen[name] > 1:
                excluded.append(Skipped(name, f"listed more than once in {_IEEE_METADATA}"))
                continue
            entries.append(
                Entry(
                    name,
                    label=label,
                    patient_id=(row.get("patientid") or "").strip() or None,
                    meta={"finding": row["finding"], "view": view},
                )
            )
    return Catalog(tuple(sorted(entries, key=lambda entry: entry.name)), tuple(excluded))
