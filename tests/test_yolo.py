"""Issue 18: YOLOv3 (box coding, anchor assignment, ignore mask, loss, Darknet weights), the
paper's AP, and detect's rows (issue 15 item 7)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import TINY_YOLO, compose_config
from omegaconf import OmegaConf
from PIL import Image

from leuk_lightning.cli import detect as detect_cli
from leuk_lightning.data.detection import CellsVocDataset
from leuk_lightning.data.synthetic import write_cells_voc
from leuk_lightning.evaluation.detection_ap import PaperDetectionAP, all_point_ap
from leuk_lightning.inference import detect as D
from leuk_lightning.models import create_detector
from leuk_lightning.models.yolo import (
    STRIDES,
    YOLOv3,
    assign_anchors,
    darknet_layers,
    decode_boxes,
    encode_boxes,
    ignore_mask,
    kmeans_anchors,
    load_darknet_weights,
    wh_iou,
)
from leuk_lightning.regimes.detector import DetectorModule


def tiny_yolo(num_classes: int = 2, image_size: int = 128, **kw) -> YOLOv3:
    torch.manual_seed(0)
    return create_detector(num_classes, image_size=image_size, **{**TINY_YOLO, **kw}).model


# ------------------------------------------------------------------------------------------
# box coding, anchors, ignore mask


def test_encode_decode_round_trip():
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=gen) * 300
    wh = torch.rand(50, 2, generator=gen) * 100 + 2
    boxes = torch.cat([xy, xy + wh], 1)
    anchors = torch.rand(50, 2, generator=gen) * 80 + 5
    for stride in STRIDES:
        cell, t = encode_boxes(boxes, anchors, stride)
        assert (t[:, :2] >= 0).all() and (t[:, :2] < 1).all()  # offsets inside their cell
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        assert torch.equal(cell, (centre / stride).floor().long())
        assert torch.allclose(decode_boxes(cell.float(), t, anchors, stride), boxes, atol=1e-3)
    # one by hand: centre (52, 20) at stride 16 -> cell (3, 1), offsets (0.25, 0.25)
    cell, t = encode_boxes(
        torch.tensor([[42.0, 0.0, 62.0, 40.0]]), torch.tensor([[10.0, 40.0]]), 16
    )
    assert cell.tolist() == [[3, 1]]
    assert torch.allclose(t, torch.tensor([[0.25, 0.25, math.log(2.0), 0.0]]))


#: nine square anchors 10..90 px: 10-30 at stride 8, 40-60 at 16, 70-90 at 32
ANCHORS = torch.tensor([[s, s] for s in range(10, 100, 10)], dtype=torch.float32)


def test_anchor_assignment_by_hand():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 38.0, 42.0],  # 38x42: IoU with 40x40 = 1520/1676 = .91, 50x50: .64
            [100.0, 100.0, 112.0, 108.0],  # 12x8: 10x10 -> 80/116 = .69, 20x20: 96/400 = .24
            [10.0, 200.0, 95.0, 260.0],  # 85x60: 70x70 -> 4200/5800 = .724, 80x80: 4800/6700
            [0.0, 0.0, 16.0, 40.0],  # 16x40: 30x30 -> 480/1060 = .453, 20x20: .444, 40x40: .4
        ]
    )
    iou = wh_iou(boxes[:, 2:] - boxes[:, :2], ANCHORS)
    assert iou[0, 3] == pytest.approx(1520 / 1676) and iou[1, 0] == pytest.approx(80 / 116)
    scale, anchor, cell = assign_anchors(boxes, ANCHORS)
    assert iou[2, 6] == pytest.approx(4200 / 5800) and iou[3, 2] == pytest.approx(480 / 1060)
    assert scale.tolist() == [1, 0, 2, 0]
    assert anchor.tolist() == [0, 0, 0, 2]
    # centres (19, 21)/16, (106, 104)/8, (52.5, 230)/32, (8, 20)/8
    assert cell.tolist() == [[1, 1], [13, 13], [1, 7], [1, 2]]


def test_build_targets_places_each_box_on_its_anchor_and_cell():
    model = tiny_yolo(image_size=128)
    model.anchors.copy_(ANCHORS / 128)
    outs = [torch.zeros(1, 3, 128 // s, 128 // s, 7) for s in STRIDES]
    gt = torch.tensor([[0.0, 0.0, 38.0, 42.0], [100.0, 100.0, 112.0, 108.0]])
    r = model.build_targets(outs, [{"boxes": gt, "labels": torch.tensor([1, 0])}])
    assert [int(x["obj"].sum()) for x in r] == [1, 1, 0]
    assert r[1]["obj"][0, 0, 1, 1] and r[0]["obj"][0, 0, 13, 13]
    assert r[1]["cls"][0, 0, 1, 1].tolist() == [0.0, 1.0]
    assert torch.allclose(
        r[1]["t"][0, 0, 1, 1],
        torch.tensor([19 / 16 - 1, 21 / 16 - 1, math.log(38 / 40), math.log(42 / 40)]),
    )
    assert r[1]["weight"][0, 0, 1, 1] == pytest.approx(2 - 38 * 42 / 128**2)


def test_ignore_mask_threshold():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    preds = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 6.0], [0.0, 0.0, 10.0, 4.0], [50, 50, 60, 60]]
    )
    assert ignore_mask(preds, gt).tolist() == [True, True, False, False]  # IoU 1, .6, .4, 0
    assert ignore_mask(preds, gt, 0.65).tolist() == [True, False, False, False]
    assert ignore_mask(preds, gt[:0]).tolist() == [False] * 4


def test_no_object_loss_skips_unassigned_predictions_on_a_box():
    """With zero outputs every prediction is its anchor centred in its cell: those overlapping
    the box by more than 0.5 (but not assigned) are left out of the no-object loss."""
    model = tiny_yolo(image_size=128)
    model.anchors.copy_(ANCHORS / 128)
    outs = [torch.zeros(1, 3, 128 // s, 128 // s, 7) for s in STRIDES]
    gt = torch.tensor([[32.0, 32.0, 72.0, 72.0]])  # 40x40 centred at (52, 52): stride 16
    r = model.build_targets(outs, [{"boxes": gt, "labels": torch.tensor([0])}])
    n_ignored = 0
    for s, out in enumerate(outs):
        boxes = model.decode_scale(out, s)[0]
        over = torch.stack([ignore_mask(b.reshape(-1, 4), gt, 0.5) for b in boxes])
        over = over.view(r[s]["obj"].shape[1:])
        expected = ~over & ~r[s]["obj"][0]
        assert torch.equal(r[s]["noobj"][0], expected), s
        n_ignored += int((over & ~r[s]["obj"][0]).sum())
    assert n_ignored >= 2  # 50x50 and 30x30 at the same cell overlap by .64 and .56
    assert r[1]["obj"][0, 0, 3, 3]


def test_kmeans_anchors_fit_clusters_and_sort_by_area():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.1, 0.1], [0.3, 0.2], [0.25, 0.5]])
    sizes = torch.cat([c + 0.005 * torch.randn(40, 2, generator=gen) for c in centres])
    anchors = kmeans_anchors(sizes, k=3)
    assert torch.allclose(anchors, centres, atol=0.01)
    assert kmeans_anchors(sizes, k=9).prod(1).diff().ge(0).all()
    assert kmeans_anchors([[0.2, 0.2]] * 5).shape == (9, 2)  # too few distinct sizes


# ------------------------------------------------------------------------------------------
# the network


def test_yolov3_train_and_eval_calling_convention_and_output_coordinates():
    model = tiny_yolo(image_size=128)
    images = [torch.rand(3, 256, 192), torch.rand(3, 128, 128)]
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 90.0, 120.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"centre", "size", "objectness", "classification"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    # eval: one confident prediction at stride 32, cell (1, 2), anchor 2 -> boxes in the input's
    # own pixels (the 256x192 picture was resized to 128x128 inside)
    model.eval()
    outs = [torch.full((2, 3, 128 // s, 128 // s, 7), -20.0) for s in STRIDES]
    outs[2][:, 2, 2, 1, :4] = 0.0  # sigmoid(0) = .5: centre (1.5, 2.5) * 32 = (48, 80)
    outs[2][:, 2, 2, 1, 4] = 10.0
    outs[2][:, 2, 2, 1, 6] = 10.0  # class 1
    anchor = model.anchors_px()[8]
    dets = model.postprocess(outs, [(256 / 128, 192 / 128), (1.0, 1.0)])
    box = torch.tensor(
        [48 - anchor[0] / 2, 80 - anchor[1] / 2, 48 + anchor[0] / 2, 80 + anchor[1] / 2]
    )
    box = box.clamp(0, 128)
    assert dets[1]["labels"].tolist() == [1] and torch.allclose(dets[1]["boxes"][0], box)
    assert torch.allclose(dets[0]["boxes"][0], box * torch.tensor([2.0, 1.5, 2.0, 1.5]))
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and set(out[0]) == {"boxes", "scores", "labels"}


def test_darknet_weights_file_loads_into_the_right_tensors(tmp_path):
    """A file in Darknet's format, written here value by value: header (major 0, minor 2,
    revision 0, int64 images seen), then per conv with batch norm: bias, weight, mean, var,
    conv weights; per output conv (80 COCO classes here): bias, weights."""
    model = tiny_yolo(num_classes=2)
    convs = [m for m in model.body.modules() if isinstance(m, torch.nn.Conv2d)]
    neck = model.neck
    order = [*convs]
    for part in (neck.set0, neck.head0, neck.lateral1, neck.set1, neck.head1, neck.lateral2,
                 neck.set2, neck.head2):  # fmt: skip
        order += [m for m in part.modules() if isinstance(m, torch.nn.Conv2d)]
    # stem + 5 stages x (down + one block of 2) + 3 x (5-conv block + 3x3 + output) + 2 laterals
    assert len(order) == len(darknet_layers(model)) == 1 + 5 * 3 + 3 * 7 + 2
    values, expected, counter = [], {}, [0]

    def block(n: int) -> np.ndarray:
        start = counter[0]
        counter[0] += n
        return np.arange(start, start + n, dtype=np.float32) / 1000.0

    for conv in order:
        if conv.bias is None:  # conv + batch norm
            n = conv.out_channels
            parts = [block(n) for _ in range(4)] + [block(conv.weight.numel())]
            expected[conv] = parts
        else:  # output conv of an 80-class file
            n_out = 3 * (5 + 80)
            parts = [block(n_out), block(n_out * conv.in_channels)]
        values += parts
    path = tmp_path / "yolov3.weights"
    with open(path, "wb") as fh:
        np.array([0, 2, 0], dtype=np.int32).tofile(fh)
        np.array([32013312], dtype=np.int64).tofile(fh)
        np.concatenate(values).tofile(fh)
    head_before = model.neck.head2[-1].weight.clone()
    counts = load_darknet_weights(model, path)
    assert counts == {"loaded": len(order) - 3, "skipped": 3}
    bns = {conv: bn for conv, bn in darknet_layers(model)}
    for conv, (bias, weight, mean, var, w) in expected.items():
        bn = bns[conv]
        assert np.array_equal(bn.bias.detach().numpy(), bias)
        assert np.array_equal(bn.weight.detach().numpy(), weight)
        assert np.array_equal(bn.running_mean.numpy(), mean)
        assert np.array_equal(bn.running_var.numpy(), var)
        assert np.array_equal(conv.weight.detach().numpy().ravel(), w)
    names = {m: n for n, m in model.body.named_modules()}
    assert names[order[0]].startswith("stem") and order[0].weight.shape[1] == 3
    assert order[0].weight.flatten()[0] == 4 * 8 / 1000.0  # after its 4 x 8 batch-norm values
    assert torch.equal(model.neck.head2[-1].weight, head_before)  # 80 classes: not this model's
    with open(path, "ab") as fh:
        np.zeros(3, np.float32).tofile(fh)
    with pytest.raises(Exception, match="3 values more"):
        load_darknet_weights(model, path)
    path.write_bytes(path.read_bytes()[:4000])
    with pytest.raises(Exception, match="ends early"):
        load_darknet_weights(model, path)


# ------------------------------------------------------------------------------------------
# the paper's AP and accuracy


def test_all_point_ap_by_hand():
    # ranked TP, FP, TP, TP with 4 objects: recall .25 .25 .5 .75, precision 1 .5 .67 .75;
    # the envelope (Eqn 3) lifts the precision at recall .5 from .67 to .75
    tp = np.array([1, 0, 1, 1])
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    ap = all_point_ap(ctp / 4, ctp / (ctp + cfp))
    assert ap == pytest.approx(0.25 * 1 + 0.25 * 0.75 + 0.25 * 0.75)
    metric = PaperDetectionAP(2, score_threshold=0.5)
    boxes = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]])
    nothing = torch.tensor([[80, 80, 90, 90]])
    preds = {
        "boxes": torch.cat([boxes[:1], nothing, boxes[1:2], nothing, boxes[2:3]]).float(),
        "scores": torch.tensor([0.9, 0.8, 0.7, 0.6, 0.4]),
        "labels": torch.tensor([0, 1, 0, 0, 0]),  # 2nd: another class; 4th: no object there
    }
    gt = {"boxes": boxes.float(), "labels": torch.tensor([0, 0, 0, 0])}
    metric.update([preds], [gt])
    out = metric.compute()
    # class 0 ranked TP, TP, FP, TP: recall .25 .5 .5 .75, precision 1 1 .67 .75
    assert float(out["ap50"]) == pytest.approx(0.25 + 0.25 + 0.25 * 0.75)
    assert torch.isnan(out["ap50_per_class"][1])  # no object of class 1: not averaged
    assert float(out["accuracy"]) == pytest.approx(2 / 4)  # found at score >= .5: boxes 0, 1


def test_regime_logs_paper_ap_accuracy_and_validation_loss():
    model = create_detector(2, image_size=128, **TINY_YOLO)
    module = DetectorModule(model, optimizer=torch.optim.SGD, class_names=["all", "hem"])
    batch = {
        "image": [torch.zeros(3, 128, 128, dtype=torch.uint8)],
        "boxes": [torch.tensor([[10.0, 10.0, 50.0, 60.0]])],
        "labels": [torch.tensor([1])],
    }
    module.eval()
    running = [m.running_mean.clone() for m in model.modules() if hasattr(m, "running_mean")]
    losses = module.eval_losses(batch)
    assert set(losses) == {"centre", "size", "objectness", "classification"}
    assert not model.training  # back in eval mode, batch-norm statistics untouched
    after = [m.running_mean for m in model.modules() if hasattr(m, "running_mean")]
    assert all(torch.equal(a, b) for a, b in zip(running, after))
    module._evaluate(batch, module.test_map, module.test_ap)
    values = module.test_ap.compute()
    assert set(values) == {"ap50", "ap50_per_class", "accuracy"}


# ------------------------------------------------------------------------------------------
# training: one image overfits, then detect returns the true boxes in input pixels


def _train_tiny_yolo(images, boxes, labels, steps: int, image_size: int = 128) -> YOLOv3:
    wh = torch.cat(
        [(b[:, 2:] - b[:, :2]) / torch.tensor(img.shape[:0:-1]) for img, b in zip(images, boxes)]
    )
    torch.manual_seed(0)
    net = create_detector(2, image_size=image_size, box_sizes=wh.tolist(), **TINY_YOLO)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]
    tensors = [img.float() / 255 for img in images]
    net.train()
    for _ in range(steps):
        losses = net(tensors, targets)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    return net.eval()


@pytest.mark.slow
def test_overfitting_one_image_reaches_high_ap(tmp_path):
    ds = CellsVocDataset(write_cells_voc(tmp_path / "voc", n_images=1, size=128, seed=3))
    sample = ds[0]
    boxes, labels = sample["boxes"].as_subclass(torch.Tensor), sample["labels"]
    net = _train_tiny_yolo([sample["image"]], [boxes], [labels], steps=70)
    with torch.no_grad():
        pred = net([sample["image"].float() / 255])
    metric = PaperDetectionAP(2)
    metric.update(pred, [{"boxes": boxes, "labels": labels}])
    result = metric.compute()
    assert float(result["ap50"]) >= 0.95 and float(result["accuracy"]) == 1.0


@pytest.fixture(scope="module")
def yolo_run(tmp_path_factory):
    """A trained YOLOv3 'run' (config + checkpoint, as training writes them) on four generated
    256 px pictures that the model sees at 128 px, and the pictures with their true boxes."""
    root = tmp_path_factory.mktemp("yolo_run")
    voc = write_cells_voc(root / "voc", n_images=4, size=256, seed=7)
    ds = CellsVocDataset(voc)
    images = [ds[i]["image"].as_subclass(torch.Tensor) for i in range(len(ds))]
    net = _train_tiny_yolo(images, ds.boxes, ds.box_labels, steps=120)
    cfg = compose_config(["+experiment=cells_yolov3", "debug=demo"], root)
    run = root / "run"
    (run / ".hydra").mkdir(parents=True)
    cfg.data.image_size = 128
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    ckpt = run / "checkpoints" / "best.ckpt"
    ckpt.parent.mkdir()
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
            "hyper_parameters": {"class_names": ["all", "hem"]},
        },
        ckpt,
    )
    return ckpt, ds


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.slow
def test_detect_returns_the_true_boxes_in_input_pixels(yolo_run, tmp_path):
    ckpt, ds = yolo_run
    folder = tmp_path / "in"
    folder.mkdir()
    for p in ds.paths:
        shutil.copy(p, folder)
    out = tmp_path / "det.csv"
    assert detect_cli.main([f"ckpt_path={ckpt}", f"input={folder}", f"output={out}"]) == 0
    rows = _read_csv(out)
    assert list(rows[0]) == list(D.COLUMNS)
    found = total = 0
    for path, boxes, labels in zip(ds.paths, ds.boxes, ds.box_labels):
        mine = [r for r in rows if Path(r["source"]).name == Path(path).name]
        assert mine, path  # every picture has rows
        dets = [
            (r["class"], [float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")])
            for r in mine
            if r["class"]
        ]
        for box, label in zip(boxes.tolist(), labels.tolist()):
            total += 1
            found += any(cls == ds.classes[label] and _iou(box, b) >= 0.5 for cls, b in dets)
    assert found >= 0.8 * total, (found, total)  # in the 256 px pictures' own pixels


@pytest.mark.slow
def test_detect_gives_every_image_and_frame_a_row_and_bad_files_an_error_row(yolo_run, tmp_path):
    ckpt, ds = yolo_run
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(ds.paths[0], folder / "a_cell.png")
    Image.new("RGB", (256, 256), (0, 0, 0)).save(folder / "b_black.png")  # nothing to find
    (folder / "c_broken.png").write_bytes(b"not a png")
    (folder / "d_broken.avi").write_bytes(b"not a video")
    video = folder / "e_cells.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (256, 256))
    black = np.zeros((256, 256, 3), np.uint8)
    for frame in [np.asarray(Image.open(ds.paths[1]).convert("RGB")), black, black]:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "det.csv"
    assert detect_cli.main([f"ckpt_path={ckpt}", f"input={folder}", f"output={out}"]) == 1
    rows = _read_csv(out)
    by_source: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_source.setdefault(Path(r["source"]).name, []).append(r)
    assert list(by_source) == ["a_cell.png", "b_black.png", "c_broken.png", "d_broken.avi",
                               "e_cells.avi"]  # fmt: skip
    assert all(r["class"] and not r["error"] for r in by_source["a_cell.png"])
    assert by_source["b_black.png"]  # processed: at least one row, found or not
    assert "cannot decode image" in by_source["c_broken.png"][0]["error"]
    assert "cannot open video" in by_source["d_broken.avi"][0]["error"]
    assert sorted({int(r["frame"]) for r in by_source["e_cells.avi"]}) == [0, 1, 2]
    # nothing passes a threshold of 1: each image and frame still gets exactly one (empty) row
    out = tmp_path / "none.csv"
    args = [f"ckpt_path={ckpt}", f"input={folder}", f"output={out}", "score_threshold=1.0"]
    assert detect_cli.main(args) == 1
    rows = [(Path(r["source"]).name, r["frame"], r["class"], r["xmin"], r["error"])
            for r in _read_csv(out)]  # fmt: skip
    assert rows[:2] + rows[4:] == [
        ("a_cell.png", "", "", "", ""),
        ("b_black.png", "", "", "", ""),
        ("e_cells.avi", "0", "", "", ""),
        ("e_cells.avi", "1", "", "", ""),
        ("e_cells.avi", "2", "", "", ""),
    ]
    assert [r[0] for r in rows[2:4]] == ["c_broken.png", "d_broken.avi"] and all(
        r[4] for r in rows[2:4]
    )


@pytest.mark.slow
def test_yolov3_experiment_trains_and_reports_the_papers_metrics(tmp_path, demo_data):
    from helpers import run_app

    proc = run_app(
        [
            "+experiment=cells_yolov3",
            "debug=demo",
            "data.split.counts=[24,8]",
            "trainer.max_epochs=1",
            "callbacks.rich_progress_bar=null",
            "callbacks.model_summary=null",
        ],
        tmp_path,
        demo_data,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "cells_yolov3" / "runs").iterdir()
    metrics = json.loads((run_dir / "results.json").read_text())["metrics"]
    for key in ("test/ap50", "test/det_acc", "test/ap50_all", "test/ap50_hem", "test/map_50"):
        assert key in metrics, key
    with open(next(run_dir.rglob("metrics.csv"))) as fh:
        header = next(csv.reader(fh))
    assert "val/loss" in header and "train/loss" in header
    assert (run_dir / "loss_curves.png").is_file()
    with open(run_dir / "loss_curves.csv") as fh:
        curves = list(csv.DictReader(fh))
    assert len(curves) == 1 and float(curves[0]["val/loss"]) > 0
    loaded = D.load_detector(metrics["best_checkpoint"])
    assert loaded.net.arch == "yolov3" and loaded.net.model.image_size == 128


def test_cells_yolov3_has_the_papers_settings_and_a_cpu_sized_demo(tmp_path):
    paper = compose_config(["+experiment=cells_yolov3"], tmp_path)
    assert paper.model.arch == "yolov3" and paper.model.backbone == "darknet53"
    assert (paper.model.backbone_width, paper.model.neck_widths) == (1.0, [512, 256, 128])
    assert paper.data.image_size == 416 and paper.trainer.max_epochs == 25
    assert list(paper.data.split.counts) == [240, 60] and paper.data.augment is None
    assert paper.regime.monitor == "val/ap50" and paper.paper.map_50 == 99.8
    demo = compose_config(["+experiment=cells_yolov3", "debug=demo"], tmp_path)
    assert (demo.model.backbone_width, demo.model.neck_widths) == (0.125, [32, 16, 16])
    assert demo.model.min_image_size == 128 and demo.regime.optimizer.lr == 0.003
    fcos = compose_config(["+experiment=cells_detector", "debug=demo"], tmp_path)
    assert fcos.model.backbone == "test_resnet"
