"""Issue 15: durable runs. last.ckpt every epoch (a run killed during epoch k resumes at
epoch k and ends with the uninterrupted metrics), no run-dir collisions, atomic writes that
follow the umask and clean up after killed writers, clear one-line errors for impossible
settings and unwritable folders, 16-bit images, missing classes, and kill -9 at several
points (stage training, cache build, checkpoint write) ending with the uninterrupted metrics.

Kills are injected with ``tests/faults/sitecustomize.py`` (``LEUK_FAULT``)."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, compose_config
from PIL import Image

from leuk_lightning.errors import ConfigError, DataError, StorageError
from leuk_lightning.utils import io as leuk_io

FAULTS = Path(__file__).parent / "faults"

TINY = [
    "debug=demo",
    "model=test_resnet",
    "data.image_size=32",
    "deterministic=true",
    "seed=3",
    "+trainer.limit_train_batches=3",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "callbacks.lr_monitor=null",
    "~logger",
]


def _app(args, root, data_dir, fault=None, wait=True):
    env = dict(os.environ)
    env.update(
        LEUK_ROOT=str(root),
        LEUK_DATA_DIR=str(data_dir),
        WANDB_MODE="offline",
        PYTHONPATH=os.pathsep.join([str(FAULTS), str(REPO), env.get("PYTHONPATH", "")]),
    )
    env.pop("LEUK_FAULT", None)
    if fault:
        env["LEUK_FAULT"] = fault
    proc = subprocess.Popen(
        [sys.executable, "-m", "leuk_lightning", *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=900)
    return proc.returncode, out


def _floats(run_dir: Path) -> dict[str, float]:
    record = json.loads((run_dir / "results.json").read_text())
    return {k: v for k, v in record["metrics"].items() if isinstance(v, float)}


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name]


# ------------------------------------------------------------------ last.ckpt every epoch
@pytest.mark.slow
def test_kill_during_epoch_k_resumes_at_epoch_k(tmp_path, demo_data):
    """The best checkpoint never improves after epoch 0 (monitor=epoch, mode=min): Lightning's
    own save_last then leaves last.ckpt at epoch 0 and a resume redoes epochs 1..k."""
    args = [
        *TINY,
        "trainer.max_epochs=4",
        "callbacks.model_checkpoint.monitor=epoch",
        "callbacks.model_checkpoint.mode=min",
    ]
    full, killed = tmp_path / "full", tmp_path / "killed"
    status, out = _app([*args, f"hydra.run.dir={full}"], tmp_path, demo_data)
    assert status == 0, out[-3000:]
    k = 2
    status, out = _app([*args, f"hydra.run.dir={killed}"], tmp_path, demo_data, f"epoch:{k}")
    assert status == -signal.SIGKILL, out[-3000:]
    last = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    # written at the end of epoch k-1 (Lightning resumes after it, at epoch k); Lightning's own
    # save_last would have left it at epoch 0, the last improving one
    assert last["epoch"] == k - 1, f"last.ckpt is from epoch {last['epoch']}: epochs redone"
    status, out = _app([*args, f"hydra.run.dir={killed}", "ckpt_path=last"], tmp_path, demo_data)
    assert status == 0, out[-3000:]
    assert "Restored all states" in out
    assert _floats(killed) == _floats(full)
    assert not _temps(killed)


def test_last_ckpt_every_n_steps_option_is_checked():
    from leuk_lightning.training.checkpointing import ModelCheckpoint

    assert ModelCheckpoint(last_every_n_train_steps=5).last_every_n_train_steps == 5
    with pytest.raises(ConfigError, match="last_every_n_train_steps=-1"):
        ModelCheckpoint(last_every_n_train_steps=-1)


# ------------------------------------------------------------------ run directories
@pytest.mark.slow
def test_two_runs_started_in_the_same_second_keep_their_own_dirs(tmp_path, demo_data):
    args = [*TINY, "trainer.max_epochs=1"]
    procs = [_app(args, tmp_path, demo_data, wait=False) for _ in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    runs = sorted((tmp_path / "logs").glob("*/runs/*"))
    assert len(runs) == 2, runs
    for run in runs:
        assert (run / "results.json").is_file() and (run / "checkpoints" / "last.ckpt").is_file()


def test_a_run_dir_in_use_is_refused(tmp_path):
    from filelock import FileLock
    from omegaconf import OmegaConf

    from leuk_lightning.training.pipeline import run_dir_lock

    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path)}})
    with (
        FileLock(str(tmp_path / ".run.lock")),
        pytest.raises(ConfigError, match="in use by another run"),
        run_dir_lock(cfg),
    ):
        pass
    with run_dir_lock(cfg):  # free again (a finished or killed run holds nothing)
        pass


def test_run_dir_names_carry_a_per_process_id(tmp_path):
    cfg = compose_config(["debug=demo"], tmp_path)
    from leuk_lightning.utils.resolvers import run_id

    assert cfg.hydra.run.dir.endswith("_" + run_id()) and len(run_id()) == 6
    code = "from leuk_lightning.utils.resolvers import run_id; print(run_id())"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert other.stdout.strip() and other.stdout.strip() != run_id()


# ------------------------------------------------------------------ atomic writes
def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = leuk_io.atomic_write_text(tmp_path / "a.json", "{}")
        assert path.stat().st_mode & 0o777 == 0o644
        os.umask(0o027)
        path = leuk_io.atomic_write_text(tmp_path / "b.json", "{}")
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = leuk_io._HOST
    stale = tmp_path / f".epoch_003.ckpt.{host}-{dead.pid}.abc123.tmp"
    live = tmp_path / f".last.ckpt.{host}-{os.getpid()}.def456.tmp"
    other_host_old = tmp_path / ".x.json.elsewhere-12.ghi789.tmp"
    for p in (stale, live, other_host_old):
        p.write_bytes(b"partial")
    os.utime(other_host_old, (1, 1))
    leuk_io.atomic_write_text(tmp_path / "last.ckpt", "new")
    assert not stale.exists() and not other_host_old.exists()
    assert live.exists()  # a live writer's file is left alone


def test_full_disk_and_read_only_folder_name_the_path(tmp_path, monkeypatch):
    target = tmp_path / "out" / "results.json"

    def full(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(StorageError, match=rf"cannot write {target}: no space left"):
        leuk_io.atomic_write(target, full)
    assert not leuk_io.remove_stale_temps(target) and not list(target.parent.iterdir())

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(leuk_io.tempfile, "mkstemp", read_only)
    with pytest.raises(StorageError, match=rf"cannot write {target}: read-only file system"):
        leuk_io.atomic_write_text(target, "{}")


def test_read_only_cache_dir_falls_back_to_uncached(tmp_path, monkeypatch, caplog):
    from leuk_lightning.data import cache
    from leuk_lightning.data.datasets import AllIdb2Dataset
    from leuk_lightning.data.synthetic import classification as synthetic

    root = synthetic.write_all_idb2(tmp_path / "A", n=4, size=16)
    ds = AllIdb2Dataset(root)

    def read_only(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(cache.CachedDataset, "_ensure", read_only)
    with caplog.at_level(logging.WARNING):
        assert cache.maybe_cached(ds, tmp_path / "cache") is ds
    assert "Image cache not used" in caplog.text


def test_waiting_on_a_lock_is_logged(tmp_path, caplog):
    lock = tmp_path / "stage.lock"
    held, release = threading.Event(), threading.Event()

    def holder():
        with leuk_io.file_lock(lock, "x"):
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(10)
    threading.Timer(0.3, release.set).start()
    with (
        caplog.at_level(logging.INFO, logger="leuk_lightning.utils.io"),
        leuk_io.file_lock(lock, "stage 'histocnn'"),
    ):
        pass
    t.join()
    assert "Waiting for stage 'histocnn'" in caplog.text and str(lock) in caplog.text


# ------------------------------------------------------------------ data
def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    import cv2

    from leuk_lightning.data.datasets._common import decode_image

    ramp = (np.arange(64 * 32, dtype=np.uint32).reshape(32, 64) * 32).astype(np.uint16)
    gray = tmp_path / "gray16.tif"
    Image.fromarray(ramp).save(gray)  # mode I;16
    image = decode_image(gray)
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 64)
    expected = np.rint(ramp / 257.0).astype(np.uint8)
    assert np.array_equal(image[0].numpy(), expected) and image.float().mean() < 200
    rgb = np.stack([ramp, ramp // 2, 65535 - ramp], axis=2)
    for name in ("rgb48.png", "rgb48.tif"):  # 48-bit RGB: Pillow keeps the high byte
        colour = tmp_path / name
        cv2.imwrite(str(colour), rgb[..., ::-1])
        image = decode_image(colour).int()
        assert (image[0] - torch.from_numpy(expected).int()).abs().max() <= 1
        blue = torch.from_numpy(np.rint((65535 - ramp) / 257.0)).int()
        assert (image[2] - blue).abs().max() <= 1


def test_cnmc_without_hem_is_a_data_error_naming_the_class(tmp_path, caplog):
    import shutil

    from leuk_lightning.data.datasets import CnmcDataset
    from leuk_lightning.data.synthetic import classification as synthetic

    root = synthetic.write_cnmc(
        tmp_path,
        n_subjects_all=2,
        n_subjects_hem=2,
        images_per_subject=2,
        n_prelim=2,
        n_final=1,
        size=16,
    )
    for hem in list(Path(root).rglob("hem")):
        if hem.is_dir():
            shutil.rmtree(hem)
    with pytest.raises(DataError, match=r"no images of class 'hem' \(no images in a fold_<k>/hem/"):
        CnmcDataset(root)
    with caplog.at_level(logging.WARNING):
        assert set(CnmcDataset(root, allow_missing_classes=True).labels.tolist()) == {1}
    assert "allow_missing_classes" in caplog.text


def test_impossible_settings_stop_before_any_data_is_read(tmp_path):
    from leuk_lightning.training.pipeline import run_pipeline

    data_dir = tmp_path / "data"
    cfg = compose_config(
        [
            "debug=demo",
            "data.batch_size=-4",
            "trainer.max_epochs=0",
            "data.split.fractions=[0.5,0.6]",
        ],
        tmp_path,
        data_dir,
    )
    with pytest.raises(ConfigError) as err:
        run_pipeline(cfg)
    text = str(err.value)
    assert "data.batch_size=-4" in text and "trainer.max_epochs=0" in text
    assert "data.split.fractions" in text
    assert not data_dir.exists()  # nothing generated, cached or read


# ------------------------------------------------------------------ fault injection
@pytest.mark.slow
def test_kill_at_stage_training_cache_build_and_checkpoint_write(tmp_path, demo_data):
    """A two-stage run (ADP pre-training stage, then ALL-IDB2) killed during its cache build,
    during stage training and in the middle of a checkpoint write, rerun each time with
    ckpt_path=last, ends with the metrics of an uninterrupted run and no temporary file."""
    args = [
        "+experiment=histotnet_resnet18_l2",
        *TINY,
        "trainer.max_epochs=2",
        "pretrain.trainer.max_epochs=2",
    ]
    ref_root, root = tmp_path / "ref", tmp_path / "faulty"
    ref_root.mkdir()
    root.mkdir()
    ref = [*args, f"hydra.run.dir={ref_root / 'run'}", f"paths.cache_dir={ref_root / 'cache'}"]
    status, out = _app(ref, ref_root, demo_data)
    assert status == 0, out[-3000:]
    run = [*args, f"hydra.run.dir={root / 'run'}", f"paths.cache_dir={root / 'cache'}"]
    run.append("ckpt_path=last")
    for fault in ("cache:5", "stage_epoch:1", "ckpt:2"):
        status, out = _app(run, root, demo_data, fault)
        assert status == -signal.SIGKILL, f"{fault}: not killed\n{out[-3000:]}"
    assert _temps(root), "the kills left no temporary file: the test injects nothing"
    status, out = _app(run, root, demo_data)
    assert status == 0, out[-3000:]
    assert _floats(root / "run") == _floats(ref_root / "run")
    assert not _temps(root), _temps(root)
