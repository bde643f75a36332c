"""Detection regime (the YOLOv3 cell detector paper): train a detector on boxes and score it
with the paper's AP beside torchmetrics' COCO ``MeanAveragePrecision``.

The network (``leuk_lightning.models.detection.Detector``: YOLOv3 or a torchvision detector)
returns its loss dict in training mode and its detections in eval mode; this module sums the
losses, logs each term, and feeds the detections of the validation/test images to

- the paper's metrics (:mod:`leuk_lightning.evaluation.detection_ap`): ``ap50``, all-point
  interpolated AP at IoU 0.5 averaged over the classes (Eqns 1-3; ``test/ap50_<class>`` per
  class), and ``det_acc``, the share of cells found (Eqn 4, at ``accuracy_score_threshold``);
- COCO-style mAP (101-point): ``map_50``, ``map`` (mAP@[.5:.95]), ``map_75`` and ``mar_100``;
- ``loss``: the training loss on the validation images (``val_loss: true``; the network runs in
  training mode with batch norm and dropout frozen, so no statistics change), for the paper's
  train/validation loss curves.
Batches are dicts of lists (``image`` uint8 [3,H,W], ``boxes`` [N,4] xyxy, ``labels`` [N]).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning import LightningModule
from torch import Tensor, nn
from torchmetrics import MaxMetric, MinMetric
from torchmetrics.detection import MeanAveragePrecision

from leuk_lightning.evaluation.detection_ap import PaperDetectionAP
from leuk_lightning.regimes.optim import optimizers_config

log = logging.getLogger(__name__)

#: scalar entries of MeanAveragePrecision's result that are logged (prefixed by the stage)
MAP_KEYS = ("map", "map_50", "map_75", "mar_1", "mar_10", "mar_100")


def detection_map(class_metrics: bool = False) -> MeanAveragePrecision:
    """COCO mAP over xyxy pixel boxes (pycocotools backend, 101-point interpolation)."""
    return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=class_metrics)


def to_float_images(images: Sequence[Tensor]) -> list[Tensor]:
    """uint8 [0, 255] images -> float [0, 1] (what torchvision detectors expect)."""
    return [img.float().div(255.0) if img.dtype == torch.uint8 else img.float() for img in images]


class DetectorModule(LightningModule):
    """Train/evaluate one detector; ``test_results`` holds the test mAPs (and per-class mAP)."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        num_classes: int = 2,
        class_names: Sequence[str] | None = None,
        monitor: str = "val/map_50",
        monitor_mode: str = "max",
        val_loss: bool = True,
        accuracy_score_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"], logger=False)
        self.net = net
        self.num_classes = num_classes
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        self.val_map = detection_map()
        self.test_map = detection_map(class_metrics=True)
        self.val_ap = PaperDetectionAP(num_classes, score_threshold=accuracy_score_threshold)
        self.test_ap = PaperDetectionAP(num_classes, score_threshold=accuracy_score_threshold)
        self.val_best = MaxMetric() if monitor_mode == "max" else MinMetric()
        self.test_results: dict[str, Any] = {}
        #: per epoch: epoch, train/loss, val/loss, val/ap50 (-> loss_curves.png at the end)
        self.history: list[dict[str, float]] = []

    def forward(self, images: Sequence[Tensor]) -> list[dict[str, Tensor]]:
        """Detections (``boxes`` xyxy, ``scores``, ``labels``) of uint8 or [0,1] images."""
        return self.net(to_float_images(images))

    @staticmethod
    def targets(batch: dict[str, Any]) -> list[dict[str, Tensor]]:
        return [
            {"boxes": b.float().reshape(-1, 4), "labels": lab.long()}
            for b, lab in zip(batch["boxes"], batch["labels"])
        ]

    # ----------------------------------------------------------------- training
    def on_train_start(self) -> None:
        self.val_best.reset()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        losses = self.net(to_float_images(batch["image"]), self.targets(batch))
        loss = torch.stack(list(losses.values())).sum()
        n = len(batch["image"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        for key, value in losses.items():
            self.log(f"train/loss_{key}", value, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def on_train_epoch_end(self) -> None:
        metrics = self.trainer.callback_metrics
        row = {"epoch": float(self.current_epoch)}
        for key in ("train/loss", "val/loss", "val/ap50", "val/map_50"):
            if key in metrics:
                row[key] = float(metrics[key])
        self.history.append(row)

    def on_fit_end(self) -> None:
        """The paper's Fig. 6: train and validation loss per epoch -> ``loss_curves.png``."""
        if self.trainer.is_global_zero and self.history and self.trainer.default_root_dir:
            from leuk_lightning.evaluation.detection_ap import plot_loss_curves

            try:
                plot_loss_curves(self.history, Path(self.trainer.default_root_dir))
            except OSError as err:  # a plot must never fail the run
                log.warning("could not write the loss curves: %s", err)

    # --------------------------------------------------------------- evaluation
    def _evaluate(
        self,
        batch: dict[str, Any],
        metric: MeanAveragePrecision,
        ap: PaperDetectionAP | None = None,
    ) -> list[dict]:
        preds = self(batch["image"])
        detached = [{k: v.detach() for k, v in p.items()} for p in preds]
        targets = self.targets(batch)
        metric.update(detached, targets)
        if ap is not None:
            ap.update(detached, targets)
        return preds

    def eval_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """The training losses of a batch without training: the network in training mode
        (detectors compute losses only there) with batch norm and dropout in eval mode."""
        was_training = self.net.training
        self.net.train()
        for m in self.net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm | nn.Dropout):
                m.eval()
        try:
            with torch.no_grad():
                return self.net(to_float_images(batch["image"]), self.targets(batch))
        finally:
            self.net.train(was_training)

    def _log_map(
        self, metric: MeanAveragePrecision, stage: str, ap: PaperDetectionAP | None = None
    ) -> dict[str, Tensor]:
        values = metric.compute()
        metric.reset()
        for k in MAP_KEYS:
            if k in values:
                self.log(f"{stage}/{k}", values[k].float(), prog_bar=k == "map_50", sync_dist=True)
        if ap is not None:
            paper = ap.compute()
            ap.reset()
            values["ap50"] = paper["ap50"]
            values["ap50_per_class"] = paper["ap50_per_class"]
            values["det_acc"] = paper["accuracy"]
            self.log(f"{stage}/ap50", paper["ap50"].float(), prog_bar=True, sync_dist=True)
            self.log(f"{stage}/det_acc", paper["accuracy"].float(), sync_dist=True)
        return values

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.val_map, self.val_ap)
        if self.hparams.val_loss:
            losses = self.eval_losses(batch)
            n = len(batch["image"])
            loss = torch.stack(list(losses.values())).sum()
            self.log("val/loss", loss, on_step=False, on_epoch=True, batch_size=n)
            for key, value in losses.items():
                self.log(f"val/loss_{key}", value, on_step=False, on_epoch=True, batch_size=n)

    def on_validation_epoch_end(self) -> None:
        values = self._log_map(self.val_map, "val", self.val_ap)
        key = self.hparams.monitor.split("/", 1)[-1]
        if key in values and not self.trainer.sanity_checking:
            self.val_best(values[key].float())
            self.log(
                f"{self.hparams.monitor}_best",
                self.val_best.compute(),
                prog_bar=True,
                sync_dist=True,
            )

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Returns the batch's detections and targets for callbacks (``on_test_batch_end``)."""
        preds = self._evaluate(batch, self.test_map, self.test_ap)
        return {"preds": preds, "targets": self.targets(batch), "path": batch.get("path")}

    def on_test_epoch_end(self) -> None:
        values = self._log_map(self.test_map, "test", self.test_ap)
        keys = (*MAP_KEYS, "ap50", "det_acc")
        self.test_results = {f"test/{k}": float(values[k]) for k in keys if k in values}
        for name, ap in zip(self.class_names, values["ap50_per_class"].tolist()):
            self.test_results[f"test/ap50_{name}"] = float(ap)
        per_class = values.get("map_per_class")
        classes = values.get("classes")
        if per_class is not None and classes is not None and per_class.numel() >= 1:
            for cls, ap in zip(classes.reshape(-1).tolist(), per_class.reshape(-1).tolist()):
                name = self.class_names[int(cls)] if int(cls) < len(self.class_names) else cls
                self.test_results[f"test/map_{name}"] = float(ap)
        self.test_results["class_names"] = self.class_names

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Tensor]]:
        return self(batch["image"])

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        return optimizers_config(
            self.hparams.optimizer, self.hparams.scheduler, params, self.hparams.monitor
        )
