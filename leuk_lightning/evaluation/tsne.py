"""t-SNE of pre-head features of a test set, coloured by class (DL4ALL Fig. 5).

Features are timm's pre-logits: ``forward_head(forward_features(x), pre_logits=True)`` = the
globally pooled last-convolution features of a CNN, the pooled (class) token of a ViT. The 2-D
embedding is scikit-learn's ``TSNE`` (PCA initialisation, seeded).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from leuk_lightning.errors import ConfigError
from leuk_lightning.utils.io import atomic_write


def pre_logits(net: nn.Module, images: Tensor) -> Tensor:
    """The features right before the classification head (pooled), ``[B, D]``."""
    if not (hasattr(net, "forward_features") and hasattr(net, "forward_head")):
        raise ConfigError(
            f"t-SNE: {type(net).__name__} is not a timm model with forward_features/forward_head"
        )
    return net.forward_head(net.forward_features(images), pre_logits=True).flatten(1)


@torch.no_grad()
def extract_features(
    net: nn.Module,
    batches: Iterable[dict[str, Any]],
    transform: Callable[[Tensor], Tensor] | None = None,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pre-head features and labels of every batch (``{"image", "label"}`` dicts)."""
    was_training = net.training
    net.eval()
    device = device or next(net.parameters()).device
    feats, labels = [], []
    for batch in batches:
        x = batch["image"].to(device)
        x = transform(x) if transform is not None else x.float()
        feats.append(pre_logits(net, x).float().cpu())
        labels.append(torch.as_tensor(batch["label"]).cpu())
    net.train(was_training)
    if not feats:
        raise ConfigError("t-SNE: the dataset to embed is empty")
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def tsne_embedding(features: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE coordinates; perplexity is capped below the number of samples."""
    from sklearn.manifold import TSNE

    n = len(features)
    if n < 3:
        raise ConfigError(f"t-SNE needs at least 3 samples, got {n}")
    perp = float(min(perplexity, max(1.0, (n - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed)
    return tsne.fit_transform(np.asarray(features, dtype=np.float32))


def save_tsne_plot(
    path: str | Path,
    embedding: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    title: str = "t-SNE of pre-head features (test set)",
    size_px: tuple[int, int] = (640, 640),
    dpi: int = 100,
) -> Path:
    """Scatter plot of the embedding coloured by class, exactly ``size_px`` pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(size_px[0] / dpi, size_px[1] / dpi), dpi=dpi)
    for c, name in enumerate(class_names):
        sel = labels == c
        if sel.any():
            ax.scatter(embedding[sel, 0], embedding[sel, 1], s=10, label=f"{c}: {name}", alpha=0.8)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    out = atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
    plt.close(fig)
    return out
