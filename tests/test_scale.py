"""Issue 9: speed options, DDP inside Hydra (single run and multirun, gloo on CPU), submitit
launcher, resume after SIGKILL and determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import REPO, compose_config, run_app

from leuk_lightning.errors import ConfigError
from leuk_lightning.models import create_classifier
from leuk_lightning.regimes import ClassifierModule
from leuk_lightning.utils.speed import apply_speed_options, wants_compile

TINY = [
    "debug=demo",
    "model=test_resnet",
    "data.image_size=32",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
]


def _float_metrics(record: dict) -> dict[str, float]:
    return {k: v for k, v in record["metrics"].items() if isinstance(v, float)}


# ------------------------------------------------------------------------- speed options
class ManualClassifier(ClassifierModule):
    """Manual optimization as the greedy regime does it (optimizers(), manual_backward,
    clip_gradients); records the memory format of the batches it sees."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False
        self.seen_channels_last: list[bool] = []

    def training_step(self, batch, batch_idx):
        self.seen_channels_last.append(
            batch["image"].is_contiguous(memory_format=torch.channels_last)
        )
        opt = self.optimizers()
        loss, _, _ = self._step(batch, self.train_metrics, "train")
        opt.zero_grad()
        self.manual_backward(loss)
        self.clip_gradients(opt, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
        opt.step()
        return loss


def test_compile_setting_is_validated_and_auto_is_off_on_cpu():
    assert wants_compile(True, "cpu") and not wants_compile(False, "gpu")
    assert not wants_compile("auto", "cpu")
    assert wants_compile("auto", "gpu") is torch.cuda.is_available()
    with pytest.raises(ConfigError, match="extras.compile"):
        wants_compile("yes", "cpu")


def test_channels_last_compile_and_bf16_with_manual_optimization(tmp_path, demo_data):
    from leuk_lightning.training.run import build

    overrides = [
        *TINY,
        "extras.channels_last=true",
        "extras.compile=true",
        "+extras.compile_kwargs.backend=eager",
        "trainer.precision=bf16-mixed",
        "+trainer.fast_dev_run=2",
        "~logger",
        "callbacks.lr_monitor=null",
    ]
    cfg = compose_config(overrides, tmp_path, demo_data)
    objects = build(cfg)
    module, dm = objects["module"], objects["datamodule"]
    assert module.net._compiled_call_impl is not None  # compiled in place: same state_dict keys
    assert not any("_orig_mod" in k for k in module.state_dict())
    conv = module.net.conv1[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    objects["trainer"].fit(module, datamodule=dm)
    assert objects["trainer"].precision == "bf16-mixed"

    manual = ManualClassifier(
        net=create_classifier("test_resnet", num_classes=2),
        optimizer=partial(torch.optim.SGD, lr=0.05),
        num_classes=2,
    )
    apply_speed_options(manual, dm, cfg.extras, cfg.trainer)
    before = [p.detach().clone() for p in manual.parameters()]
    trainer = L.Trainer(
        accelerator="cpu",
        precision="bf16-mixed",
        fast_dev_run=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(manual, datamodule=dm)
    assert manual.seen_channels_last == [True, True]
    assert any(not torch.equal(a, b) for a, b in zip(before, manual.parameters()))


# ------------------------------------------------------------------------------ DDP
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1"]
DDP_FAST = [*TINY, *DDP, "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2"]


def _results_lines(log_file: Path) -> int:
    return sum("Results written to" in line for line in log_file.read_text().splitlines())


@pytest.mark.slow
def test_ddp_two_cpu_processes_single_run(tmp_path, demo_data):
    proc = run_app(DDP_FAST, tmp_path, demo_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1, runs  # the child did not create a directory of its own
    run = runs[0]
    record = json.loads((run / "results.json").read_text())
    assert sum(map(sum, record["metrics"]["confusion_matrix"])) == 130  # synced over 2 ranks
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr
    assert _results_lines(run / "train.log") == 1  # rank 0 only
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not list(run.rglob(".pl_hydra*")) and (run / ".hydra" / "config.yaml").is_file()


@pytest.mark.slow
def test_ddp_inside_a_hydra_multirun(tmp_path, demo_data):
    proc = run_app(["-m", *DDP_FAST, "seed=1,2"], tmp_path, demo_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count(
        "Launching 2 jobs locally"
    ) == 1  # no re-launched sweep
    sweeps = list((tmp_path / "logs" / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps
    assert not (tmp_path / "logs" / "train" / "runs").exists()
    jobs = sorted(p.name for p in sweeps[0].iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    seeds = []
    for job in jobs:
        job_dir = sweeps[0] / job
        seeds.append(json.loads((job_dir / "results.json").read_text())["seed"])
        assert _results_lines(job_dir / "train.log") == 1
    assert seeds == [1, 2]


# ------------------------------------------------------------------------- launchers
@pytest.mark.slow
def test_submitit_local_launcher_runs_one_cpu_job(tmp_path, demo_data):
    args = ["-m", "hydra/launcher=submitit_local", *TINY, "trainer.max_epochs=1"]
    proc = run_app([*args, "+trainer.limit_train_batches=2"], tmp_path, demo_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    record = json.loads((sweep / "0" / "results.json").read_text())
    assert 0.0 <= record["metrics"]["test/acc"] <= 1.0
    assert list((sweep / ".submitit").rglob("*_result.pkl"))  # ran through submitit


def test_slurm_launcher_config_follows_the_trainer(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_PARTITION", "gpu-long")
    cfg = compose_config(
        ["hydra/launcher=submitit_slurm", "trainer=ddp", "trainer.devices=4"], tmp_path
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 4 and launcher.tasks_per_node == 4
    assert launcher.partition == "gpu-long" and launcher.timeout_min > 0 and launcher.nodes == 1
    monkeypatch.delenv("SLURM_PARTITION")
    cfg = compose_config(["hydra/launcher=submitit_slurm", "trainer=gpu"], tmp_path)
    assert cfg.hydra.launcher.partition is None and cfg.hydra.launcher.gpus_per_node == 1


# --------------------------------------------------------------- resume and determinism
RESUME = [
    *TINY,
    "deterministic=true",
    "trainer.max_epochs=4",
    "+trainer.limit_train_batches=6",
    "seed=3",
    "~logger",
    "callbacks.lr_monitor=null",
]


def _popen(args: list[str], root: Path, data_dir: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        LEUK_ROOT=str(root),
        LEUK_DATA_DIR=str(data_dir),
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "leuk_lightning", *args],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_sigkill_then_ckpt_path_last_reaches_the_uninterrupted_metrics(tmp_path, demo_data):
    full_dir, killed_dir = tmp_path / "full", tmp_path / "killed"
    full = _popen([*RESUME, f"hydra.run.dir={full_dir}"], tmp_path, demo_data)
    victim = _popen([*RESUME, f"hydra.run.dir={killed_dir}"], tmp_path, demo_data)
    last = killed_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 500
    while not last.is_file() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert full.wait(timeout=500) == 0
    assert not (killed_dir / "results.json").exists()
    epoch = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    assert epoch < 3, "the run finished before it was killed"

    proc = run_app([*RESUME, f"hydra.run.dir={killed_dir}", "ckpt_path=last"], tmp_path, demo_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Restoring states from the checkpoint path" in proc.stdout + proc.stderr
    resumed = json.loads((killed_dir / "results.json").read_text())
    reference = json.loads((full_dir / "results.json").read_text())
    assert _float_metrics(resumed) == _float_metrics(reference)
    assert resumed["metrics"]["confusion_matrix"] == reference["metrics"]["confusion_matrix"]
    assert (
        Path(resumed["metrics"]["best_checkpoint"]).name
        == Path(reference["metrics"]["best_checkpoint"]).name
    )


@pytest.mark.slow
def test_same_seed_and_deterministic_give_identical_metrics(tmp_path, demo_data):
    from leuk_lightning.training.pipeline import run_pipeline

    results = []
    for name in ("a", "b"):
        cfg = compose_config(
            [
                *TINY,
                "deterministic=true",
                "trainer.max_epochs=2",
                "~logger",
                "callbacks.lr_monitor=null",
            ],
            tmp_path / name,
            demo_data,
        )
        metrics = run_pipeline(cfg)
        results.append({k: v for k, v in metrics.items() if isinstance(v, float)})
    assert results[0] == results[1] and "test/acc" in results[0] and "val/loss" in results[0]
