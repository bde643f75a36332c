"""Multi-seed model selection (Prellberg & Kramer, Sec. 4.2): keep the seed whose run has the
best validation weighted F1 and show the spread over all seeds (their Table 2).

    python -m leuk_lightning -m +experiment=prellberg_seresnext50 'seed=range(0,24)'
    leuk-lightning select logs/prellberg_seresnext50/multiruns/<timestamp> \
        [--metric val/f1_weighted_best] [--mode max]

Reads every ``<multirun dir>/<job>/results.json`` (one per seed), writes ``selection.csv`` (one
row per run, the selected one marked), ``selection.md`` (the spread: min, mean ± std, max of
each metric, and the selected run) and ``selected.json`` (the winner's run dir, seed and best
checkpoint) into the multirun dir, atomically, and prints the markdown.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from leuk_lightning.errors import ConfigError, DataError
from leuk_lightning.utils.io import atomic_write_json, atomic_write_text

#: metrics summarised in the spread table (those present in the runs), in Table 2's order
SUMMARY_METRICS = (
    "test/acc",
    "test/sensitivity",
    "test/specificity",
    "test/f1_weighted",
    "test/precision_weighted",
    "test/recall_weighted",
    "test/auroc",
    "test/subject_acc",
    "test/subject_cell_acc_mean",
)


def load_runs(multirun_dir: str | Path) -> list[dict[str, Any]]:
    """``results.json`` of every job under ``multirun_dir`` (sorted by job folder)."""
    root = Path(multirun_dir)
    if not root.is_dir():
        raise ConfigError(f"multirun dir {root} does not exist")
    runs = []
    for path in sorted(root.glob("*/results.json"), key=lambda p: _job_key(p.parent.name)):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc
        record["run_dir"] = str(path.parent)
        runs.append(record)
    if not runs:
        raise DataError(
            f"no */results.json under {root}: is it the folder of a finished multirun "
            "(logs/<task>/multiruns/<timestamp>)?"
        )
    return runs


def _job_key(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (sys.maxsize, name)


def select_best(
    runs: list[dict[str, Any]], metric: str, mode: str = "max"
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The best run by ``metric`` and the runs that have it (runs without it are an error)."""
    if mode not in ("max", "min"):
        raise ConfigError(f"--mode {mode!r}: use max or min")
    missing = [r["run_dir"] for r in runs if not _finite(r["metrics"].get(metric))]
    if missing:
        keys = sorted(k for k in runs[0]["metrics"] if "/" in k)
        raise DataError(
            f"metric {metric!r} missing (or not finite) in {len(missing)} run(s), first "
            f"{missing[0]}; available: {', '.join(keys)}"
        )
    pick = max if mode == "max" else min
    best = pick(runs, key=lambda r: float(r["metrics"][metric]))
    return best, runs


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def spread(runs: list[dict[str, Any]], metrics: list[str]) -> dict[str, dict[str, float]]:
    """min, mean, std (sample; 0 for one run), max of each metric over the runs."""
    out = {}
    for m in metrics:
        values = [float(r["metrics"][m]) for r in runs if _finite(r["metrics"].get(m))]
        if not values:
            continue
        out[m] = {
            "min": min(values),
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "max": max(values),
            "n": float(len(values)),
        }
    return out


def report(
    runs: list[dict[str, Any]], best: dict[str, Any], metric: str
) -> tuple[str, str, dict[str, Any]]:
    """(CSV text, markdown text, selected.json dict)."""
    metrics = [metric] + [m for m in SUMMARY_METRICS if m != metric]
    metrics = [m for m in metrics if any(_finite(r["metrics"].get(m)) for r in runs)]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["run_dir", "seed", "selected", *metrics, "best_checkpoint"])
    for r in runs:
        values = [r["metrics"].get(m, "") for m in metrics]
        writer.writerow(
            [
                r["run_dir"],
                r.get("seed", ""),
                int(r is best),
                *[f"{v:.6f}" if _finite(v) else "" for v in values],
                r["metrics"].get("best_checkpoint") or "",
            ]
        )
    stats = spread(runs, metrics)
    lines = [
        f"# Seed selection: {len(runs)} runs, best by `{metric}`",
        "",
        f"Selected: seed {best.get('seed')} ({metric} = {100 * best['metrics'][metric]:.2f} %), "
        f"run `{best['run_dir']}`, checkpoint `{best['metrics'].get('best_checkpoint')}`",
        "",
        "| metric (%) | min | mean ± std | max | selected |",
        "|---|---|---|---|---|",
    ]
    for m, s in stats.items():
        sel = best["metrics"].get(m)
        lines.append(
            f"| {m} | {100 * s['min']:.2f} | {100 * s['mean']:.2f} ± {100 * s['std']:.2f} | "
            f"{100 * s['max']:.2f} | {100 * sel:.2f} |"
            if _finite(sel)
            else f"| {m} | {100 * s['min']:.2f} | {100 * s['mean']:.2f} ± {100 * s['std']:.2f} | "
            f"{100 * s['max']:.2f} | |"
        )
    paper = best.get("paper")
    if paper:
        lines += ["", f"Paper: {paper.get('source', '')}"]
    selected = {
        "metric": metric,
        "value": best["metrics"][metric],
        "seed": best.get("seed"),
        "run_dir": best["run_dir"],
        "best_checkpoint": best["metrics"].get("best_checkpoint"),
        "spread": stats,
    }
    return buf.getvalue(), "\n".join(lines) + "\n", selected


def select(multirun_dir: str | Path, metric: str, mode: str = "max") -> dict[str, Any]:
    """Select, write ``selection.{csv,md}`` and ``selected.json``; returns selected.json's dict."""
    runs = load_runs(multirun_dir)
    best, runs = select_best(runs, metric, mode)
    csv_text, md_text, selected = report(runs, best, metric)
    root = Path(multirun_dir)
    atomic_write_text(root / "selection.csv", csv_text)
    atomic_write_text(root / "selection.md", md_text)
    atomic_write_json(root / "selected.json", selected)
    print(md_text)
    return selected
