"""DDP inside Hydra jobs: children re-run the job's own config in the job's directory.

Lightning's ``ddp`` strategy starts ranks 1..N-1 by re-running the command line of rank 0
(``sys.argv``) with ``hydra.run.dir=<run.dir>``. Inside Hydra that goes wrong in three ways:

* in a multirun (``-m``) ``sys.argv`` is the whole sweep, so every child restarts the sweep;
* ``hydra.run.dir`` is re-resolved, and its ``${now:...}`` gives children a new directory;
* after a job, rank 0 keeps the launcher's environment (``LOCAL_RANK`` ...) and the process
  group, so the next job of a sequential sweep finds no children and hangs.

:func:`ddp_job` fixes the three for the duration of one job: the child command is
``python -m leuk_lightning <this job's overrides> hydra.run.dir=<this job's output dir>
hydra.output_subdir=null`` (no ``-m``, no ``${now:}`` left to resolve, no second ``.hydra``), and
when the job ends the process group is destroyed and the launcher's variables are removed, so
the next job launches its own children. Children are recognised by ``LOCAL_RANK`` in their
environment and leave all of this alone.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from omegaconf import DictConfig

log = logging.getLogger(__name__)

#: environment variables Lightning's subprocess launcher sets in rank 0 and its children
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def is_ddp_child() -> bool:
    """True in a process started by a DDP launcher (or a cluster) as one rank of a job."""
    return "LOCAL_RANK" in os.environ


def quote_override_value(value: str) -> str:
    """A Hydra override value that keeps any path intact (quoted, inner quotes escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def child_command(output_dir: str | None = None) -> list[str]:
    """The command that re-runs the current Hydra job (not the sweep) as one more DDP rank."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    command = [sys.executable, "-m", "leuk_lightning"]
    if hc.job.config_name and hc.job.config_name != "train":
        command.append(f"--config-name={hc.job.config_name}")
    command += [o for o in hc.overrides.task if not o.startswith(("hydra.run.dir=",))]
    out = output_dir or hc.runtime.output_dir
    command += [
        f"hydra.run.dir={quote_override_value(str(out))}",
        "hydra.output_subdir=null",
        f"hydra.job.name={hc.job.name}",
    ]
    return command


def _subprocess_cmd(local_rank: int) -> tuple[Sequence[str], str]:
    """Replacement of Lightning's ``_hydra_subprocess_cmd`` (same signature)."""
    return child_command(), os.getcwd()


@contextmanager
def ddp_job(cfg: DictConfig | None = None) -> Iterator[None]:
    """Run one Hydra job so that DDP children re-run exactly this job (see module docstring)."""
    if is_ddp_child():
        yield
        return
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script as pl_launcher

    saved_env = {k: os.environ.get(k) for k in LAUNCH_ENV}
    modules = (fabric_launcher, pl_launcher)  # each holds its own reference to the function
    originals = [m._hydra_subprocess_cmd for m in modules]
    for m in modules:
        m._hydra_subprocess_cmd = _subprocess_cmd
    try:
        yield
    finally:
        for m, original in zip(modules, originals):
            m._hydra_subprocess_cmd = original
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def trainer_overrides(trainer_cfg: DictConfig) -> dict[str, Any]:
    """Trainer arguments corrected for the hardware: SyncBatchNorm needs GPUs, so it is turned
    off (with a log line) for CPU processes, e.g. ``trainer=ddp trainer.accelerator=cpu``."""
    extra: dict[str, Any] = {}
    if trainer_cfg.get("sync_batchnorm") and trainer_cfg.get("accelerator") == "cpu":
        log.info("trainer.sync_batchnorm ignored: SyncBatchNorm needs GPUs, accelerator=cpu")
        extra["sync_batchnorm"] = False
    return extra
