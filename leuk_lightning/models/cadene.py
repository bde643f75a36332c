"""SE-ResNeXt50 32x4d with the Cadene ``pretrainedmodels`` ImageNet weights (Prellberg & Kramer).

The Prellberg & Kramer code (``jprellberg/isbi2019cancer``, ``model.py:178-183``) builds Cadene's
``SENet`` and loads ``se_resnext50_32x4d-a260b3a4.pth`` (Cadene's ImageNet weights, converted
from Caffe). timm's ``seresnext50_32x4d`` has the same layers under other names and a different
stem pooling; its own (gluon) weights are another training run. This factory builds the timm
network, switches its stem max-pool to Cadene's ``MaxPool2d(3, stride=2, ceil_mode=True)``
(``model.py:84-86``; timm uses ``padding=1``) and loads the Cadene file from disk, renaming:

    layer0.conv1 -> conv1, layer0.bn1 -> bn1, layerN.i.se_module.fcK -> layerN.i.se.fcK,
    last_linear -> (dropped: the head is new, one logit for the challenge)

The file is not downloadable at run time: the user puts it at ``model.pretrained_file``
(``conf/model/seresnext50_cadene.yaml``). The layer names then match the Prellberg learning-rate
groups of ``conf/regime/prellberg.yaml`` (``conv1|bn1|layer1``, ``layer2-4``, ``fc``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from leuk_lightning.errors import ConfigError
from leuk_lightning.models.factory import create_backbone, load_backbone_weights

log = logging.getLogger(__name__)

CADENE_FILE = "se_resnext50_32x4d-a260b3a4.pth"


def cadene_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Cadene ``se_resnext50_32x4d`` state dict to timm's names (head dropped)."""
    out = {}
    for key, value in state.items():
        if key.startswith("last_linear."):
            continue
        new = key.replace("layer0.", "", 1) if key.startswith("layer0.") else key
        new = new.replace(".se_module.", ".se.")
        out[new] = value
    return out


def load_cadene_weights(model: nn.Module, path: str | Path) -> None:
    """Load Cadene's file into a timm ``seresnext50_32x4d``; any unmatched weight is an error."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(
            f"model.pretrained_file={file}: file not found. Put Cadene's {CADENE_FILE} "
            "(pretrainedmodels, ImageNet) there, or set model.pretrained=false"
        )
    state = torch.load(file, map_location="cpu", weights_only=True)
    state = cadene_to_timm(state.get("state_dict", state))
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:
        raise ConfigError(
            f"model.pretrained_file={file} is not a Cadene se_resnext50_32x4d state dict: "
            f"missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    log.info("Loaded Cadene ImageNet weights from %s (head re-initialised)", file)


def create_seresnext50_cadene(
    num_classes: int,
    name: str = "seresnext50_32x4d",
    pretrained: bool = True,
    pretrained_file: str | None = None,
    init_from: str | None = None,
    drop_rate: float = 0.0,
    num_outputs: int | None = None,
) -> nn.Module:
    """timm ``seresnext50_32x4d`` with Cadene's stem pooling and (``pretrained``) weights."""
    if name != "seresnext50_32x4d":
        raise ConfigError(f"model.name={name!r}: the Cadene weights are for seresnext50_32x4d")
    model = create_backbone(name, num_classes=num_outputs or num_classes, drop_rate=drop_rate)
    model.maxpool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
    if init_from:
        load_backbone_weights(model, init_from)
    elif pretrained:
        if not pretrained_file:
            raise ConfigError(
                f"model.pretrained=true needs model.pretrained_file (Cadene's {CADENE_FILE})"
            )
        load_cadene_weights(model, pretrained_file)
    return model
