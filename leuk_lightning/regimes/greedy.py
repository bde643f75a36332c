"""DL4ALL greedy cross-dataset transfer learning (Genovese et al. 2023, Sec. III-B2, Fig. 3).

A source batch is used only if it helps the target. One iteration (manual optimization):

1. snapshot weights, batch-norm buffers and optimizer state (incl. momentum) into preallocated
   buffers (:class:`StateSnapshot`);
2. source step: backward of ``w1 * L_source``, one step. ``source_head_scaling`` multiplies the
   source-head gradient by Eqn. 4's factor (the text's "regular update split in two"); the
   authors' code does not (``1c_PyTorch_CNN_Greedy/functions/train_model_val.py``);
3. batch-norm statistics pass and target forward: ``L_target`` after the source step;
4. keep if ``L_target`` < reference (strictly), then step on ``w2 * L_target`` (target-head
   gradient scaled by Eqn. 4);
5. otherwise restore the snapshot exactly, run the BN pass again (``rollback_bn_pass``, as the
   code does), and step on ``L_target`` alone (``L_global = L_target``, unweighted, unscaled),
   recomputed from the restored weights.

The reference (``reference``):

* ``best_so_far`` (code): the lowest *accepted* post-source-step target loss of the run
  (``best_loss`` in the code: set on every keep, never on a rollback, never reset, also not
  between epochs). Because it only ever decreases, the accept rate falls to almost zero after
  a few dozen iterations and greedy then trains on the target alone (see the README).
* ``previous_iteration``: the target loss of the previous iteration, the one its target step was
  taken on (the paper's text: "reduced with respect to the previous iteration").
* ``same_batch``: the same target batch's loss measured right before the source step (a
  cleaner, per-batch criterion; one extra forward whose BN-statistics update is undone).

``zero_grad``: ``none`` (PyTorch 2's ``set_to_none``: a head that is not in a loss gets no update)
or ``zeros`` (the authors' PyTorch zero-filled gradients: the idle head still moves by momentum
and weight decay in every sub-step).

The first iteration has no reference and keeps. Under DDP the target loss is averaged over the
ranks before the comparison, so every rank takes the same decision and replicas stay identical.
``GreedyMultiSourceModule`` keeps an explicit iteration counter (``global_step`` counts two
optimizer steps per iteration), steps LR schedulers at the end of each epoch, clips gradients with
``self.clip_gradients`` (``gradient_clip_val``) and logs the accept rate per epoch
(``train/accept_rate``; the list of all epochs goes to ``results.json`` as
``train/accept_rate_per_epoch``). Its counters and reference survive checkpoint/resume.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from lightning.pytorch.utilities.types import LRSchedulerPLType
from torch import Tensor

from leuk_lightning.errors import ConfigError
from leuk_lightning.regimes.multisource import MultiSourceModule
from leuk_lightning.regimes.snapshot import StateSnapshot

log = logging.getLogger(__name__)

REFERENCES = ("best_so_far", "previous_iteration", "same_batch")
ZERO_GRAD = ("none", "zeros")


class GreedyMultiSourceModule(MultiSourceModule):
    """Greedy DL4ALL: keep a source step only if it lowers the target loss, else roll back.

    Args (on top of :class:`MultiSourceModule`):
        reference: ``best_so_far`` | ``previous_iteration`` | ``same_batch`` (see module doc).
        gradient_clip_val: clip each step's gradient norm to this value (None: no clipping).
        source_head_scaling: scale the source-head gradient of the source step by Eqn. 4.
        rollback_bn_pass: after a rollback, run the BN statistics pass again (code).
        zero_grad: ``none`` | ``zeros`` (see module doc).
    """

    def __init__(
        self,
        *args: Any,
        reference: str = "best_so_far",
        gradient_clip_val: float | None = None,
        source_head_scaling: bool = True,
        rollback_bn_pass: bool = False,
        zero_grad: str = "none",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if reference not in REFERENCES:
            raise ConfigError(
                f"regime.reference={reference!r} is not known; use one of {REFERENCES}"
            )
        if self.loss_weighter is not None:
            raise ConfigError(
                "regime.loss_weighting=uncertainty is for the regular/self-supervised regimes; "
                "the greedy regime weights its two steps with w_source, w_target"
            )
        if zero_grad not in ZERO_GRAD:
            raise ConfigError(f"regime.zero_grad={zero_grad!r} is not known; use {ZERO_GRAD}")
        self.source_head_scaling = bool(source_head_scaling)
        self.rollback_bn_pass = bool(rollback_bn_pass)
        self.zero_grad_mode = zero_grad
        self.accept_rate_history: list[float] = []
        self.save_hyperparameters(
            ignore=["net", "class_weights", "source_class_weights"], logger=False
        )
        self.automatic_optimization = False
        self.reference = reference
        self.gradient_clip_val = gradient_clip_val
        self.snapshot: StateSnapshot | None = None
        self.greedy_state: dict[str, float] = self._fresh_state()
        self.last_decision: bool | None = None

    @staticmethod
    def _fresh_state() -> dict[str, float]:
        return {
            "iteration": 0,
            "reference_loss": math.inf,
            "accepted": 0,
            "decisions": 0,
            "epoch_accepted": 0,
            "epoch_decisions": 0,
        }

    # ----------------------------------------------------------------- steps
    def _global(self, value: Tensor) -> float:
        """The loss averaged over DDP ranks (identical on every rank), as a float."""
        value = value.detach()
        if self._trainer is not None and self._trainer.world_size > 1:
            value = self.trainer.strategy.reduce(value.clone(), reduce_op="mean")
        return float(value)

    @torch.no_grad()
    def _sync_buffers(self) -> None:
        """Average the floating-point buffers (BN running statistics) over DDP ranks.

        The BN pass and target forwards run inside one training step, after DDP's own buffer
        broadcast, so without this the replicas' statistics would differ until the next step.
        """
        if self._trainer is None or self._trainer.world_size <= 1:
            return
        buffers = [b for b in self.net.buffers() if b.is_floating_point()]
        if buffers:
            flat = torch.cat([b.reshape(-1) for b in buffers])
            flat = self.trainer.strategy.reduce(flat, reduce_op="mean")
            parts = flat.split([b.numel() for b in buffers])
            torch._foreach_copy_(
                buffers, [p.view_as(b) for p, b in zip(parts, buffers, strict=True)]
            )

    def _optimizer_step(self, loss: Tensor, head_scale: dict[str, float] | None) -> None:
        opt = self.optimizers()
        opt.zero_grad(set_to_none=self.zero_grad_mode == "none")
        self.manual_backward(loss)
        if head_scale is not None:
            self.scale_head_grads(head_scale)
        if self.gradient_clip_val:
            self.clip_gradients(opt, gradient_clip_val=self.gradient_clip_val)
        opt.step()

    def _snapshot(self) -> StateSnapshot:
        if self.snapshot is None:
            self.snapshot = StateSnapshot(self.net, self.optimizers().optimizer)
        return self.snapshot

    def greedy_iteration(
        self, src: dict[str, Tensor], tgt: dict[str, Tensor], force: bool | None = None
    ) -> bool:
        """One greedy iteration; returns whether the source step was kept.

        ``force`` (tests) overrides the comparison: True keeps, False rolls back.
        """
        snap = self._snapshot()
        snap.capture()
        if self.reference == "same_batch":
            with torch.no_grad():
                before, _ = self.target_forward(tgt)
            snap.restore_buffers()  # the measurement must not move the BN statistics
            reference = self._global(before)
        else:
            reference = float(self.greedy_state["reference_loss"])
        n_s, n_t = src["image"].shape[0], tgt["image"].shape[0]
        scales = self.head_scales(n_s, n_t)

        loss_s = self.source_forward(src)
        src_scale = {"source": scales["source"]} if self.source_head_scaling else None
        self._optimizer_step(self.w_source * loss_s, src_scale)
        self.bn_statistics_pass(tgt)
        loss_t, logits = self.target_forward(tgt)
        measured = self._global(loss_t)
        keep = measured < reference if force is None else force
        if keep:
            self._optimizer_step(self.w_target * loss_t, {"target": scales["target"]})
            used = measured
        else:
            snap.restore()
            if self.rollback_bn_pass:
                self.bn_statistics_pass(tgt)
            loss_t, logits = self.target_forward(tgt)
            self._optimizer_step(loss_t, None)
            used = self._global(loss_t)

        self._sync_buffers()
        state = self.greedy_state
        if self.reference == "best_so_far":
            if keep:  # the code's best_loss: only an accepted measurement replaces it
                state["reference_loss"] = measured
        elif self.reference == "previous_iteration":
            state["reference_loss"] = used
        state["accepted"] += int(keep)
        state["epoch_accepted"] += int(keep)
        state["decisions"] += 1
        state["epoch_decisions"] += 1
        self.last_decision = bool(keep)
        self._track_target(logits, tgt["label"])
        self._log_losses({"loss_source": loss_s, "loss_target": loss_t, "loss": loss_t}, n_t)
        return bool(keep)

    def warmup_iteration(self, batch: dict[str, dict[str, Tensor]], phase: str) -> None:
        """One warm-up step on one head (frozen backbone), as in the regular regime."""
        if phase == "warmup_source":
            loss = self.source_forward(batch["source"], frozen=True)
            self._log_losses({"loss": loss, "loss_source": loss}, batch["source"]["label"].shape[0])
        else:
            loss, logits = self.target_forward(batch["target"], frozen=True)
            self._track_target(logits, batch["target"]["label"])
            self._log_losses({"loss": loss, "loss_target": loss}, batch["target"]["label"].shape[0])
        self._optimizer_step(loss, None)

    def training_step(self, batch: dict[str, dict[str, Tensor]], batch_idx: int) -> None:
        phase = self.phase()
        if phase == "joint":
            self.greedy_iteration(batch["source"], batch["target"])
        else:
            self.warmup_iteration(batch, phase)
        self.greedy_state["iteration"] += 1
        if self.trainer.is_last_batch:
            self._step_schedulers()

    def _step_schedulers(self) -> None:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        for sched in schedulers if isinstance(schedulers, list) else [schedulers]:
            sched_any: LRSchedulerPLType = sched
            if isinstance(sched_any, torch.optim.lr_scheduler.ReduceLROnPlateau):
                raise ConfigError(
                    "the greedy regime steps its schedulers itself at epoch end; "
                    "ReduceLROnPlateau is not supported (use StepLR/CosineAnnealingLR)"
                )
            sched_any.step()

    # ------------------------------------------------------------ bookkeeping
    def on_train_epoch_end(self) -> None:
        state = self.greedy_state
        if state["epoch_decisions"]:
            rate = state["epoch_accepted"] / state["epoch_decisions"]
            self.accept_rate_history.append(rate)
            self.log("train/accept_rate", rate)
        self.log("train/iteration", float(state["iteration"]))
        state["epoch_accepted"] = 0
        state["epoch_decisions"] = 0
        super().on_train_epoch_end()

    def accept_rate_summary(self) -> dict[str, Any]:
        """Per-epoch accept rates of the joint epochs and the overall rate (results.json)."""
        state = self.greedy_state
        overall = state["accepted"] / state["decisions"] if state["decisions"] else float("nan")
        return {
            "train/accept_rate_per_epoch": [round(r, 6) for r in self.accept_rate_history],
            "train/accept_rate_overall": overall,
        }

    def on_train_end(self) -> None:
        summary = self.accept_rate_summary()
        log.info(
            "Greedy (%s): accept rate %.3f overall; per joint epoch: %s",
            self.reference,
            summary["train/accept_rate_overall"],
            ", ".join(f"{r:.3f}" for r in summary["train/accept_rate_per_epoch"]) or "-",
        )

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self.test_results.update(self.accept_rate_summary())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["greedy_state"] = dict(self.greedy_state)
        checkpoint["accept_rate_history"] = list(self.accept_rate_history)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = {**self._fresh_state(), **checkpoint.get("greedy_state", {})}
        # testing the best checkpoint after fit must not rewind the counters of the whole run
        if saved["iteration"] >= self.greedy_state["iteration"]:
            self.greedy_state = saved
            self.accept_rate_history = list(checkpoint.get("accept_rate_history", []))
        self.snapshot = None  # re-created (preallocated) at the next iteration
