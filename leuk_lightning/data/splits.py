"""Seeded, stratified and optionally subject-grouped splits, saved as JSON next to the run.

The published code of the reproduced papers draws splits from unseeded randomness and splits
C-NMC by image (one patient's cells in train and test). Here every split is seeded, stratified
and saved; with ``groups`` (C-NMC subjects, ADP slides) no group ever lands in two subsets.

Strategies, by label shape:

* 1-D labels (single-label): scikit-learn ``StratifiedShuffleSplit``/``StratifiedKFold``;
  with ``groups``: ``StratifiedGroupKFold`` (a holdout subset is the fold whose size is
  closest to the requested fraction, so grouped fractions are approximate).
* 2-D multi-hot labels (ADP): iterative stratification (Sechidis, Tsoumakas & Vlahavas,
  2011, "On the stratification of multi-label data"), implemented below; with ``groups`` the
  same algorithm runs over groups, each carrying its rows' summed label counts.

Subsets are returned as sorted int64 index arrays. ``save_split``/``load_split`` store them as
file paths relative to the dataset folder so a split survives moving the data.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

import numpy as np
from sklearn.model_selection import (
    StratifiedGroupKFold,
    StratifiedKFold,
    StratifiedShuffleSplit,
)

from leuk_lightning.errors import ConfigError, DataError
from leuk_lightning.utils.io import atomic_write_text

SPLIT_META_KEYS = ("repeat", "fold")


# ------------------------------------------------------------------------------------------
# input checks


def _as_labels(labels: Any) -> np.ndarray:
    """Labels as numpy (accepts torch tensors and lists); 1-D int or 2-D multi-hot."""
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim not in (1, 2) or len(arr) == 0:
        raise ConfigError(f"split labels must be a non-empty 1-D or 2-D array, got {arr.shape}")
    return arr


def _as_groups(groups: Any, n: int) -> np.ndarray | None:
    if groups is None:
        return None
    arr = np.asarray(list(groups) if not hasattr(groups, "shape") else groups)
    if len(arr) != n:
        raise ConfigError(f"split groups has {len(arr)} entries for {n} labels")
    _, codes = np.unique(arr.astype(str), return_inverse=True)
    return codes.reshape(-1)


def _check_fractions(fractions: Sequence[float], names: Sequence[str]) -> list[float]:
    fr = [float(f) for f in fractions]
    if len(fr) < 2:
        raise ConfigError(f"split fractions {list(fractions)} need at least two subsets")
    if len(fr) > len(names):
        raise ConfigError(f"split fractions {fr} have more entries than subset names {names}")
    if any(f <= 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ConfigError(f"split fractions {fr} must be positive and sum to 1")
    return fr


def _sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """Integer subset sizes summing to ``n`` (largest remainder), each at least 1."""
    raw = np.asarray(fractions) * n
    sizes = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - sizes), kind="stable")[: n - sizes.sum()]:
        sizes[i] += 1
    for i in range(len(sizes)):  # never leave a subset empty when items allow
        if sizes[i] == 0:
            j = int(np.argmax(sizes))
            if sizes[j] > 1:
                sizes[i], sizes[j] = 1, sizes[j] - 1
    return sizes.tolist()


# ------------------------------------------------------------------------------------------
# iterative stratification (multi-label)


def iterative_stratification(
    counts: np.ndarray,
    sizes: np.ndarray,
    fractions: Sequence[float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Assign items to ``len(fractions)`` subsets, Sechidis et al. (2011), Algorithm 1.

    ``counts[i, l]`` is how many positives of label ``l`` item ``i`` holds (a row's multi-hot
    vector, or a group's summed vectors) and ``sizes[i]`` its number of rows. Labels are
    handled rarest first; each item of that label goes to the subset that most lacks the
    label (ties: most lacking rows overall, then random). Items without positives fill the
    subsets that most lack rows. Returns the subset number of every item.
    """
    counts = np.asarray(counts, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.float64)
    fr = np.asarray(fractions, dtype=np.float64)
    n_items, _ = counts.shape
    want_rows = fr * sizes.sum()
    want_label = fr[:, None] * counts.sum(axis=0)[None, :]
    out = np.full(n_items, -1, dtype=np.int64)
    remaining = counts.copy()
    has_pos = counts.sum(axis=1) > 0
    k = len(fr)
    while True:
        open_mask = out < 0
        pos_left = ((remaining > 0) & open_mask[:, None]).sum(axis=0)
        if not pos_left.any():
            break
        candidates = np.flatnonzero(pos_left == pos_left[pos_left > 0].min())
        label = int(rng.choice(candidates))
        items = np.flatnonzero(open_mask & (remaining[:, label] > 0))
        for i in rng.permutation(items):
            lack = want_label[:, label]
            best = np.flatnonzero(lack == lack.max())
            if len(best) > 1:
                rows_lack = want_rows[best]
                best = best[rows_lack == rows_lack.max()]
            s = int(best[0] if len(best) == 1 else rng.choice(best))
            out[i] = s
            want_label[s] -= counts[i]
            want_rows[s] -= sizes[i]
        remaining[items] = 0
    for i in rng.permutation(np.flatnonzero((out < 0) & ~has_pos)):
        best = np.flatnonzero(want_rows == want_rows.max())
        s = int(best[0] if len(best) == 1 else rng.choice(best))
        out[i] = s
        want_rows[s] -= sizes[i]
    assert (out >= 0).all() and out.max() < k
    return out


def _multilabel_assign(
    labels: np.ndarray,
    fractions: Sequence[float],
    rng: np.random.Generator,
    groups: np.ndarray | None,
) -> np.ndarray:
    """Subset number per row for multi-hot labels (per group when ``groups`` is given)."""
    y = (labels > 0).astype(np.float64)
    if groups is None:
        return iterative_stratification(y, np.ones(len(y)), fractions, rng)
    n_groups = int(groups.max()) + 1
    if n_groups < len(fractions):
        raise DataError(f"{n_groups} groups cannot fill {len(fractions)} split subsets")
    g_counts = np.zeros((n_groups, y.shape[1]))
    np.add.at(g_counts, groups, y)
    g_sizes = np.bincount(groups, minlength=n_groups).astype(np.float64)
    return iterative_stratification(g_counts, g_sizes, fractions, rng)[groups]


# ------------------------------------------------------------------------------------------
# single-label building blocks (scikit-learn)


def _seed_of(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def _peel(
    idx: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    take: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (rest, taken) with ``taken`` of about ``take`` items, stratified."""
    if take <= 0:
        return idx, idx[:0]
    if take >= len(idx):
        return idx[:0], idx
    yy = y[idx]
    if groups is None:
        _, counts = np.unique(yy, return_counts=True)
        if counts.min() < 2 or take < len(counts) or len(idx) - take < len(counts):
            perm = rng.permutation(len(idx))  # too few items per class to stratify
            return np.sort(idx[perm[take:]]), np.sort(idx[perm[:take]])
        sss = StratifiedShuffleSplit(n_splits=1, test_size=take, random_state=_seed_of(rng))
        rest, taken = next(sss.split(np.zeros(len(idx)), yy))
        return np.sort(idx[rest]), np.sort(idx[taken])
    gg = groups[idx]
    n_groups = len(np.unique(gg))
    if n_groups < 2:
        raise DataError(f"cannot split {len(idx)} items of a single group into two subsets")
    n_splits = int(min(n_groups, max(2, round(len(idx) / take))))
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=_seed_of(rng))
    with warnings.catch_warnings():  # "least populated class" warnings: expected
        warnings.simplefilter("ignore", UserWarning)
        folds = [test for _, test in sgkf.split(np.zeros(len(idx)), yy, gg)]
    best = min(range(len(folds)), key=lambda f: (abs(len(folds[f]) - take), f))
    taken = np.sort(idx[folds[best]])
    return np.setdiff1d(idx, taken), taken


def holdout_split(
    labels: Any,
    fractions: Sequence[float],
    seed: int | Sequence[int],
    groups: Sequence[Any] | None = None,
    names: Sequence[str] = ("train", "val", "test"),
) -> dict[str, np.ndarray]:
    """Seeded stratified holdout split, e.g. fractions (0.4, 0.1, 0.5) or (0.9, 0.1).

    ``labels``: 1-D class indices or 2-D multi-hot rows (iterative stratification).
    ``groups``: per-item group ids (subjects, slides); no group is shared by two subsets and
    the fractions then hold approximately (whole groups move). ``seed`` may be a sequence of
    ints (e.g. ``repeat_entropy(seed, repeat)`` of a repeated holdout). Returns ``{name: indices}``
    for the first ``len(fractions)`` names.
    """
    y = _as_labels(labels)
    fr = _check_fractions(fractions, names)
    names = list(names)[: len(fr)]
    g = _as_groups(groups, len(y))
    rng = np.random.default_rng(seed)
    n = len(y)
    if n < len(fr):
        raise DataError(f"cannot split {n} items into {len(fr)} non-empty subsets")
    if y.ndim == 2:
        assign = _multilabel_assign(y, fr, rng, g)
        return {name: np.flatnonzero(assign == k).astype(np.int64) for k, name in enumerate(names)}
    sizes = _sizes(n, fr)
    out: dict[str, np.ndarray] = {}
    rest = np.arange(n, dtype=np.int64)
    for k in range(len(fr) - 1, 0, -1):  # peel the last subsets off, train is what is left
        rest, out[names[k]] = _peel(rest, y, g, sizes[k], rng)
    out[names[0]] = rest
    return {name: out[name].astype(np.int64) for name in names}


def kfold_splits(
    labels: Any,
    n_splits: int,
    n_repeats: int,
    seed: int,
    groups: Sequence[Any] | None = None,
    val_fraction: float = 0.0,
) -> list[dict[str, Any]]:
    """Repeated stratified k-fold: ``n_repeats * n_splits`` dicts, repeat-major.

    Each item holds ``train``/``val``/``test`` index arrays plus ``repeat`` and ``fold`` ints.
    ``val_fraction`` is the share of the *training fold* moved to ``val`` (stratified and,
    with ``groups``, group-disjoint); e.g. HistoTNet's 40/10/50 is ``n_splits=2,
    val_fraction=0.2``. ``val`` is empty when ``val_fraction`` is 0. Repetition ``r`` is
    drawn from ``numpy.random.default_rng([seed, r])`` alone (see ``kfold_repeat``).
    """
    if n_repeats < 1:
        raise ConfigError(f"kfold needs n_repeats >= 1 (got {n_repeats})")
    result: list[dict[str, Any]] = []
    for repeat in range(n_repeats):
        result.extend(kfold_repeat(labels, n_splits, seed, repeat, groups, val_fraction))
    return result


def repeat_entropy(seed: int, repeat: int) -> list[int]:
    """The recorded seed of repetition ``repeat``: ``numpy.random.default_rng([seed, repeat])``.

    Each repetition of a protocol draws a fresh split from its own stream, so one repetition
    (one job of a sweep) is computed without the others and any job can be re-run alone.
    """
    return [int(seed), int(repeat)]


def kfold_repeat(
    labels: Any,
    n_splits: int,
    seed: int,
    repeat: int,
    groups: Sequence[Any] | None = None,
    val_fraction: float = 0.0,
) -> list[dict[str, Any]]:
    """The ``n_splits`` folds of repetition ``repeat`` of ``kfold_splits`` (same arrays).

    Fold ``k`` tests on the k-th part of the data and trains (``train`` + ``val``) on the
    others; with ``n_splits=2`` each fold's test set is exactly the other fold's training pool.
    """
    y = _as_labels(labels)
    g = _as_groups(groups, len(y))
    if n_splits < 2 or repeat < 0:
        raise ConfigError(f"kfold needs n_splits >= 2 and repeat >= 0 (got {n_splits}, {repeat})")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction={val_fraction} must be in [0, 1)")
    n = len(y)
    if n < n_splits or (g is not None and int(g.max()) + 1 < n_splits):
        raise DataError(f"cannot make {n_splits} folds from {n} items / groups")
    rng = np.random.default_rng(repeat_entropy(seed, repeat))
    if y.ndim == 2:
        assign = _multilabel_assign(y, [1.0 / n_splits] * n_splits, rng, g)
        tests = [np.flatnonzero(assign == f) for f in range(n_splits)]
    else:
        state = _seed_of(rng)
        with warnings.catch_warnings():  # "least populated class" warnings: expected
            warnings.simplefilter("ignore", UserWarning)
            if g is None:
                splitter: Any = StratifiedKFold(n_splits, shuffle=True, random_state=state)
                tests = [t for _, t in splitter.split(np.zeros(n), y)]
            else:
                splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=state)
                tests = [t for _, t in splitter.split(np.zeros(n), y, g)]
    result: list[dict[str, Any]] = []
    for fold, test in enumerate(tests):
        test = np.sort(test).astype(np.int64)
        train = np.setdiff1d(np.arange(n), test).astype(np.int64)
        val = train[:0]
        if val_fraction > 0:
            sub = holdout_split(
                y[train],
                [1.0 - val_fraction, val_fraction],
                seed=_seed_of(rng),
                groups=None if g is None else g[train],
                names=("train", "val"),
            )
            train, val = train[sub["train"]], train[sub["val"]]
        result.append({"train": train, "val": val, "test": test, "repeat": repeat, "fold": fold})
    return result


# ------------------------------------------------------------------------------------------
# persistence


def _relative_paths(paths: Sequence[str]) -> list[str]:
    """Paths relative to their common folder, POSIX style (portable between machines)."""
    strs = [os.fspath(p) for p in paths]
    if not strs:
        return []
    common = os.path.commonpath(strs) if len(strs) > 1 else os.path.dirname(strs[0])
    if len(strs) > 1 and common in strs:  # a single path can be its own "common" prefix
        common = os.path.dirname(common)
    return [PurePath(os.path.relpath(p, common)).as_posix() for p in strs]


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_json_safe(v) for v in value]  # lists, tuples, OmegaConf ListConfig
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def split_to_json(split: Mapping[str, Any], paths: Sequence[str], meta: Mapping[str, Any]) -> str:
    """The exact JSON text ``save_split`` writes (sorted keys, indent 2, trailing newline)."""
    rel = _relative_paths(paths)
    subsets: dict[str, list[str]] = {}
    full_meta = dict(_json_safe(meta))
    for key, value in split.items():
        if key in SPLIT_META_KEYS and np.ndim(value) == 0:
            full_meta.setdefault(key, _json_safe(value))
            continue
        idx = np.asarray(value, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(rel)):
            raise ConfigError(f"split subset {key!r} has indices outside 0..{len(rel) - 1}")
        subsets[key] = [rel[i] for i in idx.tolist()]
    doc = {"meta": full_meta, "subsets": subsets}
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def save_split(
    path: str | os.PathLike[str],
    split: Mapping[str, Any],
    paths: Sequence[str],
    meta: Mapping[str, Any],
) -> Path:
    """Write ``{"meta": ..., "subsets": {name: [relative file paths]}}`` atomically.

    ``paths`` are the dataset's item paths (indices in ``split`` point into them); they are
    stored relative to their common folder. ``repeat``/``fold`` entries of a k-fold item go
    to ``meta``. Same inputs give the same bytes.
    """
    return atomic_write_text(path, split_to_json(split, paths, meta))


def read_split_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``meta`` dict of a saved split."""
    return dict(_read_split_doc(Path(path))["meta"])


def _read_split_doc(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read split file {path}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("subsets"), dict):
        raise DataError(f"split file {path} lacks a 'subsets' mapping")
    doc.setdefault("meta", {})
    return doc


def load_split(path: str | os.PathLike[str], paths: Sequence[str]) -> dict[str, np.ndarray]:
    """Map a saved split's file lists back to indices into ``paths`` (the current dataset).

    Files are matched by their stored relative path as a suffix of the dataset paths, so the
    dataset may live elsewhere or be rooted higher up. Missing files raise one DataError.
    """
    path = Path(path)
    doc = _read_split_doc(path)
    lookup: dict[tuple[str, ...], int] = {}
    ambiguous: set[tuple[str, ...]] = set()
    for i, p in enumerate(paths):
        parts = PurePath(os.fspath(p)).parts
        for start in range(len(parts)):
            key = parts[start:]
            if key in lookup and lookup[key] != i:
                ambiguous.add(key)
            lookup.setdefault(key, i)
    out: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for name, files in doc["subsets"].items():
        idx = []
        for f in files:
            key = PurePath(f).parts
            if key in ambiguous:
                raise DataError(f"split file {path}: {f} matches several dataset files")
            if key not in lookup:
                missing.append(f)
                continue
            idx.append(lookup[key])
        out[name] = np.asarray(idx, dtype=np.int64)
    if missing:
        shown = ", ".join(missing[:5]) + (
            f", ... ({len(missing)} in all)" if len(missing) > 5 else ""
        )
        raise DataError(
            f"split file {path} names {len(missing)} file(s) not in the dataset: {shown}"
        )
    return out
