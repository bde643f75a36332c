"""Subject-level evaluation of cell classifiers (C-NMC: subject id parsed from the file name).

Two figures, both from the per-cell probabilities of class 1 (ALL):

- ``subject_acc``: the fraction of subjects diagnosed correctly, where a subject's diagnosis is
  its **mean probability** over its cells thresholded at 0.5 (mean probability rather than a
  majority vote: no ties, and confident cells weigh more). A subject's true label is the label
  its cells carry (C-NMC labels all cells of a donor alike; a subject with mixed labels is
  an error, as it means the subject ids are wrong).
- ``subject_cell_acc_mean``: the mean over subjects of each subject's cell accuracy (Fig. 3 of
  Prellberg & Kramer shows these per-subject accuracies; the per-subject table is written too).

``SubjectMetrics`` is a callback that collects ``ClassifierModule.test_step`` outputs
(``scores``, ``target``, ``subject``), adds ``test/subject_acc`` and
``test/subject_cell_acc_mean`` to ``module.test_results`` (so they reach ``results.json``) and
writes ``subject_accuracy.csv`` to the run directory. Single-process evaluation only.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from torch import Tensor

from leuk_lightning.errors import DataError
from leuk_lightning.utils.io import atomic_write_text

log = logging.getLogger(__name__)


def per_subject(
    scores: Tensor, targets: Tensor, subjects: Sequence[str], threshold: float = 0.5
) -> list[dict[str, Any]]:
    """One row per subject (sorted by id): cells, label, mean probability, cell accuracy, call."""
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    targets = torch.as_tensor(targets).flatten().long()
    if not (len(scores) == len(targets) == len(subjects)):
        raise ValueError(
            f"per_subject: {len(scores)} scores, {len(targets)} targets, {len(subjects)} subjects"
        )
    rows = []
    for subject in sorted(set(subjects)):
        idx = torch.tensor([i for i, s in enumerate(subjects) if s == subject])
        labels = targets[idx].unique()
        if len(labels) != 1:
            raise DataError(
                f"subject {subject!r} has cells of both classes; subject-level metrics need one "
                "label per subject (are the subject ids parsed from the file names right?)"
            )
        label = int(labels[0])
        probs = scores[idx]
        cell_acc = float(((probs >= threshold).long() == label).double().mean())
        mean_prob = float(probs.mean())
        predicted = int(mean_prob >= threshold)
        rows.append(
            {
                "subject": subject,
                "cells": len(idx),
                "label": label,
                "mean_prob": mean_prob,
                "predicted": predicted,
                "correct": int(predicted == label),
                "cell_acc": cell_acc,
            }
        )
    return rows


def subject_metrics(
    scores: Tensor, targets: Tensor, subjects: Sequence[str], threshold: float = 0.5
) -> dict[str, float]:
    """``subject_acc`` (mean-probability diagnosis) and ``subject_cell_acc_mean``; see module."""
    rows = per_subject(scores, targets, subjects, threshold)
    if not rows:
        return {}
    return {
        "subject_acc": sum(r["correct"] for r in rows) / len(rows),
        "subject_cell_acc_mean": sum(r["cell_acc"] for r in rows) / len(rows),
        "num_subjects": float(len(rows)),
    }


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """The per-subject table as CSV text."""
    buf = io.StringIO()
    fields = ["subject", "cells", "label", "mean_prob", "predicted", "correct", "cell_acc"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


class SubjectMetrics(Callback):
    """Subject-level accuracy at the end of testing (binary tasks whose batches carry ``subject``).

    Args:
        output_dir: where ``subject_accuracy.csv`` goes (the run directory); ``None``: not written.
        threshold: decision threshold on the probability of class 1.
    """

    def __init__(self, output_dir: str | None = None, threshold: float = 0.5) -> None:
        self.output_dir = output_dir
        self.threshold = threshold
        self._reset()

    def _reset(self) -> None:
        self.scores: list[Tensor] = []
        self.targets: list[Tensor] = []
        self.subjects: list[str] = []

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._reset()

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(outputs, dict) or not outputs.get("subject"):
            return
        scores = outputs["scores"]
        if scores.ndim != 1:  # only binary tasks have one probability per cell
            return
        self.scores.append(scores.detach().float().cpu())
        self.targets.append(outputs["target"].detach().cpu())
        self.subjects += [str(s) for s in outputs["subject"]]

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """After the module's ``on_test_epoch_end`` (which resets ``test_results``)."""
        if not self.subjects or any(s == "" for s in self.subjects):
            if self.subjects:
                log.warning("Subject-level metrics skipped: some test items have no subject id")
            return
        scores, targets = torch.cat(self.scores), torch.cat(self.targets)
        rows = per_subject(scores, targets, self.subjects, self.threshold)
        values = subject_metrics(scores, targets, self.subjects, self.threshold)
        results = getattr(pl_module, "test_results", None)
        if isinstance(results, dict):
            results.update({f"test/{k}": v for k, v in values.items()})
        if self.output_dir and trainer.is_global_zero:
            atomic_write_text(Path(self.output_dir) / "subject_accuracy.csv", rows_to_csv(rows))
        log.info(
            "Subject-level: %d subjects, accuracy %.4f (mean probability), mean cell accuracy %.4f",
            len(rows),
            values["subject_acc"],
            values["subject_cell_acc_mean"],
        )
