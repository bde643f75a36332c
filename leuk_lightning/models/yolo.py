"""YOLOv3 (Redmon & Farhadi 2018), the cell-detector paper's model, written on timm's Darknet-53.

The network keeps torchvision's detector calling convention, so the detection regime, ``detect``
and the mAP code treat it like FCOS: ``model(images, targets)`` returns a dict of losses in
training mode, ``model(images)`` a list of ``{"boxes" xyxy, "scores", "labels"}`` in eval mode,
with boxes in each input image's own pixels (images are resized to ``image_size`` inside).

Parts:

- **backbone**: timm ``darknet53`` ``features_only`` at strides 8/16/32 (256/512/1024 channels).
  ``backbone_width``/``backbone_depth`` below 1 build a slimmer Darknet-53 of the same topology
  (timm's ``CspNet`` with the ``darknet53`` stage layout), for CPU demos and tests; any other
  timm ``features_only`` model with three output levels also works (``out_indices``).
- **neck**: per scale, the YOLOv3 5-conv block (1x1, 3x3, 1x1, 3x3, 1x1), a 1x1 lateral conv,
  2x nearest upsampling and concatenation with the next finer backbone level (upsampled first,
  as the ``route -1, 61`` of Darknet's ``yolov3.cfg``).
- **head**: a 3x3 conv and a 1x1 conv with 3 anchors x (5 + C) outputs per scale.
- **anchors**: 9 (w, h) sizes, kept as a buffer in fractions of the input side (so they travel
  with the state dict); the 3 smallest go to stride 8, the largest to stride 32.
  :func:`kmeans_anchors` fits them to the training boxes with the 1 - IoU distance of YOLOv2
  (cells are far larger than COCO objects, so COCO's anchors fit them badly).
- **targets**: each ground-truth box goes to the one of the 9 anchors whose shape fits it best
  (IoU of centred boxes), at the grid cell holding its centre (:func:`assign_anchors`);
  predictions that overlap any ground-truth box by more than ``ignore_thresh`` (0.5) but are
  not assigned are left out of the no-object loss (:func:`ignore_mask`).
- **loss**: binary cross-entropy for the centre offsets (``sigmoid(tx)``), objectness and the
  classes (independent sigmoids), and the squared error of the log size ``tw, th`` weighted by
  ``2 - w*h`` (w, h in fractions of the image: small boxes count more), as in YOLOv3.
- **inference**: ``score = sigmoid(obj) * sigmoid(cls)`` per class, threshold, torchvision's
  class-wise NMS (``batched_nms``), the ``detections_per_img`` best.

Darknet ``.weights`` files (the public ``yolov3.weights`` included) load with
:func:`load_darknet_weights`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms, box_iou

from leuk_lightning.errors import ConfigError

log = logging.getLogger(__name__)

#: YOLOv3's COCO anchors (pixels at 416 x 416), smallest first
COCO_ANCHORS = (
    (10, 13),
    (16, 30),
    (33, 23),
    (30, 61),
    (62, 45),
    (59, 119),
    (116, 90),
    (156, 198),
    (373, 326),
)
STRIDES = (8, 16, 32)
LEAKY = 0.1


# ------------------------------------------------------------------------------------------
# box coding, anchor assignment, ignore mask (pure functions, tested one by one)


def wh_iou(wh1: Tensor, wh2: Tensor) -> Tensor:
    """IoU of boxes that share their centre: ``[N, 2]`` x ``[M, 2]`` sizes -> ``[N, M]``."""
    inter = torch.min(wh1[:, None], wh2[None]).prod(-1)
    return inter / (wh1.prod(-1)[:, None] + wh2.prod(-1)[None] - inter)


def encode_boxes(boxes: Tensor, anchors: Tensor, stride: int) -> tuple[Tensor, Tensor]:
    """xyxy boxes ``[N, 4]`` (pixels) with their anchors ``[N, 2]`` (pixels) -> the grid cell
    ``[N, 2]`` (i = column, j = row) of each centre and the targets ``[N, 4]``:
    ``(sx, sy)`` the centre's offset in its cell (in [0, 1), what ``sigmoid(tx)`` must give)
    and ``(tw, th) = log(size / anchor)``."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 / stride
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 / stride
    cell = torch.stack([cx.floor(), cy.floor()], 1)
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-6)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-6)
    t = torch.stack(
        [
            cx - cell[:, 0],
            cy - cell[:, 1],
            torch.log(w / anchors[:, 0]),
            torch.log(h / anchors[:, 1]),
        ],
        1,
    )
    return cell.long(), t


def decode_boxes(cell: Tensor, t: Tensor, anchors: Tensor, stride: int) -> Tensor:
    """Inverse of :func:`encode_boxes`: cells ``[..., 2]``, offsets/log sizes ``[..., 4]`` (the
    offsets already through the sigmoid), anchors ``[..., 2]`` -> xyxy pixel boxes ``[..., 4]``."""
    cx = (cell[..., 0] + t[..., 0]) * stride
    cy = (cell[..., 1] + t[..., 1]) * stride
    w = torch.exp(t[..., 2].clamp(max=10.0)) * anchors[..., 0]
    h = torch.exp(t[..., 3].clamp(max=10.0)) * anchors[..., 1]
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def assign_anchors(
    boxes: Tensor, anchors: Tensor, strides: Sequence[int] = STRIDES, per_scale: int = 3
) -> tuple[Tensor, Tensor, Tensor]:
    """The best of all anchors ``[A, 2]`` (pixels, smallest first, ``per_scale`` per stride)
    for each xyxy box ``[N, 4]``: returns ``(scale index, anchor index within the scale,
    cell [N, 2] as (column, row))``."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-6)
    best = wh_iou(wh, anchors).argmax(1)
    scale = best // per_scale
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    stride = torch.tensor(list(strides), dtype=boxes.dtype, device=boxes.device)[scale]
    cell = (centre / stride[:, None]).floor().long()
    return scale, best % per_scale, cell


def ignore_mask(pred_boxes: Tensor, gt_boxes: Tensor, thresh: float = 0.5) -> Tensor:
    """True where a predicted box ``[P, 4]`` overlaps some ground-truth box ``[G, 4]`` by more
    than ``thresh`` IoU: such predictions are not pushed towards "no object"."""
    if gt_boxes.numel() == 0 or pred_boxes.numel() == 0:
        return torch.zeros(pred_boxes.shape[0], dtype=torch.bool, device=pred_boxes.device)
    return box_iou(pred_boxes, gt_boxes).max(1).values > thresh


def kmeans_anchors(
    sizes: Tensor | np.ndarray, k: int = 9, seed: int = 0, iters: int = 300
) -> Tensor:
    """k-means of box sizes ``[N, 2]`` with the 1 - IoU distance (YOLOv2/v3's anchor fit);
    returns ``[k, 2]`` sorted by area. With fewer distinct sizes than ``k``, the cluster
    centres are spread over the sizes' quantiles instead."""
    wh = torch.as_tensor(sizes, dtype=torch.float64).reshape(-1, 2)
    wh = wh[(wh > 0).all(1)]
    if len(wh) == 0:
        raise ConfigError("kmeans_anchors: no boxes to fit anchors to")
    gen = torch.Generator().manual_seed(seed)
    if len(torch.unique(wh, dim=0)) < k:
        q = torch.linspace(0.05, 0.95, k, dtype=torch.float64)
        centres = torch.stack([wh[:, 0].quantile(q), wh[:, 1].quantile(q)], 1)
    else:
        centres = wh[torch.randperm(len(wh), generator=gen)[:k]].clone()
        for _ in range(iters):
            nearest = wh_iou(wh, centres).argmax(1)
            new = torch.stack(
                [
                    wh[nearest == i].median(0).values if (nearest == i).any() else centres[i]
                    for i in range(k)
                ]
            )
            if torch.allclose(new, centres):
                break
            centres = new
    return centres[centres.prod(1).argsort()].float()


# ------------------------------------------------------------------------------------------
# network


class ConvBN(nn.Sequential):
    """Darknet's convolutional layer: conv (no bias) + batch norm + leaky ReLU (0.1)."""

    def __init__(self, c_in: int, c_out: int, k: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(LEAKY, inplace=True),
        )


def five_convs(c_in: int, c: int) -> nn.Sequential:
    """YOLOv3's 5-conv block: 1x1 c, 3x3 2c, 1x1 c, 3x3 2c, 1x1 c."""
    return nn.Sequential(
        ConvBN(c_in, c, 1), ConvBN(c, 2 * c, 3), ConvBN(2 * c, c, 1), ConvBN(c, 2 * c, 3),
        ConvBN(2 * c, c, 1),
    )  # fmt: skip


class YoloNeckHead(nn.Module):
    """The YOLOv3 neck and head over three backbone levels (fine to coarse ``channels``);
    ``forward`` returns raw outputs ``[B, 3*(5+C), H, W]``, finest (stride 8) first."""

    def __init__(
        self, channels: Sequence[int], widths: Sequence[int], num_classes: int, per_scale: int = 3
    ) -> None:
        super().__init__()
        c3, c4, c5 = channels
        w0, w1, w2 = widths  # coarse (stride 32) to fine, Darknet: 512, 256, 128
        n_out = per_scale * (5 + num_classes)
        self.set0 = five_convs(c5, w0)
        self.head0 = nn.Sequential(ConvBN(w0, 2 * w0, 3), nn.Conv2d(2 * w0, n_out, 1))
        self.lateral1 = ConvBN(w0, w1, 1)
        self.set1 = five_convs(w1 + c4, w1)
        self.head1 = nn.Sequential(ConvBN(w1, 2 * w1, 3), nn.Conv2d(2 * w1, n_out, 1))
        self.lateral2 = ConvBN(w1, w2, 1)
        self.set2 = five_convs(w2 + c3, w2)
        self.head2 = nn.Sequential(ConvBN(w2, 2 * w2, 3), nn.Conv2d(2 * w2, n_out, 1))

    def darknet_order(self) -> list[nn.Module]:
        """Modules in the order of Darknet's ``yolov3.cfg`` after the backbone."""
        return [
            self.set0, self.head0, self.lateral1, self.set1, self.head1, self.lateral2,
            self.set2, self.head2,
        ]  # fmt: skip

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        f3, f4, f5 = feats
        x0 = self.set0(f5)
        x1 = F.interpolate(self.lateral1(x0), size=f4.shape[-2:], mode="nearest")
        x1 = self.set1(torch.cat([x1, f4], 1))
        x2 = F.interpolate(self.lateral2(x1), size=f3.shape[-2:], mode="nearest")
        x2 = self.set2(torch.cat([x2, f3], 1))
        return [self.head2(x2), self.head1(x1), self.head0(x0)]


def create_darknet53(
    width: float = 1.0,
    depth: float = 1.0,
    out_indices: Sequence[int] = (3, 4, 5),
    pretrained: bool = False,
    pretrained_file: str | None = None,
) -> nn.Module:
    """timm's Darknet-53 as a ``features_only`` backbone with Darknet's leaky ReLU (0.1);
    ``width``/``depth`` < 1 scale its channels/blocks per stage (the same topology, slimmer)."""
    from timm.models import build_model_with_cfg
    from timm.models.cspnet import CspNet, model_cfgs

    from leuk_lightning.models.factory import create_backbone

    act = partial(nn.LeakyReLU, LEAKY)
    if width == 1.0 and depth == 1.0:
        return create_backbone(
            "darknet53",
            pretrained=pretrained,
            pretrained_file=pretrained_file,
            features_only=True,
            out_indices=tuple(out_indices),
            act_layer=act,
        )
    if pretrained:
        raise ConfigError("model.pretrained needs the full Darknet-53 (backbone_width=1, depth=1)")
    base = model_cfgs["darknet53"]
    stages = replace(
        base.stages,
        depth=tuple(max(1, round(d * depth)) for d in base.stages.depth),
        out_chs=tuple(max(8, int(c * width)) for c in base.stages.out_chs),
    )
    stem = replace(base.stem, out_chs=max(8, int(base.stem.out_chs * width)))
    cfg = replace(base, stem=stem, stages=stages)
    return build_model_with_cfg(
        CspNet,
        "darknet53",
        False,
        model_cfg=cfg,
        feature_cfg=dict(flatten_sequential=True, out_indices=tuple(out_indices)),
        features_only=True,
        act_layer=act,
    )


class YOLOv3(nn.Module):
    """YOLOv3 with torchvision's detector interface (see the module docstring).

    ``anchors`` are ``[9, 2]`` sizes in fractions of the input side; ``image_size`` (a multiple
    of 32) is the square the images are resized to; ``image_mean``/``image_std`` normalise them.
    """

    def __init__(
        self,
        body: nn.Module,
        num_classes: int,
        anchors: Tensor | Sequence[Sequence[float]],
        image_size: int = 416,
        neck_widths: Sequence[int] = (512, 256, 128),
        image_mean: Sequence[float] = (0.0, 0.0, 0.0),
        image_std: Sequence[float] = (1.0, 1.0, 1.0),
        score_thresh: float = 0.05,
        nms_thresh: float = 0.45,
        detections_per_img: int = 100,
        ignore_thresh: float = 0.5,
        candidates_per_scale: int = 1000,
    ) -> None:
        super().__init__()
        if image_size % 32:
            raise ConfigError(f"YOLOv3 needs an image size that is a multiple of 32 ({image_size})")
        anchors = torch.as_tensor(anchors, dtype=torch.float32).reshape(-1, 2)
        if anchors.shape[0] != 9:
            raise ConfigError(f"YOLOv3 needs 9 anchors (3 per scale), got {anchors.shape[0]}")
        self.body = body
        channels = list(body.feature_info.channels())
        reductions = list(body.feature_info.reduction())
        if len(channels) != 3 or reductions != list(STRIDES):
            raise ConfigError(
                f"YOLOv3 needs three backbone levels at strides {list(STRIDES)}, got "
                f"{reductions} (set model.out_indices)"
            )
        self.num_classes = num_classes
        self.image_size = int(image_size)
        self.neck = YoloNeckHead(channels, neck_widths, num_classes)
        self.register_buffer("anchors", anchors[anchors.prod(1).argsort()].clone())
        self.register_buffer("image_mean", torch.tensor(image_mean).view(3, 1, 1), False)
        self.register_buffer("image_std", torch.tensor(image_std).view(3, 1, 1), False)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.ignore_thresh = ignore_thresh
        self.candidates_per_scale = candidates_per_scale
        self._init_output_bias()

    def _init_output_bias(self) -> None:
        # objectness starts near 1 % and classes near 1/C, so the first steps are not spent
        # pushing thousands of background cells down (as in later YOLO implementations)
        for head in (self.neck.head0, self.neck.head1, self.neck.head2):
            conv = head[-1]
            bias = conv.bias.detach().view(3, -1)
            bias.zero_()
            bias[:, 4] = math.log(0.01 / 0.99)
            bias[:, 5:] = math.log(1.0 / max(self.num_classes, 2))
            conv.bias.data = bias.view(-1)

    # -------------------------------------------------------------------- helpers
    def anchors_px(self) -> Tensor:
        """The 9 anchors in input pixels, ``[9, 2]``."""
        return self.anchors * self.image_size

    def _prepare(self, images: Sequence[Tensor]) -> tuple[Tensor, list[tuple[float, float]]]:
        size = self.image_size
        batch, scales = [], []
        for img in images:
            h, w = img.shape[-2:]
            if (h, w) != (size, size):
                img = F.interpolate(
                    img[None].float(), size=(size, size), mode="bilinear", align_corners=False,
                    antialias=True,
                )[0]  # fmt: skip
            batch.append((img.float() - self.image_mean) / self.image_std)
            scales.append((w / size, h / size))
        return torch.stack(batch), scales

    def raw_outputs(self, x: Tensor) -> list[Tensor]:
        """``[B, 3, H, W, 5 + C]`` per scale (finest first), straight from the convs."""
        outs = self.neck(self.body(x))
        return [
            o.view(o.shape[0], 3, 5 + self.num_classes, *o.shape[-2:]).permute(0, 1, 3, 4, 2)
            for o in outs
        ]

    def _grid(self, h: int, w: int, device: torch.device) -> Tensor:
        ys, xs = torch.meshgrid(
            torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"
        )
        return torch.stack([xs, ys], -1).float()  # [H, W, 2] as (column, row)

    def decode_scale(self, out: Tensor, scale: int) -> Tensor:
        """xyxy boxes ``[B, 3, H, W, 4]`` (input pixels) of one scale's raw outputs."""
        h, w = out.shape[2:4]
        grid = self._grid(h, w, out.device)[None, None]
        anchors = self.anchors_px()[3 * scale : 3 * scale + 3].view(1, 3, 1, 1, 2)
        t = torch.cat([out[..., :2].sigmoid(), out[..., 2:4]], -1)
        return decode_boxes(grid, t, anchors, STRIDES[scale])

    # -------------------------------------------------------------------- forward
    def forward(
        self, images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        x, scales = self._prepare(images)
        outs = self.raw_outputs(x)
        if self.training:
            if targets is None:
                raise ValueError("YOLOv3 in training mode needs targets")
            scaled = []
            for t, (sx, sy) in zip(targets, scales):
                div = torch.tensor([sx, sy, sx, sy], device=x.device)
                scaled.append({"boxes": t["boxes"].float() / div, "labels": t["labels"]})
            return self.loss(outs, scaled)
        return self.postprocess(outs, scales)

    def build_targets(
        self, outs: Sequence[Tensor], targets: Sequence[dict[str, Tensor]]
    ) -> list[dict[str, Tensor]]:
        """Per scale: ``obj`` (assigned), ``noobj`` (pushed to 0), ``t`` [.., 4] box targets,
        ``cls`` one-hot and ``weight`` (2 - w*h) on the ``[B, 3, H, W]`` grid."""
        anchors = self.anchors_px()
        size = float(self.image_size)
        result = []
        for out in outs:
            b, a, h, w = out.shape[:4]
            result.append(
                {
                    "obj": torch.zeros(b, a, h, w, dtype=torch.bool, device=out.device),
                    "noobj": torch.ones(b, a, h, w, dtype=torch.bool, device=out.device),
                    "t": torch.zeros(b, a, h, w, 4, device=out.device),
                    "cls": torch.zeros(b, a, h, w, self.num_classes, device=out.device),
                    "weight": torch.zeros(b, a, h, w, device=out.device),
                }
            )
        with torch.no_grad():
            for s, out in enumerate(outs):  # ignore mask: predictions already on a box
                boxes = self.decode_scale(out.detach(), s)
                for i, tgt in enumerate(targets):
                    ign = ignore_mask(boxes[i].reshape(-1, 4), tgt["boxes"], self.ignore_thresh)
                    result[s]["noobj"][i] &= ~ign.view(boxes.shape[1:4])
        for i, tgt in enumerate(targets):
            gt = tgt["boxes"]
            if gt.numel() == 0:
                continue
            scale, anchor, cell = assign_anchors(gt, anchors)
            for s in range(3):
                sel = scale == s
                if not sel.any():
                    continue
                r = result[s]
                h, w = r["obj"].shape[2:4]
                a_idx = anchor[sel]
                gi = cell[sel, 0].clamp(0, w - 1)
                gj = cell[sel, 1].clamp(0, h - 1)
                _, t = encode_boxes(gt[sel], anchors[3 * s + a_idx], STRIDES[s])
                t[:, :2] = t[:, :2].clamp(0.0, 1.0)
                r["obj"][i, a_idx, gj, gi] = True
                r["noobj"][i, a_idx, gj, gi] = False
                r["t"][i, a_idx, gj, gi] = t
                onehot = F.one_hot(tgt["labels"][sel].long(), self.num_classes).float()
                r["cls"][i, a_idx, gj, gi] = onehot
                wh = (gt[sel, 2:] - gt[sel, :2]) / size
                r["weight"][i, a_idx, gj, gi] = 2.0 - wh[:, 0] * wh[:, 1]
        return result

    def loss(
        self, outs: Sequence[Tensor], targets: Sequence[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """YOLOv3's loss, summed over the grid and averaged over the batch."""
        tgts = self.build_targets(outs, targets)
        n = max(1, outs[0].shape[0])
        zero = outs[0].sum() * 0.0
        centre, size, obj, cls = zero, zero, zero, zero
        for out, r in zip(outs, tgts):
            m = r["obj"]
            logits = out[..., 4]
            obj = obj + F.binary_cross_entropy_with_logits(
                logits[m], torch.ones_like(logits[m]), reduction="sum"
            )
            obj = obj + F.binary_cross_entropy_with_logits(
                logits[r["noobj"]], torch.zeros_like(logits[r["noobj"]]), reduction="sum"
            )
            if not m.any():
                continue
            p, t, wgt = out[m], r["t"][m], r["weight"][m]
            centre = (
                centre
                + (
                    F.binary_cross_entropy_with_logits(p[:, :2], t[:, :2], reduction="none").sum(1)
                    * wgt
                ).sum()
            )
            size = size + (0.5 * ((p[:, 2:4] - t[:, 2:]) ** 2).sum(1) * wgt).sum()
            cls = cls + F.binary_cross_entropy_with_logits(p[:, 5:], r["cls"][m], reduction="sum")
        return {
            "centre": centre / n,
            "size": size / n,
            "objectness": obj / n,
            "classification": cls / n,
        }

    def postprocess(
        self, outs: Sequence[Tensor], scales: Sequence[tuple[float, float]]
    ) -> list[dict[str, Tensor]]:
        results = []
        decoded = [self.decode_scale(o, s) for s, o in enumerate(outs)]
        size = float(self.image_size)
        for i, (sx, sy) in enumerate(scales):
            boxes_all, scores_all, labels_all = [], [], []
            for out, boxes in zip(outs, decoded):
                b = boxes[i].reshape(-1, 4)
                o = out[i].reshape(-1, 5 + self.num_classes)
                scores = o[:, 4:5].sigmoid() * o[:, 5:].sigmoid()  # [K, C]
                flat = scores.flatten()
                keep = torch.nonzero(flat >= self.score_thresh).squeeze(1)
                if keep.numel() > self.candidates_per_scale:
                    keep = keep[flat[keep].topk(self.candidates_per_scale).indices]
                boxes_all.append(b[keep // self.num_classes])
                scores_all.append(flat[keep])
                labels_all.append(keep % self.num_classes)
            boxes = torch.cat(boxes_all).clamp(0.0, size)
            scores = torch.cat(scores_all)
            labels = torch.cat(labels_all)
            valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            scale = torch.tensor([sx, sy, sx, sy], device=boxes.device)
            results.append(
                {"boxes": boxes[keep] * scale, "scores": scores[keep], "labels": labels[keep]}
            )
        return results


def create_yolov3(
    num_classes: int,
    backbone: str = "darknet53",
    backbone_width: float = 1.0,
    backbone_depth: float = 1.0,
    out_indices: Sequence[int] = (3, 4, 5),
    neck_widths: Sequence[int] = (512, 256, 128),
    pretrained: bool = False,
    pretrained_file: str | None = None,
    image_size: int | None = None,
    min_image_size: int = 128,
    anchors: Any = "kmeans",
    box_sizes: Tensor | None = None,
    **kwargs: Any,
) -> YOLOv3:
    """Build YOLOv3; ``anchors`` is ``"kmeans"`` (fit to ``box_sizes``, the training boxes'
    (w, h) in fractions of their image, given by the datamodule; COCO's when there are none),
    ``"coco"``, or 9 explicit ``[w, h]`` pairs in fractions of the input side.

    The network's input side is ``image_size`` (the data's, 416 without it), raised to at least
    ``min_image_size`` and rounded up to a multiple of 32: at 64 px the stride-32 grid would be
    2 x 2, so small (demo) pictures are upsampled inside the model."""
    from leuk_lightning.models.factory import create_backbone

    size = max(int(image_size or 416), int(min_image_size))
    size = -(-size // 32) * 32
    if backbone == "darknet53":
        body = create_darknet53(
            backbone_width, backbone_depth, out_indices, pretrained, pretrained_file
        )
    else:
        body = create_backbone(
            backbone,
            pretrained=pretrained,
            pretrained_file=pretrained_file,
            features_only=True,
            out_indices=tuple(out_indices),
        )
    coco = torch.tensor(COCO_ANCHORS, dtype=torch.float32) / 416.0
    if isinstance(anchors, str):
        if anchors == "coco" or (anchors == "kmeans" and box_sizes is None):
            if anchors == "kmeans":
                log.info("YOLOv3: no training boxes given, starting from COCO's anchors")
            fitted = coco
        elif anchors == "kmeans":
            fitted = kmeans_anchors(box_sizes)
            log.info("YOLOv3 anchors (k-means, fraction of the side): %s", fitted.tolist())
        else:
            raise ConfigError(f"model.anchors={anchors!r}: use kmeans, coco or 9 [w, h] pairs")
    else:
        fitted = torch.as_tensor(anchors, dtype=torch.float32)
    return YOLOv3(body, num_classes, fitted, image_size=size, neck_widths=neck_widths, **kwargs)


# ------------------------------------------------------------------------------------------
# Darknet .weights files


def darknet_layers(model: YOLOv3) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """(conv, batch norm or None) pairs in the order Darknet stores them for ``yolov3.cfg``:
    the backbone's convolutions, then the neck and head (:meth:`YoloNeckHead.darknet_order`)."""
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d | None]] = []

    def collect(module: nn.Module) -> None:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                pairs.append((m, None))
            elif isinstance(m, nn.BatchNorm2d):
                conv, bn = pairs[-1]
                if bn is not None or conv.out_channels != m.num_features:
                    raise ConfigError(f"unexpected batch norm {m} after {conv}")
                pairs[-1] = (conv, m)

    collect(model.body)
    for part in model.neck.darknet_order():
        collect(part)
    return pairs


def load_darknet_weights(
    model: YOLOv3, path: str | Any, file_classes: int | None = 80
) -> dict[str, int]:
    """Load a Darknet ``.weights`` file (e.g. the public ``yolov3.weights``) into ``model``.

    The format: an int32 header ``major, minor, revision``, the images seen (int64 when
    ``major * 10 + minor >= 2``, else int32), then float32 values layer by layer in ``.cfg``
    order; a convolution with batch norm stores ``bn bias, bn weight, running mean, running
    var, conv weight``, one without (the output convolutions) ``conv bias, conv weight``.
    The three output convolutions hold ``3 * (5 + file_classes)`` channels (80 for COCO):
    where that differs from this model's classes they are read past and stay as initialised
    (detector-level transfer, the paper's start). Returns counts of loaded/skipped layers.
    """
    from pathlib import Path

    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"model.darknet_weights={file}: file not found")
    raw = file.read_bytes()
    if len(raw) < 16:
        raise ConfigError(f"{file} is not a Darknet .weights file (only {len(raw)} bytes)")
    major, minor, _revision = np.frombuffer(raw[:12], dtype=np.int32)
    offset = 12 + (8 if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else 4)
    if (len(raw) - offset) % 4:
        raise ConfigError(f"{file} is not a Darknet .weights file (size is not whole floats)")
    data = torch.from_numpy(np.frombuffer(raw[offset:], dtype="<f4").copy())
    pos = 0
    counts = {"loaded": 0, "skipped": 0}

    def take(n: int, what: str) -> Tensor:
        nonlocal pos
        if pos + n > data.numel():
            raise ConfigError(
                f"{file} ends early: {data.numel()} values, but {what} needs values "
                f"{pos}..{pos + n} (not a YOLOv3 of this shape: backbone, widths, classes)"
            )
        chunk = data[pos : pos + n]
        pos += n
        return chunk

    with torch.no_grad():
        for conv, bn in darknet_layers(model):
            if bn is not None:
                n = bn.num_features
                for tensor, name in (
                    (bn.bias, "bias"),
                    (bn.weight, "weight"),
                    (bn.running_mean, "mean"),
                    (bn.running_var, "var"),
                ):
                    tensor.copy_(take(n, f"batch norm {name}").view_as(tensor))
                conv.weight.copy_(take(conv.weight.numel(), "conv weight").view_as(conv.weight))
                counts["loaded"] += 1
                continue
            # an output convolution (bias, linear)
            out_file = conv.out_channels if file_classes is None else 3 * (5 + file_classes)
            n_weight = out_file * conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
            bias = take(out_file, "output bias")
            weight = take(n_weight, "output weight")
            if out_file == conv.out_channels:
                conv.bias.copy_(bias)
                conv.weight.copy_(weight.view_as(conv.weight))
                counts["loaded"] += 1
            else:
                counts["skipped"] += 1
    if pos != data.numel():
        raise ConfigError(
            f"{file} holds {data.numel() - pos} values more than this YOLOv3 takes "
            "(a different backbone, widths or number of classes)"
        )
    log.info("Loaded Darknet weights %s: %s", file, counts)
    return counts
