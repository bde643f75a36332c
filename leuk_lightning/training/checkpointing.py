"""``last.ckpt`` after every epoch (and, optionally, every N training steps).

Lightning >= 2.6's ``ModelCheckpoint(save_last=True)`` rewrites ``last.ckpt`` only when it also
saves a top-k checkpoint, i.e. when the monitored metric improves: after a ``kill -9`` a resume
from ``last.ckpt`` goes back to the last *improving* epoch, which can be most of a long run.
:class:`ModelCheckpoint` here keeps Lightning's top-k behaviour and additionally writes
``last.ckpt`` at the end of every epoch (after validation), so a run killed during epoch k
resumes at epoch k. ``last_every_n_train_steps`` also writes it every N optimizer steps inside
an epoch, for epochs that take hours.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint as _LightningModelCheckpoint

from leuk_lightning.errors import ConfigError


class ModelCheckpoint(_LightningModelCheckpoint):
    """Lightning's ModelCheckpoint with ``last.ckpt`` written every epoch (see module doc)."""

    def __init__(self, *args: Any, last_every_n_train_steps: int | None = None, **kwargs: Any):
        if last_every_n_train_steps is not None and last_every_n_train_steps < 0:
            raise ConfigError(
                f"callbacks.model_checkpoint.last_every_n_train_steps={last_every_n_train_steps}"
                " must be >= 0 (0 or null: only at the end of each epoch)"
            )
        super().__init__(*args, **kwargs)
        self.last_every_n_train_steps = last_every_n_train_steps or 0
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
