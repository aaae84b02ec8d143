"""The two forms an item takes inside a source: catalogued, then read.

An :class:`Entry` is what a layout learns from names alone (which file, which class, which
masks). A :class:`RawItem` adds the still-encoded bytes; it is small, plain and picklable,
so the batch runner can ship it to a worker process and decode there, and its
:meth:`RawItem.digest` keys the preprocessing cache without decoding anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, Final

from attrs import field, frozen

from covidcxr.io._reader import MAX_PIXELS, MIN_SIDE, decode_image
from covidcxr.records import Box, XRay
from covidcxr.sources._masks import binary_mask, mask_boxes

__all__ = [
    "DECODE_REVISION",
    "INFECTION_MASK",
    "LUNG_MASK",
    "Entry",
    "RawItem",
    "decode_item",
    "entry_meta",
    "read_entry",
]

#: ``XRay.meta`` key of the infection (lesion) mask; its components become ``XRay.boxes``.
#: Changes whenever :func:`decode_item` turns the same file into other pixels, masks or
#: boxes. The preprocessing cache keys decoded files on it: an upgrade that decodes
#: differently must not be served what an older covidcxr decoded.
#: 1: DICOM signed 8-bit pixels, PixelPaddingValue left out of the stretch, empty display
#: tags; PNG/JPEG with trailing bytes read (all in 0.1.0's later revisions).
DECODE_REVISION: Final = 1

INFECTION_MASK = "infection_mask"
#: ``XRay.meta`` key of the lung-field mask.
LUNG_MASK = "lung_mask"


def _frozen_pairs(
    value: Mapping[str, Any] | tuple[tuple[str, Any], ...],
) -> tuple[tuple[str, Any], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted(items))


@frozen
class Entry:
    """One catalogued image: its name in the source and what the layout says about it.

    Parameters
    ----------
    name
        The image's relative path (``/``-separated) inside the source.
    label
        Canonical label, or ``None`` when unknown.
    patient_id
        The patient, when the layout knows it.
    masks
        ``(meta key, relative path)`` pairs of the image's masks.
    meta
        Extra metadata as ``(key, value)`` pairs (split, finding, view ...).
    """

    name: str
    label: str | None = None
    patient_id: str | None = None
    masks: tuple[tuple[str, str], ...] = field(default=(), converter=_frozen_pairs)
    meta: tuple[tuple[str, Any], ...] = field(default=(), converter=_frozen_pairs)


@frozen
class RawItem:
    """An item read from a source but not decoded: plain data, cheap to pickle.

    Parameters
    ----------
    id
        The id the decoded :class:`~covidcxr.XRay` will have.
    label, patient_id
        As for :class:`~covidcxr.XRay`.
    meta
        Plain metadata (strings, numbers, booleans).
    image
        The encoded image file.
    masks
        Encoded mask files by ``XRay.meta`` key.
    """

    id: str
    label: str | None
    patient_id: str | None
    meta: Mapping[str, Any]
    image: bytes = field(repr=False)
    masks: Mapping[str, bytes] = field(factory=dict, repr=False)

    def digest(self) -> str:
        """A hash of everything the decoded pixels, masks and boxes depend on.

        Labels, ids and metadata are not part of it: the same file under another name
        preprocesses to the same pixels.
        """
        hasher = hashlib.blake2b(digest_size=20)
        hasher.update(len(self.image).to_bytes(8, "little"))
        hasher.update(self.image)
        for key in sorted(self.masks):
            encoded_key = key.encode()
            hasher.update(len(encoded_key).to_bytes(4, "little") + encoded_key)
            hasher.update(len(self.masks[key]).to_bytes(8, "little"))
            hasher.update(self.masks[key])
        return hasher.hexdigest()


def entry_meta(entry: Entry, identifier: str) -> dict[str, Any]:
    """The metadata a record read from ``entry`` starts with: its path, then the layout's."""
    return {"path": identifier, **dict(entry.meta)}


def read_entry(
    entry: Entry, read: Callable[[str], bytes], item_id: Callable[[str], str]
) -> RawItem:
    """Read one entry's image and mask files into a :class:`RawItem`.

    Parameters
    ----------
    entry
        The catalogued item.
    read
        Returns the content of a file named as in the catalogue; raises
        :class:`~covidcxr.InvalidImageError` naming it on failure.
    item_id
        The record id of a file named as in the catalogue (a path, a member, a URI).
    """
    identifier = item_id(entry.name)
    return RawItem(
        id=identifier,
        label=entry.label,
        patient_id=entry.patient_id,
        meta=entry_meta(entry, identifier),
        image=read(entry.name),
        masks={key: read(name) for key, name in entry.masks},
    )


def decode_item(
    item: RawItem,
    *,
    min_side: int = MIN_SIDE,
    max_pixels: int = MAX_PIXELS,
    min_lesion_area: int = 1,
) -> XRay:
    """Decode a :class:`RawItem` into an :class:`~covidcxr.XRay`.

    Masks are decoded to read-only 0/255 ``uint8`` arrays at the image's resolution and
    stored in ``meta`` under their keys; the connected components of the
    ``"infection_mask"`` become ``boxes``. ``meta["annotated"]`` says whether the lesions
    are known: the layout's word where it gave one, else whether an infection mask came
    with the image.

    Raises
    ------
    InvalidImageError
        If the image or one of its masks is not usable, naming the item (and the mask).
    """
    decoded = decode_image(item.image, item.id, min_side=min_side, max_pixels=max_pixels)
    meta: dict[str, Any] = {**item.meta, "format": decoded.format, **decoded.tags}
    # Lesions are known only where an infection mask came with the image: without one an
    # empty ``boxes`` means "never annotated", not "no lesion" (see GroundTruth.annotated),
    # so a class-folder set's detections are not scored against boxes nobody drew.
    meta.setdefault("annotated", INFECTION_MASK in item.masks)
    shape = decoded.pixels.shape
    for key, data in sorted(item.masks.items()):
        where = f"{item.id} ({key.replace('_', ' ')})"
        mask = decode_image(data, where, min_side=1, max_pixels=max_pixels).pixels
        meta[key] = binary_mask(mask, shape)
    boxes: tuple[Box, ...] = ()
    if INFECTION_MASK in meta:
        boxes = mask_boxes(meta[INFECTION_MASK], min_area=min_lesion_area)
    patient_id = item.patient_id or decoded.tags.get("dicom_patient_id")
    return XRay(
        decoded.pixels,
        id=item.id,
        label=item.label,
        patient_id=patient_id,
        boxes=boxes,
        meta=meta,
    )
