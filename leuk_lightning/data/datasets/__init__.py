"""Plain torch Datasets over the real datasets' on-disk layouts (no Lightning here).

Each module's docstring documents the exact file layout it reads.
"""

from leuk_lightning.data.datasets._common import decode_image
from leuk_lightning.data.datasets.adp import (
    ADP_COLUMNS,
    ADP_CSV_NAME,
    ADP_EMPTY_COLUMNS,
    ADP_LEVELS,
    AdpDataset,
    adp_slide_of,
)
from leuk_lightning.data.datasets.all_idb import ALL_IDB2_CLASSES, AllIdb2Dataset
from leuk_lightning.data.datasets.cnmc import (
    CNMC_CLASSES,
    CNMC_FINAL_DIR,
    CNMC_PRELIM_CSV,
    CNMC_PRELIM_DIR,
    CnmcDataset,
    is_normal_subject,
    parse_cnmc_name,
)
from leuk_lightning.data.datasets.folder import FolderDataset
from leuk_lightning.data.datasets.manifest import MANIFEST_SPLITS, ManifestDataset

__all__ = [
    "ADP_COLUMNS",
    "ADP_CSV_NAME",
    "ADP_EMPTY_COLUMNS",
    "ADP_LEVELS",
    "ALL_IDB2_CLASSES",
    "CNMC_CLASSES",
    "CNMC_FINAL_DIR",
    "CNMC_PRELIM_CSV",
    "CNMC_PRELIM_DIR",
    "MANIFEST_SPLITS",
    "AdpDataset",
    "AllIdb2Dataset",
    "CnmcDataset",
    "FolderDataset",
    "ManifestDataset",
    "adp_slide_of",
    "decode_image",
    "is_normal_subject",
    "parse_cnmc_name",
]
