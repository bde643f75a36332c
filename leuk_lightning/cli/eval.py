"""``leuk-lightning eval``: test a checkpoint on its run's test set (the template's eval)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from leuk_lightning.cli.args import ToolParser, run_tool


def build_parser() -> ToolParser:
    p = ToolParser(
        "eval",
        "Rebuild the run that wrote a checkpoint (its config, with debug=... re-applied, and its "
        "saved split.json),\ntest the checkpoint on the test split and write results.json, the "
        "confusion matrix and the metrics into\n<run dir>/eval/<time>/ (or --out-dir); the "
        "run's own results are left untouched.",
        examples=[
            "leuk-lightning eval ckpt_path=logs/histotnet_resnet18_l2/runs/T/checkpoints/"
            "epoch_011.ckpt",
            "leuk-lightning eval --ckpt-path run/checkpoints/last.ckpt trainer=... "
            "paths.data_dir=/data/moved",
        ],
        overrides=True,
    )
    p.add_argument("--ckpt-path", required=True, help="checkpoint inside its run directory")
    p.add_argument("--out-dir", default=None, help="default: <run dir>/eval/<time>")
    return p


def _run(args: argparse.Namespace) -> int:
    from leuk_lightning.training.evaluate import evaluate

    evaluate(args.ckpt_path, overrides=args.overrides, out_dir=args.out_dir)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(build_parser(), _run, argv)
