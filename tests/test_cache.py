"""Issue 9: decoded-image cache (data/cache.py) and its use by the datamodule."""

from __future__ import annotations

import os
import pickle

import hydra
import numpy as np
import pytest
import torch
from helpers import compose_config
from PIL import Image

from leuk_lightning.data import cache as C
from leuk_lightning.data.datasets import AdpDataset, CnmcDataset
from leuk_lightning.data.synthetic import write_cnmc


@pytest.fixture(scope="module")
def cnmc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cnmc")
    return write_cnmc(root, n_subjects_all=2, n_subjects_hem=2, images_per_subject=3, size=48)


def _assert_same_samples(a, b):
    assert len(a) == len(b)
    for i in range(len(a)):
        sa, sb = a[i], b[i]
        assert sa.keys() == sb.keys()
        for key in sa:
            if isinstance(sa[key], torch.Tensor):
                assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key
            else:
                assert sa[key] == sb[key], key


def test_cached_samples_and_attributes_equal_the_dataset(cnmc_root, tmp_path):
    plain = CnmcDataset(cnmc_root, image_size=32)
    cached = C.maybe_cached(CnmcDataset(cnmc_root, image_size=32), tmp_path / "c")
    assert isinstance(cached, C.CachedDataset) and cached.built
    _assert_same_samples(plain, cached)
    assert cached.classes == plain.classes and cached.paths == plain.paths
    assert cached.subjects == plain.subjects and torch.equal(cached.labels, plain.labels)
    arrays = list((tmp_path / "c").glob("*.npy"))
    assert len(arrays) == 1 and arrays[0].name.startswith("CnmcDataset-32px-")
    assert np.load(arrays[0], mmap_mode="r").shape == (len(plain), 3, 32, 32)
    # a second wrapper reuses the cache; pickling (DataLoader workers) keeps it working
    again = C.CachedDataset(CnmcDataset(cnmc_root, image_size=32), tmp_path / "c")
    assert not again.built
    clone = pickle.loads(pickle.dumps(again))
    _assert_same_samples(plain, clone)


def test_slides_of_adp_are_forwarded(demo_data, tmp_path):
    root = demo_data / "demo" / "ADP"
    plain = AdpDataset(root, level=1, image_size=16)
    cached = C.maybe_cached(AdpDataset(root, level=1, image_size=16), tmp_path)
    assert cached.slides == plain.slides
    _assert_same_samples(torch.utils.data.Subset(plain, range(5)), [cached[i] for i in range(5)])


def test_cache_is_rebuilt_when_a_source_file_changes(cnmc_root, tmp_path):
    ds = CnmcDataset(cnmc_root, image_size=32)
    first = C.CachedDataset(ds, tmp_path)
    target = ds.paths[2]
    before = os.stat(target)
    try:
        Image.new("RGB", (48, 48), (255, 0, 0)).save(target, format="BMP")
        os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
        second = C.CachedDataset(CnmcDataset(cnmc_root, image_size=32), tmp_path)
        assert second.built and first.array_path == second.array_path
        red = second[2]["image"]
        assert red[0].min() == 255 and red[1].max() == 0
        assert not C.CachedDataset(CnmcDataset(cnmc_root, image_size=32), tmp_path).built
    finally:
        write_cnmc(
            cnmc_root.parent, n_subjects_all=2, n_subjects_hem=2, images_per_subject=3, size=48
        )


def test_interrupted_build_leaves_no_valid_cache(cnmc_root, tmp_path, monkeypatch):
    ds = CnmcDataset(cnmc_root, image_size=32)
    calls = {"n": 0}
    original = C._Decode.__getitem__

    def crash_midway(self, index):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, index)

    monkeypatch.setattr(C._Decode, "__getitem__", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        C.CachedDataset(ds, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == []
    monkeypatch.setattr(C._Decode, "__getitem__", original)
    rebuilt = C.CachedDataset(ds, tmp_path)
    assert rebuilt.built
    _assert_same_samples(CnmcDataset(cnmc_root, image_size=32), rebuilt)


def test_truncated_array_or_missing_index_triggers_rebuild(cnmc_root, tmp_path):
    ds = CnmcDataset(cnmc_root, image_size=32)
    cached = C.CachedDataset(ds, tmp_path)
    cached.index_path.unlink()
    assert C.CachedDataset(ds, tmp_path).built
    cached.array_path.write_bytes(b"not an array")
    assert C.CachedDataset(ds, tmp_path).built


def test_maybe_cached_falls_back(cnmc_root, tmp_path, tmp_path_factory):
    ds = CnmcDataset(cnmc_root, image_size=32)
    assert C.maybe_cached(ds, tmp_path, enabled=False) is ds
    assert C.maybe_cached(ds, None) is ds
    assert C.maybe_cached([1, 2], tmp_path) == [1, 2]
    # images of different sizes and no image_size: nothing to stack, served uncached
    root = write_cnmc(
        tmp_path_factory.mktemp("mixed"), n_subjects_all=1, n_subjects_hem=1, images_per_subject=2
    )
    odd = CnmcDataset(root).paths[1]
    Image.new("RGB", (40, 40)).save(odd, format="BMP")
    native = CnmcDataset(root)
    assert C.maybe_cached(native, tmp_path / "mixed") is native
    assert not list((tmp_path / "mixed").glob("*.npy"))


@pytest.mark.parametrize("enabled", [True, False])
def test_datamodule_uses_the_cache_when_configured(tmp_path, demo_data, enabled):
    cfg = compose_config(
        ["debug=demo", f"data.cache={str(enabled).lower()}", "data.image_size=16"],
        tmp_path,
        demo_data,
    )
    cache_dir = tmp_path / "img_cache"
    dm = hydra.utils.instantiate(cfg.data, output_dir=str(tmp_path), cache_dir=str(cache_dir))
    rng = torch.get_rng_state()
    dm.setup()  # builds the cache and the statistics: the run's random stream stays untouched
    assert torch.equal(rng, torch.get_rng_state())
    assert isinstance(dm.dataset, C.CachedDataset) is enabled
    assert bool(list(cache_dir.glob("AllIdb2Dataset-16px-*.npy"))) is enabled
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape[1:] == (3, 16, 16)
    loader = dm.train_dataloader()
    assert loader.persistent_workers is False and loader.num_workers == 0
