"""Rebuilding a finished run from its directory (explain, detect): where it is, what it used."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from leuk_lightning.errors import ConfigError


def find_run_dir(ckpt_path: str | Path) -> Path:
    """The run directory of a checkpoint: the nearest parent holding ``.hydra/config.yaml``."""
    ckpt = Path(ckpt_path)
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path={ckpt}: checkpoint file not found")
    for parent in ckpt.resolve().parents:
        if (parent / ".hydra" / "config.yaml").is_file():
            return parent
    raise ConfigError(
        f"ckpt_path={ckpt}: no .hydra/config.yaml in any parent folder; the checkpoint must stay "
        "inside its run directory (logs/<task>/runs/<time>/checkpoints/)"
    )


def load_run_config(run_dir: Path, overrides: Sequence[str] = ()) -> DictConfig:
    """The run's config as it ran: ``.hydra/config.yaml`` + ``hydra.yaml`` + debug/protocol."""
    from hydra.core.hydra_config import HydraConfig

    import leuk_lightning  # noqa: F401  (registers the resolvers)
    from leuk_lightning.utils.config import apply_debug_last

    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():
        from hydra.conf import HydraConf

        saved = OmegaConf.load(hydra_file).hydra
        with open_dict(cfg):
            schema = OmegaConf.structured(HydraConf)
            OmegaConf.set_struct(schema, False)  # Hydra adds config-group keys (e.g. env)
            cfg.hydra = OmegaConf.merge(schema, saved)
        HydraConfig.instance().set_config(cfg)  # ${hydra:...} and the run's choices/overrides
        apply_debug_last(cfg)
    with open_dict(cfg):
        if "LEUK_ROOT" not in os.environ and "hydra" in cfg:
            cfg.paths.root_dir = str(cfg.hydra.runtime.cwd)  # relative paths as when it ran
        cfg.paths.output_dir = str(run_dir)
    if overrides:
        cfg.merge_with(OmegaConf.from_dotlist(list(overrides)))
    return cfg
