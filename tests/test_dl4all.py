"""Issue 5: DL4ALL multi-task cross-dataset training (regular, greedy rollback, self-supervised)."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
import torch.nn.functional as F
from helpers import compose_config, run_app
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import CombinedLoader
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from leuk_lightning.models import MultiTaskNet, create_multitask_net
from leuk_lightning.regimes import GreedyMultiSourceModule, MultiSourceModule
from leuk_lightning.regimes.snapshot import StateSnapshot
from leuk_lightning.utils.config import config_dir

N_SRC, N_TGT = 4, 6  # different batch sizes so that Eqn. 4's factors differ
W_SRC = torch.tensor([1.5, 3.0, 0.5])
W_TGT = torch.tensor([1.2, 2.5])
LR, HEAD_LR, WD, MOM = 0.05, 0.2, 5e-3, 0.9


# ----------------------------------------------------------------------------- tiny set-up
class TinyBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(5)
        self.num_features = 5

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x))).mean((2, 3))


class DictData(Dataset):
    def __init__(self, n: int, seed: int, multilabel: bool) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, 8, 8, generator=g)
        if multilabel:
            self.labels = (torch.rand(n, 3, generator=g) > 0.5).float()
        else:
            self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"image": self.images[i], "label": self.labels[i]}


def make_module(cls=MultiSourceModule, warmup=(0, 0), seed=0, **kwargs):
    torch.manual_seed(seed)
    net = MultiTaskNet(TinyBackbone(), 3, 2)
    optimizer = functools.partial(torch.optim.SGD, lr=LR, momentum=MOM, weight_decay=WD)
    return cls(
        net,
        optimizer,
        num_classes=2,
        class_weights=W_TGT,
        num_source_classes=3,
        source_multilabel=True,
        source_class_weights=W_SRC,
        head_lr=HEAD_LR,
        warmup_source_epochs=warmup[0],
        warmup_target_epochs=warmup[1],
        **kwargs,
    )


def train_loader(n_batches: int = 3) -> CombinedLoader:
    src = DataLoader(DictData(N_SRC * n_batches, 1, True), batch_size=N_SRC)
    tgt = DataLoader(DictData(N_TGT * n_batches, 2, False), batch_size=N_TGT)
    return CombinedLoader({"source": src, "target": tgt}, mode="min_size")


def first_batches() -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    batch, _, _ = next(iter(train_loader()))
    return batch["source"], batch["target"]


def trainer(**kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return L.Trainer(**defaults)


def state_of(net: nn.Module, opt: torch.optim.Optimizer | None = None) -> dict[str, Tensor]:
    state = {f"p.{k}": v.detach().clone() for k, v in net.named_parameters()}
    state.update({f"b.{k}": v.detach().clone() for k, v in net.named_buffers()})
    if opt is not None:
        names = {id(p): k for k, p in net.named_parameters()}
        for p, entry in opt.state.items():
            for key, value in entry.items():
                if isinstance(value, Tensor):
                    state[f"o.{names[id(p)]}.{key}"] = value.detach().clone()
    return state


def assert_bit_equal(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def reference_optimizer(net: MultiTaskNet, state_dict=None) -> torch.optim.SGD:
    groups = [
        {"params": list(net.backbone.parameters())},
        {"params": list(net.source_head.parameters()), "lr": HEAD_LR},
        {"params": list(net.target_head.parameters()), "lr": HEAD_LR},
    ]
    opt = torch.optim.SGD(groups, lr=LR, momentum=MOM, weight_decay=WD)
    if state_dict is not None:
        opt.load_state_dict(state_dict)
    return opt


def src_loss(net, batch):
    logits = net(batch["image"], head="source")
    return F.binary_cross_entropy_with_logits(logits, batch["label"], weight=W_SRC)


def tgt_loss(net, batch):
    return F.cross_entropy(net(batch["image"], head="target"), batch["label"], weight=W_TGT)


def scale(net, head, factor):
    for p in getattr(net, f"{head}_head").parameters():
        p.grad.mul_(factor)


# ---------------------------------------------------------------------------- network, data
def test_multitask_net_heads_and_features():
    net = create_multitask_net("test_resnet", num_source_classes=9, num_target_classes=2)
    x = torch.randn(2, 3, 32, 32)
    assert net(x, head="source").shape == (2, 9)
    assert net(x).shape == net(x, head="target").shape == (2, 2)
    assert net.features(x).shape == (2, net.num_features)
    with pytest.raises(ValueError, match="head"):
        net(x, head="other")


def test_crossdomain_datamodule(tmp_path, demo_data):
    overrides = ["data=adp_cnmc", "debug=demo", "data.label_level=2", "recipe=paper_text"]
    cfg = compose_config(overrides, tmp_path, demo_data)
    dm = hydra.utils.instantiate(cfg.data, output_dir=str(tmp_path))
    assert dm.model_kwargs() == {"num_source_classes": 26, "num_target_classes": 2}
    kw = dm.regime_kwargs()
    assert kw["source_multilabel"] and kw["num_classes"] == 2
    train_src = dm.source.dataset.labels[torch.as_tensor(dm.source.split_indices["train"])]
    n = train_src.shape[0]
    expected = [n / c if c else 0.0 for c in train_src.sum(0).tolist()]
    assert kw["source_class_weights"].tolist() == pytest.approx(expected)
    for name, dom in dm.domains.items():  # 70/20/10 per domain, saved, own statistics
        doc = json.loads((tmp_path / f"split_{name}.json").read_text())
        sizes = {k: len(v) for k, v in doc["subsets"].items()}
        assert sizes["train"] == pytest.approx(0.7 * len(dom.dataset), abs=3)
        assert sizes["val"] == pytest.approx(0.2 * len(dom.dataset), abs=3)
    assert dm.source.mean != dm.target.mean
    loader = dm.train_dataloader()
    iterator = iter(loader)
    assert len(loader) == len(dm.target.train_dataloader())  # epoch_length=target
    batch, _, _ = next(iterator)
    assert batch["source"]["image"].shape[0] == 8 and batch["target"]["image"].shape[0] == 8
    out = dm.on_after_batch_transfer(batch, 0)
    assert out["source"]["image"].dtype == torch.float32
    assert next(iter(dm.val_dataloader()))["label"].ndim == 1  # target only


def test_self_supervised_source_labels_are_slides(tmp_path, demo_data):
    cfg = compose_config(["+experiment=dl4all_self_resnet18", "debug=demo"], tmp_path, demo_data)
    dm = hydra.utils.instantiate(cfg.data, output_dir=str(tmp_path))
    kw = dm.regime_kwargs()
    assert not kw["source_multilabel"]
    assert kw["num_source_classes"] == len(dm.source.dataset.slides) == 20
    net = hydra.utils.instantiate(cfg.model, name="test_resnet", **dm.model_kwargs())
    module = hydra.utils.instantiate(cfg.regime, net=net, **kw)
    # the code weights the WSI cross-entropy by N / max(n_i, 10) (1b computeClassWeights.py)
    assert module.source_loss_weights is not None
    cfg = compose_config(
        ["+experiment=dl4all_self_resnet18", "debug=demo", "recipe=paper_text"], tmp_path, demo_data
    )
    module = hydra.utils.instantiate(cfg.regime, net=net, **kw)
    assert module.source_loss_weights is None  # Eqn. 5: plain cross-entropy over the WSI index


# -------------------------------------------------------------------------------- regular
def test_regular_step_equals_hand_computed_update():
    module = make_module()
    src, tgt = first_batches()
    before = copy.deepcopy(module.net)
    trainer(max_steps=1).fit(module, train_dataloaders=train_loader())

    ref = copy.deepcopy(before).train()
    params = dict(ref.named_parameters())
    g_s = torch.autograd.grad(src_loss(ref, src), list(params.values()), allow_unused=True)
    with torch.no_grad():
        ref.features(tgt["image"])
    g_t = torch.autograd.grad(tgt_loss(ref, tgt), list(params.values()), allow_unused=True)
    total = N_SRC + N_TGT
    for (name, p), gs, gt in zip(params.items(), g_s, g_t, strict=True):
        gs = torch.zeros_like(p) if gs is None else gs
        gt = torch.zeros_like(p) if gt is None else gt
        grad = 0.5 * gs + 0.5 * gt
        lr = LR
        if name.startswith("source_head"):
            grad, lr = grad * total / N_SRC, HEAD_LR
        elif name.startswith("target_head"):
            grad, lr = grad * total / N_TGT, HEAD_LR
        expected = p.detach() - lr * (grad + WD * p.detach())  # first step: momentum buffer = d_p
        got = dict(module.net.named_parameters())[name].detach()
        assert torch.allclose(got, expected, atol=1e-6, rtol=1e-5), name
        assert not torch.equal(got, p.detach()), f"{name} did not move"
    # BN statistics saw the source batch, the BN pass and the target forward (3 updates)
    assert int(module.net.backbone.bn.num_batches_tracked) == 3


def test_param_groups_follow_the_paper(tmp_path):
    cfg = compose_config(["+experiment=dl4all_regular_resnet18_l1"], tmp_path)
    assert cfg.regime.optimizer.lr == 2e-4 and cfg.regime.head_lr == 1e-3
    assert cfg.regime.optimizer.momentum == 0.9 and cfg.regime.optimizer.weight_decay == 5e-4
    assert cfg.regime.w_source == cfg.regime.w_target == 0.5
    # |Bs| by the code's rule (util/computeBatchSize.py), |Bt| = 8 in code and text
    assert cfg.data.source_batch_size == "auto" and cfg.data.target_batch_size == 8
    assert cfg.trainer.max_epochs == 102
    module = make_module()
    opt = module.configure_optimizers()["optimizer"]
    assert [g["lr"] for g in opt.param_groups] == [LR, HEAD_LR, HEAD_LR]


# -------------------------------------------------------------------------------- warm-up
class StatesPerEpoch(Callback):
    def __init__(self) -> None:
        self.states = []

    def on_train_start(self, trainer, module) -> None:
        self.states.append(state_of(module.net))

    def on_train_epoch_end(self, trainer, module) -> None:
        self.states.append(state_of(module.net))


@pytest.mark.parametrize("cls", [MultiSourceModule, GreedyMultiSourceModule])
def test_warmup_changes_only_the_intended_head(cls):
    module = make_module(cls, warmup=(1, 1))
    rec = StatesPerEpoch()
    trainer(max_epochs=3, limit_train_batches=2, callbacks=[rec]).fit(
        module, train_dataloaders=train_loader()
    )
    s0, s1, s2, s3 = rec.states

    def moved(a, b):
        return {k for k in a if not torch.equal(a[k], b[k])}

    src_head = {k for k in s0 if k.startswith("p.source_head")}
    tgt_head = {k for k in s0 if k.startswith("p.target_head")}
    assert moved(s0, s1) == src_head  # epoch 0: source head only (no BN statistics either)
    assert moved(s1, s2) == tgt_head  # epoch 1: target head only
    assert any(k.startswith("p.backbone") for k in moved(s2, s3))  # then everything trains
    assert any(k.startswith("b.backbone") for k in moved(s2, s3))


# -------------------------------------------------------------------------------- greedy
class ForcedGreedy(GreedyMultiSourceModule):
    """Greedy module whose decisions are forced; records the states the tests compare."""

    forced: list[bool] = []

    def training_step(self, batch, batch_idx):
        opt = self.optimizers().optimizer
        self.pre = (copy.deepcopy(self.net), copy.deepcopy(opt.state_dict()))
        self.pre_state = state_of(self.net, opt)
        if self.snapshot is None:
            self._snapshot()
        restore = self.snapshot.restore
        self.after_restore = None

        def recording_restore():
            restore()
            self.after_restore = state_of(self.net, opt)

        self.snapshot.restore = recording_restore
        keep = self.greedy_iteration(batch["source"], batch["target"], force=self.forced[batch_idx])
        self.snapshot.restore = restore
        assert keep == self.forced[batch_idx]
        self.post_state = state_of(self.net, opt)


def run_forced(decisions: list[bool]) -> ForcedGreedy:
    module = make_module(ForcedGreedy)
    module.forced = decisions
    trainer(max_steps=2 * len(decisions), limit_train_batches=len(decisions)).fit(
        module, train_dataloaders=train_loader(len(decisions))
    )
    return module


def batch_number(k: int, n: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    for i, (batch, _, _) in enumerate(train_loader(n)):
        if i == k:
            return batch["source"], batch["target"]
    raise IndexError(k)


@pytest.mark.parametrize("decisions", [[False], [True, False]])
def test_rollback_is_bit_exact_and_then_steps_on_target_only(decisions):
    module = run_forced(decisions)
    # right after the restore: parameters, buffers, optimizer tensors as before the source step
    assert_bit_equal(module.after_restore, module.pre_state)
    # the target-only step equals one taken from an untouched copy
    net, opt_state = module.pre
    net.train()
    opt = reference_optimizer(net, opt_state)
    src, tgt = batch_number(len(decisions) - 1, len(decisions))
    opt.zero_grad()
    tgt_loss(net, tgt).backward()
    opt.step()
    assert_bit_equal(module.post_state, state_of(net, opt))


def test_keep_equals_source_step_then_target_step():
    module = run_forced([True, True])
    net, opt_state = module.pre
    net.train()
    opt = reference_optimizer(net, opt_state)
    src, tgt = batch_number(1, 2)
    total = N_SRC + N_TGT
    opt.zero_grad()
    (0.5 * src_loss(net, src)).backward()
    scale(net, "source", total / N_SRC)
    opt.step()
    with torch.no_grad():
        net.features(tgt["image"])  # BN statistics pass
    opt.zero_grad()
    (0.5 * tgt_loss(net, tgt)).backward()
    scale(net, "target", total / N_TGT)
    opt.step()
    assert_bit_equal(module.post_state, state_of(net, opt))
    assert module.greedy_state["accepted"] == 2


def test_snapshot_preallocates_and_restores_exactly():
    net = MultiTaskNet(TinyBackbone(), 3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    snap = StateSnapshot(net, opt)
    src, _ = first_batches()
    for _ in range(3):  # momentum exists from the first step on: one (re)allocation
        snap.capture()
        saved = [t.data_ptr() for t in snap.saved_params + snap.saved_state]
        before = state_of(net, opt)
        opt.zero_grad()
        src_loss(net, src).backward()
        opt.step()
        snap.restore()
        assert_bit_equal(state_of(net, opt), before)
        opt.zero_grad()
        src_loss(net, src).backward()
        opt.step()
    snap.capture()
    assert [t.data_ptr() for t in snap.saved_params + snap.saved_state] == saved
    assert snap.allocations == 1  # once momentum buffers exist; never again


@pytest.mark.parametrize("reference", ["best_so_far", "previous_iteration", "same_batch"])
def test_greedy_references_and_accept_rate(reference):
    module = make_module(GreedyMultiSourceModule, reference=reference)
    decisions = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            decisions.append(pl_module.last_decision)

    trainer(max_epochs=2, callbacks=[Record()]).fit(module, train_dataloaders=train_loader())
    state = module.greedy_state
    assert state["iteration"] == state["decisions"] == len(decisions) == 6
    assert state["accepted"] == sum(decisions)
    if reference != "same_batch":
        assert decisions[0] is True  # no reference yet: the first source step is kept
    assert module.trainer.callback_metrics["train/accept_rate"] == pytest.approx(
        sum(decisions[3:]) / 3
    )


def test_greedy_state_survives_resume(tmp_path):
    module = make_module(GreedyMultiSourceModule)
    t = trainer(max_epochs=1)
    t.fit(module, train_dataloaders=train_loader())
    ckpt = tmp_path / "last.ckpt"
    t.save_checkpoint(ckpt)
    saved = dict(module.greedy_state)
    resumed = make_module(GreedyMultiSourceModule, seed=1)
    loaded = {}

    class Check(Callback):
        def on_train_start(self, trainer, pl_module):
            loaded.update(pl_module.greedy_state)

    trainer(max_epochs=2, callbacks=[Check()]).fit(
        resumed, train_dataloaders=train_loader(), ckpt_path=ckpt, weights_only=False
    )
    assert loaded["iteration"] == saved["iteration"] == 3
    assert loaded["reference_loss"] == saved["reference_loss"] < float("inf")
    assert resumed.greedy_state["iteration"] == 6
    assert resumed.trainer.global_step == 12  # two optimizer steps per iteration


# -------------------------------------------------------------------------------- DDP
class RecordingGreedy(GreedyMultiSourceModule):
    out_dir = ""

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.decisions = [*getattr(self, "decisions", []), self.last_decision]

    def on_train_end(self):
        opt = self.optimizers().optimizer
        torch.save(
            {"state": state_of(self.net, opt), "decisions": self.decisions},
            Path(self.out_dir) / f"rank{self.global_rank}.pt",
        )


def test_ddp_greedy_replicas_stay_identical(tmp_path):
    module = make_module(RecordingGreedy, reference="previous_iteration")
    module.out_dir = str(tmp_path)
    src = DataLoader(DictData(N_SRC * 8, 1, True), batch_size=N_SRC)
    tgt = DataLoader(DictData(N_TGT * 8, 2, False), batch_size=N_TGT)
    loader = CombinedLoader({"source": src, "target": tgt}, mode="min_size")
    trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn_find_unused_parameters_true",
        max_epochs=1,
        use_distributed_sampler=True,
    ).fit(module, train_dataloaders=loader)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert len(r0["decisions"]) == 4 and r0["decisions"] == r1["decisions"]
    assert_bit_equal(r0["state"], r1["state"])


# -------------------------------------------------------------------------------- configs
NEW_EXPERIMENTS = sorted(
    p.stem
    for pattern in ("dl4all_*.yaml", "sequential_*_cnmc.yaml")
    for p in (config_dir() / "experiment").glob(pattern)
)


def test_all_dl4all_experiments_exist():
    expected = {
        f"dl4all_{proc}_{m}_l{level}"
        for proc in ("regular", "greedy")
        for m in ("resnet18", "vit_b16")
        for level in (1, 2, 3)
    }
    expected |= {"dl4all_self_resnet18", "dl4all_self_vit_b16"}
    expected |= {
        f"sequential_{m}_l{level}_cnmc"
        for m in ("resnet18", "vit_b16", "resnet18_scratch")
        for level in (1, 2, 3)
    }
    assert set(NEW_EXPERIMENTS) == expected


@pytest.mark.parametrize("name", NEW_EXPERIMENTS)
def test_experiment_composes(tmp_path, name):
    cfg = compose_config([f"+experiment={name}"], tmp_path)
    assert cfg.task_name == name
    assert "Table 4" in cfg.paper.source
    assert {"accuracy", "sensitivity", "specificity"} <= set(cfg.paper)
    demo = compose_config([f"+experiment={name}", "debug=demo"], tmp_path)
    assert demo.data.image_size == 64 and demo.model.pretrained is False
    if "vit" in name:
        assert demo.model.img_size == 64
    if name.startswith("dl4all_greedy"):
        assert demo.regime._target_.endswith("GreedyMultiSourceModule")
        assert demo.regime.reference == "best_so_far"
    if name.startswith("sequential"):
        assert demo.pretrain.enabled and demo.pretrain.data.label_level == demo.data.label_level


@pytest.mark.slow
def test_demo_greedy_resnet18_l1_end_to_end(tmp_path, demo_data):
    result = run_app(
        [
            "+experiment=dl4all_greedy_resnet18_l1",
            "debug=demo",
            "model.name=test_resnet",
            "trainer.max_epochs=3",
            "~callbacks.rich_progress_bar",
        ],
        tmp_path,
        demo_data,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "dl4all_greedy_resnet18_l1" / "runs").iterdir()
    record = json.loads((run_dir / "results.json").read_text())
    assert 0.0 <= record["metrics"]["test/acc"] <= 1.0
    assert len(record["metrics"]["confusion_matrix"]) == 2
    assert record["paper"]["accuracy"]["mean"] == 97.02
    assert (run_dir / "split_source.json").is_file() and (run_dir / "split_target.json").is_file()
    metrics = (run_dir / "csv").rglob("metrics.csv")
    header = next(metrics).read_text().splitlines()[0]
    assert "train/accept_rate" in header and "train/warmup" in header


def test_source_batch_size_auto_passes_validation_and_a_bad_value_does_not(tmp_path):
    from leuk_lightning.utils.config import config_problems

    cfg = compose_config(["+experiment=dl4all_regular_resnet18_l1"], tmp_path)
    assert cfg.data.source_batch_size == "auto" and config_problems(cfg) == []
    cfg.data.source_batch_size = "atuo"
    assert config_problems(cfg) == [
        "data.source_batch_size='atuo' (must be a positive integer or auto)"
    ]
