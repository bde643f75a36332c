"""``leuk-lightning predict``: classify new images with a trained checkpoint -> CSV."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from leuk_lightning.cli.args import ToolParser, optional_choice, run_tool

log = logging.getLogger("leuk_lightning")


def build_parser() -> ToolParser:
    p = ToolParser(
        "predict",
        "Apply a trained classifier to new images (folder, .txt list or one image) and write "
        "one CSV row per image:\npath, subject, pred_class, prob_<class>..., error. The network "
        "and preprocessing are rebuilt from the run that wrote the checkpoint.",
        examples=[
            "leuk-lightning predict ckpt_path=logs/prellberg_seresnext50/runs/T/checkpoints/"
            "epoch_004.ckpt input=cells/ output=preds.csv tta=rot8",
            "leuk-lightning predict --ckpt-path run/checkpoints/last.ckpt --input list.txt "
            "--device cuda",
        ],
    )
    p.add_argument("--ckpt-path", required=True, help="checkpoint of a classifier run")
    p.add_argument("--input", required=True, help="image folder, .txt list of paths, or image")
    p.add_argument("--output", default="preds.csv", help="CSV to write (atomically)")
    p.add_argument(
        "--tta",
        default=None,
        type=optional_choice("rot8", "d4"),
        metavar="{rot8,d4,null}",
        help="test-time augmentation",
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--config", default=None, help="run config (default: <run>/.hydra/config.yaml)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    return p


def _run(args: argparse.Namespace) -> int:
    from leuk_lightning.inference.predict import list_inputs, load_classifier, predict, rows_to_csv
    from leuk_lightning.utils.io import atomic_write_text

    classifier = load_classifier(args.ckpt_path, args.config)
    rows = predict(
        classifier,
        list_inputs(args.input),
        tta=args.tta,
        batch_size=args.batch_size,
        device=args.device,
    )
    binary = len(classifier.class_names) == 2 and not classifier.multilabel
    out = Path(args.output)
    atomic_write_text(out, rows_to_csv(rows, classifier.class_names, binary))
    errors = sum(1 for r in rows if r["error"])
    log.info("Wrote %s: %d image(s), %d unreadable", out, len(rows), errors)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(build_parser(), _run, argv)
