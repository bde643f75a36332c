"""DL4ALL's two-head multi-task network (Genovese et al. 2023, Sec. III-A, Fig. 2).

Any timm model with its classifier removed (pooled features out) shared by two parallel linear
heads: ``source_head`` (ADP tissue classes at a label level, or the WSI index for the
self-supervised procedure) and ``target_head`` (C-NMC: normal / lymphoblast). The sigmoid or
softmax after each head belongs to the loss of the regime, so both heads return logits.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from leuk_lightning.errors import ConfigError
from leuk_lightning.models.factory import create_backbone, load_backbone_weights

HEADS = ("source", "target")


class MultiTaskNet(nn.Module):
    """A shared headless backbone and two parallel linear heads.

    Args:
        backbone: a headless timm model (``num_classes=0``) exposing ``num_features``.
        num_source_classes: outputs of the source head.
        num_target_classes: outputs of the target head.
    """

    def __init__(self, backbone: nn.Module, num_source_classes: int, num_target_classes: int):
        super().__init__()
        features = getattr(backbone, "num_features", None)
        if not isinstance(features, int) or features <= 0:
            raise ConfigError(
                f"backbone {type(backbone).__name__} has no 'num_features': use a timm model "
                "created with num_classes=0"
            )
        self.backbone = backbone
        self.num_features = features
        self.source_head = nn.Linear(features, num_source_classes)
        self.target_head = nn.Linear(features, num_target_classes)

    def features(self, x: Tensor) -> Tensor:
        """Pooled backbone features ``[B, num_features]`` (t-SNE, Grad-CAM, BN passes)."""
        return self.backbone(x)

    def head(self, name: str) -> nn.Linear:
        """The ``source`` or ``target`` head module."""
        if name not in HEADS:
            raise ValueError(f"head={name!r}: use one of {HEADS}")
        return self.source_head if name == "source" else self.target_head

    def forward(self, x: Tensor, head: str = "target") -> Tensor:
        """Logits of one head; the default is the target task (what inference needs)."""
        return self.head(head)(self.features(x))


def create_multitask_net(
    name: str,
    num_source_classes: int,
    num_target_classes: int,
    pretrained: bool = False,
    pretrained_file: str | None = None,
    init_from: str | None = None,
    drop_rate: float = 0.0,
    **timm_kwargs: Any,
) -> MultiTaskNet:
    """A ``MultiTaskNet`` over the timm model ``name`` (weights from local files only).

    ``init_from`` (a checkpoint of an earlier stage) takes precedence over ``pretrained``; its
    backbone is loaded and both heads start from a fresh initialisation.
    """
    backbone = create_backbone(
        name,
        pretrained=pretrained and not init_from,
        pretrained_file=pretrained_file,
        num_classes=0,
        drop_rate=drop_rate,
        **timm_kwargs,
    )
    if init_from:
        load_backbone_weights(backbone, init_from)
    return MultiTaskNet(backbone, num_source_classes, num_target_classes)
