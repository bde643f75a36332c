"""The seed of one job of an evaluation protocol.

Every job of a repeated protocol (repeat r, fold k) draws its split from ``default_rng([seed, r])``
(``data/splits.py``), so both folds of a repetition share one partition. The weights'
initialisation, the augmentation and the loader order should differ between jobs too: with
``data.split.seed_per_job: true`` (the HistoTNet protocols) job (r, k) is seeded with
``SeedSequence([seed, r, k])`` instead of the one top-level ``seed`` shared by all jobs. The
top-level ``seed`` itself is unchanged, so a pipeline stage that does not depend on the split
(HistoCNN on ADP) keeps one cache entry for all jobs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from omegaconf import DictConfig


def job_seed(cfg: DictConfig | dict[str, Any]) -> int:
    """``seed``, or the per-job seed of (``data.split.repeat``, ``data.split.fold``) when
    ``data.split.seed_per_job`` is true."""
    seed = int(cfg["seed"])
    split = (cfg.get("data") or {}).get("split") or {}
    if not split.get("seed_per_job"):
        return seed
    repeat, fold = split.get("repeat"), split.get("fold")
    entropy = [seed, int(repeat or 0), int(fold or 0)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])
