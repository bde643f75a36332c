"""Apply a trained classifier to new images and write one CSV row per image.

    leuk-lightning predict ckpt_path=<run>/checkpoints/epoch_004.ckpt \
        input=<folder | file list .txt | image> output=preds.csv [tta=rot8|d4] [batch_size=32] \
        [config=<run>/.hydra/config.yaml] [device=cpu|cuda]

The network is rebuilt from the run's config (``<run dir>/.hydra/config.yaml``, the ``model``
node, with pretrained weights off) and the checkpoint's hyper-parameters (classes, single-logit
head), then the checkpoint's weights are loaded. Preprocessing is the evaluation pipeline of the
run: square resize to ``data.image_size``, the eval centre crop, and the normalisation
statistics of the run's training split (stored in the checkpoint by the datamodule).

Columns: ``path``, ``subject`` (parsed from C-NMC names ``UID_<subject>_...``, else empty),
``pred_class``, ``prob_<class 1>`` (binary tasks: the probability of the positive class, e.g.
``prob_all`` for C-NMC) or ``prob_<class>`` for every class (multi-class), ``error``. An image
that cannot be decoded gets a row with its error and empty predictions; the others go on. The
CSV is written atomically. A folder is searched recursively for image files; a ``.txt`` lists
one path per line (relative to the list's folder; blank lines and ``#`` comments skipped).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor, nn

import leuk_lightning  # noqa: F401  (registers the config resolvers)
from leuk_lightning.data.datasets._common import decode_image, natural_key
from leuk_lightning.data.datasets.cnmc import CNMC_NAME_PATTERN
from leuk_lightning.data.transforms import Normalize, center_crop, crop_size
from leuk_lightning.errors import ConfigError, DataError
from leuk_lightning.evaluation.tta import TTA_MODES, TTAWrapper
from leuk_lightning.utils.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"})


# ------------------------------------------------------------------------------ the model
class InferenceModel(nn.Module):
    """Images in [0, 1] (float) or uint8, ``[B, 3, S, S]`` at the run's ``image_size`` ->
    class probabilities ``[B, K]``: eval centre crop, normalisation, network (optionally
    under TTA), sigmoid/softmax. The exported ONNX graph is this module."""

    def __init__(
        self,
        net: nn.Module,
        mean: list[float],
        std: list[float],
        binary_logit: bool,
        multilabel: bool,
        crop: int | None = None,
        crop_fraction: float | None = None,
        tta: str | None = None,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.crop, self.crop_fraction = crop, crop_fraction
        self.binary_logit, self.multilabel = binary_logit, multilabel
        fill = (-torch.tensor(mean) / torch.tensor(std)).tolist()
        self.net = TTAWrapper(net, tta, fill) if tta else net

    def forward(self, images: Tensor) -> Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images
        if self.crop is not None:
            x = center_crop(x, self.crop)
        elif self.crop_fraction is not None:
            x = center_crop(x, crop_size(x, self.crop_fraction))
        logits = self.net(self.normalize(x))
        if self.binary_logit:
            p1 = logits[:, 0].sigmoid()
            return torch.stack([1 - p1, p1], dim=1)
        return logits.sigmoid() if self.multilabel else logits.softmax(dim=1)


@dataclass
class LoadedClassifier:
    """A trained classifier with what is needed to preprocess images like its evaluation."""

    net: nn.Module
    class_names: list[str]
    image_size: int | None
    mean: list[float]
    std: list[float]
    binary_logit: bool = False
    multilabel: bool = False
    crop: int | None = None
    crop_fraction: float | None = None
    run_dir: Path | None = None
    config: DictConfig | None = field(default=None, repr=False)

    def inference_model(self, tta: str | None = None) -> InferenceModel:
        if tta is not None and tta not in TTA_MODES:
            raise ConfigError(f"tta={tta!r} is not known; use null or one of {TTA_MODES}")
        crop, fraction = self.crop, self.crop_fraction
        if crop is None and fraction is not None and self.image_size is not None:
            crop, fraction = max(1, round(fraction * self.image_size)), None  # static for ONNX
        return InferenceModel(
            self.net, self.mean, self.std, self.binary_logit, self.multilabel, crop, fraction, tta
        ).eval()


def run_dir_of(ckpt_path: Path) -> Path:
    """``<run>/checkpoints/x.ckpt`` -> ``<run>``; a checkpoint elsewhere -> its folder."""
    parent = ckpt_path.parent
    return parent.parent if parent.name == "checkpoints" else parent


def _datamodule_state(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    for value in ckpt.values():
        if isinstance(value, dict) and {"mean", "std", "classes"} <= set(value):
            return value
    return None


def load_classifier(
    ckpt_path: str | os.PathLike[str], config_path: str | os.PathLike[str] | None = None
) -> LoadedClassifier:
    """Rebuild the network of a training run from its config and load the checkpoint."""
    ckpt_file = Path(ckpt_path).expanduser()
    if not ckpt_file.is_file():
        raise ConfigError(f"ckpt_path={ckpt_file}: checkpoint file not found")
    run_dir = run_dir_of(ckpt_file)
    cfg_file = Path(config_path) if config_path else run_dir / ".hydra" / "config.yaml"
    if not cfg_file.is_file():
        raise ConfigError(
            f"run config {cfg_file} not found; pass config=<run dir>/.hydra/config.yaml of the "
            "run that wrote the checkpoint"
        )
    ckpt = load_checkpoint(ckpt_file, what="ckpt_path")
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise DataError(f"{ckpt_file} is not a Lightning checkpoint (no state_dict)")
    hparams = dict(ckpt.get("hyper_parameters") or {})
    dm_state = _datamodule_state(ckpt)
    if dm_state is None:
        raise DataError(
            f"checkpoint {ckpt_file} holds no preprocessing state (normalisation statistics); "
            "it was written by an older version: retrain, or test it with the app"
        )
    cfg = OmegaConf.load(cfg_file)
    if "model" not in cfg:
        raise ConfigError(f"run config {cfg_file} has no 'model' node")
    model_cfg = cfg.model
    with open_dict(model_cfg):  # the checkpoint supplies every weight
        for key, value in (("pretrained", False), ("pretrained_file", None), ("init_from", None)):
            if key in model_cfg:
                model_cfg[key] = value
    classes = list(dm_state["classes"])
    num_classes = int(hparams.get("num_classes", len(classes)))
    try:
        net = hydra.utils.instantiate(model_cfg, num_classes=num_classes)
    except Exception as exc:
        raise ConfigError(f"cannot rebuild the model of {cfg_file}: {exc}") from exc
    prefix = "net."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(
            f"checkpoint {ckpt_file} does not fit the model of {cfg_file}: {exc}"
        ) from exc
    net.eval()
    return LoadedClassifier(
        net=net,
        class_names=classes,
        image_size=dm_state.get("image_size"),
        mean=list(dm_state["mean"]),
        std=list(dm_state["std"]),
        binary_logit=bool(hparams.get("binary_logit", False)),
        multilabel=bool(hparams.get("multilabel", False)),
        crop=dm_state.get("center_crop"),
        crop_fraction=dm_state.get("center_crop_fraction"),
        run_dir=run_dir,
        config=cfg,
    )


# ------------------------------------------------------------------------------ inputs
def list_inputs(source: str | os.PathLike[str]) -> list[str]:
    """Image paths of a folder (recursive), a ``.txt`` file list, or one image."""
    path = Path(source).expanduser()
    if path.is_dir():
        found = [
            str(Path(dirpath) / name)
            for dirpath, dirnames, names in os.walk(path)
            for name in names
            if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".")
        ]
        if not found:
            raise DataError(f"input={path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return sorted(found, key=natural_key)
    if not path.is_file():
        raise ConfigError(f"input={path}: no such file or folder")
    if path.suffix.lower() == ".txt":
        items = []
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            item = Path(line).expanduser()
            items.append(str(item if item.is_absolute() else path.parent / item))
        if not items:
            raise DataError(f"input={path}: the file list is empty")
        return items
    return [str(path)]


def subject_of(path: str) -> str:
    """C-NMC subject id of a training-style file name, else ``""``."""
    m = CNMC_NAME_PATTERN.match(Path(path).name)
    return m.group(1) if m else ""


# ------------------------------------------------------------------------------ prediction
def predict(
    classifier: LoadedClassifier,
    paths: list[str],
    tta: str | None = None,
    batch_size: int = 32,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """One dict per path: ``path``, ``subject``, ``pred_class``, ``probs`` (list), ``error``."""
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be positive")
    model = classifier.inference_model(tta).to(device)
    names = classifier.class_names
    rows: list[dict[str, Any]] = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        images: list[Tensor] = []
        chunk_rows = []
        for p in chunk:
            row: dict[str, Any] = {"path": p, "subject": subject_of(p), "error": ""}
            try:
                images.append(decode_image(p, classifier.image_size))
            except DataError as exc:
                row["error"] = str(exc)
            chunk_rows.append(row)
        if images:
            sizes = {tuple(im.shape[-2:]) for im in images}
            if len(sizes) > 1:  # a run without resizing (image_size=null) and mixed sizes
                raise DataError(
                    f"images of different sizes {sorted(sizes)} and the run has no "
                    "data.image_size to resize them to"
                )
            with torch.inference_mode():
                probs = model(torch.stack(images).to(device)).float().cpu()
            good = iter(range(len(images)))
            for row in chunk_rows:
                if row["error"]:
                    continue
                p = probs[next(good)]
                if classifier.multilabel:
                    row["pred_class"] = ";".join(n for n, v in zip(names, p.tolist()) if v >= 0.5)
                elif len(names) == 2:
                    row["pred_class"] = names[int(p[1] >= 0.5)]
                else:
                    row["pred_class"] = names[int(p.argmax())]
                row["probs"] = p.tolist()
        rows += chunk_rows
    return rows


def rows_to_csv(rows: list[dict[str, Any]], class_names: list[str], binary: bool) -> str:
    """CSV text: path, subject, pred_class, prob column(s), error."""
    prob_cols = [f"prob_{class_names[1]}"] if binary else [f"prob_{n}" for n in class_names]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "subject", "pred_class", *prob_cols, "error"])
    for r in rows:
        probs = r.get("probs")
        if probs is None:
            values = [""] * len(prob_cols)
        else:
            values = [f"{probs[1]:.6f}"] if binary else [f"{v:.6f}" for v in probs]
        writer.writerow([r["path"], r["subject"], r.get("pred_class", ""), *values, r["error"]])
    return buf.getvalue()
