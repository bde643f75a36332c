"""``python -m leuk_lightning.report <run or multirun dir>... [--compare A B] [--out DIR]``

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

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leuk_lightning.errors import LeukError
from leuk_lightning.evaluation import tables as T
from leuk_lightning.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger("leuk_lightning.report")


def build_report(
    dirs: Sequence[str | Path],
    out_dir: str | Path,
    compare: Sequence[Sequence[str]] = (),
    n_boot: int = 10000,
    seed: int = 0,
) -> dict[str, Any]:
    """Write report.md/report.csv/runs.csv (+ comparisons.json) into ``out_dir``."""
    records = T.collect_runs(dirs)
    rows = T.aggregate(records, n_boot=n_boot, seed=seed)
    problems = [r for r in records if r.status != "ok"]
    for p in problems:
        log.warning("run %s: %s [%s] %s", p.name, p.status, " ".join(p.overrides), p.reason)
    comparisons = [T.compare(records, a, b) for a, b in compare]
    title = "Results: " + ", ".join(Path(d).name for d in dirs)
    markdown = T.markdown_report(rows, comparisons, title=title, n_boot=n_boot)
    out = Path(out_dir)
    files = {
        "markdown": atomic_write_text(out / "report.md", markdown),
        "csv": atomic_write_text(out / "report.csv", T.csv_report(rows)),
        "runs": atomic_write_text(out / "runs.csv", T.runs_csv(records)),
    }
    if comparisons:
        files["comparisons"] = atomic_write_json(out / "comparisons.json", comparisons)
    return {
        "markdown": markdown,
        "rows": rows,
        "records": records,
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m leuk_lightning.report", description=__doc__.split("\n\n")[1]
    )
    p.add_argument("dirs", nargs="+", help="run or multirun directories (e.g. logs/X/multiruns/T)")
    p.add_argument(
        "--compare",
        nargs=2,
        action="append",
        default=[],
        metavar=("A", "B"),
        help="paired Wilcoxon test of configuration A vs B (repeatable)",
    )
    p.add_argument("--out", default=None, help="output folder (default: the single dir given)")
    p.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples (10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (0)")
    p.add_argument("--wandb", action="store_true", help="also log the table to W&B")
    p.add_argument("--wandb-project", default="leuk-lightning")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on a user error)."""
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(name)s: %(message)s")
    args = parse_args(argv)
    out = (
        Path(args.out)
        if args.out
        else (Path(args.dirs[0]) if len(args.dirs) == 1 else Path("report"))
    )
    try:
        report = build_report(args.dirs, out, args.compare, n_boot=args.n_boot, seed=args.seed)
        if args.wandb:
            log.info("W&B report run in %s", log_to_wandb(report, out, args.wandb_project))
    except LeukError as err:
        log.error("%s", err)
        return 2
    sys.stdout.write(report["markdown"])
    log.info("wrote %s", json.dumps({k: str(v) for k, v in report["files"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
