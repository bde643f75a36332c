"""Dataset loaders over generated data in the real layouts, and against the real file lists."""

from __future__ import annotations

import csv
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from leuk_lightning.data import synthetic
from leuk_lightning.data.datasets import (
    ADP_COLUMNS,
    ADP_CSV_NAME,
    ADP_EMPTY_COLUMNS,
    ADP_LEVELS,
    AdpDataset,
    AllIdb2Dataset,
    CnmcDataset,
    adp_slide_of,
    is_normal_subject,
    parse_cnmc_name,
)
from leuk_lightning.data.stats import cached_mean_std, channel_mean_std
from leuk_lightning.errors import ConfigError, DataError

SIZE = 32


def real_layouts() -> Path:
    """The folder of real-release facts (skip when this checkout does not have it)."""
    env = os.environ.get("LEUK_REAL_LAYOUTS")
    folder = (
        Path(env)
        if env
        else Path(__file__).resolve().parents[2] / "shared" / "data" / "real_layouts"
    )
    if not folder.is_dir():
        pytest.skip(f"real layout facts not available at {folder}")
    return folder


def truncate(path: Path) -> None:
    """Cut a valid image file in half (a download interrupted mid-file)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def read_csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def write_csv_rows(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)


# ------------------------------------------------------------------------------------------
# fixtures: small generated datasets (module scope = read-only; function scope = mutable)


@pytest.fixture(scope="module")
def synthetic_all_idb2_ro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.write_all_idb2(tmp_path_factory.mktemp("allidb") / "ALL_IDB2", n=24, size=SIZE)


@pytest.fixture(scope="module")
def synthetic_adp_ro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("adp") / "ADP"
    return synthetic.write_adp(
        root, n_slides=6, patches_per_slide=5, size=SIZE, with_release_split=True
    )


@pytest.fixture(scope="module")
def synthetic_cnmc_ro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cnmc")
    return synthetic.write_cnmc(
        root,
        n_subjects_all=3,
        n_subjects_hem=3,
        images_per_subject=4,
        n_prelim=9,
        n_final=5,
        size=SIZE,
    )


@pytest.fixture
def synthetic_adp_rw(tmp_path: Path) -> Path:
    return synthetic.write_adp(tmp_path / "ADP", n_slides=3, patches_per_slide=4, size=16, seed=3)


@pytest.fixture
def synthetic_cnmc_rw(tmp_path: Path) -> Path:
    return synthetic.write_cnmc(
        tmp_path,
        n_subjects_all=2,
        n_subjects_hem=2,
        images_per_subject=2,
        n_prelim=4,
        n_final=2,
        size=16,
    )


# ------------------------------------------------------------------------------------------
# ALL-IDB2


def test_all_idb2_counts_labels_and_samples(synthetic_all_idb2_ro: Path) -> None:
    ds = AllIdb2Dataset(synthetic_all_idb2_ro)
    assert len(ds) == 24 and ds.classes == ["normal", "lymphoblast"] and ds.num_classes == 2
    names = [Path(p).name for p in ds.paths]
    assert names == sorted(names)  # ordered by image number
    assert ds.labels.dtype == torch.int64
    assert ds.labels.tolist() == [int(n[-5]) for n in names]
    assert 0 < int(ds.labels.sum()) < 24
    sample = ds[3]
    assert set(sample) >= {"image", "label", "path"}
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape[0] == 3
    assert sample["label"].shape == () and int(sample["label"]) == int(names[3][-5])
    assert sample["path"] == ds.paths[3]
    # root/img directly and a flat folder give the same items
    assert AllIdb2Dataset(synthetic_all_idb2_ro / "img").paths == ds.paths


def test_all_idb2_resize_transforms_and_collate(synthetic_all_idb2_ro: Path) -> None:
    def tag(sample: dict) -> dict:
        sample["tagged"] = True
        return sample

    ds = AllIdb2Dataset(synthetic_all_idb2_ro, image_size=16, transforms=tag)
    assert ds[0]["image"].shape == (3, 16, 16) and ds[0]["tagged"] is True
    batch = next(iter(DataLoader(ds, batch_size=8)))
    assert batch["image"].shape == (8, 3, 16, 16) and batch["label"].shape == (8,)


def test_all_idb2_flat_folder_and_uppercase_extension(tmp_path: Path) -> None:
    root = synthetic.write_all_idb2(tmp_path / "flat", n=4, size=16, subdir="")
    first = sorted(root.glob("*.tif"))[0]
    first.rename(first.with_suffix(".TIFF"))
    ds = AllIdb2Dataset(root)
    assert len(ds) == 4 and ds.paths[0].endswith(".TIFF")


def test_all_idb2_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        AllIdb2Dataset(tmp_path / "nope")
    (tmp_path / "empty" / "img").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty.img has no files"):
        AllIdb2Dataset(tmp_path / "empty")
    root = synthetic.write_all_idb2(tmp_path / "bad", n=4, size=16)
    (root / "img" / "Im005_2.tif").write_bytes(b"x")
    (root / "img" / ".DS_Store").write_bytes(b"x")  # ignored
    with pytest.raises(DataError, match=r"Im005_2\.tif"):
        AllIdb2Dataset(root)


def test_all_idb2_truncated_image_error_then_skip(tmp_path: Path, caplog) -> None:
    root = synthetic.write_all_idb2(tmp_path / "A", n=6, size=16)
    ds = AllIdb2Dataset(root)
    broken = Path(ds.paths[2])
    truncate(broken)
    ds = AllIdb2Dataset(root)  # construction is cheap: no decoding
    assert len(ds) == 6
    ds[1]  # other images still read
    with pytest.raises(DataError, match=f"cannot decode image {broken}"):
        ds[2]
    with caplog.at_level(logging.WARNING):
        skipping = AllIdb2Dataset(root, on_bad_image="skip")
    assert len(skipping) == 5 and skipping.skipped == [str(broken)]
    assert str(broken) not in skipping.paths and len(skipping.labels) == 5
    assert str(broken) in caplog.text


def test_option_validation(synthetic_all_idb2_ro: Path) -> None:
    with pytest.raises(ConfigError, match="on_bad_image"):
        AllIdb2Dataset(synthetic_all_idb2_ro, on_bad_image="ignore")
    with pytest.raises(ConfigError, match="image_size"):
        AllIdb2Dataset(synthetic_all_idb2_ro, image_size=0)


# ------------------------------------------------------------------------------------------
# ADP


def test_adp_columns_and_levels() -> None:
    assert len(ADP_COLUMNS) == 43 == len(set(ADP_COLUMNS))
    assert ADP_COLUMNS[:3] == ["E", "E.M", "E.M.S"] and ADP_COLUMNS[-1] == "T"
    assert [len(ADP_LEVELS[k]) for k in (1, 2, 3)] == [9, 26, 38]
    assert ADP_LEVELS[1] == ["E", "C", "H", "S", "A", "M", "N", "G", "T"]
    for level in (2, 3):
        assert ADP_LEVELS[level][: len(ADP_LEVELS[level - 1])] == ADP_LEVELS[level - 1]
        assert set(ADP_LEVELS[level]) <= set(ADP_COLUMNS)
    assert not any(c.endswith(".X") for c in ADP_LEVELS[3])


@pytest.mark.parametrize(
    ("name", "slide"),
    [
        ("001.png_crop_1059.png", "001"),
        ("59.png_crop_3.png", "59"),
        ("HE#2.png_crop_17.png", "HE#2"),
        ("119_R01.png_crop_4.png", "119_R01"),
        ("PP2_S08_R01.png_crop_9.png", "PP2_S08_R01"),
    ],
)
def test_adp_slide_parsing(name: str, slide: str) -> None:
    assert adp_slide_of(name) == slide


def test_adp_slide_parsing_rejects_other_names() -> None:
    with pytest.raises(DataError, match="crop"):
        adp_slide_of("001_1059.png")


@pytest.mark.parametrize(("level", "n"), [(1, 9), (2, 26), (3, 38)])
def test_adp_levels_give_head_sizes(synthetic_adp_ro: Path, level: int, n: int) -> None:
    ds = AdpDataset(synthetic_adp_ro, level=level)
    assert ds.num_classes == n and ds.classes == ADP_LEVELS[level]
    assert ds.labels.shape == (30, n) and ds.labels.dtype == torch.float32


def test_adp_tissue_labels_match_csv_and_hierarchy(synthetic_adp_ro: Path) -> None:
    ds = AdpDataset(synthetic_adp_ro, level=3)
    rows = read_csv_rows(synthetic_adp_ro / ADP_CSV_NAME)
    header, body = rows[0], rows[1:]
    assert header == ["Patch Names", *ADP_COLUMNS]
    by_name = {r[0]: r for r in body}
    for i in (0, 7, 29):
        row = by_name[ds.patch_names[i]]
        expect = [float(row[header.index(c)]) for c in ds.classes]
        assert ds.labels[i].tolist() == expect
    assert torch.equal(ds.positives_per_class(), ds.labels.sum(0).long())
    sample = ds[5]
    assert sample["label"].shape == (38,) and isinstance(sample["slide"], int)
    assert sample["image"].shape == (3, SIZE, SIZE)
    assert sample["slide"] == ds.slides.index(adp_slide_of(Path(sample["path"]).name))


def test_adp_labels_need_no_decoding(synthetic_adp_ro: Path, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("an image was opened")

    monkeypatch.setattr("PIL.Image.open", boom)
    ds = AdpDataset(synthetic_adp_ro, level=2, label="slide")
    assert len(ds.labels) == 30 and ds.positives_per_class().sum() == 30


def test_adp_slide_labels(synthetic_adp_ro: Path) -> None:
    ds = AdpDataset(synthetic_adp_ro, label="slide")
    expected_slides = sorted(synthetic.ADP_SLIDE_NAMES[:6])
    assert ds.slides == expected_slides and ds.classes == expected_slides
    assert "HE#2" in ds.slides and "119_R01" in ds.slides
    assert ds.labels.dtype == torch.int64
    for i in range(len(ds)):
        assert ds.labels[i] == ds.slides.index(adp_slide_of(ds.patch_names[i]))
    assert ds.positives_per_class().tolist() == [5] * 6
    assert ds[0]["label"] == ds[0]["slide"]


def test_adp_class_selection_and_config_errors(synthetic_adp_ro: Path) -> None:
    ds = AdpDataset(synthetic_adp_ro, level=None, classes=["E", "N.G"])
    assert ds.classes == ["E", "N.G"] and ds.labels.shape == (30, 2)
    msg = "data.label_level=4 is not a known ADP label level; use 1, 2 or 3, or give data.classes"
    with pytest.raises(ConfigError) as info:
        AdpDataset(synthetic_adp_ro, level=4)
    assert str(info.value) == msg
    with pytest.raises(ConfigError, match=r"Z\.Q"):
        AdpDataset(synthetic_adp_ro, classes=["E", "Z.Q"])
    with pytest.raises(ConfigError, match="label="):
        AdpDataset(synthetic_adp_ro, label="organ")


def test_adp_release_split(synthetic_adp_ro: Path) -> None:
    full = AdpDataset(synthetic_adp_ro)
    seen: list[int] = []
    for split in ("train", "valid", "test"):
        rows = np.load(synthetic_adp_ro / "splits" / f"{split}.npy")
        ds = AdpDataset(synthetic_adp_ro, use_release_split=True, split=split, label="slide")
        assert ds.rows == rows.tolist()
        assert ds.paths == [full.paths[r] for r in rows] and ds.slides == full.slides
        seen += ds.rows
    assert sorted(seen) == list(range(30))
    with pytest.raises(ConfigError, match="use_release_split"):
        AdpDataset(synthetic_adp_ro, split="train")
    with pytest.raises(ConfigError, match="release split"):
        AdpDataset(synthetic_adp_ro, use_release_split=True, split="val")


def test_adp_release_split_missing(synthetic_adp_rw: Path) -> None:
    with pytest.raises(DataError, match=r"splits.train\.npy"):
        AdpDataset(synthetic_adp_rw, use_release_split=True, split="train")


def test_adp_csv_locations(synthetic_adp_rw: Path, tmp_path: Path) -> None:
    (synthetic_adp_rw / "lbl").mkdir()
    shutil.move(synthetic_adp_rw / ADP_CSV_NAME, synthetic_adp_rw / "lbl" / ADP_CSV_NAME)
    assert len(AdpDataset(synthetic_adp_rw)) == 12
    elsewhere = tmp_path / "labels.csv"
    shutil.move(synthetic_adp_rw / "lbl" / ADP_CSV_NAME, elsewhere)
    with pytest.raises(DataError, match=ADP_CSV_NAME):
        AdpDataset(synthetic_adp_rw)
    assert len(AdpDataset(synthetic_adp_rw, label_csv=elsewhere)) == 12
    with pytest.raises(DataError, match="missing.csv"):
        AdpDataset(synthetic_adp_rw, label_csv=tmp_path / "missing.csv")


def test_adp_csv_missing_columns(synthetic_adp_rw: Path) -> None:
    csv_path = synthetic_adp_rw / ADP_CSV_NAME
    rows = read_csv_rows(csv_path)
    drop = [rows[0].index("E"), rows[0].index("N.G")]
    write_csv_rows(csv_path, [[c for j, c in enumerate(r) if j not in drop] for r in rows])
    with pytest.raises(DataError) as info:
        AdpDataset(synthetic_adp_rw, level=2)
    assert str(csv_path) in str(info.value) and "'E'" in str(info.value)
    assert "'N.G'" in str(info.value)
    assert len(AdpDataset(synthetic_adp_rw, classes=["C", "H"])) == 12  # unused columns may go


def test_adp_rows_naming_missing_images(synthetic_adp_rw: Path) -> None:
    ds = AdpDataset(synthetic_adp_rw)
    gone = sorted(ds.patch_names)[:3]
    for name in gone:
        (ds.image_dir / name).unlink()
    with pytest.raises(DataError) as info:
        AdpDataset(synthetic_adp_rw)
    text = str(info.value)
    assert "3 row(s) name missing images" in text and gone[0] in text and ADP_CSV_NAME in text


def test_adp_image_without_row(synthetic_adp_rw: Path) -> None:
    src = next((synthetic_adp_rw / "img_res_1um_bicubic").glob("*.png"))
    shutil.copy(src, src.parent / "999.png_crop_1.png")
    with pytest.raises(DataError, match=r"999\.png_crop_1\.png"):
        AdpDataset(synthetic_adp_rw)


def test_adp_csv_values_must_be_binary(synthetic_adp_rw: Path) -> None:
    csv_path = synthetic_adp_rw / ADP_CSV_NAME
    rows = read_csv_rows(csv_path)
    col = rows[0].index("H")
    rows[2][col] = "2"
    write_csv_rows(csv_path, rows)
    with pytest.raises(DataError) as info:
        AdpDataset(synthetic_adp_rw)
    assert "'H'" in str(info.value) and rows[2][0] in str(info.value) and "'2'" in str(info.value)


def test_adp_truncated_png(synthetic_adp_rw: Path, caplog) -> None:
    ds = AdpDataset(synthetic_adp_rw)
    truncate(Path(ds.paths[0]))
    with pytest.raises(DataError, match=f"cannot decode image {ds.paths[0]}"):
        AdpDataset(synthetic_adp_rw)[0]
    with caplog.at_level(logging.WARNING):
        skipping = AdpDataset(synthetic_adp_rw, on_bad_image="skip")
    assert skipping.skipped == [ds.paths[0]] and len(skipping) == 11
    assert skipping.patch_names == ds.patch_names[1:] and skipping.slide_ids.shape == (11,)
    assert ds.paths[0] in caplog.text


def test_real_adp_csv_parses_with_loader(tmp_path: Path) -> None:
    real_csv = real_layouts() / ADP_CSV_NAME
    if not real_csv.is_file():
        pytest.skip(f"{real_csv} not available")
    names = [r[0] for r in read_csv_rows(real_csv)[1:]]
    img_dir = tmp_path / "img_res_1um_bicubic"
    img_dir.mkdir()
    for name in names:  # empty stand-ins: the constructor checks names, it never decodes
        (img_dir / name).touch()
    ds = AdpDataset(tmp_path, label_csv=real_csv, label="slide")
    assert len(ds) == 17668 and len(ds.slides) == 100 and ds.num_classes == 100
    assert {"001", "59", "119_R01", "HE#2", "PP7"} <= set(ds.slides)
    full = AdpDataset(tmp_path, label_csv=real_csv, level=None, classes=ADP_COLUMNS)
    counts = dict(zip(full.classes, full.positives_per_class().tolist()))
    assert [c for c, k in counts.items() if k == 0] == ADP_EMPTY_COLUMNS
    y = full.labels.bool()
    for j, col in enumerate(ADP_COLUMNS):  # every child label implies its parent
        if "." in col:
            parent = ADP_COLUMNS.index(col.rsplit(".", 1)[0])
            assert bool((y[:, parent] | ~y[:, j]).all()), col
    assert AdpDataset(tmp_path, label_csv=real_csv, level=3).num_classes == 38


# ------------------------------------------------------------------------------------------
# C-NMC


def test_parse_cnmc_name() -> None:
    assert parse_cnmc_name("UID_11_10_1_all.bmp") == ("11", 10, 1, 1)
    assert parse_cnmc_name("training_data/fold_2/hem/UID_h3_12_1_hem.bmp") == ("h3", 12, 1, 0)
    assert parse_cnmc_name("UID_H22_3_2_HEM.BMP") == ("H22", 3, 2, 0)
    assert is_normal_subject("h3") and is_normal_subject("H22") and not is_normal_subject("57")
    for bad in ("1.bmp", "UID_11_10_1_blast.bmp", "UID_11_x_1_all.bmp", "UID_11_10_1_all.png"):
        with pytest.raises(DataError, match="UID_<subject>"):
            parse_cnmc_name(bad)


def test_real_cnmc_file_list_counts() -> None:
    listing = real_layouts() / "cnmc_kaggle_files.txt"
    if not listing.is_file():
        pytest.skip(f"{listing} not available")
    lines = listing.read_text().split()
    train = [p for p in lines if p.startswith("training_data/")]
    parsed = [parse_cnmc_name(p) for p in train]
    assert len(parsed) == 10661
    for path, (_, _, _, label) in zip(train, parsed):
        assert path.split("/")[2] == ("all" if label else "hem")
    subjects = {s: lab for s, _, _, lab in parsed}
    assert len(subjects) == 73
    assert sum(1 for s in subjects if is_normal_subject(s)) == 26
    assert all(is_normal_subject(s) == (lab == 0) for s, lab in subjects.items())
    prelim = [p for p in lines if p.startswith("validation_data/C-NMC_test_prelim_phase_data/")]
    final = [p for p in lines if p.startswith("testing_data/C-NMC_test_final_phase_data/")]
    assert len(prelim) == 1867 and len(final) == 2586
    assert "validation_data/C-NMC_test_prelim_phase_data_labels.csv" in lines


def test_real_cnmc_tree_through_loader(tmp_path: Path) -> None:
    listing = real_layouts() / "cnmc_kaggle_files.txt"
    if not listing.is_file():
        pytest.skip(f"{listing} not available")
    root = tmp_path / "C-NMC_Leukemia"
    for rel in listing.read_text().split():
        if rel.endswith(".csv"):
            continue  # its contents are not part of the listing
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    train = CnmcDataset(tmp_path)  # the folder holding C-NMC_Leukemia
    assert len(train) == 10661 and len(set(train.subjects)) == 73
    assert sorted(set(train.folds)) == [0, 1, 2] and int(train.labels.sum()) == 2397 + 2418 + 2457
    assert len(CnmcDataset(root, split="train", folds=[1])) == 2418 + 1163
    final = CnmcDataset(root, split="final_test")
    assert len(final) == 2586 and set(final.labels.tolist()) == {-1}
    assert Path(final.paths[0]).name == "1.bmp" and Path(final.paths[9]).name == "10.bmp"


@pytest.mark.parametrize("layout", ["kaggle", "official"])
@pytest.mark.parametrize("nested", [False, True])
def test_cnmc_layouts(tmp_path: Path, layout: str, nested: bool) -> None:
    base = synthetic.write_cnmc(
        tmp_path,
        layout=layout,
        n_subjects_all=3,
        n_subjects_hem=3,
        images_per_subject=2,
        n_prelim=6,
        n_final=3,
        size=16,
        nested_folds=nested,
    )
    roots = [tmp_path, base] + ([base / "training_data"] if layout == "kaggle" else [])
    for root in roots:
        ds = CnmcDataset(root)
        assert len(ds) == 12 and ds.classes == ["hem", "all"]
        assert sorted(set(ds.folds)) == [0, 1, 2]
        assert len(set(ds.subjects)) == 6 and "h3" in ds.subjects
        for subject, label, path in zip(ds.subjects, ds.labels.tolist(), ds.paths):
            assert is_normal_subject(subject) == (label == 0)
            assert Path(path).parent.name == ("all" if label else "hem")
            if nested:
                assert Path(path).parent.parent.name == Path(path).parent.parent.parent.name
    prelim = CnmcDataset(base, split="prelim_test")
    assert len(prelim) == 6 and set(prelim.folds) == {-1}
    prelim_dir = Path(prelim.paths[0]).parent  # root = the prelim folder, CSV maybe beside it
    assert CnmcDataset(prelim_dir, split="prelim_test").paths == prelim.paths
    one_fold = next(Path(p).parent.parent for p, f in zip(ds.paths, ds.folds) if f == 1)
    assert one_fold.name == "fold_1" and set(CnmcDataset(one_fold).folds) == {1}
    final = CnmcDataset(base, split="final_test")
    assert len(final) == 3 and final.labels.tolist() == [-1, -1, -1] and final.subjects == [""] * 3
    assert final[0]["subject"] == "" and int(final[0]["label"]) == -1


def test_cnmc_train_samples_and_folds(synthetic_cnmc_ro: Path) -> None:
    ds = CnmcDataset(synthetic_cnmc_ro, image_size=16)
    assert len(ds) == 24
    sample = ds[0]
    assert sample["image"].shape == (3, 16, 16) and sample["subject"] == ds.subjects[0]
    assert sample["fold"] == ds.folds[0] and sample["label"].dtype == torch.int64
    assert int(ds.load_image(0).float().view(3, -1)[:, 0].sum()) == 0  # black background corner
    fold0 = CnmcDataset(synthetic_cnmc_ro, folds=[0])
    assert 0 < len(fold0) < len(ds) and set(fold0.folds) == {0}
    assert set(fold0.paths) <= set(ds.paths)
    with pytest.raises(ConfigError, match="split"):
        CnmcDataset(synthetic_cnmc_ro, split="valid")
    with pytest.raises(ConfigError, match="folds"):
        CnmcDataset(synthetic_cnmc_ro, split="prelim_test", folds=[0])


def test_cnmc_prelim_labels_from_csv(synthetic_cnmc_ro: Path) -> None:
    ds = CnmcDataset(synthetic_cnmc_ro, split="prelim_test")
    csv_path = synthetic_cnmc_ro / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv"
    rows = read_csv_rows(csv_path)
    assert rows[0] == ["Patient_ID", "new_names", "labels"]
    truth = {r[1]: (parse_cnmc_name(r[0])[0], int(r[2])) for r in rows[1:]}
    assert [Path(p).name for p in ds.paths] == [f"{i}.bmp" for i in range(1, 10)]
    for path, subject, label in zip(ds.paths, ds.subjects, ds.labels.tolist()):
        assert truth[Path(path).name] == (subject, label)
    assert not set(ds.subjects) & set(CnmcDataset(synthetic_cnmc_ro).subjects)


def test_cnmc_folder_and_suffix_must_agree(synthetic_cnmc_rw: Path) -> None:
    hem = next(synthetic_cnmc_rw.rglob("hem"))
    src = next(synthetic_cnmc_rw.rglob("*_all.bmp"))
    shutil.move(src, hem / src.name)
    with pytest.raises(DataError, match=src.name) as info:
        CnmcDataset(synthetic_cnmc_rw)
    assert "'hem' folder" in str(info.value)


def test_cnmc_bad_training_name(synthetic_cnmc_rw: Path) -> None:
    folder = next(synthetic_cnmc_rw.rglob("all"))
    (folder / "cell_7.bmp").write_bytes(b"x")
    with pytest.raises(DataError, match=r"cell_7\.bmp"):
        CnmcDataset(synthetic_cnmc_rw)


def test_cnmc_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        CnmcDataset(tmp_path / "nope")
    (tmp_path / "C-NMC_Leukemia" / "training_data").mkdir(parents=True)
    with pytest.raises(DataError, match="no C-NMC training folders"):
        CnmcDataset(tmp_path)
    with pytest.raises(DataError, match="C-NMC_test_prelim_phase_data folder"):
        CnmcDataset(tmp_path, split="prelim_test")


def test_cnmc_two_copies_are_rejected(tmp_path: Path) -> None:
    synthetic.write_cnmc(
        tmp_path / "a", n_subjects_all=1, n_subjects_hem=1, images_per_subject=1, size=8
    )
    synthetic.write_cnmc(
        tmp_path / "b", n_subjects_all=1, n_subjects_hem=1, images_per_subject=1, size=8
    )
    with pytest.raises(DataError, match="found twice"):
        CnmcDataset(tmp_path)
    with pytest.raises(DataError, match="2 C-NMC_test_final_phase_data folders"):
        CnmcDataset(tmp_path, split="final_test")


def _prelim_csv(base: Path) -> Path:
    return base / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv"


def test_cnmc_prelim_csv_missing_column(synthetic_cnmc_rw: Path) -> None:
    csv_path = _prelim_csv(synthetic_cnmc_rw)
    write_csv_rows(csv_path, [r[:2] for r in read_csv_rows(csv_path)])
    with pytest.raises(DataError, match="labels") as info:
        CnmcDataset(synthetic_cnmc_rw, split="prelim_test")
    assert str(csv_path) in str(info.value)


def test_cnmc_prelim_row_without_image_and_image_without_row(synthetic_cnmc_rw: Path) -> None:
    prelim = synthetic_cnmc_rw / "validation_data" / "C-NMC_test_prelim_phase_data"
    (prelim / "2.bmp").unlink()
    with pytest.raises(DataError, match=r"1 row\(s\) name missing images.*2\.bmp"):
        CnmcDataset(synthetic_cnmc_rw, split="prelim_test")
    csv_path = _prelim_csv(synthetic_cnmc_rw)
    write_csv_rows(csv_path, [r for r in read_csv_rows(csv_path) if r[1] != "2.bmp"])
    shutil.copy(prelim / "1.bmp", prelim / "77.bmp")
    with pytest.raises(DataError, match=r"77\.bmp"):
        CnmcDataset(synthetic_cnmc_rw, split="prelim_test")


def test_cnmc_prelim_bad_label_and_mismatch(synthetic_cnmc_rw: Path) -> None:
    csv_path = _prelim_csv(synthetic_cnmc_rw)
    rows = read_csv_rows(csv_path)
    rows[1][2] = "ALL"
    write_csv_rows(csv_path, rows)
    with pytest.raises(DataError, match="'ALL'"):
        CnmcDataset(synthetic_cnmc_rw, split="prelim_test")
    rows[1][2] = "0" if rows[1][0].endswith("_all.bmp") else "1"
    write_csv_rows(csv_path, rows)
    with pytest.raises(DataError, match="Patient_ID"):
        CnmcDataset(synthetic_cnmc_rw, split="prelim_test")


def test_cnmc_truncated_bmp(synthetic_cnmc_rw: Path, caplog) -> None:
    ds = CnmcDataset(synthetic_cnmc_rw)
    broken = ds.paths[-1]
    truncate(Path(broken))
    with pytest.raises(DataError, match=f"cannot decode image {broken}"):
        CnmcDataset(synthetic_cnmc_rw)[len(ds) - 1]
    with caplog.at_level(logging.WARNING):
        skipping = CnmcDataset(synthetic_cnmc_rw, on_bad_image="skip")
    assert skipping.skipped == [broken] and len(skipping) == len(ds) - 1
    assert skipping.subjects == ds.subjects[:-1] and skipping.folds == ds.folds[:-1]
    assert broken in caplog.text


# ------------------------------------------------------------------------------------------
# channel statistics


def test_channel_mean_std_matches_direct_computation(synthetic_all_idb2_ro: Path) -> None:
    ds = AllIdb2Dataset(synthetic_all_idb2_ro)  # mixed image sizes: no collation needed
    idx = [0, 3, 5, 8, 13]
    mean, std = channel_mean_std(ds, idx, batch_size=2)
    pixels = torch.cat([ds.load_image(i).double().flatten(1) / 255 for i in idx], dim=1)
    assert np.allclose(mean, pixels.mean(1).numpy(), atol=1e-9)
    assert np.allclose(std, pixels.std(1, unbiased=False).numpy(), atol=1e-9)


def test_cached_mean_std(synthetic_all_idb2_ro: Path, tmp_path: Path, monkeypatch) -> None:
    import leuk_lightning.data.stats as stats

    ds = AllIdb2Dataset(synthetic_all_idb2_ro, image_size=16)
    first = cached_mean_std(ds, [0, 1, 2], tmp_path)
    assert len(list(tmp_path.glob("mean_std_*.json"))) == 1

    def no_compute(*args, **kwargs):
        raise AssertionError("recomputed despite the cache")

    monkeypatch.setattr(stats, "channel_mean_std", no_compute)
    assert cached_mean_std(ds, [2, 1, 0], tmp_path) == first  # same subset, any order
    with pytest.raises(AssertionError, match="recomputed"):
        cached_mean_std(ds, [0, 1, 3], tmp_path)
