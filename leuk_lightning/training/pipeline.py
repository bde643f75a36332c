"""Multi-stage experiments: a pre-training stage (e.g. HistoCNN on ADP) whose best checkpoint
initialises the main run (HistoTNet on ALL-IDB2, sequential transfer to C-NMC).

A stage's result is cached under ``paths.stage_cache_dir/<name>-<hash>/`` where the hash covers
every setting that determines the stage's weights (its data, model, regime, trainer limits and
seed). Later runs that need the same stage reuse it instead of retraining, which is what makes a
20-run cross-validation protocol or a sweep over target settings affordable. A file lock lets
parallel sweep jobs wait for one another instead of training the same stage twice; an
interrupted stage resumes from its ``last.ckpt``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from leuk_lightning.errors import ConfigError
from leuk_lightning.training.run import run
from leuk_lightning.training.tracking import job_group
from leuk_lightning.utils.config import apply_debug_last, config_hash, validate_config
from leuk_lightning.utils.distributed import ddp_job
from leuk_lightning.utils.io import atomic_copy, atomic_write_json, atomic_write_text, file_lock

log = logging.getLogger(__name__)

# trainer settings that change the weights a stage produces (others, e.g. devices, do not)
_TRAINER_KEYS = (
    "max_epochs",
    "max_steps",
    "precision",
    "fast_dev_run",
    "limit_train_batches",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "deterministic",
)
# data settings that only change speed
_DATA_SPEED_KEYS = (
    "num_workers",
    "pin_memory",
    "persistent_workers",
    "eval_batch_size",
    "output_dir",
    "stats_cache_dir",
    "cache",
    "cache_dir",
)


def stage_config(cfg: DictConfig, key: str) -> DictConfig:
    """The full run config of stage ``cfg[key]``: top-level config with the stage's parts."""
    stage = OmegaConf.to_container(cfg[key], resolve=True)
    if not stage.get("data") or not stage.get("regime"):
        raise ConfigError(f"{key}: a pipeline stage needs 'data' and 'regime' configs")
    resolved = OmegaConf.to_container(cfg, resolve=False)
    resolved.pop(key)
    resolved.pop("hydra", None)
    # keep interpolations of the top level (paths, seed, hydra) but swap in the stage's parts
    stage_cfg = OmegaConf.create(resolved)
    with open_dict(stage_cfg):
        stage_cfg.data = stage["data"]
        stage_cfg.regime = stage["regime"]
        stage_cfg.model = OmegaConf.merge(
            OmegaConf.to_container(cfg.model, resolve=True), stage.get("model") or {}
        )
        stage_cfg.model.init_from = None
        stage_cfg.trainer = OmegaConf.merge(
            OmegaConf.to_container(cfg.trainer, resolve=True), stage.get("trainer") or {}
        )
        stage_cfg.paths = OmegaConf.to_container(cfg.paths, resolve=True)
        stage_cfg.task_name = f"{cfg.task_name}_{stage.get('name', key)}"
        stage_cfg.optimized_metric = f"{stage['regime'].get('monitor', 'val/acc')}_best"
        stage_cfg.test = False
        stage_cfg.train = True
        stage_cfg.pretrain = {"enabled": False}
        stage_cfg.paper = None
        stage_cfg.demo_data = False
        # the stage's own W&B run: job type `pretrain`, in its experiment's group, its files in
        # the job's run directory (see training/tracking.py)
        stage_cfg.wandb_stage = {
            "job_type": "pretrain",
            "group": job_group(cfg),
            "name": f"pretrain {stage.get('name', key)}",
            "dir": str(cfg.paths.output_dir),
        }
    return stage_cfg


def stage_fingerprint(stage_cfg: DictConfig) -> dict[str, Any]:
    """The settings that determine a stage's weights (the cache key)."""
    data = OmegaConf.to_container(stage_cfg.data, resolve=True)
    for k in _DATA_SPEED_KEYS:
        data.pop(k, None)
    trainer = OmegaConf.to_container(stage_cfg.trainer, resolve=True)
    return {
        "data": data,
        "model": OmegaConf.to_container(stage_cfg.model, resolve=True),
        "regime": OmegaConf.to_container(stage_cfg.regime, resolve=True),
        "trainer": {k: trainer.get(k) for k in _TRAINER_KEYS},
        "seed": int(stage_cfg.seed),
    }


def run_stage(cfg: DictConfig, key: str) -> str:
    """Return the best checkpoint of stage ``cfg[key]``, training it only if not cached."""
    stage_cfg = stage_config(cfg, key)
    fingerprint = stage_fingerprint(stage_cfg)
    name = cfg[key].get("name", key)
    digest = config_hash(fingerprint)
    stage_dir = Path(cfg.paths.stage_cache_dir) / f"{name}-{digest}"
    done = stage_dir / "stage.json"
    stage_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(str(stage_dir) + ".lock", f"stage '{name}' ({stage_dir})"):
        if done.is_file():
            log.info("Stage '%s' found in cache (%s): reusing it, not retraining", name, stage_dir)
            return str(stage_dir / "best.ckpt")
        log.info("Stage '%s' not cached (hash %s): training it in %s", name, digest, stage_dir)
        run_dir = stage_dir / "run"
        with open_dict(stage_cfg):
            stage_cfg.paths.output_dir = str(run_dir)
            last = run_dir / "checkpoints" / "last.ckpt"
            stage_cfg.ckpt_path = str(last) if last.is_file() else None
        if stage_cfg.ckpt_path:
            log.info("Resuming interrupted stage '%s' from %s", name, stage_cfg.ckpt_path)
        metrics = run(stage_cfg)
        best = metrics.get("best_checkpoint") or str(run_dir / "checkpoints" / "last.ckpt")
        if not Path(best).is_file():
            raise ConfigError(
                f"stage '{name}' produced no checkpoint; keep the model_checkpoint callback enabled"
            )
        atomic_copy(best, stage_dir / "best.ckpt")
        atomic_write_json(
            done,
            {
                "name": name,
                "hash": digest,
                "fingerprint": fingerprint,
                "metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
            },
        )
    return str(stage_dir / "best.ckpt")


def save_effective_config(cfg: DictConfig) -> None:
    """Rewrite the run's ``.hydra/config.yaml`` with the config the run really uses.

    Hydra saves the composed config before ``apply_debug_last`` lets ``debug=...`` win over
    ``+experiment=...``; tools that rebuild a run from its directory (predict, explain, detect,
    report) must see the effective values (e.g. the demo's 64 px, not the paper's 224 px).
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or not HydraConfig.get().output_subdir:
        return
    path = Path(cfg.paths.output_dir) / HydraConfig.get().output_subdir / "config.yaml"
    if path.is_file():
        atomic_write_text(path, OmegaConf.to_yaml(cfg))


def run_pipeline(cfg: DictConfig) -> dict[str, Any]:
    """Run the enabled pre-training stage (cached), then the main run initialised from it."""
    apply_debug_last(cfg)
    validate_config(cfg)  # before any data, cache or model is built
    save_effective_config(cfg)
    if cfg.get("demo_data"):
        from leuk_lightning.data.synthetic import ensure_demo_data

        ensure_demo_data(Path(cfg.paths.data_dir), variation=cfg.get("demo_variation"))
    stage = cfg.get("pretrain")
    if stage is not None and stage.get("enabled", False):
        checkpoint = run_stage(cfg, "pretrain")
        with open_dict(cfg):
            cfg.model.init_from = checkpoint
    return run(cfg)


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """One Hydra job (of a run or a sweep): :func:`run_pipeline` inside :func:`ddp_job`, so DDP
    children re-run this job's own config in its directory and a sweep's next job starts clean."""
    with ddp_job(cfg), run_dir_lock(cfg):
        return run_pipeline(cfg)


@contextlib.contextmanager
def run_dir_lock(cfg: DictConfig) -> Iterator[None]:
    """Hold ``<output dir>/.run.lock`` for the job: a second live run pointed at the same
    directory (e.g. the same ``hydra.run.dir``) stops with one line instead of deleting the
    first run's checkpoints. A finished or killed run holds nothing: resuming into its
    directory (``ckpt_path=last``) works. DDP children share their job's directory."""
    from filelock import FileLock, Timeout

    from leuk_lightning.utils.distributed import is_ddp_child

    out = OmegaConf.select(cfg, "paths.output_dir")
    if not out or is_ddp_child():
        yield
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(Path(out) / ".run.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(
            f"run directory {out} is in use by another run that is still going; give this run "
            "its own directory (hydra.run.dir=...)"
        ) from None
    try:
        yield
    finally:
        lock.release()
