"""Optimizer + epoch-wise scheduler from the regimes' partial ``_target_`` configs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


def optimizers_config(
    optimizer: Callable[..., torch.optim.Optimizer],
    scheduler: Callable[..., Any] | None,
    params: Iterable[Any],
    monitor: str | None = None,
) -> dict[str, Any]:
    """What ``configure_optimizers`` returns: the optimizer and, if configured, its scheduler
    stepped once per epoch (``monitor`` is passed for plateau schedulers)."""
    opt = optimizer(params=params)
    if scheduler is None:
        return {"optimizer": opt}
    lr_scheduler: dict[str, Any] = {
        "scheduler": scheduler(optimizer=opt),
        "interval": "epoch",
        "frequency": 1,
    }
    if monitor:
        lr_scheduler["monitor"] = monitor
    return {"optimizer": opt, "lr_scheduler": lr_scheduler}


def chain_schedulers(
    optimizer: torch.optim.Optimizer, schedulers: list[Callable[..., Any]]
) -> torch.optim.lr_scheduler.ChainedScheduler:
    """Several schedulers stepped together, in order, once per epoch: what the HistoCNN code does
    with its list ``[CyclicLR(0.001-0.02, step_size_up=4), StepLR(20, 0.5)]`` (``(1)
    PyTorch_HistoNet/pytorch_histonet.py:151-154``, both stepped after every training epoch in
    ``functions/train_model_val.py:182-185``). ``schedulers`` are partials (``_partial_: true``)
    called with the optimizer, in the listed order."""
    if not schedulers:
        from leuk_lightning.errors import ConfigError

        raise ConfigError("regime.scheduler.schedulers: give at least one scheduler to chain")
    built = [make(optimizer=optimizer) for make in schedulers]
    return torch.optim.lr_scheduler.ChainedScheduler(built, optimizer=optimizer)
