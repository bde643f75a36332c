"""``leuk-lightning train`` (= ``python -m leuk_lightning``): the Hydra app over ``conf/``.

It composes the config, runs one training run (or a multi-stage pipeline) and returns the value
of ``optimized_metric`` so that Hydra sweepers can optimise it. Overrides, ``-m`` sweeps,
``--help`` (the project's page, ``conf/hydra/default.yaml``) and ``--cfg job`` are Hydra's own.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import hydra
from omegaconf import DictConfig

from leuk_lightning.errors import user_error
from leuk_lightning.utils.config import config_dir

log = logging.getLogger("leuk_lightning")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    """One job of a run or of a sweep; a user error is one logged line and exit status 2."""
    from leuk_lightning.training.pipeline import run_job

    try:
        metrics = run_job(cfg)
    except Exception as exc:
        err = user_error(exc)
        if err is None:
            raise
        log.error("%s", err)
        raise SystemExit(2) from None
    metric = metrics.get(cfg.get("optimized_metric") or "")
    return None if metric is None else float(metric)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the Hydra app on ``argv`` (Hydra reads ``sys.argv``, so it is set for the call)."""
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    hydra_main()
    return 0
