"""Supervised classification regime (HistoCNN on ADP, HistoTNet and ImageNet baselines).

Single-label data trains with softmax + cross-entropy; multi-label data (ADP) with sigmoid + BCE
where class i is weighted by w[i] = N / n_i (N training samples, n_i positives of class i in the
training split; classes without positives get weight 0 and are excluded from per-class metrics).
The network is injected (``net``); optimizer and scheduler are partial ``_target_`` configs.

Options of the Prellberg & Kramer recipe (all off by default):

- ``binary_logit``: a 2-class task with ONE output logit, trained with BCE weighted by
  ``pos_weight = n_neg / n_pos`` of the training split (from ``class_weights``; turn the weight
  off with ``class_weighted_loss=false``); metrics see ``sigmoid(logit)`` = P(class 1).
- ``lr_groups``: per-stage learning-rate multipliers by parameter name
  (:func:`leuk_lightning.models.param_groups.build_param_groups`; the optimizer's ``lr`` is the
  base rate they multiply).
- ``tta``: ``rot8`` or ``d4`` test-time augmentation at test time
  (:class:`leuk_lightning.evaluation.tta.TTAWrapper`).
- ``val_tta``: validate with the same test-time augmentation, so the epoch and seed selected by
  the validation metric are those of the TTA predictions (Prellberg & Kramer's
  ``main_manual.py`` selects by the preliminary-set F1 with TTA).

``checkpoint_ties`` (``first`` | ``later``) is read by the best-checkpoint callback
(``conf/callbacks/default.yaml``: ``keep_ties: ${oc.select:regime.checkpoint_ties,first}``): which
of two epochs with the same monitored value is kept. It lives in the regime so that a pipeline
stage (HistoCNN: ``>``, first) and the main run (HistoTNet fine-tuning: ``>=``, later) each
carry their own rule and the stage cache tells them apart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch import Tensor, nn
from torchmetrics import MaxMetric, MetricCollection, MinMetric

from leuk_lightning.errors import ConfigError
from leuk_lightning.evaluation import metrics as M
from leuk_lightning.evaluation.tta import TTA_MODES, TTAWrapper
from leuk_lightning.regimes.optim import optimizers_config

log = logging.getLogger(__name__)


class ClassifierModule(LightningModule):
    """Train/evaluate one classifier network on one dataset."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        num_classes: int = 2,
        multilabel: bool = False,
        class_weights: Tensor | Sequence[float] | None = None,
        class_names: Sequence[str] | None = None,
        class_weighted_loss: bool | None = None,
        monitor: str = "val/acc",
        monitor_mode: str = "max",
        binary_logit: bool = False,
        lr_groups: dict[str, Any] | None = None,
        tta: str | None = None,
        val_tta: bool = False,
        checkpoint_ties: str = "first",
    ) -> None:
        super().__init__()
        if binary_logit and (num_classes != 2 or multilabel):
            raise ConfigError(
                f"regime.binary_logit=true needs a single-label 2-class task, got "
                f"num_classes={num_classes}, multilabel={multilabel}"
            )
        if tta is not None and tta not in TTA_MODES:
            raise ConfigError(f"regime.tta={tta!r} is not known; use null or one of {TTA_MODES}")
        from leuk_lightning.training.checkpointing import TIES

        if checkpoint_ties not in TIES:
            raise ConfigError(
                f"regime.checkpoint_ties={checkpoint_ties!r} is not known; use one of {TIES}"
            )
        if val_tta and tta is None:
            raise ConfigError("regime.val_tta=true needs a test-time augmentation (regime.tta)")
        self.save_hyperparameters(ignore=["net", "class_weights"], logger=False)
        self.net = net
        self.num_classes = num_classes
        self.multilabel = multilabel
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        weights = (
            torch.ones(num_classes) if class_weights is None else torch.as_tensor(class_weights)
        )
        self.binary_logit = binary_logit
        if binary_logit:  # the weight of class 1 over class 0 is n_neg / n_pos
            use_pos = True if class_weighted_loss is None else class_weighted_loss
            pos_weight = (weights[1] / weights[0]).reshape(1).float() if use_pos else None
            if pos_weight is not None and weights[0] <= 0:
                raise ConfigError("regime.binary_logit: no class-0 samples in the training split")
            self.register_buffer("pos_weight", pos_weight)
            use_weights = False
        else:
            use_weights = multilabel if class_weighted_loss is None else class_weighted_loss
        self.register_buffer("loss_weights", weights.float() if use_weights else None)
        valid = weights > 0 if multilabel else None
        self.train_metrics = self._metrics("train/", valid)
        self.val_metrics = self._metrics("val/", valid)
        self.test_metrics = self._metrics("test/", valid)
        self.test_confusion = M.confusion_matrix_metric(num_classes, multilabel)
        # multi-class: the sensitivity of every class (binary tasks have sensitivity/specificity)
        self.test_per_class = (
            M.per_class_sensitivity(num_classes) if not multilabel and num_classes > 2 else None
        )
        self.val_best = MaxMetric() if monitor_mode == "max" else MinMetric()
        self.val_best.persistent(True)  # in checkpoints: a resumed run keeps its best so far
        self.test_results: dict[str, Any] = {}

    # ----------------------------------------------------------------- helpers
    def _metrics(self, prefix: str, valid: Tensor | None) -> MetricCollection:
        if self.multilabel:
            return M.multilabel_metrics(self.num_classes, valid).clone(prefix=prefix)
        if self.num_classes == 2:
            return M.binary_metrics().clone(prefix=prefix)
        return M.multiclass_metrics(self.num_classes).clone(prefix=prefix)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _logit(self, logits: Tensor) -> Tensor:
        """The single logit of a ``binary_logit`` network, ``[B, 1]`` -> ``[B]``."""
        if logits.ndim != 2 or logits.shape[1] != 1:
            raise ConfigError(
                f"regime.binary_logit=true but the network outputs {tuple(logits.shape)}; "
                "build it with one output (model.num_outputs=1)"
            )
        return logits[:, 0]

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Weighted BCE (multi-label, single logit) or cross-entropy (single-label)."""
        if self.binary_logit:
            return F.binary_cross_entropy_with_logits(
                self._logit(logits), target.float(), pos_weight=self.pos_weight
            )
        if self.multilabel:
            per_elem = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none")
            if self.loss_weights is not None:
                per_elem = per_elem * self.loss_weights
            return per_elem.mean()
        return F.cross_entropy(logits, target.long(), weight=self.loss_weights)

    def scores(self, logits: Tensor) -> Tensor:
        """What the metrics see: sigmoid per label, P(class 1) for binary, softmax otherwise."""
        if self.binary_logit:
            return self._logit(logits).sigmoid()
        if self.multilabel:
            return logits.sigmoid()
        probs = logits.softmax(dim=-1)
        return probs[:, 1] if self.num_classes == 2 else probs

    def _step(
        self,
        batch: dict[str, Tensor],
        metrics: MetricCollection,
        stage: str,
        forward: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        logits = (forward or self)(batch["image"])
        target = batch["label"]
        loss = self.loss(logits, target)
        scores = self.scores(logits.detach())
        metric_target = target.long() if not self.multilabel else target.int()
        metrics.update(scores, metric_target)
        self.log(
            f"{stage}/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=target.shape[0],
            sync_dist=stage != "train",
        )
        return loss, scores, metric_target

    # --------------------------------------------------------------- lightning
    def on_train_start(self) -> None:
        if self.trainer.ckpt_path is None:  # resuming (ckpt_path=last) keeps the restored best
            self.val_best.reset()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, _, _ = self._step(batch, self.train_metrics, "train")
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_dict(self.train_metrics.compute(), sync_dist=True)
        self.train_metrics.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        forward = self.tta_net() if self.hparams.get("val_tta") else None
        self._step(batch, self.val_metrics, "val", forward)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        self.log_dict(values, prog_bar=True, sync_dist=True)
        monitored = values.get(self.hparams.monitor)
        if monitored is not None and not self.trainer.sanity_checking:
            self.val_best(monitored)
            self.log(
                f"{self.hparams.monitor}_best",
                self.val_best.compute(),
                prog_bar=True,
                sync_dist=True,
            )

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Any]:
        """Returns the batch's scores and targets so callbacks (calibration, subject-level
        metrics, prediction tables) can collect them in ``on_test_batch_end``."""
        forward = self.tta_net() if self.hparams.get("tta") else None
        _, scores, target = self._step(batch, self.test_metrics, "test", forward)
        if self.test_confusion is not None:
            preds = (scores >= 0.5).long() if self.num_classes == 2 else scores.argmax(-1)
            self.test_confusion.update(preds, target)
        if self.test_per_class is not None:
            self.test_per_class.update(scores, target)
        return {
            "scores": scores,
            "target": target,
            "path": batch.get("path"),
            "subject": batch.get("subject"),
        }

    def tta_net(self) -> TTAWrapper:
        """The network under test-time augmentation; rotated-in pixels get the normalised value
        of black (the datamodule's ``-mean / std``) when the datamodule has a normaliser."""
        mode = self.hparams.tta
        cached = self.__dict__.get("_tta_cache")
        if cached is None or cached.mode != mode:
            fill: Tensor | float = 0.0
            dm = getattr(self.trainer, "datamodule", None) if self._trainer else None
            transform = getattr(dm, "batch_transform", None)
            if transform is not None:
                norm = transform.normalize
                fill = (-norm.mean / norm.std).flatten()
            # kept out of the module tree: the wrapper must not add state_dict entries
            cached = TTAWrapper(self.net, mode, fill)
            self.__dict__["_tta_cache"] = cached
        return cached.to(self.device)

    def on_test_epoch_end(self) -> None:
        values = self.test_metrics.compute()
        self.test_metrics.reset()
        if self.test_per_class is not None:
            per_class = self.test_per_class.compute()
            self.test_per_class.reset()
            keys = M.per_class_keys("test/", self.class_names)
            values.update({k: v for k, v in zip(keys, per_class, strict=True)})
        self.log_dict(values, sync_dist=True)
        self.test_results = {k: float(v) for k, v in values.items()}
        if self.test_confusion is not None:
            cm = self.test_confusion.compute().cpu()
            self.test_confusion.reset()
            self.test_results["confusion_matrix"] = cm.tolist()
            self.test_results["class_names"] = self.class_names

    def configure_optimizers(self) -> dict[str, Any]:
        params: Any = self.parameters()
        if self.hparams.get("lr_groups"):
            from leuk_lightning.models.param_groups import build_param_groups

            base_lr = getattr(self.hparams.optimizer, "keywords", {}).get("lr")
            if base_lr is None:
                raise ConfigError("regime.lr_groups needs regime.optimizer.lr (the base rate)")
            params = build_param_groups(self.net, self.hparams.lr_groups, float(base_lr))
        return optimizers_config(
            self.hparams.optimizer, self.hparams.scheduler, params, self.hparams.monitor
        )
