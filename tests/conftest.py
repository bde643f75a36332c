"""Session fixtures: generated demo data in the real layouts (shared by the tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# the suite runs in parallel processes on small CPUs: one thread each avoids oversubscription
torch.set_num_threads(1)
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``data_dir`` holding ``demo/{ALL_IDB2,ADP,C-NMC_Leukemia}``, as ``debug=demo`` makes it."""
    from leuk_lightning.data.synthetic import ensure_demo_data

    data_dir = tmp_path_factory.getbasetemp() / "shared_data"
    ensure_demo_data(data_dir)
    return data_dir
