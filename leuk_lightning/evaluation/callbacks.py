"""End-of-test callbacks: calibration (ECE + reliability diagram), Grad-CAM and t-SNE figures.

They read what ``ClassifierModule.test_step`` returns (``{"scores", "target", ...}``) or the
datamodule's test subset, write PNG/JSON files into the run directory and send images to W&B when
a ``WandbLogger`` is attached. Enable with ``callbacks=explain`` (default + all three) or e.g.
``'callbacks=[default,gradcam]'``; calibration is part of ``callbacks=default``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from torchmetrics import CatMetric

from leuk_lightning.utils.io import atomic_write_json

log = logging.getLogger(__name__)


def _output_dir(trainer: Trainer, output_dir: str | None) -> Path:
    return Path(output_dir or trainer.default_root_dir)


class CalibrationCallback(Callback):
    """ECE of the test predictions, logged as ``test/ece`` (so it lands in results.json), plus
    ``calibration.json`` and ``reliability_diagram.png``. Multi-label outputs are skipped."""

    def __init__(self, n_bins: int = 15, output_dir: str | None = None, plot: bool = True) -> None:
        self.n_bins = n_bins
        self.output_dir = output_dir
        self.plot = plot
        # concatenated over batches (and ranks under DDP); NaN scores are kept, not dropped
        self.scores = CatMetric(nan_strategy="disable")
        self.target = CatMetric(nan_strategy="disable")
        self.skipped = False

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.scores.reset()
        self.target.reset()
        self.scores.to(pl_module.device)
        self.target.to(pl_module.device)
        self.skipped = bool(getattr(pl_module, "multilabel", False))

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.skipped or not isinstance(outputs, dict) or "scores" not in outputs:
            self.skipped = True
            return
        scores, target = outputs["scores"].detach(), outputs["target"].detach()
        if target.ndim != 1:  # multi-label: no single-label calibration
            self.skipped = True
            return
        self.scores.update(scores.float())
        self.target.update(target.float())

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from leuk_lightning.evaluation.calibration import calibration_error

        if self.skipped or self.target.update_count == 0:
            return
        scores, target = self._gathered()
        ece = calibration_error(scores, target, self.n_bins)
        pl_module.log("test/ece", ece, sync_dist=False, rank_zero_only=True)
        if trainer.is_global_zero:
            self._write(trainer, scores, target, ece)

    def _gathered(self) -> tuple[torch.Tensor, torch.Tensor]:
        scores, target = self.scores.compute(), self.target.compute().long()
        return scores.cpu(), target.cpu()

    def _write(self, trainer: Trainer, scores: torch.Tensor, target: torch.Tensor, ece: float):
        from leuk_lightning.evaluation.calibration import save_reliability_diagram
        from leuk_lightning.evaluation.explain import log_images

        out = _output_dir(trainer, self.output_dir)
        atomic_write_json(
            out / "calibration.json", {"ece": ece, "n_bins": self.n_bins, "n": len(target)}
        )
        if self.plot:
            png = save_reliability_diagram(
                out / "reliability_diagram.png", scores, target, self.n_bins, ece
            )
            log_images(trainer.loggers, "test/reliability_diagram", [png])


class GradCamCallback(Callback):
    """Grad-CAM of ``n_images`` test images after testing (``gradcam.png``, ``gradcam/``)."""

    def __init__(self, n_images: int = 8, output_dir: str | None = None) -> None:
        self.n_images = n_images
        self.output_dir = output_dir

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from leuk_lightning.evaluation.explain import explain_gradcam, log_images

        dm = trainer.datamodule
        if not trainer.is_global_zero or dm is None or getattr(pl_module, "multilabel", False):
            return
        files = explain_gradcam(
            pl_module.net, dm, _output_dir(trainer, self.output_dir), self.n_images
        )
        log_images(trainer.loggers, "test/gradcam", [files["grid"]])


class TsneCallback(Callback):
    """t-SNE of the test set's pre-head features after testing (``tsne.png``)."""

    def __init__(self, output_dir: str | None = None, seed: int = 0) -> None:
        self.output_dir = output_dir
        self.seed = seed

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from leuk_lightning.evaluation.explain import explain_tsne, log_images

        dm = trainer.datamodule
        if not trainer.is_global_zero or dm is None or getattr(pl_module, "multilabel", False):
            return
        with torch.inference_mode(False):
            res = explain_tsne(
                pl_module.net, dm, _output_dir(trainer, self.output_dir), seed=self.seed
            )
        log_images(trainer.loggers, "test/tsne", [res["path"]])
