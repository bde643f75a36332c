# ruff: noqa: E501  (the recipe specs are tables: one value and its source per line)
"""Issue 13: the HistoTNet recipes (HistoCNN stage, fine-tuning, ImageNet rows, protocols) as the
authors ran them. Every spec value carries its source; each test checks the composed config AND
the objects built from it, and fails when one value changes.

Sources: "Sec./Table" = Genovese et al., "Histopathological Transfer Learning for ALL Detection";
HN = AngeloUNIMI/HistoTNet "(1) PyTorch_HistoNet/", HT = "(2) PyTorch_HistoTNet/".
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from helpers import compose_config
from lightning import LightningModule, Trainer
from omegaconf import OmegaConf
from torch import nn
from torch.optim import lr_scheduler as L

from leuk_lightning.data.datamodules.classification import (
    build_batch_transform,
    class_weights_from_labels,
)
from leuk_lightning.errors import ConfigError
from leuk_lightning.evaluation import aggregate, tables
from leuk_lightning.models.histo_vgg import HistoVGG, create_histo_vgg
from leuk_lightning.training.checkpointing import ModelCheckpoint as TieBreakModelCheckpoint
from leuk_lightning.training.pipeline import stage_config, stage_fingerprint
from leuk_lightning.training.seeds import job_seed

HISTOTNET = [f"histotnet_{a}_l{level}" for a in ("resnet18", "vgg16") for level in (1, 2, 3)]
IMAGENET = ["imagenet_resnet18_all_idb2", "imagenet_vgg16_all_idb2"]

# ------------------------------------------------------------------------- the recipe specs
# key -> (value with recipe=code, value with recipe=paper_text, source)
FINE_TUNING = {
    "regime.optimizer._target_": ("torch.optim.SGD", "torch.optim.SGD", "Sec. IV-B; HT/pytorch_histotnet.py:177"),
    "regime.optimizer.lr": (0.02, 0.02, "Sec. IV-B; HT/pytorch_histotnet.py:177"),
    "regime.optimizer.momentum": (0.9, 0.9, "Sec. IV-B; HT/pytorch_histotnet.py:177"),
    "regime.optimizer.weight_decay": (5e-4, 0.0, "HT/pytorch_histotnet.py:177; text: none"),
    "regime.scheduler.step_size": (20, 20, "Sec. IV-B; HT/pytorch_histotnet.py:180"),
    "regime.scheduler.gamma": (0.5, 0.5, "Sec. IV-B; HT/pytorch_histotnet.py:180"),
    "regime.monitor": ("val/acc", "val/acc", "HT/functions/train_model_val.py:136"),
    "regime.checkpoint_ties": ("later", "later", "HT/functions/train_model_val.py:136-142"),
    "callbacks.model_checkpoint.keep_ties": ("later", "later", "HT/functions/train_model_val.py:136-142"),
    "data.batch_size": (8, 8, "Sec. IV-B; HT/pytorch_histotnet.py:48"),
    "data.split.fractions": ([0.4, 0.1, 0.5], [0.4, 0.1, 0.5], "Sec. IV-B; HT/pytorch_histotnet.py:189"),
    "data.normalization": ("none", "none", "HT/pytorch_histotnet.py:267-270 (Normalize commented out)"),
    "data.augment.hflip": (0.5, 0.5, "Sec. III-C; HT/pytorch_histotnet.py:264"),
    "data.augment.vflip": (0.5, 0.5, "Sec. III-C; HT/pytorch_histotnet.py:265"),
    "data.augment.rotation": (180, 180, "HT/pytorch_histotnet.py:266 RandomRotation(90) = [-90, 90]"),
    "data.augment.translate": (0.0, 0.0, "HT/pytorch_histotnet.py:262-267 (no translation)"),
    "trainer.max_epochs": (100, 100, "Sec. IV-B; HT/pytorch_histotnet.py:54"),
}  # fmt: skip
HISTOCNN_STAGE = {
    "model.pretrained": (False, False, "Sec. I 'from scratch'; HN/pytorch_histonet.py:132"),
    "regime.optimizer.lr": (0.02, 0.02, "HN/pytorch_histonet.py:148"),
    "regime.optimizer.momentum": (0.9, 0.9, "HN/pytorch_histonet.py:148"),
    "regime.optimizer.weight_decay": (5e-4, 5e-4, "HN/pytorch_histonet.py:148"),
    "regime.scheduler.schedulers.0._target_": ("torch.optim.lr_scheduler.CyclicLR",) * 2 + ("HN/pytorch_histonet.py:152",),
    "regime.scheduler.schedulers.0.base_lr": (0.001, 0.001, "HN/pytorch_histonet.py:152"),
    "regime.scheduler.schedulers.0.max_lr": (0.02, 0.02, "HN/pytorch_histonet.py:152"),
    "regime.scheduler.schedulers.0.step_size_up": (4, 4, "HN/pytorch_histonet.py:153"),
    "regime.scheduler.schedulers.0.mode": ("triangular", "triangular", "HN/pytorch_histonet.py:153"),
    "regime.scheduler.schedulers.0.cycle_momentum": (True, True, "HN/pytorch_histonet.py:153"),
    "regime.scheduler.schedulers.1._target_": ("torch.optim.lr_scheduler.StepLR",) * 2 + ("HN/pytorch_histonet.py:154",),
    "regime.scheduler.schedulers.1.step_size": (20, 20, "HN/pytorch_histonet.py:154"),
    "regime.scheduler.schedulers.1.gamma": (0.5, 0.5, "HN/pytorch_histonet.py:154"),
    "regime.class_weighted_loss": (True, True, "HN/functions/train_model_val.py:165"),
    "regime.monitor": ("val/acc", "val/acc", "Sec. IV-B; HN/functions/train_model_val.py:199"),
    "regime.checkpoint_ties": ("first", "first", "HN/functions/train_model_val.py:199 (`>`)"),
    "callbacks.model_checkpoint.keep_ties": ("first", "first", "HN/functions/train_model_val.py:199"),
    "data.batch_size": (32, 32, "HN/pytorch_histonet.py:53"),
    "data.split.fractions": ([0.9, 0.1], [0.9, 0.1], "Sec. IV-B"),
    "data.normalization": ("scalar_train_val",) * 2 + ("HN/pytorch_histonet.py:240-283,294-296",),
    "data.augment.hflip": (0.5, 0.5, "HN/pytorch_histonet.py:290"),
    "data.augment.vflip": (0.5, 0.5, "HN/pytorch_histonet.py:291"),
    "data.augment.rotation": (0, 0, "HN/pytorch_histonet.py:292 (commented out)"),
    "data.class_weight_min_count": (10, 10, "HN/functions/train_model_val.py:62-65"),
    "data.class_weight_subsets": (["train", "val"],) * 2 + ("HN/functions/train_model_val.py:57-59",),
    "trainer.max_epochs": (80, 100, "HN/pytorch_histonet.py:59; text Sec. IV-B: 100"),
}  # fmt: skip
# parameter counts of the built networks (2 outputs)
PARAMS = {"histo_vgg16": 2_988_578, "resnet18": 11_177_538}


def _compose(tmp_path: Path, *overrides: str):
    return compose_config(list(overrides), tmp_path)


def _assert_spec(cfg, spec: dict, recipe: str) -> None:
    col = 0 if recipe == "code" else 1
    for key, row in spec.items():
        got = OmegaConf.select(cfg, key)
        got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
        want = row[col]
        ok = got == pytest.approx(want) if isinstance(want, float) else got == want
        assert ok, f"{key} = {got!r}, the recipe says {want!r} ({row[2]})"


# --------------------------------------------------------------------------- composed config
@pytest.mark.parametrize("recipe", ["code", "paper_text"])
@pytest.mark.parametrize("experiment", HISTOTNET + IMAGENET)
def test_fine_tuning_recipe_in_the_composed_config(tmp_path, experiment, recipe):
    for extra in ([], ["debug=demo"]):
        cfg = _compose(tmp_path, f"+experiment={experiment}", f"recipe={recipe}", *extra)
        spec = dict(FINE_TUNING)
        if extra:  # the demo shortens training and nothing else
            spec.pop("trainer.max_epochs")
        _assert_spec(cfg, spec, recipe)


@pytest.mark.parametrize("recipe", ["code", "paper_text"])
@pytest.mark.parametrize("experiment", HISTOTNET)
def test_histocnn_stage_recipe_and_weight_source(tmp_path, experiment, recipe):
    # without debug=demo: the demo forces pretrained=false and would hide an ImageNet start
    cfg = _compose(tmp_path, f"+experiment={experiment}", f"recipe={recipe}")
    assert cfg.pretrain.enabled and cfg.pretrain.name == "histocnn"
    stage = stage_config(cfg, "pretrain")
    _assert_spec(stage, HISTOCNN_STAGE, recipe)
    assert stage.data.label_level == int(experiment[-1])
    # the built network starts from random weights: no weights file is asked for (none exists
    # here, so pretrained=true would stop with a ConfigError)
    net = hydra.utils.instantiate(stage.model, num_classes=9)
    assert sum(p.numel() for p in net.parameters()) > 0
    demo = stage_config(_compose(tmp_path, f"+experiment={experiment}", "debug=demo"), "pretrain")
    assert demo.model.pretrained is False


def test_sequential_stage_keeps_imagenet_weights(tmp_path):
    """DL4ALL's sequential baselines are ImageNet -> ADP -> C-NMC by design."""
    cfg = _compose(tmp_path, "+experiment=sequential_resnet18_l1_cnmc")
    stage = stage_config(cfg, "pretrain")
    assert stage.model.pretrained is True
    # the built model does ask for the ImageNet weights file (hydra wraps the ConfigError)
    with pytest.raises(Exception, match="pretrained weights file not found"):
        hydra.utils.instantiate(stage.model, num_classes=9)


@pytest.mark.parametrize(
    "experiment,model,target",
    [
        ("histotnet_vgg16_l2", "histo_vgg16", "leuk_lightning.models.histo_vgg.create_histo_vgg"),
        ("histotnet_resnet18_l2", "resnet18", "leuk_lightning.models.create_classifier"),
        ("imagenet_resnet18_all_idb2", "resnet18", "leuk_lightning.models.create_classifier"),
    ],
)
def test_backbone_and_its_parameter_count(tmp_path, experiment, model, target):
    cfg = _compose(tmp_path, f"+experiment={experiment}")
    assert cfg.model._target_ == target
    # ImageNet weights only for the baseline rows (HistoTNet: the ADP stage's checkpoint)
    assert cfg.model.pretrained is experiment.startswith("imagenet")
    net = hydra.utils.instantiate(cfg.model, num_classes=2, pretrained=False)
    assert sum(p.numel() for p in net.parameters()) == PARAMS[model]


# ----------------------------------------------------------------------------- built objects
def _regime(cfg_regime, net: nn.Module, **kwargs):
    return hydra.utils.instantiate(cfg_regime, net=net, num_classes=2, **kwargs)


def _lrs(optimizer, scheduler, epochs: int) -> list[tuple[float, float]]:
    out = []
    for _ in range(epochs):
        g = optimizer.param_groups[0]
        out.append((g["lr"], g["momentum"]))
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize("recipe", ["code", "paper_text"])
def test_fine_tuning_optimizer_and_schedule_as_built(tmp_path, recipe):
    cfg = _compose(tmp_path, "+experiment=histotnet_resnet18_l2", f"recipe={recipe}")
    module = _regime(cfg.regime, nn.Linear(4, 2))
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "epoch"
    (group,) = opt.param_groups
    assert isinstance(opt, torch.optim.SGD)
    assert group["weight_decay"] == pytest.approx(5e-4 if recipe == "code" else 0.0)
    lrs = [lr for lr, _ in _lrs(opt, sched, 100)]
    expected = [0.02 * 0.5 ** (e // 20) for e in range(100)]
    assert lrs == pytest.approx(expected)
    assert module.hparams.checkpoint_ties == "later"


def test_histocnn_schedule_matches_the_codes_two_schedulers(tmp_path):
    """CyclicLR and StepLR stepped together once per epoch, as HN/functions/train_model_val.py:
    182-185 does with its list: the built scheduler must give the same lr AND momentum."""
    cfg = _compose(tmp_path, "+experiment=histotnet_resnet18_l1")
    stage = stage_config(cfg, "pretrain")
    net = nn.Linear(4, 9)
    module = hydra.utils.instantiate(stage.regime, net=net, num_classes=9, multilabel=True)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    (group,) = opt.param_groups
    assert group["weight_decay"] == pytest.approx(5e-4)
    ours = _lrs(opt, sched, stage.trainer.max_epochs)

    ref_opt = torch.optim.SGD(
        nn.Linear(4, 9).parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4
    )
    ref = [
        L.CyclicLR(ref_opt, base_lr=0.001, max_lr=0.02, mode="triangular", step_size_up=4,
                   cycle_momentum=True),
        L.StepLR(ref_opt, step_size=20, gamma=0.5),
    ]  # fmt: skip
    theirs = []
    for _ in range(80):
        theirs.append((ref_opt.param_groups[0]["lr"], ref_opt.param_groups[0]["momentum"]))
        ref_opt.step()
        for s in ref:
            s.step()
    np.testing.assert_allclose(np.array(ours), np.array(theirs), rtol=1e-12)
    lrs = [lr for lr, _ in ours]
    assert lrs[0] == pytest.approx(0.001) and lrs[4] == pytest.approx(0.02)
    assert lrs[20] == pytest.approx(0.01) and lrs[40] == pytest.approx(0.0005)


def test_histocnn_data_from_the_demo_adp(tmp_path, demo_data):
    """Scalar normalisation from train+val, flips only, w_i = N / max(n_i, 10) over train+val."""
    # level 2: the demo's ADP has classes with fewer than 10 positives, where the rule matters
    cfg = compose_config(["+experiment=histotnet_resnet18_l2", "debug=demo"], tmp_path, demo_data)
    stage = stage_config(cfg, "pretrain")
    dm = hydra.utils.instantiate(stage.data, output_dir=str(tmp_path))
    dm.setup()
    mean = dm.batch_transform.normalize.mean.flatten().tolist()
    std = dm.batch_transform.normalize.std.flatten().tolist()
    assert len(set(mean)) == 1 and len(set(std)) == 1  # one scalar for all channels
    idx = np.concatenate([dm.split_indices["train"], dm.split_indices["val"]])
    pixels = torch.stack([dm.dataset.load_image(int(i)) for i in idx]).double() / 255
    assert mean[0] == pytest.approx(float(pixels.mean()), abs=1e-4)
    assert std[0] == pytest.approx(float(pixels.std(unbiased=False)), abs=1e-4)
    labels = dm.dataset.labels[torch.as_tensor(idx)].float()
    assert bool((labels.sum(0) < 10).any())  # the data exercises max(n_i, 10)
    expected = len(idx) / labels.sum(0).clamp(min=10)
    assert dm.class_weights.tolist() == pytest.approx(expected.tolist())
    aug = dm.batch_transform.augment
    assert (aug.hflip, aug.vflip, aug.rotation, aug.translate) == (0.5, 0.5, 0, 0.0)


def test_fine_tuning_data_is_not_normalised(tmp_path, demo_data):
    cfg = compose_config(["+experiment=histotnet_vgg16_l2", "debug=demo"], tmp_path, demo_data)
    dm = hydra.utils.instantiate(cfg.data, output_dir=str(tmp_path))
    dm.setup()
    norm = dm.batch_transform.normalize
    assert norm.mean.flatten().tolist() == [0.0] * 3 and norm.std.flatten().tolist() == [1.0] * 3
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    assert torch.allclose(dm.batch_transform(x, train=False), x.float() / 255)
    aug = dm.batch_transform.augment
    assert (aug.hflip, aug.vflip, aug.rotation, aug.translate) == (0.5, 0.5, 180, 0.0)


def test_rotation_range_is_plus_minus_90_degrees_on_a_marker(tmp_path):
    """RandomRotation(90) turns a marker by at most 90 degrees either way."""
    cfg = _compose(tmp_path, "+experiment=histotnet_resnet18_l2")
    augment = {**OmegaConf.to_container(cfg.data.augment, resolve=True), "hflip": 0.0, "vflip": 0.0}
    aug = build_batch_transform([0.0] * 3, [1.0] * 3, augment).augment
    size = 65
    img = torch.zeros(512, 1, size, size)
    img[:, :, size // 2 - 1 : size // 2 + 2, size // 2 + 20 : size // 2 + 26] = (
        1.0  # east of centre
    )
    out = aug(img, generator=torch.Generator().manual_seed(0))
    ys, xs = torch.meshgrid(torch.arange(size) - size // 2, torch.arange(size) - size // 2,
                            indexing="ij")  # fmt: skip
    w = out[:, 0]
    cx = (w * xs).sum((1, 2)) / w.sum((1, 2))
    cy = (w * ys).sum((1, 2)) / w.sum((1, 2))
    angles = torch.rad2deg(torch.atan2(cy, cx)).abs()
    assert angles.max() <= 92 and angles.max() > 80


def test_histo_vgg_is_the_codes_network_at_224_px():
    """Same layers as vgg16_bn_Mahdi.py; the adaptive pool equals its MaxPool2d(7, 4, 1)."""
    torch.manual_seed(0)
    ours = HistoVGG(9).eval()
    ref = nn.Sequential(*list(ours.features)[:-1], nn.MaxPool2d(7, stride=4, padding=1))
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(ours.features(x), ref(x))
    convs = [(m.in_channels, m.out_channels, m.kernel_size[0]) for m in ours.features
             if isinstance(m, nn.Conv2d)]  # fmt: skip
    assert convs == [(3, 32, 7), (32, 32, 5), (32, 128, 5), (128, 256, 5), (256, 128, 7),
                     (128, 256, 3)]  # fmt: skip
    assert sum(p.numel() for p in ours.parameters()) == 2_992_169
    assert ours(torch.rand(2, 3, 64, 64)).shape == (2, 9)  # the demo's size still works
    with pytest.raises(ConfigError, match="model.pretrained"):
        create_histo_vgg(2, pretrained=True)


def test_histo_vgg_transfer_replaces_only_the_last_layer(tmp_path):
    stage1 = HistoVGG(23)
    ckpt = tmp_path / "stage.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in stage1.state_dict().items()}}, ckpt)
    model = create_histo_vgg(2, init_from=str(ckpt))
    for name, tensor in model.state_dict().items():
        if not name.startswith("classifierG.3."):
            assert torch.equal(tensor, stage1.state_dict()[name]), name
    assert model.classifierG[3].out_features == 2


# ------------------------------------------------------------------------------- tie-break
class _Scripted(LightningModule):
    """Logs a scripted val/acc per epoch."""

    def __init__(self, accs: list[float]) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.accs = accs

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/acc", self.accs[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _best_epoch(tmp_path: Path, keep_ties: str, accs: list[float]) -> int:
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(2, 2)))
    ckpt = TieBreakModelCheckpoint(dirpath=tmp_path / keep_ties, filename="epoch_{epoch:03d}",
                                   monitor="val/acc", mode="max", save_top_k=1,
                                   auto_insert_metric_name=False, keep_ties=keep_ties)  # fmt: skip
    trainer = Trainer(max_epochs=len(accs), callbacks=[ckpt], logger=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu")  # fmt: skip
    trainer.fit(_Scripted(accs), data, data)
    return int(Path(ckpt.best_model_path).stem.split("_")[-1])


def test_tied_validation_accuracy_keeps_the_later_epoch(tmp_path):
    accs = [0.5, 0.8, 0.8, 0.7]
    assert _best_epoch(tmp_path, "later", accs) == 2  # the code's `>=`
    assert _best_epoch(tmp_path, "first", accs) == 1  # Lightning's rule
    cfg = _compose(tmp_path, "+experiment=histotnet_resnet18_l2")
    cb = hydra.utils.instantiate(cfg.callbacks.model_checkpoint)
    assert isinstance(cb, TieBreakModelCheckpoint) and cb.keep_ties == "later"
    with pytest.raises(ConfigError, match="keep_ties"):
        TieBreakModelCheckpoint(keep_ties="last")


# ------------------------------------------------------------------------------- protocols
def test_holdout10_protocol_and_per_job_seeds(tmp_path):
    base = ["+experiment=histotnet_resnet18_l2", "protocol=histotnet_holdout10"]
    cfgs = [_compose(tmp_path, *base, f"data.split.repeat={r}") for r in (0, 1, 5, 9)]
    split = cfgs[0].data.split
    assert (split.protocol, split.n_repeats, list(split.fractions)) == (
        "holdout",
        10,
        [0.4, 0.1, 0.5],
    )
    seeds = {job_seed(c) for c in cfgs}
    assert len(seeds) == 4 and all(c.seed == 42 for c in cfgs)
    # the ADP stage does not depend on the job: one cache entry for all of them
    prints = {str(stage_fingerprint(stage_config(c, "pretrain"))) for c in cfgs}
    assert len(prints) == 1
    cv = [
        _compose(tmp_path, "+experiment=histotnet_resnet18_l2", "protocol=histotnet_cv",
                 f"data.split.repeat={r}", f"data.split.fold={k}")
        for r in range(3) for k in range(2)
    ]  # fmt: skip
    assert len({job_seed(c) for c in cv}) == 6
    # both folds of a repetition still share one partition (the split stream ignores the fold)
    assert {c.data.split.seed for c in cv} == {42}
    plain = _compose(tmp_path, "+experiment=histotnet_resnet18_l2")
    assert job_seed(plain) == 42


def test_report_states_its_std_estimator_and_runs_the_mann_whitney_test():
    from scipy.stats import mannwhitneyu

    values = [90.0, 95.0, 100.0]
    assert aggregate.summarize(values, n_boot=10, ddof=0).std == pytest.approx(np.std(values))
    assert aggregate.summarize(values, n_boot=10).std == pytest.approx(np.std(values, ddof=1))
    with pytest.raises(ConfigError, match="std-ddof"):
        aggregate.summarize(values, ddof=2)
    md = tables.markdown_report([], ddof=0)
    assert "population standard deviation (ddof=0" in md

    class _Run:
        def __init__(self, i, acc, label):
            self.pair_key = (i, None, 42)
            self.status, self.name, self.label, self.config_key = "ok", f"{label}{i}", label, label
            self.metrics = {"test/acc": acc}
            self.job_dir = None
            self.task_name = label

    a = [0.97, 0.98, 0.99, 0.96, 0.985]
    b = [0.95, 0.94, 0.97, 0.93, 0.96]
    runs = [_Run(i, v, "A") for i, v in enumerate(a)] + [_Run(i, v, "B") for i, v in enumerate(b)]
    result = aggregate.compare(runs, "A", "B")
    acc = next(m for m in result["metrics"] if m["metric"] == "Accuracy")
    ref = mannwhitneyu([100 * v for v in a], [100 * v for v in b], alternative="greater")
    assert acc["mannwhitney_u"] == ref.statistic
    assert acc["mannwhitney_p_greater"] == pytest.approx(ref.pvalue)
    assert acc["mannwhitney_p_greater"] < 0.05 and not math.isnan(acc["p_value"])
    assert "Mann-Whitney U" in tables.markdown_report([], [result])


# ------------------------------------------------------------------------- clear bad input
@pytest.mark.parametrize(
    "kwargs,setting",
    [
        ({"normalization": "per_image"}, "data.normalization"),
        ({"class_weight_min_count": 0}, "data.class_weight_min_count"),
        ({"class_weight_subsets": ["test"]}, "data.class_weight_subsets"),
    ],
)
def test_bad_recipe_settings_name_the_setting(kwargs, setting):
    from leuk_lightning.data.datamodules import ClassificationDataModule

    with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):
        ClassificationDataModule(dataset=lambda **_: None, **kwargs)


def test_bad_checkpoint_ties_names_the_setting():
    from leuk_lightning.regimes import ClassifierModule

    with pytest.raises(ConfigError, match=r"regime\.checkpoint_ties"):
        ClassifierModule(nn.Linear(2, 2), functools.partial(torch.optim.SGD, lr=0.1),
                         checkpoint_ties="random")  # fmt: skip


def test_min_count_weights_follow_the_code():
    labels = torch.tensor([[1, 0, 1]] * 12 + [[1, 0, 0]] * 8)
    w = class_weights_from_labels(labels, 3, min_count=10)
    assert w.tolist() == pytest.approx([20 / 20, 20 / 10, 20 / 12])
