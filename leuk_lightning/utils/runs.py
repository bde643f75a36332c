"""Rebuilding a finished run from its directory (explain, detect): where it is, what it used."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from leuk_lightning.errors import ConfigError, did_you_mean


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
    return apply_overrides(cfg, overrides, f"the config of {run_dir}")


def apply_overrides(cfg: DictConfig, overrides: Sequence[str], where: str) -> DictConfig:
    """Apply dotted ``key=value`` overrides; a key ``cfg`` lacks is a ConfigError with a
    suggestion, never silently added (``+key=value`` adds a new key on purpose)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not key=value")
        add = key.startswith("+")
        key = key.lstrip("+")
        if not add and OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
            raise ConfigError(f"{where} has no key '{key}'{did_you_mean(key, _flat_keys(cfg))}")
        OmegaConf.update(cfg, key, OmegaConf.from_dotlist([f"v={value}"]).v, force_add=add)
    return cfg


_MISSING = object()


def _flat_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for k in cfg:
        keys.append(f"{prefix}{k}")
        node = cfg._get_node(k)
        if isinstance(node, DictConfig):
            keys.extend(_flat_keys(node, f"{prefix}{k}."))
    return keys
