"""``leuk-lightning export``: a trained classifier to ONNX, checked against PyTorch."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from leuk_lightning.cli.args import ToolParser, optional_choice, run_tool

log = logging.getLogger("leuk_lightning")


def build_parser() -> ToolParser:
    p = ToolParser(
        "export",
        "Export a trained classifier (eval crop, normalisation, network, optional TTA, "
        "probabilities) to ONNX\nwith a sidecar JSON of classes and preprocessing; onnxruntime "
        "and PyTorch must agree within --atol.",
        examples=[
            "leuk-lightning export ckpt_path=run/checkpoints/epoch_004.ckpt output=model.onnx",
            "leuk-lightning export --ckpt-path run/checkpoints/last.ckpt --tta rot8 --opset 20",
        ],
    )
    p.add_argument("--ckpt-path", required=True, help="checkpoint of a classifier run")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    p.add_argument("--output", default=None, help="model file (default: <run dir>/model.onnx)")
    p.add_argument(
        "--tta",
        default=None,
        type=optional_choice("rot8", "d4"),
        metavar="{rot8,d4,null}",
        help="bake TTA into the graph",
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (18; 20 with tta=rot8)")
    p.add_argument("--atol", type=float, default=1e-4, help="onnxruntime vs PyTorch tolerance")
    p.add_argument("--batch", type=int, default=4, help="batch size of the agreement check")
    p.add_argument("--config", default=None, help="run config (default: <run>/.hydra/config.yaml)")
    return p


def _run(args: argparse.Namespace) -> int:
    from leuk_lightning.inference.export import export_onnx, require_export_packages
    from leuk_lightning.inference.predict import load_classifier

    require_export_packages()  # before loading anything: the `export` extra may be missing
    classifier = load_classifier(args.ckpt_path, args.config)
    output = args.output or (Path(classifier.run_dir or ".") / "model.onnx")
    info = export_onnx(
        classifier, output, tta=args.tta, opset=args.opset, atol=args.atol, check_batch=args.batch
    )
    log.info(
        "Exported %s; onnxruntime vs PyTorch max |diff| = %.3g on a batch of %d",
        info["model"],
        info["check"]["max_abs_diff"],
        info["check"]["batch"],
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(build_parser(), _run, argv)
