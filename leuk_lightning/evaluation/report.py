"""``leuk-lightning report <run or multirun dir>... [--compare A B] [--out DIR]``

Collects every job's ``results.json`` (and its ``.hydra/overrides.yaml``/``config.yaml``), groups
the runs into configurations and writes, atomically, ``report.md`` (the papers' table shape:
mean ± std, 95 % bootstrap CI, average confusion matrix in %, the paper's figure beside ours),
``report.csv`` (one row per configuration) and ``runs.csv`` (one row per run). Jobs without
results are listed by name in the report and in a warning. ``--compare A B`` adds a paired
Wilcoxon signed-rank test over runs matched by (repeat, fold, seed); A and B are configuration
labels as printed in the table, task names, or run folders. ``--wandb`` also logs the table to
Weights & Biases (offline unless ``WANDB_MODE=online``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leuk_lightning.evaluation import aggregate, records, tables
from leuk_lightning.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger("leuk_lightning.evaluation.report")


def build_report(
    dirs: Sequence[str | Path],
    out_dir: str | Path,
    compare: Sequence[Sequence[str]] = (),
    n_boot: int = 10000,
    seed: int = 0,
    ddof: int = 1,
) -> dict[str, Any]:
    """Write report.md/report.csv/runs.csv (+ comparisons.json) into ``out_dir``."""
    runs = records.collect_runs(dirs)
    rows = aggregate.aggregate(runs, n_boot=n_boot, seed=seed, ddof=aggregate.check_ddof(ddof))
    problems = [r for r in runs if r.status != "ok"]
    for p in problems:
        log.warning("run %s: %s [%s] %s", p.name, p.status, " ".join(p.overrides), p.reason)
    comparisons = [aggregate.compare(runs, a, b) for a, b in compare]
    title = "Results: " + ", ".join(Path(d).name for d in dirs)
    markdown = tables.markdown_report(rows, comparisons, title=title, n_boot=n_boot, ddof=ddof)
    out = Path(out_dir)
    files = {
        "markdown": atomic_write_text(out / "report.md", markdown),
        "csv": atomic_write_text(out / "report.csv", tables.csv_report(rows)),
        "runs": atomic_write_text(out / "runs.csv", tables.runs_csv(runs)),
    }
    if comparisons:
        files["comparisons"] = atomic_write_json(out / "comparisons.json", comparisons)
    return {
        "markdown": markdown,
        "rows": rows,
        "records": runs,
        "problems": problems,
        "comparisons": comparisons,
        "files": files,
    }


def log_to_wandb(report: dict[str, Any], out_dir: Path, project: str) -> str:
    """Log the configuration table (and comparisons) as W&B tables; offline by default."""
    import csv

    import wandb

    mode = "online" if os.environ.get("WANDB_MODE", "offline").lower() == "online" else "offline"
    with open(report["files"]["csv"], newline="") as f:
        data = list(csv.reader(f))
    run = wandb.init(project=project, job_type="report", dir=str(out_dir), mode=mode)
    try:
        run.log({"report/table": wandb.Table(columns=data[0], data=data[1:])})
        for i, c in enumerate(report["comparisons"]):
            cols = list(c["metrics"][0].keys()) if c["metrics"] else []
            rows = [[m[k] for k in cols] for m in c["metrics"]]
            run.log({f"report/compare_{i}": wandb.Table(columns=cols, data=rows)})
        return str(run.dir)
    finally:
        run.finish()
