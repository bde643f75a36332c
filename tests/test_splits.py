"""Seeded stratified / grouped / multi-label splits and their JSON persistence."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from leuk_lightning.data import synthetic
from leuk_lightning.data.datasets import ADP_COLUMNS, ADP_CSV_NAME, ADP_LEVELS, CnmcDataset
from leuk_lightning.data.splits import (
    holdout_split,
    iterative_stratification,
    kfold_splits,
    load_split,
    read_split_meta,
    save_split,
)
from leuk_lightning.errors import ConfigError, DataError


def assert_partition(split: dict, n: int, names: tuple[str, ...]) -> None:
    """Subsets are disjoint, sorted and together cover 0..n-1."""
    allidx = np.concatenate([split[k] for k in names])
    assert sorted(allidx.tolist()) == list(range(n))
    for k in names:
        assert split[k].dtype == np.int64 and np.all(np.diff(split[k]) > 0)


def random_subject_layout(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Labels and subject ids like C-NMC: each subject has one class and 1-15 images."""
    n_subjects = int(rng.integers(8, 25))
    labels, groups = [], []
    for s in range(n_subjects):
        label = int(rng.random() < 0.6)
        name = f"{s}" if label else f"H{s}"
        k = int(rng.integers(1, 16))
        labels += [label] * k
        groups += [name] * k
    if len(set(labels)) < 2:  # make sure both classes occur
        labels[0] = 1 - labels[0]
    return np.asarray(labels), np.asarray(groups)


# ------------------------------------------------------------------------------------------
# holdout


@pytest.mark.parametrize("fractions", [(0.4, 0.1, 0.5), (0.7, 0.2, 0.1), (0.9, 0.1)])
def test_holdout_sizes_stratified_and_seeded(fractions: tuple[float, ...]) -> None:
    labels = np.array([0] * 120 + [1] * 80 + [2] * 40)
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(len(labels))]
    split = holdout_split(labels, fractions, seed=3)
    names = ("train", "val", "test")[: len(fractions)]
    assert tuple(split) == names
    assert_partition(split, 240, names)
    for name, frac in zip(names, fractions):
        assert len(split[name]) == round(frac * 240)
        for cls, total in ((0, 120), (1, 80), (2, 40)):  # stratified: class share kept
            assert abs(int((labels[split[name]] == cls).sum()) - frac * total) <= 1
    again = holdout_split(torch.as_tensor(labels), fractions, seed=3)
    assert all(np.array_equal(split[k], again[k]) for k in names)
    other = holdout_split(labels, fractions, seed=4)
    assert not np.array_equal(split["train"], other["train"])


def test_holdout_custom_names_and_bad_fractions() -> None:
    labels = np.arange(20) % 2
    assert set(holdout_split(labels, (0.5, 0.5), 0, names=("fit", "holdout"))) == {"fit", "holdout"}
    for bad in [(0.5, 0.6), (1.0,), (0.5, 0.0, 0.5), (0.2, 0.2, 0.2, 0.4)]:
        with pytest.raises(ConfigError, match="fractions"):
            holdout_split(labels, bad, 0)


def test_holdout_tiny_classes_still_split() -> None:
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 2])  # classes with a single member
    split = holdout_split(labels, (0.6, 0.2, 0.2), seed=0)
    assert_partition(split, 10, ("train", "val", "test"))


def test_grouped_holdout_never_shares_a_subject() -> None:
    for seed in range(12):
        labels, groups = random_subject_layout(np.random.default_rng(100 + seed))
        for fractions in [(0.4, 0.1, 0.5), (0.7, 0.2, 0.1), (0.8, 0.2)]:
            split = holdout_split(labels, fractions, seed=seed, groups=groups)
            names = tuple(split)
            assert_partition(split, len(labels), names)
            owners: dict[str, str] = {}
            for name in names:
                assert len(split[name]) > 0
                for g in set(groups[split[name]].tolist()):
                    assert owners.setdefault(g, name) == name, f"subject {g} in two subsets"


def test_grouped_holdout_on_cnmc_subjects(tmp_path: Path) -> None:
    base = synthetic.write_cnmc(
        tmp_path,
        n_subjects_all=6,
        n_subjects_hem=6,
        images_per_subject=3,
        n_prelim=2,
        n_final=1,
        size=8,
    )
    ds = CnmcDataset(base)
    split = holdout_split(ds.labels, (0.5, 0.25, 0.25), seed=0, groups=ds.subjects)
    subjects = {k: {ds.subjects[i] for i in v} for k, v in split.items()}
    assert not (subjects["train"] & subjects["val"] or subjects["train"] & subjects["test"])
    assert not subjects["val"] & subjects["test"]
    for k in split:  # stratified over subjects: both classes in each subset
        assert set(ds.labels[split[k]].tolist()) == {0, 1}


# ------------------------------------------------------------------------------------------
# multi-label (iterative stratification)


def hierarchical_multihot(n: int, seed: int) -> np.ndarray:
    """Multi-hot rows over the level-2 ADP classes, with rare and common labels."""
    rng = np.random.default_rng(seed)
    prevalence = np.linspace(0.02, 0.5, len(ADP_LEVELS[2]))
    y = (rng.random((n, len(prevalence))) < prevalence).astype(np.uint8)
    y[y.sum(1) == 0, -1] = 1
    return y


def test_multilabel_holdout_keeps_label_proportions() -> None:
    y = hierarchical_multihot(600, seed=0)
    fractions = (0.7, 0.2, 0.1)
    split = holdout_split(y, fractions, seed=1)
    assert_partition(split, 600, ("train", "val", "test"))
    totals = y.sum(0)

    def deviation(parts: list[np.ndarray]) -> float:
        return sum(float(np.abs(y[p].sum(0) - f * totals).sum()) for p, f in zip(parts, fractions))

    perm = np.random.default_rng(1).permutation(600)
    random_parts = [perm[:420], perm[420:540], perm[540:]]
    assert deviation(list(split.values())) < 0.6 * deviation(random_parts)
    rare = totals < 60  # rare labels are placed first and land almost exactly
    for name, frac in zip(("train", "val", "test"), fractions):
        assert abs(len(split[name]) - frac * 600) <= 0.03 * 600
        counts = y[split[name]].sum(0)
        assert np.all(np.abs(counts - frac * totals)[rare] <= 1.5), name
    again = holdout_split(y, fractions, seed=1)
    assert all(np.array_equal(split[k], again[k]) for k in split)


def test_iterative_stratification_spreads_rare_labels() -> None:
    counts = np.zeros((30, 2))
    counts[:3, 0] = 1  # a label with exactly 3 positives goes to 3 different subsets
    counts[3:, 1] = 1
    out = iterative_stratification(counts, np.ones(30), [1 / 3] * 3, np.random.default_rng(0))
    assert sorted(out[:3].tolist()) == [0, 1, 2]
    assert np.bincount(out).tolist() == [10, 10, 10]


def test_multilabel_grouped_holdout_respects_groups() -> None:
    y = hierarchical_multihot(300, seed=2)
    groups = np.repeat(np.arange(30), 10)
    split = holdout_split(y, (0.6, 0.2, 0.2), seed=0, groups=groups)
    sets = [set(groups[v].tolist()) for v in split.values()]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert_partition(split, 300, tuple(split))


def test_real_adp_labels_multilabel_split() -> None:
    env = os.environ.get("LEUK_REAL_LAYOUTS")
    folder = (
        Path(env)
        if env
        else Path(__file__).resolve().parents[2] / "shared" / "data" / "real_layouts"
    )
    csv_path = folder / ADP_CSV_NAME
    if not csv_path.is_file():
        pytest.skip(f"{csv_path} not available")
    from leuk_lightning.data.datasets.adp import AdpDataset

    _, matrix = AdpDataset._read_csv(csv_path, ADP_LEVELS[3])
    split = holdout_split(matrix, (0.7, 0.2, 0.1), seed=0)
    assert_partition(split, 17668, ("train", "val", "test"))
    totals = matrix.sum(0)
    for name, frac in zip(("train", "val", "test"), (0.7, 0.2, 0.1)):
        counts = matrix[split[name]].sum(0)
        present = totals >= 10
        assert np.all(counts[present] > 0), name  # every non-rare class in every subset
        assert np.all(np.abs(counts - frac * totals) <= np.maximum(2, 0.05 * totals))
    assert len(ADP_COLUMNS) == 43


# ------------------------------------------------------------------------------------------
# k-fold


def test_kfold_repeats_folds_and_validation() -> None:
    labels = np.array([0] * 60 + [1] * 40)
    folds = kfold_splits(labels, n_splits=2, n_repeats=3, seed=7, val_fraction=0.2)
    assert len(folds) == 6
    assert [(f["repeat"], f["fold"]) for f in folds] == [(r, k) for r in range(3) for k in range(2)]
    for f in folds:
        assert_partition(f, 100, ("train", "val", "test"))
        assert len(f["test"]) == 50 and len(f["val"]) == 10 and len(f["train"]) == 40
        assert int(labels[f["val"]].sum()) == 4  # stratified validation carve
    for r in range(3):
        tests = [set(folds[2 * r + k]["test"].tolist()) for k in range(2)]
        assert not tests[0] & tests[1] and len(tests[0] | tests[1]) == 100
    assert not np.array_equal(folds[0]["test"], folds[2]["test"])  # repeats reshuffle
    again = kfold_splits(labels, n_splits=2, n_repeats=3, seed=7, val_fraction=0.2)
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(folds, again) for k in ("train", "val"))
    no_val = kfold_splits(labels, n_splits=5, n_repeats=1, seed=0)
    assert all(len(f["val"]) == 0 and len(f["test"]) == 20 for f in no_val)


def test_grouped_kfold_never_shares_a_subject() -> None:
    for seed in range(8):
        labels, groups = random_subject_layout(np.random.default_rng(seed))
        for f in kfold_splits(labels, 2, 2, seed=seed, groups=groups, val_fraction=0.25):
            assert_partition(f, len(labels), ("train", "val", "test"))
            sets = [set(groups[f[k]].tolist()) for k in ("train", "val", "test")]
            assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_multilabel_kfold() -> None:
    y = hierarchical_multihot(200, seed=3)
    folds = kfold_splits(y, n_splits=4, n_repeats=2, seed=0, val_fraction=0.1)
    assert len(folds) == 8
    for f in folds:
        assert_partition(f, 200, ("train", "val", "test"))
        assert 40 <= len(f["test"]) <= 60


def test_kfold_bad_options() -> None:
    with pytest.raises(ConfigError):
        kfold_splits(np.arange(10) % 2, n_splits=1, n_repeats=1, seed=0)
    with pytest.raises(ConfigError):
        kfold_splits(np.arange(10) % 2, n_splits=2, n_repeats=1, seed=0, val_fraction=1.0)


# ------------------------------------------------------------------------------------------
# persistence


def fake_paths(root: str, n: int) -> list[str]:
    return [
        f"{root}/training_data/fold_{i % 3}/{'all' if i % 2 else 'hem'}/UID_{i}_1_1.bmp"
        for i in range(n)
    ]


def test_save_and_load_split_roundtrip(tmp_path: Path) -> None:
    paths = fake_paths("/data/C-NMC_Leukemia", 30)
    split = holdout_split(np.arange(30) % 2, (0.4, 0.1, 0.5), seed=5)
    target = save_split(
        tmp_path / "run" / "split.json", split, paths, {"seed": 5, "protocol": "holdout"}
    )
    doc = json.loads(target.read_text())
    assert set(doc) == {"meta", "subsets"} and doc["meta"] == {"protocol": "holdout", "seed": 5}
    assert doc["subsets"]["val"][0].startswith("fold_")  # relative to the dataset folder
    loaded = load_split(target, paths)
    assert all(np.array_equal(loaded[k], split[k]) for k in split)
    moved = fake_paths("/mnt/elsewhere/C-NMC_Leukemia", 30)
    assert all(np.array_equal(load_split(target, moved)[k], split[k]) for k in split)
    assert [p.name for p in target.parent.iterdir()] == ["split.json"]  # no temp files left


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    paths = fake_paths("/d", 40)
    labels = np.arange(40) % 3
    a = save_split(
        tmp_path / "a.json", holdout_split(labels, (0.7, 0.2, 0.1), 9), paths, {"seed": 9}
    )
    b = save_split(
        tmp_path / "b.json", holdout_split(labels, (0.7, 0.2, 0.1), 9), paths, {"seed": 9}
    )
    c = save_split(
        tmp_path / "c.json", holdout_split(labels, (0.7, 0.2, 0.1), 10), paths, {"seed": 9}
    )
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert a.read_text().startswith('{\n  "meta"')


def test_kfold_item_meta_and_missing_files(tmp_path: Path) -> None:
    paths = fake_paths("/d", 12)
    fold = kfold_splits(np.arange(12) % 2, 3, 2, seed=0)[4]
    target = save_split(tmp_path / "fold.json", fold, paths, {"seed": 0})
    assert read_split_meta(target) == {"fold": 1, "repeat": 1, "seed": 0}
    assert set(load_split(target, paths)) == {"train", "val", "test"}
    with pytest.raises(DataError, match="not in the dataset") as info:
        load_split(target, paths[:6])
    assert "UID_" in str(info.value) and str(target) in str(info.value)
    with pytest.raises(DataError, match="cannot read split file"):
        load_split(tmp_path / "absent.json", paths)


def test_config_objects_in_meta_are_stored_as_json(tmp_path: Path) -> None:
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create({"fractions": [0.7, 0.2, 0.1], "group_by": None, "seed": 1})
    paths = fake_paths("/d", 6)
    target = save_split(tmp_path / "s.json", {"train": np.arange(6)}, paths, {"split": cfg})
    assert read_split_meta(target) == {
        "split": {"fractions": [0.7, 0.2, 0.1], "group_by": None, "seed": 1}
    }
