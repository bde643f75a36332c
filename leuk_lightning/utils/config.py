"""Finding ``conf/`` and small helpers around the composed config."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def config_dir() -> Path:
    """The Hydra config directory: inside an installed wheel, or ``conf/`` of a source checkout."""
    for candidate in (PACKAGE_DIR / "conf", PACKAGE_DIR.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"leuk-lightning configs not found: looked for train.yaml in {PACKAGE_DIR / 'conf'} "
        f"and {PACKAGE_DIR.parent / 'conf'}; reinstall the package"
    )


def config_hash(cfg: DictConfig | dict[str, Any], length: int = 12) -> str:
    """A stable hash of a (resolved) config: same settings, same hash, on any machine."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    text = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def selected_choice(cfg: DictConfig, group: str = "debug") -> str | None:
    """The ``debug=...`` (or other ``group``) choice of the composed config (None if unused)."""
    from hydra.core.hydra_config import HydraConfig

    choices = None
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
    elif "hydra" in cfg:
        choices = cfg.hydra.runtime.choices
    return None if choices is None else choices.get(group)


def apply_debug_last(cfg: DictConfig) -> DictConfig:
    """Merge the selected ``debug`` config again, on top of everything.

    ``+experiment=NAME`` is appended to the end of the defaults list, i.e. after ``debug``, so an
    experiment's paper settings (100 epochs, 224 px) would override ``debug=demo``. A debug config
    must win (that is its purpose), so its values are applied once more after composition.
    Command-line value overrides are applied again after it, so the order of precedence is the
    one of lightning-hydra-template: command line > debug > experiment > defaults.
    """
    # an explicitly chosen evaluation protocol (its split settings) also wins over the
    # experiment's split: command line > debug > protocol > experiment > defaults
    names = [(g, selected_choice(cfg, g)) for g in ("protocol", "debug")]
    names = [(g, n) for g, n in names if n]
    if not names:
        return cfg
    struct = OmegaConf.is_struct(cfg)
    OmegaConf.set_struct(cfg, False)
    for group, name in names:
        extra = OmegaConf.load(config_dir() / group / f"{name}.yaml")
        extra.pop("defaults", None)
        extra.pop("hydra", None)  # sweeper settings were used by Hydra already
        cfg.merge_with(extra)
    for key, value in _value_overrides(cfg):
        OmegaConf.update(cfg, key, value, merge=True, force_add=True)
    OmegaConf.set_struct(cfg, struct)
    return cfg


def _value_overrides(cfg: DictConfig) -> list[tuple[str, Any]]:
    """``key=value`` overrides of the command line (not config-group choices, not hydra.*)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if HydraConfig.initialized():
        lines = list(HydraConfig.get().overrides.task)
    elif "hydra" in cfg:
        lines = list(cfg.hydra.overrides.task)
    else:
        return []
    root = config_dir()
    result = []
    for override in OverridesParser.create().parse_overrides(lines):
        key = override.key_or_group
        if override.package is not None or override.is_delete() or key.startswith("hydra"):
            continue
        if (root / key.replace(".", "/")).is_dir() or (root / key).is_dir():
            continue  # a config-group choice, already composed
        result.append((key, override.value()))
    return result


def resolved_dict(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as plain resolved Python values, without Hydra's own ``hydra`` node."""
    return {
        str(k): (
            OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
        )
        for k in cfg
        if k != "hydra"
    }


def plain(value: Any) -> Any:
    """Config nodes (DictConfig/ListConfig) as plain Python containers; other values unchanged."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
