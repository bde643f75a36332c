"""Lightning overhead: time per training step of ``ClassifierModule`` under ``lightning.Trainer``
vs a bare PyTorch loop (forward, cross-entropy, backward, SGD step) on the same network, the
same initial weights and the same batches (already normalised tensors, so data loading is the
same list iteration for both). The module's step includes what it really does per step:
torchmetrics updates and ``self.log``. Runs of the two alternate; medians are compared. Steps are
timed in CPU time of this process (one torch thread), which other jobs on a shared machine
disturb far less than wall-clock time.

    python benchmarks/lightning_overhead.py [--model resnet18] [--size 64] [--batch 16]
Last line: ``overhead=<lightning step time / bare step time - 1>``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

from leuk_lightning.models import create_classifier  # noqa: E402
from leuk_lightning.regimes import ClassifierModule  # noqa: E402


class StepClock(L.Callback):
    """Time stamps at the end of every training batch."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.stamps.append(time.process_time())


def per_step(stamps: list[float], warmup: int) -> float:
    """Mean seconds per step after ``warmup`` steps."""
    return (stamps[-1] - stamps[warmup - 1]) / (len(stamps) - warmup)


def bare_loop(net: torch.nn.Module, batches: list[dict], lr: float, warmup: int) -> float:
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    net.train()
    stamps = []
    for batch in batches:
        logits = net(batch["image"])
        loss = F.cross_entropy(logits, batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        stamps.append(time.process_time())
    return per_step(stamps, warmup)


def lightning_loop(net: torch.nn.Module, batches: list[dict], lr: float, warmup: int) -> float:
    module = ClassifierModule(
        net=net,
        optimizer=partial(torch.optim.SGD, lr=lr, momentum=0.9),
        scheduler=None,
        num_classes=2,
    )
    clock = StepClock()
    trainer = L.Trainer(
        accelerator="auto",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[clock],
    )
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    trainer.fit(module, train_dataloaders=loader)
    return per_step(clock.stamps, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = create_classifier(args.model, num_classes=2)
    g = torch.Generator().manual_seed(0)
    batches = [
        {
            "image": torch.randn(args.batch, 3, args.size, args.size, generator=g),
            "label": torch.randint(0, 2, (args.batch,), generator=g),
        }
        for _ in range(args.steps)
    ]
    bare_batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    bare_t, light_t = [], []
    for _ in range(args.repeats):
        bare_t.append(bare_loop(copy.deepcopy(base).to(device), bare_batches, 0.01, args.warmup))
        light_t.append(lightning_loop(copy.deepcopy(base), batches, 0.01, args.warmup))
    bare, light = statistics.median(bare_t), statistics.median(light_t)
    print(f"machine: {machine()}")
    print(
        f"model: {args.model} at {args.size} px, batch {args.batch}, {args.steps} steps "
        f"({args.warmup} warm-up) x {args.repeats} alternating repeats on {device}"
    )
    runs_bare = [round(t * 1000, 1) for t in bare_t]
    runs_light = [round(t * 1000, 1) for t in light_t]
    print(f"bare PyTorch loop:          {bare * 1000:.1f} ms/step  runs {runs_bare}")
    print(f"ClassifierModule + Trainer: {light * 1000:.1f} ms/step  runs {runs_light}")
    print(f"overhead={light / bare - 1:.4f}")


if __name__ == "__main__":
    main()
