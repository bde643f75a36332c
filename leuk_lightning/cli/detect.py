"""``leuk-lightning detect``: cells in images, folders, videos or a camera -> CSV."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from leuk_lightning.cli.args import ToolParser, run_tool


def build_parser() -> ToolParser:
    p = ToolParser(
        "detect",
        "Run a trained cell detector over an image, a folder, a video file or a camera index and "
        "write one CSV\nrow per detection: source, frame, class, score, xmin, ymin, xmax, ymax "
        "(input-image pixels), error.\nAn image or frame without detections gets one row with "
        "empty class and box; an unreadable\nfile gets a row naming the error, the rest go on "
        "(exit status 1).",
        examples=[
            "leuk-lightning detect ckpt_path=logs/cells_detector/runs/T/checkpoints/epoch_011.ckpt"
            " input=smears/ output=cells.csv annotate=true",
            "leuk-lightning detect --ckpt-path run/checkpoints/last.ckpt --input 0 "
            "--max-frames 300   # camera 0",
        ],
    )
    p.add_argument("--ckpt-path", required=True, help="checkpoint of a detector run")
    p.add_argument("--input", required=True, help="image, folder, video file or camera index")
    p.add_argument("--output", default="detections.csv", help="CSV to write (atomically)")
    p.add_argument("--annotate", action="store_true", help="also write annotated images/videos")
    p.add_argument("--annotate-dir", default=None, help="default: <output stem>_annotated/")
    p.add_argument("--score-threshold", type=float, default=0.5, help="keep boxes scoring above")
    p.add_argument("--batch-size", type=int, default=8, help="frames per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames (camera)")
    return p


def _run(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from leuk_lightning.inference.detect import detect

    stats = detect(OmegaConf.create(vars(args)))
    print(
        f"{stats['frames']} frame(s)/image(s), {stats['detections']} detection(s) -> "
        f"{stats['output']} in {stats['seconds']:.2f} s ({stats['fps']:.1f} frames/s on "
        f"{stats['device']})"
    )
    if stats["errors"]:
        print(
            f"detect: {stats['errors']} input(s) could not be read; see the error column of "
            f"{stats['output']}",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(build_parser(), _run, argv)
