"""Issue 17: your own cells (class folders, CSV manifests), more than two classes end to end."""

from __future__ import annotations

import csv
import functools
import json
import os
import shutil
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from helpers import compose_config, run_app
from omegaconf import OmegaConf

from leuk_lightning.data import stats
from leuk_lightning.data.cache import CachedDataset
from leuk_lightning.data.datamodules.classification import ClassificationDataModule
from leuk_lightning.data.datasets import FolderDataset, ManifestDataset
from leuk_lightning.data.synthetic.own_data import OWN_CLASSES, write_image_folder, write_manifest
from leuk_lightning.errors import ConfigError, DataError
from leuk_lightning.evaluation import metrics as M

SUBJECT = "^[^/]+/([^/]+)/"  # the folder below the class folder


@pytest.fixture(scope="module")
def own(tmp_path_factory) -> dict[str, Path]:
    """A 4-class nested folder tree and a CSV manifest with subjects and a split column
    (4 classes x 3 subjects x 4 images = 48 images each, 32 px); read-only for the tests."""
    root = tmp_path_factory.mktemp("own")
    return {
        "folder": write_image_folder(root / "cells"),
        "csv": write_manifest(root / "listed"),
        "data_dir": root,
    }


@pytest.fixture
def folder_rw(own, tmp_path) -> Path:
    dst = tmp_path / "cells"
    shutil.copytree(own["folder"], dst)
    return dst


@pytest.fixture
def csv_rw(own, tmp_path) -> Path:
    dst = tmp_path / "listed"
    shutil.copytree(own["csv"].parent, dst)
    return dst / "cells.csv"


def _rewrite(csv_path: Path, edit) -> None:
    rows = list(csv.reader(csv_path.open()))
    rows = edit(rows)
    with csv_path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)


# ------------------------------------------------------------------ folder dataset
def test_folder_dataset_counts_classes_nested_order_and_subjects(own):
    ds = FolderDataset(own["folder"], subject_pattern=SUBJECT)
    assert ds.classes == list(OWN_CLASSES) and len(ds) == 48
    assert torch.bincount(ds.labels).tolist() == [12, 12, 12, 12]
    rel = [Path(p).relative_to(own["folder"]).as_posix() for p in ds.paths[:5]]
    assert rel == ["benign/p000/1.png", "benign/p000/2.jpg", "benign/p000/3.bmp",
                   "benign/p000/4.tif", "benign/p001/1.png"]  # fmt: skip
    assert len(set(ds.subjects)) == 12 and ds.subjects[0] == "p000"
    sample = ds[13]
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 32, 32)
    assert sample["label"] == 1 and sample["subject"] == "p100"
    assert not hasattr(FolderDataset(own["folder"]), "subjects")  # no pattern: no subjects


def test_folder_natural_order_and_deep_nesting(tmp_path):
    write_image_folder(tmp_path / "c", classes=("b10", "b2"), n_subjects=1, images_per_subject=1)
    deep = tmp_path / "c" / "b2" / "x" / "y"
    deep.mkdir(parents=True)
    src = next((tmp_path / "c" / "b2").rglob("*.png"))
    for name in ("10.png", "2.png"):
        shutil.copy(src, deep / name)
    ds = FolderDataset(tmp_path / "c")
    assert ds.classes == ["b2", "b10"]  # natural order, not "b10" < "b2"
    names = [Path(p).relative_to(tmp_path / "c").as_posix() for p in ds.paths]
    assert names == ["b2/p100/1.png", "b2/x/y/2.png", "b2/x/y/10.png", "b10/p000/1.png"]
    os.symlink(tmp_path / "c" / "b2", deep / "loop")  # a link to an ancestor ends, no loop
    assert len(FolderDataset(tmp_path / "c")) == 4


def test_folder_classes_and_positive_class_fix_the_order(own):
    ds = FolderDataset(own["folder"], classes=["pro_b", "pre_b", "early_pre_b", "benign"])
    assert ds.classes == ["pro_b", "pre_b", "early_pre_b", "benign"]
    assert ds.labels[0] == 0 and Path(ds.paths[0]).parts[-3] == "pro_b"
    with pytest.raises(ConfigError, match="applies to two classes only"):
        FolderDataset(own["folder"], positive_class="benign")
    with pytest.raises(ConfigError, match="'nope' is not one of the classes"):
        FolderDataset(own["folder"], positive_class="nope")


def test_positive_class_becomes_index_one(tmp_path):
    root = write_image_folder(tmp_path / "c", classes=("all", "hem"), n_subjects=1)
    assert FolderDataset(root).classes == ["all", "hem"]
    ds = FolderDataset(root, positive_class="all")
    assert ds.classes == ["hem", "all"]
    assert all(Path(p).parts[-3] == ("all" if y else "hem") for p, y in zip(ds.paths, ds.labels))


def test_folder_bad_inputs_each_name_the_file(folder_rw):
    # unknown label: a folder that is not one of the given classes
    with pytest.raises(DataError, match=r"pro_b.* not one of the classes .*unknown label"):
        FolderDataset(folder_rw, classes=["benign", "early_pre_b", "pre_b"])
    # a listed class without a folder
    with pytest.raises(DataError, match=r"\['blast'\] have no folder \(empty class\)"):
        FolderDataset(folder_rw, classes=[*OWN_CLASSES, "blast"])
    # a stray non-image file
    (folder_rw / "pre_b" / "p200" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"not images: .*pre_b/p200/notes\.txt"):
        FolderDataset(folder_rw)
    assert len(FolderDataset(folder_rw, other_files="ignore")) == 48
    (folder_rw / "pre_b" / "p200" / "notes.txt").unlink()
    # a file outside every class folder
    (folder_rw / "stray.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"outside every class folder: stray\.png"):
        FolderDataset(folder_rw)
    (folder_rw / "stray.png").unlink()
    # the same file twice (a link into another class)
    os.symlink(folder_rw / "benign" / "p000" / "1.png", folder_rw / "pro_b" / "p300" / "9.png")
    with pytest.raises(DataError, match=r"p300/9\.png and .*benign/p000/1\.png are the same file"):
        FolderDataset(folder_rw)
    (folder_rw / "pro_b" / "p300" / "9.png").unlink()
    # a subject pattern that does not match a nested path
    with pytest.raises(DataError, match=r"finds no subject in benign/p000/1\.png"):
        FolderDataset(folder_rw, subject_pattern=r"^([^/]+)/zzz")
    # an empty class folder (hidden files do not count)
    empty = folder_rw / "blast" / "p9"
    empty.mkdir(parents=True)
    (empty / ".DS_Store").write_text("")
    with pytest.raises(DataError, match=r"class folder .*blast has no images \(empty class\)"):
        FolderDataset(folder_rw)
    shutil.rmtree(folder_rw / "blast")
    # an unreadable image: the error names it when it is decoded, or it is skipped
    bad = folder_rw / "pre_b" / "p201" / "2.jpg"
    bad.write_bytes(b"not an image")
    ds = FolderDataset(folder_rw)
    with pytest.raises(DataError, match=r"cannot decode image .*pre_b/p201/2\.jpg"):
        ds[ds.paths.index(str(bad))]
    assert FolderDataset(folder_rw, on_bad_image="skip").skipped == [str(bad)]


def test_folder_missing_root_and_no_classes(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        FolderDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no class sub-folders"):
        FolderDataset(tmp_path / "empty")


# ------------------------------------------------------------------ CSV manifest
def test_manifest_counts_subjects_split_and_row_order(own):
    ds = ManifestDataset(own["csv"])
    assert ds.classes == list(OWN_CLASSES) and len(ds) == 48
    assert torch.bincount(ds.labels).tolist() == [12, 12, 12, 12]
    rows = list(csv.DictReader(own["csv"].open()))
    assert [Path(p).name for p in ds.paths] == [Path(r["path"]).name for r in rows]
    assert ds.subjects == [r["subject"] for r in rows] and ds.lines[0] == 2
    assert ds.split_names.count("train") == 16 and ds.split_names.count("test") == 16
    test = ManifestDataset(own["csv"], split="test")
    assert len(test) == 16 and test.classes == ds.classes and set(test.split_names) == {"test"}
    assert ds[0]["subject"] == "p000" and ds[0]["image"].shape == (3, 32, 32)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda rows: [[c for i, c in enumerate(r) if i != 1] for r in rows],
         r"lacks column\(s\) \['label'\]"),
        (lambda rows: [rows[0], rows[1], [rows[2][0], "", *rows[2][2:]], *rows[3:]],
         r"line 3: empty 'label'"),
        (lambda rows: [*rows[:4], ["../listed/" + rows[2][0], *rows[2][1:]], *rows[4:]],
         r"line 5: \.\./listed/images/0001_p000\.png is already listed on line 3 \(duplicate"),
        (lambda rows: [*rows[:3], ["images/missing.png", *rows[3][1:]], *rows[4:]],
         r"1 listed image\(s\) do not exist: line 4: images/missing\.png"),
        (lambda rows: [*rows[:2], [*rows[2][:3], "holdout"], *rows[3:]],
         r"line 3: split 'holdout' is not one of"),
        (lambda rows: rows[:1], "has a header but no rows"),
    ],
    ids=["missing-column", "empty-label", "duplicate-path", "missing-file", "bad-split", "empty"],
)  # fmt: skip
def test_manifest_bad_rows_name_the_line(csv_rw, edit, message):
    _rewrite(csv_rw, edit)
    with pytest.raises(DataError, match=message):
        ManifestDataset(csv_rw)


def test_manifest_unknown_label_empty_class_and_unreadable_image(csv_rw):
    with pytest.raises(DataError, match=r"line 2: label 'benign' is not one of .*unknown label"):
        ManifestDataset(csv_rw, classes=["early_pre_b", "pre_b", "pro_b"])
    with pytest.raises(DataError, match=r"\['blast'\] have no rows \(empty class\)"):
        ManifestDataset(csv_rw, classes=[*OWN_CLASSES, "blast"])
    bad = csv_rw.parent / "images" / "0005_p001.png"
    bad.write_bytes(b"\x89PNG broken")
    ds = ManifestDataset(csv_rw)
    with pytest.raises(DataError, match=r"cannot decode image .*0005_p001\.png"):
        ds[5]
    with pytest.raises(DataError, match="does not exist or is not a file"):
        ManifestDataset(csv_rw.parent / "other.csv")
    _rewrite(csv_rw, lambda rows: [r[:3] for r in rows])  # no split column
    with pytest.raises(DataError, match="has no 'split' column"):
        ManifestDataset(csv_rw, split="train")


# ------------------------------------------------------------------ datamodule: split, cache, stats
def _datamodule(own, tmp_path, data: str, *overrides: str) -> ClassificationDataModule:
    args = [f"data={data}", "debug=demo", "data.image_size=32", *overrides]
    args += [f"data.dataset.root={own['folder']}", f"data.dataset.subject_pattern='{SUBJECT}'"]
    if data == "csv_manifest":
        args = [a for a in args if not a.startswith("data.dataset.")]
        args += [f"data.dataset.csv_path={own['csv']}"]
    cfg = compose_config(args, tmp_path, own["data_dir"])
    dm = hydra.utils.instantiate(cfg.data, output_dir=str(tmp_path / "run"))
    dm.cache_dir = str(tmp_path / "cache")
    dm.setup()
    return dm


@pytest.mark.parametrize("data", ["image_folder", "csv_manifest"])
def test_grouped_protocol_keeps_subjects_apart_with_cache_and_train_stats(own, tmp_path, data):
    dm = _datamodule(own, tmp_path, data, "protocol=cnmc_grouped", "data.split.repeat=2")
    assert isinstance(dm.dataset, CachedDataset)  # decoded once into the uint8 cache
    subjects = np.asarray(dm.dataset.subjects)
    seen = {name: set(subjects[idx]) for name, idx in dm.split_indices.items()}
    assert all(seen.values())
    assert not (seen["train"] & seen["val"] or seen["train"] & seen["test"])
    assert not seen["val"] & seen["test"]
    assert sum(len(v) for v in dm.split_indices.values()) == 48
    saved = json.loads((tmp_path / "run" / "split.json").read_text())
    assert saved["meta"]["split"]["group_by"] == "subject"
    mean, std = stats.channel_mean_std(dm.dataset, dm.split_indices["train"])
    np.testing.assert_allclose(dm.mean, mean, rtol=1e-6)  # from the training subset only
    other, _ = stats.channel_mean_std(dm.dataset, dm.split_indices["test"])
    assert not np.allclose(dm.mean, other)
    assert dm.regime_kwargs()["class_names"] == list(OWN_CLASSES)
    assert dm.model_kwargs() == {"num_classes": 4}


def test_fixed_protocol_uses_the_manifests_split_column(own, tmp_path):
    dm = _datamodule(own, tmp_path, "csv_manifest", "data.split.protocol=fixed")
    names = np.asarray(dm.dataset.split_names)
    for subset in ("train", "val", "test"):
        assert (names[dm.split_indices[subset]] == subset).all()
        assert len(dm.split_indices[subset]) == int((names == subset).sum())
    with pytest.raises(ConfigError, match="states no split per image"):
        _datamodule(own, tmp_path / "f", "image_folder", "data.split.protocol=fixed")


def test_folder_group_by_without_subjects_is_a_config_error(own, tmp_path):
    dm = functools.partial(FolderDataset, root=own["folder"])
    with pytest.raises(ConfigError, match="has no 'subjects' to group by"):
        ClassificationDataModule(
            dm, image_size=32, split={"group_by": "subject"}, cache=False
        ).setup()


# ------------------------------------------------------------------ more than two classes
def test_multiclass_metrics_have_no_binary_only_figures_and_per_class_sensitivity():
    target = torch.tensor([0, 0, 0, 0, 1, 2, 3, 3])  # imbalanced: macro != micro
    pred = torch.tensor([0, 0, 0, 1, 1, 2, 3, 0])
    probs = torch.nn.functional.one_hot(pred, 4).float() * 0.7 + 0.075
    metrics = M.multiclass_metrics(4)
    metrics.update(probs, target)
    values = {k: float(v) for k, v in metrics.compute().items()}
    assert "sensitivity" not in values and "specificity" not in values
    assert values["acc"] == pytest.approx(6 / 8)
    assert values["recall_macro"] == pytest.approx((0.75 + 1 + 1 + 0.5) / 4)
    assert values["recall_weighted"] == pytest.approx(values["acc"])
    per_class = M.per_class_sensitivity(4)
    per_class.update(probs, target)
    assert per_class.compute().tolist() == [0.75, 1.0, 1.0, 0.5]
    keys = M.per_class_keys("test/", ["benign", "early pre-B", "pre/B", "pre B"])
    assert keys == ["test/sensitivity_benign", "test/sensitivity_early_pre-B",
                    "test/sensitivity_pre_B_2", "test/sensitivity_pre_B_3"]  # fmt: skip


def test_nxn_confusion_text_is_readable():
    cm = torch.tensor([[5, 1, 0, 0], [0, 3, 2, 0], [0, 0, 4, 0], [1, 0, 0, 0]])
    text = M.format_confusion_matrix(cm, list(OWN_CLASSES))
    lines = text.splitlines()
    assert lines[0].split() == ["true", "\\", "pred", "0", "1", "2", "3", "sensitivity"]
    assert lines[2].split() == ["1", "early_pre_b", "0", "3", "2", "0", "60.0%"]
    assert lines[4].split()[-1] == "0.0%" and lines[-1] == "12 of 16 correct (75.0%)"
    assert len({len(line) for line in lines[:-1]}) == 1  # aligned columns
    assert max(len(line) for line in lines) < 60


# ------------------------------------------------------------------ end to end (slow)
_TINY = [
    "debug=demo",
    "model=test_resnet",
    "data.image_size=32",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
]


def _only_run(root: Path, task: str) -> Path:
    (run_dir,) = (root / "logs" / task / "runs").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, demo_data) -> Path:
    """HistoTNet fine-tuning (ADP stage, 1 epoch) on a nested 4-class folder, grouped split."""
    root = tmp_path_factory.mktemp("folder_run")
    cells = write_image_folder(root / "cells", n_subjects=4)
    args = ["+experiment=histotnet_resnet18_l2", *_TINY, "data=image_folder"]
    args += [f"data.dataset.root={cells}", f"data.dataset.subject_pattern='{SUBJECT}'"]
    args += ["protocol=cnmc_grouped", "data.split.fractions=[0.5,0.25,0.25]"]
    args += ["pretrain.trainer.max_epochs=1", "+pretrain.trainer.limit_train_batches=2"]
    proc = run_app(args, root, demo_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _only_run(root, "histotnet_resnet18_l2")


@pytest.fixture(scope="module")
def manifest_run(tmp_path_factory, demo_data) -> Path:
    """The plain classifier on a 4-class CSV manifest with subjects, subject-grouped protocol."""
    root = tmp_path_factory.mktemp("manifest_run")
    listed = write_manifest(root / "listed", n_subjects=4, with_split=False)
    args = [*_TINY, "data=csv_manifest", f"data.dataset.csv_path={listed}", "task_name=own_csv"]
    args += ["protocol=cnmc_grouped", "data.split.fractions=[0.5,0.25,0.25]"]
    proc = run_app(args, root, demo_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _only_run(root, "own_csv")


def _check_four_class_run(run_dir: Path, subjects_of) -> dict:
    metrics = json.loads((run_dir / "results.json").read_text())["metrics"]
    assert metrics["class_names"] == list(OWN_CLASSES)
    cm = np.asarray(metrics["confusion_matrix"])
    split = json.loads((run_dir / "split.json").read_text())
    subsets = split["subsets"]
    assert cm.shape == (4, 4) and cm.sum() == len(subsets["test"])
    assert sum(len(v) for v in subsets.values()) == 64  # 4 classes x 4 subjects x 4 images
    owners: dict[str, str] = {}
    for name, files in subsets.items():
        for f in files:
            assert owners.setdefault(subjects_of(f), name) == name, f  # no subject in two subsets
    assert "test/sensitivity" not in metrics and "test/specificity" not in metrics
    for key in ("test/recall_macro", "test/f1_macro", "test/f1_weighted", "test/auroc"):
        assert 0.0 <= metrics[key] <= 1.0 + 1e-6, key
    per_class = [metrics[f"test/sensitivity_{c}"] for c in OWN_CLASSES]
    recall = [cm[i, i] / cm[i].sum() if cm[i].sum() else 0.0 for i in range(4)]
    np.testing.assert_allclose(per_class, recall, atol=1e-6)
    text = (run_dir / "confusion_matrix.txt").read_text().splitlines()
    assert [line.split()[1] for line in text[1:5]] == list(OWN_CLASSES)
    return metrics


@pytest.mark.slow
def test_folder_through_histotnet_recipe_and_grouped_protocol(folder_run):
    _check_four_class_run(folder_run, lambda f: Path(f).parts[-2])


@pytest.mark.slow
def test_manifest_through_classifier_and_grouped_protocol(manifest_run):
    _check_four_class_run(manifest_run, lambda f: Path(f).stem.split("_")[1])


@pytest.mark.slow
def test_predict_export_explain_and_report_on_four_classes(folder_run, tmp_path, demo_data):
    import onnxruntime as ort

    from leuk_lightning.cli.export import main as export_main
    from leuk_lightning.cli.predict import main as predict_main
    from leuk_lightning.evaluation import explain as E
    from leuk_lightning.evaluation import report as R

    ckpt = json.loads((folder_run / "results.json").read_text())["metrics"]["best_checkpoint"]
    root = Path(OmegaConf.load(folder_run / ".hydra" / "config.yaml").data.dataset.root)
    out = tmp_path / "preds.csv"
    assert predict_main([f"ckpt_path={ckpt}", f"input={root / 'pre_b'}", f"output={out}"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 16  # nested sub-folders are read too
    assert list(rows[0])[2:7] == ["pred_class", *[f"prob_{c}" for c in OWN_CLASSES]]
    assert all(r["pred_class"] in OWN_CLASSES for r in rows)
    for r in rows:
        assert sum(float(r[f"prob_{c}"]) for c in OWN_CLASSES) == pytest.approx(1, abs=1e-4)
    onnx = tmp_path / "model.onnx"
    assert export_main([f"ckpt_path={ckpt}", "format=onnx", f"output={onnx}"]) == 0
    assert json.loads(onnx.with_suffix(".onnx.json").read_text())["output"]["classes"] == list(
        OWN_CLASSES
    )
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    assert session.run(None, {"image": np.random.rand(3, 3, 32, 32).astype("float32")})[
        0
    ].shape == (
        3,
        4,
    )
    explained = E.explain(ckpt, method="all", n_images=4, out_dir=tmp_path / "explained")
    n_test = len(json.loads((folder_run / "split.json").read_text())["subsets"]["test"])
    assert len(explained["tsne"]["labels"]) == n_test
    assert len(list((tmp_path / "explained" / "gradcam").glob("*.png"))) == 4
    rep = R.build_report([folder_run.parent], tmp_path / "rep", n_boot=200)
    md = rep["markdown"]
    assert "Macro recall (%)" in md and "Macro F1 (%)" in md
    assert "Sensitivity (%)" not in md.split("\n\n")[1]  # the main table: no binary-only columns
    assert "Per-class sensitivity (%)" in md and "| early_pre_b |" in md
    assert "| 3 (pro_b) |" in md  # the 4 x 4 average confusion matrix
    header = (tmp_path / "rep" / "report.csv").read_text().splitlines()[0]
    assert "recall_macro_mean" in header and "cm_pct_3_3" in header


@pytest.mark.slow
def test_prellberg_recipe_with_tta_on_a_binary_manifest_with_fixed_split(tmp_path, demo_data):
    """Two classes: ``positive_class`` makes "all" index 1, so sensitivity is the recall of
    "all"; the CSV's split column is the split; rot8 TTA and subject-level accuracy run."""
    listed = write_manifest(tmp_path / "listed", classes=("all", "hem"), n_subjects=3)
    args = ["+experiment=prellberg_seresnext50", *_TINY, "data=csv_manifest"]
    args += [f"data.dataset.csv_path={listed}", "data.dataset.positive_class=all"]
    args += ["data.split.protocol=fixed", "regime.tta=rot8"]
    proc = run_app(args, tmp_path, demo_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = _only_run(tmp_path, "prellberg_seresnext50")
    metrics = json.loads((run_dir / "results.json").read_text())["metrics"]
    assert metrics["class_names"] == ["hem", "all"]
    rows = list(csv.DictReader(listed.open()))
    test_files = json.loads((run_dir / "split.json").read_text())["subsets"]["test"]
    assert sorted(Path(f).name for f in test_files) == sorted(
        Path(r["path"]).name for r in rows if r["split"] == "test"
    )
    cm = np.asarray(metrics["confusion_matrix"])  # rows: true hem, true all
    assert cm.shape == (2, 2) and cm.sum() == 8
    assert metrics["test/sensitivity"] == pytest.approx(cm[1, 1] / cm[1].sum(), abs=1e-6)
    assert metrics["test/specificity"] == pytest.approx(cm[0, 0] / cm[0].sum(), abs=1e-6)
    assert metrics["test/num_subjects"] == 2  # one test subject per class
    assert not any(k.startswith("test/sensitivity_") for k in metrics)


@pytest.mark.slow
def test_folder_as_the_dl4all_target_domain(tmp_path, demo_data):
    cells = write_image_folder(tmp_path / "cells", n_subjects=2)
    args = ["+experiment=dl4all_regular_resnet18_l1", "debug=demo", "data=adp_image_folder"]
    args += [f"data.target_dataset.root={cells}", "model.name=test_resnet", "data.image_size=32"]
    args += ["trainer.max_epochs=3", "+trainer.limit_train_batches=2"]
    args += ["callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]
    proc = run_app(args, tmp_path, demo_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = _only_run(tmp_path, "dl4all_regular_resnet18_l1")
    metrics = json.loads((run_dir / "results.json").read_text())["metrics"]
    assert metrics["class_names"] == list(OWN_CLASSES)
    assert np.asarray(metrics["confusion_matrix"]).shape == (4, 4)
    target = json.loads((run_dir / "split_target.json").read_text())
    assert len({f for v in target["subsets"].values() for f in v}) == 32  # every target image
    assert "test/recall_macro" in metrics and "test/sensitivity" not in metrics


def test_report_of_four_class_runs_has_macro_columns_and_per_class_sensitivity(tmp_path):
    from leuk_lightning.evaluation import report as R

    for num, (acc, sens_b) in enumerate([(0.5, 0.25), (0.7, 0.75)]):
        job = tmp_path / "own" / "multiruns" / "t" / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- data.split.repeat={num}\n")
        (job / ".hydra" / "config.yaml").write_text("task_name: own\nseed: 1\n")
        cm = np.diag([4 + num, 3, 2, 1]).tolist()
        metrics = {"test/acc": acc, "test/recall_macro": acc - 0.1, "test/f1_macro": acc - 0.2,
                   "test/f1_weighted": acc, "test/auroc": 0.9, "test/sensitivity_benign": sens_b,
                   "test/sensitivity_pro_b": 1.0, "confusion_matrix": cm,
                   "class_names": list(OWN_CLASSES)}  # fmt: skip
        record = {"task_name": "own", "tags": [], "seed": 1, "metrics": metrics, "paper": None}
        (job / "results.json").write_text(json.dumps(record))
    rep = R.build_report([tmp_path / "own"], tmp_path / "rep", n_boot=100)
    table = rep["markdown"].split("\n\n")[1]
    assert "| Macro recall (%) | Macro F1 (%) |" in table
    assert "Sensitivity" not in table and "Specificity" not in table
    assert "| 50.00 ± 14.14 |" in table  # macro recall: 40 and 60 (sample std)
    assert "| benign | 50.00 ± 35.36 |" in rep["markdown"]  # per class: 25 and 75
    assert "| 3 (pro_b) |" in rep["markdown"]
    runs = list(csv.DictReader((tmp_path / "rep" / "runs.csv").open()))
    assert [r["test/sensitivity_benign"] for r in runs] == ["0.25", "0.75"]
    (row,) = csv.DictReader((tmp_path / "rep" / "report.csv").open())
    assert float(row["recall_macro_mean"]) == pytest.approx(50.0)
    assert float(row["sensitivity_benign_mean"]) == pytest.approx(50.0)


@pytest.mark.parametrize("name", ["adp_image_folder", "adp_csv_manifest"])
def test_own_target_dl4all_configs_stay_in_step_with_adp_cnmc(name):
    """Apart from the target dataset, the own-data DL4ALL configs equal adp_cnmc.yaml."""
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "conf" / "data"
    base = OmegaConf.to_container(OmegaConf.load(conf / "adp_cnmc.yaml"))
    own = OmegaConf.to_container(OmegaConf.load(conf / f"{name}.yaml"))
    assert base.pop("target_dataset")["_target_"] != own.pop("target_dataset")["_target_"]
    assert own == base
