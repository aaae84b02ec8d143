"""Datasets in a local folder."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from covidcxr.errors import InvalidImageError, SourceError
from covidcxr.io.reader import MAX_PIXELS, MIN_SIDE
from covidcxr.sources.base import CatalogSource

__all__ = ["FolderSource"]


class FolderSource(CatalogSource):
    """Radiographs in a local folder, arranged in one of the known layouts.

    Files are listed once, when the source is created; pixels are read lazily, one image
    at a time, on every iteration. Records get the file path as ``id`` and
    ``meta["path"]``, the split (for layouts with splits) as ``meta["split"]``, masks as
    0/255 ``uint8`` arrays in ``meta`` (``"infection_mask"``, ``"lung_mask"``), and the
    connected components of the infection mask as ``boxes``.

    Parameters
    ----------
    root
        The dataset folder.
    layout
        ``"classes"`` (one subfolder per class), ``"covid-qu-ex"``, ``"covid-radiography"``
        or ``"ieee8023"``; see :mod:`covidcxr.sources.layouts`.
    split
        For ``"covid-qu-ex"``: ``"Train"``, ``"Val"``, ``"Test"`` or a sequence of them
        (``None``: all). For ``"classes"``: the name(s) of split folders above the class
        folders.
    label_aliases
        Extra or overriding class-folder spellings, ``{folder name: canonical label}``.
    on_error
        ``"raise"``: an unreadable image raises :class:`~covidcxr.InvalidImageError`.
        ``"skip"``: it is left out, recorded in :attr:`skipped` and counted in a
        :class:`~covidcxr.sources.SkippedItemsWarning`.
    load_masks
        Read the masks of layouts that have them (turn off when only classifying).
    min_side, max_pixels
        Size limits for images, as for :func:`covidcxr.io.read_image`.
    min_lesion_area
        Infection-mask components smaller than this many pixels give no box.

    Raises
    ------
    SourceError
        If ``root`` is not a folder or holds no images for the layout.
    UnknownLabelError
        If a class folder is not a known spelling; the message lists the folders found.
    ConfigurationError
        For an unknown layout, split or ``on_error``.

    Examples
    --------
    >>> import cv2, numpy as np, pathlib, tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for folder in ("COVID", "NORMAL"):
    ...     (root / folder).mkdir()
    ...     _ = cv2.imwrite(str(root / folder / "a.png"), np.zeros((64, 64), np.uint8))
    >>> source = FolderSource(root)
    >>> len(source), source.classes
    (2, ('covid-19', 'normal'))
    >>> [xray.label for xray in source]
    ['covid-19', 'normal']
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        layout: str = "classes",
        split: str | Sequence[str] | None = None,
        label_aliases: Mapping[str, str] | None = None,
        on_error: str = "raise",
        load_masks: bool = True,
        min_side: int = MIN_SIDE,
        max_pixels: int = MAX_PIXELS,
        min_lesion_area: int = 1,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: no such folder")
        super().__init__(
            where=str(self.root),
            layout=layout,
            split=split,
            label_aliases=label_aliases,
            on_error=on_error,
            load_masks=load_masks,
            min_side=min_side,
            max_pixels=max_pixels,
            min_lesion_area=min_lesion_area,
        )

    def _list_names(self) -> list[str]:
        names: list[str] = []
        for directory, folders, files in os.walk(self.root, followlinks=False):
            folders[:] = [folder for folder in folders if not folder.startswith(".")]
            relative = Path(directory).relative_to(self.root)
            names.extend((relative / file).as_posix() for file in files)
        return sorted(names)

    def _read(self, name: str) -> bytes:
        path = self.root / name
        try:
            return path.read_bytes()
        except OSError as exc:
            raise InvalidImageError(
                f"could not read the file: {exc.strerror or exc}", str(path)
            ) from exc

    def _item_id(self, name: str) -> str:
        return str(self.root / name)
