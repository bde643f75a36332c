"""A web app for a trained checkpoint (the paper's GUI): images, a video file or the live camera.

    leuk-lightning app ckpt_path=<run>/checkpoints/best.ckpt [host=127.0.0.1] [port=7860]

Built with Gradio (the optional ``[app]`` extra: ``pip install 'leuk-lightning[app]'``),
analytics off, served on 127.0.0.1 unless ``host=`` says otherwise. For a **detector**
checkpoint it has three tabs, like the paper's PyQt GUI:

- *Images*: one or many pictures -> annotated pictures, a table of the detections and a CSV;
- *Video*: a video file -> the annotated video, the table and the CSV (frame by frame);
- *Camera*: the browser's webcam streamed frame by frame -> the annotated frame live, the
  detections so far in the table, and a CSV of them on request.

Tables and CSVs have ``detect``'s columns (``source, frame, class, score, xmin, ymin, xmax,
ymax, error``; boxes in the input's own pixels; a frame without detections gets an empty row,
an unreadable file an error row). For a **classifier** checkpoint the app shows the class
probabilities of each picture and its Grad-CAM overlay instead.
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from leuk_lightning.errors import ConfigError, DataError
from leuk_lightning.inference import detect as D

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "ckpt_path": None,
    "host": "127.0.0.1",
    "port": 7860,
    "score_threshold": 0.5,
    "device": "auto",
    "share": False,
}


def _import_gradio() -> Any:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError as err:
        raise ConfigError(
            "the app needs Gradio: pip install 'leuk-lightning[app]' (or pip install gradio)"
        ) from err
    return gr


def checkpoint_kind(ckpt_path: str | os.PathLike[str]) -> str:
    """``"detector"`` or ``"classifier"``, from the run config next to the checkpoint."""
    from leuk_lightning.utils.runs import find_run_dir, load_run_config

    ckpt = Path(ckpt_path).expanduser()
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path={ckpt}: checkpoint file not found")
    cfg = load_run_config(find_run_dir(ckpt))
    target = str(cfg.model.get("_target_", ""))
    return "detector" if target.endswith("create_detector") else "classifier"


# ------------------------------------------------------------------------------------------
# detector


class DetectorApp:
    """The app's detector functions (plain Python, callable without a browser)."""

    def __init__(self, ckpt_path: str, device: str = "auto", score_threshold: float = 0.5):
        self.detector = D.load_detector(ckpt_path, device)
        self.detector.net.set_score_threshold(min(score_threshold, 0.05))
        self.score_threshold = score_threshold
        self.names = self.detector.class_names
        self.out_dir = Path(tempfile.mkdtemp(prefix="leuk_app_"))

    def _detect(self, frame: np.ndarray, threshold: float | None) -> dict[str, np.ndarray]:
        thr = self.score_threshold if threshold is None else float(threshold)
        return D.detect_frames(self.detector, [frame], thr)[0]

    def _csv(self, rows: Sequence[Sequence[Any]], stem: str) -> str:
        path = self.out_dir / f"{stem}.csv"
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(D.COLUMNS)
            writer.writerows(rows)
        return str(path)

    def images(
        self, files: Sequence[Any] | None, threshold: float | None = None
    ) -> tuple[list[tuple[np.ndarray, str]], list[list[Any]], str | None]:
        """Pictures -> (annotated RGB pictures with captions, table rows, CSV path)."""
        gallery, rows = [], []
        for item in files or []:
            path = Path(getattr(item, "name", item))
            try:
                frame = D.read_image(path)
            except DataError as err:
                rows.append(D.error_row(path.name, str(err)))
                continue
            det = self._detect(frame, threshold)
            found = list(D._rows(path.name, None, det, self.names))
            rows.extend(found)
            annotated = cv2.cvtColor(D.draw_detections(frame, det, self.names), cv2.COLOR_BGR2RGB)
            gallery.append((annotated, f"{path.name}: {D.count_detections(found)} cell(s)"))
        return gallery, rows, (self._csv(rows, "images") if rows else None)

    def video(
        self, video: str | None, threshold: float | None = None, max_frames: int | None = None
    ) -> tuple[str | None, list[list[Any]], str | None]:
        """A video file -> (annotated video path, table rows, CSV path)."""
        if not video:
            return None, [], None
        path = Path(video)
        source = D.Source("video", path.name, path=path)
        rows: list[list[Any]] = []
        try:
            capture = cv2.VideoCapture(str(path))
            fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
            capture.release()
            out_path = self.out_dir / f"{path.stem}_det.webm"
            writer = None
            for index, frame in D.iter_frames(source, max_frames):
                det = self._detect(frame, threshold)
                rows.extend(D._rows(path.name, index, det, self.names))
                bgr = D.draw_detections(frame, det, self.names)
                if writer is None:
                    h, w = bgr.shape[:2]
                    writer = cv2.VideoWriter(
                        str(out_path), cv2.VideoWriter_fourcc(*"VP80"), fps, (w, h)
                    )
                writer.write(bgr)
            if writer is not None:
                writer.release()
        except DataError as err:
            rows.append(D.error_row(path.name, str(err)))
            return None, rows, self._csv(rows, path.stem)
        annotated = str(out_path) if out_path.is_file() and out_path.stat().st_size else None
        return annotated, rows, self._csv(rows, path.stem)

    def camera(
        self, frame: np.ndarray | None, rows: list[list[Any]] | None, threshold: float | None
    ) -> tuple[np.ndarray | None, list[list[Any]], list[list[Any]]]:
        """One webcam frame -> (annotated frame, the table so far, the new state)."""
        rows = list(rows or [])
        if frame is None:
            return None, rows[-200:], rows
        index = len({r[1] for r in rows})
        det = self._detect(np.ascontiguousarray(frame[..., :3]), threshold)
        rows.extend(D._rows("camera", index, det, self.names))
        annotated = cv2.cvtColor(
            D.draw_detections(frame[..., :3], det, self.names), cv2.COLOR_BGR2RGB
        )
        return annotated, rows[-200:], rows

    def camera_csv(self, rows: list[list[Any]] | None) -> str | None:
        return self._csv(rows, "camera") if rows else None


def build_detector_app(core: DetectorApp) -> Any:
    gr = _import_gradio()
    headers = list(D.COLUMNS)
    with gr.Blocks(title="leuk-lightning: cell detector", analytics_enabled=False) as demo:
        gr.Markdown(
            f"## Cell detector\nClasses: {', '.join(core.names)}. Boxes in the input's pixels; "
            "the CSV has the columns of `leuk-lightning detect`."
        )
        threshold = gr.Slider(
            0.0, 1.0, value=core.score_threshold, step=0.05, label="Score threshold"
        )
        with gr.Tab("Images"):
            files = gr.File(file_count="multiple", file_types=["image"], label="Pictures")
            run_images = gr.Button("Detect", variant="primary")
            gallery = gr.Gallery(label="Detections", columns=3)
            table_images = gr.Dataframe(headers=headers, label="Detections", interactive=False)
            csv_images = gr.File(label="CSV")
            run_images.click(
                core.images,
                [files, threshold],
                [gallery, table_images, csv_images],
                api_name="detect_images",
            )
        with gr.Tab("Video"):
            video = gr.Video(label="Video file", sources=["upload"])
            run_video = gr.Button("Detect", variant="primary")
            video_out = gr.Video(label="Annotated video")
            table_video = gr.Dataframe(headers=headers, label="Detections", interactive=False)
            csv_video = gr.File(label="CSV")
            run_video.click(
                lambda v, t: core.video(v, t),
                [video, threshold],
                [video_out, table_video, csv_video],
                api_name="detect_video",
            )
        with gr.Tab("Camera"):
            state = gr.State([])
            with gr.Row():
                cam = gr.Image(
                    sources=["webcam"],
                    streaming=True,
                    type="numpy",
                    label="Camera",
                    elem_id="camera-input",
                )
                cam_out = gr.Image(label="Detections (live)", elem_id="camera-output")
            table_cam = gr.Dataframe(
                headers=headers,
                label="Detections so far",
                interactive=False,
                elem_id="camera-table",
            )
            save_cam = gr.Button("CSV of the camera's detections")
            csv_cam = gr.File(label="CSV", elem_id="camera-csv")
            cam.stream(
                core.camera,
                [cam, state, threshold],
                [cam_out, table_cam, state],
                stream_every=0.3,
                api_name="camera_frame",
            )
            save_cam.click(core.camera_csv, [state], [csv_cam], api_name="camera_csv")
    return demo


# ------------------------------------------------------------------------------------------
# classifier


class ClassifierApp:
    """Class probabilities and a Grad-CAM overlay of pictures, for a classifier checkpoint."""

    def __init__(self, ckpt_path: str, device: str = "auto"):
        from leuk_lightning.inference.predict import load_classifier

        self.loaded = load_classifier(ckpt_path)
        self.device = D._device(device)
        self.model = self.loaded.inference_model().to(self.device)

    def classify(self, image: np.ndarray | None) -> tuple[dict[str, float], np.ndarray | None]:
        from torchvision.transforms.v2 import functional as tvf

        from leuk_lightning.evaluation.gradcam import denormalize, gradcam_maps, overlays

        if image is None:
            return {}, None
        x = torch.from_numpy(np.ascontiguousarray(image[..., :3].transpose(2, 0, 1)))[None]
        size = self.loaded.image_size
        if size:
            x = tvf.resize(x, [size, size], antialias=True)
        x = x.to(self.device)
        with torch.no_grad():
            probs = self.model(x)[0].cpu().tolist()
        scores = {name: float(p) for name, p in zip(self.loaded.class_names, probs)}
        normalised = self.model.normalize(x.float() / 255.0)
        maps, _ = gradcam_maps(self.loaded.net, normalised)
        overlay = overlays(denormalize(normalised, self.loaded.mean, self.loaded.std), maps)[0]
        return scores, overlay


def build_classifier_app(core: ClassifierApp) -> Any:
    gr = _import_gradio()
    with gr.Blocks(title="leuk-lightning: classifier", analytics_enabled=False) as demo:
        gr.Markdown(f"## Cell classifier\nClasses: {', '.join(core.loaded.class_names)}")
        with gr.Row():
            image = gr.Image(type="numpy", sources=["upload", "webcam"], label="Picture")
            with gr.Column():
                label = gr.Label(label="Class probabilities")
                cam = gr.Image(label="Grad-CAM")
        gr.Button("Classify", variant="primary").click(
            core.classify, [image], [label, cam], api_name="classify"
        )
    return demo


# ------------------------------------------------------------------------------------------
# entry


def build_app(ckpt_path: str, device: str = "auto", score_threshold: float = 0.5) -> Any:
    """The Gradio Blocks for a detector or classifier checkpoint."""
    if checkpoint_kind(ckpt_path) == "detector":
        return build_detector_app(DetectorApp(ckpt_path, device, score_threshold))
    return build_classifier_app(ClassifierApp(ckpt_path, device))


def launch(
    ckpt_path: str,
    host: str = "127.0.0.1",
    port: int = 7860,
    score_threshold: float = 0.5,
    device: str = "auto",
    share: bool = False,
    block: bool = True,
) -> Any:
    """Build and serve the app; returns the Blocks (``block=False``: serving in a thread)."""
    demo = build_app(ckpt_path, device, score_threshold)
    demo.queue()
    demo.launch(
        server_name=host,
        server_port=int(port),
        share=bool(share),
        prevent_thread_lock=not block,
        show_error=True,
        quiet=not block,
    )
    return demo
