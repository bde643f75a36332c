"""Issue 6: evaluation protocols (HistoTNet 2-fold CV x10, DL4ALL holdout x5, subject-grouped)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import hydra
import numpy as np
import pytest
from helpers import compose_config
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict

from leuk_lightning.data import splits as S
from leuk_lightning.data.datamodules.classification import ClassificationDataModule, protocol_split
from leuk_lightning.data.datasets import CnmcDataset
from leuk_lightning.errors import ConfigError
from leuk_lightning.training.pipeline import stage_config, stage_fingerprint
from leuk_lightning.utils.config import config_hash

HISTOTNET = ["+experiment=histotnet_resnet18_l2", "debug=demo", "protocol=histotnet_cv"]


def sweep_jobs(cfg) -> list[list[str]]:
    """The jobs `-m` launches for this config (Hydra's basic sweeper on hydra.sweeper.params)."""
    lines = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(lines), None)
    return [job for batch in batches for job in batch]


def split_files(cfg, out: Path, dm_dataset=None) -> dict[tuple[int, int], Path]:
    """Run every (repeat, fold) job's datamodule set-up; returns the split.json per job."""
    files = {}
    for job in sweep_jobs(cfg):
        values = dict(o.split("=") for o in job)
        repeat, fold = int(values["data.split.repeat"]), int(values["data.split.fold"])
        with open_dict(cfg):
            cfg.data.split.repeat, cfg.data.split.fold = repeat, fold
        run_dir = out / f"r{repeat}f{fold}"
        dm = hydra.utils.instantiate(cfg.data, output_dir=str(run_dir))
        if dm_dataset is not None:
            dm.dataset_factory = lambda image_size, _d=dm_dataset: _d  # decode the images once
        dm.setup()
        files[(repeat, fold)] = run_dir / "split.json"
    return files


def test_histotnet_protocol_20_runs_crossed_folds_reproducible(tmp_path, demo_data):
    cfg = compose_config(HISTOTNET, tmp_path, demo_data)
    assert cfg.data.split.protocol == "kfold" and list(cfg.data.split.fractions) == [0.4, 0.1, 0.5]
    assert len(sweep_jobs(cfg)) == 20
    dataset = hydra.utils.instantiate(cfg.data.dataset)(image_size=cfg.data.image_size)
    first = split_files(cfg, tmp_path / "a", dataset)
    assert len(first) == 20
    n = len(dataset)
    subsets = {k: json.loads(p.read_text())["subsets"] for k, p in first.items()}
    for (repeat, fold), sub in subsets.items():
        train, val, test = (set(sub[k]) for k in ("train", "val", "test"))
        assert not (train & val) and not (train & test) and not (val & test)
        assert len(train | val | test) == n
        assert len(test) == n // 2 and abs(len(val) - 0.1 * n) <= 1
        meta = json.loads(first[(repeat, fold)].read_text())["meta"]
        assert meta["rng_entropy"] == [42, repeat] and meta["split"]["fold"] == fold
    for repeat in range(10):
        f0, f1 = subsets[(repeat, 0)], subsets[(repeat, 1)]
        assert set(f0["test"]) == set(f1["train"]) | set(f1["val"])
        assert set(f1["test"]) == set(f0["train"]) | set(f0["val"])
    # a fresh split per repetition
    assert len({tuple(sorted(subsets[(r, 0)]["test"])) for r in range(10)}) == 10
    # a second invocation writes the same bytes
    second = split_files(cfg, tmp_path / "b", dataset)
    for key, path in first.items():
        assert path.read_bytes() == second[key].read_bytes()


def test_protocol_wins_over_experiment_split_and_command_line_wins_over_protocol(tmp_path):
    cfg = compose_config(["+experiment=histotnet_resnet18_l2", "protocol=dl4all_holdout"], tmp_path)
    assert list(cfg.data.split.fractions) == [0.7, 0.2, 0.1]  # not the experiment's 40/10/50
    assert len(sweep_jobs(cfg)) == 5
    cfg = compose_config([*HISTOTNET, "data.split.repeat=3"], tmp_path)
    assert cfg.data.split.repeat == 3


def test_repeated_holdout_draws_a_fresh_split_per_repeat():
    labels = np.arange(100) % 2
    base = {"protocol": "holdout", "fractions": [0.7, 0.2, 0.1], "seed": 5}
    plain = protocol_split(labels, base)
    assert np.array_equal(plain["test"], S.holdout_split(labels, [0.7, 0.2, 0.1], 5)["test"])
    tests = [tuple(protocol_split(labels, {**base, "repeat": r})["test"]) for r in range(5)]
    assert len(set(tests)) == 5
    again = protocol_split(labels, {**base, "repeat": 2})["test"]
    assert tuple(again) == tests[2]


def test_kfold_repeat_equals_kfold_splits():
    labels = np.arange(60) % 3
    all_folds = S.kfold_splits(labels, 2, 3, seed=9, val_fraction=0.2)
    for item in all_folds:
        one = S.kfold_repeat(labels, 2, 9, item["repeat"], val_fraction=0.2)[item["fold"]]
        for k in ("train", "val", "test"):
            assert np.array_equal(one[k], item[k])


@pytest.mark.parametrize(
    "bad",
    [
        {"protocol": "kfold", "fractions": [0.7, 0.2, 0.1], "n_splits": 2},
        {"protocol": "kfold", "fractions": [0.4, 0.1, 0.5], "n_splits": 2, "fold": 2},
        {"protocol": "holdout", "fractions": [0.7, 0.2, 0.1], "n_repeats": 5, "repeat": 5},
        {"protocol": "loo", "fractions": [0.7, 0.3]},
    ],
)
def test_bad_protocol_settings_are_config_errors(bad):
    with pytest.raises(ConfigError, match="data.split"):
        protocol_split(np.arange(20) % 2, {"seed": 0, **bad})


@pytest.mark.parametrize("trial", range(12))
def test_grouped_splits_never_share_a_subject(trial):
    """Property test over random subject layouts, both grouped protocols."""
    rng = np.random.default_rng(1000 + trial)
    n_subjects = int(rng.integers(6, 30))
    sizes = rng.integers(1, 15, size=n_subjects)
    subject_label = rng.integers(0, 2, size=n_subjects)
    subject_label[:2] = [0, 1]  # both classes present
    groups = np.repeat([f"P{s}" for s in range(n_subjects)], sizes)
    labels = np.repeat(subject_label, sizes)
    perm = rng.permutation(len(labels))  # images of one subject scattered in the file list
    groups, labels = groups[perm], labels[perm]
    settings = [
        {"protocol": "holdout", "fractions": [0.7, 0.2, 0.1], "repeat": int(rng.integers(0, 5))},
        {"protocol": "kfold", "fractions": [0.6, 0.2, 0.2], "n_splits": 5, "repeat": 1,
         "fold": int(rng.integers(0, 5))},
    ]  # fmt: skip
    for setting in settings:
        split = protocol_split(labels, {"seed": trial, **setting}, groups)
        owners = {}
        for name, idx in split.items():
            for g in set(groups[idx]):
                assert owners.setdefault(g, name) == name, f"{g} in {owners[g]} and {name}"
        assert sum(len(v) for v in split.values()) == len(labels)


def test_cnmc_grouped_protocol_on_demo_data(tmp_path, demo_data):
    cfg = compose_config(["debug=demo", "protocol=cnmc_grouped"], tmp_path, demo_data)
    assert cfg.data.split.group_by == "subject" and len(sweep_jobs(cfg)) == 5
    split_cfg = dict(cfg.data.split, seed=0, repeat=4)
    dm = ClassificationDataModule(
        functools.partial(CnmcDataset, root=demo_data / "demo" / "C-NMC_Leukemia"),
        image_size=32,
        split=split_cfg,
        output_dir=str(tmp_path / "run"),
    )
    dm.setup()
    subjects = np.asarray(dm.dataset.subjects)
    seen = [set(subjects[idx]) for idx in dm.split_indices.values()]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert json.loads((tmp_path / "run" / "split.json").read_text())["meta"]["split"]["repeat"] == 4


def test_pretraining_stage_shared_by_all_folds(tmp_path):
    """The ADP stage's cache key ignores the target split: one stage for all 20 jobs."""
    digests = set()
    for repeat, fold in [(0, 0), (0, 1), (7, 1)]:
        cfg = compose_config(
            [*HISTOTNET, f"data.split.repeat={repeat}", f"data.split.fold={fold}"], tmp_path
        )
        digests.add(config_hash(stage_fingerprint(stage_config(cfg, "pretrain"))))
    assert len(digests) == 1
    other = compose_config([*HISTOTNET, "seed=1"], tmp_path)
    assert config_hash(stage_fingerprint(stage_config(other, "pretrain"))) not in digests
