"""Issue 8: cell detector — VOC boxes, C-NMC converter, detection training, mAP, detect CLI."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import compose_config, run_app
from omegaconf import OmegaConf
from PIL import Image

from leuk_lightning.cli import convert as convert_cli
from leuk_lightning.cli import detect as detect_cli
from leuk_lightning.data.detection import CellsVocDataset
from leuk_lightning.data.detection.convert import cell_box, cnmc_to_voc
from leuk_lightning.data.detection.datamodule import (
    augment_batch,
    build_detection_augment,
    collate_detection,
    stratified_counts_split,
)
from leuk_lightning.data.detection.voc import (
    VocAnnotation,
    VocObject,
    read_voc_xml,
    voc_to_string,
    write_voc_xml,
)
from leuk_lightning.data.synthetic import write_cells_voc, write_cnmc
from leuk_lightning.errors import ConfigError, DataError
from leuk_lightning.inference import detect as D
from leuk_lightning.models.detection import create_detector
from leuk_lightning.regimes.detector import DetectorModule, detection_map, to_float_images

# ------------------------------------------------------------------------------------------
# VOC files


def test_voc_write_read_round_trip(tmp_path):
    ann = VocAnnotation(
        "a.jpg",
        40,
        30,
        objects=[VocObject("all", 1, 2, 10, 12), VocObject("HEM", 5.5, 6, 39.25, 30, difficult=1)],
    )
    path = write_voc_xml(tmp_path / "a.xml", ann)
    back = read_voc_xml(path)
    assert (back.filename, back.width, back.height, back.depth) == ("a.jpg", 40, 30, 3)
    assert [(o.name, o.box, o.difficult) for o in back.objects] == [
        ("all", (1, 2, 10, 12), 0),
        ("HEM", (5.5, 6, 39.25, 30), 1),
    ]
    text = voc_to_string(ann)  # LabelImg's element order and tab indentation
    for tag in ("folder", "filename", "path", "source", "size", "segmented", "object"):
        assert f"<{tag}>" in text
    assert "\t<object>\n\t\t<name>all</name>\n\t\t<pose>Unspecified</pose>" in text


def test_cell_box_largest_component_or_all_pixels():
    img = np.zeros((20, 30, 3), np.uint8)
    img[5:10, 7:15] = 120  # the cell
    img[0, 0] = 200  # a speck of noise
    img[15, 20] = 5  # below the threshold
    assert cell_box(img, threshold=10, mode="largest") == (7, 5, 15, 10)
    assert cell_box(img, threshold=10, mode="all") == (0, 0, 15, 10)
    assert cell_box(np.zeros((4, 4, 3), np.uint8)) is None


def test_cnmc_converter_xml_parses_back_to_the_same_boxes(tmp_path):
    cnmc = write_cnmc(
        tmp_path / "cnmc", n_subjects_all=2, n_subjects_hem=2, images_per_subject=2, size=48
    )
    out = tmp_path / "voc"
    xmls = cnmc_to_voc(cnmc, out, per_class=3, seed=1)
    assert len(xmls) == 6
    ds = CellsVocDataset(out)
    assert len(ds) == 6 and sorted(ds.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    for xml, image_path, boxes, labels in zip(
        sorted(xmls), ds.paths, ds.boxes, ds.box_labels, strict=True
    ):
        ann = read_voc_xml(xml)
        rgb = np.asarray(Image.open(image_path).convert("RGB"))
        ys, xs = np.nonzero(rgb.max(-1) > 10)  # every non-black pixel
        expected = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert len(ann.objects) == 1 and ann.objects[0].box == expected
        assert boxes.tolist() == [list(map(float, expected))]
        folder_class = "all" if "_all" in Path(image_path).name else "hem"
        assert ann.objects[0].name == folder_class == ds.classes[int(labels[0])]
        assert (ann.width, ann.height) == (48, 48) and ann.filename == Path(image_path).name
    with pytest.raises(ConfigError, match="per_class=99"):
        cnmc_to_voc(cnmc, tmp_path / "voc2", per_class=99)


def test_converter_cli(tmp_path):

    cnmc = write_cnmc(
        tmp_path / "cnmc", n_subjects_all=1, n_subjects_hem=1, images_per_subject=2, size=32
    )
    assert convert_cli.main([str(cnmc), str(tmp_path / "out"), "--link"]) == 0
    assert len(list((tmp_path / "out" / "annotations").glob("*.xml"))) == 4
    assert convert_cli.main([str(tmp_path / "nothing"), str(tmp_path / "o2")]) == 2


def _tiny_voc(root: Path, body: str | None = None, image: bool = True) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    if image:
        Image.new("RGB", (32, 24), (200, 150, 160)).save(root / "images" / "a.png")
    ann = VocAnnotation("a.png", 32, 24, objects=[VocObject("all", 2, 3, 12, 14)])
    text = voc_to_string(ann) if body is None else body
    (root / "annotations" / "a.xml").write_text(text)
    return root


_GOOD = voc_to_string(VocAnnotation("a.png", 32, 24, objects=[VocObject("all", 2, 3, 12, 14)]))


@pytest.mark.parametrize(
    ("body", "image", "message"),
    [
        ("<annotation><filename>a.png</filename", True, "not well-formed XML"),
        (None, False, r"image 'a.png', but .*a.png does not exist"),
        (_GOOD.replace("<xmax>12<", "<xmax>40<"), True, "outside the 32x24 image"),
        (_GOOD.replace("<xmax>12<", "<xmax>2<"), True, "xmax must exceed xmin"),
        (_GOOD.replace("<ymax>14<", "<ymax>3<"), True, "ymax must exceed ymin"),
        (_GOOD.replace("<name>all<", "<name>monocyte<"), True, "class 'monocyte', not one of"),
        (_GOOD.replace("<ymin>3<", "<ymin>three<"), True, r"<ymin> is 'three', not a number"),
        (_GOOD.replace("<filename>a.png</filename>", ""), True, "has no <filename>"),
        (_GOOD.replace("annotation>", "annot>"), True, "expected <annotation>"),
        # LabelImg's size says 32x24, the picture on disk is smaller
        (_GOOD, "small", "outside the 10x10 image"),
    ],
)
def test_malformed_voc_gives_named_errors(tmp_path, body, image, message):
    root = _tiny_voc(tmp_path / "voc", body, image=bool(image))
    if image == "small":
        Image.new("RGB", (10, 10)).save(root / "images" / "a.png")
    with pytest.raises(DataError, match=message) as info:
        CellsVocDataset(root)
    assert "a.xml" in str(info.value)


def test_dataset_sample_and_case_insensitive_classes(tmp_path):
    root = _tiny_voc(tmp_path / "voc", _GOOD.replace("<name>all<", "<name>ALL<"))
    ds = CellsVocDataset(root, image_size=48)
    sample = ds[0]
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 48, 48)
    assert sample["boxes"].tolist() == [[3.0, 6.0, 18.0, 28.0]]  # scaled by 48/32, 48/24
    assert sample["labels"].tolist() == [0] and sample["path"].endswith("a.png")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    assert len(CellsVocDataset(root, split="train")) == 1
    with pytest.raises(ConfigError, match="val.txt"):
        CellsVocDataset(root, split="val")


def test_write_cells_voc_is_deterministic_and_readable(tmp_path):
    a = write_cells_voc(tmp_path / "a", n_images=3, size=64, seed=5)
    b = write_cells_voc(tmp_path / "b", n_images=3, size=64, seed=5)
    for sub in ("images/cell_0002.png", "annotations/cell_0003.xml"):
        assert (a / sub).read_bytes().replace(b"/a/", b"/b/") == (b / sub).read_bytes()
    ds = CellsVocDataset(a)
    assert len(ds) == 3 and all(len(box) >= 1 for box in ds.boxes)


def test_demo_voc_data_has_several_cells_of_both_classes(demo_data):
    ds = CellsVocDataset(demo_data / "demo" / "cells_voc")
    assert len(ds) == 300
    counts = [len(b) for b in ds.boxes]
    assert min(counts) >= 1 and np.mean(counts) > 2.5
    mixed = sum(len(set(lab.tolist())) == 2 for lab in ds.box_labels)
    assert mixed > 50  # many images hold both classes: detection is not trivial
    assert abs(int((ds.labels == 0).sum()) - 150) < 30


# ------------------------------------------------------------------------------------------
# split and augmentation


def test_paper_split_240_60_stratified_by_dominant_class():
    labels = torch.tensor([0] * 150 + [1] * 150)
    split = stratified_counts_split(labels, [240, 60], seed=0)
    assert [len(split[k]) for k in ("train", "val")] == [240, 60]
    assert int((labels[split["train"]] == 0).sum()) == 120
    assert int((labels[split["val"]] == 1).sum()) == 30
    assert not set(split["train"]) & set(split["val"])
    bigger = torch.tensor([0] * 500 + [1] * 400)  # a selection of 300 from a larger set
    split = stratified_counts_split(bigger, [240, 60], seed=0)
    assert len(split["train"]) + len(split["val"]) == 300
    with pytest.raises(ConfigError, match="asks for 400"):
        stratified_counts_split(labels, [300, 100], seed=0)


def test_augmentation_moves_boxes_with_the_image():
    image = torch.zeros(3, 20, 30, dtype=torch.uint8)
    image[:, 2:6, 3:9] = 255
    batch = {
        "image": [image],
        "boxes": [torch.tensor([[3.0, 2.0, 9.0, 6.0], [28.0, 10.0, 29.5, 12.0]])],
        "labels": [torch.tensor([1, 0])],
        "path": ["x"],
    }
    out = augment_batch(batch, build_detection_augment(hflip=1.0, vflip=0.0))
    assert out["boxes"][0].tolist() == [[21.0, 2.0, 27.0, 6.0]]  # x -> 30 - x
    assert out["labels"][0].tolist() == [1]  # the 1.5 px box was sanitised away with its label
    assert out["image"][0][:, 2:6, 21:27].min() == 255 and out["image"][0].sum() == 255 * 3 * 24
    warped = augment_batch(batch, build_detection_augment(0.5, 0.5, 10, 0.05, 0.1))
    assert warped["boxes"][0].shape[-1] == 4 and len(warped["boxes"][0]) == len(warped["labels"][0])


# ------------------------------------------------------------------------------------------
# model, training, mAP


@pytest.mark.parametrize("arch", ["fcos", "retinanet", "faster_rcnn"])
def test_detector_factory_archs_train_and_predict(arch):
    net = create_detector(
        2, arch=arch, backbone="test_resnet", fpn_channels=64, image_size=64, anchor_scale=2
    )
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 20.0, 22.0]]), "labels": torch.tensor([1])}] * 2
    net.train()
    losses = net(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    net.eval()
    with torch.no_grad():
        out = net(images)
    assert len(out) == 2 and set(out[0]) == {"boxes", "scores", "labels"}
    assert out[0]["labels"].numel() == 0 or int(out[0]["labels"].max()) <= 1
    if arch == "fcos":
        with pytest.raises(ConfigError, match="multiple of 32 and at least 64"):
            create_detector(2, arch=arch, backbone="test_resnet", fpn_channels=16)


def test_trainable_layers_freeze_early_stages_and_weights_file(tmp_path):
    net = create_detector(2, backbone="test_resnet", fpn_channels=64, trainable_layers=2)
    body = net.model.backbone.body
    frozen = {n.split(".")[0] for n, p in body.named_parameters() if not p.requires_grad}
    trained = {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}
    assert frozen == {"conv1", "bn1", "layer1", "layer2"} and trained == {"layer3", "layer4"}
    ckpt = tmp_path / "det.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, ckpt)
    again = create_detector(2, backbone="test_resnet", fpn_channels=64, weights_file=str(ckpt))
    assert all(
        torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values())
    )
    with pytest.raises(ConfigError, match="does not match"):
        create_detector(3, backbone="test_resnet", fpn_channels=64, weights_file=str(ckpt))


def test_backbone_weights_from_a_local_timm_file(tmp_path):
    from leuk_lightning.models import create_classifier

    src = create_classifier("test_resnet", num_classes=1000)
    weights = tmp_path / "test_resnet.pth"
    torch.save(src.state_dict(), weights)
    net = create_detector(
        2, backbone="test_resnet", fpn_channels=64, pretrained=True, pretrained_file=str(weights)
    )
    body = net.model.backbone.body
    assert torch.equal(body.conv1[0].weight, src.conv1[0].weight)
    assert torch.equal(body.layer4[0].conv1.weight, src.layer4[0].conv1.weight)
    with pytest.raises(ConfigError, match="pretrained_file"):
        create_detector(2, backbone="test_resnet", fpn_channels=64, pretrained=True)
    with pytest.raises(ConfigError, match="model.arch='yolo'"):
        create_detector(2, arch="yolo")


def test_a_few_training_steps_on_demo_voc_lower_the_loss(tmp_path, demo_data):
    import hydra

    torch.manual_seed(0)
    cfg = compose_config(
        ["+experiment=cells_detector", "debug=demo", "model=fcos_test_resnet"],
        tmp_path,
        demo_data,
    )
    dm = hydra.utils.instantiate(cfg.data, output_dir=str(tmp_path))
    net = hydra.utils.instantiate(cfg.model, **dm.model_kwargs())
    module = hydra.utils.instantiate(cfg.regime, net=net, **dm.regime_kwargs())
    assert isinstance(module, DetectorModule) and module.class_names == ["all", "hem"]
    assert [len(dm.subsets[k]) for k in ("train", "val")] == [240, 60]
    assert json.loads((tmp_path / "split.json").read_text())["subsets"]["train"]
    fixed = collate_detection([dm.subsets["train"][i] for i in range(8)])

    def loss_on_fixed() -> float:
        with torch.no_grad():
            losses = net(to_float_images(fixed["image"]), module.targets(fixed))
        return float(sum(losses.values()))

    opt = module.configure_optimizers()["optimizer"]
    net.train()
    before = loss_on_fixed()
    loader = dm.train_dataloader()
    for step, batch in enumerate(loader):
        losses = net(to_float_images(batch["image"]), module.targets(batch))
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        if step == 11:
            break
    after = loss_on_fixed()
    assert after < 0.8 * before, (before, after)


def _ap_coco(ranked_tp: list[bool], n_gt: int) -> float:
    """COCO 101-point interpolated AP of a ranked list of hits (hand computation)."""
    tp = np.cumsum(ranked_tp)
    fp = np.cumsum([not t for t in ranked_tp])
    recall, precision = tp / n_gt, tp / (tp + fp)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    points = [
        precision[np.searchsorted(recall, r, side="left")] if r <= recall[-1] else 0.0
        for r in np.linspace(0, 1, 101)
    ]
    return float(np.mean(points))


def test_map_on_known_predictions_equals_hand_computed_value():
    class Fixed(torch.nn.Module):
        def forward(self, images):
            return [
                {
                    "boxes": torch.tensor(
                        [
                            [20.0, 20.0, 30.0, 30.0],  # class 0, hits GT 1 exactly
                            [50.0, 50.0, 60.0, 60.0],  # class 0, false positive
                            [0.0, 0.0, 10.0, 6.25],  # class 0, IoU 0.625 with GT 2
                            [70.0, 0.0, 80.0, 10.0],  # class 1, exact
                        ]
                    ),
                    "scores": torch.tensor([0.9, 0.8, 0.7, 0.95]),
                    "labels": torch.tensor([0, 0, 0, 1]),
                }
            ]

    module = DetectorModule(Fixed(), optimizer=torch.optim.SGD, class_names=["all", "hem"])
    batch = {
        "image": [torch.zeros(3, 100, 100, dtype=torch.uint8)],
        "boxes": [torch.tensor([[20.0, 20.0, 30.0, 30.0], [0, 0, 10, 10], [70, 0, 80, 10]])],
        "labels": [torch.tensor([0, 0, 1])],
    }
    module._evaluate(batch, module.test_map)
    result = module.test_map.compute()
    # class 0 ranked: TP, FP, TP (2 GT): 51 recall points at precision 1, 50 at 2/3
    ap0_low = (51 * 1.0 + 50 * 2 / 3) / 101
    assert _ap_coco([True, False, True], 2) == pytest.approx(ap0_low)
    # at IoU thresholds 0.65..0.95 (7 of 10) the 0.625 box misses: TP, FP, FP -> 51/101
    ap0_high = 51 / 101
    ap0 = (3 * ap0_low + 7 * ap0_high) / 10
    assert float(result["map_50"]) == pytest.approx((ap0_low + 1.0) / 2, abs=1e-4)
    assert float(result["map"]) == pytest.approx((ap0 + 1.0) / 2, abs=1e-4)
    per_class = dict(zip(result["classes"].tolist(), result["map_per_class"].tolist()))
    assert per_class[0] == pytest.approx(ap0, abs=1e-4) and per_class[1] == pytest.approx(1.0)
    detection_map()  # the factory used by the module builds without error


# ------------------------------------------------------------------------------------------
# end to end: the experiment, then detect on a folder, a video and a camera


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, demo_data):
    root = tmp_path_factory.mktemp("detector_run")
    proc = run_app(
        [
            "+experiment=cells_detector",
            "debug=demo",
            "model=fcos_test_resnet",
            "data.split.counts=[48,16]",
            "trainer.max_epochs=2",
            "callbacks.rich_progress_bar=null",
            "callbacks.model_summary=null",
        ],
        root,
        demo_data,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (root / "logs" / "cells_detector" / "runs").iterdir()
    return run_dir


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_experiment_trains_and_reports_map(trained_run):
    results = json.loads((trained_run / "results.json").read_text())
    metrics = results["metrics"]
    for key in ("test/map_50", "test/map", "val/map_50_best", "test/map_all", "test/map_hem"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert results["paper"]["map_50"] == 99.8
    assert Path(metrics["best_checkpoint"]).is_file()


@pytest.mark.slow
def test_detect_on_a_folder_writes_rows_and_annotated_images(trained_run, demo_data, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("cell_0001.png", "cell_0002.png", "cell_0010.png"):
        shutil.copy(demo_data / "demo" / "cells_voc" / "images" / name, folder / name)
    (folder / "notes.txt").write_text("not an image")
    ckpt = json.loads((trained_run / "results.json").read_text())["metrics"]["best_checkpoint"]
    # the run's debug=demo size (64), not the experiment's 448 that .hydra/config.yaml holds
    assert D.load_detector(ckpt).image_size == 64
    out = tmp_path / "det.csv"
    args = [f"ckpt_path={ckpt}", f"input={folder}", f"output={out}", "score_threshold=0.0"]
    assert detect_cli.main([*args, "annotate=true"]) == 0
    rows = _read_csv(out)
    assert list(rows[0]) == list(D.COLUMNS)
    assert [Path(s).name for s in dict.fromkeys(r["source"] for r in rows)] == [
        "cell_0001.png",
        "cell_0002.png",
        "cell_0010.png",
    ]
    assert all(r["frame"] == "" and r["class"] in ("all", "hem") for r in rows)
    boxes = np.array([[float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")] for r in rows])
    assert boxes.min() >= -0.5 and boxes.max() <= 128.5  # in the 128 px pictures' pixels
    assert sorted(p.name for p in (tmp_path / "det_annotated").iterdir()) == [
        "cell_0001_det.png",
        "cell_0002_det.png",
        "cell_0010_det.png",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.slow
def test_detect_on_a_video_gives_one_csv_block_per_frame(trained_run, demo_data, tmp_path):
    video = tmp_path / "cells.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (128, 128))
    for i in range(1, 7):
        rgb = np.asarray(
            Image.open(demo_data / "demo" / "cells_voc" / "images" / f"cell_{i:04d}.png")
        )
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    ckpt = json.loads((trained_run / "results.json").read_text())["metrics"]["best_checkpoint"]
    out = tmp_path / "video.csv"
    args = detect_cli.build_parser().parse_args(
        [f"ckpt_path={ckpt}", f"input={video}", f"output={out}", "score_threshold=0.0",
         "batch_size=4", "annotate=true"]
    )  # fmt: skip
    stats = D.detect(OmegaConf.create(vars(args)))
    rows = _read_csv(out)
    frames = [int(r["frame"]) for r in rows]
    blocks = list(dict.fromkeys(frames))
    assert blocks == list(range(6)) and frames == sorted(frames)  # one contiguous block each
    assert stats["frames"] == 6 and stats["detections"] == len(rows) and stats["fps"] > 0
    annotated = cv2.VideoCapture(str(tmp_path / "video_annotated" / "cells_det.avi"))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    annotated.release()


@pytest.mark.slow
def test_detect_errors_are_clear(trained_run, tmp_path, capsys):
    ckpt = json.loads((trained_run / "results.json").read_text())["metrics"]["best_checkpoint"]
    probe = cv2.VideoCapture(9)
    has_camera = probe.isOpened()
    probe.release()
    if not has_camera:
        assert (
            detect_cli.main([f"ckpt_path={ckpt}", "input=9", f"output={tmp_path / 'c.csv'}"]) == 2
        )
        assert "camera index 9 could not be opened" in capsys.readouterr().err
        assert not (tmp_path / "c.csv").exists()
    assert detect_cli.main([f"ckpt_path={ckpt}", f"input={tmp_path / 'none.mp4'}"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert detect_cli.main([f"ckpt_path={ckpt}", "input=x", "thresh=1"]) == 2
    assert "unknown option 'thresh'" in capsys.readouterr().err
    lone = tmp_path / "lone.ckpt"
    shutil.copy(ckpt, lone)
    assert detect_cli.main([f"ckpt_path={lone}", f"input={tmp_path}"]) == 2
    assert ".hydra/config.yaml" in capsys.readouterr().err
