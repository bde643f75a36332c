"""Your own cells, one folder per class (the torchvision ``ImageFolder`` layout, nested allowed).

On-disk layout (e.g. the PBC set of Acevedo et al. with 8 cell types, the AML-Cytomorphology set
of Matek et al. with 15 classes, the four-class ALL set of Aria et al.)::

    root/
      benign/                  the class is the name of the first-level sub-folder
        patient_01/img001.jpg  deeper sub-folders are allowed (any depth) and belong to it
        img002.png
      early_pre_b/...
      pre_b/...
      pro_b/...

Images are the files with an extension that PIL can open (``.bmp .jpg .jpeg .png .tif .tiff``
and the rest of ``PIL.Image.registered_extensions()``, any case). Hidden files and folders and
``Thumbs.db``/``desktop.ini`` are ignored; any other file (notes, CSVs) is an error unless
``other_files="ignore"``, so a stray file never silently changes the data. A file directly in
``root`` (outside every class folder), a class folder without images, a class folder not in
``classes`` (when given) and the same file reached twice (symbolic links) are errors naming the
path. Items are ordered by class, then by the natural order of their path inside the class
folder (``2.png`` before ``10.png``), so the order never depends on the file system.

Classes: by default the sub-folder names in natural order; ``classes=[...]`` fixes the order
(index i = ``classes[i]``) and the set (every listed class must have a folder with images).
For two classes the *positive* class (index 1: sensitivity, AUROC, ``prob_<class>`` in
``predict``) is the second one; ``positive_class=<name>`` makes that class index 1 whatever the
order. Subjects (patients) for subject-grouped splits: ``subject_pattern`` is a regular
expression whose first group, searched in the path relative to ``root`` (``/``-separated), is
the subject; e.g. ``"^[^/]+/([^/]+)/"`` = the folder below the class folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from leuk_lightning.data.datasets._common import (
    ImageFolderDataset,
    Transform,
    is_ignored_name,
    natural_key,
    require_dir,
    summarize,
)
from leuk_lightning.errors import ConfigError, DataError

OTHER_FILES_CHOICES = ("error", "ignore")


def image_extensions() -> frozenset[str]:
    """Lower-case extensions (with the dot) that PIL can open."""
    return frozenset(ext.lower() for ext in Image.registered_extensions())


def order_classes(
    found: Sequence[str],
    classes: Sequence[str] | None,
    positive_class: str | None,
    where: str,
) -> list[str]:
    """The class list of a dataset: ``classes`` if given (checked), else ``found`` in natural
    order; ``positive_class`` moved to index 1 of a two-class task.

    ``found`` are the labels present in the data; ``where`` names the data in messages. Labels
    outside ``classes`` are reported by the caller (it knows the file or row).
    """
    if classes is not None:
        ordered = [str(c) for c in classes]
        dupes = sorted({c for c in ordered if ordered.count(c) > 1})
        if dupes:
            raise ConfigError(f"{where}: classes lists {dupes} more than once")
        if not ordered:
            raise ConfigError(f"{where}: classes is empty")
    else:
        ordered = sorted(set(found), key=natural_key)
    if len(ordered) < 2:
        raise DataError(f"{where}: {len(ordered)} class(es) {ordered}; a classifier needs two")
    if positive_class is not None:
        positive_class = str(positive_class)
        if positive_class not in ordered:
            raise ConfigError(
                f"{where}: positive_class={positive_class!r} is not one of the classes {ordered}"
            )
        if len(ordered) != 2:
            raise ConfigError(
                f"{where}: positive_class={positive_class!r} applies to two classes only; "
                f"this data has {len(ordered)} ({', '.join(ordered)}): multi-class tasks report "
                "per-class sensitivity and macro/weighted averages instead"
            )
        ordered = [c for c in ordered if c != positive_class] + [positive_class]
    return ordered


def check_subject_pattern(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(
            f"subject_pattern={pattern!r} is not a regular expression: {exc}"
        ) from None
    if compiled.groups < 1:
        raise ConfigError(f"subject_pattern={pattern!r} needs a group (...) around the subject")
    return compiled


class FolderDataset(ImageFolderDataset):
    """One sub-folder per class; labels are int64 class indices into ``classes``.

    Args:
        root: folder holding one sub-folder per class.
        classes: class names in index order (default: the folder names, natural order).
        positive_class: the class that becomes index 1 of a two-class task.
        subject_pattern: regex whose first group in the relative path is the subject; gives
            ``subjects`` (and samples a ``subject``) for ``data.split.group_by=subject``.
        other_files: ``error`` (default) or ``ignore`` non-image files.
        image_size, transforms, on_bad_image: as every dataset of this package.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        classes: Sequence[str] | None = None,
        positive_class: str | None = None,
        subject_pattern: str | None = None,
        other_files: str = "error",
        image_size: int | None = None,
        transforms: Transform | None = None,
        on_bad_image: str = "error",
    ) -> None:
        super().__init__(image_size=image_size, transforms=transforms, on_bad_image=on_bad_image)
        if other_files not in OTHER_FILES_CHOICES:
            raise ConfigError(
                f"other_files={other_files!r} is not known; use one of {list(OTHER_FILES_CHOICES)}"
            )
        pattern = check_subject_pattern(subject_pattern)
        self.root = require_dir(root, "image folder")
        where = f"image folder {self.root}"
        exts = image_extensions()
        loose: list[str] = []
        class_dirs: dict[str, Path] = {}
        with os.scandir(self.root) as it:
            for entry in it:
                if is_ignored_name(entry.name):
                    continue
                if entry.is_dir():
                    class_dirs[entry.name] = Path(entry.path)
                else:
                    loose.append(entry.name)
        if loose:
            raise DataError(
                f"{where}: file(s) directly in the root, outside every class folder: "
                f"{summarize(sorted(loose, key=natural_key))}; put each image in the sub-folder "
                "of its class"
            )
        if not class_dirs:
            raise DataError(f"{where} has no class sub-folders (expected root/<class>/<image>)")
        if classes is not None:
            unknown = sorted(set(class_dirs) - {str(c) for c in classes}, key=natural_key)
            if unknown:
                raise DataError(
                    f"{where}: folder(s) {summarize([str(class_dirs[u]) for u in unknown])} are "
                    f"not one of the classes {list(classes)} (unknown label); remove them or add "
                    "them to data.dataset.classes"
                )
            missing = [c for c in classes if str(c) not in class_dirs]
            if missing:
                raise DataError(
                    f"{where}: class(es) {missing} have no folder (empty class); expected "
                    f"{', '.join(str(self.root / str(c)) for c in missing)}"
                )
        self.classes = order_classes(list(class_dirs), classes, positive_class, where)
        items: list[tuple[int, list, str]] = []
        others: list[str] = []
        seen: dict[str, str] = {}
        for index, name in enumerate(self.classes):
            folder = class_dirs[name]
            found = 0
            for path in self._walk(folder):
                if path.suffix.lower() not in exts:
                    others.append(str(path))
                    continue
                real = os.path.realpath(path)
                if real in seen:
                    raise DataError(
                        f"{where}: {path} and {seen[real]} are the same file (duplicate path); "
                        "each image must be in the dataset once"
                    )
                seen[real] = str(path)
                rel = path.relative_to(folder).as_posix()
                items.append((index, natural_key(rel), str(path)))
                found += 1
            if not found:
                raise DataError(f"{where}: class folder {folder} has no images (empty class)")
        if others and other_files == "error":
            raise DataError(
                f"{where}: file(s) that are not images: {summarize(sorted(others))}; "
                "move them out or set data.dataset.other_files=ignore"
            )
        items.sort(key=lambda it: (it[0], it[1]))
        self.paths = [p for _, _, p in items]
        self.labels = torch.tensor([i for i, _, _ in items], dtype=torch.int64)
        if pattern is not None:
            self.subjects: list[str] = []
            for p in self.paths:
                rel = Path(p).relative_to(self.root).as_posix()
                m = pattern.search(rel)
                if m is None or not m.group(1):
                    raise DataError(
                        f"{where}: subject_pattern {pattern.pattern!r} finds no subject in "
                        f"{rel} ({p})"
                    )
                self.subjects.append(m.group(1))
            self._register_extra("subject", self.subjects)
        self._apply_bad_image_policy()

    @staticmethod
    def _walk(folder: Path) -> list[Path]:
        """Every non-ignored file under ``folder`` (hidden folders skipped), any depth; linked
        folders are followed once (a link to an ancestor does not loop)."""
        out: list[Path] = []
        visited: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in visited:
                dirnames[:] = []
                continue
            visited.add(real)
            dirnames[:] = [d for d in dirnames if not is_ignored_name(d)]
            out += [Path(dirpath) / f for f in filenames if not is_ignored_name(f)]
        return out

    def _after_keep(self, keep: list[int]) -> None:
        if "subject" in self._extras:
            self.subjects = self._extras["subject"]  # type: ignore[assignment]


__all__ = ["FolderDataset", "image_extensions", "order_classes"]
