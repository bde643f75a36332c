"""Issue 14: the greedy DL4ALL decision rule, tested by real comparisons (no ``force=``).

* constructed source steps that lower / raise / leave unchanged the target loss keep / roll back;
* the reference after every iteration, for every ``reference`` mode;
* a side-by-side run of an independent, plain-PyTorch re-implementation of the authors' greedy
  iteration (``1c_PyTorch_CNN_Greedy/functions/train_model_val.py``, written from its logic)
  against the module with the code-faithful settings: identical decisions and weights.
"""

from __future__ import annotations

import copy
import functools
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import CombinedLoader
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from leuk_lightning.models import MultiTaskNet
from leuk_lightning.regimes import GreedyMultiSourceModule

CODE_SETTINGS = dict(
    reference="best_so_far",
    source_head_scaling=False,
    rollback_bn_pass=True,
    zero_grad="zeros",
)


def fit(module: L.LightningModule, loader: CombinedLoader, callbacks=()) -> None:
    L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        max_epochs=1,
        callbacks=list(callbacks),
    ).fit(module, train_dataloaders=loader)


class ListData(Dataset):
    def __init__(self, items: list[dict[str, Tensor]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return self.items[i]


def paired_loader(src: list[dict[str, Tensor]], tgt: list[dict[str, Tensor]], bs: tuple[int, int]):
    return CombinedLoader(
        {
            "source": DataLoader(ListData(src), batch_size=bs[0]),
            "target": DataLoader(ListData(tgt), batch_size=bs[1]),
        },
        mode="min_size",
    )


# --------------------------------------------------------------- constructed source steps
class LinearBackbone(nn.Module):
    """Features = a linear map of the flattened image (no batch norm: exact arithmetic)."""

    def __init__(self, d_in: int = 4, d: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(d_in, d, bias=False)
        self.num_features = d

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.flatten(1))


class Probe(GreedyMultiSourceModule):
    """Records, per iteration, the reference it compared with, what it measured and decided."""

    def on_fit_start(self) -> None:
        self.records: list[dict[str, float]] = []

    def _global(self, value: Tensor) -> float:
        out = super()._global(value)
        self._seen.append(out)
        return out

    def training_step(self, batch, batch_idx):
        self._seen: list[float] = []
        ref_before = float(self.greedy_state["reference_loss"])
        net = copy.deepcopy(self.net).train()
        with torch.no_grad():  # the same target batch's loss before the source step
            before = float(
                self.target_loss(net(batch["target"]["image"]), batch["target"]["label"])
            )
        super().training_step(batch, batch_idx)
        measured_at = 1 if self.reference == "same_batch" else 0
        self.records.append(
            {
                "ref_before": ref_before,
                "batch_before": before,
                "measured": self._seen[measured_at],
                "used": self._seen[-1],
                "keep": self.last_decision,
                "ref_after": float(self.greedy_state["reference_loss"]),
            }
        )


def constructed_module(reference: str, **kwargs) -> Probe:
    """Target head fixed so that class 1's margin is f . u, source head = u: raising the source
    logit raises the target margin. Target labels are all 1, so a source batch labelled 1 lowers
    L_target, one labelled 0 raises it, and one with a zero source head leaves it unchanged."""
    torch.manual_seed(0)
    net = MultiTaskNet(LinearBackbone(), 1, 2)
    u = torch.tensor([1.0, -0.5, 0.25])
    with torch.no_grad():
        net.target_head.weight.copy_(torch.stack([-u / 2, u / 2]))
        net.target_head.bias.zero_()
        net.source_head.weight.copy_(u[None])
        net.source_head.bias.zero_()
    opt = functools.partial(torch.optim.SGD, lr=0.5, momentum=0.0, weight_decay=0.0)
    return Probe(
        net,
        opt,
        num_classes=2,
        num_source_classes=1,
        source_multilabel=True,
        head_lr=0.0,  # the heads stay put: only the shared layer moves
        warmup_source_epochs=0,
        warmup_target_epochs=0,
        class_weighted_loss=False,
        reference=reference,
        **kwargs,
    )


X = torch.tensor([[1.0, 0.5, -0.5, 0.25], [0.5, -1.0, 0.75, 1.0]])


def batches(source_labels: list[float]):
    """One iteration per entry: the source images are the target images, labelled as given."""
    src = [{"image": x.clone(), "label": torch.tensor([lab])} for lab in source_labels for x in X]
    tgt = [{"image": x.clone(), "label": torch.tensor(1)} for _ in source_labels for x in X]
    return paired_loader(src, tgt, (len(X), len(X)))


HELP, HURT = 1.0, 0.0


@pytest.mark.parametrize("reference", ["same_batch", "best_so_far", "previous_iteration"])
def test_a_source_step_that_lowers_the_target_loss_is_kept_one_that_raises_it_rolls_back(
    reference,
):
    module = constructed_module(reference)
    fit(module, batches([HELP, HELP, HURT, HELP]))
    recs = module.records
    # the constructed steps really move the target loss the intended way
    assert [r["measured"] < r["batch_before"] for r in recs] == [True, True, False, True]
    assert [r["keep"] for r in recs] == [True, True, False, True]
    # a rolled-back iteration's step starts from the restored weights: its loss is the one before
    assert recs[2]["used"] == recs[2]["batch_before"]


def test_an_unchanged_target_loss_is_not_an_improvement():
    """Strict ``<``: a source step that leaves L_target exactly equal rolls back."""
    module = constructed_module("same_batch")
    with torch.no_grad():
        module.net.source_head.weight.zero_()  # no gradient reaches the shared layer
    fit(module, batches([HELP]))
    (rec,) = module.records
    assert rec["measured"] == rec["batch_before"]
    assert rec["keep"] is False


@pytest.mark.parametrize("reference", ["best_so_far", "previous_iteration", "same_batch"])
def test_reference_after_every_iteration(reference):
    module = constructed_module(reference)
    fit(module, batches([HELP, HURT, HELP, HURT, HURT, HELP]))
    recs = module.records
    best = math.inf
    for i, r in enumerate(recs):
        if reference == "best_so_far":
            # compared with the lowest accepted post-source-step loss; a rollback leaves it
            assert r["ref_before"] == best, i
            assert r["keep"] == (r["measured"] < best), i
            if r["keep"]:
                best = r["measured"]
            assert r["ref_after"] == best, i
        elif reference == "previous_iteration":
            previous = recs[i - 1]["used"] if i else math.inf
            assert r["ref_before"] == previous, i
            assert r["keep"] == (r["measured"] < previous), i
            assert r["ref_after"] == r["used"], i
        else:
            assert r["keep"] == (r["measured"] < r["batch_before"]), i
            assert r["ref_after"] == math.inf, i  # nothing carried between iterations
    assert {r["keep"] for r in recs} == {True, False}


# ----------------------------------------------------------- side by side with the code
N_S, N_T = 6, 4
W_S = torch.tensor([1.5, 3.0, 0.5])
W_T = torch.tensor([1.2, 2.5])


def random_batches(n_iter: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    src = [
        {
            "image": torch.randn(3, 8, 8, generator=g),
            "label": (torch.rand(3, generator=g) > 0.5).float(),
        }
        for _ in range(n_iter * N_S)
    ]
    tgt = [
        {
            "image": torch.randn(3, 8, 8, generator=g) + 0.5,
            "label": torch.randint(0, 2, (), generator=g),
        }
        for _ in range(n_iter * N_T)
    ]
    return src, tgt


def code_greedy(net: MultiTaskNet, src_batches, tgt_batches, lr, head_lr, mom, wd):
    """The authors' greedy loop, re-written from train_model_val.py (1c) in plain PyTorch."""
    fc1, fc2 = net.source_head, net.target_head  # the code's model.fc1 / model.fc2
    heads = {id(p) for p in [*fc1.parameters(), *fc2.parameters()]}
    base = [p for p in net.parameters() if id(p) not in heads]
    optimizer = torch.optim.SGD(
        [{"params": base}, {"params": [*fc1.parameters(), *fc2.parameters()], "lr": head_lr}],
        lr=lr,
        momentum=mom,
        weight_decay=wd,
    )

    # the code's MultiLabelSoftMarginLoss(weight), written as the same mean of weighted binary
    # cross-entropies (the two agree to float rounding, checked below); chaotic training would
    # amplify even that rounding difference past 1e-6 over 40 iterations
    def criterion1(logits: Tensor, y: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, y, weight=W_S)

    criterion2 = nn.CrossEntropyLoss(weight=W_T)
    best_loss = 1e6
    decisions = []
    net.train()
    for (x1, y1), (x2, y2) in zip(src_batches, tgt_batches, strict=True):
        optimizer.zero_grad(set_to_none=False)  # PyTorch < 2.0: zero-filled gradients
        model_wts = copy.deepcopy(net.state_dict())
        optimizer_wts = copy.deepcopy(optimizer.state_dict())
        loss1 = 0.5 * criterion1(fc1(net.backbone(x1)), y1)
        loss1.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        with torch.no_grad():  # pretrainBN_singleBatch
            net.backbone(x2)
        loss2 = criterion2(fc2(net.backbone(x2)), y2)
        if loss2 < best_loss:
            best_loss = loss2.item()
            (0.5 * loss2).backward()
            for p in fc1.parameters():
                p.grad *= (N_S + N_T) / N_S
            for p in fc2.parameters():
                p.grad *= (N_S + N_T) / N_T
            optimizer.step()
            decisions.append(True)
        else:
            net.load_state_dict(model_wts)
            optimizer.load_state_dict(optimizer_wts)
            with torch.no_grad():
                net.backbone(x2)
            loss2 = criterion2(fc2(net.backbone(x2)), y2)
            loss2.backward()
            optimizer.step()
            decisions.append(False)
    return decisions


class ConvBNBackbone(nn.Module):
    """A tiny conv + batch-norm feature extractor (BN: the passes and rollbacks matter)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.num_features = 6

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.bn(self.conv(x))).mean((2, 3))


def test_module_matches_a_plain_pytorch_rewrite_of_the_code_over_40_iterations():
    n_iter, lr, head_lr, mom, wd = 40, 0.05, 0.2, 0.9, 5e-3
    torch.manual_seed(0)
    net = MultiTaskNet(ConvBNBackbone(), 3, 2)
    twin = copy.deepcopy(net)
    src, tgt = random_batches(n_iter)
    opt = functools.partial(torch.optim.SGD, lr=lr, momentum=mom, weight_decay=wd)
    module = GreedyMultiSourceModule(
        net,
        opt,
        num_classes=2,
        class_weights=W_T,
        num_source_classes=3,
        source_multilabel=True,
        source_class_weights=W_S,
        head_lr=head_lr,
        warmup_source_epochs=0,
        warmup_target_epochs=0,
        **CODE_SETTINGS,
    )
    decisions: list[bool] = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            decisions.append(pl_module.last_decision)

    fit(module, paired_loader(src, tgt, (N_S, N_T)), [Record()])

    src_b = [
        (
            torch.stack([s["image"] for s in src[i : i + N_S]]),
            torch.stack([s["label"] for s in src[i : i + N_S]]),
        )
        for i in range(0, len(src), N_S)
    ]
    tgt_b = [
        (
            torch.stack([t["image"] for t in tgt[i : i + N_T]]),
            torch.stack([t["label"] for t in tgt[i : i + N_T]]),
        )
        for i in range(0, len(tgt), N_T)
    ]
    expected = code_greedy(twin, src_b, tgt_b, lr, head_lr, mom, wd)

    x = torch.randn(N_S, 3, generator=torch.Generator().manual_seed(1))
    y = (x > 0).float()
    assert torch.allclose(
        nn.MultiLabelSoftMarginLoss(weight=W_S)(x, y),
        F.binary_cross_entropy_with_logits(x, y, weight=W_S),
        atol=1e-6,
    )
    assert len(decisions) == len(expected) == n_iter
    assert decisions == expected
    assert 0 < sum(expected) < n_iter  # both branches were exercised
    ours, theirs = module.net.state_dict(), twin.state_dict()
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert torch.allclose(ours[k].float(), theirs[k].float(), atol=1e-6, rtol=0), k
