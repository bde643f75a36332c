"""Issue 7: Prellberg & Kramer C-NMC recipe, TTA, seed selection, predict and export."""

from __future__ import annotations

import csv
import functools
import json
import shutil
import statistics
from pathlib import Path

import hydra
import numpy as np
import pytest
import timm
import torch
from helpers import compose_config, run_app
from PIL import Image

from leuk_lightning.data.transforms import BatchAugment, BatchTransform, Normalize
from leuk_lightning.errors import ConfigError, DataError
from leuk_lightning.evaluation.subject import per_subject, subject_metrics
from leuk_lightning.evaluation.tta import TTAWrapper, rotate, tta_views
from leuk_lightning.models.param_groups import PRELLBERG_RESNET_GROUPS, build_param_groups
from leuk_lightning.regimes import ClassifierModule

EXPERIMENT = "+experiment=prellberg_seresnext50"
_FAST = [
    "model=test_resnet",
    "trainer.max_epochs=1",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
]


def _module(net: torch.nn.Module, **kwargs) -> ClassifierModule:
    return ClassifierModule(
        net=net,
        optimizer=functools.partial(torch.optim.Adam, lr=1.0),
        scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=2, gamma=0.1),
        **kwargs,
    )


# ------------------------------------------------------------------ stage-wise learning rates
@pytest.mark.parametrize("name", ["test_resnet", "seresnext26d_32x4d"])
def test_stage_lr_groups_get_multipliers_and_cover_every_parameter_once(name):
    net = timm.create_model(name, pretrained=False, num_classes=1)
    module = _module(net, binary_logit=True, lr_groups=PRELLBERG_RESNET_GROUPS)
    conf = module.configure_optimizers()
    optimizer, scheduler = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert {k: g["lr"] for k, g in groups.items()} == {
        "stem_stage1": 1e-6,
        "stages2_4": 1e-4,
        "head": 1e-2,
    }
    ids = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids))  # no parameter twice
    assert set(ids) == {id(p) for p in net.parameters()}  # none left out
    names = {id(p): n for n, p in net.named_parameters()}
    assert all(
        names[id(p)].startswith(("conv1", "bn1", "layer1")) for p in groups["stem_stage1"]["params"]
    )
    assert {names[id(p)] for p in groups["head"]["params"]} == {"fc.weight", "fc.bias"}
    for _ in range(2):  # /10 every 2 epochs keeps the ratios
        optimizer.step()  # (no gradients: parameters unchanged)
        scheduler.step()
    assert optimizer.param_groups[2]["lr"] == pytest.approx(1e-3)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-7)


def test_unmatched_parameters_are_named_in_the_error():
    net = timm.create_model("test_resnet", pretrained=False, num_classes=1)
    groups = {k: v for k, v in PRELLBERG_RESNET_GROUPS.items() if k != "head"}
    with pytest.raises(ConfigError, match=r"fc\.weight.*Top-level names"):
        build_param_groups(net, groups, 1.0)
    with pytest.raises(ConfigError, match="match no parameter"):
        build_param_groups(
            net, {**PRELLBERG_RESNET_GROUPS, "typo": {"pattern": "^lyer", "lr_mult": 1}}, 1.0
        )


# ------------------------------------------------------------------ single logit, weighted BCE
def test_binary_logit_uses_pos_weight_n_neg_over_n_pos():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 1])  # 3 negatives, 6 positives
    weights = len(labels) / torch.bincount(labels).float()
    net = timm.create_model("test_resnet", pretrained=False, num_classes=1)
    module = _module(net, binary_logit=True, class_weights=weights)
    assert module.pos_weight.item() == pytest.approx(3 / 6)
    logits = torch.tensor([[0.3], [-1.2], [2.0]])
    target = torch.tensor([1, 0, 1])
    p = logits[:, 0].sigmoid()
    y = target.float()
    manual = -(0.5 * y * p.log() + (1 - y) * (1 - p).log()).mean()
    assert module.loss(logits, target).item() == pytest.approx(manual.item(), rel=1e-6)
    assert torch.allclose(module.scores(logits), p)
    with pytest.raises(ConfigError, match="num_outputs=1"):
        module.loss(torch.zeros(3, 2), target)
    with pytest.raises(ConfigError, match="binary_logit"):
        _module(net, binary_logit=True, num_classes=3)


# ------------------------------------------------------------------ TTA
def _tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_resnet", pretrained=False, num_classes=3).eval()


def test_tta_on_rotation_invariant_input_equals_plain_output():
    net = _tiny_net()
    # a D4-symmetric image: the mean of the 8 dihedral views of a random image
    x = torch.rand(2, 3, 32, 32)
    sym = tta_views(x, "d4").reshape(8, 2, 3, 32, 32).mean(0)
    with torch.no_grad():
        plain = net(sym)
        assert torch.allclose(TTAWrapper(net, "d4")(sym), plain, atol=1e-5)
        # rot8 on a constant image whose value is also the fill of the corners
        const = torch.full((2, 3, 32, 32), 0.7)
        assert torch.allclose(TTAWrapper(net, "rot8", fill=0.7)(const), net(const), atol=1e-5)


@pytest.mark.parametrize("mode", ["rot8", "d4"])
def test_batched_tta_equals_eight_separate_forwards(mode):
    net = _tiny_net()
    x = torch.rand(3, 3, 32, 32)
    fill = [-0.5, 0.1, 0.2]
    calls = []
    net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    with torch.no_grad():
        batched = TTAWrapper(net, mode, fill)(x)
        assert calls == [24]  # ONE forward over the 8 views
        if mode == "rot8":  # each angle resampled on its own
            views = [rotate(x, 45.0 * k, fill) for k in range(8)]
        else:
            views = [torch.rot90(b, k, dims=(-2, -1)) for b in (x, x.flip(-1)) for k in range(4)]
        separate = torch.stack([net(v) for v in views]).mean(0)
    assert batched.shape == (3, 3)
    assert torch.allclose(batched, separate, atol=1e-4)


def test_tta_rejects_unknown_mode_and_non_square_images():
    with pytest.raises(ValueError, match="rot4"):
        TTAWrapper(torch.nn.Identity(), "rot4")
    with pytest.raises(ValueError, match="square"):
        tta_views(torch.zeros(1, 3, 8, 9))


# ------------------------------------------------------------------ subject-level metrics
def test_subject_accuracy_equals_hand_computation():
    # subject A (ALL): probs .9 .8 .4 -> mean .7 -> ALL (correct); cells 2/3 right
    # subject B (ALL): .3 .45 -> mean .375 -> HEM (wrong); cells 0/2 right
    # H1 (normal): .2 .6 .1 .3 -> mean .3 -> HEM (correct); cells 3/4 right
    scores = torch.tensor([0.9, 0.3, 0.2, 0.8, 0.6, 0.45, 0.4, 0.1, 0.3])
    targets = torch.tensor([1, 1, 0, 1, 0, 1, 1, 0, 0])
    subjects = ["A", "B", "H1", "A", "H1", "B", "A", "H1", "H1"]
    values = subject_metrics(scores, targets, subjects)
    assert values["subject_acc"] == pytest.approx(2 / 3)
    assert values["subject_cell_acc_mean"] == pytest.approx((2 / 3 + 0 + 3 / 4) / 3)
    rows = {r["subject"]: r for r in per_subject(scores, targets, subjects)}
    assert rows["A"]["mean_prob"] == pytest.approx(0.7) and rows["B"]["predicted"] == 0
    with pytest.raises(DataError, match="both classes"):
        subject_metrics(torch.tensor([0.1, 0.9]), torch.tensor([0, 1]), ["X", "X"])


# ------------------------------------------------------------------ data protocol, augmentation
def test_challenge_protocol_trains_on_folds_and_validates_on_prelim(tmp_path, demo_data):
    cfg = compose_config([EXPERIMENT, "debug=demo", "model=test_resnet"], tmp_path, demo_data)
    dm = hydra.utils.instantiate(cfg.data, output_dir=str(tmp_path))
    dm.setup()
    assert len(dm.subsets["train"]) == len(dm.dataset) == 120  # all of folds 0-2
    val = dm.subsets["val"].dataset
    assert val.split == "prelim_test" and len(dm.subsets["val"]) == 30
    assert dm.subsets["test"] is dm.subsets["val"]
    saved = json.loads((tmp_path / "split.json").read_text())["subsets"]
    assert {k: len(v) for k, v in saved.items()} == {"train": 120, "val": 30, "test": 30}
    state = dm.state_dict()
    assert state["classes"] == ["hem", "all"] and state["center_crop_fraction"] == pytest.approx(
        2 / 3
    )
    # the subject-grouped split of the training folds instead
    cfg = compose_config(
        [EXPERIMENT, "debug=demo", "data.val_dataset=null", "data.split.group_by=subject"],
        tmp_path,
        demo_data,
    )
    dm = hydra.utils.instantiate(cfg.data, output_dir=str(tmp_path))
    dm.setup()
    subjects = {k: {dm.dataset.subjects[i] for i in s.indices} for k, s in dm.subsets.items()}
    assert not subjects["train"] & subjects["val"] and not subjects["train"] & subjects["test"]


def test_separate_test_dataset_with_a_drawn_train_val_split(tmp_path, demo_data):
    from leuk_lightning.data.datamodules import ClassificationDataModule
    from leuk_lightning.data.datasets import CnmcDataset

    root = demo_data / "demo" / "C-NMC_Leukemia"
    dm = ClassificationDataModule(
        dataset=functools.partial(CnmcDataset, root=root, split="train"),
        test_dataset=functools.partial(CnmcDataset, root=root, split="prelim_test"),
        image_size=32,
        split={"fractions": [0.75, 0.25], "seed": 3, "group_by": "subject"},
        output_dir=str(tmp_path),
    )
    dm.setup()
    train, val = (set(dm.subsets[k].indices) for k in ("train", "val"))
    assert not train & val and len(train) + len(val) == 120
    assert len(dm.subsets["test"]) == 30 and dm.subsets["test"].dataset.split == "prelim_test"
    with pytest.raises(ConfigError, match="two fractions"):
        ClassificationDataModule(
            dataset=functools.partial(CnmcDataset, root=root, split="train"),
            test_dataset=functools.partial(CnmcDataset, root=root, split="prelim_test"),
            split={"fractions": [0.6, 0.2, 0.2], "seed": 0},
        ).setup()


def test_center_crop_fraction_is_the_papers_300_of_450():
    aug = BatchAugment(
        hflip=0.5, vflip=0.5, rotation=360, translate=0.2, center_crop_fraction=2 / 3
    )
    assert aug(torch.rand(4, 3, 450, 450)).shape[-2:] == (300, 300)
    assert aug(torch.rand(4, 3, 64, 64)).shape[-2:] == (43, 43)
    t = BatchTransform(Normalize([0.5] * 3, [0.5] * 3), aug, eval_center_crop_fraction=2 / 3)
    assert t(torch.zeros(2, 3, 64, 64, dtype=torch.uint8), train=False).shape[-2:] == (43, 43)


# ------------------------------------------------------------------ end to end, predict, export
@pytest.fixture(scope="module")
def prellberg_run(tmp_path_factory, demo_data) -> Path:
    """A finished demo run of the experiment (tiny model) through the real entry point."""
    root = tmp_path_factory.mktemp("prellberg")
    proc = run_app([EXPERIMENT, "debug=demo", *_FAST], root, demo_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (root / "logs" / "prellberg_seresnext50" / "runs").glob("*/")
    return run_dir


@pytest.mark.slow
def test_experiment_runs_and_reports_the_papers_metrics(prellberg_run):
    record = json.loads((prellberg_run / "results.json").read_text())
    metrics = record["metrics"]
    for key in (
        "test/acc",
        "test/sensitivity",
        "test/specificity",
        "test/precision_weighted",
        "test/recall_weighted",
        "test/f1_weighted",
        "test/auroc",
        "test/subject_acc",
        "val/f1_weighted_best",
    ):
        assert -1e-6 <= metrics[key] <= 1.0 + 1e-6, key  # (AUROC can exceed 1 by float error)
    assert metrics["test/num_subjects"] == 4  # the demo's preliminary-test donors
    assert metrics["test/recall_weighted"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    rows = list(csv.DictReader((prellberg_run / "subject_accuracy.csv").open()))
    assert len(rows) == 4
    assert record["paper"]["f1_weighted"]["mean"] == 87.89


@pytest.mark.slow
def test_predict_writes_one_row_per_input_including_a_corrupt_file(
    prellberg_run, demo_data, tmp_path
):
    from leuk_lightning.cli.predict import main

    train = demo_data / "demo" / "C-NMC_Leukemia" / "training_data"
    cells = sorted(train.rglob("*.bmp"))[:3]
    folder = tmp_path / "in"
    folder.mkdir()
    for c in cells:
        shutil.copy(c, folder / c.name)
    (folder / "broken.bmp").write_bytes(b"not an image")
    (folder / "notes.md").write_text("ignored: not an image file")
    ckpt = next((prellberg_run / "checkpoints").glob("epoch_*.ckpt"))
    out = tmp_path / "preds.csv"
    assert (
        main([f"ckpt_path={ckpt}", f"input={folder}", f"output={out}", "tta=rot8", "batch_size=2"])
        == 0
    )
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4
    assert list(rows[0]) == ["path", "subject", "pred_class", "prob_all", "error"]
    bad = [r for r in rows if r["error"]]
    assert len(bad) == 1 and bad[0]["path"].endswith("broken.bmp") and bad[0]["pred_class"] == ""
    good = [r for r in rows if not r["error"]]
    assert all(r["pred_class"] in ("hem", "all") and 0 <= float(r["prob_all"]) <= 1 for r in good)
    assert all(r["subject"] and r["subject"] in Path(r["path"]).name for r in good)
    # a file list and a single image give the same probabilities
    listing = tmp_path / "list.txt"
    listing.write_text("# cells\n" + "\n".join(f"in/{c.name}" for c in cells) + "\n")
    out2 = tmp_path / "preds2.csv"
    assert main([f"ckpt_path={ckpt}", f"input={listing}", f"output={out2}", "tta=rot8"]) == 0
    assert [r["prob_all"] for r in csv.DictReader(out2.open())] == [r["prob_all"] for r in good]
    assert main([f"ckpt_path={ckpt}", f"input={tmp_path / 'missing'}"]) == 2
    assert main([f"ckpt_path={ckpt}", f"input={folder}", "tta=rot4"]) == 2


@pytest.mark.slow
def test_predict_matches_the_test_pipeline(prellberg_run, tmp_path):
    """Same preprocessing as evaluation: predicted probabilities equal the module's scores."""
    from leuk_lightning.inference.predict import load_classifier, predict

    ckpt = next((prellberg_run / "checkpoints").glob("epoch_*.ckpt"))
    clf = load_classifier(ckpt)
    assert clf.image_size == 64 and clf.class_names == ["hem", "all"]
    state = torch.load(ckpt, weights_only=False)
    mean, std = state["ClassificationDataModule"]["mean"], state["ClassificationDataModule"]["std"]
    image = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    path = tmp_path / "probe.png"
    Image.fromarray(image[0].permute(1, 2, 0).numpy()).save(path)
    (row,) = predict(clf, [str(path)])
    x = (image.float() / 255)[..., 10:53, 10:53]  # centre 43 of 64
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = clf.net(x)[0, 0].sigmoid().item()
    assert row["probs"][1] == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_onnx_export_matches_pytorch_on_a_batch(prellberg_run, tmp_path):
    import onnxruntime as ort

    from leuk_lightning.cli.export import main
    from leuk_lightning.inference.predict import load_classifier

    ckpt = next((prellberg_run / "checkpoints").glob("epoch_*.ckpt"))
    out = tmp_path / "model.onnx"
    assert main([f"ckpt_path={ckpt}", "format=onnx", f"output={out}"]) == 0
    info = json.loads(out.with_suffix(".onnx.json").read_text())
    assert info["output"]["classes"] == ["hem", "all"]
    batch = torch.rand(5, 3, 64, 64)  # another batch size than the export's example
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": batch.numpy()})[0]
    with torch.no_grad():
        expected = load_classifier(ckpt).inference_model()(batch).numpy()
    assert got.shape == (5, 2)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert main([f"ckpt_path={ckpt}", "format=tflite"]) == 2


# ------------------------------------------------------------------ seed selection
def test_select_keeps_the_best_seed_and_reports_the_spread(tmp_path, capsys):
    from leuk_lightning.cli.select import main

    f1s = [0.86, 0.90, 0.88]
    for i, f1 in enumerate(f1s):
        job = tmp_path / str(i)
        job.mkdir()
        metrics = {
            "val/f1_weighted_best": f1,
            "test/acc": f1 + 0.01,
            "test/f1_weighted": f1,
            "best_checkpoint": f"{job}/checkpoints/epoch_004.ckpt",
        }
        (job / "results.json").write_text(json.dumps({"seed": 10 + i, "metrics": metrics}))
    assert main([str(tmp_path), "--metric", "val/f1_weighted_best"]) == 0
    selected = json.loads((tmp_path / "selected.json").read_text())
    assert selected["seed"] == 11 and selected["value"] == 0.90
    assert selected["spread"]["test/f1_weighted"]["mean"] == pytest.approx(statistics.fmean(f1s))
    assert selected["spread"]["test/f1_weighted"]["std"] == pytest.approx(statistics.stdev(f1s))
    md = (tmp_path / "selection.md").read_text()
    assert "88.00 ± 2.00" in md and "| 86.00 |" in md.replace(
        "| test/f1_weighted | 86.00", "| 86.00 |"
    )
    rows = list(csv.DictReader((tmp_path / "selection.csv").open()))
    assert [r["selected"] for r in rows] == ["0", "1", "0"]
    assert main([str(tmp_path), "--metric", "val/nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_rotate_matches_rot90_and_fills_corners():
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(rotate(x, 90), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-6)
    r = rotate(torch.ones(1, 1, 16, 16), 45, fill=-2.0)
    assert r[0, 0, 0, 0] == pytest.approx(-2.0) and r[0, 0, 8, 8] == pytest.approx(1.0)
    # counter-clockwise like rot90: a dot above the centre moves to the upper left at 45 degrees
    dot = torch.zeros(1, 1, 17, 17)
    dot[0, 0, 2, 8] = 1.0
    peak = rotate(dot, 45).flatten().argmax().item()
    assert (peak // 17, peak % 17) in {(3, 3), (3, 4), (4, 3), (4, 4)}
