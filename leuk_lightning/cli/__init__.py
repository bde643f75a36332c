"""The ``leuk-lightning`` command: one console script, one subcommand per tool.

``leuk-lightning <command> [options]``; without a command the arguments go to ``train`` (so
``python -m leuk_lightning +experiment=...`` trains, as it always has). Each tool lives in its
own module with ``build_parser()`` and ``main(argv) -> exit status``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from leuk_lightning.errors import did_you_mean

#: command -> (module under leuk_lightning.cli, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a model: Hydra overrides, -m sweeps (the default command)"),
    "eval": ("eval", "test a checkpoint on its run's test set"),
    "predict": ("predict", "classify images with a checkpoint -> CSV"),
    "export": ("export", "export a classifier to ONNX, checked against PyTorch"),
    "detect": ("detect", "detect cells in images, videos or a camera -> CSV"),
    "explain": ("explain", "Grad-CAM and t-SNE of a trained classifier"),
    "report": ("report", "runs and sweeps -> the papers' tables"),
    "select": ("select", "best seed of a multi-seed sweep, spread over seeds"),
    "cnmc-to-voc": ("convert", "boxes for C-NMC crops as LabelImg Pascal VOC"),
    "app": ("app", "web app (Gradio) for a checkpoint: images, video, camera"),
}


def commands_help() -> str:
    """The command list shown by ``leuk-lightning --help`` (through Hydra's help template)."""
    width = max(map(len, COMMANDS))
    return "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items())


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to a subcommand; returns its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in COMMANDS:
        module = importlib.import_module(f"leuk_lightning.cli.{COMMANDS[args[0]][0]}")
        return int(module.main(args[1:]) or 0)
    first = args[0] if args else ""
    if first and first.isidentifier() and "=" not in first:  # a word, not an override
        print(
            f"leuk-lightning: unknown command '{first}'{did_you_mean(first, COMMANDS)}; "
            f"commands: {', '.join(COMMANDS)} (leuk-lightning --help)",
            file=sys.stderr,
        )
        return 2
    from leuk_lightning.cli.train import main as train

    return train(args)
