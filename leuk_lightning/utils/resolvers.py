"""OmegaConf resolvers used by the configs in ``conf/`` (registered on import of the package)."""

from __future__ import annotations

import os

from omegaconf import OmegaConf


def _wandb_offline() -> bool:
    """W&B runs offline unless the user asked for online mode through ``WANDB_MODE``."""
    return os.environ.get("WANDB_MODE", "offline").lower() not in {"online", "run"}


def register_resolvers() -> None:
    """Register ``${leuk.cwd:}`` and ``${leuk.wandb_offline:}`` once per process."""
    if not OmegaConf.has_resolver("leuk.cwd"):
        OmegaConf.register_new_resolver("leuk.cwd", lambda: os.getcwd())
    if not OmegaConf.has_resolver("leuk.wandb_offline"):
        OmegaConf.register_new_resolver("leuk.wandb_offline", _wandb_offline)
