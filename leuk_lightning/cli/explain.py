"""``leuk-lightning explain``: Grad-CAM and t-SNE of a trained classifier after the fact."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from leuk_lightning.cli.args import ToolParser, run_tool


def build_parser() -> ToolParser:
    p = ToolParser(
        "explain",
        "Rebuild a run from its directory (its config and saved split), load the checkpoint and "
        "write Grad-CAM\noverlays (gradcam.png, gradcam/*.png) and/or a t-SNE of the features "
        "(tsne.png) into the run dir.",
        examples=[
            "leuk-lightning explain ckpt_path=logs/histotnet_resnet18_l2/runs/T/checkpoints/"
            "last.ckpt method=gradcam n_images=8",
            "leuk-lightning explain --ckpt-path run/checkpoints/last.ckpt --method tsne "
            "paths.data_dir=/data",
        ],
        overrides=True,
    )
    p.add_argument("--ckpt-path", required=True, help="checkpoint inside its run directory")
    p.add_argument(
        "--method", default="gradcam", choices=["gradcam", "tsne", "all"], help="what to draw"
    )
    p.add_argument("--n-images", type=int, default=8, help="Grad-CAM images (half per class)")
    p.add_argument(
        "--split", default="test", choices=["train", "val", "test"], help="images of this subset"
    )
    p.add_argument("--out-dir", default=None, help="default: the run directory")
    p.add_argument("--seed", type=int, default=0, help="t-SNE seed")
    return p


def _run(args: argparse.Namespace) -> int:
    from leuk_lightning.evaluation.explain import explain

    explain(
        args.ckpt_path,
        method=args.method,
        n_images=args.n_images,
        split=args.split,
        out_dir=args.out_dir,
        seed=args.seed,
        overrides=args.overrides,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(build_parser(), _run, argv)
