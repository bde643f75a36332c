"""Pascal VOC XML as LabelImg writes it, (the detector's annotation format).

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
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from leuk_lightning.errors import DataError
from leuk_lightning.utils.io import atomic_write

log = logging.getLogger(__name__)

IMAGES_DIR = "images"
ANNOTATIONS_DIR = "annotations"


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
