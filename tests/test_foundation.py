"""Issue 3: packaging, entry point, classifier regime, model factory, HistoTNet pipeline."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import pytest
import torch
from helpers import compose_config, run_app
from omegaconf import OmegaConf

from leuk_lightning.data.datamodules.classification import class_weights_from_labels
from leuk_lightning.errors import ConfigError
from leuk_lightning.models import create_classifier, load_backbone_weights
from leuk_lightning.utils import config as config_utils
from leuk_lightning.utils.checkpoint import AtomicCheckpointIO


def test_config_dir_found_in_checkout_and_in_wheel(tmp_path, monkeypatch):
    assert (config_utils.config_dir() / "train.yaml").is_file()
    wheel_pkg = tmp_path / "site-packages" / "leuk_lightning"
    (wheel_pkg / "conf").mkdir(parents=True)
    (wheel_pkg / "conf" / "train.yaml").write_text("task_name: x\n")
    monkeypatch.setattr(config_utils, "PACKAGE_DIR", wheel_pkg)
    assert config_utils.config_dir() == wheel_pkg / "conf"
    (wheel_pkg / "conf" / "train.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="train.yaml"):
        config_utils.config_dir()


@pytest.mark.parametrize(("level", "expected"), [(1, 9), (2, 26), (3, 38)])
def test_head_size_per_label_level(tmp_path, demo_data, level, expected):
    cfg = compose_config(
        ["data=adp", f"data.label_level={level}", "model=test_resnet", "debug=demo"],
        tmp_path,
        demo_data,
    )
    dm = hydra.utils.instantiate(cfg.data, output_dir=str(tmp_path))
    net = hydra.utils.instantiate(cfg.model, **dm.model_kwargs())
    out = net(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, expected)
    assert dm.multilabel and len(dm.regime_kwargs()["class_weights"]) == expected


def test_class_weights_are_n_over_positives():
    labels = torch.tensor([[1, 0, 1], [1, 0, 0], [1, 0, 0], [0, 0, 1]])
    w = class_weights_from_labels(labels, 3)
    assert torch.allclose(w, torch.tensor([4 / 3, 0.0, 4 / 2]))
    single = class_weights_from_labels(torch.tensor([0, 0, 0, 1]), 2)
    assert torch.allclose(single, torch.tensor([4 / 3, 4 / 1]))


def test_class_weights_from_training_split_of_adp(tmp_path, demo_data):
    cfg = compose_config(["data=adp", "data.label_level=1", "debug=demo"], tmp_path, demo_data)
    dm = hydra.utils.instantiate(cfg.data, output_dir=str(tmp_path))
    dm.setup()
    train_labels = dm.dataset.labels[torch.as_tensor(dm.split_indices["train"])]
    n = train_labels.shape[0]
    expected = [n / c if c else 0.0 for c in train_labels.sum(0).tolist()]
    assert dm.class_weights.tolist() == pytest.approx(expected)
    split = json.loads((tmp_path / "split.json").read_text())
    assert set(split["subsets"]) >= {"train", "val"}


def test_lr_halved_every_20_epochs(tmp_path):
    cfg = compose_config(["+experiment=histotnet_resnet18_l2"], tmp_path)
    net = torch.nn.Linear(2, 2)
    opt = hydra.utils.instantiate(cfg.regime.optimizer)(params=net.parameters())
    sched = hydra.utils.instantiate(cfg.regime.scheduler)(optimizer=opt)
    lrs = []
    for _ in range(cfg.trainer.max_epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.02)
    changes = [e for e in range(1, len(lrs)) if lrs[e] != lrs[e - 1]]
    assert changes == [20, 40, 60, 80]
    assert lrs[99] == pytest.approx(0.02 / 16)
    assert opt.param_groups[0]["momentum"] == 0.9 and cfg.data.batch_size == 8


def test_pretrained_weights_from_local_file_only(tmp_path):
    src = create_classifier("test_resnet", num_classes=1000)
    weights = tmp_path / "w.pth"
    torch.save(src.state_dict(), weights)
    model = create_classifier(
        "test_resnet", num_classes=2, pretrained=True, pretrained_file=str(weights)
    )
    assert model.get_classifier().out_features == 2
    assert torch.equal(model.conv1[0].weight, src.conv1[0].weight)
    with pytest.raises(ConfigError, match=r"model.pretrained_file"):
        create_classifier("test_resnet", 2, pretrained=True, pretrained_file=str(tmp_path / "no"))


def test_init_from_loads_backbone_and_drops_head(tmp_path):
    stage1 = create_classifier("test_resnet", num_classes=9)
    ckpt = tmp_path / "stage.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in stage1.state_dict().items()}}, ckpt)
    model = create_classifier("test_resnet", num_classes=2, init_from=str(ckpt))
    for name, tensor in model.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(tensor, stage1.state_dict()[name]), name
    assert model.fc.out_features == 2
    other = create_classifier("test_vit", num_classes=2)
    with pytest.raises(ConfigError, match="does not match"):
        load_backbone_weights(other, ckpt)


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "a.ckpt"
    io.save_checkpoint({"x": torch.ones(3)}, path)
    assert torch.equal(torch.load(path)["x"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["a.ckpt"]

    def interrupted(obj, f):  # checkpoints are plain data now: interrupt the write itself
        f.write(b"partial")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(RuntimeError):
        io.save_checkpoint({"x": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path)["x"], torch.ones(3))  # old file intact, no temp left
    assert [p.name for p in path.parent.iterdir()] == ["a.ckpt"]


_FAST = [
    "model=test_resnet",
    "trainer.max_epochs=2",
    "pretrain.trainer.max_epochs=1",
    "data.image_size=32",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
]


@pytest.mark.slow
def test_stage_cache_hit_on_second_run(tmp_path, demo_data, caplog):
    from leuk_lightning.training.pipeline import run_pipeline

    overrides = ["+experiment=histotnet_resnet18_l2", "debug=demo", *_FAST]
    cfg = compose_config(overrides, tmp_path, demo_data)
    caplog.set_level(logging.INFO)
    first = run_pipeline(cfg)
    stage_dirs = [p for p in Path(cfg.paths.stage_cache_dir).iterdir() if p.is_dir()]
    assert len(stage_dirs) == 1
    best = stage_dirs[0] / "best.ckpt"
    mtime = best.stat().st_mtime_ns
    assert "not cached" in caplog.text
    caplog.clear()

    cfg2 = compose_config(overrides, tmp_path, demo_data)
    cfg2.paths.output_dir = str(tmp_path / "run2")
    second = run_pipeline(cfg2)
    assert "found in cache" in caplog.text and "not cached" not in caplog.text
    assert best.stat().st_mtime_ns == mtime
    assert cfg2.model.init_from == str(best)
    assert {"test/acc", "test/sensitivity", "test/specificity"} <= set(second)
    assert first["confusion_matrix"] and second["confusion_matrix"]
    # a different label level is a different stage
    cfg3 = compose_config([*overrides, "data.label_level=1"], tmp_path, demo_data)
    cfg3.paths.output_dir = str(tmp_path / "run3")
    run_pipeline(cfg3)
    assert len([p for p in Path(cfg.paths.stage_cache_dir).iterdir() if p.is_dir()]) == 2


@pytest.mark.slow
def test_demo_end_to_end_through_the_entry_point(tmp_path, demo_data):
    proc = run_app(["+experiment=histotnet_resnet18_l2", "debug=demo", *_FAST], tmp_path, demo_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = list((tmp_path / "logs" / "histotnet_resnet18_l2" / "runs").glob("*/results.json"))
    assert len(results) == 1
    record = json.loads(results[0].read_text())
    for key in ("test/acc", "test/sensitivity", "test/specificity"):
        assert 0.0 <= record["metrics"][key] <= 1.0
    assert sum(map(sum, record["metrics"]["confusion_matrix"])) == 130  # 50 % of 260 cells
    run_dir = results[0].parent
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    # the saved config is the one the run used: debug=demo wins over the experiment's values
    assert list(saved.tags) == ["demo"] and saved.trainer.max_epochs == 2
    assert (run_dir / "split.json").is_file() and (run_dir / "confusion_matrix.png").is_file()
    assert list((run_dir / "csv").rglob("metrics.csv"))
    assert "Confusion matrix" in proc.stdout and "test/acc" in proc.stdout


@pytest.mark.slow
def test_multirun_over_label_levels(tmp_path, demo_data):
    proc = run_app(
        ["-m", "+experiment=histotnet_resnet18_l2", "debug=demo", *_FAST, "data.label_level=1,2"],
        tmp_path,
        demo_data,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted((tmp_path / "logs" / "histotnet_resnet18_l2" / "multiruns").glob("*/*/"))
    results = [json.loads((j / "results.json").read_text()) for j in jobs if j.name.isdigit()]
    assert len(results) == 2
    stages = list((tmp_path / "logs" / "stage_cache").glob("histocnn-*/stage.json"))
    levels = sorted(json.loads(s.read_text())["fingerprint"]["data"]["label_level"] for s in stages)
    assert levels == [1, 2]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["paths.all_idb2_dir=/nonexistent/ALL_IDB2"], "/nonexistent/ALL_IDB2"),
        (
            ["model=resnet18", "model.pretrained=true", "model.pretrained_file=/no/w.pth"],
            "/no/w.pth",
        ),
        (["data=adp", "data.label_level=4"], "data.label_level=4"),
    ],
)
def test_bad_input_stops_with_one_clear_message(tmp_path, demo_data, overrides, expected):
    args = ["debug=demo", "model=test_resnet", *overrides]
    proc = run_app(args, tmp_path, demo_data)
    assert proc.returncode == 2
    assert expected in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "experiment", sorted(p.stem for p in (config_utils.config_dir() / "experiment").glob("*.yaml"))
)
def test_every_experiment_composes_with_the_demo(tmp_path, experiment):
    cfg = compose_config([f"+experiment={experiment}", "debug=demo"], tmp_path)
    for key in ("data", "model", "regime", "trainer"):
        target = cfg[key]._target_
        assert hydra.utils.get_object(target) is not None, f"{experiment}: {key} {target}"
    assert cfg.trainer.accelerator == "cpu" and cfg.model.get("pretrained") in (False, None)
    assert cfg.paper is not None and cfg.paper.source, f"{experiment} cites no paper table"
    OmegaConf.to_container(cfg.data, resolve=True)  # every interpolation resolves


def test_recipe_switch_picks_the_code_or_the_paper_text_value():
    from omegaconf import OmegaConf

    from leuk_lightning.errors import ConfigError, user_error

    cfg = OmegaConf.create({"recipe": "code", "lr": "${leuk.recipe:0.02,0.01}"})
    assert cfg.lr == 0.02
    cfg.recipe = "paper_text"
    assert cfg.lr == 0.01
    cfg.recipe = "paper"
    with pytest.raises(Exception) as info:
        _ = cfg.lr
    assert isinstance(user_error(info.value), ConfigError)
