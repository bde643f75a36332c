"""Issue 15: untrusted files are data, never code.

A checkpoint whose unpickling would run code (it writes a marker file) is refused on every path
that reads a checkpoint: predict, export, explain, detect, eval, resume (``ckpt_path=``), test
(``train=false``), ``model.init_from``, ``model.weights_file`` and the stage cache's
``best.ckpt``: exit status 2 (or the error the entry point turns into it), one line naming the
file, and no marker.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import compose_config, run_app

from leuk_lightning.cli import main as cli_main
from leuk_lightning.errors import CheckpointError
from leuk_lightning.utils.checkpoint import load_checkpoint, plain

TINY = [
    "debug=demo",
    "model=test_resnet",
    "data.image_size=32",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "~logger",
    "callbacks.lr_monitor=null",
]


class _Evil:
    """Unpickling this object runs code: it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_data) -> Path:
    """A finished tiny classifier run (run dir with .hydra/config.yaml, split.json, last.ckpt)."""
    root = tmp_path_factory.mktemp("safety")
    run = root / "run"
    proc = run_app([*TINY, f"hydra.run.dir={run}"], root, demo_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def _evil_copy(src: Path, dst: Path, marker: Path) -> Path:
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["evil"] = _Evil(marker)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dst)
    return dst


def test_own_checkpoints_are_plain_data(trained):
    """Our checkpoints load with weights_only=True; hyper-parameters say what the config said."""
    ckpt = load_checkpoint(trained / "checkpoints" / "last.ckpt")
    hp = ckpt["hyper_parameters"]
    assert hp["optimizer"]["_target_"] == "torch.optim.sgd.SGD" and hp["optimizer"]["_partial_"]
    assert hp["class_names"] == ["normal", "lymphoblast"]
    assert isinstance(ckpt["rng_states"]["numpy"][1], torch.Tensor)


def test_plain_turns_objects_into_plain_types():
    from functools import partial

    import numpy as np
    from omegaconf import OmegaConf

    out = plain(
        {
            "p": partial(torch.optim.SGD, lr=0.1),
            "c": OmegaConf.create({"a": [1, 2]}),
            "n": np.arange(3, dtype=np.uint32),
            "s": np.float32(1.5),
            "path": Path("/x"),
        }
    )
    assert out["p"] == {"_target_": "torch.optim.sgd.SGD", "_partial_": True, "lr": 0.1}
    assert out["c"] == {"a": [1, 2]} and type(out["c"]) is dict
    assert torch.equal(out["n"], torch.tensor([0, 1, 2], dtype=torch.uint32))
    assert out["s"] == 1.5 and out["path"] == "/x"


def test_a_file_that_is_not_a_checkpoint_is_one_clear_error(tmp_path):
    bad = tmp_path / "notes.ckpt"
    bad.write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes\.ckpt: not a PyTorch checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="file not found"):
        load_checkpoint(tmp_path / "missing.ckpt")


def _check_refused(text: str, evil: Path, marker: Path) -> None:
    assert not marker.exists(), "code in the checkpoint ran"
    assert str(evil) in text and "refused to load" in text, text[-2000:]
    assert "(exec)" in text  # the global it would have called
    assert "Traceback" not in text, text[-3000:]


# tools: in-process through the console script's own dispatcher (same exit path)
TOOLS = {
    "predict": lambda ck, run, tmp: ["predict", f"ckpt_path={ck}", f"input={tmp / 'imgs'}"],
    "export": lambda ck, run, tmp: ["export", f"ckpt_path={ck}", f"output={tmp / 'm.onnx'}"],
    "explain": lambda ck, run, tmp: ["explain", f"ckpt_path={ck}", f"out_dir={tmp / 'x'}"],
    "detect": lambda ck, run, tmp: ["detect", f"ckpt_path={ck}", f"input={tmp / 'imgs'}"],
    "eval": lambda ck, run, tmp: ["eval", f"ckpt_path={ck}", f"out_dir={tmp / 'e'}"],
}


@pytest.mark.parametrize("tool", list(TOOLS))
def test_malicious_checkpoint_refused_by_tool(tool, trained, tmp_path, capsys, demo_data):
    marker = tmp_path / "marker"
    evil = _evil_copy(
        trained / "checkpoints" / "last.ckpt", trained / "checkpoints" / f"evil_{tool}.ckpt", marker
    )
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    src = next((demo_data / "demo" / "ALL_IDB2").rglob("*.tif"))
    shutil.copy(src, imgs / src.name)
    try:
        status = cli_main(TOOLS[tool](evil, trained, tmp_path))
        captured = capsys.readouterr()
        assert status == 2, captured.err[-2000:]
        _check_refused(captured.err, evil, marker)
    finally:
        evil.unlink()


def test_malicious_weights_file_refused(tmp_path):
    from leuk_lightning.models.detection import create_detector

    marker = tmp_path / "marker"
    evil = tmp_path / "weights.pt"
    torch.save({"state_dict": {}, "x": _Evil(marker)}, evil)
    with pytest.raises(CheckpointError) as err:
        create_detector(num_classes=2, arch="fcos", backbone="test_resnet", weights_file=str(evil))
    _check_refused(str(err.value), evil, marker)
    assert "model.weights_file" in str(err.value)


def test_malicious_init_from_refused(tmp_path):
    from leuk_lightning.models import create_classifier

    marker = tmp_path / "marker"
    evil = tmp_path / "stage.ckpt"
    torch.save({"state_dict": {}, "x": _Evil(marker)}, evil)
    with pytest.raises(CheckpointError) as err:
        create_classifier("test_resnet", num_classes=2, init_from=str(evil))
    _check_refused(str(err.value), evil, marker)


def test_malicious_stage_cache_best_ckpt_refused(tmp_path, trained, demo_data):
    """A poisoned ``stage_cache/<name>-<hash>/best.ckpt`` (shared by every two-stage run)."""
    from leuk_lightning.training.pipeline import stage_config, stage_fingerprint
    from leuk_lightning.utils.config import config_hash

    overrides = ["+experiment=histotnet_resnet18_l2", *TINY, "pretrain.trainer.max_epochs=1"]
    cfg = compose_config(overrides, tmp_path, demo_data)
    stage_cfg = stage_config(cfg, "pretrain")
    name = cfg.pretrain.get("name", "pretrain")
    digest = config_hash(stage_fingerprint(stage_cfg))
    stage_dir = Path(cfg.paths.stage_cache_dir) / f"{name}-{digest}"
    marker = tmp_path / "marker"
    evil = _evil_copy(trained / "checkpoints" / "last.ckpt", stage_dir / "best.ckpt", marker)
    (stage_dir / "stage.json").write_text(json.dumps({"name": name}))

    from leuk_lightning.training.pipeline import run_pipeline

    with pytest.raises(Exception) as err:
        run_pipeline(cfg)
    from leuk_lightning.errors import user_error

    assert isinstance(user_error(err.value), CheckpointError)
    _check_refused(str(user_error(err.value)), evil, marker)


@pytest.mark.slow
@pytest.mark.parametrize(
    "how",
    [
        "ckpt_path={evil}",  # resume
        "train=false ckpt_path={evil}",  # test only
        "model.init_from={evil}",
    ],
)
def test_malicious_checkpoint_refused_by_training_entry_point(how, trained, tmp_path, demo_data):
    marker = tmp_path / "marker"
    evil = _evil_copy(trained / "checkpoints" / "last.ckpt", tmp_path / "evil.ckpt", marker)
    args = [*TINY, f"hydra.run.dir={tmp_path / 'run'}", *how.format(evil=evil).split()]
    proc = run_app(args, tmp_path, demo_data)
    assert proc.returncode == 2, proc.stderr[-3000:]
    _check_refused(proc.stdout + proc.stderr, evil, marker)


def test_explain_on_a_detector_run_is_one_clear_line(trained, tmp_path, capsys):
    from omegaconf import OmegaConf

    run = tmp_path / "detector_run"
    shutil.copytree(trained / ".hydra", run / ".hydra")
    (run / "checkpoints").mkdir()
    shutil.copy(trained / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt")
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    cfg.model = {"_target_": "leuk_lightning.models.create_detector", "arch": "fcos"}
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    status = cli_main(["explain", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
    err = capsys.readouterr().err
    assert status == 2 and "is a detector checkpoint" in err and "Traceback" not in err


def test_checkpoint_of_another_model_is_one_clear_line():
    from leuk_lightning.errors import ConfigError
    from leuk_lightning.training.run import checkpoint_mismatch_is_config_error

    with (
        pytest.raises(ConfigError, match=r"ckpt_path=x.ckpt does not fit this run's model"),
        checkpoint_mismatch_is_config_error("x.ckpt"),
    ):
        raise RuntimeError("Error(s) in loading state_dict for ClassifierModule:\n\tMissing key(s)")
    with pytest.raises(RuntimeError), checkpoint_mismatch_is_config_error("x.ckpt"):
        raise RuntimeError("CUDA out of memory")  # other failures stay what they are
