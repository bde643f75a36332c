"""Parameter groups with per-stage learning-rate multipliers, selected by parameter name.

Prellberg & Kramer (ISBI 2019, Sec. 4.1) fine-tune an ImageNet SE-ResNeXt50 with an effective
learning rate of 1e-6 for the stem and the first stage, 1e-4 for stages 2-4 and 1e-2 for the
final fully connected layer (times a base rate that decays). Groups are described in config as
``{group name: {pattern: <regex>, lr_mult: <float>}}``; a parameter belongs to the FIRST group
(in config order) whose regex matches its name (``re.search``), so every parameter lands in
exactly one group, and a parameter that no group matches is an error naming it.

Patterns for timm backbones (names as ``model.named_parameters()`` gives them):

- ResNet family (``resnet*``, ``seresnext*``, ``test_resnet``): stem ``^(conv1|bn1)\\.``,
  stages ``^layer[1-4]\\.``, head ``^fc\\.``.
- ViT (``vit_*``, ``test_vit``): stem ``^(cls_token|pos_embed|reg_token|patch_embed)``,
  blocks ``^blocks\\.(\\d+)\\.``, head ``^(norm|fc_norm|head)``.
- Anything else: :func:`stage_prefixes` lists the top-level names to write patterns for; timm's
  ``model.group_matcher()`` gives the same stem/blocks grouping as regexes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import nn

from leuk_lightning.errors import ConfigError

#: The paper's multipliers for timm ResNet-style models (``seresnext50_32x4d``).
PRELLBERG_RESNET_GROUPS: dict[str, dict[str, Any]] = {
    "stem_stage1": {"pattern": r"^(conv1|bn1|layer1)\.", "lr_mult": 1e-6},
    "stages2_4": {"pattern": r"^layer[234]\.", "lr_mult": 1e-4},
    "head": {"pattern": r"^fc\.", "lr_mult": 1e-2},
}


def stage_prefixes(model: nn.Module) -> list[str]:
    """Top-level module names that own parameters, in order (what patterns refer to)."""
    seen: list[str] = []
    for name, _ in model.named_parameters():
        head = name.split(".", 1)[0]
        if head not in seen:
            seen.append(head)
    return seen


def _parse_groups(groups: Mapping[str, Any]) -> list[tuple[str, re.Pattern[str], float]]:
    parsed = []
    for name, spec in groups.items():
        if not isinstance(spec, Mapping) or "pattern" not in spec or "lr_mult" not in spec:
            raise ConfigError(
                f"regime.lr_groups.{name} must be {{pattern: <regex>, lr_mult: <float>}}, "
                f"got {spec!r}"
            )
        try:
            pattern = re.compile(str(spec["pattern"]))
        except re.error as exc:
            raise ConfigError(
                f"regime.lr_groups.{name}.pattern={spec['pattern']!r} is not a regex: {exc}"
            ) from exc
        parsed.append((str(name), pattern, float(spec["lr_mult"])))
    if not parsed:
        raise ConfigError("regime.lr_groups is empty; give at least one group or set it null")
    return parsed


def build_param_groups(
    model: nn.Module, groups: Mapping[str, Any], base_lr: float
) -> list[dict[str, Any]]:
    """Optimizer parameter groups ``{"name", "params", "lr": base_lr * lr_mult, "lr_mult"}``.

    Only trainable parameters are grouped. Raises ConfigError naming the parameters that no
    pattern matches (and the model's top-level names to write a pattern for) and the groups
    that match nothing (a typo would otherwise silently train with the wrong rates).
    """
    parsed = _parse_groups(groups)
    members: dict[str, list[nn.Parameter]] = {name: [] for name, _, _ in parsed}
    unmatched: list[str] = []
    for pname, param in model.named_parameters():
        if not param.requires_grad:
            continue
        for gname, pattern, _ in parsed:
            if pattern.search(pname):
                members[gname].append(param)
                break
        else:
            unmatched.append(pname)
    if unmatched:
        shown = ", ".join(unmatched[:8]) + (
            f" (+{len(unmatched) - 8} more)" if len(unmatched) > 8 else ""
        )
        raise ConfigError(
            f"regime.lr_groups: {len(unmatched)} parameter(s) of {type(model).__name__} match no "
            f"group pattern: {shown}. Top-level names of this model: "
            f"{', '.join(stage_prefixes(model))}; add a group whose pattern matches them"
        )
    empty = [name for name, params in members.items() if not params]
    if empty:
        raise ConfigError(
            f"regime.lr_groups: group(s) {empty} match no parameter of {type(model).__name__} "
            f"(top-level names: {', '.join(stage_prefixes(model))}); fix or remove the pattern"
        )
    return [
        {"name": name, "params": members[name], "lr": base_lr * mult, "lr_mult": mult}
        for name, _, mult in parsed
    ]
