"""``last.ckpt`` after every epoch (and, optionally, every N training steps).

Lightning >= 2.6's ``ModelCheckpoint(save_last=True)`` rewrites ``last.ckpt`` only when it also
saves a top-k checkpoint, i.e. when the monitored metric improves: after a ``kill -9`` a resume
from ``last.ckpt`` goes back to the last *improving* epoch, which can be most of a long run.
:class:`ModelCheckpoint` here keeps Lightning's top-k behaviour and additionally writes
``last.ckpt`` at the end of every epoch (after validation), so a run killed during epoch k
resumes at epoch k. ``last_every_n_train_steps`` also writes it every N optimizer steps inside
an epoch, for epochs that take hours.

Ties: Lightning replaces its best checkpoint only on a strict improvement, so of two epochs with
the same validation accuracy it keeps the FIRST. The HistoTNet fine-tuning code keeps the LATER
one: ``(2) PyTorch_HistoTNet/functions/train_model_val.py:136-142`` copies the weights when
``epoch_acc > best_acc`` and again when ``epoch_acc == best_acc`` and ``epoch_loss <
min_val_loss``, where ``min_val_loss`` stays at its initial 1e6 (line 28), so every tie replaces
the kept weights (a ``>=``). With 26 validation images (10 % of ALL-IDB2) ties are common.
``keep_ties`` (``first`` | ``later``) picks the rule.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint as _LightningModelCheckpoint

from leuk_lightning.errors import ConfigError

TIES = ("first", "later")


class ModelCheckpoint(_LightningModelCheckpoint):
    """Lightning's ModelCheckpoint with ``last.ckpt`` written every epoch and a tie rule
    ``keep_ties`` (see the module doc)."""

    def __init__(
        self,
        *args: Any,
        last_every_n_train_steps: int | None = None,
        keep_ties: str = "first",
        **kwargs: Any,
    ):
        if keep_ties not in TIES:
            raise ConfigError(
                f"callbacks.model_checkpoint.keep_ties={keep_ties!r} is not known; "
                f"use one of {TIES}"
            )
        if last_every_n_train_steps is not None and last_every_n_train_steps < 0:
            raise ConfigError(
                f"callbacks.model_checkpoint.last_every_n_train_steps={last_every_n_train_steps}"
                " must be >= 0 (0 or null: only at the end of each epoch)"
            )
        super().__init__(*args, **kwargs)
        self.last_every_n_train_steps = last_every_n_train_steps or 0
        self.keep_ties = keep_ties
        self._last_written_step = -1

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_written_step = trainer.global_step

    def _ensure_last(self, trainer: L.Trainer) -> None:
        if self.save_last and self._last_written_step != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _may_save(self, trainer: L.Trainer) -> bool:
        return not (trainer.fast_dev_run or trainer.state.fn != "fit" or trainer.sanity_checking)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any):
        super().on_train_batch_end(trainer, pl_module, *args)
        n = self.last_every_n_train_steps
        if n and trainer.global_step % n == 0 and self._may_save(trainer):
            self._ensure_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer) and self._may_save(trainer):
            self._ensure_last(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer) and self._may_save(trainer):
            self._ensure_last(trainer)

    def check_monitor_top_k(self, trainer: L.Trainer, current: torch.Tensor | None = None) -> bool:
        if self.keep_ties == "first":
            return super().check_monitor_top_k(trainer, current)
        if current is None:
            return False
        if self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return True
        monitor_op = {"min": torch.le, "max": torch.ge}[self.mode]
        better = monitor_op(current, self.best_k_models[self.kth_best_model_path])
        return trainer.strategy.reduce_boolean_decision(bool(better))
