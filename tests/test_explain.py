"""Issue 6: Grad-CAM, t-SNE, calibration, explain CLI, a real protocol multirun and the notebook."""

from __future__ import annotations

import json
import os
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from helpers import REPO, compose_config, run_app
from PIL import Image

from leuk_lightning.cli import explain as explain_cli
from leuk_lightning.errors import ConfigError
from leuk_lightning.evaluation import calibration as C
from leuk_lightning.evaluation import explain as E
from leuk_lightning.evaluation import gradcam as G
from leuk_lightning.evaluation import report as R


def tiny(model: str, tmp_path: Path, demo_data: Path):
    cfg = compose_config(["debug=demo", f"model={model}"], tmp_path, demo_data)
    dm = hydra.utils.instantiate(cfg.data, output_dir=None)
    dm.setup()
    net = hydra.utils.instantiate(cfg.model, **dm.model_kwargs())
    return dm, net


@pytest.mark.parametrize("model", ["test_resnet", "test_vit"])
def test_gradcam_and_tsne_images_have_the_right_size(tmp_path, demo_data, model):
    dm, net = tiny(model, tmp_path, demo_data)
    layer = G.target_layers(net)[0]
    expected = net.blocks[-1].norm1 if model == "test_vit" else net.layer4
    assert layer is expected
    res = E.explain_gradcam(net, dm, tmp_path / "out", n_images=4)
    assert res["maps"].shape == (4, 64, 64)
    assert np.isfinite(res["maps"]).all() and res["maps"].min() >= 0 and res["maps"].max() <= 1
    assert sorted(res["labels"]) == [0, 0, 1, 1]  # classes taken in turn
    for png in res["images"]:
        assert Image.open(png).size == (64, 64)
    assert Image.open(res["grid"]).size == (800, 440)
    tsne = E.explain_tsne(net, dm, tmp_path / "out")
    n_test = len(dm.subsets["test"])
    assert tsne["embedding"].shape == (n_test, 2)
    assert tsne["features"].shape == (n_test, net.num_features)
    assert Image.open(tsne["path"]).size == (640, 640)


def test_vit_reshape_follows_the_input_grid():
    import timm

    vit = timm.create_model("test_vit", num_classes=2)
    reshape = G.vit_reshape_transform(vit, 64, 48)
    tokens = torch.randn(2, vit.num_prefix_tokens + 4 * 3, 7)
    assert reshape(tokens).shape == (2, 7, 4, 3)
    with pytest.raises(Exception, match="patch tokens"):
        reshape(torch.randn(2, 1 + 5, 7))


def test_ece_equals_hand_computation():
    # 10 bins; no score on a bin edge
    scores = torch.tensor([0.05, 0.15, 0.12, 0.55, 0.58, 0.85, 0.92, 0.95, 0.33, 0.71])
    target = torch.tensor([0, 0, 1, 1, 0, 1, 1, 1, 0, 0])
    bins: dict[int, list[int]] = {}
    for i, s in enumerate(scores.tolist()):
        bins.setdefault(int(s * 10), []).append(i)
    hand = 0.0
    for members in bins.values():
        conf = np.mean([scores[i].item() for i in members])
        frac = np.mean([target[i].item() for i in members])
        hand += abs(frac - conf) * len(members) / len(scores)
    assert C.calibration_error(scores, target, n_bins=10) == pytest.approx(hand, abs=1e-6)
    conf, acc, count = C.reliability_bins(scores, target, n_bins=10)
    assert count.sum() == 10 and count[1] == 2 and acc[1] == pytest.approx(0.5)
    # multi-class: top-label confidence vs accuracy
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5], [0.05, 0.9, 0.05]])
    labels = torch.tensor([0, 2, 2, 1])
    top = probs.max(1).values.tolist()
    hits = [1, 0, 1, 1]
    by_bin: dict[int, list[int]] = {}
    for i, c in enumerate(top):
        by_bin.setdefault(int(c * 5), []).append(i)
    hand = sum(
        abs(np.mean([hits[i] for i in m]) - np.mean([top[i] for i in m])) * len(m) / 4
        for m in by_bin.values()
    )
    assert C.calibration_error(probs, labels, n_bins=5) == pytest.approx(hand, abs=1e-6)


# ------------------------------------------------------------------------------------------
# one real protocol multirun (2 of the 20 jobs, tiny model) shared by the tests below


@pytest.fixture(scope="module")
def multirun(tmp_path_factory, demo_data) -> Path:
    root = tmp_path_factory.mktemp("protocol_run")
    args = [
        "-m",
        "+experiment=histotnet_resnet18_l2",
        "debug=demo",
        "protocol=histotnet_cv",
        "data.split.repeat=0",  # replaces the protocol's range(0,10): folds 0 and 1 only
        "model=test_resnet",
        "trainer.max_epochs=1",
        "pretrain.trainer.max_epochs=1",
        "+trainer.limit_train_batches=4",
        "+pretrain.trainer.limit_train_batches=2",
        "callbacks=explain",
        "callbacks.gradcam.n_images=4",
    ]
    proc = run_app(args, root, demo_data, timeout=1800)  # minutes on a loaded shared CPU
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (root / "logs" / "histotnet_resnet18_l2" / "multiruns").iterdir()
    return sweep


@pytest.mark.slow
def test_protocol_multirun_end_to_end(multirun, tmp_path):
    jobs = sorted(p for p in multirun.iterdir() if p.is_dir())
    assert [j.name for j in jobs] == ["0", "1"]
    subsets = [json.loads((j / "split.json").read_text())["subsets"] for j in jobs]
    assert set(subsets[0]["test"]) == set(subsets[1]["train"]) | set(subsets[1]["val"])
    assert set(subsets[1]["test"]) == set(subsets[0]["train"]) | set(subsets[0]["val"])
    for job in jobs:
        metrics = json.loads((job / "results.json").read_text())["metrics"]
        assert 0.0 <= metrics["test/ece"] <= 1.0
        for name in ("gradcam.png", "tsne.png", "reliability_diagram.png", "calibration.json"):
            assert (job / name).is_file(), name
    stages = list((multirun.parents[2] / "stage_cache").glob("histocnn-*/stage.json"))
    assert len(stages) == 1  # one pre-training for both folds
    rep = R.build_report([multirun], tmp_path / "rep", n_boot=500)
    (row,) = rep["rows"]
    assert len(row.runs) == 2 and not rep["problems"]
    assert "97.92 ± 1.62" in rep["markdown"]


@pytest.mark.slow
def test_explain_cli_rebuilds_the_run_from_its_directory(multirun, tmp_path, demo_data):
    job = multirun / "0"
    ckpt = job / "checkpoints" / "last.ckpt"
    out = tmp_path / "explained"
    overrides = [f"paths.data_dir={demo_data}"]  # the run's config + an override
    result = E.explain(ckpt, method="all", n_images=2, out_dir=out, overrides=overrides)
    assert result["run_dir"] == job.resolve()
    test_files = json.loads((job / "split.json").read_text())["subsets"]["test"]
    assert len(result["tsne"]["labels"]) == len(test_files)  # the run's own test set
    assert Image.open(out / "tsne.png").size == (640, 640)
    assert len(list((out / "gradcam").glob("*.png"))) == 2
    assert explain_cli.main([f"ckpt_path={tmp_path / 'nope.ckpt'}"]) == 2
    assert explain_cli.main([f"ckpt_path={ckpt}", "method=shap"]) == 2
    # a typo is never ignored: an option, or a key the run's config does not have
    assert explain_cli.main([f"ckpt_path={ckpt}", "methd=tsne"]) == 2
    with pytest.raises(ConfigError, match="did you mean 'paths.data_dir'"):
        E.explain(ckpt, overrides=["paths.data_dri=/x"])


@pytest.mark.slow
def test_review_notebook_executes_headless(multirun, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks" / "review.ipynb", as_version=4)
    env = {
        "LEUK_REVIEW_DIR": str(multirun),
        "LEUK_REVIEW_OUT": str(tmp_path),
        "LEUK_REVIEW_N_BOOT": "200",
    }
    old = {k: os.environ.get(k) for k in [*env, "PYTHONPATH"]}
    os.environ.update(env, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    outputs = "".join(
        o.get("text", "") + json.dumps(o.get("data", {}).get("text/markdown", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
    )
    assert "gradcam.png: 2 file(s)" in outputs and "tsne.png: 2 file(s)" in outputs
    assert "0 missing or failed run(s)" in outputs
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # confusion matrix plot + confusion/Grad-CAM/t-SNE/reliability PNGs
    assert (tmp_path / "report.csv").is_file()
