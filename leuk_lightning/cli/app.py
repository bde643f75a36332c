"""``leuk-lightning app``: a web app (Gradio) for a checkpoint: images, video file, camera."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from leuk_lightning.cli.args import ToolParser, run_tool


def _flag(value: str) -> bool:
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not true or false")


def build_parser() -> ToolParser:
    p = ToolParser(
        "app",
        "Serve a web app for a trained checkpoint (needs the [app] extra: pip install "
        "'leuk-lightning[app]').\nDetector: image upload (one or many), video file and live "
        "webcam -> annotated output, a table\nof detections and a CSV with detect's columns. "
        "Classifier: class probabilities and a Grad-CAM overlay.\nServed on 127.0.0.1 (this "
        "machine only) unless --host says otherwise; Gradio analytics are off.",
        examples=[
            "leuk-lightning app ckpt_path=logs/cells_yolov3/runs/T/checkpoints/epoch_021.ckpt",
            "leuk-lightning app --ckpt-path run/checkpoints/last.ckpt --port 8080 "
            "--score-threshold 0.3",
        ],
    )
    p.add_argument("--ckpt-path", required=True, help="checkpoint of a detector or classifier run")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=7860, help="port to serve on")
    p.add_argument("--score-threshold", type=float, default=0.5, help="detector: boxes above")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--share", type=_flag, default=False, help="Gradio share link (public!)")
    return p


def _run(args: argparse.Namespace) -> int:
    from leuk_lightning.inference.app import launch

    launch(
        args.ckpt_path,
        host=args.host,
        port=args.port,
        score_threshold=args.score_threshold,
        device=args.device,
        share=args.share,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(build_parser(), _run, argv)
