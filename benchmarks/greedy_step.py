"""Cost of DL4ALL's greedy iteration against the regular one, and of its snapshot/rollback.

In ONE run, on the same two-head ResNet18 and the same source/target batches, it times:

* a regular iteration (source forward, BN pass, target forward, one backward, one SGD step);
* a greedy iteration (snapshot, source step, BN pass, target forward, keep/rollback, target
  step), alternating forced keeps and rollbacks so both paths are measured;
* snapshot + restore alone (preallocated buffers, ``torch._foreach_copy_``);
* the naive snapshot of the authors' public code: ``copy.deepcopy`` of model and optimizer
  each iteration (+ ``load_state_dict`` to roll back).

The last line is ``greedy_over_regular=<x> snapshot_restore_over_step=<y>
deepcopy_over_snapshot=<z>`` (y: snapshot+restore time over a greedy iteration's time).

    python benchmarks/greedy_step.py --size 64 --steps 3
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import time
from collections.abc import Callable

import torch

from leuk_lightning.models import create_multitask_net
from leuk_lightning.regimes import GreedyMultiSourceModule, MultiSourceModule
from leuk_lightning.regimes.snapshot import StateSnapshot


def timed(fn: Callable[[], object], steps: int, warmup: int = 1) -> float:
    """Median seconds per call of ``fn`` over ``steps`` calls (after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times = []
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class _Harness:
    """Just enough of a Trainer for ``optimizers()``/``manual_backward`` outside ``fit``."""

    def __init__(self, module: MultiSourceModule, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        module.optimizers = lambda use_pl_optimizer=True: self  # type: ignore[method-assign]
        module.manual_backward = lambda loss, *a, **k: loss.backward()  # type: ignore[method-assign]
        module.log = lambda *a, **k: None  # type: ignore[method-assign]

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def step(self) -> None:
        self.optimizer.step()


def build(cls: type, device: torch.device, seed: int = 0) -> MultiSourceModule:
    torch.manual_seed(seed)
    net = create_multitask_net("resnet18", num_source_classes=9, num_target_classes=2)
    opt = functools.partial(torch.optim.SGD, lr=2e-4, momentum=0.9, weight_decay=5e-4)
    module = cls(net, opt, num_source_classes=9, warmup_source_epochs=0, warmup_target_epochs=0)
    return module.to(device).train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image side (px)")
    parser.add_argument("--batch", type=int, default=8, help="batch size of each domain")
    parser.add_argument("--steps", type=int, default=3, help="timed iterations per measurement")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    src = {
        "image": torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device),
        "label": (torch.rand(args.batch, 9, generator=g) > 0.7).float().to(device),
    }
    tgt = {
        "image": torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device),
        "label": torch.randint(0, 2, (args.batch,), generator=g).to(device),
    }

    regular = build(MultiSourceModule, device)
    reg_opt = regular.configure_optimizers()["optimizer"]

    def regular_iteration() -> None:
        reg_opt.zero_grad()
        loss_s = regular.source_forward(src)
        regular.bn_statistics_pass(tgt)
        loss_t, _ = regular.target_forward(tgt)
        (regular.w_source * loss_s + regular.w_target * loss_t).backward()
        regular.scale_head_grads(regular.head_scales(args.batch, args.batch))
        reg_opt.step()

    greedy = build(GreedyMultiSourceModule, device)
    greedy_opt = greedy.configure_optimizers()["optimizer"]
    _Harness(greedy, greedy_opt)
    decision = iter(int(i) % 2 == 0 for i in range(10**9))

    def greedy_iteration() -> None:
        greedy.greedy_iteration(src, tgt, force=next(decision))

    greedy_iteration()  # momentum buffers exist from here on: snapshots are preallocated
    snap = greedy.snapshot
    assert isinstance(snap, StateSnapshot)

    def snapshot_restore() -> None:
        snap.capture()
        snap.restore()

    def deepcopy_restore() -> None:
        saved_model = copy.deepcopy(greedy.net)
        saved_opt = copy.deepcopy(greedy_opt.state_dict())
        greedy.net.load_state_dict(saved_model.state_dict())
        greedy_opt.load_state_dict(saved_opt)

    n = args.steps
    t_regular = timed(regular_iteration, n)
    t_greedy = timed(greedy_iteration, n)
    t_snap = timed(snapshot_restore, 4 * n)
    t_deep = timed(deepcopy_restore, 4 * n)
    # second pass in reverse order: a noisy shared machine then biases neither side
    t_deep = min(t_deep, timed(deepcopy_restore, 4 * n))
    t_snap = min(t_snap, timed(snapshot_restore, 4 * n))
    t_greedy = min(t_greedy, timed(greedy_iteration, n))
    t_regular = min(t_regular, timed(regular_iteration, n))

    params = sum(p.numel() for p in greedy.net.parameters())
    print(
        f"device={device} model=resnet18 ({params / 1e6:.1f} M params) size={args.size} "
        f"batch={args.batch}+{args.batch} threads={torch.get_num_threads()}"
    )
    print(f"regular iteration        {1e3 * t_regular:9.2f} ms")
    print(f"greedy iteration         {1e3 * t_greedy:9.2f} ms (keep/rollback alternating)")
    print(f"snapshot+restore         {1e3 * t_snap:9.2f} ms (preallocated, foreach copies)")
    print(f"deepcopy model+optimizer {1e3 * t_deep:9.2f} ms (naive snapshot + restore)")
    print(
        f"greedy_over_regular={t_greedy / t_regular:.3f} "
        f"snapshot_restore_over_step={t_snap / t_greedy:.3f} "
        f"deepcopy_over_snapshot={t_deep / t_snap:.3f}"
    )


if __name__ == "__main__":
    main()
