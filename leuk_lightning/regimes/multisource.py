"""DL4ALL regular and self-supervised multi-task cross-dataset training (Genovese et al. 2023).

One iteration (Sec. III-B1, steps 1-8) on a batch pair ``{"source", "target"}``:

1. source forward through the shared backbone and the source head;
2. ``L_source``: multi-label BCE with class weights w[i] = N / n_i (Eqn. 1), or, for the
   self-supervised procedure (Sec. III-B3), cross-entropy over the WSI index (Eqn. 5);
3. batch-norm statistics forward on the target batch (no loss, no gradient);
4. target forward through the target head;
5. ``L_target``: cross-entropy with class weights (Eqn. 2);
6. ``L_global = w1 * L_source + w2 * L_target`` (Eqn. 3, w1 = w2 = 0.5);
7. head gradients scaled by (|Bs|+|Bt|)/|Bs| (source head) and (|Bs|+|Bt|)/|Bt| (target head)
   (Eqn. 4);
8. one SGD step; parameter groups: both heads at ``head_lr`` (1e-3), the shared backbone at the
   optimizer's lr (2e-4), momentum 0.9, weight decay 5e-4 (Sec. IV-B).

Warm-up (Sec. IV-B): the first ``warmup_source_epochs`` epochs train only the source head on
``L_source``, the next ``warmup_target_epochs`` only the target head on ``L_target``; the
backbone gets no gradient and the other head gets no gradient. ``warmup_backbone_mode``:
``eval`` keeps the backbone's batch-norm statistics put; ``train`` (the authors' code,
``functions/warmup.py``: ``model.train()`` with frozen parameters) lets them follow the warm-up
batches. ``warmup_lr`` sets every group's learning rate during warm-up (the code's separate
``SGD(lr=1e-3)``), and ``fresh_optimizer_after_warmup`` drops the momentum buffers when the
joint phase starts (the code builds a new optimizer). These epochs count towards
``trainer.max_epochs`` and are logged as ``train/warmup = 1``.

Batch-norm re-estimation (``bn_reestimate_batches``, the code's ``pretrainBN`` before every
validation): that many C-NMC *training* batches (with their training augmentation) are forwarded
in train mode without gradient before each validation, so the running statistics, which the
kept checkpoint carries, describe the target domain rather than the ADP/C-NMC mixture of
training. Networks without batch norm (ViT) skip it.

``loss_weighting``: ``fixed`` (Eqn. 3 with w1, w2) or ``uncertainty``: the learned weighting the
paper says it tried (Sec. IV-B, [50]); the code's ``AutomaticWeightedLoss``:
``sum_i 0.5 / p_i^2 * L_i + log(1 + p_i^2)``, p initialised to 1, no weight decay.

Validation and test see only the target domain through the target head; metrics, best-value
tracking and the test confusion matrix are those of :class:`ClassifierModule`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor, nn

from leuk_lightning.errors import ConfigError
from leuk_lightning.regimes.classifier import ClassifierModule
from leuk_lightning.regimes.optim import optimizers_config

log = logging.getLogger(__name__)

PHASES = ("warmup_source", "warmup_target", "joint")
LOSS_WEIGHTINGS = ("fixed", "uncertainty")


class UncertaintyWeighting(nn.Module):
    """Learned task weights (Liebel & Koerner 2018, [50]); the DL4ALL code's
    ``functions/AutomaticWeightedLoss.py``: ``sum_i 0.5 / p_i^2 * L_i + log(1 + p_i^2)``."""

    def __init__(self, num: int = 2) -> None:
        super().__init__()
        self.params = nn.Parameter(torch.ones(num))

    def forward(self, *losses: Tensor) -> Tensor:
        p2 = self.params**2
        return sum(0.5 / p2[i] * loss + torch.log1p(p2[i]) for i, loss in enumerate(losses))


def has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


class MultiSourceModule(ClassifierModule):
    """Shared backbone, source and target heads, trained on interleaved source/target batches.

    Args:
        net: a :class:`~leuk_lightning.models.MultiTaskNet` (``source_head``, ``target_head``,
            ``features``).
        optimizer: partial optimizer; its ``lr`` is the shared backbone's learning rate.
        scheduler: optional partial LR scheduler (stepped per epoch).
        num_classes, class_weights, class_names: the target task (C-NMC: 2 classes).
        class_weighted_loss: weight the target cross-entropy by N / n_i (Eqn. 2).
        num_source_classes, source_multilabel, source_class_weights, source_class_names: the
            source task, from the datamodule (ADP tissue levels or WSI indices).
        source_class_weighted_loss: weight the source loss by N / n_i; ``None``: only for
            multi-label sources (Eqn. 1; the self-supervised Eqn. 5 is unweighted).
        w_source, w_target: w1, w2 of Eqn. 3.
        head_lr: learning rate of both heads (lr_FC).
        grad_normalization: apply Eqn. 4 to the head gradients.
        bn_pass: run the batch-norm statistics forward on the target batch (step 3).
        warmup_source_epochs, warmup_target_epochs: warm-up epochs per head.
        warmup_backbone_mode: ``eval`` | ``train`` (BN statistics follow the warm-up batches).
        warmup_lr: learning rate of every group during warm-up (None: the joint ones).
        fresh_optimizer_after_warmup: clear the optimizer state when the joint phase starts.
        bn_reestimate_batches: target training batches forwarded before each validation.
        loss_weighting: ``fixed`` (w1, w2) | ``uncertainty`` (learned).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        num_classes: int = 2,
        class_weights: Tensor | Sequence[float] | None = None,
        class_names: Sequence[str] | None = None,
        class_weighted_loss: bool = True,
        num_source_classes: int | None = None,
        source_multilabel: bool = True,
        source_class_weights: Tensor | Sequence[float] | None = None,
        source_class_names: Sequence[str] | None = None,
        source_class_weighted_loss: bool | None = None,
        w_source: float = 0.5,
        w_target: float = 0.5,
        head_lr: float = 1e-3,
        grad_normalization: bool = True,
        bn_pass: bool = True,
        warmup_source_epochs: int = 1,
        warmup_target_epochs: int = 1,
        monitor: str = "val/acc",
        monitor_mode: str = "max",
        warmup_backbone_mode: str = "eval",
        warmup_lr: float | None = None,
        fresh_optimizer_after_warmup: bool = False,
        bn_reestimate_batches: int = 0,
        loss_weighting: str = "fixed",
    ) -> None:
        for attr in ("source_head", "target_head", "features"):
            if not hasattr(net, attr):
                raise ConfigError(
                    f"regime {type(self).__name__} needs a two-head network (model._target_: "
                    f"leuk_lightning.models.create_multitask_net); {type(net).__name__} has no "
                    f"'{attr}'"
                )
        super().__init__(
            net,
            optimizer,
            scheduler,
            num_classes=num_classes,
            multilabel=False,
            class_weights=class_weights,
            class_names=class_names,
            class_weighted_loss=class_weighted_loss,
            monitor=monitor,
            monitor_mode=monitor_mode,
        )
        self.save_hyperparameters(
            ignore=["net", "class_weights", "source_class_weights"], logger=False
        )
        if warmup_source_epochs < 0 or warmup_target_epochs < 0:
            raise ConfigError("regime.warmup_*_epochs must be >= 0")
        if warmup_backbone_mode not in ("eval", "train"):
            raise ConfigError(
                f"regime.warmup_backbone_mode={warmup_backbone_mode!r} is not known; use eval|train"
            )
        if not isinstance(bn_reestimate_batches, int) or bn_reestimate_batches < 0:
            raise ConfigError(
                f"regime.bn_reestimate_batches={bn_reestimate_batches!r} must be an int >= 0"
            )
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ConfigError(
                f"regime.loss_weighting={loss_weighting!r} is not known; use one of "
                f"{LOSS_WEIGHTINGS}"
            )
        self.loss_weighter = UncertaintyWeighting(2) if loss_weighting == "uncertainty" else None
        self._joint_lrs: list[float] | None = None
        self.num_source_classes = num_source_classes or net.source_head.out_features
        self.source_multilabel = source_multilabel
        self.source_class_names = list(source_class_names or [])
        use_src_w = (
            source_multilabel if source_class_weighted_loss is None else source_class_weighted_loss
        )
        src_w = (
            torch.as_tensor(source_class_weights, dtype=torch.float32)
            if use_src_w and source_class_weights is not None
            else None
        )
        self.register_buffer("source_loss_weights", src_w)
        self.w_source, self.w_target = float(w_source), float(w_target)
        self._head_scale: dict[str, float] | None = None
        self._train_metric_updates = 0

    # ---------------------------------------------------------------- phases
    def phase(self, epoch: int | None = None) -> str:
        """``warmup_source`` | ``warmup_target`` | ``joint`` for an epoch (default: current)."""
        epoch = self.current_epoch if epoch is None else epoch
        if epoch < self.hparams.warmup_source_epochs:
            return "warmup_source"
        if epoch < self.hparams.warmup_source_epochs + self.hparams.warmup_target_epochs:
            return "warmup_target"
        return "joint"

    def setup(self, stage: str) -> None:
        """Under DDP each head is unused in some backward passes (warm-up, greedy steps)."""
        strategy = self.trainer.strategy if self._trainer is not None else None
        if isinstance(strategy, DDPStrategy) and not strategy._ddp_kwargs.get(
            "find_unused_parameters", False
        ):
            raise ConfigError(
                f"{type(self).__name__} under DDP needs unused-parameter detection (one head "
                "gets no gradient in warm-up epochs and greedy steps): set "
                "trainer.strategy=ddp_find_unused_parameters_true"
            )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # warm-up: the frozen backbone runs in eval mode (BN statistics stay put) unless the
        # recipe says train (the code: BN statistics follow the warm-up batches)
        warm_train = self.hparams.warmup_backbone_mode == "train"
        self.net.backbone.train(self.phase() == "joint" or warm_train)

    def n_warmup_epochs(self) -> int:
        return int(self.hparams.warmup_source_epochs) + int(self.hparams.warmup_target_epochs)

    def _apply_phase_optimizer(self) -> None:
        """Warm-up learning rate; joint learning rates and a fresh optimizer at the switch."""
        if self._trainer is None or self._joint_lrs is None:
            return
        opt = self.optimizers()
        opt = getattr(opt, "optimizer", opt)
        warmup_lr = self.hparams.warmup_lr
        if self.phase() != "joint":
            if warmup_lr is not None:
                for group in opt.param_groups:
                    group["lr"] = float(warmup_lr)
            return
        if self.current_epoch == self.n_warmup_epochs() and self.n_warmup_epochs() > 0:
            if warmup_lr is not None:
                for group, lr in zip(opt.param_groups, self._joint_lrs, strict=True):
                    group["lr"] = lr
            if self.hparams.fresh_optimizer_after_warmup:
                opt.state.clear()

    # ------------------------------------------------------ BN re-estimation
    @torch.no_grad()
    def reestimate_bn(self) -> int:
        """Forward ``bn_reestimate_batches`` target training batches in train mode; returns
        how many were forwarded (0 when disabled or the network has no batch norm)."""
        n = int(self.hparams.bn_reestimate_batches)
        if n <= 0 or not has_batch_norm(self.net):
            return 0
        dm = self._trainer.datamodule if self._trainer is not None else None
        if dm is None or not hasattr(dm, "bn_batches"):
            raise ConfigError(
                "regime.bn_reestimate_batches > 0 needs a datamodule with bn_batches() "
                "(data: adp_cnmc); set regime.bn_reestimate_batches=0 otherwise"
            )
        was_training = self.net.training
        self.net.train()
        done = 0
        for images in dm.bn_batches(n, self.device):
            self.net.features(images)
            done += 1
        self.net.train(was_training)
        return done

    def on_validation_epoch_start(self) -> None:
        if self._trainer is not None and self.trainer.sanity_checking:
            return
        self.reestimate_bn()

    # ------------------------------------------------------- forward and losses
    def forward(self, x: Tensor) -> Tensor:
        """Target logits (what validation, test and inference use)."""
        return self.net(x, head="target")

    def source_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Eqn. 1 (weighted multi-label BCE, mean over classes and samples) or Eqn. 5 (CE)."""
        if self.source_multilabel:
            return F.binary_cross_entropy_with_logits(
                logits, target.float(), weight=self.source_loss_weights
            )
        return F.cross_entropy(logits, target.long(), weight=self.source_loss_weights)

    def target_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Eqn. 2: cross-entropy with the target class weights."""
        return F.cross_entropy(logits, target.long(), weight=self.loss_weights)

    def source_forward(self, batch: dict[str, Tensor], frozen: bool = False) -> Tensor:
        """Steps 1-2: ``L_source`` of a source batch (``frozen``: no backbone gradient)."""
        if frozen:
            with torch.no_grad():
                feats = self.net.features(batch["image"])
            logits = self.net.source_head(feats)
        else:
            logits = self.net(batch["image"], head="source")
        return self.source_loss(logits, batch["label"])

    @torch.no_grad()
    def bn_statistics_pass(self, batch: dict[str, Tensor]) -> None:
        """Step 3: a forward on the target batch that only updates batch-norm statistics."""
        if self.hparams.bn_pass:
            self.net.features(batch["image"])

    def target_forward(
        self, batch: dict[str, Tensor], frozen: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Steps 4-5: ``(L_target, logits)`` of a target batch."""
        if frozen:
            with torch.no_grad():
                feats = self.net.features(batch["image"])
            logits = self.net.target_head(feats)
        else:
            logits = self.net(batch["image"], head="target")
        return self.target_loss(logits, batch["label"]), logits

    def global_loss(self, loss_s: Tensor, loss_t: Tensor) -> Tensor:
        """Eqn. 3 (fixed w1, w2) or the learned uncertainty weighting."""
        if self.loss_weighter is not None:
            return self.loss_weighter(loss_s, loss_t)
        return self.w_source * loss_s + self.w_target * loss_t

    def head_scales(self, n_source: int, n_target: int) -> dict[str, float]:
        """Eqn. 4 factors: (|Bs|+|Bt|)/|Bs| for the source head, (|Bs|+|Bt|)/|Bt| for the target."""
        if not self.hparams.grad_normalization:
            return {"source": 1.0, "target": 1.0}
        total = float(n_source + n_target)
        return {"source": total / n_source, "target": total / n_target}

    @torch.no_grad()
    def scale_head_grads(self, scales: dict[str, float]) -> None:
        """Multiply the gradients of each head by its Eqn. 4 factor (in place)."""
        for name, factor in scales.items():
            if factor == 1.0:
                continue
            grads = [p.grad for p in self.net.head(name).parameters() if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, factor)

    def _track_target(self, logits: Tensor, target: Tensor) -> None:
        self.train_metrics.update(self.scores(logits.detach()), target.long())
        self._train_metric_updates += 1

    def _log_losses(self, values: dict[str, Tensor], batch_size: int) -> None:
        for name, value in values.items():
            self.log(
                f"train/{name}",
                value.detach(),
                on_step=False,
                on_epoch=True,
                prog_bar=name == "loss",
                batch_size=batch_size,
            )

    # -------------------------------------------------------------- training
    def training_step(self, batch: dict[str, dict[str, Tensor]], batch_idx: int) -> Tensor:
        src, tgt = batch["source"], batch["target"]
        phase = self.phase()
        self._head_scale = None
        if phase == "warmup_source":
            loss = self.source_forward(src, frozen=True)
            self._log_losses({"loss": loss, "loss_source": loss}, src["label"].shape[0])
            return loss
        if phase == "warmup_target":
            loss, logits = self.target_forward(tgt, frozen=True)
            self._track_target(logits, tgt["label"])
            self._log_losses({"loss": loss, "loss_target": loss}, tgt["label"].shape[0])
            return loss
        loss_s = self.source_forward(src)
        self.bn_statistics_pass(tgt)
        loss_t, logits = self.target_forward(tgt)
        loss = self.global_loss(loss_s, loss_t)
        self._head_scale = self.head_scales(src["image"].shape[0], tgt["image"].shape[0])
        self._track_target(logits, tgt["label"])
        self._log_losses(
            {"loss": loss, "loss_source": loss_s, "loss_target": loss_t}, tgt["label"].shape[0]
        )
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Step 7 (Eqn. 4), after the backward of ``L_global`` and before clipping/stepping."""
        if self._head_scale is not None:
            self.scale_head_grads(self._head_scale)

    def on_train_epoch_start(self) -> None:
        self._apply_phase_optimizer()
        phase = self.phase()
        if phase != "joint":
            log.info("Epoch %d: warm-up, training the %s head only", self.current_epoch, phase[7:])

    def on_train_epoch_end(self) -> None:
        self.log("train/warmup", float(self.phase() != "joint"), sync_dist=True)
        if self._train_metric_updates:
            self.log_dict(self.train_metrics.compute(), sync_dist=True)
        self.train_metrics.reset()
        self._train_metric_updates = 0

    # ------------------------------------------------------------- optimizer
    def param_groups(self) -> list[dict[str, Any]]:
        """Backbone at the optimizer's lr, each head at ``head_lr`` (Sec. IV-B)."""
        head_lr = float(self.hparams.head_lr)
        groups = [
            {"params": list(self.net.backbone.parameters()), "name": "backbone"},
            {"params": list(self.net.source_head.parameters()), "lr": head_lr, "name": "source"},
            {"params": list(self.net.target_head.parameters()), "lr": head_lr, "name": "target"},
        ]
        if self.loss_weighter is not None:  # the code: backbone lr, no weight decay
            groups.append(
                {"params": [self.loss_weighter.params], "weight_decay": 0.0, "name": "loss_w"}
            )
        return groups

    def configure_optimizers(self) -> dict[str, Any]:
        config = optimizers_config(
            self.hparams.optimizer, self.hparams.scheduler, self.param_groups()
        )
        self._joint_lrs = [float(g["lr"]) for g in config["optimizer"].param_groups]
        return config
