"""Object detectors for cell detection: torchvision FCOS / RetinaNet / Faster R-CNN over a timm
backbone with a feature pyramid, built from local weights or random init (nothing downloaded).

``arch="yolov3"`` is the cell-detector paper's model, written in this project
(:mod:`leuk_lightning.models.yolo`, Darknet-53 from timm). The torchvision alternatives:
``fcos`` (one-stage, anchor-free), ``retinanet`` (one-stage, anchors) and ``faster_rcnn``
(two-stage). Their backbone is any timm model with ``features_only`` support
(``resnet18``, ``mobilenetv3_large_100``, the tiny ``test_resnet`` for tests); its stages
``out_indices`` feed a torchvision ``FeaturePyramidNetwork`` with ``fpn_channels`` channels.

Weights: ``pretrained_file`` is a local timm checkpoint of the backbone (as for the
classifiers), ``weights_file`` a whole detector (a state dict, or a Lightning checkpoint of
this project whose ``net.`` entries are taken). ``trainable_layers`` freezes all but the last
k backbone stages (None: train everything), as torchvision's ``trainable_backbone_layers``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import (
    FeaturePyramidNetwork,
    LastLevelMaxPool,
    LastLevelP6P7,
)

from leuk_lightning.errors import ConfigError
from leuk_lightning.models.factory import create_backbone
from leuk_lightning.utils.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

ARCHS = ("fcos", "retinanet", "faster_rcnn", "yolov3")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TimmFpnBackbone(nn.Module):
    """timm ``features_only`` backbone + FPN; ``forward`` returns an OrderedDict of levels.

    ``out_channels`` and ``strides`` (one per returned level, extra levels included) are what
    the torchvision detectors need to build their heads and anchors.
    """

    def __init__(
        self,
        body: nn.Module,
        fpn_channels: int,
        extra: str,
    ) -> None:
        super().__init__()
        self.body = body
        channels = list(body.feature_info.channels())
        reductions = list(body.feature_info.reduction())
        if extra == "p6p7":
            extra_blocks: nn.Module = LastLevelP6P7(fpn_channels, fpn_channels)
            self.strides = reductions + [reductions[-1] * 2, reductions[-1] * 4]
        else:
            extra_blocks = LastLevelMaxPool()
            self.strides = reductions + [reductions[-1] * 2]
        self.fpn = FeaturePyramidNetwork(channels, fpn_channels, extra_blocks=extra_blocks)
        self.out_channels = fpn_channels
        self.level_names = [str(i) for i in range(len(channels))]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        feats = self.body(x)
        return self.fpn(OrderedDict(zip(self.level_names, feats)))


def freeze_stages(body: nn.Module, trainable_layers: int | None) -> int:
    """Freeze the backbone's parameters up to (and including) all but its last
    ``trainable_layers`` feature stages; returns how many parameter tensors were frozen."""
    if trainable_layers is None:
        return 0
    if trainable_layers < 0:
        raise ConfigError(f"model.trainable_layers={trainable_layers} must be >= 0 or null")
    modules = [info["module"] for info in body.feature_info.info]
    present = max(body.feature_info.out_indices) + 1  # stages after the last output are cut
    last_frozen = present - 1 - trainable_layers
    if last_frozen < 0:
        return 0
    stage = modules[last_frozen]
    names = [n for n, _ in body.named_parameters()]
    matches = [i for i, n in enumerate(names) if n.startswith(stage + ".")]
    # a stage without parameters (e.g. ResNet's stem activation): freeze what precedes it
    boundary = matches[-1] if matches else _last_param_before(body, stage)
    frozen = 0
    for i, (_, param) in enumerate(body.named_parameters()):
        if i <= boundary:
            param.requires_grad_(False)
            frozen += 1
    return frozen


def _last_param_before(body: nn.Module, module_name: str) -> int:
    """Index of the last parameter registered before module ``module_name`` (-1: none)."""
    count = -1
    for name, module in body.named_modules():
        if name == module_name:
            return count
        if name and "." not in name:
            count += sum(1 for _ in module.parameters())
    return count


class Detector(nn.Module):
    """A torchvision detector with class indices 0..C-1 on both sides.

    Faster R-CNN reserves label 0 for the background; ``label_offset`` hides that, so data,
    metrics and predictions always use ``classes[i]`` = label ``i``. Input images are float
    [0, 1] tensors ``[3, H, W]`` (the model normalises and resizes them itself).
    """

    def __init__(self, model: nn.Module, num_classes: int, arch: str, label_offset: int) -> None:
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.arch = arch
        self.label_offset = label_offset

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if targets is not None and self.label_offset:
            targets = [{**t, "labels": t["labels"] + self.label_offset} for t in targets]
        out = self.model(images, targets)
        if isinstance(out, list) and self.label_offset:
            out = [{**o, "labels": o["labels"] - self.label_offset} for o in out]
        return out

    def set_score_threshold(self, value: float) -> None:
        """Lowest score a detection is returned with (the model's own pre-NMS filter)."""
        if self.arch == "faster_rcnn":
            self.model.roi_heads.score_thresh = value
        else:
            self.model.score_thresh = value


def _load_detector_weights(model: Detector, weights_file: str) -> None:
    path = Path(weights_file).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.weights_file={path}: file not found")
    ckpt = load_checkpoint(path, what="model.weights_file")
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    if not isinstance(state, dict):
        raise ConfigError(f"model.weights_file={path} is not a checkpoint with a state_dict")
    if any(k.startswith("net.") for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError(
            f"model.weights_file={path} does not match this detector (arch={model.arch}, "
            f"{model.num_classes} classes): {str(err).splitlines()[0]} ..."
        ) from err
    log.info("Loaded detector weights from %s", path)


def create_detector(
    num_classes: int,
    arch: str = "fcos",
    backbone: str = "resnet18",
    pretrained: bool = False,
    pretrained_file: str | None = None,
    weights_file: str | None = None,
    trainable_layers: int | None = None,
    out_indices: Sequence[int] = (2, 3, 4),
    fpn_channels: int = 256,
    image_size: int | None = None,
    min_size: int | None = None,
    max_size: int | None = None,
    anchor_scale: float = 4.0,
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    box_sizes: Any = None,
    **arch_kwargs: Any,
) -> Detector:
    """Build a detector for ``num_classes`` object classes (background not counted).

    ``min_size``/``max_size`` are the model's internal resize bounds; by default both equal
    ``image_size`` (what the datamodule feeds), or torchvision's 800/1333 without it.
    ``anchor_scale`` sets the anchor size per level to ``anchor_scale * stride`` (RetinaNet,
    Faster R-CNN; torchvision uses 4, smaller suits small cells). ``arch_kwargs`` go to the
    torchvision class (e.g. ``center_sampling_radius``, ``topk_candidates``), or to
    :func:`leuk_lightning.models.yolo.create_yolov3` for ``arch=yolov3`` (``anchors``,
    ``backbone_width``, ``neck_widths``, ``ignore_thresh``, ``darknet_weights``, ...).
    ``box_sizes`` (the training boxes' sizes in fractions of their image, from the datamodule)
    is used by YOLOv3's k-means anchors and ignored by the other architectures.
    """
    if arch not in ARCHS:
        raise ConfigError(f"model.arch={arch!r} is not known; use one of {list(ARCHS)}")
    if num_classes < 1:
        raise ConfigError(f"a detector needs at least one class (num_classes={num_classes})")
    if arch == "fcos" and (fpn_channels % 32 or fpn_channels < 64):
        raise ConfigError(
            f"model.fpn_channels={fpn_channels} must be a multiple of 32 and at least 64 for "
            "FCOS (its head normalises with GroupNorm of 32 groups, which fails on the 1x1 top "
            "levels of small pictures with one channel per group)"
        )
    if arch == "yolov3":
        return _create_yolov3(
            num_classes,
            backbone=backbone,
            pretrained=pretrained and not weights_file,
            pretrained_file=pretrained_file,
            weights_file=weights_file,
            trainable_layers=trainable_layers,
            out_indices=out_indices,
            image_size=image_size or min_size,
            image_mean=image_mean,
            image_std=image_std,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
            box_sizes=box_sizes,
            **arch_kwargs,
        )
    body = create_backbone(
        backbone,
        pretrained=pretrained and not weights_file,
        pretrained_file=pretrained_file,
        features_only=True,
        out_indices=tuple(out_indices),
    )
    frozen = freeze_stages(body, trainable_layers)
    if frozen:
        log.info(
            "Froze %d backbone parameter tensors (trainable_layers=%s)", frozen, trainable_layers
        )
    fpn = TimmFpnBackbone(body, fpn_channels, extra="maxpool" if arch == "faster_rcnn" else "p6p7")
    low = min_size or image_size or 800
    high = max_size or image_size or 1333
    common = dict(
        min_size=low,
        max_size=max(high, low),
        image_mean=list(image_mean),
        image_std=list(image_std),
    )
    n_levels = len(fpn.strides)
    if arch == "fcos":
        anchors = AnchorGenerator(tuple((s,) for s in fpn.strides), ((1.0,),) * n_levels)
        model: nn.Module = FCOS(
            fpn,
            num_classes,
            anchor_generator=anchors,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
            **common,
            **arch_kwargs,
        )
        # torchvision decodes relu(x) * stride: with x ~ 0 at init, a few steps can push every
        # output below 0, where ReLU passes no gradient, and the box branch dies (loss stuck at
        # 1.0 from random init). Starting at one stride per side keeps it alive.
        nn.init.constant_(model.head.regression_head.bbox_reg.bias, 1.0)
        offset = 0
    elif arch == "retinanet":
        sizes = tuple(
            tuple(int(round(anchor_scale * s * 2 ** (k / 3))) for k in range(3))
            for s in fpn.strides
        )
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * n_levels)
        model = RetinaNet(
            fpn,
            num_classes,
            anchor_generator=anchors,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
            **common,
            **arch_kwargs,
        )
        offset = 0
    else:
        sizes = tuple((int(round(anchor_scale * s)),) for s in fpn.strides)
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * n_levels)
        roi_pool = MultiScaleRoIAlign(fpn.level_names, output_size=7, sampling_ratio=2)
        model = FasterRCNN(
            fpn,
            num_classes + 1,
            rpn_anchor_generator=anchors,
            box_roi_pool=roi_pool,
            box_score_thresh=score_thresh,
            box_nms_thresh=nms_thresh,
            box_detections_per_img=detections_per_img,
            **common,
            **arch_kwargs,
        )
        offset = 1
    detector = Detector(model, num_classes, arch, offset)
    if weights_file:
        _load_detector_weights(detector, weights_file)
    return detector


def _create_yolov3(
    num_classes: int,
    weights_file: str | None,
    trainable_layers: int | None,
    darknet_weights: str | None = None,
    **kwargs: Any,
) -> Detector:
    from leuk_lightning.models.yolo import create_yolov3, load_darknet_weights

    yolo = create_yolov3(num_classes, **kwargs)
    if darknet_weights and not weights_file:
        load_darknet_weights(yolo, darknet_weights)
    frozen = freeze_stages(yolo.body, trainable_layers)
    if frozen:
        log.info(
            "Froze %d backbone parameter tensors (trainable_layers=%s)", frozen, trainable_layers
        )
    detector = Detector(yolo, num_classes, "yolov3", 0)
    if weights_file:
        _load_detector_weights(detector, weights_file)
    return detector
