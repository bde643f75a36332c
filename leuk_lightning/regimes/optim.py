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
