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


def _text_color(rgba: Sequence[float]) -> str:
    """White on dark cells, black on light ones (relative luminance of the cell colour)."""
    r, g, b = rgba[:3]
    return "white" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5 else "black"


def _matrix_panel(ax: Any, values: Any, labels: list[list[str]], names: Sequence[str], title: str):
    import numpy as np

    values = np.asarray(values, dtype=float)
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=max(float(values.max()), 1e-9))
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            color = _text_color(image.cmap(image.norm(values[i, j])))
            ax.text(j, i, labels[i][j], ha="center", va="center", color=color, fontsize=10)
    ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 3 else 0)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)


def confusion_matrix_figure(
    cm: torch.Tensor,
    class_names: Sequence[str],
    title: str = "Test confusion matrix",
    paper: Sequence[Sequence[float]] | None = None,
    paper_title: str = "Paper (% of the test set)",
) -> Any:
    """Counts and % of all samples per cell, text coloured by cell darkness; the paper's matrix
    (in %) beside it when the experiment states one of the same shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = cm.long().cpu()
    n = len(class_names)
    total = max(int(cm.sum()), 1)
    pct = 100.0 * cm.double() / total
    show_paper = paper is not None and [len(r) for r in paper] == [n] * n
    panels = 2 if show_paper else 1
    size = 1.6 + 1.2 * n
    fig, axes = plt.subplots(1, panels, figsize=(size * panels, size - 0.2), squeeze=False)
    labels = [[f"{int(cm[i, j])}\n{float(pct[i, j]):.1f}%" for j in range(n)] for i in range(n)]
    _matrix_panel(axes[0][0], cm.numpy(), labels, class_names, f"{title} (n={total})")
    if show_paper:
        labels = [[f"{float(v):.2f}%" for v in row] for row in paper]
        _matrix_panel(axes[0][1], paper, labels, class_names, paper_title)
    fig.tight_layout()
    return fig


def save_confusion_matrix(
    cm: torch.Tensor,
    class_names: Sequence[str],
    path: Path,
    title: str = "Test confusion matrix",
    paper: Sequence[Sequence[float]] | None = None,
) -> str:
    """Save :func:`confusion_matrix_figure` as PNG (atomically); return the matrix as text."""
    import matplotlib.pyplot as plt

    from leuk_lightning.utils.io import atomic_write

    fig = confusion_matrix_figure(cm, class_names, title=title, paper=paper)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return format_confusion_matrix(cm.long().cpu(), class_names)
