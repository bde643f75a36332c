"""Collect the runs of a sweep or of run folders: one :class:`RunRecord` per job, from its
``results.json`` and ``.hydra/`` files. A job without results (failed, interrupted or never
launched) is kept as a named record with its status and last error line, never dropped."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from leuk_lightning.errors import DataError

log = logging.getLogger(__name__)

# overrides that index the runs of one configuration (not part of the configuration)
INDEX_KEYS = ("data.split.repeat", "data.split.fold", "seed")


@dataclass
class RunRecord:
    """One job of a sweep (or one single run) and what it produced."""

    name: str  # how the run is named in reports: "<multirun dir>/<job>"
    job_dir: Path | None
    task_name: str
    overrides: list[str]
    status: str  # ok | failed | missing | incomplete
    reason: str = ""
    repeat: int | None = None
    fold: int | None = None
    seed: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, Any] | None = None

    @property
    def config_overrides(self) -> list[str]:
        """The overrides that define the configuration (protocol indices removed)."""
        return sorted(o for o in self.overrides if _override_key(o) not in INDEX_KEYS)

    @property
    def config_key(self) -> str:
        return " ".join([self.task_name, *self.config_overrides])

    @property
    def label(self) -> str:
        """Short readable name: task + overrides other than the experiment that set the task."""
        shown = [o for o in self.config_overrides if _override_key(o) not in {"experiment"}]
        return " ".join([self.task_name, *shown])

    @property
    def pair_key(self) -> tuple[Any, Any, Any]:
        return (self.repeat, self.fold, self.seed)


# ------------------------------------------------------------------------------------------
# collecting runs


def _override_key(override: str) -> str:
    key = override.split("=", 1)[0]
    return key.lstrip("+~")


def _override_int(overrides: Sequence[str], key: str) -> int | None:
    for o in overrides:
        if _override_key(o) == key and "=" in o:
            try:
                return int(o.split("=", 1)[1])
            except ValueError:
                return None
    return None


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _last_error_line(job_dir: Path) -> str:
    """The last ERROR/exception line of a job's log files (why it has no results)."""
    for log_file in sorted(job_dir.glob("*.log")):
        try:
            lines = log_file.read_text(errors="replace").splitlines()
        except OSError:
            continue
        errors = [ln for ln in lines if "ERROR" in ln or "Error" in ln or "Traceback" in ln]
        if errors:
            return errors[-1].strip()[:300]
    return ""


def read_job(job_dir: Path, name: str) -> RunRecord:
    """One job directory: ``.hydra/overrides.yaml``, ``.hydra/config.yaml``, ``results.json``."""
    hydra_dir = job_dir / ".hydra"
    overrides: list[str] = []
    task_name = job_dir.name
    cfg: dict[str, Any] = {}
    if (hydra_dir / "overrides.yaml").is_file():
        overrides = [str(o) for o in (_load_yaml(hydra_dir / "overrides.yaml") or [])]
    if (hydra_dir / "config.yaml").is_file():
        cfg = _load_yaml(hydra_dir / "config.yaml") or {}
        task_name = str(cfg.get("task_name", task_name))
    split = ((cfg.get("data") or {}).get("split") or {}) if isinstance(cfg, dict) else {}
    repeat = _override_int(overrides, "data.split.repeat")
    fold = _override_int(overrides, "data.split.fold")
    repeat = repeat if repeat is not None else _int_or_none(split.get("repeat"))
    fold = fold if fold is not None else _int_or_none(split.get("fold"))
    seed = _int_or_none(cfg.get("seed")) if isinstance(cfg, dict) else None
    record = RunRecord(
        name, job_dir, task_name, overrides, "ok", repeat=repeat, fold=fold, seed=seed
    )
    results = job_dir / "results.json"
    if not results.is_file():
        record.status = "failed"
        why = _last_error_line(job_dir)
        record.reason = "no results.json (failed or interrupted run)" + (f": {why}" if why else "")
        return record
    try:
        doc = json.loads(results.read_text())
    except (OSError, ValueError) as exc:
        record.status, record.reason = "failed", f"unreadable results.json: {exc}"
        return record
    record.task_name = str(doc.get("task_name", record.task_name))
    record.seed = _int_or_none(doc.get("seed", record.seed))
    record.metrics = dict(doc.get("metrics") or {})
    record.paper = doc.get("paper")
    if "test/acc" not in record.metrics:
        record.status, record.reason = (
            "incomplete",
            "results.json has no test metrics (test=false?)",
        )
    return record


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def expected_jobs(sweep_dir: Path) -> list[list[str]] | None:
    """The override lists of every job a Hydra basic-sweeper multirun was to launch.

    Read from ``multirun.yaml`` (the sweep's command line and ``hydra.sweeper.params``), so
    jobs that never started (the sweep stopped at a failure) are known by number and overrides.
    """
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        doc = _load_yaml(path) or {}
        hydra_cfg = doc.get("hydra") or {}
        task = list((hydra_cfg.get("overrides") or {}).get("task") or [])
        params = (hydra_cfg.get("sweeper") or {}).get("params") or {}
        lines = [f"{k}={v}" for k, v in params.items()] + task
        parsed = OverridesParser.create().parse_overrides(lines)
        batches = BasicSweeper.split_arguments(parsed, None)
        return [list(job) for batch in batches for job in batch]
    except Exception as exc:  # an unusual sweeper: fall back to the job folders found
        log.warning("cannot expand the jobs of %s (%s); listing the job folders only", path, exc)
        return None


def _job_dirs(root: Path) -> list[Path]:
    if (root / ".hydra").is_dir() or (root / "results.json").is_file():
        return [root]
    found = {p.parent for p in root.rglob(".hydra") if p.is_dir()}
    found |= {p.parent for p in root.rglob("results.json")}
    # stage runs of the pipeline cache are not jobs of the sweep
    return sorted(p for p in found if "stage_cache" not in p.parts)


def _sort_key(p: Path) -> tuple[Any, ...]:
    return tuple((0, int(s), "") if s.isdigit() else (1, 0, s) for s in p.parts)


def collect_runs(dirs: Sequence[str | Path]) -> list[RunRecord]:
    """Every job below the given run/multirun directories, missing and failed ones included."""
    records: list[RunRecord] = []
    for d in dirs:
        root = Path(d)
        if not root.is_dir():
            raise DataError(f"report: {root} is not a directory (give run or multirun dirs)")
        jobs = sorted(_job_dirs(root), key=_sort_key)
        for job in jobs:
            records.append(read_job(job, str(job)))
        for sweep in sorted({root, *(j.parent for j in jobs)}, key=_sort_key):
            if sweep != root and root not in sweep.parents:
                continue  # a single job was given: its siblings are not asked for
            expected = expected_jobs(sweep)
            if expected is None:
                continue
            for num, overrides in enumerate(expected):
                if not (sweep / str(num)).is_dir():
                    name = str(sweep / str(num))
                    records.append(
                        RunRecord(
                            name,
                            None,
                            _task_from(records, sweep) or sweep.parent.parent.name,
                            [o for o in overrides if not o.startswith("hydra.")],
                            "missing",
                            reason="job never ran (the sweep stopped before it)",
                            repeat=_override_int(overrides, "data.split.repeat"),
                            fold=_override_int(overrides, "data.split.fold"),
                        )
                    )
    if not records:
        raise DataError(f"report: no runs (folders with .hydra/ or results.json) under {dirs}")
    return records


def _task_from(records: Sequence[RunRecord], sweep: Path) -> str | None:
    for r in records:
        if r.job_dir is not None and r.job_dir.parent == sweep:
            return r.task_name
    return None
