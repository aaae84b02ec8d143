"""Dataset sources: where radiographs come from.

Every source is a :class:`~covidcxr.DatasetSource`: iterate it to get
:class:`~covidcxr.XRay` records, read lazily. Sources are registered by URI scheme, so
:func:`covidcxr.open_source` reaches them:

- ``"file"`` (a folder path): :class:`FolderSource`;
- ``"zip"`` (a ``.zip`` path): :class:`ZipSource`;
- ``"cos"`` (``cos://bucket/prefix``): :class:`COSSource` (IBM Cloud Object Storage).

Sources understand the layouts of the public datasets. A layout turns the list of file
names in a source (a folder, a zip archive, a bucket prefix) into :class:`Entry` records,
from names alone, so the same layouts work for every source (:func:`catalog`):

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

from covidcxr.sources._archive import ZipLimits, ZipSource
from covidcxr.sources._base import CatalogSource
from covidcxr.sources._cos import COSSource, cos_client, upload_folder, upload_folder_as_zip
from covidcxr.sources._folder import RACY_SECONDS, FolderSource
from covidcxr.sources._items import INFECTION_MASK, LUNG_MASK, Entry, RawItem, decode_item
from covidcxr.sources._layouts import (
    IMAGE_SUFFIXES,
    LAYOUTS,
    QU_EX_SPLITS,
    Catalog,
    catalog,
    normalize_splits,
)
from covidcxr.sources._masks import binary_mask, mask_boxes
from covidcxr.sources._skips import ReportsSkips, Skipped, SkippedItemsWarning

__all__ = [
    "IMAGE_SUFFIXES",
    "INFECTION_MASK",
    "LAYOUTS",
    "LUNG_MASK",
    "QU_EX_SPLITS",
    "RACY_SECONDS",
    "COSSource",
    "Catalog",
    "CatalogSource",
    "Entry",
    "FolderSource",
    "RawItem",
    "ReportsSkips",
    "Skipped",
    "SkippedItemsWarning",
    "ZipLimits",
    "ZipSource",
    "binary_mask",
    "catalog",
    "cos_client",
    "decode_item",
    "mask_boxes",
    "normalize_splits",
    "upload_folder",
    "upload_folder_as_zip",
]
