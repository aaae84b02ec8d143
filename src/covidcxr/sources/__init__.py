"""Dataset sources: where radiographs come from.

Every source is a :class:`~covidcxr.DatasetSource`: iterate it to get
:class:`~covidcxr.XRay` records, read lazily. Sources are registered by URI scheme, so
:func:`covidcxr.open_source` reaches them:

- ``"file"``: a folder path gives a :class:`FolderSource`; a file, a glob pattern
  (``"scans/**/*.png"``) or a sequence of paths gives a :class:`FilesSource` of
  unlabelled radiographs (:func:`open_local` decides);
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
``"unlabelled"``
    Every image below the folder, at any depth, without a label (for prediction). Folders
    of segmentation masks (``masks``, ``lung masks``, ``infection masks`` ...) are skipped.

With ``layout="auto"``, the default, the source chooses among them from the file names
(:func:`detect_layout`), logs its choice at INFO level on the ``covidcxr.sources`` logger,
and keeps it in ``source.layout`` (with ``source.layout_reason``). A folder of masks is
refused, and names that fit more than one layout are an error listing the ``layout=`` and
``split=`` to pass.
"""

from covidcxr.sources._archive import ZipLimits, ZipSource
from covidcxr.sources._base import CatalogSource
from covidcxr.sources._cos import COSSource, cos_client, upload_folder, upload_folder_as_zip
from covidcxr.sources._folder import (
    RACY_SECONDS,
    FilesSource,
    FolderSource,
    is_glob_pattern,
    open_local,
)
from covidcxr.sources._items import INFECTION_MASK, LUNG_MASK, Entry, RawItem, decode_item
from covidcxr.sources._layouts import (
    AUTO,
    IMAGE_SUFFIXES,
    LAYOUTS,
    QU_EX_SPLITS,
    Catalog,
    DetectedLayout,
    catalog,
    detect_layout,
    is_mask_folder,
    might_be_dicom,
    normalize_splits,
)
from covidcxr.sources._masks import binary_mask, mask_boxes
from covidcxr.sources._skips import ReportsSkips, Skipped, SkippedItemsWarning, skip_reason

__all__ = [
    "AUTO",
    "IMAGE_SUFFIXES",
    "INFECTION_MASK",
    "LAYOUTS",
    "LUNG_MASK",
    "QU_EX_SPLITS",
    "RACY_SECONDS",
    "COSSource",
    "Catalog",
    "CatalogSource",
    "DetectedLayout",
    "Entry",
    "FilesSource",
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
    "detect_layout",
    "is_glob_pattern",
    "is_mask_folder",
    "mask_boxes",
    "might_be_dicom",
    "normalize_splits",
    "open_local",
    "skip_reason",
    "upload_folder",
    "upload_folder_as_zip",
]
