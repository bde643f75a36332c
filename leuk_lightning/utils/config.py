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


# ------------------------------------------------------------------------------------------
# settings checked before any data is read


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _positive_int(v: Any) -> bool:
    return _is_int(v) and v >= 1


def _rules() -> dict[str, tuple[Any, str]]:
    positive = (_positive_int, "a positive integer")
    nullable_positive = (lambda v: v is None or _positive_int(v), "a positive integer or null")
    return {
        "batch_size": positive,  # data.batch_size, data.source_batch_size, ...
        "eval_batch_size": nullable_positive,
        # DL4ALL |Bs|: a size, or `auto` = the authors' rule ceil(|Bt| * |source| / |target|)
        "source_batch_size": (
            lambda v: v == "auto" or _positive_int(v),
            "a positive integer or auto",
        ),
        "image_size": nullable_positive,
        "num_workers": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        "max_epochs": (lambda v: _is_int(v) and (v >= 1 or v == -1), "a positive integer or -1"),
        "min_epochs": (lambda v: v is None or (_is_int(v) and v >= 0), "an integer >= 0 or null"),
        "max_steps": (lambda v: _is_int(v) and (v >= 1 or v == -1), "a positive integer or -1"),
        "accumulate_grad_batches": positive,
        "log_every_n_steps": positive,
        "check_val_every_n_epoch": nullable_positive,
        "limit_train_batches": (
            lambda v: v is None or (_is_int(v) and v >= 1) or (isinstance(v, float) and 0 < v <= 1),
            "a positive integer or a fraction in (0, 1]",
        ),
        "lr": (
            lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v > 0,
            "a positive number",
        ),
        "last_every_n_train_steps": (
            lambda v: v is None or (_is_int(v) and v >= 0),
            "an integer >= 0 or null",
        ),
    }


def _fractions_ok(v: Any) -> bool:
    if not isinstance(v, list | tuple) or len(v) < 2:
        return False
    if not all(isinstance(f, int | float) and not isinstance(f, bool) and 0 < f <= 1 for f in v):
        return False
    return abs(sum(v) - 1.0) <= 1e-6


def config_problems(cfg: DictConfig) -> list[str]:
    """The settings of ``cfg`` whose value cannot work (negative or zero sizes, epochs, steps,
    learning rates; split fractions outside (0, 1] or not summing to 1), as ``key=value (...)``."""
    rules = _rules()
    problems: list[str] = []

    def check(node: Any, path: str) -> None:
        if isinstance(node, DictConfig):
            keys = list(node.keys())
        else:
            return
        for key in keys:
            where = f"{path}.{key}" if path else str(key)
            try:
                value = node[key]
            except Exception:  # noqa: BLE001 - an interpolation only Hydra resolves: not ours
                continue
            if isinstance(value, DictConfig):
                check(value, where)
                continue
            value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            name = str(key)
            rule = rules.get(name) or (
                rules["batch_size"]
                if name.endswith("_batch_size") and name != "eval_batch_size"
                else None
            )
            if rule is not None and not rule[0](value):
                problems.append(f"{where}={value!r} (must be {rule[1]})")
            elif name == "fractions" and value is not None and not _fractions_ok(value):
                problems.append(
                    f"{where}={value!r} (must be two or more fractions in (0, 1] summing to 1)"
                )

    for section in ("data", "trainer", "regime", "callbacks", "pretrain"):
        if section in cfg:
            try:
                check(cfg[section], section)
            except Exception:  # noqa: BLE001 - never let the check itself stop a valid run
                continue
    return problems


def validate_config(cfg: DictConfig) -> None:
    """Raise one :class:`ConfigError` listing every impossible setting, before data is read."""
    from leuk_lightning.errors import ConfigError

    problems = config_problems(cfg)
    if problems:
        raise ConfigError("invalid setting(s): " + "; ".join(problems))
