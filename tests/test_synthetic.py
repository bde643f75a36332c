"""Synthetic look-alike datasets: real layouts, determinism, learnable classes, demo data."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression

from leuk_lightning.data import synthetic
from leuk_lightning.data.datasets import (
    ADP_COLUMNS,
    ADP_CSV_NAME,
    AdpDataset,
    AllIdb2Dataset,
    CnmcDataset,
)
from leuk_lightning.errors import ConfigError


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    "write",
    [
        lambda root, seed: synthetic.write_all_idb2(root, n=6, size=16, seed=seed),
        lambda root, seed: synthetic.write_adp(
            root, n_slides=2, patches_per_slide=3, size=16, seed=seed, with_release_split=True
        ),
        lambda root, seed: synthetic.write_cnmc(
            root,
            n_subjects_all=1,
            n_subjects_hem=1,
            images_per_subject=2,
            n_prelim=3,
            n_final=2,
            size=16,
            seed=seed,
            layout="official",
        ),
    ],
    ids=["all_idb2", "adp", "cnmc"],
)
def test_writers_are_deterministic(tmp_path: Path, write) -> None:
    write(tmp_path / "a", 5)
    write(tmp_path / "b", 5)
    write(tmp_path / "c", 6)
    a, b, c = (tree_bytes(tmp_path / k) for k in "abc")
    assert a and a == b
    assert a != c


def test_all_idb2_layout(tmp_path: Path) -> None:
    root = synthetic.write_all_idb2(tmp_path / "ALL_IDB2", n=60, size=32, seed=0)
    files = sorted((root / "img").iterdir())
    assert [f.name for f in files] == sorted(f.name for f in files)
    assert all(re.fullmatch(r"Im\d{3}_[01]\.tif", f.name) for f in files) and len(files) == 60
    assert sum(f.name.endswith("_1.tif") for f in files) == 30
    sizes = [Image.open(f).size for f in files]
    assert all(max(s) == 32 for s in sizes)
    assert any(min(s) < 32 for s in sizes)  # a few border crops are smaller, like the release
    assert Image.open(files[0]).mode == "RGB"


def test_adp_layout_and_hierarchy(tmp_path: Path) -> None:
    root = synthetic.write_adp(
        tmp_path / "ADP",
        n_slides=12,
        patches_per_slide=10,
        size=16,
        empty_columns=["N.G.A", "N.G.O"],
    )
    with open(root / ADP_CSV_NAME, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["Patch Names", *ADP_COLUMNS] and len(rows) == 121
    names = [r[0] for r in rows[1:]]
    assert names == sorted(names)
    y = np.array([[int(v) for v in r[1:]] for r in rows[1:]])
    assert np.all(y.sum(1) >= 1)
    for j, col in enumerate(ADP_COLUMNS):
        if "." in col:
            parent = ADP_COLUMNS.index(col.rsplit(".", 1)[0])
            assert np.all(y[:, parent] >= y[:, j]), col
    assert (
        y[:, ADP_COLUMNS.index("N.G.A")].sum() == 0 and y[:, ADP_COLUMNS.index("N.G.O")].sum() == 0
    )
    slides = {n.split(".png_crop_")[0] for n in names}
    assert {"001", "59", "119_R01", "HE#2", "PP7"} <= slides and len(slides) == 12
    pngs = sorted(p.name for p in (root / "img_res_1um_bicubic").iterdir())
    assert pngs == sorted(names)


def test_cnmc_layouts_on_disk(tmp_path: Path) -> None:
    kaggle = synthetic.write_cnmc(
        tmp_path / "k",
        n_subjects_all=3,
        n_subjects_hem=3,
        images_per_subject=2,
        n_prelim=4,
        n_final=2,
        size=16,
    )
    assert kaggle == tmp_path / "k" / "C-NMC_Leukemia"
    assert (kaggle / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv").is_file()
    assert (kaggle / "testing_data" / "C-NMC_test_final_phase_data" / "2.bmp").is_file()
    names = [p.name for p in (kaggle / "training_data").rglob("*.bmp")]
    assert all(re.fullmatch(r"UID_[0-9Hh]+_\d+_\d+_(all|hem)\.bmp", n) for n in names)
    assert any(n.startswith("UID_h3_") for n in names)
    official = synthetic.write_cnmc(
        tmp_path / "o",
        layout="official",
        nested_folds=True,
        n_subjects_all=1,
        n_subjects_hem=1,
        images_per_subject=1,
        n_prelim=2,
        n_final=1,
        size=16,
    )
    assert official == tmp_path / "o"
    prelim = official / "C-NMC_test_prelim_phase_data"
    assert (prelim / "C-NMC_test_prelim_phase_data_labels.csv").is_file()
    assert list((official / "C-NMC_training_data" / "fold_0" / "fold_0" / "all").glob("*.bmp"))
    img = np.asarray(Image.open(prelim / "1.bmp"))
    assert img.shape == (16, 16, 3) and (img[0, 0] == 0).all()
    with pytest.raises(ConfigError, match="layout"):
        synthetic.write_cnmc(tmp_path / "x", layout="zenodo")


def _pixels(ds, size: int = 12) -> np.ndarray:
    return np.stack(
        [np.asarray(ds.load_image(i), dtype=np.float32).ravel() / 255 for i in range(len(ds))]
    )


CLEAN = synthetic.CellVariation()  # every realism knob off: the class prototypes


@pytest.mark.parametrize("which", ["all_idb2", "cnmc"])
def test_clean_cell_classes_are_learnable(tmp_path: Path, which: str) -> None:
    """Without the realism knobs, even a linear model on 12x12 thumbnails separates the classes
    of held-out images: the phenotypes themselves carry the label."""
    if which == "all_idb2":
        root = synthetic.write_all_idb2(tmp_path, n=80, size=32, seed=1, variation=CLEAN)
        ds = AllIdb2Dataset(root, image_size=12)
    else:
        base = synthetic.write_cnmc(
            tmp_path,
            n_subjects_all=4,
            n_subjects_hem=4,
            images_per_subject=10,
            n_prelim=2,
            n_final=1,
            size=32,
            seed=1,
            variation=CLEAN,
        )
        ds = CnmcDataset(base, image_size=12)
    x, y = _pixels(ds), ds.labels.numpy()
    model = LogisticRegression(max_iter=2000).fit(x[::2], y[::2])
    assert model.score(x[1::2], y[1::2]) >= 0.9


def _nucleus_darkness_says_blast(ds) -> np.ndarray:
    """A rule that reads the phenotype of clean cells: the darkest green values of a crop
    are a normal cell's dark nucleus (G ~ 28) or a blast's light one (G ~ 100)."""
    low = [np.percentile(np.asarray(ds.load_image(i))[1], 1) for i in range(len(ds))]
    return np.asarray(low) > 58


def test_label_noise_rate_is_measured_on_the_generated_labels(tmp_path: Path) -> None:
    """With clean morphology the phenotype is readable by a fixed rule; the share of crops
    whose phenotype disagrees with the label in the file name is the label-noise rate."""
    noisy = synthetic.CellVariation(label_noise=0.2)
    ds = AllIdb2Dataset(synthetic.write_all_idb2(tmp_path / "n", n=240, size=32, variation=noisy))
    disagree = np.mean(_nucleus_darkness_says_blast(ds) != ds.labels.numpy().astype(bool))
    assert 0.13 <= disagree <= 0.27, disagree
    clean = AllIdb2Dataset(synthetic.write_all_idb2(tmp_path / "c", n=80, size=32, variation=CLEAN))
    assert np.array_equal(_nucleus_darkness_says_blast(clean), clean.labels.numpy().astype(bool))


def _subject_colour_f(base: Path) -> float:
    """Smallest one-way ANOVA F (over the two classes) of the crops' chromaticity between
    subjects: how much more the subjects differ from one another than their cells do."""
    from scipy.stats import f_oneway

    ds = CnmcDataset(base)
    features = []
    for i in range(len(ds)):
        img = np.asarray(ds.load_image(i), dtype=np.float64).reshape(3, -1)
        fg = img[:, img.sum(0) > 0]
        features.append(fg.mean(1) / fg.mean())  # colour, not brightness
    features = np.asarray(features)
    labels, subjects = ds.labels.numpy(), np.asarray(ds.subjects)
    fs = []
    for label in (0, 1):
        groups = [
            features[(labels == label) & (subjects == s)] for s in set(subjects[labels == label])
        ]
        fs.append(max(f_oneway(*groups).statistic))  # the most shifted channel
    return min(fs)


def test_per_subject_stain_shift_is_measurable_between_subjects(tmp_path: Path) -> None:
    """The cells of one C-NMC subject share a colour that differs between subjects (the
    subject effect that makes image-level splits optimistic); without ``stain`` they do not."""
    kwargs = dict(n_subjects_all=4, n_subjects_hem=4, images_per_subject=8, n_prelim=1, n_final=1)
    stained = synthetic.write_cnmc(
        tmp_path / "s", size=24, variation=synthetic.CellVariation(stain=0.15), **kwargs
    )
    plain = synthetic.write_cnmc(tmp_path / "p", size=24, variation=CLEAN, **kwargs)
    default = synthetic.write_cnmc(tmp_path / "d", size=24, **kwargs)  # CNMC_VARIATION
    assert _subject_colour_f(stained) > 15.0  # measured: 37.7
    assert _subject_colour_f(default) > 5.0  # 10.5 (its other knobs add within-subject spread)
    assert _subject_colour_f(plain) < 5.0  # 1.5


def test_blur_and_variation_knobs_change_the_pixels(tmp_path: Path) -> None:
    """Focus blur lowers the images' sharpness; bad knob values are refused."""

    def sharpness(variation) -> float:
        root = synthetic.write_all_idb2(
            tmp_path / str(id(variation)), n=12, size=32, variation=variation
        )
        imgs = [
            np.asarray(Image.open(p), dtype=np.float32) for p in sorted((root / "img").iterdir())
        ]
        return float(np.mean([np.abs(np.diff(im, axis=1)).mean() for im in imgs]))

    assert sharpness(synthetic.CellVariation(blur=4.0)) < 0.8 * sharpness(CLEAN)
    with pytest.raises(ValueError, match="overlap"):
        synthetic.CellVariation(overlap=-0.1)
    with pytest.raises(ConfigError, match="bad look-alike variation"):
        synthetic.write_all_idb2(tmp_path / "x", n=2, size=16, variation={"label_noise": 0.9})


def test_adp_classes_are_learnable(tmp_path: Path) -> None:
    """Level-1 classes (region colours) are recoverable from colour histograms, linearly."""
    from sklearn.metrics import roc_auc_score

    root = synthetic.write_adp(tmp_path / "ADP", n_slides=10, patches_per_slide=20, size=16, seed=2)
    ds = AdpDataset(root, level=1)
    bins = [
        (ds.load_image(i).permute(1, 2, 0).reshape(-1, 3).numpy() // 64) for i in range(len(ds))
    ]
    codes = [b[:, 0] * 16 + b[:, 1] * 4 + b[:, 2] for b in bins]
    x = np.stack([np.bincount(c, minlength=64) / len(c) for c in codes])
    y = ds.labels.numpy()
    aucs = []
    for j in range(y.shape[1]):
        if y[::2, j].sum() >= 5 and y[1::2, j].sum() >= 3:
            model = LogisticRegression(max_iter=2000).fit(x[::2], y[::2, j])
            aucs.append(roc_auc_score(y[1::2, j], model.decision_function(x[1::2])))
    assert len(aucs) >= 7 and np.mean(aucs) >= 0.9, aucs


def test_ensure_demo_data_builds_once_and_recovers(tmp_path: Path) -> None:
    roots = synthetic.ensure_demo_data(tmp_path, size=16)
    assert roots == {
        "all_idb2": tmp_path / "demo" / "ALL_IDB2",
        "adp": tmp_path / "demo" / "ADP",
        "cnmc": tmp_path / "demo" / "C-NMC_Leukemia",
        "cells_voc": tmp_path / "demo" / "cells_voc",
    }
    assert len(AllIdb2Dataset(roots["all_idb2"])) == 260
    adp = AdpDataset(roots["adp"], level=3)
    assert len(adp) == 300 and len(adp.slides) == 20 and int(adp.positives_per_class().min()) > 0
    assert len(AdpDataset(roots["adp"], use_release_split=True, split="train")) == 210
    assert len(CnmcDataset(roots["cnmc"])) == 120
    assert len(CnmcDataset(roots["cnmc"], split="prelim_test")) == 30
    assert len(CnmcDataset(roots["cnmc"], split="final_test")) == 20
    marker = tmp_path / "demo" / synthetic.DEMO_MARKER
    stamp = marker.stat().st_mtime_ns
    assert synthetic.ensure_demo_data(tmp_path, size=16) == roots
    assert marker.stat().st_mtime_ns == stamp  # second call reuses the data
    assert not [p for p in tmp_path.iterdir() if p.name != "demo"]  # no temp folders left

    marker.unlink()  # an interrupted build: data partly there, no marker
    victim = next((roots["cnmc"] / "training_data").rglob("*.bmp"))
    victim.unlink()
    synthetic.ensure_demo_data(tmp_path, size=16)
    assert victim.is_file() and json.loads(marker.read_text())["size"] == 16
    synthetic.ensure_demo_data(tmp_path, size=24)  # another size: rebuilt, same names
    assert Image.open(victim).size == (24, 24)
    before = victim.read_bytes()
    synthetic.ensure_demo_data(tmp_path, size=24, variation={"cnmc": {"stain": 0.0}})
    assert victim.read_bytes() != before  # other knobs: rebuilt
    assert json.loads(marker.read_text())["variation"]["cnmc"]["stain"] == 0.0
    with pytest.raises(ConfigError, match="unknown knobs"):
        synthetic.ensure_demo_data(tmp_path, size=24, variation={"cnmc": {"stian": 0.1}})


def test_demo_yaml_states_the_generators_defaults(tmp_path: Path) -> None:
    """``debug=demo`` lists the realism knobs with the code's defaults, so the README's table,
    the config and the data agree (the demo data of tests and of runs is the same)."""
    from helpers import compose_config

    from leuk_lightning.data.synthetic.demo import _plain_variation

    cfg = compose_config(["debug=demo"], tmp_path)
    assert _plain_variation(cfg.demo_variation) == _plain_variation(None)
    assert cfg.demo_variation.all_idb2.label_noise > 0 and cfg.demo_variation.cnmc.stain > 0
