"""Model speed options from ``extras`` (``channels_last``, ``compile``), applied by ``run.build``.

* ``extras.channels_last: true`` stores the module's 4-D weights and the image batches
  (after the on-device augmentation) in NHWC layout, the fast layout of cuDNN convolutions with
  tensor cores (``bf16-mixed``/``16-mixed``).
* ``extras.compile: true | false | auto`` compiles the network's forward with ``torch.compile``
  (``nn.Module.compile``: in place, so parameter names and checkpoints do not change). ``auto``
  compiles when the trainer runs on a CUDA GPU and never on CPU, where compile time outweighs
  the gain for the small models and runs of this project. ``extras.compile_kwargs`` go to
  ``torch.compile`` (``mode``, ``backend``, ``dynamic``, ...).

Both only touch the network and the batches, so they work the same with automatic and manual
optimization (``self.optimizers()``, ``self.manual_backward``, ``self.clip_gradients``).
Mixed precision is the trainer's ``precision`` (``trainer.precision=bf16-mixed``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning import LightningModule
from omegaconf import DictConfig, OmegaConf

from leuk_lightning.errors import ConfigError

log = logging.getLogger(__name__)

COMPILE_CHOICES = (True, False, "auto")


def wants_compile(setting: Any, accelerator: str | None) -> bool:
    """Resolve ``extras.compile`` (true/false/auto) for the trainer's accelerator."""
    if setting not in COMPILE_CHOICES:
        raise ConfigError(f"extras.compile={setting!r} is not known; use true, false or auto")
    if setting == "auto":
        return torch.cuda.is_available() and accelerator in ("gpu", "cuda", "auto", None)
    return bool(setting)


def apply_speed_options(
    module: LightningModule,
    datamodule: Any,
    extras: DictConfig | dict[str, Any] | None,
    trainer_cfg: DictConfig | dict[str, Any] | None = None,
) -> None:
    """Apply ``extras.channels_last`` and ``extras.compile`` to ``module`` (and the batches)."""
    extras = extras or {}
    if extras.get("channels_last", False):
        module.to(memory_format=torch.channels_last)
        if hasattr(datamodule, "memory_format"):
            datamodule.memory_format = torch.channels_last
        else:
            log.warning(
                "extras.channels_last: %s does not convert its batches; only the weights are NHWC",
                type(datamodule).__name__,
            )
    accelerator = (trainer_cfg or {}).get("accelerator")
    if wants_compile(extras.get("compile", False), accelerator):
        kwargs = extras.get("compile_kwargs") or {}
        if OmegaConf.is_config(kwargs):
            kwargs = OmegaConf.to_container(kwargs, resolve=True)
        net = getattr(module, "net", None)
        target = net if isinstance(net, torch.nn.Module) else module
        target.compile(**kwargs)
        log.info("torch.compile %s (%s)", type(target).__name__, kwargs or "default settings")
