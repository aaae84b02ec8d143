"""Dataset layouts: how a public dataset arranges its files, classes, masks and patients.

A layout turns the list of file names in a source (a folder, a zip archive, a bucket
prefix) into :class:`~covidcxr.sources.Entry` records, from names alone. The same
layouts therefore work for every source.

``"classes"``
    ``{class}/**/*.png``: one folder per class, any nesting below it (but never in a
    mask folder). With ``split``, ``{split}/{class}/**``.
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
``"unlabelled"``
    Every image below the folder, at any depth, without a label (for prediction).
    Folders of segmentation masks (``masks``, ``lung masks``, ``infection masks`` ...) are
    never read as radiographs.

``"auto"`` (:data:`AUTO`, the sources' default) chooses among them from the names
(:func:`detect_layout`).
"""

from __future__ import annotations

import csv
import io
import posixpath
import re
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Final

from attrs import frozen

from covidcxr.errors import ConfigurationError, SourceError, UnknownLabelError
from covidcxr.labels import COVID19, LABELS, NORMAL, PNEUMONIA, canonical_label
from covidcxr.sources._items import INFECTION_MASK, LUNG_MASK, Entry
from covidcxr.sources._skips import Skipped

__all__ = [
    "AUTO",
    "CITATIONS",
    "IMAGE_SUFFIXES",
    "LAYOUTS",
    "QU_EX_SPLITS",
    "TERMS",
    "Catalog",
    "DetectedLayout",
    "catalog",
    "detect_layout",
    "is_mask_folder",
    "might_be_dicom",
    "normalize_splits",
]

LAYOUTS: Final[tuple[str, ...]] = (
    "classes",
    "covid-qu-ex",
    "covid-radiography",
    "ieee8023",
    "unlabelled",
)
#: The ``layout=`` value that asks the source to choose the layout (:func:`detect_layout`).
AUTO: Final = "auto"
#: The reference to cite for the public dataset a layout reads, by layout name (model
#: cards name it as the training data's source).
CITATIONS: Final[Mapping[str, str]] = {
    "covid-qu-ex": (
        'A. M. Tahir et al., "COVID-19 infection localization and severity grading from '
        'chest X-ray images", Computers in Biology and Medicine 139:105002 (2021)'
    ),
}
#: The terms of use of the public dataset a layout reads, as far as covidcxr knows them,
#: by layout name (model cards state them beside the citation).
TERMS: Final[Mapping[str, str]] = {
    "covid-qu-ex": (
        "Published by its authors (Qatar University and collaborators) on Kaggle, under "
        "the terms stated there, and merged from earlier public collections with terms of "
        "their own; cite Tahir et al. (2021). covidcxr does not redistribute its images; "
        "a model trained on it is for research, not for diagnosis."
    ),
}
#: The split folders of COVID-QU-Ex, spelled as in the archive.
QU_EX_SPLITS: Final[tuple[str, ...]] = ("Train", "Val", "Test")
#: File suffixes (lower case) treated as images; everything else is ignored, except, in a
#: local folder, files without a suffix that hold an image (see :func:`might_be_dicom`).
IMAGE_SUFFIXES: Final = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".jif", ".webp", ".dcm", ".dicom"}
)

# Suffixes of image formats covidcxr does not read (lower case): their files are left out
# and reported as skipped, with the formats it does read, rather than ignored in silence.
_UNREAD_IMAGE_SUFFIXES: Final = frozenset(
    {".tif", ".tiff", ".bmp", ".gif", ".jp2", ".j2k", ".heic", ".heif", ".pgm", ".ppm"}
)

_QU_EX_MASK_FOLDERS: Final = ((INFECTION_MASK, "infection masks"), (LUNG_MASK, "lung masks"))
_IEEE_METADATA: Final = "metadata.csv"
_IEEE_REQUIRED_COLUMNS: Final = ("patientid", "finding", "filename")
# Folder names that usually hold one split of a dataset (compared in lower case).
_SPLIT_LIKE: Final = frozenset(
    {"train", "training", "val", "valid", "validation", "dev", "test", "testing"}
    | {split.lower() for split in QU_EX_SPLITS}
)
_SEPARATORS: Final = re.compile(r"[\s_-]+")


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
    """Whether a ``/``-separated name is an image file outside hidden folders.

    String operations, not :class:`~pathlib.PurePosixPath` (a source lists every file).

    Examples
    --------
    >>> [_is_image(n) for n in ("a/b.PNG", "a/.cache/b.png", ".png", "a/b.txt", "b.dcm")]
    [True, False, False, False, True]
    """
    return posixpath.splitext(name)[1].lower() in IMAGE_SUFFIXES and not (
        name.startswith(".") or "/." in name
    )


def _image_test(content_images: Collection[str]) -> Callable[[str], bool]:
    """:func:`_is_image`, also true for ``content_images`` (images by their content)."""
    if not content_images:
        return _is_image
    extra = frozenset(content_images)
    return lambda name: name in extra or _is_image(name)


def might_be_dicom(name: str) -> bool:
    """Whether a file without an image suffix should be opened to see if it is an image.

    DICOM files are often exported without a suffix (``IM000001``) or named by their
    UID (``1.2.840.113619.2.55.3.604688``, whose "suffix" is digits), and some viewers
    save PNG or JPEG without one; a local folder opens such files and keeps those whose
    first bytes are DICOM, PNG, JPEG or WebP. ``DICOMDIR`` is a DICOM index, not an
    image; hidden files and folders are left out as everywhere.

    Examples
    --------
    >>> [might_be_dicom(n) for n in ("a/IM0001", "1.2.840.1136", "a/DICOMDIR", "a.txt",
    ...                              "a/.git/HEAD", "b.png")]
    [True, True, False, False, False, False]
    """
    # String operations: this runs on every file of a folder (15,000 for COVID-QU-Ex).
    base = name[name.rfind("/") + 1 :]
    dot = base.rfind(".")
    return (
        (dot == -1 or base[dot + 1 :].isdigit())
        and dot != 0
        and base.upper() != "DICOMDIR"
        and not (name.startswith(".") or "/." in name)
    )


def _parts(name: str) -> list[str]:
    """The components of a relative ``/``-separated name, as ``PurePosixPath(name).parts``.

    String operations: a COVID-QU-Ex checkout lists 15,000 files, and parsing each with
    :class:`~pathlib.PurePosixPath` cost about 70 ms of every ``open_source`` on it.

    Examples
    --------
    >>> _parts("Train/COVID-19/images/a.png"), _parts("a//./b.png")
    (['Train', 'COVID-19', 'images', 'a.png'], ['a', 'b.png'])
    """
    if name in ("", ".") or "//" in name or "./" in name or name[0] == "/" or name[-1] in "/.":
        return list(PurePosixPath(name).parts)  # rare: let pathlib normalise it
    return name.split("/")


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
        splits = [folder for folder in unknown if folder.lower() in _SPLIT_LIKE]
        if splits:
            hint = (
                f"{splits} look like split folders, not classes: pass split={splits[0]!r} "
                "(or layout='covid-qu-ex' for COVID-QU-Ex), or leave layout='auto'"
            )
        else:
            hint = (
                f"pass label_aliases={{{unknown[0]!r}: 'pneumonia'}} (or another label) to "
                "map them, or layout='unlabelled' to read the images without labels"
            )
        raise UnknownLabelError(
            f"{where}: class folder(s) {unknown} are not a known spelling of "
            f"{', '.join(LABELS)} (folders found: {folders}); {hint}"
        )
    return labels


def is_mask_folder(name: str) -> bool:
    """Whether a folder name says it holds segmentation masks, not radiographs.

    Examples
    --------
    >>> [is_mask_folder(name) for name in ("lung masks", "Infection_Masks", "masks", "images")]
    [True, True, True, False]
    """
    words = _SEPARATORS.sub(" ", name.lower()).strip()
    return words in {"mask", "masks"} or words.endswith((" mask", " masks"))


def _in_mask_folder(name: str) -> bool:
    return any(is_mask_folder(part) for part in _parts(name)[:-1])


def _is_label(folder: str, aliases: Mapping[str, str] | None) -> bool:
    try:
        canonical_label(folder, aliases)
    except UnknownLabelError:
        return False
    return True


@frozen
class DetectedLayout:
    """The layout :func:`detect_layout` chose, and why.

    Parameters
    ----------
    layout
        One of :data:`LAYOUTS`.
    split
        The ``split`` option to catalogue with (the caller's, or the split folders found).
    reason
        What in the names decided it, in words, for logs and ``repr``.
    """

    layout: str
    split: tuple[str, ...] | None
    reason: str


def detect_layout(
    names: Sequence[str],
    *,
    where: str,
    split: str | Sequence[str] | None = None,
    label_aliases: Mapping[str, str] | None = None,
    content_images: Collection[str] = frozenset(),
) -> DetectedLayout:
    """Choose the layout of a source from its file names.

    ``"ieee8023"`` when ``metadata.csv`` is at the top; ``"covid-qu-ex"`` for a
    COVID-QU-Ex root (``{Train,Val,Test}/{class}/images``, every split unless ``split``
    says otherwise) or one split folder of it (``{class}/images`` beside ``{class}/lung
    masks``); ``"covid-radiography"`` for ``{class}/images`` (beside ``{class}/masks``);
    ``"classes"`` when top folders are class names, or split folders
    (``train/``, ``test/`` ...) holding class folders (every split unless ``split`` says
    otherwise); otherwise ``"unlabelled"``: every image below, without labels.

    Parameters
    ----------
    names
        Every file in the source, as ``/``-separated relative paths.
    where
        The source's location; a last component naming a mask folder is refused.
    split, label_aliases
        As for :func:`catalog`; aliases make more folder names count as classes.
    content_images
        As for :func:`catalog`.

    Raises
    ------
    SourceError
        If ``where`` is a folder of segmentation masks, or holds no images.
    ConfigurationError
        If the names fit more than one layout; the message lists them and the ``layout=``
        and ``split=`` to pass.

    Examples
    --------
    >>> detect_layout(["Val/COVID-19/images/a.png", "Val/COVID-19/lung masks/a.png"],
    ...               where="qu-ex").layout
    'covid-qu-ex'
    >>> detect_layout(["scan1.png", "more/scan2.dcm"], where="new-scans").layout
    'unlabelled'
    """
    base = PurePosixPath(where.replace("\\", "/").rstrip("/")).name
    if base and is_mask_folder(base):
        raise SourceError(
            f"{where}: {base!r} is a folder of segmentation masks, not radiographs; open "
            "the images folder beside it (or pass layout='unlabelled' to read it anyway)"
        )
    is_image = _image_test(content_images)
    images = [_parts(name) for name in names if is_image(name)]
    if not images:
        raise SourceError(
            f"{where}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))} "
            f"files){_unread_note(names)}"
        )
    given = None if split is None else ((split,) if isinstance(split, str) else tuple(split))
    wanted = None if given is None else {name.lower() for name in given}
    qu_ex_splits = {s.lower(): s for s in QU_EX_SPLITS}
    mask_folders = {folder for _, folder in _QU_EX_MASK_FOLDERS}
    qu_root = sorted(
        {qu_ex_splits[p[0].lower()] for p in images
         if len(p) == 4 and p[2] == "images" and p[0].lower() in qu_ex_splits},
        key=QU_EX_SPLITS.index,
    )  # fmt: skip
    image_folders = {p[0] for p in images if len(p) == 3 and p[1] == "images"}
    qu_split = bool(image_folders) and any(
        len(parts) == 3 and parts[1] in mask_folders for parts in (_parts(name) for name in names)
    )
    tops = {p[0] for p in images if len(p) >= 2}
    labelled_tops = {top for top in tops if _is_label(top, label_aliases)}
    split_tops = {
        top for top in tops
        if top.lower() in _SPLIT_LIKE or (wanted is not None and top.lower() in wanted)
    }  # fmt: skip
    wrapped = (
        bool(tops)
        and tops == split_tops
        and any(len(p) >= 3 and _is_label(p[1], label_aliases) for p in images)
    )

    candidates: list[DetectedLayout] = []
    if _IEEE_METADATA in names:
        candidates.append(DetectedLayout("ieee8023", given, f"{_IEEE_METADATA} at the top"))
    if qu_root:
        chosen = "all splits" if given is None else f"split={list(given)}"
        candidates.append(
            DetectedLayout(
                "covid-qu-ex", given, f"a COVID-QU-Ex root with {', '.join(qu_root)} ({chosen})"
            )
        )
    elif qu_split:
        candidates.append(
            DetectedLayout("covid-qu-ex", given, "one COVID-QU-Ex split folder ({class}/images "
                           "beside {class}/lung masks)")
        )  # fmt: skip
    elif image_folders & labelled_tops:
        candidates.append(DetectedLayout("covid-radiography", given, "{class}/images folders"))
    if labelled_tops and not qu_split and not (image_folders & labelled_tops):
        candidates.append(DetectedLayout("classes", given, f"class folders {sorted(tops)}"))
    elif wrapped and not qu_root:
        chosen_splits = given if given is not None else tuple(sorted(split_tops))
        candidates.append(
            DetectedLayout(
                "classes",
                chosen_splits,
                f"split folders {sorted(split_tops)} holding class folders",
            )
        )
    loose = sum(len(parts) == 1 for parts in images)
    if loose and any(c.layout == "classes" for c in candidates):
        # The classes layout would leave them out without a word.
        candidates.append(
            DetectedLayout("unlabelled", None, f"{loose} image(s) directly in the folder")
        )
    if len(candidates) > 1:
        options = "; ".join(
            f"layout={c.layout!r}"
            + (f", split={list(c.split)!r}" if c.split else "")
            + f" ({c.reason})"
            for c in candidates
        )
        raise ConfigurationError(
            f"{where}: the files fit more than one layout; choose one: {options}"
        )
    if candidates:
        return candidates[0]
    if label_aliases:
        # Aliases say the folders are classes: let the classes layout name the unknown ones.
        return DetectedLayout("classes", given, "label_aliases were given")
    skipped = sorted(top for top in tops if is_mask_folder(top))
    where_found = (
        f"folders {sorted(tops)}" + (f"; mask folders {skipped} skipped" if skipped else "")
        if tops
        else "images directly in the folder"
    )
    return DetectedLayout(
        "unlabelled", given, f"no class folders ({where_found}); images are read without labels"
    )


def catalog(
    layout: str,
    names: Sequence[str],
    *,
    where: str,
    split: str | Sequence[str] | None = None,
    label_aliases: Mapping[str, str] | None = None,
    read_text: Callable[[str], str] | None = None,
    load_masks: bool = True,
    content_images: Collection[str] = frozenset(),
) -> Catalog:
    """Catalogue a source's files according to a layout.

    Parameters
    ----------
    layout
        One of :data:`LAYOUTS` (choose with :func:`detect_layout` for :data:`AUTO`).
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
    content_images
        Names that are images whatever their suffix, because their content says so
        (files exported without one: see :func:`might_be_dicom`); other names
        count as images by their suffix (:data:`IMAGE_SUFFIXES`).

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
    is_image = _image_test(content_images)
    if layout == "classes":
        result = _classes(names, splits, label_aliases, where, is_image)
    elif layout == "unlabelled":
        result = _unlabelled(names, is_image)
    elif layout == "covid-qu-ex":
        result = _qu_ex(names, splits, label_aliases, where, load_masks, is_image=is_image)
    elif layout == "covid-radiography":
        result = _radiography(names, label_aliases, where, load_masks, is_image)
    else:
        if read_text is None:
            raise ConfigurationError("the ieee8023 layout needs read_text to read metadata.csv")
        result = _ieee8023(names, label_aliases, where, read_text)
    if not result.entries:
        scope = f" in split(s) {list(splits)}" if splits else ""
        raise SourceError(
            f"{where}: no images found for layout {layout!r}{scope}{_unread_note(names)}"
        )
    # The user's own folders (the public datasets' layouts hold no such files): images
    # in formats it does not read are reported, not ignored.
    if layout not in ("classes", "unlabelled"):
        return result
    unread = _unread_images(names, splits if layout == "classes" else None)
    return Catalog(result.entries, result.excluded + unread) if unread else result


def _unread_images(
    names: Sequence[str], splits: tuple[str, ...] | None = None
) -> tuple[Skipped, ...]:
    """Files in an image format covidcxr does not read, each with the reason.

    Hidden files and mask folders are left alone, and with ``splits`` only files in those
    split folders count.

    Examples
    --------
    >>> [(item.path, item.reason[:24]) for item in
    ...  _unread_images(["a.png", "b.TIF", "notes.txt", ".cache/c.bmp", "d/e.gif"])]
    [('b.TIF', 'TIF images are not read:'), ('d/e.gif', 'GIF images are not read:')]
    >>> [item.path for item in _unread_images(["train/A/a.tif", "test/A/b.tif"], ("train",))]
    ['train/A/a.tif']
    """
    wanted = None if splits is None else {split.lower() for split in splits}
    found = []
    for name in names:
        suffix = posixpath.splitext(name)[1].lower()
        if (
            suffix not in _UNREAD_IMAGE_SUFFIXES
            or name.startswith(".")
            or "/." in name
            or _in_mask_folder(name)
            or (wanted is not None and name.split("/", 1)[0].lower() not in wanted)
        ):
            continue
        reason = (
            f"{suffix[1:].upper()} images are not read: convert it to PNG (covidcxr reads "
            "PNG, JPEG, WebP and DICOM)"
        )
        found.append(Skipped(name, reason))
    return tuple(found)


def _unread_note(names: Sequence[str]) -> str:
    """What an error saying "no images found" should add about unread image formats.

    Examples
    --------
    >>> _unread_note(["a.tif", "b.TIFF", "c.txt"])
    '; 2 file(s) are images in formats covidcxr does not read (.tif, .tiff): convert them to PNG'
    >>> _unread_note(["c.txt"])
    ''
    """
    unread = _unread_images(names)
    if not unread:
        return ""
    suffixes = sorted({posixpath.splitext(item.path)[1].lower() for item in unread})
    return (
        f"; {len(unread)} file(s) are images in formats covidcxr does not read "
        f"({', '.join(suffixes)}): convert them to PNG"
    )


def _classes(
    names: Sequence[str],
    splits: tuple[str, ...] | None,
    aliases: Mapping[str, str] | None,
    where: str,
    is_image: Callable[[str], bool],
) -> Catalog:
    by_split = {name.lower(): name for name in splits} if splits else None
    chosen: list[tuple[str, str, str | None]] = []  # (name, class folder, split)
    # Images in no class folder have no label: reported, not dropped without a word
    # (automatic detection refuses such a folder; an explicit layout="classes" reads the
    # class folders and says what it left).
    unlabelled: list[Skipped] = []
    for name in names:
        parts = _parts(name)
        if not is_image(name) or _in_mask_folder(name):
            continue
        if by_split is None:
            if len(parts) >= 2:
                chosen.append((name, parts[0], None))
            else:
                unlabelled.append(Skipped(name, "not in a class folder, so it has no label"))
        elif len(parts) >= 3 and parts[0].lower() in by_split:
            chosen.append((name, parts[1], by_split[parts[0].lower()]))
        elif len(parts) == 2 and parts[0].lower() in by_split:
            unlabelled.append(
                Skipped(name, f"in split folder {parts[0]!r} but in no class folder there")
            )
    labels = _labels_for((folder for _, folder, _ in chosen), aliases, where)
    entries = [
        Entry(name, label=labels[folder], meta={"split": split} if split else {})
        for name, folder, split in sorted(chosen)
    ]
    return Catalog(tuple(entries), tuple(sorted(unlabelled, key=lambda s: s.path)))


def _unlabelled(names: Sequence[str], is_image: Callable[[str], bool]) -> Catalog:
    entries = [Entry(name) for name in names if is_image(name) and not _in_mask_folder(name)]
    return Catalog(tuple(sorted(entries, key=lambda entry: entry.name)), ())


def _qu_ex(
    names: Sequence[str],
    splits: tuple[str, ...] | None,
    aliases: Mapping[str, str] | None,
    where: str,
    load_masks: bool,
    *,
    is_image: Callable[[str], bool],
) -> Catalog:
    wanted = {name.lower(): name for name in (splits or QU_EX_SPLITS)}
    present = set(names)
    # (name, split, folder holding the class folders ("" or "Val/"), class folder, file name)
    images: list[tuple[str, str | None, str, str, str]] = []
    for name in names:
        if name.partition("/")[0].lower() not in wanted:  # cheap: most files are elsewhere
            continue
        parts = _parts(name)
        if (
            len(parts) == 4
            and parts[2] == "images"
            and is_image(name)
            and parts[0].lower() in wanted
        ):
            images.append((name, wanted[parts[0].lower()], parts[0] + "/", parts[1], parts[3]))
    if not images:
        images = _qu_ex_split_folder(names, splits, where, is_image)
    labels = _labels_for((folder for _, _, _, folder, _ in images), aliases, where)
    entries = []
    for name, split, base, folder, file_name in sorted(images, key=lambda image: image[0]):
        masks = {}
        for key, mask_folder in _QU_EX_MASK_FOLDERS:
            mask_name = f"{base}{folder}/{mask_folder}/{file_name}"
            if mask_name in present:
                masks[key] = mask_name
        # Masks not loaded leave the lesions unknown: an empty ``boxes`` is no answer.
        meta: dict[str, object] = {"annotated": load_masks and INFECTION_MASK in masks}
        if split is not None:
            meta["split"] = split
        entries.append(
            Entry(name, label=labels[folder], masks=masks if load_masks else {}, meta=meta)
        )
    return Catalog(tuple(entries), ())


def _qu_ex_split_folder(
    names: Sequence[str],
    splits: tuple[str, ...] | None,
    where: str,
    is_image: Callable[[str], bool],
) -> list[tuple[str, str | None, str, str, str]]:
    """The images of one COVID-QU-Ex split folder: ``{class}/images/*``."""
    images = [
        (name, parts[0], parts[2])
        for name in names
        if is_image(name) and len(parts := _parts(name)) == 3 and parts[1] == "images"
    ]
    if not images:
        return []
    if splits is not None:
        raise ConfigurationError(
            f"{where}: this is one COVID-QU-Ex split folder ({{class}}/images), not the "
            "root holding Train, Val and Test; leave split=None, or open the root"
        )
    # The folder's own name says which split it is, when it is spelled as in the archive.
    base = PurePosixPath(where.replace("\\", "/").rstrip("/")).name.lower()
    split = {name.lower(): name for name in QU_EX_SPLITS}.get(base)
    return [(name, split, "", folder, file_name) for name, folder, file_name in images]


def _radiography(
    names: Sequence[str],
    aliases: Mapping[str, str] | None,
    where: str,
    load_masks: bool,
    is_image: Callable[[str], bool],
) -> Catalog:
    present = set(names)
    images: list[tuple[str, str, str | None]] = []  # (name, class folder, mask name)
    for name in names:
        parts = _parts(name)
        if not is_image(name):
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
    for number, row in enumerate(rows, start=1):
        short = [column for column in ("finding", "filename") if row.get(column) is None]
        if short:
            raise SourceError(
                f"{where}/{_IEEE_METADATA}: data row {number} has no {' or '.join(short)} "
                "(fewer fields than the header names); fix or remove the row"
            )
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
