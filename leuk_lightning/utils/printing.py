"""Console output (rich) and result figures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.tree import Tree

from leuk_lightning.evaluation.metrics import format_confusion_matrix

_FIRST = ("data", "model", "regime", "callbacks", "logger", "trainer", "paths")


def print_config_tree(cfg: DictConfig) -> None:
    """Print the composed config, one branch per group, as lightning-hydra-template does."""
    tree = Tree("CONFIG", guide_style="dim")
    keys = [k for k in _FIRST if k in cfg] + [k for k in cfg if k not in _FIRST]
    for key in keys:
        branch = tree.add(str(key), guide_style="dim")
        value = cfg[key]
        text = (
            OmegaConf.to_yaml(value, resolve=False) if isinstance(value, DictConfig) else str(value)
        )
        branch.add(Syntax(text, "yaml"))
    Console().print(tree)


def print_results(metrics: dict[str, Any], title: str) -> None:
    """Print the test metrics and the confusion matrix."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in sorted(metrics.items()):
        if isinstance(value, float) and key.startswith(("test/", "train/accept_rate")):
            table.add_row(key, f"{value:.4f}")
    console = Console()
    console.print(table)
    cm = metrics.get("confusion_matrix")
    if cm is not None:
        names = metrics.get("class_names") or [str(i) for i in range(len(cm))]
        console.print("Confusion matrix (rows: true, columns: predicted)")
        console.print(format_confusion_matrix(torch.tensor(cm), names), markup=False)


def save_confusion_matrix(cm: torch.Tensor, class_names: Sequence[str], path: Path) -> str:
    """Save a confusion-matrix figure (counts and % of all samples); return its text form."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from leuk_lightning.utils.io import atomic_write

    cm = cm.long().cpu()
    total = max(int(cm.sum()), 1)
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(class_names), 1.2 + 1.2 * len(class_names)))
    ax.imshow(cm.numpy(), cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                f"{int(cm[i, j])}\n{100 * int(cm[i, j]) / total:.1f}%",
                ha="center",
                va="center",
            )
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return format_confusion_matrix(cm, class_names)
