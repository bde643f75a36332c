"""Render aggregated runs in the papers' table shapes: a markdown report (mean ± std per
configuration in percent, bootstrap CI, the paper's figure beside ours, average confusion matrix
as in HistoTNet's Table IV), a per-configuration CSV and a per-run CSV."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from leuk_lightning.evaluation.aggregate import (
    EXTRA_METRICS,
    METRICS,
    MULTICLASS_METRICS,
    PER_CLASS_PREFIX,
    STD_ESTIMATORS,
    ConfigRow,
    Summary,
    _is_number,
    paper_figure,
    per_class_keys,
)
from leuk_lightning.evaluation.records import RunRecord

log = logging.getLogger(__name__)
_EMPTY = Summary(0, math.nan, math.nan, math.nan, math.nan)


def _fmt(mean: float, std: float = math.nan, digits: int = 2) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def _p(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.4g}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def confusion_markdown(cm: np.ndarray, class_names: Sequence[str] | None) -> str:
    """Average confusion matrix in percent; binary matrices labelled TN/FP/FN/TP (Table IV)."""
    n = cm.shape[0]
    names = list(class_names or [str(i) for i in range(n)])
    tags = [["TN", "FP"], ["FN", "TP"]] if n == 2 else None
    header = ["True \\ Predicted", *[f"{i} ({names[i]})" for i in range(n)]]
    rows = []
    for i in range(n):
        cells = [
            f"{tags[i][j]} = {cm[i, j]:.2f}%" if tags else f"{cm[i, j]:.2f}%" for j in range(n)
        ]
        rows.append([f"{i} ({names[i]})", *cells])
    return _md_table(header, rows)


def table_metrics(rows: Sequence[ConfigRow]) -> list[tuple[str, str, tuple[str, ...]]]:
    """Columns of the main table: the papers' metrics, minus sensitivity/specificity when no
    configuration has them (multi-class tasks), plus macro figures when one has them."""
    has = {k for r in rows for k, s in r.summaries.items() if s.n > 0}
    binary_only = {"test/sensitivity", "test/specificity"}
    multiclass = [m for m in MULTICLASS_METRICS if m[0] in has]
    if not multiclass:
        return list(METRICS)
    return [m for m in METRICS if m[0] not in binary_only or m[0] in has] + multiclass


def _per_class_markdown(r: ConfigRow) -> str | None:
    keys = [k for k in r.summaries if k.startswith(PER_CLASS_PREFIX) and r.summaries[k].n]
    if not keys:
        return None
    body = [[k[len(PER_CLASS_PREFIX) :], _fmt(r.summaries[k].mean, r.summaries[k].std)]
            for k in keys]  # fmt: skip
    return _md_table(["Class", "Sensitivity (%)"], body)


def markdown_report(
    rows: Sequence[ConfigRow],
    comparisons: Sequence[dict[str, Any]] = (),
    title: str = "Results",
    n_boot: int = 10000,
    ddof: int = 1,
) -> str:
    """The report as markdown: main table, confusion matrices, problems, comparisons."""
    shown = table_metrics(rows)
    paper_cols = [(k, t, al) for k, t, al in shown if any(paper_figure(r.paper, al) for r in rows)]
    header = ["Configuration", "Runs"]
    for k, t, al in shown:
        header.append(f"{t} (%)")
        if (k, t, al) in paper_cols:
            header.append(f"Paper {t.lower()} (%)")
    header.append("Accuracy 95% CI")
    body = []
    for r in rows:
        n_expected = len(r.runs) + len(r.problems)
        cells = [r.label, f"{len(r.runs)}/{n_expected}"]
        for k, t, al in shown:
            s = r.summaries[k]
            cells.append(_fmt(s.mean, s.std))
            if (k, t, al) in paper_cols:
                fig = paper_figure(r.paper, al)
                cells.append(_fmt(*fig) if fig else "–")
        acc = r.summaries["test/acc"]
        cells.append("–" if math.isnan(acc.ci_low) else f"[{acc.ci_low:.2f}, {acc.ci_high:.2f}]")
        body.append(cells)
    parts = [f"# {title}", "", _md_table(header, body), ""]
    parts.append(
        f"Mean ± {STD_ESTIMATORS[ddof]} over runs; 95% CI: percentile bootstrap of the mean "
        f"accuracy ({n_boot:,} resamples of runs, seeded)."
    )
    sources = sorted(
        {str(r.paper.get("source")) for r in rows if r.paper and r.paper.get("source")}
    )
    if sources:
        parts.append("Paper figures: " + "; ".join(sources) + ".")
    for r in rows:
        if r.confusion_pct is not None:
            parts += ["", f"## Average confusion matrix (%): {r.label}", ""]
            parts.append(confusion_markdown(r.confusion_pct, r.class_names))
            per_class = _per_class_markdown(r)
            if per_class:
                parts += ["", f"Per-class sensitivity (%): {r.label}", "", per_class]
            paper_cm = (r.paper or {}).get("confusion_matrix")
            if paper_cm is not None and np.shape(paper_cm) == r.confusion_pct.shape:
                parts += ["", f"Paper ({r.paper.get('source', 'published')}):", ""]
                parts.append(confusion_markdown(np.asarray(paper_cm, float), r.class_names))
    problems = [p for r in rows for p in r.problems]
    if problems:
        parts += ["", "## Missing or failed runs (not in the statistics)", ""]
        parts += [
            f"- `{p.name}` [{p.status}] {' '.join(p.overrides)}: {p.reason}" for p in problems
        ]
    if comparisons:
        parts += [
            "",
            "## Paired comparisons (Wilcoxon signed-rank, two-sided) and Mann-Whitney U "
            "(one-sided, A > B, over all runs; the ablation test of Prellberg & Kramer)",
            "",
        ]
        for c in comparisons:
            parts += [f"A = `{c['a']}`, B = `{c['b']}`; {c['n_pairs']} runs matched by "
                      "(repeat, fold, seed)" + (f"; unmatched: {', '.join(c['unmatched'])}"
                                                if c["unmatched"] else ""), ""]  # fmt: skip
            head = ["Metric", "Pairs", "A mean (%)", "B mean (%)", "Mean A−B (%)", "W", "p-value",
                    "U", "p (A > B)"]  # fmt: skip
            body = [
                [m["metric"], m["n"], _fmt(m["mean_a"]), _fmt(m["mean_b"]), _fmt(m["mean_diff"]),
                 _fmt(m["statistic"], digits=1), _p(m["p_value"]),
                 _fmt(m.get("mannwhitney_u", math.nan), digits=1),
                 _p(m.get("mannwhitney_p_greater", math.nan))]
                for m in c["metrics"]
            ]  # fmt: skip
            parts += [_md_table(head, body), ""]
    return "\n".join(parts).rstrip() + "\n"


def csv_report(rows: Sequence[ConfigRow]) -> str:
    """One CSV row per configuration: every metric's mean/std/CI in %, paper figures, CM %."""
    metric_keys = [*METRICS, *MULTICLASS_METRICS] + [(k, t, ()) for k, t in EXTRA_METRICS]
    metric_keys += [(k, k, ()) for k in per_class_keys([run for r in rows for run in r.runs])]
    max_n = max((r.confusion_pct.shape[0] for r in rows if r.confusion_pct is not None), default=0)
    header = ["configuration", "task_name", "overrides", "n_runs", "n_missing_or_failed"]
    for k, _, _ in metric_keys:
        name = k.split("/", 1)[1]
        header += [f"{name}_mean", f"{name}_std", f"{name}_ci_low", f"{name}_ci_high"]
        header += [f"{name}_paper_mean", f"{name}_paper_std"]
    header += [f"cm_pct_{i}_{j}" for i in range(max_n) for j in range(max_n)]
    header += ["missing_or_failed_runs", "paper_source"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        line: list[Any] = [
            r.label,
            r.task_name,
            " ".join(r.overrides),
            len(r.runs),
            len(r.problems),
        ]
        for k, _, al in metric_keys:
            s = r.summaries.get(k) or _EMPTY
            fig = paper_figure(r.paper, al) if al else None
            line += [_num(s.mean), _num(s.std), _num(s.ci_low), _num(s.ci_high)]
            line += [_num(fig[0]), _num(fig[1])] if fig else ["", ""]
        for i in range(max_n):
            for j in range(max_n):
                cm = r.confusion_pct
                line.append(
                    _num(cm[i, j]) if cm is not None and i < len(cm) and j < len(cm) else ""
                )
        line.append(" ".join(p.name for p in r.problems))
        line.append((r.paper or {}).get("source", "") if r.paper else "")
        writer.writerow(line)
    return buf.getvalue()


def runs_csv(records: Sequence[RunRecord]) -> str:
    """One CSV row per run (the raw figures behind the table, for notebooks)."""
    keys = [k for k, _, _ in (*METRICS, *MULTICLASS_METRICS)] + [k for k, _ in EXTRA_METRICS]
    keys += per_class_keys(records)
    header = ["run", "configuration", "status", "repeat", "fold", "seed", *keys, "confusion_matrix"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for r in records:
        cm = r.metrics.get("confusion_matrix")
        writer.writerow(
            [r.name, r.label, r.status, _opt(r.repeat), _opt(r.fold), _opt(r.seed)]
            + [_num(r.metrics[k]) if _is_number(r.metrics.get(k)) else "" for k in keys]
            + [json.dumps(cm) if cm is not None else ""]
        )
    return buf.getvalue()


def _num(v: float) -> str:
    return "" if v is None or math.isnan(v) else f"{v:.10g}"


def _opt(v: Any) -> str:
    return "" if v is None else str(v)
