"""One training run: instantiate datamodule, network, regime, trainer, loggers and callbacks from
the config; fit; test the best checkpoint; write ``results.json`` (atomically) in the run dir."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from leuk_lightning.errors import ConfigError
from leuk_lightning.training.tracking import (
    finish,
    instantiate_loggers,
    job_config,
    log_artifacts,
    review_callbacks,
)
from leuk_lightning.utils.checkpoint import AtomicCheckpointIO
from leuk_lightning.utils.distributed import trainer_overrides
from leuk_lightning.utils.io import atomic_write_json, atomic_write_text
from leuk_lightning.utils.speed import apply_speed_options

log = logging.getLogger(__name__)


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group dict (callbacks, loggers)."""
    objects: list[Any] = []
    for _, conf in (cfg or {}).items():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            objects.append(hydra.utils.instantiate(conf))
    return objects


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str) -> str | None:
    """``last`` means this run directory's ``checkpoints/last.ckpt`` (resume after a crash)."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path == "last":
        last = Path(output_dir) / "checkpoints" / "last.ckpt"
        if not last.is_file():
            log.warning("ckpt_path=last but %s does not exist: starting from scratch", last)
            return None
        return str(last)
    if not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path}: checkpoint file not found")
    return ckpt_path


_MISMATCH = (
    "Error(s) in loading state_dict",
    "loaded state dict",
    "doesn't match the size of optimizer",
    "parameter group",
)


@contextlib.contextmanager
def checkpoint_mismatch_is_config_error(ckpt: str | None) -> Iterator[None]:
    """A checkpoint of another model or regime (resume, test) is one line naming the file,
    not Lightning's state-dict traceback."""
    try:
        yield
    except (RuntimeError, ValueError, KeyError) as exc:
        text = str(exc)
        if ckpt and any(m in text for m in _MISMATCH):
            first = text.strip().splitlines()[0][:300]
            raise ConfigError(
                f"ckpt_path={ckpt} does not fit this run's model/regime (was it written by "
                f"another experiment?): {first}"
            ) from exc
        raise


def apply_extras(cfg: DictConfig) -> None:
    """Global settings that are not objects: warnings, matmul precision, config printing."""
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if extras.get("matmul_precision"):
        torch.set_float32_matmul_precision(extras.matmul_precision)
    if extras.get("print_config"):
        from leuk_lightning.utils.printing import print_config_tree

        print_config_tree(cfg)


def build(cfg: DictConfig) -> dict[str, Any]:
    """Instantiate everything of one run; returns a dict of the objects (used by tests too)."""
    output_dir = str(cfg.paths.output_dir)
    cache_dirs = {
        key: str(Path(cfg.paths.cache_dir) / sub)
        for key, sub in (("stats_cache_dir", "stats"), ("cache_dir", "images"))
        if key not in cfg.data
    }
    datamodule = hydra.utils.instantiate(cfg.data, output_dir=output_dir, **cache_dirs)
    datamodule.prepare_data()
    model_kwargs = datamodule.model_kwargs()
    net = hydra.utils.instantiate(cfg.model, **model_kwargs)
    module = hydra.utils.instantiate(cfg.regime, net=net, **datamodule.regime_kwargs())
    apply_speed_options(module, datamodule, cfg.get("extras"), cfg.trainer)
    callbacks: list[Callback] = instantiate_group(cfg.get("callbacks"))
    loggers, wandb_options = instantiate_loggers(cfg)
    callbacks += review_callbacks(loggers, wandb_options)
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
        **trainer_overrides(cfg.trainer),
    )
    return {
        "datamodule": datamodule,
        "net": net,
        "module": module,
        "trainer": trainer,
        "callbacks": callbacks,
        "loggers": loggers,
        "wandb_options": wandb_options,
    }


def run(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test one configuration; returns the metrics (and writes them to results.json)."""
    from leuk_lightning.training.seeds import job_seed

    L.seed_everything(job_seed(cfg), workers=True)
    apply_extras(cfg)
    objects = build(cfg)
    try:
        return _fit_and_test(cfg, objects)
    finally:
        finish(objects["loggers"])  # one W&B run per job and per stage


def _fit_and_test(cfg: DictConfig, objects: dict[str, Any]) -> dict[str, Any]:
    trainer, module, datamodule = objects["trainer"], objects["module"], objects["datamodule"]
    for logger in objects["loggers"]:
        logger.log_hyperparams(job_config(cfg))

    metrics: dict[str, Any] = {}
    if cfg.get("train", True):
        ckpt = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.output_dir)
        # checkpoints are plain data, read with weights_only=True (utils/checkpoint.py)
        with checkpoint_mismatch_is_config_error(ckpt):
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    best = best_checkpoint(trainer)
    if cfg.get("test", True):
        ckpt = (
            best
            if cfg.get("train", True)
            else resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.output_dir)
        )
        if ckpt is None and not cfg.get("train", True):
            raise ConfigError("train=false and test=true need ckpt_path=<checkpoint to test>")
        log.info("Testing checkpoint: %s", ckpt or "current weights")
        with checkpoint_mismatch_is_config_error(ckpt):
            trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        metrics.update(getattr(module, "test_results", {}) or {})
    metrics["best_checkpoint"] = best
    if trainer.is_global_zero:
        write_results(cfg, metrics, objects["loggers"])
        log_artifacts(cfg, objects["loggers"], objects["wandb_options"], best)
    return metrics


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """Path of the best checkpoint kept by the ModelCheckpoint callback, if any."""
    cb = trainer.checkpoint_callback
    if isinstance(cb, ModelCheckpoint) and cb.best_model_path:
        return cb.best_model_path
    return None


def write_results(cfg: DictConfig, metrics: dict[str, Any], loggers: list[Logger]) -> None:
    """results.json (+ confusion matrix text/PNG) in the run dir; a console summary."""
    from leuk_lightning.training.seeds import job_seed
    from leuk_lightning.utils.printing import print_results, save_confusion_matrix

    out = Path(cfg.paths.output_dir)
    record = {
        "task_name": cfg.task_name,
        "tags": list(cfg.get("tags") or []),
        "seed": int(cfg.seed),
        "job_seed": job_seed(cfg),
        "metrics": metrics,
        "paper": OmegaConf.to_container(cfg.paper, resolve=True) if cfg.get("paper") else None,
    }
    atomic_write_json(out / "results.json", record)
    log.info("Results written to %s", out / "results.json")
    cm = metrics.get("confusion_matrix")
    if cm is not None:
        names = metrics.get("class_names") or [str(i) for i in range(len(cm))]
        paper = (record["paper"] or {}).get("confusion_matrix")
        text = save_confusion_matrix(
            torch.tensor(cm),
            names,
            out / "confusion_matrix.png",
            title=f"{cfg.task_name}: test confusion matrix",
            paper=paper,
        )
        atomic_write_text(out / "confusion_matrix.txt", text + "\n")
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("test/confusion_matrix", [str(out / "confusion_matrix.png")])
    print_results(metrics, title=f"{cfg.task_name}: test results")
