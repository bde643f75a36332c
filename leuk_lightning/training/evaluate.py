"""Test a trained checkpoint on the test set of the run that wrote it (``leuk-lightning eval``).

The run is rebuilt from its own directory: its ``.hydra`` config (``debug=...`` re-applied, as
the entry point does), the saved splits (``split.json``, or ``split_source.json`` +
``split_target.json`` for DL4ALL) so the test set is exactly the one the run used, and dotted
config overrides (e.g. ``paths.data_dir=...`` when the data moved). Results go to a fresh
folder, ``<run dir>/eval/<time>`` by default, never over the run's own ``results.json``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import open_dict

from leuk_lightning.training.run import run
from leuk_lightning.utils.runs import find_run_dir, load_run_config

log = logging.getLogger(__name__)

#: split files a run may hold -> the datamodule argument that reuses them
SPLIT_FILES = {
    "split.json": "split_file",
    "split_source.json": "source_split_file",
    "split_target.json": "target_split_file",
}


def evaluate(
    ckpt_path: str | Path, overrides: Sequence[str] = (), out_dir: str | Path | None = None
) -> dict[str, Any]:
    """Test ``ckpt_path`` on its run's test split; returns the metrics (also in results.json)."""
    run_dir = find_run_dir(ckpt_path)
    cfg = load_run_config(run_dir, overrides)
    out = Path(out_dir) if out_dir else run_dir / "eval" / time.strftime("%Y-%m-%d_%H-%M-%S")
    with open_dict(cfg):
        cfg.train, cfg.test = False, True
        cfg.ckpt_path = str(Path(ckpt_path).resolve())
        cfg.paths.output_dir = str(out)
        cfg.logger = None
        for key, value in (("pretrained", False), ("init_from", None)):
            if key in cfg.model:  # the checkpoint holds every weight
                cfg.model[key] = value
        for name, arg in SPLIT_FILES.items():
            if (run_dir / name).is_file():
                cfg.data[arg] = str(run_dir / name)
    if cfg.get("demo_data"):
        from leuk_lightning.data.synthetic import ensure_demo_data

        ensure_demo_data(Path(cfg.paths.data_dir), variation=cfg.get("demo_variation"))
    log.info("Testing %s on the test split of %s -> %s", ckpt_path, run_dir, out)
    return run(cfg)
