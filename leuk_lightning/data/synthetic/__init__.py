"""Look-alike datasets written in the EXACT on-disk layouts of the real downloads.

They are the embedded demo data (:func:`ensure_demo_data`) and every test fixture: the real
loaders read them unchanged, so a demo run exercises the same code as a run on the real data.
``render`` draws cells and tissue, ``classification`` writes ALL-IDB2 / ADP / C-NMC,
``cells_voc`` writes LabelImg VOC boxes, ``demo`` builds them all once.
"""

from leuk_lightning.data.synthetic.cells_voc import CELL_CLASSES, write_cells_voc
from leuk_lightning.data.synthetic.classification import (
    ADP_SLIDE_NAMES,
    ALL_IDB2_VARIATION,
    CNMC_VARIATION,
    render_blood_cell,
    write_adp,
    write_all_idb2,
    write_cnmc,
)
from leuk_lightning.data.synthetic.demo import (
    DEMO_MARKER,
    DEMO_NAMES,
    DEMO_VERSION,
    ensure_demo_data,
)
from leuk_lightning.data.synthetic.render import CellVariation

__all__ = [
    "ADP_SLIDE_NAMES",
    "ALL_IDB2_VARIATION",
    "CNMC_VARIATION",
    "CellVariation",
    "CELL_CLASSES",
    "DEMO_MARKER",
    "DEMO_NAMES",
    "DEMO_VERSION",
    "ensure_demo_data",
    "render_blood_cell",
    "write_adp",
    "write_all_idb2",
    "write_cells_voc",
    "write_cnmc",
]
