"""``python -m leuk_lightning`` / ``leuk-lightning``: the Hydra app over ``conf/``.

It composes the config, runs one training run (or a multi-stage pipeline) and returns the value of
``optimized_metric`` so that Hydra sweepers can optimise it.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from leuk_lightning.errors import LeukError
from leuk_lightning.utils.config import config_dir

log = logging.getLogger("leuk_lightning")


def user_error(exc: BaseException) -> LeukError | None:
    """The LeukError behind ``exc`` (Hydra's instantiate wraps the errors of constructors)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, LeukError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    """Hydra entry point: one job of a run or of a sweep."""
    from leuk_lightning.run import run_job

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


def main() -> None:
    """Console script ``leuk-lightning``."""
    hydra_main()


if __name__ == "__main__":
    sys.exit(main())
