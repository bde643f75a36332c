"""Pascal VOC XML as LabelImg writes it, and a C-NMC -> VOC converter (boxes without annotators).

LabelImg (``labelImg``, Pascal VOC mode) writes one XML per image::

    <annotation>
        <folder>images</folder>
        <filename>UID_1_1_all.jpg</filename>
        <path>C:\\...\\images\\UID_1_1_all.jpg</path>
        <source><database>Unknown</database></source>
        <size><width>458</width><height>458</height><depth>3</depth></size>
        <segmented>0</segmented>
        <object>
            <name>ALL</name><pose>Unspecified</pose><truncated>0</truncated>
            <difficult>0</difficult>
            <bndbox><xmin>91</xmin><ymin>122</ymin><xmax>349</xmax><ymax>335</ymax></bndbox>
        </object>
        ... one <object> per box
    </annotation>

:func:`write_voc_xml` writes exactly these elements (tab-indented, as LabelImg does), and
:func:`read_voc_xml` reads them back with one :class:`DataError` naming the file for malformed
XML, missing elements, non-numeric coordinates or empty boxes. Box coordinates are pixel-edge
coordinates (``xmin``/``ymin`` the left/top edge of the first covered pixel, ``xmax``/``ymax``
the right/bottom edge), read as written; LabelImg's own 1-based values are kept as they are
(a difference of at most one pixel).

C-NMC crops show one segmented cell on a black background, so a box needs no annotator:
:func:`cell_box` thresholds ``max(R, G, B) > threshold`` and takes the bounding box of the
largest 8-connected component (``mode="largest"``, robust to specks of stain noise) or of all
non-black pixels (``mode="all"``). :func:`cnmc_to_voc` does this for every training image of a
C-NMC folder (class = its ``all``/``hem`` folder) and writes ``<out>/images`` +
``<out>/annotations/*.xml``::

    python -m leuk_lightning.data.voc <C-NMC root> <out> [--per-class 150] [--link]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from leuk_lightning.errors import ConfigError, DataError, LeukError
from leuk_lightning.utils.io import atomic_write

log = logging.getLogger(__name__)

IMAGES_DIR = "images"
ANNOTATIONS_DIR = "annotations"
BOX_MODES = ("largest", "all")


@dataclass
class VocObject:
    """One ``<object>``: class name and box (pixel-edge xyxy) plus LabelImg's flags."""

    name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    pose: str = "Unspecified"
    truncated: int = 0
    difficult: int = 0

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.xmin, self.ymin, self.xmax, self.ymax)


@dataclass
class VocAnnotation:
    """One LabelImg XML file: the image it describes and its boxes."""

    filename: str
    width: int
    height: int
    depth: int = 3
    folder: str = IMAGES_DIR
    path: str = ""
    objects: list[VocObject] = field(default_factory=list)
    database: str = "Unknown"
    segmented: int = 0


def _num(value: float) -> str:
    """Integers as LabelImg writes them; fractional coordinates keep their decimals."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def voc_to_string(ann: VocAnnotation) -> str:
    """The LabelImg XML text of ``ann`` (tab indentation, no XML declaration, as LabelImg)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = ann.folder
    ET.SubElement(root, "filename").text = ann.filename
    ET.SubElement(root, "path").text = ann.path or ann.filename
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = ann.database
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(int(ann.width))
    ET.SubElement(size, "height").text = str(int(ann.height))
    ET.SubElement(size, "depth").text = str(int(ann.depth))
    ET.SubElement(root, "segmented").text = str(int(ann.segmented))
    for obj in ann.objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = obj.name
        ET.SubElement(node, "pose").text = obj.pose
        ET.SubElement(node, "truncated").text = str(int(obj.truncated))
        ET.SubElement(node, "difficult").text = str(int(obj.difficult))
        box = ET.SubElement(node, "bndbox")
        for key in ("xmin", "ymin", "xmax", "ymax"):
            ET.SubElement(box, key).text = _num(getattr(obj, key))
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode") + "\n"


def write_voc_xml(path: str | os.PathLike[str], ann: VocAnnotation) -> Path:
    """Write ``ann`` as a LabelImg-compatible XML file (atomically)."""
    text = voc_to_string(ann)
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _text(node: ET.Element, tag: str, path: Path, where: str = "annotation") -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DataError(f"VOC annotation {path}: <{where}> has no <{tag}> (or it is empty)")
    return child.text.strip()


def _number(node: ET.Element, tag: str, path: Path, where: str) -> float:
    text = _text(node, tag, path, where)
    try:
        return float(text)
    except ValueError:
        raise DataError(
            f"VOC annotation {path}: <{where}>/<{tag}> is {text!r}, not a number"
        ) from None


def read_voc_xml(path: str | os.PathLike[str]) -> VocAnnotation:
    """Parse one LabelImg/Pascal VOC XML file; every defect is a DataError naming ``path``.

    Checks the structure (``filename``, ``size``, ``object/name``, ``bndbox`` coordinates) and
    that every box has ``xmax > xmin`` and ``ymax > ymin`` and lies inside ``size`` (when the
    size is given: LabelImg writes 0 for images it could not read). Class names are returned as
    written; the dataset decides which are known.
    """
    p = Path(path)
    try:
        root = ET.parse(p).getroot()
    except ET.ParseError as exc:
        raise DataError(f"VOC annotation {p} is not well-formed XML: {exc}") from exc
    except OSError as exc:
        raise DataError(f"cannot read VOC annotation {p}: {exc}") from exc
    if root.tag != "annotation":
        raise DataError(f"VOC annotation {p}: root element is <{root.tag}>, expected <annotation>")
    filename = _text(root, "filename", p)
    size = root.find("size")
    if size is None:
        raise DataError(f"VOC annotation {p}: <annotation> has no <size>")
    width = int(_number(size, "width", p, "size"))
    height = int(_number(size, "height", p, "size"))
    depth_node = size.find("depth")
    depth = int(float(depth_node.text)) if depth_node is not None and depth_node.text else 3
    ann = VocAnnotation(
        filename=filename,
        width=width,
        height=height,
        depth=depth,
        folder=(root.findtext("folder") or "").strip(),
        path=(root.findtext("path") or "").strip(),
        database=(root.findtext("source/database") or "Unknown").strip(),
        segmented=int(float((root.findtext("segmented") or "0").strip() or 0)),
    )
    for k, node in enumerate(root.findall("object"), start=1):
        where = f"object {k}"
        name = _text(node, "name", p, where)
        box = node.find("bndbox")
        if box is None:
            raise DataError(f"VOC annotation {p}: <{where}> ({name}) has no <bndbox>")
        coords = [_number(box, t, p, f"{where}/bndbox") for t in ("xmin", "ymin", "xmax", "ymax")]
        obj = VocObject(
            name,
            *coords,
            pose=(node.findtext("pose") or "Unspecified").strip(),
            truncated=int(float((node.findtext("truncated") or "0").strip() or 0)),
            difficult=int(float((node.findtext("difficult") or "0").strip() or 0)),
        )
        check_box(obj, p, k, width, height)
        ann.objects.append(obj)
    return ann


def check_box(obj: VocObject, path: Path, k: int, width: int, height: int) -> None:
    """DataError for an empty box or one outside a ``width`` x ``height`` image (0: unknown)."""
    x0, y0, x1, y1 = obj.box
    if x1 <= x0 or y1 <= y0:
        raise DataError(
            f"VOC annotation {path}: object {k} ({obj.name}) has an empty box "
            f"xmin={_num(x0)} ymin={_num(y0)} xmax={_num(x1)} ymax={_num(y1)}; "
            "xmax must exceed xmin and ymax must exceed ymin"
        )
    if width > 0 and height > 0 and (x0 < 0 or y0 < 0 or x1 > width or y1 > height):
        raise DataError(
            f"VOC annotation {path}: object {k} ({obj.name}) box "
            f"({_num(x0)}, {_num(y0)}, {_num(x1)}, {_num(y1)}) lies outside the "
            f"{width}x{height} image"
        )


# ------------------------------------------------------------------------------------------
# C-NMC -> VOC


def cell_box(
    image: np.ndarray, threshold: int = 10, mode: str = "largest"
) -> tuple[int, int, int, int] | None:
    """Box (pixel-edge xyxy) of the cell in a black-background crop; None when all is black.

    ``image`` is HxWx3 uint8. Foreground = ``max(R, G, B) > threshold``. ``mode="largest"``
    takes the largest 8-connected foreground component (ignores isolated noise pixels),
    ``mode="all"`` the bounding box of every foreground pixel.
    """
    if mode not in BOX_MODES:
        raise ConfigError(f"box mode {mode!r} is not known; use one of {list(BOX_MODES)}")
    fg = np.asarray(image).max(axis=-1) > threshold
    if not fg.any():
        return None
    if mode == "largest":
        labels, n = ndimage.label(fg, structure=np.ones((3, 3), dtype=bool))
        if n > 1:
            sizes = np.bincount(labels.ravel())[1:]
            fg = labels == (int(np.argmax(sizes)) + 1)
    rows = np.flatnonzero(fg.any(axis=1))
    cols = np.flatnonzero(fg.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _place(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:  # other file system: fall back to a symlink
            os.symlink(os.path.abspath(src), dst)
            return
    shutil.copy2(src, dst)


def cnmc_to_voc(
    cnmc_root: str | os.PathLike[str],
    out_root: str | os.PathLike[str],
    threshold: int = 10,
    mode: str = "largest",
    per_class: int | None = None,
    seed: int = 0,
    link: bool = False,
    class_names: Sequence[str] = ("hem", "all"),
) -> list[Path]:
    """Write LabelImg VOC annotations for the C-NMC training images under ``cnmc_root``.

    Every image found by :class:`CnmcDataset` (``split="train"``) is copied (``link=True``:
    hard-linked, or symlinked across file systems) to ``out_root/images`` and gets
    ``out_root/annotations/<stem>.xml`` with one object: its class (folder ``all``/``hem``,
    named by ``class_names[label]``) and the box from :func:`cell_box`. ``per_class`` keeps a
    seeded random selection of that many images per class (the paper used 150 + 150).
    An image without any non-black pixel is a DataError naming it. Returns the XML paths.
    """
    from leuk_lightning.data.datasets.cnmc import CnmcDataset

    dataset = CnmcDataset(cnmc_root, split="train")
    labels = dataset.labels.numpy()
    order = np.arange(len(labels))
    if per_class is not None:
        rng = np.random.default_rng(seed)
        chosen = []
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            if per_class > len(members):
                raise ConfigError(
                    f"per_class={per_class} but {cnmc_root} has only {len(members)} "
                    f"'{class_names[label]}' images"
                )
            chosen.append(rng.choice(members, size=per_class, replace=False))
        order = np.sort(np.concatenate(chosen))
    out = Path(out_root)
    written = []
    for i in order:
        src = Path(dataset.paths[i])
        try:
            with Image.open(src) as img:
                rgb = np.asarray(img.convert("RGB"))
        except Exception as exc:  # noqa: BLE001 - any decoder failure is reported the same way
            raise DataError(f"cannot decode image {src}: {exc}") from exc
        box = cell_box(rgb, threshold, mode)
        if box is None:
            raise DataError(
                f"C-NMC image {src} has no pixel brighter than threshold={threshold}: no cell "
                "to box (lower the threshold or remove the image)"
            )
        dst = out / IMAGES_DIR / src.name
        _place(src, dst, link)
        ann = VocAnnotation(
            filename=src.name,
            width=rgb.shape[1],
            height=rgb.shape[0],
            depth=3,
            folder=IMAGES_DIR,
            path=str(dst.resolve()),
            objects=[VocObject(class_names[int(labels[i])], *box)],
        )
        written.append(write_voc_xml(out / ANNOTATIONS_DIR / f"{src.stem}.xml", ann))
    log.info("wrote %d VOC annotations under %s", len(written), out)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m leuk_lightning.data.voc <C-NMC root> <out> [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m leuk_lightning.data.voc",
        description="Derive one box per C-NMC crop from its non-black region and write "
        "LabelImg Pascal VOC annotations (out/images + out/annotations).",
    )
    parser.add_argument("cnmc_root", help="C-NMC folder (official archive or Kaggle mirror)")
    parser.add_argument("out", help="output folder (gets images/ and annotations/)")
    parser.add_argument("--threshold", type=int, default=10, help="foreground: max(RGB) > T")
    parser.add_argument("--mode", choices=BOX_MODES, default="largest")
    parser.add_argument("--per-class", type=int, default=None, help="e.g. 150 (the paper)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--link", action="store_true", help="hard-link images instead of copying")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        written = cnmc_to_voc(
            args.cnmc_root,
            args.out,
            threshold=args.threshold,
            mode=args.mode,
            per_class=args.per_class,
            seed=args.seed,
            link=args.link,
        )
    except LeukError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(written)} images annotated under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
