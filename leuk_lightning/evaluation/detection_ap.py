"""The cell-detector paper's evaluation: all-point interpolated AP at IoU 0.5 and Eqn-4 accuracy.

The paper (Magpantay, Sec. II-C) scores its YOLOv3 with

- Eqn 3: ``P_interp(r) = max_{r' >= r} p(r')``, the precision envelope;
- Eqn 2: ``AP = sum_i (r_{i+1} - r_i) P_interp(r_{i+1})`` over *every* recall point (the
  PASCAL VOC 2010+ "all-point" area, not COCO's 101 sampled points), at IoU 0.5;
- Eqn 1: ``mAP = mean_i AP_i`` over the classes;
- Eqn 4: ``accuracy = detected objects / all objects x 100`` (here: ground-truth boxes found by a
  detection of their class at IoU >= 0.5 scoring at least ``score_threshold``).

Detections are matched per image and class greedily by score, each ground-truth box at most once
(a second hit on it is a false positive), as the VOC development kit does. ``PaperDetectionAP``
is a torchmetrics ``Metric`` (states are concatenated across processes).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchvision.ops import box_iou


def all_point_ap(recall: Sequence[float], precision: Sequence[float]) -> float:
    """Area under the interpolated precision-recall curve (Eqns 2-3), recall sorted ascending."""
    r = np.concatenate([[0.0], np.asarray(recall, dtype=np.float64), [1.0]])
    p = np.concatenate([[0.0], np.asarray(precision, dtype=np.float64), [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # P_interp(r) = max over r' >= r
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def match_image(
    boxes: Tensor, scores: Tensor, labels: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
    iou_threshold: float = 0.5,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """True-positive flag of each detection and found flag of each ground-truth box of one
    image (same class, IoU >= threshold, greedy by score, each box matched once)."""
    tp = torch.zeros(len(scores), dtype=torch.bool)
    found = torch.zeros(len(gt_labels), dtype=torch.bool)
    if len(scores) == 0 or len(gt_labels) == 0:
        return tp, found
    iou = box_iou(boxes.float().cpu(), gt_boxes.float().cpu())
    same = labels.cpu()[:, None] == gt_labels.cpu()[None]
    iou = torch.where(same, iou, torch.full_like(iou, -1.0))
    for d in torch.argsort(scores.cpu(), descending=True, stable=True).tolist():
        best = int(iou[d].argmax())
        if iou[d, best] >= iou_threshold and not found[best]:
            tp[d] = True
            found[best] = True
    return tp, found


class PaperDetectionAP(Metric):
    """All-point AP@``iou_threshold`` per class and its mean (``ap50``), and Eqn-4 accuracy
    (``accuracy``: share of ground-truth boxes found at ``score_threshold``)."""

    full_state_update = False

    def __init__(
        self, num_classes: int, iou_threshold: float = 0.5, score_threshold: float = 0.5
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.iou_threshold = iou_threshold
        self.score_threshold = score_threshold
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("tp", default=[], dist_reduce_fx="cat")
        self.add_state("n_gt", default=torch.zeros(num_classes), dist_reduce_fx="sum")
        self.add_state("n_found", default=torch.zeros(num_classes), dist_reduce_fx="sum")

    def update(self, preds: Sequence[dict[str, Tensor]], targets: Sequence[dict[str, Tensor]]):
        for pred, tgt in zip(preds, targets, strict=True):
            boxes, scores, labels = pred["boxes"], pred["scores"], pred["labels"].long()
            gt_boxes, gt_labels = tgt["boxes"].reshape(-1, 4), tgt["labels"].long()
            tp, _ = match_image(boxes, scores, labels, gt_boxes, gt_labels, self.iou_threshold)
            keep = scores >= self.score_threshold
            _, found = match_image(
                boxes[keep], scores[keep], labels[keep], gt_boxes, gt_labels, self.iou_threshold
            )
            self.scores.append(scores.detach().float().cpu().to(self.n_gt.device))
            self.labels.append(labels.cpu().to(self.n_gt.device))
            self.tp.append(tp.float().to(self.n_gt.device))
            counts = torch.bincount(gt_labels.cpu(), minlength=self.num_classes)
            found_counts = torch.bincount(gt_labels.cpu()[found], minlength=self.num_classes)
            self.n_gt += counts[: self.num_classes].to(self.n_gt)
            self.n_found += found_counts[: self.num_classes].to(self.n_found)

    def compute(self) -> dict[str, Tensor]:
        def cat(x: list[Tensor] | Tensor) -> Tensor:
            if isinstance(x, Tensor):
                return x
            return torch.cat(x) if x else torch.zeros(0)

        scores, labels, tp = cat(self.scores), cat(self.labels), cat(self.tp)
        per_class = []
        for c in range(self.num_classes):
            n = float(self.n_gt[c])
            sel = labels == c
            if n == 0:
                per_class.append(float("nan"))
                continue
            order = torch.argsort(scores[sel], descending=True, stable=True)
            hits = tp[sel][order].cpu().numpy()
            if hits.size == 0:
                per_class.append(0.0)
                continue
            ctp, cfp = np.cumsum(hits), np.cumsum(1 - hits)
            per_class.append(all_point_ap(ctp / n, ctp / np.maximum(ctp + cfp, 1e-12)))
        ap = torch.tensor(per_class, dtype=torch.float32)
        valid = ~torch.isnan(ap)
        total = float(self.n_gt.sum())
        return {
            "ap50": ap[valid].mean() if valid.any() else torch.tensor(float("nan")),
            "ap50_per_class": ap,
            "accuracy": torch.tensor(float(self.n_found.sum()) / total if total else float("nan")),
        }


def plot_loss_curves(history: Sequence[dict[str, float]], out_dir: Path) -> Path:
    """``loss_curves.csv`` and ``loss_curves.png`` (train and validation loss per epoch, the
    paper's Fig. 6, with validation AP@0.5 on a second axis) in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    keys = ["epoch", "train/loss", "val/loss", "val/ap50", "val/map_50"]
    with open(out_dir / "loss_curves.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(keys)
        writer.writerows([[row.get(k, "") for k in keys] for row in history])
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [row["epoch"] for row in history]
    for key, colour in (("train/loss", "tab:pink"), ("val/loss", "tab:blue")):
        values = [row.get(key, float("nan")) for row in history]
        ax.plot(epochs, values, marker="o", color=colour, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if any("val/ap50" in row for row in history):
        ax2 = ax.twinx()
        ax2.plot(
            epochs, [row.get("val/ap50", float("nan")) for row in history], "k--", label="val/ap50"
        )
        ax2.set_ylabel("AP@0.5 (all-point)")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="center right")
    ax.legend(loc="upper right")
    fig.tight_layout()
    path = out_dir / "loss_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
