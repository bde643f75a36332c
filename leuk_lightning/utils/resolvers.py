"""OmegaConf resolvers used by the configs in ``conf/`` (registered on import of the package)."""

from __future__ import annotations

import os
from typing import Any

from omegaconf import OmegaConf

_RUN_ID: list[str] = []


def run_id() -> str:
    """``${leuk.run_id:}``: 6 random hex digits drawn once per process. The run and sweep
    directories end with it, so two runs started in the same second (on one machine or on a
    cluster) never share a directory; DDP children get their job's directory explicitly."""
    if not _RUN_ID:
        import secrets

        _RUN_ID.append(secrets.token_hex(3))
    return _RUN_ID[0]


RECIPES = ("code", "paper_text")


def by_recipe(code: Any, text: Any, *, _root_: Any) -> Any:
    """``${leuk.recipe:<code value>,<text value>}``: the value of the authors' code (default) or,
    with ``recipe=paper_text``, the value the paper's text gives, where the two disagree."""
    recipe = _root_.get("recipe", "code")
    if recipe not in RECIPES:
        from leuk_lightning.errors import ConfigError

        raise ConfigError(f"recipe={recipe!r} is not known; use one of {list(RECIPES)}")
    return text if recipe == "paper_text" else code


def if_demo(demo: Any, normal: Any, *, _root_: Any) -> Any:
    """``${leuk.demo:<demo value>,<normal value>}``: the first with ``debug=demo`` (which sets
    ``demo_data: true``), else the second; lets an experiment pick a CPU-sized model for its
    demo (e.g. the detectors' backbones) while its file keeps the paper's."""
    return demo if _root_.get("demo_data", False) else normal


def experiments_help() -> str:
    """One line per ``conf/experiment/*.yaml``: its name and the first line of its comment."""
    from leuk_lightning.utils.config import config_dir

    lines = []
    files = sorted((config_dir() / "experiment").glob("*.yaml"))
    width = max((len(f.stem) for f in files), default=0)
    for f in files:
        comments = [
            line.lstrip("# ").strip()
            for line in f.read_text().splitlines()
            if line.startswith("#") and "@package" not in line
        ]
        title = comments[0] if comments else ""
        title = title if len(title) <= 70 else title[:69].rstrip() + "…"
        lines.append(f"  {f.stem:<{width}}  {title}")
    return "\n".join(lines)


def _commands_help() -> str:
    from leuk_lightning.cli import commands_help

    return commands_help()


def register_resolvers() -> None:
    """Register the ``${leuk.*:}`` resolvers once per process: ``cwd``, and
    ``recipe`` (code vs paper text), ``experiments``/``commands`` (the ``--help`` lists)."""
    if not OmegaConf.has_resolver("leuk.cwd"):
        OmegaConf.register_new_resolver("leuk.cwd", lambda: os.getcwd())
    if not OmegaConf.has_resolver("leuk.recipe"):
        OmegaConf.register_new_resolver("leuk.recipe", by_recipe)
    if not OmegaConf.has_resolver("leuk.demo"):
        OmegaConf.register_new_resolver("leuk.demo", if_demo)
    if not OmegaConf.has_resolver("leuk.experiments"):
        OmegaConf.register_new_resolver("leuk.experiments", experiments_help)
    if not OmegaConf.has_resolver("leuk.run_id"):
        # cached in the config (like Hydra's ${now:}): a pickled config (submitit) keeps its value
        OmegaConf.register_new_resolver("leuk.run_id", run_id, use_cache=True)
    if not OmegaConf.has_resolver("leuk.commands"):
        OmegaConf.register_new_resolver("leuk.commands", _commands_help)
