"""Shared test helpers: compose the real configs, run the real entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import leuk_lightning  # noqa: F401  (registers the config resolvers)
from leuk_lightning.utils.config import apply_debug_last, config_dir

REPO = Path(__file__).resolve().parents[1]


def compose_config(overrides: list[str], root: Path, data_dir: Path | None = None) -> DictConfig:
    """Compose ``train.yaml`` with overrides as the app would, writing everything under ``root``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    apply_debug_last(cfg)
    with open_dict(cfg):
        cfg.paths.root_dir = str(root)
        cfg.paths.data_dir = str(data_dir or root / "data")
        cfg.paths.output_dir = str(root / "run")
        cfg.paths.log_dir = str(root / "logs")
        cfg.extras.print_config = False
    return cfg


def run_app(
    args: list[str], root: Path, data_dir: Path | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run ``python -m leuk_lightning ARGS`` in ``root`` (data and logs under it)."""
    env = dict(os.environ)
    env.update(
        LEUK_ROOT=str(root),
        LEUK_DATA_DIR=str(data_dir or root / "data"),
        WANDB_MODE="offline",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return subprocess.run(
        [sys.executable, "-m", "leuk_lightning", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


#: a slim YOLOv3 (Darknet-53 at 1/8 width and depth) for fast detector and app tests
TINY_YOLO = dict(
    arch="yolov3",
    backbone="darknet53",
    out_indices=(3, 4, 5),
    backbone_width=0.125,
    backbone_depth=0.125,
    neck_widths=(32, 16, 16),
    image_mean=(0.0, 0.0, 0.0),
    image_std=(1.0, 1.0, 1.0),
)
