"""Cell detection on images, folders, video files and cameras -> CSV (the paper's deployment).

    leuk-lightning detect ckpt_path=<run>/checkpoints/epoch_011.ckpt \\
        input=<image | folder | video file | camera index> output=detections.csv \\
        [annotate=true] [annotate_dir=...] [score_threshold=0.5] [batch_size=8] \\
        [device=auto|cpu|cuda] [max_frames=N]

The detector is rebuilt from the run's ``.hydra/config.yaml`` (found next to the checkpoint
or above it; ``debug=...`` re-applied as the entry point does) with the checkpoint's weights
and class names; pictures are resized as in
training (``data.image_size``) and boxes are mapped back to the input's pixels.

The CSV has one row per detection: ``source`` (file, or ``camera:<i>``), ``frame`` (0-based
index for videos and cameras, empty for still images), ``class``, ``score``, ``xmin``,
``ymin``, ``xmax``, ``ymax`` (pixels, xyxy), ``error``. Every processed image or frame gets at
least one row: one without detections has a row with empty ``class``..``ymax``, so "nothing
found" differs from "not processed". A file that cannot be read (a corrupt image, a video
OpenCV cannot open) gets one row with the reason in ``error`` and the run goes on with the
other inputs (``detect`` returns ``errors``, the CLI then exits with status 1). The CSV is
written to a temporary file while frames
stream through and renamed into place at the end, so a crash never leaves half a table.
Videos are read frame by frame with OpenCV (``cv2.VideoCapture``), never whole. A camera runs
until ``max_frames`` or Ctrl-C. ``annotate=true`` also writes annotated pictures
(``<stem>_det.png``) and videos (``<stem>_det.avi``, MJPG) into ``annotate_dir`` (default:
``<output stem>_annotated/`` beside the CSV).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torchvision.transforms.v2 import functional as tvf

from leuk_lightning.data.datasets._common import is_ignored_name, natural_key
from leuk_lightning.errors import ConfigError, DataError
from leuk_lightning.utils.checkpoint import load_checkpoint
from leuk_lightning.utils.io import atomic_write
from leuk_lightning.utils.runs import find_run_dir, load_run_config

log = logging.getLogger(__name__)

COLUMNS = ("source", "frame", "class", "score", "xmin", "ymin", "xmax", "ymax", "error")
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTS = {".avi", ".mp4", ".mov", ".mkv", ".mpg", ".mpeg", ".wmv", ".m4v", ".webm"}
DEFAULTS: dict[str, Any] = {
    "ckpt_path": None,
    "input": None,
    "output": "detections.csv",
    "annotate": False,
    "annotate_dir": None,
    "score_threshold": 0.5,
    "batch_size": 8,
    "device": "auto",
    "max_frames": None,
}
_PALETTE = [(60, 200, 60), (230, 80, 40), (40, 160, 240), (200, 60, 200), (240, 200, 40)]


# ------------------------------------------------------------------------------------------
# configuration and model


@dataclass
class LoadedDetector:
    """A detector ready for inference with what is needed to feed it and name its classes."""

    net: torch.nn.Module
    class_names: list[str]
    image_size: int | None
    device: torch.device


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device={name!r} is not a torch device: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available; use device=cpu")
    return device


def _model_config(run_cfg: DictConfig) -> dict[str, Any]:
    """The run's ``model`` config with each value resolved in the whole run config where it
    can be (e.g. ``${leuk.demo:...}`` needs the root), left as written where it cannot."""
    raw = OmegaConf.to_container(run_cfg.model, resolve=False)
    result: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            node = OmegaConf.select(run_cfg, f"model.{key}", throw_on_resolution_failure=True)
            if OmegaConf.is_config(node):
                node = OmegaConf.to_container(node, resolve=True)
            result[key] = node
        except Exception:  # noqa: BLE001 - an interpolation that only resolves inside Hydra
            result[key] = value
    return result


def load_detector(ckpt_path: str | os.PathLike[str], device: str = "auto") -> LoadedDetector:
    """Rebuild the run's detector (its ``model`` config, no pretrained file) with the
    checkpoint's weights; class names come from the checkpoint's hyper-parameters."""
    ckpt_file = Path(ckpt_path).expanduser()
    if not ckpt_file.is_file():
        raise ConfigError(f"ckpt_path={ckpt_file}: checkpoint file not found")
    run_cfg = load_run_config(find_run_dir(ckpt_file))
    ckpt = load_checkpoint(ckpt_file, what="ckpt_path")
    hparams = ckpt.get("hyper_parameters") or {}
    class_names = list(hparams.get("class_names") or [])
    state = {k[4:]: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith("net.")}
    if not class_names or not state:
        raise ConfigError(
            f"ckpt_path={ckpt_file} is not a detector checkpoint of this project "
            "(no class_names / net.* weights)"
        )
    model_cfg = _model_config(run_cfg)
    if model_cfg.get("_target_") != "leuk_lightning.models.create_detector":
        raise ConfigError(f"the run of {ckpt_file} did not train a detector ({model_cfg})")
    model_cfg.update(pretrained=False, pretrained_file=None, weights_file=None)
    if model_cfg.get("arch") == "yolov3":
        model_cfg["darknet_weights"] = None  # the checkpoint holds every weight
    try:
        image_size = OmegaConf.select(run_cfg, "data.image_size")
    except Exception:  # noqa: BLE001 - an interpolation that only resolves inside Hydra
        image_size = None
    net = instantiate(model_cfg, num_classes=len(class_names), image_size=image_size)
    net.load_state_dict(state)
    dev = _device(device)
    net.to(dev).eval()
    return LoadedDetector(net, class_names, image_size, dev)


# ------------------------------------------------------------------------------------------
# sources


@dataclass
class Source:
    """One input: a still image, a video file or a camera."""

    kind: str  # "image" | "video" | "camera"
    name: str  # what the CSV's source column says
    path: Path | None = None
    camera: int | None = None


def collect_sources(spec: str) -> list[Source]:
    """Sources of ``input=``: an image, a video, a folder of them (sorted) or a camera index."""
    text = str(spec).strip()
    if text.isdigit():
        return [Source("camera", f"camera:{int(text)}", camera=int(text))]
    path = Path(text).expanduser()
    if not path.exists():
        raise ConfigError(f"input={text}: no such file or folder (nor a camera index)")
    if path.is_dir():
        files = sorted(
            (p for p in path.iterdir() if p.is_file() and not is_ignored_name(p.name)),
            key=lambda p: natural_key(p.name),
        )
        sources = [_file_source(p) for p in files if p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS]
        if not sources:
            raise DataError(
                f"input folder {path} has no images ({sorted(IMAGE_EXTS)}) or videos "
                f"({sorted(VIDEO_EXTS)})"
            )
        return sources
    if path.suffix.lower() not in IMAGE_EXTS | VIDEO_EXTS:
        raise ConfigError(
            f"input={path}: unknown file type {path.suffix!r}; images {sorted(IMAGE_EXTS)}, "
            f"videos {sorted(VIDEO_EXTS)}"
        )
    return [_file_source(path)]


def _file_source(path: Path) -> Source:
    kind = "image" if path.suffix.lower() in IMAGE_EXTS else "video"
    return Source(kind, str(path), path=path)


def _open_capture(source: Source) -> cv2.VideoCapture:
    if source.kind == "camera":
        cap = cv2.VideoCapture(source.camera)
        if not cap.isOpened():
            cap.release()
            raise ConfigError(
                f"input={source.camera}: camera index {source.camera} could not be opened (no "
                "camera on this machine, or it is busy); give an image, folder or video file"
            )
        return cap
    cap = cv2.VideoCapture(str(source.path))
    if not cap.isOpened():
        cap.release()
        raise DataError(f"cannot open video {source.path} (unsupported codec or corrupt file)")
    return cap


def iter_frames(source: Source, max_frames: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(frame index, RGB uint8 HxWx3)`` of a video/camera, read one frame at a time."""
    cap = _open_capture(source)
    try:
        index = 0
        while max_frames is None or index < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        cap.release()


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 HxWx3 of an image file (PIL: reads BMP/TIFF/PNG/JPEG alike)."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as exc:  # noqa: BLE001 - every decoder failure is reported the same way
        raise DataError(f"cannot decode image {path}: {exc}") from exc


# ------------------------------------------------------------------------------------------
# inference


@torch.no_grad()
def detect_frames(
    detector: LoadedDetector, frames: Sequence[np.ndarray], score_threshold: float
) -> list[dict[str, np.ndarray]]:
    """Detections of RGB frames in their own pixel coordinates, scores >= threshold."""
    tensors, scales = [], []
    for frame in frames:
        t = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1))).to(detector.device)
        h, w = t.shape[-2:]
        if detector.image_size:
            t = tvf.resize(t, [detector.image_size, detector.image_size], antialias=True)
            scales.append((w / detector.image_size, h / detector.image_size))
        else:
            scales.append((1.0, 1.0))
        tensors.append(t.float().div(255.0))
    outputs = detector.net(tensors)
    results = []
    for out, (sx, sy) in zip(outputs, scales):
        keep = out["scores"] >= score_threshold
        boxes = out["boxes"][keep].cpu().numpy() * np.array([sx, sy, sx, sy], dtype=np.float32)
        results.append(
            {
                "boxes": boxes,
                "scores": out["scores"][keep].cpu().numpy(),
                "labels": out["labels"][keep].cpu().numpy(),
            }
        )
    return results


def draw_detections(
    frame: np.ndarray, det: dict[str, np.ndarray], class_names: Sequence[str]
) -> np.ndarray:
    """A BGR copy of the RGB ``frame`` with boxes, class names and scores drawn on it."""
    bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    thickness = max(1, round(min(frame.shape[:2]) / 200))
    for box, score, label in zip(det["boxes"], det["scores"], det["labels"]):
        colour = _PALETTE[int(label) % len(_PALETTE)]
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(bgr, (x0, y0), (x1, y1), colour, thickness)
        text = f"{class_names[int(label)]} {score:.2f}"
        cv2.putText(
            bgr, text, (x0, max(8, y0 - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.3, colour, 1, cv2.LINE_AA
        )
    return bgr


class _VideoOut:
    """Annotated video written to a temporary file and renamed into place when complete."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps or 10.0
        self.tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        self.writer: cv2.VideoWriter | None = None

    def write(self, bgr: np.ndarray) -> None:
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = bgr.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*"MJPG")
            self.writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, (w, h))
        self.writer.write(bgr)

    def close(self, ok: bool) -> None:
        if self.writer is not None:
            self.writer.release()
            if ok:
                os.replace(self.tmp, self.path)
            else:
                self.tmp.unlink(missing_ok=True)


def _rows(
    source: Source | str, frame: int | None, det: dict[str, np.ndarray], names: Sequence[str]
) -> Iterator[list[Any]]:
    """CSV rows of one image or frame: one per detection, or one empty row without any."""
    name = source.name if isinstance(source, Source) else source
    index = "" if frame is None else frame
    if len(det["scores"]) == 0:
        yield [name, index, "", "", "", "", "", "", ""]
        return
    for box, score, label in zip(det["boxes"], det["scores"], det["labels"]):
        yield [
            name,
            index,
            names[int(label)],
            f"{float(score):.4f}",
            *(f"{float(v):.1f}" for v in box),
            "",
        ]


def error_row(source: Source | str, message: str, frame: int | None = None) -> list[Any]:
    """The CSV row of an input that could not be processed."""
    name = source.name if isinstance(source, Source) else source
    return [name, "" if frame is None else frame, "", "", "", "", "", "", message]


def count_detections(rows: Sequence[Sequence[Any]]) -> int:
    """Rows that are detections (not "nothing found" or error rows)."""
    return sum(1 for r in rows if r[2] != "")


def detect(cfg: DictConfig) -> dict[str, Any]:
    """Run the detector over ``cfg.input`` and write ``cfg.output``; returns run statistics
    (``frames``, ``detections``, ``errors``: inputs that could not be read, ``seconds``,
    ``fps``: frames per second end to end)."""
    detector = load_detector(cfg.ckpt_path, cfg.device)
    sources = collect_sources(cfg.input)
    output = Path(cfg.output).expanduser()
    annotate_dir = (
        Path(cfg.annotate_dir).expanduser()
        if cfg.annotate_dir
        else output.parent / f"{output.stem}_annotated"
    )
    batch_size = max(1, int(cfg.batch_size))
    threshold = float(cfg.score_threshold)
    detector.net.set_score_threshold(min(threshold, 0.05))
    max_frames = None if cfg.max_frames is None else int(cfg.max_frames)
    stats = {"frames": 0, "detections": 0, "errors": 0}
    names = detector.class_names

    def run(f: IO[bytes]) -> None:
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(COLUMNS)
        for source in sources:
            if source.kind == "image":
                try:
                    frame = read_image(source.path)
                except DataError as err:
                    log.warning("%s", err)
                    writer.writerow(error_row(source, str(err)))
                    stats["errors"] += 1
                    continue
                det = detect_frames(detector, [frame], threshold)[0]
                rows = list(_rows(source, None, det, names))
                writer.writerows(rows)
                stats["frames"] += 1
                stats["detections"] += count_detections(rows)
                if cfg.annotate:
                    ok, png = cv2.imencode(".png", draw_detections(frame, det, names))
                    target = annotate_dir / f"{source.path.stem}_det.png"
                    atomic_write(target, lambda g, data=png: g.write(data.tobytes()))
                continue
            try:
                _run_stream(source, writer, stats)
            except DataError as err:  # a video that cannot be opened: note it, go on
                log.warning("%s", err)
                writer.writerow(error_row(source, str(err)))
                stats["errors"] += 1
        text.flush()
        text.detach()

    def _run_stream(source: Source, writer: Any, stats: dict[str, int]) -> None:
        video = None
        if cfg.annotate:
            stem = source.path.stem if source.path else f"camera{source.camera}"
            fps = 10.0
            if source.path is not None:
                probe = cv2.VideoCapture(str(source.path))
                fps = probe.get(cv2.CAP_PROP_FPS) or 10.0
                probe.release()
            video = _VideoOut(annotate_dir / f"{stem}_det.avi", fps)
        ok = False
        try:
            batch: list[tuple[int, np.ndarray]] = []
            frames = iter_frames(source, max_frames)
            try:
                for item in frames:
                    batch.append(item)
                    if len(batch) == batch_size:
                        _flush(source, batch, writer, stats, video)
                        batch = []
            except KeyboardInterrupt:  # a camera runs until interrupted
                log.info("interrupted: finishing %s", source.name)
            if batch:
                _flush(source, batch, writer, stats, video)
            ok = True
        finally:
            if video is not None:
                video.close(ok)

    def _flush(
        source: Source,
        batch: list[tuple[int, np.ndarray]],
        writer: Any,
        stats: dict[str, int],
        video: _VideoOut | None,
    ) -> None:
        dets = detect_frames(detector, [f for _, f in batch], threshold)
        for (index, frame), det in zip(batch, dets):
            rows = list(_rows(source, index, det, names))
            writer.writerows(rows)
            stats["frames"] += 1
            stats["detections"] += count_detections(rows)
            if video is not None:
                video.write(draw_detections(frame, det, names))

    start = time.perf_counter()
    atomic_write(output, run)
    seconds = time.perf_counter() - start
    result = {
        **stats,
        "seconds": seconds,
        "fps": stats["frames"] / seconds if seconds > 0 else float("nan"),
        "output": str(output),
        "device": str(detector.device),
    }
    if cfg.annotate:
        result["annotate_dir"] = str(annotate_dir)
    return result
