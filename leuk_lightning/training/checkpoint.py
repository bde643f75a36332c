"""Best-checkpoint selection with a chosen tie-break.

Lightning's ``ModelCheckpoint`` replaces its best checkpoint only on a strict improvement, so of
two epochs with the same validation accuracy it keeps the FIRST. The HistoTNet fine-tuning code
keeps the LATER one: ``(2) PyTorch_HistoTNet/functions/train_model_val.py:136-142`` copies the
weights when ``epoch_acc > best_acc`` and again when ``epoch_acc == best_acc`` and
``epoch_loss < min_val_loss``, where ``min_val_loss`` stays at its initial 1e6 (line 28), so every
tie replaces the kept weights (a ``>=``). With 26 validation images (10 % of ALL-IDB2) ties are
common, so the rule changes which weights are tested.
"""

from __future__ import annotations

import torch
from lightning import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from leuk_lightning.errors import ConfigError

TIES = ("first", "later")


class TieBreakModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``keep_ties`` says which of equally good epochs is kept:
    ``first`` (Lightning's rule, strict improvement) or ``later`` (the HistoTNet code's ``>=``)."""

    def __init__(self, *args, keep_ties: str = "first", **kwargs) -> None:
        if keep_ties not in TIES:
            raise ConfigError(
                f"callbacks.model_checkpoint.keep_ties={keep_ties!r} is not known; "
                f"use one of {TIES}"
            )
        super().__init__(*args, **kwargs)
        self.keep_ties = keep_ties

    def check_monitor_top_k(self, trainer: Trainer, current: Tensor | None = None) -> bool:
        if self.keep_ties == "first":
            return super().check_monitor_top_k(trainer, current)
        if current is None:
            return False
        if self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return True
        monitor_op = {"min": torch.le, "max": torch.ge}[self.mode]
        better = monitor_op(current, self.best_k_models[self.kth_best_model_path])
        return trainer.strategy.reduce_boolean_decision(bool(better))
