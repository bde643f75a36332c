"""Statistics over runs: mean ± std (sample, ddof=1, by default; population, ddof=0, as the
HistoTNet code's ``np.std`` over its 10 hold-outs), seeded percentile bootstrap confidence
intervals, the average confusion matrix in percent, aggregation into one row per configuration
(task + overrides, except the protocol indices), the paper's figure for a metric, and the
comparison of two configurations: the paired Wilcoxon signed-rank test over matched runs and,
beside it, the one-sided Mann-Whitney U test over all runs (A > B, the ablation question)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leuk_lightning.errors import ConfigError, DataError
from leuk_lightning.evaluation.records import RunRecord

log = logging.getLogger(__name__)

# (results.json key, column title, names of the same figure in an experiment's `paper:` block)
METRICS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("test/acc", "Accuracy", ("accuracy", "acc")),
    ("test/sensitivity", "Sensitivity", ("sensitivity", "recall")),
    ("test/specificity", "Specificity", ("specificity",)),
    ("test/f1_weighted", "Weighted F1", ("f1_weighted", "weighted_f1", "f1")),
    ("test/auroc", "AUROC", ("auroc", "auc")),
)
# figures of tasks with more than two classes (no sensitivity/specificity there); table columns
# appear only when some run has them
MULTICLASS_METRICS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("test/recall_macro", "Macro recall", ("recall_macro", "balanced_accuracy")),
    ("test/f1_macro", "Macro F1", ("f1_macro",)),
)
#: prefix of the per-class sensitivities of multi-class runs (``test/sensitivity_<class>``)
PER_CLASS_PREFIX = "test/sensitivity_"
# further figures written to the CSV when the runs have them
EXTRA_METRICS: tuple[tuple[str, str], ...] = (("test/ece", "ECE"), ("test/precision", "Precision"))


@dataclass
class Summary:
    """Mean, sample std and bootstrap CI of one metric over the runs of a configuration."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


# ------------------------------------------------------------------------------------------
# statistics


def bootstrap_ci(
    values: Sequence[float], n_boot: int = 10000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean: resample runs with replacement ``n_boot`` times.

    ``rng = numpy.random.default_rng(seed)``; indices ``rng.integers(0, n, (n_boot, n))``; the
    CI is the (1-level)/2 and (1+level)/2 percentiles (numpy's linear rule) of the means.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


STD_ESTIMATORS = {1: "sample standard deviation (ddof=1)",
                  0: "population standard deviation (ddof=0, as the HistoTNet code)"}  # fmt: skip


def check_ddof(ddof: int) -> int:
    if ddof not in STD_ESTIMATORS:
        raise ConfigError(f"--std-ddof={ddof!r} is not known; use 1 (sample) or 0 (population)")
    return ddof


def summarize(
    values: Sequence[float], n_boot: int = 10000, seed: int = 0, ddof: int = 1
) -> Summary:
    """Mean, standard deviation (``ddof`` 1: sample, NaN for one run; 0: population) and 95 %
    bootstrap CI."""
    check_ddof(ddof)
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if x.size == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=ddof)) if x.size > ddof else math.nan
    lo, hi = bootstrap_ci(x, n_boot=n_boot, seed=seed)
    return Summary(int(x.size), float(x.mean()), std, lo, hi)


def mean_confusion_percent(matrices: Iterable[Sequence[Sequence[float]]]) -> np.ndarray | None:
    """Average of the runs' confusion matrices, each in percent of its own test set."""
    mats = [np.asarray(m, dtype=np.float64) for m in matrices if m is not None]
    mats = [m for m in mats if m.ndim == 2 and m.sum() > 0]
    if not mats:
        return None
    shapes = {m.shape for m in mats}
    if len(shapes) > 1:
        raise DataError(f"runs of one configuration have confusion matrices of shapes {shapes}")
    return np.mean([100.0 * m / m.sum() for m in mats], axis=0)


@dataclass
class ConfigRow:
    """The aggregate of one configuration."""

    key: str
    label: str
    task_name: str
    overrides: list[str]
    runs: list[RunRecord]
    problems: list[RunRecord]
    summaries: dict[str, Summary]
    confusion_pct: np.ndarray | None
    class_names: list[str] | None
    paper: dict[str, Any] | None


def aggregate(
    records: Sequence[RunRecord], n_boot: int = 10000, seed: int = 0, ddof: int = 1
) -> list[ConfigRow]:
    """Group the runs into configurations and summarise each (order of first appearance);
    ``ddof`` picks the std estimator (``STD_ESTIMATORS``)."""
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(r.config_key, []).append(r)
    rows = []
    for key, members in groups.items():
        ok = [r for r in members if r.status == "ok"]
        problems = [r for r in members if r.status != "ok"]
        summaries = {
            m: summarize(
                [100.0 * float(r.metrics[m]) for r in ok if _is_number(r.metrics.get(m))],
                n_boot=n_boot,
                seed=seed,
                ddof=ddof,
            )
            for m in summary_keys(ok)
        }
        cm = mean_confusion_percent(r.metrics.get("confusion_matrix") for r in ok)
        names = next(
            (r.metrics.get("class_names") for r in ok if r.metrics.get("class_names")), None
        )
        paper = next((r.paper for r in ok if r.paper), None) or next(
            (r.paper for r in members if r.paper), None
        )
        first = members[0]
        rows.append(
            ConfigRow(key, first.label, first.task_name, first.config_overrides, ok, problems,
                      summaries, cm, names, paper)
        )  # fmt: skip
    return rows


def per_class_keys(records: Sequence[RunRecord]) -> list[str]:
    """``test/sensitivity_<class>`` keys of the runs, in the order the runs list them."""
    keys: dict[str, None] = {}
    for r in records:
        keys.update((k, None) for k in r.metrics if k.startswith(PER_CLASS_PREFIX))
    return list(keys)


def summary_keys(records: Sequence[RunRecord]) -> list[str]:
    """Every metric summarised for a configuration: the fixed ones and per-class ones."""
    fixed = [k for k, _, _ in (*METRICS, *MULTICLASS_METRICS)] + [k for k, _ in EXTRA_METRICS]
    return fixed + per_class_keys(records)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(float(v))


def paper_figure(
    paper: dict[str, Any] | None, aliases: Sequence[str]
) -> tuple[float, float] | None:
    """The (mean, std) a paper gives for a metric (``{mean, std}`` or a bare number)."""
    if not paper:
        return None
    for a in aliases:
        v = paper.get(a)
        if isinstance(v, dict) and _is_number(v.get("mean")):
            return float(v["mean"]), float(v.get("std", math.nan) or math.nan)
        if _is_number(v):
            return float(v), math.nan
    return None


# ------------------------------------------------------------------------------------------
# paired comparison


def select_runs(records: Sequence[RunRecord], which: str) -> list[RunRecord]:
    """The runs of one configuration named by its label, full key, task name or a directory."""
    for attr in ("label", "config_key"):
        hit = [r for r in records if getattr(r, attr) == which]
        if hit:
            return hit
    path = Path(which)
    if path.is_dir():
        root = path.resolve()
        hit = [
            r
            for r in records
            if r.job_dir and root in (r.job_dir.resolve(), *r.job_dir.resolve().parents)
        ]
        keys = {r.config_key for r in hit}
        if len(keys) > 1:
            raise ConfigError(f"--compare {which}: the folder holds {len(keys)} configurations; "
                              "name one by its label in the table")  # fmt: skip
        if hit:
            return hit
    by_task = [r for r in records if r.task_name == which]
    keys = {r.config_key for r in by_task}
    if len(keys) == 1:
        return by_task
    labels = sorted({r.label for r in records})
    if len(keys) > 1:
        raise ConfigError(f"--compare {which}: several configurations of this task; use one of "
                          f"{labels}")  # fmt: skip
    raise ConfigError(f"--compare {which}: no such configuration; use one of {labels}")


def compare(records: Sequence[RunRecord], a: str, b: str) -> dict[str, Any]:
    """Per metric: the paired two-sided Wilcoxon signed-rank test of A vs B over matched runs,
    and the one-sided Mann-Whitney U test of "A > B" over all runs of each (unpaired; the
    question of an ablation: does removing a part lower the figure?)."""
    from scipy.stats import mannwhitneyu, wilcoxon

    runs_a = {r.pair_key: r for r in select_runs(records, a) if r.status == "ok"}
    runs_b = {r.pair_key: r for r in select_runs(records, b) if r.status == "ok"}
    keys = sorted(set(runs_a) & set(runs_b), key=lambda k: tuple(-1 if v is None else v for v in k))
    unmatched = sorted(
        [runs_a[k].name for k in set(runs_a) - set(runs_b)]
        + [runs_b[k].name for k in set(runs_b) - set(runs_a)]
    )
    if unmatched:
        log.warning("--compare: runs without a partner (left out): %s", ", ".join(unmatched))
    out = []
    for k, title, _ in METRICS:
        pairs = [
            (100 * float(runs_a[p].metrics[k]), 100 * float(runs_b[p].metrics[k]))
            for p in keys
            if _is_number(runs_a[p].metrics.get(k)) and _is_number(runs_b[p].metrics.get(k))
        ]
        xa = np.array([p[0] for p in pairs])
        xb = np.array([p[1] for p in pairs])
        stat = pval = math.nan
        if len(pairs) and np.any(xa != xb):
            res = wilcoxon(xa, xb, alternative="two-sided")
            stat, pval = float(res.statistic), float(res.pvalue)
        elif len(pairs):
            stat, pval = 0.0, 1.0  # identical results: no evidence of a difference
        all_a = [100 * float(r.metrics[k]) for r in runs_a.values() if _is_number(r.metrics.get(k))]
        all_b = [100 * float(r.metrics[k]) for r in runs_b.values() if _is_number(r.metrics.get(k))]
        u_stat = u_pval = math.nan
        if all_a and all_b:
            res = mannwhitneyu(all_a, all_b, alternative="greater")
            u_stat, u_pval = float(res.statistic), float(res.pvalue)
        out.append(
            {
                "metric": title,
                "n": len(pairs),
                "mean_a": float(xa.mean()) if len(pairs) else math.nan,
                "mean_b": float(xb.mean()) if len(pairs) else math.nan,
                "mean_diff": float((xa - xb).mean()) if len(pairs) else math.nan,
                "statistic": stat,
                "p_value": pval,
                "n_a": len(all_a),
                "n_b": len(all_b),
                "mannwhitney_u": u_stat,
                "mannwhitney_p_greater": u_pval,
            }
        )
    return {"a": a, "b": b, "n_pairs": len(keys), "unmatched": unmatched, "metrics": out}
