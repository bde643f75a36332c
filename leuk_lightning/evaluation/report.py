"""``leuk-lightning report <run or multirun dir>... [--compare A B] [--out DIR]``

Collects every job's ``results.json`` (and its ``.hydra/overrides.yaml``/``config.yaml``), groups
the runs into configurations and writes, atomically, ``report.md`` (the papers' table shape:
mean ± std, 95 % bootstrap CI, average confusion matrix in %, the paper's figure beside ours),
``report.csv`` (one row per configuration) and ``runs.csv`` (one row per run). Jobs without
results are listed by name in the report and in a warning. ``--compare A B`` adds a paired
Wilcoxon signed-rank test over runs matched by (repeat, fold, seed); A and B are configuration
labels as printed in the table, task names, or run folders. ``--wandb`` also logs the table to
Weights & Biases, in the W&B group of the runs it summarises.
"""

from __future__ import annotations

import json
import logging
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


def wandb_group_of(runs: Sequence[Any]) -> dict[str, Any]:
    """The W&B group/project the jobs were logged to (their ``wandb_run.json``), if any."""
    for run in runs:
        job_dir = getattr(run, "job_dir", None)
        path = Path(job_dir) / "wandb_run.json" if job_dir else None
        if path is not None and path.is_file():
            info = json.loads(path.read_text())
            return {k: info[k] for k in ("group", "project") if info.get(k)}
    return {}


def log_to_wandb(report: dict[str, Any], out_dir: Path, project: str) -> str:
    """Log the configuration table (and comparisons) as W&B tables, in the W&B group of the runs
    it summarises (job type ``report``); WANDB_MODE/the user's settings decide, else offline."""
    import csv

    import wandb

    from leuk_lightning.training.tracking import wandb_mode

    with open(report["files"]["csv"], newline="") as f:
        data = list(csv.reader(f))
    where = {"project": project, **wandb_group_of(report["records"])}
    mode = wandb_mode()
    run = wandb.init(
        job_type="report",
        name=f"report {where.get('group') or out_dir.name}",
        dir=str(out_dir),
        **where,
        **({"mode": mode} if mode else {}),
    )
    try:
        run.log({"report/table": wandb.Table(columns=data[0], data=data[1:])})
        for i, c in enumerate(report["comparisons"]):
            cols = list(c["metrics"][0].keys()) if c["metrics"] else []
            rows = [[m[k] for k in cols] for m in c["metrics"]]
            run.log({f"report/compare_{i}": wandb.Table(columns=cols, data=rows)})
        return str(run.dir)
    finally:
        run.finish()
