"""One factory for every network: any timm model name, weights from LOCAL files only.

No weights are downloaded at run time: ``pretrained=True`` needs ``pretrained_file`` (a timm
``.safetensors``/``.pth`` checkpoint on disk), handed to timm through
``pretrained_cfg_overlay=dict(file=...)`` so timm's own adaptation (classifier removal, input
channels, position embeddings) applies. ``init_from`` loads the backbone of an earlier stage's
checkpoint (e.g. the HistoCNN trained on ADP) and drops its head.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from leuk_lightning.errors import ConfigError
from leuk_lightning.utils.checkpoint import load_checkpoint

log = logging.getLogger(__name__)


def _check_weights_file(name: str, pretrained_file: str | None) -> str:
    if not pretrained_file:
        raise ConfigError(
            f"model.pretrained=true for '{name}' but model.pretrained_file is not set: put "
            f"the timm weights of '{name}' on disk and set model.pretrained_file=<path>, "
            "or set model.pretrained=false to start from random weights"
        )
    path = Path(pretrained_file).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"pretrained weights file not found: {path} (model.pretrained_file). Download the timm "
            f"weights of '{name}' to that path (or set paths.weights_dir / model.pretrained_file), "
            "or set model.pretrained=false to start from random weights"
        )
    return str(path)


def create_backbone(
    name: str,
    pretrained: bool = False,
    pretrained_file: str | None = None,
    num_classes: int = 0,
    **timm_kwargs: Any,
) -> nn.Module:
    """Create a timm model; ``num_classes=0`` leaves it headless (pooled features out)."""
    kwargs: dict[str, Any] = dict(timm_kwargs)
    if pretrained:
        kwargs["pretrained_cfg_overlay"] = dict(file=_check_weights_file(name, pretrained_file))
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ConfigError(f"model.name='{name}' is not a timm model: {err}") from err
        raise


def _head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Parameter-name prefixes of the classifier head, as timm's pretrained config names them."""
    classifier = (
        model.pretrained_cfg.get("classifier", "fc") if hasattr(model, "pretrained_cfg") else "fc"
    )
    names = classifier if isinstance(classifier, list | tuple) else [classifier]
    return tuple(f"{n}." for n in names)


def _checkpoint_state_dict(path: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(path, what="model.init_from")
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    if not isinstance(state, dict):
        raise ConfigError(f"model.init_from={path} is not a checkpoint with a state_dict")
    # a LightningModule stores the network under `net.` (classifier) or `net.backbone.` (multi-task)
    for prefix in ("net.backbone.", "net."):
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def load_backbone_weights(model: nn.Module, checkpoint: str | Path) -> list[str]:
    """Load every backbone weight of ``checkpoint`` into ``model``, dropping the old head.

    Returns the names left at their fresh initialisation (the new head). Any other mismatch is an
    error: silently training from random weights would invalidate a transfer-learning result.
    """
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"model.init_from={path}: file not found (a checkpoint of an earlier stage is expected)"
        )
    heads = _head_prefixes(model)
    state = {k: v for k, v in _checkpoint_state_dict(path).items() if not k.startswith(heads)}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(heads)]
    if missing or result.unexpected_keys:
        raise ConfigError(
            f"model.init_from={path} does not match model '{type(model).__name__}': "
            f"missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}; was the checkpoint "
            "trained with the same model.name?"
        )
    log.info("Loaded backbone weights from %s (head re-initialised)", path)
    return list(result.missing_keys)


def create_classifier(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    pretrained_file: str | None = None,
    init_from: str | None = None,
    drop_rate: float = 0.0,
    num_outputs: int | None = None,
    **timm_kwargs: Any,
) -> nn.Module:
    """A timm classifier with ``num_classes`` outputs (``num_outputs`` overrides the count,
    e.g. 1 for a single-logit binary head trained with BCE).

    ``init_from`` takes precedence over ``pretrained``: the backbone comes from that checkpoint.
    """
    if num_outputs is not None and num_outputs < 1:
        raise ConfigError(f"model.num_outputs={num_outputs} must be a positive number or null")
    model = create_backbone(
        name,
        pretrained=pretrained and not init_from,
        pretrained_file=pretrained_file,
        num_classes=num_outputs or num_classes,
        drop_rate=drop_rate,
        **timm_kwargs,
    )
    if init_from:
        load_backbone_weights(model, init_from)
    return model
