"""``leuk-lightning cnmc-to-voc``: boxes for C-NMC crops, written as LabelImg Pascal VOC."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from leuk_lightning.cli.args import ToolParser, run_tool


def build_parser() -> ToolParser:
    p = ToolParser(
        "cnmc-to-voc",
        "Derive one box per C-NMC crop from its non-black region and write LabelImg Pascal VOC "
        "annotations\n(out/images + out/annotations), the detector's training data.",
        examples=[
            "leuk-lightning cnmc-to-voc $LEUK_DATA_DIR/C-NMC_Leukemia $LEUK_DATA_DIR/cells_voc "
            "--per-class 150",
            "leuk-lightning cnmc-to-voc cnmc/ voc/ --link --mode all --threshold 20",
        ],
    )
    p.add_argument("cnmc_root", help="C-NMC folder (official archive or Kaggle mirror)")
    p.add_argument("out", help="output folder (gets images/ and annotations/)")
    p.add_argument("--threshold", type=int, default=10, help="foreground: max(R, G, B) > T")
    p.add_argument(
        "--mode",
        choices=["largest", "all"],
        default="largest",
        help="box of the largest blob or of all non-black pixels",
    )
    p.add_argument("--per-class", type=int, default=None, help="images per class (paper: 150)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --per-class selection")
    p.add_argument("--link", action="store_true", help="hard-link images instead of copying")
    return p


def _run(args: argparse.Namespace) -> int:
    from leuk_lightning.data.detection.convert import cnmc_to_voc

    written = cnmc_to_voc(
        args.cnmc_root,
        args.out,
        threshold=args.threshold,
        mode=args.mode,
        per_class=args.per_class,
        seed=args.seed,
        link=args.link,
    )
    print(f"{len(written)} images annotated under {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(build_parser(), _run, argv)
