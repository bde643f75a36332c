"""Experiment tracking: one W&B run per job and per pipeline stage, as W&B users expect.

- **One run per job.** Every Hydra job (and every trained pre-training stage, ``job_type``
  ``pretrain``) gets its own W&B run, finished when the job ends, so a 20-job protocol is 20 runs.
- **Group** = the sweep directory (or the run directory of a single run) relative to
  ``paths.log_dir``, e.g. ``histotnet_resnet18_l2/multiruns/2026-11-24_10-00-00``: unique per sweep,
  shared by its jobs and by the stage they pre-train. **Name** = what tells the job apart: the
  overrides that differ from the sweep's command line (``repeat=3 fold=1``), else the job's
  overrides, else the task name.
- **Resume.** ``wandb_run.json`` in the run directory keeps the run id (and group/project); a job
  restarted with ``ckpt_path=...`` continues the same W&B run.
- **Mode.** ``WANDB_MODE`` and the user's own wandb settings (``wandb offline``, ``wandb login``)
  decide; only when nothing is configured do runs stay offline (``wandb sync`` later).
- **Config** = the resolved job config without Hydra's ``_target_``/``_partial_`` keys, plus the
  overrides, the Hydra choices, the git commit and the package version.
- **Review** (``logger.wandb.log_predictions``): a test-predictions table with cell thumbnails, true
  and predicted class and probability; interactive confusion matrix, ROC and PR curves.
  ``logger.wandb.log_artifacts``: best checkpoint, ``split.json`` and ``results.json`` as artifacts.
"""

from __future__ import annotations

import configparser
import json
import logging
import netrc
import os
import secrets
import subprocess
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import hydra
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from leuk_lightning.utils.config import PACKAGE_DIR, resolved_dict
from leuk_lightning.utils.io import atomic_write_json

log = logging.getLogger(__name__)

RUN_FILE = "wandb_run.json"
# keys of logger.wandb that are ours, not WandbLogger's
_OWN_KEYS = ("log_predictions", "log_artifacts", "max_table_rows")
_NOISE_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
# overrides that do not tell jobs apart (the group and task name already say them)
_NAME_SKIP = ("+experiment", "experiment", "hydra.", "paths.", "logger", "debug", "trainer")


# ----------------------------------------------------------------------------- mode
def _settings_mode() -> str | None:
    """``mode`` written by ``wandb offline``/``wandb disabled`` (workspace or global settings)."""
    config_dir = os.environ.get("WANDB_CONFIG_DIR", str(Path.home() / ".config" / "wandb"))
    for path in (Path("wandb") / "settings", Path(config_dir) / "settings"):
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
        except (OSError, configparser.Error):
            continue
        if parser.has_option("default", "mode"):
            return parser.get("default", "mode")
    return None


def _has_credentials() -> bool:
    """An API key in the environment or in ``.netrc`` for the W&B host (``wandb login``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode() -> str | None:
    """``None`` (wandb decides: ``WANDB_MODE``, settings, login) when the user configured W&B;
    ``"offline"`` when nothing is configured (no account needed, ``wandb sync`` later)."""
    if os.environ.get("WANDB_MODE") or _settings_mode() or _has_credentials():
        return None
    return "offline"


# ----------------------------------------------------------------------------- identity
def _hydra_cfg() -> Any | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return path.name


def job_group(cfg: DictConfig) -> str:
    """The sweep directory of a multirun job, the run directory of a single run."""
    hc = _hydra_cfg()
    log_dir = Path(str(cfg.paths.log_dir))
    if hc is not None and str(hc.mode) == "RunMode.MULTIRUN":
        return _rel(Path(hc.sweep.dir), log_dir)
    return _rel(Path(str(cfg.paths.output_dir)), log_dir)


def job_overrides() -> list[str]:
    hc = _hydra_cfg()
    return list(hc.overrides.task) if hc is not None else []


def _sweep_overrides(hc: Any) -> list[str] | None:
    """The sweep's command-line overrides (``multirun.yaml`` written by the launcher)."""
    path = Path(hc.sweep.dir) / "multirun.yaml"
    if not path.is_file():
        return None
    try:
        return list(OmegaConf.load(path).hydra.overrides.task)
    except Exception:  # noqa: BLE001 (a half-written file: fall back to all overrides)
        return None


def job_name(cfg: DictConfig) -> str:
    """What tells this job apart from its group's other jobs."""
    overrides = job_overrides()
    hc = _hydra_cfg()
    if hc is not None and str(hc.mode) == "RunMode.MULTIRUN":
        common = _sweep_overrides(hc)
        if common is not None:
            varying = [o for o in overrides if o not in common]
            if varying:
                short = [o.split("=", 1) for o in varying]
                leaves = [k.rsplit(".", 1)[-1] for k, _ in short]
                if len(set(leaves)) == len(leaves):  # `repeat=3 fold=1`, not the dotted keys
                    return " ".join(f"{leaf}={v}" for leaf, (_, v) in zip(leaves, short))
                return " ".join(varying)
    kept = [o for o in overrides if not o.lstrip("~+").startswith(_NAME_SKIP)]
    return " ".join(kept)[:120] or str(cfg.task_name)


@cache
def git_commit() -> str | None:
    """``HEAD`` of the checkout the package runs from (``+dirty`` with uncommitted changes)."""
    root = PACKAGE_DIR.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _strip_noise(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_noise(v) for k, v in value.items() if k not in _NOISE_KEYS}
    if isinstance(value, list):
        return [_strip_noise(v) for v in value]
    return value


def job_config(cfg: DictConfig) -> dict[str, Any]:
    """What the loggers record as the run's config (see the module docstring)."""
    from leuk_lightning import __version__

    config = _strip_noise(resolved_dict(cfg))
    config.pop("wandb_stage", None)
    if not (cfg.get("pretrain") or {}).get("enabled", False):
        config.pop("pretrain", None)  # a stage's own run, or a one-stage experiment
    hc = _hydra_cfg()
    config["overrides"] = job_overrides()
    # the project's group choices (data, model, ...); Hydra's own (hydra/launcher, ...) are noise
    choices = dict(hc.runtime.choices) if hc is not None else {}
    config["choices"] = {k: v for k, v in choices.items() if k != "hydra" and "hydra/" not in k}
    config["git_commit"] = git_commit()
    config["version"] = __version__
    return config


# ----------------------------------------------------------------------------- loggers
def _wandb_kwargs(cfg: DictConfig, conf: dict[str, Any]) -> dict[str, Any]:
    """Fill in the per-job values of a WandbLogger config (what the user set explicitly wins)."""
    stage = cfg.get("wandb_stage") or {}
    out_dir = Path(str(cfg.paths.output_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    run_file = out_dir / RUN_FILE
    previous = json.loads(run_file.read_text()) if run_file.is_file() else {}
    resuming = bool(cfg.get("ckpt_path")) and previous.get("id")
    conf.pop("offline", None)  # it would overwrite WANDB_MODE (disabled -> offline)
    conf["id"] = conf.get("id") or (previous["id"] if resuming else _new_id())
    conf["group"] = conf.get("group") or stage.get("group") or job_group(cfg)
    conf["name"] = conf.get("name") or stage.get("name") or job_name(cfg)
    conf["job_type"] = stage.get("job_type") or conf.get("job_type") or "train"
    # a stage's W&B files sit in the job's run directory (one `wandb sync <run dir>/wandb`)
    conf["save_dir"] = stage.get("dir") or conf.get("save_dir") or str(out_dir)
    mode = conf.get("mode") or wandb_mode()
    if mode:
        conf["mode"] = mode
    if rank_zero_only.rank == 0:  # DDP: only rank zero's run exists (and is resumed)
        keep = ("id", "group", "name", "job_type", "project")
        atomic_write_json(run_file, {k: conf.get(k) for k in keep})
    return conf


def _new_id() -> str:
    """A W&B-style run id (8 lowercase letters and digits)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(8))


def instantiate_loggers(cfg: DictConfig) -> tuple[list[Logger], dict[str, Any]]:
    """The ``logger`` group's loggers with the per-job W&B settings; also our W&B options."""
    loggers: list[Logger] = []
    options: dict[str, Any] = {}
    for _, node in (cfg.get("logger") or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        conf = OmegaConf.to_container(node, resolve=True)
        if str(conf["_target_"]).endswith("WandbLogger"):
            options = {k: conf.pop(k) for k in _OWN_KEYS if k in conf}
            conf = _wandb_kwargs(cfg, conf)
        elif str(conf.get("tracking_uri") or "").startswith("file:"):
            # MLflow >= 3.7 refuses the local file store unless opted in; logger=mlflow asks
            # for it explicitly (a database or server URI needs no opt-in)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        loggers.append(hydra.utils.instantiate(conf))
    return loggers, options


def review_callbacks(loggers: list[Logger], options: dict[str, Any]) -> list[Callback]:
    if any(isinstance(lg, WandbLogger) for lg in loggers) and options.get("log_predictions"):
        return [WandbTestReview(max_rows=int(options.get("max_table_rows", 256)))]
    return []


def finish(loggers: list[Logger]) -> None:
    """End this job's W&B run, so the next job (or the main run after its stage) gets its own."""
    for lg in loggers:
        if isinstance(lg, WandbLogger) and lg._experiment is not None:
            finish_run = getattr(lg._experiment, "finish", None)
            if callable(finish_run):
                finish_run()
            lg._experiment = None


def log_artifacts(cfg: DictConfig, loggers: list[Logger], options: dict[str, Any], best: Any):
    """Best checkpoint (type ``model``), ``split.json`` and ``results.json`` (``results``)."""
    if not options.get("log_artifacts"):
        return
    import wandb

    out = Path(str(cfg.paths.output_dir))
    for lg in loggers:
        if not isinstance(lg, WandbLogger):
            continue
        run = lg.experiment
        if best and Path(best).is_file():
            art = wandb.Artifact(f"model-{run.id}", type="model", metadata={"path": str(best)})
            art.add_file(str(best), name="best.ckpt")
            run.log_artifact(art, aliases=["best"])
        files = [out / n for n in ("split.json", "results.json") if (out / n).is_file()]
        if files:
            art = wandb.Artifact(f"results-{run.id}", type="results")
            for f in files:
                art.add_file(str(f))
            run.log_artifact(art)


# ----------------------------------------------------------------------------- review
def _thumbnail(path: str | None, size: int = 96) -> Any:
    import wandb
    from PIL import Image

    if not path or not Path(path).is_file():
        return None
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((size, size))
            return wandb.Image(img)
    except OSError:
        return None


class WandbTestReview(Callback):
    """After testing: the predictions table and the interactive confusion matrix, ROC and PR.

    Reads what ``ClassifierModule.test_step`` returns (``scores``, ``target``, ``path``);
    multi-label runs and other regimes are skipped.
    """

    def __init__(self, max_rows: int = 256) -> None:
        self.max_rows = max_rows
        self.scores: list[torch.Tensor] = []
        self.target: list[torch.Tensor] = []
        self.paths: list[str | None] = []

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.scores, self.target, self.paths = [], [], []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not isinstance(outputs, dict) or "scores" not in outputs:
            return
        self.scores.append(outputs["scores"].detach().float().cpu())
        self.target.append(outputs["target"].detach().cpu())
        paths = outputs.get("path")
        n = len(outputs["target"])
        self.paths.extend(list(paths) if paths is not None else [None] * n)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or not self.scores or getattr(pl_module, "multilabel", 0):
            return
        import wandb

        scores, target = torch.cat(self.scores), torch.cat(self.target).long()
        probs = torch.stack([1 - scores, scores], 1) if scores.ndim == 1 else scores
        names = list(getattr(pl_module, "class_names", None) or range(probs.shape[1]))
        names = [str(n) for n in names]
        preds = probs.argmax(1)
        table = wandb.Table(columns=["image", "file", "true", "predicted", "probability"])
        for i in range(min(len(target), self.max_rows)):
            p = self.paths[i]
            table.add_data(
                _thumbnail(p),
                Path(p).name if p else "",
                names[target[i]],
                names[preds[i]],
                round(float(probs[i, preds[i]]), 4),
            )
        y, pr = target.tolist(), probs.numpy()
        plots = {
            "test/predictions": table,
            "test/confusion_matrix_interactive": wandb.plot.confusion_matrix(
                y_true=y, preds=preds.tolist(), class_names=names, title="Test confusion matrix"
            ),
            "test/roc": wandb.plot.roc_curve(y, pr, labels=names, title="Test ROC"),
            "test/pr": wandb.plot.pr_curve(y, pr, labels=names, title="Test precision-recall"),
        }
        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger):
                lg.experiment.log(plots)
