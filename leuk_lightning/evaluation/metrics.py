"""torchmetrics collections for every task the framework trains.

Binary single-label tasks (ALL vs normal) report the clinical figures of the papers: accuracy,
sensitivity (recall of class 1, lymphoblast/ALL), specificity (recall of class 0), precision, F1 of
class 1, weighted F1 and AUROC, all computed from the probability of class 1. Multi-class tasks
report accuracy, macro recall/precision, weighted F1 and AUROC. Multi-label tasks (ADP) report
element-wise accuracy, macro F1 and mAP over the classes that have positives in the training split.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics import classification as C


def binary_metrics() -> MetricCollection:
    """Metrics of a 2-class task, fed with ``(prob_of_class_1, target)``."""
    return MetricCollection(
        {
            "acc": C.BinaryAccuracy(),
            "sensitivity": C.BinaryRecall(),
            "specificity": C.BinarySpecificity(),
            "precision": C.BinaryPrecision(),
            "f1": C.BinaryF1Score(),
            "f1_weighted": WeightedBinaryF1(),
            "precision_weighted": WeightedBinary(C.MulticlassPrecision),
            "recall_weighted": WeightedBinary(C.MulticlassRecall),
            "auroc": C.BinaryAUROC(),
        }
    )


def multiclass_metrics(num_classes: int) -> MetricCollection:
    """Metrics of a single-label task with more than 2 classes, fed with ``(probs, target)``."""
    return MetricCollection(
        {
            "acc": C.MulticlassAccuracy(num_classes, average="micro"),
            "sensitivity": C.MulticlassRecall(num_classes, average="macro"),
            "precision": C.MulticlassPrecision(num_classes, average="macro"),
            "f1_weighted": C.MulticlassF1Score(num_classes, average="weighted"),
            "auroc": C.MulticlassAUROC(num_classes),
        }
    )


class MaskedMultilabel(Metric):
    """A per-class multi-label metric averaged over the classes in ``mask`` only.

    Classes without positive training samples cannot be learnt and give undefined F1/AP; keeping
    them would drag the macro average for reasons that have nothing to do with the model.
    """

    full_state_update = False

    def __init__(self, metric: Metric, mask: Tensor) -> None:
        super().__init__()
        self.metric = metric
        self.register_buffer("mask", mask.bool())

    def update(self, preds: Tensor, target: Tensor) -> None:
        self.metric.update(preds, target)

    def compute(self) -> Tensor:
        values = self.metric.compute()
        return values[self.mask].nanmean()

    def reset(self) -> None:
        super().reset()
        self.metric.reset()


def multilabel_metrics(num_labels: int, valid: Tensor | None = None) -> MetricCollection:
    """Metrics of a multi-label task, fed with ``(sigmoid probs, multi-hot target)``."""
    valid = torch.ones(num_labels, dtype=torch.bool) if valid is None else valid.bool()
    return MetricCollection(
        {
            "acc": C.MultilabelAccuracy(num_labels, average="micro"),
            "f1_macro": MaskedMultilabel(C.MultilabelF1Score(num_labels, average="none"), valid),
            "map": MaskedMultilabel(
                C.MultilabelAveragePrecision(num_labels, average="none"), valid
            ),
        }
    )


class WeightedBinaryF1(C.MulticlassF1Score):
    """Support-weighted F1 over both classes of a binary task, from the probability of class 1."""

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__(num_classes=2, average="weighted")
        self.threshold = threshold

    def update(self, preds: Tensor, target: Tensor) -> None:
        super().update((preds >= self.threshold).long(), target.long())


class WeightedBinary(Metric):
    """Support-weighted average over both classes of a binary task (precision or recall, as
    Prellberg & Kramer report them), from the probability of class 1 thresholded at 0.5."""

    full_state_update = False

    def __init__(self, metric_cls: type[Metric], threshold: float = 0.5) -> None:
        super().__init__()
        self.metric = metric_cls(num_classes=2, average="weighted")
        self.threshold = threshold

    def update(self, preds: Tensor, target: Tensor) -> None:
        self.metric.update((preds >= self.threshold).long(), target.long())

    def compute(self) -> Tensor:
        return self.metric.compute()

    def reset(self) -> None:
        super().reset()
        self.metric.reset()


def confusion_matrix_metric(num_classes: int, multilabel: bool) -> Metric | None:
    """Confusion matrix of single-label tasks (rows: true class, columns: predicted class)."""
    if multilabel:
        return None
    if num_classes == 2:
        return C.BinaryConfusionMatrix()
    return C.MulticlassConfusionMatrix(num_classes)


def per_class_f1(num_labels: int) -> Metric:
    """Per-class F1 of a multi-label task (reported at test time)."""
    return C.MultilabelF1Score(num_labels, average="none")


def format_confusion_matrix(cm: Tensor, class_names: Sequence[str]) -> str:
    """A plain-text confusion matrix with counts and percentages of all samples."""
    cm = cm.long().cpu()
    total = max(int(cm.sum()), 1)
    width = max(len(n) for n in class_names) + 2
    header = "true \\ pred".ljust(width + 6) + "".join(n.rjust(18) for n in class_names)
    lines = [header]
    for i, name in enumerate(class_names):
        cells = "".join(f"{int(v):>8d} ({100 * int(v) / total:5.1f}%)" for v in cm[i])
        lines.append(name.ljust(width + 6) + cells)
    return "\n".join(lines)
