"""Grad-CAM heat maps (DL4ALL Fig. 6) with the ``grad-cam`` package, for timm CNNs and ViTs.

The target layer follows the architecture: for CNNs the module of the last feature stage that timm
declares in ``feature_info`` (``layer4`` of ResNet/SE-ResNeXt, the last block ``features[-1]`` of
VGG, as the grad-cam documentation recommends); for Vision Transformers the ``norm1`` of the last
block, with a reshape transform that drops the class/prefix tokens and lays the patch tokens out
on the patch grid of the actual input size (so it works at any image size the ViT accepts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from leuk_lightning.errors import ConfigError
from leuk_lightning.utils.io import atomic_write


def is_vit(net: nn.Module) -> bool:
    """A timm Vision Transformer (patch embedding + transformer blocks)."""
    return hasattr(net, "patch_embed") and hasattr(net, "blocks")


def target_layers(net: nn.Module) -> list[nn.Module]:
    """The layer(s) whose activations and gradients Grad-CAM weighs, chosen per architecture."""
    if is_vit(net):
        return [net.blocks[-1].norm1]
    info = getattr(net, "feature_info", None)
    if info:
        last = info[-1] if isinstance(info, list) else info.get_dicts()[-1]
        return [net.get_submodule(last["module"])]
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError(
            f"Grad-CAM: {type(net).__name__} has neither timm feature_info nor a Conv2d layer"
        )
    return [convs[-1]]


def vit_reshape_transform(net: nn.Module, height: int, width: int) -> Callable[[Tensor], Tensor]:
    """Tokens [B, prefix + gh*gw, C] -> feature map [B, C, gh, gw] for an input of H x W."""
    patch = net.patch_embed.patch_size
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    gh, gw = height // ph, width // pw
    prefix = int(getattr(net, "num_prefix_tokens", 1))

    def reshape(tokens: Tensor) -> Tensor:
        x = tokens[:, prefix:, :]
        if x.shape[1] != gh * gw:
            raise ConfigError(
                f"Grad-CAM ViT reshape: {x.shape[1]} patch tokens for a {gh}x{gw} grid "
                f"({height}x{width} input, patch {ph}x{pw})"
            )
        return x.reshape(x.shape[0], gh, gw, x.shape[2]).permute(0, 3, 1, 2)

    return reshape


def gradcam_maps(
    net: nn.Module, images: Tensor, targets: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps ``[B, H, W]`` in [0, 1] of normalised ``images`` and the predicted classes.

    ``targets``: the class explained per image (None: the predicted class). Works inside
    Lightning's test loop too (inference mode is lifted locally).
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    was_training = net.training
    height, width = images.shape[-2:]
    reshape = vit_reshape_transform(net, height, width) if is_vit(net) else None
    with torch.inference_mode(False), torch.enable_grad():
        x = images.detach().clone().float()
        with torch.no_grad():
            preds = net.eval()(x).argmax(dim=-1).cpu().numpy()
        cam_targets = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
        with GradCAM(model=net, target_layers=target_layers(net), reshape_transform=reshape) as cam:
            maps = cam(input_tensor=x, targets=cam_targets)
    net.train(was_training)
    return np.asarray(maps, dtype=np.float32), preds


def denormalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised model inputs back to displayable RGB ``[B, H, W, 3]`` floats in [0, 1]."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    rgb = (images.detach().float() * s + m).clamp(0, 1)
    return rgb.permute(0, 2, 3, 1).cpu().numpy()


def overlays(rgb: np.ndarray, maps: np.ndarray) -> list[np.ndarray]:
    """Heat maps blended on the images (uint8 ``[H, W, 3]`` each, same size as the input)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return [show_cam_on_image(img, cam, use_rgb=True) for img, cam in zip(rgb, maps)]


def _save_png(path: Path, array: np.ndarray) -> Path:
    return atomic_write(path, lambda f: Image.fromarray(array).save(f, format="PNG"))


def save_gradcam(
    out_dir: str | Path,
    rgb: np.ndarray,
    maps: np.ndarray,
    labels: Sequence[int],
    preds: Sequence[int],
    class_names: Sequence[str],
    names: Sequence[str] | None = None,
) -> dict[str, object]:
    """Write one overlay PNG per image (input resolution) and a grid ``gradcam.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    blended = overlays(rgb, maps)
    files = []
    for i, img in enumerate(blended):
        stem = Path(names[i]).stem if names else f"{i:03d}"
        files.append(_save_png(out / "gradcam" / f"{i:03d}_{stem}.png", img))
    n = len(blended)
    fig, axes = plt.subplots(2, n, figsize=(2 * n, 4.4), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(rgb[i])
        axes[0, i].set_title(f"true: {class_names[int(labels[i])]}", fontsize=8)
        axes[1, i].imshow(blended[i])
        axes[1, i].set_title(f"pred: {class_names[int(preds[i])]}", fontsize=8)
        for ax in axes[:, i]:
            ax.axis("off")
    fig.suptitle("Grad-CAM (test images)", fontsize=10)
    grid = atomic_write(out / "gradcam.png", lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return {"grid": grid, "images": files}
