"""``leuk-lightning select``: the best seed of a multi-seed sweep and the spread over seeds."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from leuk_lightning.cli.args import ToolParser, run_tool


def build_parser() -> ToolParser:
    p = ToolParser(
        "select",
        "Multi-seed model selection (Prellberg & Kramer, Sec. 4.2): keep the run with the best "
        "validation metric,\nwrite selection.csv, selection.md (min, mean ± std, max over seeds) "
        "and selected.json into the sweep dir.",
        examples=[
            "leuk-lightning select logs/prellberg_seresnext50/multiruns/2026-11-24_10-00-00",
            "leuk-lightning select logs/X/multiruns/T --metric val/loss --mode min",
        ],
    )
    p.add_argument("multirun_dir", help="logs/<task>/multiruns/<timestamp>")
    p.add_argument("--metric", default="val/f1_weighted_best", help="results.json metric")
    p.add_argument("--mode", default="max", choices=["max", "min"], help="best is max or min")
    return p


def _run(args: argparse.Namespace) -> int:
    from leuk_lightning.evaluation.selection import select

    select(args.multirun_dir, args.metric, args.mode)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(build_parser(), _run, argv)
