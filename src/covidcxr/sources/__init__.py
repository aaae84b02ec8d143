"""Dataset sources: where radiographs come from.

Every source is a :class:`~covidcxr.DatasetSource`: iterate it to get
:class:`~covidcxr.XRay` records, read lazily. Sources are registered by URI scheme, so
:func:`covidcxr.open_source` reaches them:

- ``"file"`` (a folder path): :class:`FolderSource`;
- ``"zip"`` (a ``.zip`` path): :class:`ZipSource`;
- ``"cos"`` (``cos://bucket/prefix``): :class:`COSSource` (IBM Cloud Object Storage).

Sources understand the layouts of the public datasets (:mod:`covidcxr.sources._layouts`).
"""

from covidcxr.sources._archive import ZipLimits, ZipSource
from covidcxr.sources._base import CatalogSource
from covidcxr.sources._cos import COSSource, cos_client, upload_folder, upload_folder_as_zip
from covidcxr.sources._folder import FolderSource
from covidcxr.sources._items import INFECTION_MASK, LUNG_MASK, Entry, RawItem, decode_item
from covidcxr.sources._layouts import LAYOUTS, QU_EX_SPLITS
from covidcxr.sources._masks import binary_mask, mask_boxes
from covidcxr.sources._skips import Skipped, SkippedItemsWarning

__all__ = [
    "INFECTION_MASK",
    "LAYOUTS",
    "LUNG_MASK",
    "QU_EX_SPLITS",
    "COSSource",
    "CatalogSource",
    "Entry",
    "FolderSource",
    "RawItem",
    "Skipped",
    "SkippedItemsWarning",
    "ZipLimits",
    "ZipSource",
    "binary_mask",
    "cos_client",
    "decode_item",
    "mask_boxes",
    "upload_folder",
    "upload_folder_as_zip",
]
