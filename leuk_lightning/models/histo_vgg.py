"""HistoTNet's "VGG16": the small custom 6-conv BatchNorm network of the authors' code.

Genovese et al. (HistoTNet) call the second backbone "VGG16", but the authors' code trains
``vgg16_bn_Mahdi`` (``(1) PyTorch_HistoNet/modelGeno/vgg16_bn_Mahdi.py``, the same file in
``(2) PyTorch_HistoTNet/modelGeno/``), not torchvision's VGG16 (138 M parameters). Written here
from that definition:

    conv 3->32 k7 p1, ReLU, BN, maxpool 2/2 p1
    conv 32->32 k5 p1, ReLU, BN, maxpool 2/2 p1
    conv 32->128 k5 p1, ReLU, BN, maxpool 2/2 p1
    conv 128->256 k5 p1, ReLU, BN, maxpool 2/2 p1
    conv 256->128 k7 p1, ReLU, BN, maxpool 2/2 p1
    conv 128->256 k3 p1, ReLU, BN, maxpool k7 s4 p1
    flatten -> Linear 256->512, ReLU, BN1d -> Linear 512->num_classes
    (Xavier-uniform weights, zero biases; note ReLU comes BEFORE BatchNorm, as in the code)

Parameter count: 2,987,552 without the last layer; with a 2-class head (HistoTNet) 2,988,578,
with the 9 level-1 ADP classes 2,992,169. Transfer (``pytorch_histotnet.py:146-148``)
replaces only the last ``Linear`` (``classifierG.3``) by a 2-output one; everything trains.

At 224 px the last feature map is 5 x 5 and the code's final ``MaxPool2d(7, 4, padding=1)`` takes
its global maximum; ``AdaptiveMaxPool2d(1)`` here is the same operation at 224 px and also works
at other sizes. The network needs at least 82 px: smaller inputs (the 64 px demo) are resized
up to ``min_size`` first (no effect at the papers' 224 px).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leuk_lightning.errors import ConfigError

# (in, out, kernel) of the six conv blocks, vgg16_bn_Mahdi.py:13-45
_CONVS = ((3, 32, 7), (32, 32, 5), (32, 128, 5), (128, 256, 5), (256, 128, 7), (128, 256, 3))
MIN_SIZE = 82


class HistoVGG(nn.Module):
    """``vgg16_bn_Mahdi`` of the HistoTNet code (see the module docstring)."""

    # where the factory's checkpoint loader finds the head (timm's convention)
    pretrained_cfg = {"classifier": "classifierG.3"}

    def __init__(self, num_classes: int, min_size: int = MIN_SIZE) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (cin, cout, k) in enumerate(_CONVS):
            last = i == len(_CONVS) - 1
            layers += [
                nn.Conv2d(cin, cout, kernel_size=k, padding=1),
                nn.ReLU(inplace=True),
                nn.BatchNorm2d(cout),
                nn.AdaptiveMaxPool2d(1) if last else nn.MaxPool2d(2, stride=2, padding=1),
            ]
        self.features = nn.Sequential(*layers)
        self.classifierG = nn.Sequential(
            nn.Linear(256, 512),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(512),
            nn.Linear(512, num_classes),
        )
        self.min_size = min_size
        for layer in [*self.features, *self.classifierG]:
            if isinstance(layer, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        if min(x.shape[-2:]) < self.min_size:
            x = F.interpolate(x, size=(self.min_size, self.min_size), mode="bilinear")
        x = torch.flatten(self.features(x), 1)
        return self.classifierG(x)


def create_histo_vgg(
    num_classes: int,
    name: str = "histo_vgg16",
    pretrained: bool = False,
    pretrained_file: str | None = None,
    init_from: str | None = None,
    drop_rate: float = 0.0,
    num_outputs: int | None = None,
) -> nn.Module:
    """The factory of ``conf/model/histo_vgg16.yaml`` (same arguments as ``create_classifier``).

    There are no ImageNet weights for this network: it is trained from scratch on ADP (HistoCNN)
    and fine-tuned from that stage's checkpoint (``init_from``)."""
    if pretrained:
        raise ConfigError(
            "model.pretrained=true: histo_vgg16 (HistoTNet's custom network) has no ImageNet "
            "weights; set model.pretrained=false (the HistoCNN stage trains it from scratch)"
        )
    if drop_rate:
        raise ConfigError(
            "model.drop_rate: histo_vgg16 has no dropout (the authors' code has none)"
        )
    model = HistoVGG(num_outputs or num_classes)
    if init_from:
        from leuk_lightning.models.factory import load_backbone_weights

        load_backbone_weights(model, init_from)
    return model
