"""``leuk-lightning explain ckpt_path=<run>/checkpoints/x.ckpt method=gradcam|tsne``

Explains a trained classifier after the fact: rebuilds the run's datamodule and network from the
run's own ``.hydra/config.yaml`` (the run directory is found above the checkpoint), reuses the
run's saved ``split.json`` so the test set is exactly the one the run was tested on, loads the
checkpoint's weights and writes PNGs into the run directory (``gradcam.png`` + ``gradcam/*.png``,
``tsne.png``). Options (Hydra-style ``key=value``): ``method`` (gradcam | tsne | all),
``n_images`` (8), ``split`` (test), ``out_dir`` (the run dir), ``seed`` (t-SNE, 0); any other
``key=value`` overrides the run's config (e.g. ``paths.data_dir=/data`` when the data moved).

The same functions back the optional end-of-test callbacks (``callbacks=explain``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from leuk_lightning.errors import ConfigError
from leuk_lightning.utils.checkpoint import load_checkpoint
from leuk_lightning.utils.runs import find_run_dir, load_run_config

log = logging.getLogger("leuk_lightning.evaluation.explain")

METHODS = ("gradcam", "tsne", "all")


# ------------------------------------------------------------------------------------------
# shared by the CLI and the callbacks


def pick_images(labels: Sequence[int], n: int) -> list[int]:
    """Up to ``n`` positions, classes taken in turn (first images of each class, in order)."""
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(int(v) for v in labels):
        by_class.setdefault(y, []).append(i)
    queues = [by_class[c] for c in sorted(by_class)]
    out: list[int] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def _subset_labels(datamodule: Any, split: str) -> list[int]:
    subset = datamodule.subsets[split]
    labels = datamodule.dataset.labels
    return [int(labels[i]) for i in subset.indices]


def _batch_transform(datamodule: Any, device: torch.device):
    bt = datamodule.batch_transform.to(device)
    return lambda x: bt(x, train=False)


def explain_gradcam(
    net: nn.Module, datamodule: Any, out_dir: str | Path, n_images: int = 8, split: str = "test"
) -> dict[str, Any]:
    """Grad-CAM of ``n_images`` images of ``split`` (classes in turn) -> PNGs in ``out_dir``."""
    from leuk_lightning.evaluation import gradcam as G

    if split not in datamodule.subsets:
        raise ConfigError(f"explain: split={split!r} not in {sorted(datamodule.subsets)}")
    subset = datamodule.subsets[split]
    chosen = pick_images(_subset_labels(datamodule, split), n_images)
    if not chosen:
        raise ConfigError(f"explain: the {split} subset is empty")
    samples = [subset[i] for i in chosen]
    device = next(net.parameters()).device
    raw = torch.stack([s["image"] for s in samples]).to(device)
    x = _batch_transform(datamodule, device)(raw)
    labels = [int(s["label"]) for s in samples]
    maps, preds = G.gradcam_maps(net, x)
    rgb = G.denormalize(x, datamodule.mean, datamodule.std)
    names = [str(s.get("path", i)) for i, s in enumerate(samples)]
    files = G.save_gradcam(out_dir, rgb, maps, labels, preds, datamodule.dataset.classes, names)
    return {"maps": maps, "preds": preds, "labels": labels, **files}


def explain_tsne(
    net: nn.Module, datamodule: Any, out_dir: str | Path, split: str = "test", seed: int = 0
) -> dict[str, Any]:
    """t-SNE of the pre-head features of the whole ``split`` subset -> ``tsne.png``."""
    from leuk_lightning.data.datamodules.classification import make_loader
    from leuk_lightning.evaluation import tsne as TS

    device = next(net.parameters()).device
    loader = make_loader(datamodule.subsets[split], datamodule.eval_batch_size, False, 0)
    feats, labels = TS.extract_features(net, loader, _batch_transform(datamodule, device), device)
    emb = TS.tsne_embedding(feats, seed=seed)
    path = TS.save_tsne_plot(
        Path(out_dir) / "tsne.png",
        emb,
        labels,
        list(datamodule.dataset.classes),
        title=f"t-SNE of pre-head features ({split} set, n={len(labels)})",
    )
    return {"embedding": emb, "labels": labels, "features": feats, "path": path}


def log_images(loggers: Sequence[Any], key: str, paths: Sequence[str | Path]) -> None:
    """Send PNGs to every WandbLogger among ``loggers`` (no-op without W&B)."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key, [str(p) for p in paths])


# ------------------------------------------------------------------------------------------
# CLI: rebuild a run from its directory (utils/runs.py)


def load_net(cfg: DictConfig, ckpt_path: str | Path, datamodule: Any) -> nn.Module:
    """The run's network with the checkpoint's ``net.*`` weights (no pretrained file needed)."""
    import hydra

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg.update(pretrained=False, init_from=None)
    net = hydra.utils.instantiate(model_cfg, **datamodule.model_kwargs())
    state = load_checkpoint(ckpt_path, what="ckpt_path")
    weights = state.get("state_dict", state) if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise ConfigError(f"{ckpt_path}: not a checkpoint of this project (no state_dict)")
    own = {k[len("net.") :]: v for k, v in weights.items() if k.startswith("net.")}
    if not own:
        raise ConfigError(f"{ckpt_path}: no 'net.*' weights (not a ClassifierModule checkpoint?)")
    net.load_state_dict(own)
    return net.eval()


def rebuild(cfg: DictConfig, run_dir: Path) -> Any:
    """The run's datamodule on the run's saved split (no files written)."""
    import hydra

    if cfg.get("demo_data"):
        from leuk_lightning.data.synthetic import ensure_demo_data

        ensure_demo_data(Path(cfg.paths.data_dir), variation=cfg.get("demo_variation"))
    split_file = run_dir / "split.json"
    kwargs: dict[str, Any] = {"output_dir": None}
    if split_file.is_file():
        kwargs["split_file"] = str(split_file)
    else:
        log.warning("%s has no split.json: drawing the split from the config again", run_dir)
    dm = hydra.utils.instantiate(cfg.data, **kwargs)
    dm.setup()
    return dm


def explain(
    ckpt_path: str | Path,
    method: str = "gradcam",
    n_images: int = 8,
    split: str = "test",
    out_dir: str | Path | None = None,
    seed: int = 0,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Rebuild the run of ``ckpt_path`` (with config ``overrides``) and run ``method``."""
    if method not in METHODS:
        raise ConfigError(f"explain: method={method!r}; use one of {METHODS}")
    run_dir = find_run_dir(ckpt_path)
    cfg = load_run_config(run_dir, overrides)
    load_checkpoint(ckpt_path, what="ckpt_path")  # not a checkpoint / unsafe: before any data
    target = str(OmegaConf.select(cfg, "model._target_", default="") or "")
    if "detector" in target.lower():
        raise ConfigError(
            f"ckpt_path={ckpt_path} is a detector checkpoint ({target}); explain works on "
            "classifiers (Grad-CAM, t-SNE): use leuk-lightning detect for detectors"
        )
    dm = rebuild(cfg, run_dir)
    net = load_net(cfg, ckpt_path, dm)
    out = Path(out_dir or run_dir)
    result: dict[str, Any] = {"run_dir": run_dir}
    if method in ("gradcam", "all"):
        result["gradcam"] = explain_gradcam(net, dm, out, int(n_images), split)
        log.info("Grad-CAM: %s", result["gradcam"]["grid"])
    if method in ("tsne", "all"):
        result["tsne"] = explain_tsne(net, dm, out, split, int(seed))
        log.info("t-SNE: %s", result["tsne"]["path"])
    return result
