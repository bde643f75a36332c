"""torchmetrics collections for every task the framework trains.

Binary single-label tasks (ALL vs normal) report the clinical figures of the papers: accuracy,
sensitivity (recall of class 1, lymphoblast/ALL), specificity (recall of class 0), precision, F1 of
class 1, weighted F1 and AUROC, all computed from the probability of class 1 (so which class is
"positive" matters: index 1). Tasks with more than two classes have no single positive class, so
no sensitivity/specificity: they report accuracy, macro and support-weighted recall (macro recall
= balanced accuracy), precision and F1, one-vs-rest macro AUROC and, at test time, the
sensitivity (recall) of every class (``sensitivity_<class>``). Multi-label tasks (ADP) report
element-wise accuracy, macro F1 and mAP over the classes that have positives in the training split.
"""

from __future__ import annotations

import re
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
    """Metrics of a single-label task with more than 2 classes, fed with ``(probs, target)``.

    Binary-only figures (sensitivity, specificity, F1 of class 1) are not defined here; macro
    averages weigh every class equally (a rare class counts as much as a common one), weighted
    ones by the class's share of the samples (weighted recall equals accuracy)."""
    return MetricCollection(
        {
            "acc": C.MulticlassAccuracy(num_classes, average="micro"),
            "recall_macro": C.MulticlassRecall(num_classes, average="macro"),
            "recall_weighted": C.MulticlassRecall(num_classes, average="weighted"),
            "precision_macro": C.MulticlassPrecision(num_classes, average="macro"),
            "precision_weighted": C.MulticlassPrecision(num_classes, average="weighted"),
            "f1_macro": C.MulticlassF1Score(num_classes, average="macro"),
            "f1_weighted": C.MulticlassF1Score(num_classes, average="weighted"),
            "auroc": C.MulticlassAUROC(num_classes),
        }
    )


def per_class_sensitivity(num_classes: int) -> Metric:
    """Recall of each class of a multi-class task (one-vs-rest sensitivity), fed with
    ``(probs, target)``; NaN-free: a class absent from the targets gets 0."""
    return C.MulticlassRecall(num_classes, average="none")


def metric_name(class_name: str) -> str:
    """A class name as a metric-key suffix (letters, digits, ``_``, ``-``, ``.``)."""
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", str(class_name)).strip("_") or "class"


def per_class_keys(prefix: str, class_names: Sequence[str]) -> list[str]:
    """``<prefix>sensitivity_<class>`` per class; duplicates after cleaning get ``_<index>``."""
    names = [metric_name(n) for n in class_names]
    return [
        f"{prefix}sensitivity_{n}" + (f"_{i}" if names.count(n) > 1 else "")
        for i, n in enumerate(names)
    ]


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
    """A plain-text confusion matrix with counts and percentages of all samples.

    More than two classes: columns are numbered (a legend row-label ``i name`` gives the names),
    each cell holds the count, and a last column the class's sensitivity (row recall), so 15
    classes still fit a terminal."""
    cm = cm.long().cpu()
    if cm.shape[0] > 2:
        return _format_confusion_nxn(cm, class_names)
    total = max(int(cm.sum()), 1)
    width = max(len(n) for n in class_names) + 2
    header = "true \\ pred".ljust(width + 6) + "".join(n.rjust(18) for n in class_names)
    lines = [header]
    for i, name in enumerate(class_names):
        cells = "".join(f"{int(v):>8d} ({100 * int(v) / total:5.1f}%)" for v in cm[i])
        lines.append(name.ljust(width + 6) + cells)
    return "\n".join(lines)


def _format_confusion_nxn(cm: Tensor, class_names: Sequence[str]) -> str:
    n = cm.shape[0]
    labels = [f"{i} {name}" for i, name in enumerate(class_names)]
    first = max(len("true \\ pred"), *(len(x) for x in labels)) + 2
    cell = max(len(str(int(cm.max()))), len(str(n - 1))) + 2
    lines = ["true \\ pred".ljust(first) + "".join(str(j).rjust(cell) for j in range(n))
             + "  sensitivity"]  # fmt: skip
    for i, label in enumerate(labels):
        support = int(cm[i].sum())
        recall = f"{100 * int(cm[i, i]) / support:10.1f}%" if support else "         –"
        counts = "".join(str(int(v)).rjust(cell) for v in cm[i])
        lines.append(label.ljust(first) + counts + "  " + recall)
    total = max(int(cm.sum()), 1)
    lines.append(
        f"{int(cm.trace())} of {int(cm.sum())} correct ({100 * int(cm.trace()) / total:.1f}%)"
    )
    return "\n".join(lines)
