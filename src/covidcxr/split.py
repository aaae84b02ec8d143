"""Leak-free dataset splits: stratified, grouped by patient, guarded against near-duplicates.

A radiograph classifier evaluated on images of patients it was trained on, or on
near-copies of its training images, measures memory rather than skill. Public COVID-19
datasets are merged from many sources and contain both: several images per patient, and
the same image re-published (re-encoded, resized, re-windowed) by different collections.
:func:`split_dataset` therefore assigns whole *groups* to splits, where a group is every
image connected to another by a shared ``patient_id`` or by a perceptual hash within
``max_hash_distance`` bits, and balances the classes of each split towards the requested
proportions (the published recipe: 75 % train, 25 % test, seeded).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Final

import cv2
import numpy as np
from attrs import field, frozen
from numpy.typing import NDArray

from covidcxr.errors import ConfigurationError
from covidcxr.labels import LABELS
from covidcxr.records import XRay

__all__ = [
    "DatasetSplit",
    "DuplicateGroup",
    "find_near_duplicates",
    "hash_distance",
    "perceptual_hash",
    "split_dataset",
]

_HASH_SIDE: Final = 16
_HASH_BITS: Final = _HASH_SIDE * _HASH_SIDE
_HASH_WORDS: Final = _HASH_BITS // 64
# Rows of the distance matrix computed at once: bounds memory to ~50 MB per 5,000 images.
_BLOCK_ROWS: Final = 256
_SPLIT_NAMES: Final = ("train", "val", "test")


def perceptual_hash(pixels: NDArray[Any]) -> int:
    """The 256-bit DCT perceptual hash (pHash) of an image.

    The image is reduced to 64x64 (area averaging) and transformed with a 2-D DCT; each of
    the 16x16 lowest frequencies (the mean, ``[0, 0]``, excluded) gives one bit: whether it
    is above their median. Resizing, re-encoding, mild blur and global brightness or
    contrast changes leave most bits unchanged, so copies of one radiograph are a few bits
    apart. Radiographs all look alike at the coarsest scale, which makes the classic 64-bit
    pHash (8x8) too coarse for them: on COVID-QU-Ex it chains unrelated images into large
    clusters, while 256 bits separate them (unrelated nearest neighbours are typically
    60-80 bits apart, re-published copies under 40).

    Parameters
    ----------
    pixels
        A 2-D image of any dtype.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.random.default_rng(0).integers(0, 200, (128, 128)).astype(np.uint8)
    >>> perceptual_hash(image) == perceptual_hash(image // 2 + 20)
    True
    >>> hash_distance(perceptual_hash(image), perceptual_hash(image.T)) > 60
    True
    """
    small = cv2.resize(np.asarray(pixels, dtype=np.float32), (64, 64), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:_HASH_SIDE, :_HASH_SIDE].ravel()
    coefficients = low[1:]
    bits = np.concatenate([[False], coefficients > np.median(coefficients)]).astype(np.uint8)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hash_distance(first: int, second: int) -> int:
    """The number of bits in which two perceptual hashes differ (Hamming distance).

    Examples
    --------
    >>> hash_distance(0b1011, 0b0010)
    2
    """
    return (first ^ second).bit_count()


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, first: int, second: int) -> None:
        a, b = self.find(first), self.find(second)
        if a != b:
            self.parent[max(a, b)] = min(a, b)

    def groups(self) -> list[list[int]]:
        members: dict[int, list[int]] = defaultdict(list)
        for item in range(len(self.parent)):
            members[self.find(item)].append(item)
        return list(members.values())


def find_near_duplicates(hashes: Sequence[int], max_distance: int = 40) -> list[list[int]]:
    """Clusters of indices whose hashes are within ``max_distance`` bits of each other.

    Every pair is compared (vectorised popcounts over blocks of rows, so memory stays
    bounded); the cost grows with the square of the number of images, about a second for
    10,000. Clusters are transitive: ``a~b`` and ``b~c`` put ``a``, ``b``, ``c`` together,
    which is what a split needs (no pair of copies may straddle two splits).

    Parameters
    ----------
    hashes
        Hashes from :func:`perceptual_hash`.
    max_distance
        The largest Hamming distance (of 256 bits) counted as a duplicate.

    Returns
    -------
    list of list of int
        Clusters of two or more indices, each sorted, ordered by their first index.

    Examples
    --------
    >>> find_near_duplicates([0b1111, 0b1110, 1 << 200, 0], max_distance=1)
    [[0, 1], [2, 3]]
    """
    if not 0 <= max_distance < _HASH_BITS:
        raise ConfigurationError(
            f"max_distance must be in [0, {_HASH_BITS - 1}], got {max_distance}"
        )
    words = np.array(
        [np.frombuffer(value.to_bytes(_HASH_BITS // 8, "big"), dtype=">u8") for value in hashes],
        dtype=np.uint64,
    ).reshape(len(hashes), _HASH_WORDS)
    union = _UnionFind(len(hashes))
    for start in range(0, len(hashes), _BLOCK_ROWS):
        block = words[start : start + _BLOCK_ROWS]
        distances = np.bitwise_count(block[:, None, :] ^ words[None, start:, :]).sum(axis=2)
        rows, columns = np.nonzero(distances <= max_distance)
        for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
            first, second = start + row, start + column
            if second > first:
                union.union(first, second)
    clusters = [sorted(group) for group in union.groups() if len(group) > 1]
    return sorted(clusters)


@frozen
class DuplicateGroup:
    """Images the perceptual hash says are the same picture.

    Parameters
    ----------
    ids
        The ``XRay.id`` of each image in the group.
    labels
        Their labels, in the same order.
    """

    ids: tuple[str, ...]
    labels: tuple[str | None, ...]

    @property
    def conflicting(self) -> bool:
        """Whether the copies disagree about the label (a data-quality problem)."""
        return len(set(self.labels)) > 1


def _as_tuple(value: Iterable[XRay]) -> tuple[XRay, ...]:
    return tuple(value)


@frozen
class DatasetSplit:
    """The result of :func:`split_dataset`.

    Parameters
    ----------
    train, val, test
        The radiographs of each split, in input order.
    duplicates
        The near-duplicate groups found (empty when ``dedup=False``); each group was kept
        in one split.
    seed
        The seed used.
    """

    train: tuple[XRay, ...] = field(converter=_as_tuple)
    val: tuple[XRay, ...] = field(converter=_as_tuple)
    test: tuple[XRay, ...] = field(converter=_as_tuple)
    duplicates: tuple[DuplicateGroup, ...] = ()
    seed: int = 0

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per label in each split: ``{"train": {"covid-19": 10, ...}, ...}``."""
        result = {}
        for name in _SPLIT_NAMES:
            counter = Counter(str(xray.label) for xray in getattr(self, name))
            result[name] = dict(sorted(counter.items()))
        return result


def _check_sizes(test_size: float, val_size: float) -> None:
    for name, value in (("test_size", test_size), ("val_size", val_size)):
        if not 0.0 <= value < 1.0:
            raise ConfigurationError(f"{name} must be in [0, 1), got {value}")
    if test_size + val_size >= 1.0:
        raise ConfigurationError(
            f"test_size + val_size must be below 1 (nothing would be left to train on), "
            f"got {test_size} + {val_size}"
        )


def split_dataset(
    xrays: Iterable[XRay],
    *,
    test_size: float = 0.25,
    val_size: float = 0.0,
    seed: int = 0,
    group_by_patient: bool = True,
    dedup: bool = True,
    max_hash_distance: int = 40,
) -> DatasetSplit:
    """Split radiographs into train, validation and test sets without leaks.

    Parameters
    ----------
    xrays
        The labelled radiographs (all are held in memory: the result lists them).
    test_size, val_size
        The share of images for the test and validation sets; the rest is training.
    seed
        Seeds the order in which groups are placed; the same input and seed give the same
        split.
    group_by_patient
        Keep every image of one ``patient_id`` in one split (images without a patient id,
        or with a blank one, are their own group; surrounding whitespace is ignored).
    dedup
        Keep near-duplicate images (perceptual hash within ``max_hash_distance`` bits) in
        one split, and report them in :attr:`DatasetSplit.duplicates`.
    max_hash_distance
        Bits (of 256) two perceptual hashes may differ by and still be duplicates. The
        default, 40, was chosen by inspecting pairs in COVID-QU-Ex: below it, pairs are the
        same radiograph re-published (or the same patient's follow-up); unrelated
        radiographs start to appear around 48.

    Returns
    -------
    DatasetSplit
        The three splits; each split's label proportions approach the dataset's, as far as
        whole groups allow.

    Raises
    ------
    ConfigurationError
        For sizes outside ``[0, 1)`` or summing to 1 or more.

    Examples
    --------
    >>> import numpy as np
    >>> from covidcxr import XRay
    >>> rng = np.random.default_rng(0)
    >>> xrays = [
    ...     XRay(rng.integers(0, 255, (32, 32), dtype=np.uint8), id=f"{i}",
    ...          label=("covid-19", "normal")[i % 2], patient_id=f"p{i // 2}")
    ...     for i in range(40)
    ... ]
    >>> split = split_dataset(xrays, test_size=0.25, seed=0)
    >>> len(split.train), len(split.test)
    (30, 10)
    >>> {x.patient_id for x in split.train} & {x.patient_id for x in split.test}
    set()
    """
    _check_sizes(test_size, val_size)
    items = list(xrays)
    union = _UnionFind(len(items))
    if group_by_patient:
        first_of_patient: dict[str, int] = {}
        for index, xray in enumerate(items):
            patient = _patient_key(xray.patient_id)
            if patient is not None:
                union.union(first_of_patient.setdefault(patient, index), index)
    duplicates: list[DuplicateGroup] = []
    if dedup:
        hashes = [perceptual_hash(xray.pixels) for xray in items]
        for cluster in find_near_duplicates(hashes, max_hash_distance):
            for index in cluster[1:]:
                union.union(cluster[0], index)
            duplicates.append(
                DuplicateGroup(
                    ids=tuple(items[index].id for index in cluster),
                    labels=tuple(items[index].label for index in cluster),
                )
            )
    assignment = _assign_groups(
        items, union.groups(), (1 - test_size - val_size, val_size, test_size), seed
    )
    splits: dict[int, list[XRay]] = {0: [], 1: [], 2: []}
    for index, xray in enumerate(items):
        splits[assignment[index]].append(xray)
    return DatasetSplit(
        train=splits[0],
        val=splits[1],
        test=splits[2],
        duplicates=tuple(duplicates),
        seed=seed,
    )


def _patient_key(patient_id: str | None) -> str | None:
    """The id that groups a patient's images: surrounding blanks dropped, blank is none.

    A blank id (``""``, ``"  "``, as an empty CSV cell gives) names no patient; kept, it
    would chain every such image into one group and split them as a block. ``"p1 "`` and
    ``"p1"`` are one patient, not two that may land in different splits.
    """
    if patient_id is None:
        return None
    stripped = str(patient_id).strip()
    return stripped or None


def _assign_groups(
    items: Sequence[XRay], groups: list[list[int]], fractions: tuple[float, float, float], seed: int
) -> dict[int, int]:
    """Place whole groups greedily, each where it best reduces the squared class-count error."""
    label_names = sorted({str(xray.label) for xray in items}, key=_label_order)
    column = {name: position for position, name in enumerate(label_names)}
    group_counts = np.zeros((len(groups), len(label_names)))
    for row, group in enumerate(groups):
        for index in group:
            group_counts[row, column[str(items[index].label)]] += 1
    totals = group_counts.sum(axis=0)
    targets = np.outer(np.asarray(fractions), totals)
    counts = np.zeros_like(targets)
    open_splits = [split for split, fraction in enumerate(fractions) if fraction > 0]
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(groups)).tolist()
    # Large groups first: placed late, they would overshoot a nearly full split.
    order = sorted(shuffled, key=lambda row: -len(groups[row]))
    assignment: dict[int, int] = {}
    for row in order:
        added = group_counts[row]
        # Change of sum((counts - targets)^2) when the group joins each split.
        costs = [
            float(np.sum(added * (2 * (counts[split] - targets[split]) + added)))
            for split in open_splits
        ]
        best = open_splits[int(np.argmin(costs))]
        counts[best] += added
        for index in groups[row]:
            assignment[index] = best
    return assignment


def _label_order(name: str) -> tuple[int, str]:
    return (LABELS.index(name) if name in LABELS else len(LABELS), name)
