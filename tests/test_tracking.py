"""W&B as its users see it, read back from the offline ``.wandb`` files with wandb's own protobuf
records: one run per job and per stage, the right group, job type, name and per-job config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import open_dict

from leuk_lightning.training import tracking
from leuk_lightning.utils.wandb_files import find_runs
from tests.helpers import compose_config, run_app

TINY = [
    "debug=demo",
    "model=test_resnet",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "logger=wandb",
]


def _has_key(value, key: str) -> bool:
    if isinstance(value, dict):
        return key in value or any(_has_key(v, key) for v in value.values())
    if isinstance(value, list):
        return any(_has_key(v, key) for v in value)
    return False


@pytest.mark.slow
def test_two_stage_run_is_two_wandb_runs_in_one_group(tmp_path, demo_data):
    args = [
        "+experiment=histotnet_resnet18_l2",
        *TINY,
        "pretrain.trainer.max_epochs=1",
        "+pretrain.trainer.limit_train_batches=2",
    ]
    proc = run_app(args, tmp_path, data_dir=demo_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "histotnet_resnet18_l2" / "runs").iterdir()
    runs = find_runs(tmp_path / "logs")
    assert len(runs) == 2 and len({r.id for r in runs}) == 2
    by_type = {r.job_type: r for r in runs}
    assert set(by_type) == {"pretrain", "train"}
    group = f"histotnet_resnet18_l2/runs/{run_dir.name}"
    assert {r.group for r in runs} == {group}
    # the stage's files sit in the job's run dir, not in the stage cache
    assert all(run_dir in r.path.parents for r in runs)
    stage, main = by_type["pretrain"], by_type["train"]
    assert stage.name == "pretrain histocnn" and main.name.startswith("model=test_resnet")
    # each run has its own config and its own metrics (the stage's ADP metrics stay apart)
    assert stage.config["task_name"] == "histotnet_resnet18_l2_histocnn"
    assert "pretrain" not in stage.config and "test/acc" not in stage.history_keys
    assert main.config["task_name"] == "histotnet_resnet18_l2" and "test/acc" in main.history_keys
    assert main.config["choices"]["model"] == "test_resnet"
    assert "model=test_resnet" in main.config["overrides"]
    assert main.config["version"] and "git_commit" in main.config
    assert not _has_key(main.config, "_target_") and not _has_key(main.config, "_partial_")
    # review: predictions table and interactive plots
    for key in ("test/predictions", "test/roc_table", "test/pr_table"):
        assert f"{key}/nrows" in main.history_keys or f"{key}/_type" in main.history_keys, key
    assert json.loads((run_dir / tracking.RUN_FILE).read_text())["id"] == main.id


@pytest.mark.slow
def test_multirun_jobs_are_separate_runs_named_by_their_overrides(tmp_path, demo_data):
    proc = run_app(["-m", *TINY, "seed=1,2"], tmp_path, data_dir=demo_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    runs = find_runs(tmp_path / "logs")
    assert len(runs) == 2 and len({r.id for r in runs}) == 2
    assert {r.group for r in runs} == {f"train/multiruns/{sweep.name}"}
    assert {r.job_type for r in runs} == {"train"}
    assert sorted(r.name for r in runs) == ["seed=1", "seed=2"]
    assert sorted(r.config["seed"] for r in runs) == [1, 2]
    for r in runs:  # each job's run in its own job dir, its config its own
        job = r.path.parents[2]
        assert job.parent == sweep and f"seed={r.config['seed']}" in r.config["overrides"]


def _cfg(tmp_path, *extra):
    return compose_config(["logger=wandb", "model=test_resnet", *extra], tmp_path)


def test_run_id_is_kept_for_resume_and_new_otherwise(tmp_path):
    cfg = _cfg(tmp_path)
    first = tracking._wandb_kwargs(cfg, {"project": "p"})
    again = tracking._wandb_kwargs(cfg, {"project": "p"})
    assert again["id"] != first["id"]  # a new run in the same dir is a new W&B run
    with open_dict(cfg):
        cfg.ckpt_path = "last"
    resumed = tracking._wandb_kwargs(cfg, {"project": "p"})
    assert resumed["id"] == again["id"]  # ckpt_path=... continues the same W&B run
    saved = json.loads((Path(cfg.paths.output_dir) / tracking.RUN_FILE).read_text())
    assert saved["id"] == resumed["id"] and saved["project"] == "p"


def test_stage_run_has_its_own_job_type_group_and_dir(tmp_path):
    cfg = _cfg(tmp_path)
    with open_dict(cfg):
        cfg.wandb_stage = {"job_type": "pretrain", "group": "g/runs/t", "name": "pretrain x"}
    kw = tracking._wandb_kwargs(cfg, {"project": "p", "job_type": "train", "offline": True})
    assert (kw["job_type"], kw["group"], kw["name"]) == ("pretrain", "g/runs/t", "pretrain x")
    assert "offline" not in kw  # WandbLogger(offline=True) overwrites WANDB_MODE


def test_mode_respects_the_users_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert tracking.wandb_mode() == "offline"  # nothing configured: offline fallback
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password KEY\n")
    assert tracking.wandb_mode() is None  # `wandb login`: wandb decides (online)
    (tmp_path / "netrc").unlink()
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.wandb_mode() is None
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / "wandb").mkdir()
    (tmp_path / "wandb" / "settings").write_text("[default]\nmode = offline\n")
    assert tracking.wandb_mode() is None


def test_disabled_mode_writes_no_run(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "disabled")
    wandb.teardown()  # wandb reads WANDB_MODE once per process (its setup singleton)
    cfg = _cfg(tmp_path)
    try:
        loggers, options = tracking.instantiate_loggers(cfg)
        wandb_logger = next(lg for lg in loggers if type(lg).__name__ == "WandbLogger")
        wandb_logger.log_hyperparams(tracking.job_config(cfg))
        tracking.finish(loggers)
    finally:
        wandb.teardown()  # later tests in this process get their own WANDB_MODE
    assert options["log_predictions"] is True
    assert not list(tmp_path.rglob("run-*.wandb")) and not list(tmp_path.rglob("offline-run-*"))


def test_job_config_has_overrides_choices_and_no_hydra_noise(tmp_path):
    cfg = _cfg(tmp_path, "seed=3")
    config = tracking.job_config(cfg)
    assert config["choices"]["logger"] == "wandb" and "seed=3" in config["overrides"]
    # Hydra's own groups would collide as MLflow params ("choices/hydra" vs "choices/hydra/env")
    assert not any(k.startswith("hydra") for k in config["choices"])
    assert config["version"] and "pretrain" not in config
    assert not _has_key(config, "_target_") and not _has_key(config, "_partial_")


def test_protocol_jobs_are_named_by_repeat_and_fold_and_grouped_by_sweep(tmp_path):
    """A 20-job protocol: 20 names that tell the jobs apart, one group per sweep."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    common = ["+experiment=histotnet_resnet18_l2", "protocol=histotnet_cv", "debug=demo"]
    sweep = tmp_path / "logs" / "histotnet_resnet18_l2" / "multiruns" / "2026-11-24_10-00-00"
    sweep.mkdir(parents=True)
    OmegaConf.save({"hydra": {"overrides": {"task": common}}}, sweep / "multirun.yaml")
    names, groups = [], set()
    for repeat in range(10):
        for fold in range(2):
            job = [f"data.split.repeat={repeat}", f"data.split.fold={fold}", *common]
            cfg = compose_config(job, tmp_path)
            OmegaConf.set_readonly(cfg.hydra, False)
            with open_dict(cfg):
                cfg.hydra.mode = "MULTIRUN"
                cfg.hydra.sweep.dir = str(sweep)
                cfg.paths.log_dir = str(tmp_path / "logs")
            HydraConfig().set_config(cfg)
            names.append(tracking.job_name(cfg))
            groups.add(tracking.job_group(cfg))
    assert names[:3] == ["repeat=0 fold=0", "repeat=0 fold=1", "repeat=1 fold=0"]
    assert len(set(names)) == 20
    assert groups == {"histotnet_resnet18_l2/multiruns/2026-11-24_10-00-00"}


@pytest.mark.slow
def test_report_table_is_logged_into_the_runs_group(tmp_path, monkeypatch):
    from leuk_lightning.cli import report as report_cli
    from tests.test_report import write_sweep

    monkeypatch.setenv("WANDB_MODE", "offline")
    sweep = write_sweep(tmp_path / "logs", "histotnet_resnet18_l2", [0.95, 0.97])
    for job in ("0", "1"):
        info = {"id": f"job{job}", "group": "histotnet_resnet18_l2/multiruns/T", "project": "q"}
        (sweep / job / tracking.RUN_FILE).write_text(json.dumps(info))
    assert report_cli.main([str(sweep), "--out", str(tmp_path / "out"), "--wandb"]) == 0
    (run,) = find_runs(tmp_path / "out")
    assert (run.group, run.job_type) == ("histotnet_resnet18_l2/multiruns/T", "report")
    assert run.project == "q"
    assert "report/table/nrows" in run.history_keys or "report/table/_type" in run.history_keys
