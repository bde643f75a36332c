"""Issue 18: the detection web app (Gradio) through gradio_client and a real headless browser."""

from __future__ import annotations

import csv
import os
import shutil
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import TINY_YOLO, compose_config
from omegaconf import OmegaConf
from PIL import Image

from leuk_lightning.cli import COMMANDS
from leuk_lightning.cli import app as app_cli
from leuk_lightning.data.synthetic import write_cells_voc
from leuk_lightning.inference import detect as D
from leuk_lightning.models import create_detector

gradio = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="module")
def detector_ckpt(tmp_path_factory) -> Path:
    """An (untrained) YOLOv3 run as training writes it: .hydra/config.yaml + checkpoint."""
    root = tmp_path_factory.mktemp("app_run")
    cfg = compose_config(["+experiment=cells_yolov3", "debug=demo"], root)
    cfg.data.image_size = 128
    run = root / "run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    torch.manual_seed(0)
    net = create_detector(2, image_size=128, **TINY_YOLO)
    ckpt = run / "checkpoints" / "best.ckpt"
    ckpt.parent.mkdir()
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
            "hyper_parameters": {"class_names": ["all", "hem"]},
        },
        ckpt,
    )
    return ckpt


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    root = write_cells_voc(tmp_path_factory.mktemp("pics") / "voc", n_images=2, size=160, seed=1)
    return sorted((root / "images").glob("*.png"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(detector_ckpt):
    from leuk_lightning.inference.app import launch

    demo = launch(str(detector_ckpt), port=_free_port(), score_threshold=0.0, block=False)
    assert demo.local_url.startswith("http://127.0.0.1:")  # bound to this machine only
    yield demo.local_url
    demo.close()


def _csv_rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_app_command_is_listed_and_has_help(capsys):
    assert "app" in COMMANDS
    assert app_cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "127.0.0.1" in out and "--ckpt-path" in out and "Grad-CAM" in out
    assert app_cli.main(["ckpt_path=/nonexistent.ckpt"]) == 2


def _video(path: Path, frames: list[np.ndarray]) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.mark.slow
def test_gradio_client_images_video_and_csv(server, pictures, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    gallery, table, csv_file = client.predict(
        [handle_file(str(p)) for p in [*pictures, broken]], 0.0, api_name="/detect_images"
    )
    assert len(gallery) == 2  # one annotated picture per readable input
    rows = _csv_rows(csv_file)
    assert list(rows[0]) == list(D.COLUMNS)
    assert [r["source"] for r in dict((r["source"], r) for r in rows).values()] == [
        pictures[0].name,
        pictures[1].name,
        "broken.png",
    ]
    assert "cannot decode image" in rows[-1]["error"]
    assert table["headers"] == list(D.COLUMNS) and len(table["data"]) == len(rows)
    boxes = [[float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")] for r in rows if r["class"]]
    assert boxes and np.max(boxes) <= 160.5  # the 160 px pictures' own pixels
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in pictures]
    video = _video(tmp_path / "cells.avi", [frames[0], frames[1], np.zeros_like(frames[0])])
    annotated, table, csv_file = client.predict(
        handle_file(str(video)), 0.0, api_name="/detect_video"
    )
    rows = _csv_rows(csv_file)
    assert sorted({int(r["frame"]) for r in rows}) == [0, 1, 2]  # every frame has rows
    annotated = annotated["video"] if isinstance(annotated, dict) else annotated
    capture = cv2.VideoCapture(annotated)
    n_frames = 0
    while capture.read()[0]:
        n_frames += 1
    capture.release()
    assert n_frames == 3  # the annotated video has every frame


def _y4m(path: Path, frames: list[np.ndarray], fps: int = 5) -> Path:
    """A YUV4MPEG2 (4:2:0) file, what Chromium's fake camera plays in a loop."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
            fh.write(b"FRAME\n" + yuv.tobytes())
    return path


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.mark.slow
def test_browser_camera_streams_annotated_frames_into_the_table(server, pictures, tmp_path):
    """Debian's chromium (Playwright drives it) with a fake camera playing generated cells:
    the Camera tab streams frames to the detector and fills the table and the CSV."""
    executable = _chromium()
    if executable is None:
        pytest.skip("no chromium browser installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    frame = np.asarray(Image.open(pictures[0]).convert("RGB").resize((160, 160)))
    camera = _y4m(tmp_path / "camera.y4m", [frame] * 5)
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(
                executable_path=executable,
                headless=True,
                args=[
                    "--use-fake-ui-for-media-stream",
                    "--use-fake-device-for-media-stream",
                    f"--use-file-for-fake-video-capture={camera}",
                    "--no-sandbox",
                ],
            )
        except Exception as err:  # noqa: BLE001 - a browser that cannot start here
            pytest.skip(f"chromium does not start here: {err}")
        try:
            page = browser.new_page()
            page.context.grant_permissions(["camera"])
            page.goto(server, timeout=60_000)
            page.get_by_role("tab", name="Camera").click()
            page.get_by_text("Click to Access Webcam").click(timeout=30_000)
            # Gradio's streaming webcam: "Record" (aria-label "capture photo") starts the stream
            page.locator("#camera-input button", has_text="Record").click(timeout=30_000)
            out = page.locator("#camera-output img")
            out.first.wait_for(state="visible", timeout=90_000)
            page.wait_for_function(
                "() => document.querySelectorAll('#camera-table tbody tr').length > 0",
                timeout=90_000,
            )
            text = page.locator("#camera-table").inner_text()
            assert "camera" in text and "xmin" in text
            page.get_by_role("button", name="CSV of the camera's detections").click()
            link = page.locator("#camera-csv a[download]").last
            link.wait_for(timeout=60_000)
            with page.expect_download() as info:
                link.click()
            assert info.value.suggested_filename.endswith(".csv")
            rows = _csv_rows(info.value.path())
            assert rows and all(r["source"] == "camera" for r in rows)
            assert len({r["frame"] for r in rows}) >= 2  # several streamed frames
            page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
        finally:
            browser.close()
    figure = os.environ.get("LEUK_APP_SCREENSHOT")
    if figure:  # used once to refresh the README's picture
        shutil.copy(tmp_path / "app.png", figure)
