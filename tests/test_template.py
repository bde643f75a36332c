"""lightning-hydra-template parity: debug configs, trainer=mps, early stopping, TensorBoard and
MLflow loggers (read back with their own readers), Optuna search, `make help`, CI format check."""

from __future__ import annotations

import subprocess

import hydra
import pytest
import yaml
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.profilers import SimpleProfiler

from leuk_lightning.training.run import instantiate_group
from tests.helpers import REPO, compose_config, run_app

TINY = ["debug=demo", "model=test_resnet", "trainer.max_epochs=1", "+trainer.limit_train_batches=2"]


def _trainer(cfg):
    return hydra.utils.instantiate(cfg.trainer, logger=False, enable_progress_bar=False)


def test_debug_limit_overfit_profiler(tmp_path):
    cfg = compose_config(["debug=limit"], tmp_path)
    trainer = _trainer(cfg)
    assert (trainer.limit_train_batches, trainer.limit_val_batches) == (0.01, 0.05)
    assert trainer.limit_test_batches == 0.05 and trainer.max_epochs == 3
    assert cfg.pretrain.trainer.limit_train_batches == 0.01
    assert _trainer(compose_config(["debug=overfit"], tmp_path)).overfit_batches == 3
    cfg = compose_config(["debug=profiler"], tmp_path)
    profiler = _trainer(cfg).profiler
    assert isinstance(profiler, SimpleProfiler) and profiler.dirpath == cfg.paths.output_dir


def test_trainer_mps_and_early_stopping(tmp_path):
    cfg = compose_config(["trainer=mps"], tmp_path)
    assert (cfg.trainer.accelerator, cfg.trainer.devices) == ("mps", 1)
    cfg = compose_config(
        ["callbacks=[default,early_stopping]", "callbacks.early_stopping.patience=3"], tmp_path
    )
    (stop,) = [cb for cb in instantiate_group(cfg.callbacks) if isinstance(cb, EarlyStopping)]
    assert stop.monitor == cfg.regime.monitor == "val/acc" and stop.patience == 3
    assert stop.mode == "max" and "model_checkpoint" in cfg.callbacks


@pytest.mark.slow
def test_tensorboard_and_mlflow_loggers_write_what_their_readers_read(
    tmp_path, demo_data, monkeypatch
):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc = run_app([*TINY, "logger=many", "logger.wandb.mode=disabled"], tmp_path, demo_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(run_dir / "tensorboard"))  # every event file of the folder
    acc.Reload()
    assert {"train/loss", "val/acc", "test/acc"} <= set(acc.Tags()["scalars"])
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow >= 3.7 for file stores
    client = MlflowClient(tracking_uri=f"file:{tmp_path / 'logs' / 'mlflow' / 'mlruns'}")
    experiment = client.get_experiment_by_name("train")
    (run,) = client.search_runs([experiment.experiment_id])
    assert "test/acc" in run.data.metrics and "val/acc" in run.data.metrics
    assert run.data.params["seed"] == "42" and run.data.params["choices/model"] == "test_resnet"
    assert not any(k.endswith("_target_") for k in run.data.params)


@pytest.mark.slow
def test_optuna_search_returns_the_optimized_metric(tmp_path, demo_data):
    args = [
        "hparams_search=optuna",
        *TINY,
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=1",
    ]
    proc = run_app(args, tmp_path, demo_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert 0.0 <= best["best_value"] <= 1.0
    assert set(best["best_params"]) == {"regime.optimizer.lr", "data.batch_size"}
    # every trial returned val/acc_best: its results.json holds the value the sweeper saw
    import json

    values = [
        json.loads((sweep / str(n) / "results.json").read_text())["metrics"]["val/acc_best"]
        for n in range(2)
    ]
    assert best["best_value"] == pytest.approx(max(values))


def test_make_help_lists_the_targets():
    out = subprocess.run(["make", "help"], cwd=REPO, capture_output=True, text=True, check=True)
    for target in ("install", "test", "lint", "demo", "sweep", "report", "help"):
        assert any(line.split()[:1] == [target] for line in out.stdout.splitlines()), target


def test_ci_checks_formatting_and_precommit_runs_ruff():
    ci = (REPO / ".ci" / "run").read_text()
    assert "ruff format --check" in ci or "make lint" in ci
    # CI installs the known-good torch pair; pyproject.toml keeps ranges (see test_packaging)
    assert "PIP_CONSTRAINT" in ci
    pins = (REPO / ".ci" / "constraints.txt").read_text().split()
    assert {"torch==2.14.1", "torchvision==0.29.1"} <= set(pins)
    hooks = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    ids = {h["id"] for repo in hooks["repos"] for h in repo["hooks"]}
    assert {"ruff", "ruff-format"} <= ids
