"""Expected calibration error (torchmetrics) and reliability diagrams of a classifier.

Binary tasks follow torchmetrics' ``BinaryCalibrationError``: the confidence is P(class 1) and
the "accuracy" of a bin is its fraction of class-1 targets (calibration of the ALL probability).
Multi-class tasks use ``MulticlassCalibrationError``: top-label confidence vs. accuracy.
ECE = sum over equal-width bins of |accuracy - confidence| x (share of samples in the bin).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchmetrics.classification import BinaryCalibrationError, MulticlassCalibrationError

from leuk_lightning.utils.io import atomic_write


def calibration_error(scores: Tensor, target: Tensor, n_bins: int = 15) -> float:
    """ECE (L1) of binary P(class 1) scores ``[N]`` or multi-class probabilities ``[N, C]``."""
    target = target.long()
    if scores.ndim == 1:
        metric = BinaryCalibrationError(n_bins=n_bins, norm="l1")
    else:
        metric = MulticlassCalibrationError(num_classes=scores.shape[1], n_bins=n_bins, norm="l1")
    return float(metric(scores.float(), target))


def reliability_bins(
    scores: Tensor, target: Tensor, n_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin: mean confidence, accuracy and count (the diagram's data)."""
    scores, target = scores.float().cpu(), target.long().cpu()
    if scores.ndim == 1:
        conf, hit = scores, target.float()
    else:
        conf, pred = scores.max(dim=1)
        hit = (pred == target).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    idx = (torch.bucketize(conf, edges, right=True) - 1).clamp(0, n_bins - 1)
    count = torch.bincount(idx, minlength=n_bins).float()
    conf_sum = torch.zeros(n_bins).scatter_add_(0, idx, conf)
    hit_sum = torch.zeros(n_bins).scatter_add_(0, idx, hit)
    safe = count.clamp(min=1)
    return (conf_sum / safe).numpy(), (hit_sum / safe).numpy(), count.numpy()


def save_reliability_diagram(
    path: str | Path, scores: Tensor, target: Tensor, n_bins: int = 15, ece: float | None = None
) -> Path:
    """Bar chart of accuracy per confidence bin against the diagonal, with the ECE in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf, acc, count = reliability_bins(scores, target, n_bins)
    centers = (np.arange(n_bins) + 0.5) / n_bins
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    filled = count > 0
    ax.bar(centers[filled], acc[filled], width=1 / n_bins, edgecolor="k", alpha=0.7,
           label="observed")  # fmt: skip
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.scatter(conf[filled], acc[filled], color="red", s=12, zorder=3, label="bin mean confidence")
    binary = scores.ndim == 1
    ax.set_xlabel("P(class 1)" if binary else "confidence (top class)")
    ax.set_ylabel("fraction of class 1" if binary else "accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    title = "Reliability diagram" + ("" if ece is None else f" (ECE = {100 * ece:.2f}%)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    out = atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return out
