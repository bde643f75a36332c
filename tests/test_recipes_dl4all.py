"""Issue 14: the DL4ALL recipe as the authors' code ran it (default) and as the text gives it.

Every value is checked against its source (AngeloUNIMI/DL4ALL, ``1c_PyTorch_CNN_Greedy``: main =
``pytorch_cnn_adp_plus_cnmc.py``, tmv = ``functions/train_model_val.py``; the paper's Sec. IV-B).
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import hydra
import numpy as np
import pytest
import torch
from helpers import compose_config
from hydra.errors import InstantiationException
from torch import Tensor, nn

from leuk_lightning.data import stats
from leuk_lightning.data.datamodules.crossdomain import (
    floored_class_weights,
    rule_batch_size,
    scalar_mean_std,
)
from leuk_lightning.errors import ConfigError
from leuk_lightning.models import MultiTaskNet
from leuk_lightning.regimes import GreedyMultiSourceModule, MultiSourceModule


@pytest.fixture(scope="module")
def code(tmp_path_factory):
    return compose_config(
        ["+experiment=dl4all_greedy_resnet18_l1"], tmp_path_factory.mktemp("code")
    )


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    return compose_config(
        ["+experiment=dl4all_greedy_resnet18_l1", "recipe=paper_text"],
        tmp_path_factory.mktemp("text"),
    )


def test_code_recipe_values(code):
    d, r = code.data, code.regime
    assert code.recipe == "code"
    # batches: |Bt| = 8 (main batch_sizeP), |Bs| from computeBatchSize, epoch until either ends
    assert (d.target_batch_size, d.source_batch_size, d.epoch_length) == (8, "auto", "min_size")
    # splits: ADP 80/10/10 (10 stratified folds), C-NMC 70/20/10 (splitfolders.ratio)
    assert list(d.source_split.fractions) == [0.8, 0.1, 0.1]
    assert list(d.target_split.fractions) == [0.7, 0.2, 0.1]
    # one scalar mean/std from train + val; class weights N / max(n_i, 10) from train + val
    assert d.normalization == "train"
    assert dict(d.normalization_stats) == {"channels": "scalar", "subsets": ["train", "val"]}
    assert dict(d.class_weights) == {"subsets": ["train", "val"], "floor": 10}
    # augmentation per domain: ADP flips only, C-NMC flips + RandomRotation(90) = [-90, 90]
    assert dict(d.source_augment) == {"hflip": 0.5, "vflip": 0.5, "rotation": 0, "translate": 0.0}
    assert dict(d.target_augment) == {
        "hflip": 0.5,
        "vflip": 0.5,
        "rotation": 180,
        "translate": 0.0,
    }
    assert d.augment is None
    assert d.image_size == 224  # Resize(224) for ResNet18
    # optimiser: SGD m 0.9 wd 5e-4, lr 2e-4 shared / 1e-3 heads, no scheduler (main)
    assert r.optimizer._target_ == "torch.optim.SGD"
    assert (r.optimizer.lr, r.head_lr) == (2.0e-4, 1.0e-3)
    assert (r.optimizer.momentum, r.optimizer.weight_decay) == (0.9, 5.0e-4)
    assert r.scheduler is None
    assert (r.w_source, r.w_target, r.loss_weighting) == (0.5, 0.5, "fixed")
    assert r.grad_normalization and r.bn_pass and r.class_weighted_loss
    # BN re-estimation: numBatchesPretrain = 100 and `while batch_num < 100` forwards 101
    assert r.bn_reestimate_batches == 101
    # warm-up: one epoch per head, BN in train mode, SGD lr 1e-3, a new optimizer afterwards
    assert (r.warmup_source_epochs, r.warmup_target_epochs) == (1, 1)
    assert (r.warmup_backbone_mode, r.warmup_lr, r.fresh_optimizer_after_warmup) == (
        "train",
        1.0e-3,
        True,
    )
    # greedy (tmv): best_loss reference, no Eqn-4 scaling of the source step, BN pass after a
    # rollback, zero-filled gradients
    assert r._target_.endswith("GreedyMultiSourceModule")
    assert (r.reference, r.source_head_scaling, r.rollback_bn_pass, r.zero_grad) == (
        "best_so_far",
        False,
        True,
        "zeros",
    )
    assert code.trainer.max_epochs == 102  # 100 epochs + 2 warm-up epochs
    assert code.model.name == "resnet18.tv_in1k" and code.model.pretrained


def test_paper_text_recipe_values(text):
    d, r = text.data, text.regime
    assert (d.target_batch_size, d.source_batch_size, d.epoch_length) == (8, 8, "target")
    assert list(d.source_split.fractions) == [0.7, 0.2, 0.1]
    assert dict(d.normalization_stats) == {"channels": "per_channel", "subsets": ["train"]}
    assert dict(d.class_weights) == {"subsets": ["train"], "floor": 0}
    assert d.source_augment.rotation == d.target_augment.rotation == 360
    assert r.bn_reestimate_batches == 0
    assert (r.warmup_backbone_mode, r.warmup_lr, r.fresh_optimizer_after_warmup) == (
        "eval",
        None,
        False,
    )
    assert (r.reference, r.source_head_scaling, r.rollback_bn_pass, r.zero_grad) == (
        "previous_iteration",
        True,
        False,
        "none",
    )
    # shared by both: lrs, momentum, weight decay, |Bt|
    assert (r.optimizer.lr, r.head_lr, r.optimizer.weight_decay) == (2.0e-4, 1.0e-3, 5.0e-4)


def test_vit_and_self_supervised_rows(tmp_path):
    vit = compose_config(["+experiment=dl4all_greedy_vit_b16_l2"], tmp_path)
    # 2c: lukemelas B_16_imagenet1k (ImageNet-21k -> 1k) at 384 px, dropout 0.1
    assert vit.model.name == "vit_base_patch16_384.orig_in21k_ft_in1k"
    assert vit.data.image_size == vit.model.img_size == 384
    assert (vit.model.proj_drop_rate, vit.model.attn_drop_rate) == (0.1, 0.0)
    self_ = compose_config(["+experiment=dl4all_self_resnet18"], tmp_path)
    assert self_.data.source_dataset.label == "slide"
    assert list(self_.data.source_split.fractions) == [0.7, 0.2, 0.1]  # 1b: ratio(.7, .2, .1)
    assert self_.regime.source_class_weighted_loss is True  # 1b: CE weighted N / n_i
    assert self_.data.source_batch_size == "auto"


def test_batch_size_rule_of_the_code():
    # ADP 17,668 patches: 8 of 10 folds = 14,134 (regular/greedy) or 70 % = 12,368 (self);
    # C-NMC 10,661 cells: 70 % = 7,462 -> |Bs| 16 and 14, as the issue and the code's logs give
    assert rule_batch_size(8, 14134, 7462) == 16
    assert rule_batch_size(8, 12368, 7462) == 14
    assert rule_batch_size(8, 100, 200) == 4  # a smaller source: floor (computeBatchSize)
    assert rule_batch_size(8, 50, 50) == 8


def test_demo_datamodule_follows_the_code_recipe(tmp_path, demo_data):
    cfg = compose_config(
        ["+experiment=dl4all_greedy_resnet18_l1", "debug=demo"], tmp_path, demo_data
    )
    dm = hydra.utils.instantiate(cfg.data, output_dir=str(tmp_path))
    kw = dm.regime_kwargs()
    n_src = len(dm.source.split_indices["train"])
    n_tgt = len(dm.target.split_indices["train"])
    assert dm.batch_sizes == {"source": math.ceil(8 * n_src / n_tgt), "target": 8}
    assert dm.source.batch_size == dm.batch_sizes["source"] > 8
    batch, _, _ = next(iter(dm.train_dataloader()))
    assert batch["source"]["image"].shape[0] == dm.batch_sizes["source"]
    # min_size: the epoch ends with the shorter loader
    lengths = [len(dm.source.train_dataloader()), len(dm.target.train_dataloader())]
    combined = dm.train_dataloader()
    iter(combined)
    assert len(combined) == min(lengths)
    # 80/10/10 ADP split
    assert n_src == pytest.approx(0.8 * len(dm.source.dataset), rel=0.05)  # not 0.7
    # scalar statistics of train + val
    for dom in (dm.source, dm.target):
        idx = np.concatenate([dom.split_indices["train"], dom.split_indices["val"]])
        m, s = stats.channel_mean_std(dom.dataset, idx)
        expected = scalar_mean_std(m, s)
        assert dom.mean == pytest.approx([expected[0]] * 3)
        assert dom.std == pytest.approx([expected[1]] * 3)
    # class weights from train + val, counts floored at 10
    idx = np.concatenate([dm.source.split_indices["train"], dm.source.split_indices["val"]])
    labels = dm.source.dataset.labels[torch.as_tensor(idx)]
    counts = labels.sum(0).clamp(min=10)
    assert kw["source_class_weights"].tolist() == pytest.approx((len(idx) / counts).tolist())
    # augmentation per domain
    assert dm.source.batch_transform.augment.rotation == 0
    assert dm.target.batch_transform.augment.rotation == 180
    # BN re-estimation batches: augmented, normalised target training batches
    images = list(dm.bn_batches(2, torch.device("cpu")))
    assert len(images) == 2 and images[0].dtype == torch.float32


def test_floored_class_weights():
    labels = torch.tensor([0, 0, 0, 1])
    assert floored_class_weights(labels, 3, 10).tolist() == pytest.approx([0.4, 0.4, 0.4])
    assert floored_class_weights(labels, 3, 0).tolist() == pytest.approx([4 / 3, 4.0, 0.0])


# ----------------------------------------------------------------- regime behaviour
class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.num_features = 4

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.bn(self.conv(x))).mean((2, 3))


def tiny_module(cls=MultiSourceModule, **kwargs):
    torch.manual_seed(0)
    opt = functools.partial(torch.optim.SGD, lr=2e-4, momentum=0.9, weight_decay=5e-4)
    return cls(
        MultiTaskNet(Tiny(), 3, 2),
        opt,
        num_classes=2,
        num_source_classes=3,
        source_multilabel=True,
        head_lr=1e-3,
        **kwargs,
    )


def test_bn_reestimation_forwards_the_configured_number_of_target_batches(code):
    module = tiny_module(bn_reestimate_batches=code.regime.bn_reestimate_batches)
    served = []

    class Stub:
        def bn_batches(self, n, device):
            for i in range(10_000):
                if i >= n:
                    return
                served.append(i)
                yield torch.full((2, 3, 4, 4), 3.0) + torch.randn(2, 3, 4, 4)

    module._trainer = SimpleNamespace(datamodule=Stub(), sanity_checking=False)
    module.net.eval()
    before = module.net.backbone.bn.running_mean.clone()
    assert module.reestimate_bn() == 101 == len(served)
    assert not module.net.training  # back to eval for the validation that follows
    after = module.net.backbone.bn.running_mean
    assert not torch.equal(before, after)  # the statistics now describe the target batches
    module._trainer = None


def test_bn_reestimation_needs_a_cross_domain_datamodule():
    module = tiny_module(bn_reestimate_batches=3)
    module._trainer = SimpleNamespace(datamodule=object(), sanity_checking=False)
    with pytest.raises(ConfigError, match="bn_reestimate_batches"):
        module.reestimate_bn()
    module._trainer = None


def test_warmup_lr_and_fresh_optimizer_at_the_joint_phase():
    import lightning as L
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.utilities import CombinedLoader
    from torch.utils.data import DataLoader, TensorDataset

    module = tiny_module(warmup_lr=1e-3, fresh_optimizer_after_warmup=True)
    seen = []

    class Watch(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                opt = trainer.optimizers[0]
                seen.append(([g["lr"] for g in opt.param_groups], len(opt.state)))

    g = torch.Generator().manual_seed(0)

    def loader(multilabel):
        x = torch.randn(8, 3, 4, 4, generator=g)
        y = (torch.rand(8, 3, generator=g) > 0.5).float() if multilabel else torch.arange(8) % 2
        ds = TensorDataset(x, y)
        return DataLoader(
            ds,
            batch_size=4,
            collate_fn=lambda b: {
                "image": torch.stack([i[0] for i in b]),
                "label": torch.stack([i[1] for i in b]),
            },
        )

    combined = CombinedLoader({"source": loader(True), "target": loader(False)}, mode="min_size")
    L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Watch()],
    ).fit(module, train_dataloaders=combined)
    (lr0, _), (lr1, state1), (lr2, state2) = seen
    assert lr0 == lr1 == [1e-3, 1e-3, 1e-3]  # warm-up: the code's separate SGD(lr=1e-3)
    assert state1 > 0  # momentum of the warm-up steps ...
    assert lr2 == [2e-4, 1e-3, 1e-3] and state2 == 0  # ... dropped: a fresh joint optimizer


def test_warmup_backbone_mode_train_moves_the_bn_statistics():
    module = tiny_module(warmup_source_epochs=1, warmup_backbone_mode="train")
    module.on_train_batch_start(None, 0)
    assert module.net.backbone.training
    module = tiny_module(warmup_source_epochs=1, warmup_backbone_mode="eval")
    module.on_train_batch_start(None, 0)
    assert not module.net.backbone.training


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"warmup_backbone_mode": "frozen"}, "regime.warmup_backbone_mode"),
        ({"bn_reestimate_batches": -1}, "regime.bn_reestimate_batches"),
        ({"loss_weighting": "learned"}, "regime.loss_weighting"),
    ],
)
def test_bad_regime_settings_name_the_setting(kwargs, setting):
    with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):
        tiny_module(**kwargs)


def test_bad_greedy_settings_name_the_setting():
    with pytest.raises(ConfigError, match=r"regime\.zero_grad"):
        tiny_module(GreedyMultiSourceModule, zero_grad="nan")
    with pytest.raises(ConfigError, match=r"regime\.loss_weighting=uncertainty"):
        tiny_module(GreedyMultiSourceModule, loss_weighting="uncertainty")


def test_bad_data_settings_name_the_setting(tmp_path, demo_data):
    base = ["+experiment=dl4all_greedy_resnet18_l1", "debug=demo"]
    for override, setting in [
        ("data.source_batch_size=many", "data.source_batch_size"),
        ("data.normalization_stats.channels=mono", "data.normalization_stats.channels"),
        ("data.class_weights.floor=-1", "data.class_weights.floor"),
    ]:
        cfg = compose_config([*base, override], tmp_path, demo_data)
        # hydra wraps the ConfigError; its one line names the setting
        with pytest.raises(InstantiationException, match=setting.replace(".", r"\.")):
            hydra.utils.instantiate(cfg.data, output_dir=str(tmp_path))


def test_uncertainty_weighting_is_the_codes_automatic_weighted_loss():
    module = tiny_module(loss_weighting="uncertainty")
    with torch.no_grad():
        module.loss_weighter.params.copy_(torch.tensor([0.5, 2.0]))
    ls, lt = torch.tensor(1.2), torch.tensor(0.7)
    expected = 0.5 / 0.25 * 1.2 + math.log(1 + 0.25) + 0.5 / 4.0 * 0.7 + math.log(1 + 4.0)
    assert float(module.global_loss(ls, lt)) == pytest.approx(expected)
    groups = module.param_groups()
    assert groups[-1]["name"] == "loss_w" and groups[-1]["weight_decay"] == 0.0


# ------------------------------------------------------------ the hold-out protocol end to end
@pytest.mark.slow
def test_dl4all_holdout_protocol_runs_five_jobs_and_reports(tmp_path, demo_data):
    """protocol=dl4all_holdout (70/20/10 x 5) with a DL4ALL experiment, then `report`."""
    import json

    from helpers import run_app

    from leuk_lightning.cli import report as report_cli

    result = run_app(
        [
            "-m",
            "+experiment=dl4all_greedy_resnet18_l1",
            "protocol=dl4all_holdout",
            "debug=demo",
            "model.name=test_resnet",
            "data.image_size=32",
            "trainer.max_epochs=3",
            "regime.bn_reestimate_batches=2",
            "~callbacks.rich_progress_bar",
        ],
        tmp_path,
        demo_data,
        timeout=1500,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "dl4all_greedy_resnet18_l1" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if (p / "results.json").is_file())
    assert len(jobs) == 5
    test_sets = set()
    for job in jobs:
        record = json.loads((job / "results.json").read_text())
        rates = record["metrics"]["train/accept_rate_per_epoch"]
        assert len(rates) == 1 and 0.0 <= rates[0] <= 1.0  # one joint epoch after 2 warm-up
        assert 0.0 <= record["metrics"]["train/accept_rate_overall"] <= 1.0
        split = json.loads((job / "split_target.json").read_text())
        test_sets.add(tuple(split["subsets"]["test"]))
    assert len(test_sets) == 5  # every repetition draws its own split
    assert report_cli.main([str(sweep), "--n-boot", "100"]) == 0
    md = (sweep / "report.md").read_text()
    assert "dl4all_greedy_resnet18_l1" in md and "97.02" in md
