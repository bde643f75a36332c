"""``leuk-lightning report``: runs and sweeps -> the papers' tables (mean ± std, CI, paper)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from leuk_lightning.cli.args import ToolParser, run_tool

log = logging.getLogger("leuk_lightning")


def build_parser() -> ToolParser:
    p = ToolParser(
        "report",
        "Collect every job's results.json, group runs into configurations and write report.md "
        "(mean ± std,\n95 % bootstrap CI, average confusion matrix, the paper's figure beside "
        "ours), report.csv and runs.csv.\nJobs without results are listed by name.",
        examples=[
            "leuk-lightning report logs/histotnet_resnet18_l2/multiruns/2026-11-24_10-00-00",
            "leuk-lightning report logs/A/multiruns/T1 logs/B/multiruns/T2 --compare A B "
            "--out cmp/",
        ],
    )
    p.add_argument("dirs", nargs="+", help="run or multirun directories (logs/X/multiruns/T)")
    p.add_argument(
        "--compare",
        nargs=2,
        action="append",
        default=[],
        metavar=("A", "B"),
        help="paired Wilcoxon test of configuration A vs B (repeatable)",
    )
    p.add_argument("--out", default=None, help="output folder (default: the single dir given)")
    p.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument(
        "--std-ddof",
        type=int,
        default=1,
        choices=(0, 1),
        help="std estimator: 1 sample (default), 0 population (the HistoTNet code's np.std)",
    )
    p.add_argument("--wandb", action="store_true", help="also log the table to W&B")
    p.add_argument("--wandb-project", default="leuk-lightning", help="W&B project of --wandb")
    return p


def _run(args: argparse.Namespace) -> int:
    from leuk_lightning.evaluation.report import build_report, log_to_wandb

    if args.out:
        out = Path(args.out)
    else:
        out = Path(args.dirs[0]) if len(args.dirs) == 1 else Path("report")
    report = build_report(
        args.dirs, out, args.compare, n_boot=args.n_boot, seed=args.seed, ddof=args.std_ddof
    )
    if args.wandb:
        log.info("W&B report run in %s", log_to_wandb(report, out, args.wandb_project))
    sys.stdout.write(report["markdown"])
    log.info("wrote %s", json.dumps({k: str(v) for k, v in report["files"].items()}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(build_parser(), _run, argv)
