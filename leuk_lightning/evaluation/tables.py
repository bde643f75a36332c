"""Aggregate runs (``results.json`` of each job) into the papers' table shapes.

One row per *configuration* (task + command-line overrides, except the protocol indices
``data.split.repeat``/``data.split.fold`` and ``seed``): mean ± sample std (ddof=1) over its runs of
accuracy, sensitivity, specificity, weighted F1 and AUROC in percent, a seeded 95 % percentile
bootstrap confidence interval of the mean, the average confusion matrix in percent of the test
set (HistoTNet Table IV style) and, where the experiment cites one (``paper:``), the published
figure beside ours. A job without results (failed, interrupted or never launched) is kept as a
named entry, never dropped silently. ``compare`` is a paired Wilcoxon signed-rank test over runs
matched by (repeat, fold, seed).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from leuk_lightning.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# (results.json key, column title, names of the same figure in an experiment's `paper:` block)
METRICS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("test/acc", "Accuracy", ("accuracy", "acc")),
    ("test/sensitivity", "Sensitivity", ("sensitivity", "recall")),
    ("test/specificity", "Specificity", ("specificity",)),
    ("test/f1_weighted", "Weighted F1", ("f1_weighted", "weighted_f1", "f1")),
    ("test/auroc", "AUROC", ("auroc", "auc")),
)
# further figures written to the CSV when the runs have them
EXTRA_METRICS: tuple[tuple[str, str], ...] = (("test/ece", "ECE"), ("test/precision", "Precision"))
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


@dataclass
class Summary:
    """Mean, sample std and bootstrap CI of one metric over the runs of a configuration."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


# ------------------------------------------------------------------------------------------
# statistics


def bootstrap_ci(
    values: Sequence[float], n_boot: int = 10000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean: resample runs with replacement ``n_boot`` times.

    ``rng = numpy.random.default_rng(seed)``; indices ``rng.integers(0, n, (n_boot, n))``; the
    CI is the (1-level)/2 and (1+level)/2 percentiles (numpy's linear rule) of the means.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def summarize(values: Sequence[float], n_boot: int = 10000, seed: int = 0) -> Summary:
    """Mean, sample standard deviation (ddof=1; NaN for one run) and 95 % bootstrap CI."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if x.size == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1)) if x.size > 1 else math.nan
    lo, hi = bootstrap_ci(x, n_boot=n_boot, seed=seed)
    return Summary(int(x.size), float(x.mean()), std, lo, hi)


def mean_confusion_percent(matrices: Iterable[Sequence[Sequence[float]]]) -> np.ndarray | None:
    """Average of the runs' confusion matrices, each in percent of its own test set."""
    mats = [np.asarray(m, dtype=np.float64) for m in matrices if m is not None]
    mats = [m for m in mats if m.ndim == 2 and m.sum() > 0]
    if not mats:
        return None
    shapes = {m.shape for m in mats}
    if len(shapes) > 1:
        raise DataError(f"runs of one configuration have confusion matrices of shapes {shapes}")
    return np.mean([100.0 * m / m.sum() for m in mats], axis=0)


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


# ------------------------------------------------------------------------------------------
# tables


@dataclass
class ConfigRow:
    """The aggregate of one configuration."""

    key: str
    label: str
    task_name: str
    overrides: list[str]
    runs: list[RunRecord]
    problems: list[RunRecord]
    summaries: dict[str, Summary]
    confusion_pct: np.ndarray | None
    class_names: list[str] | None
    paper: dict[str, Any] | None


def aggregate(records: Sequence[RunRecord], n_boot: int = 10000, seed: int = 0) -> list[ConfigRow]:
    """Group the runs into configurations and summarise each (order of first appearance)."""
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(r.config_key, []).append(r)
    rows = []
    for key, members in groups.items():
        ok = [r for r in members if r.status == "ok"]
        problems = [r for r in members if r.status != "ok"]
        summaries = {
            m: summarize(
                [100.0 * float(r.metrics[m]) for r in ok if _is_number(r.metrics.get(m))],
                n_boot=n_boot,
                seed=seed,
            )
            for m in [k for k, _, _ in METRICS] + [k for k, _ in EXTRA_METRICS]
        }
        cm = mean_confusion_percent(r.metrics.get("confusion_matrix") for r in ok)
        names = next(
            (r.metrics.get("class_names") for r in ok if r.metrics.get("class_names")), None
        )
        paper = next((r.paper for r in ok if r.paper), None) or next(
            (r.paper for r in members if r.paper), None
        )
        first = members[0]
        rows.append(
            ConfigRow(key, first.label, first.task_name, first.config_overrides, ok, problems,
                      summaries, cm, names, paper)
        )  # fmt: skip
    return rows


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(float(v))


def paper_figure(
    paper: dict[str, Any] | None, aliases: Sequence[str]
) -> tuple[float, float] | None:
    """The (mean, std) a paper gives for a metric (``{mean, std}`` or a bare number)."""
    if not paper:
        return None
    for a in aliases:
        v = paper.get(a)
        if isinstance(v, dict) and _is_number(v.get("mean")):
            return float(v["mean"]), float(v.get("std", math.nan) or math.nan)
        if _is_number(v):
            return float(v), math.nan
    return None


def _fmt(mean: float, std: float = math.nan, digits: int = 2) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def confusion_markdown(cm: np.ndarray, class_names: Sequence[str] | None) -> str:
    """Average confusion matrix in percent; binary matrices labelled TN/FP/FN/TP (Table IV)."""
    n = cm.shape[0]
    names = list(class_names or [str(i) for i in range(n)])
    tags = [["TN", "FP"], ["FN", "TP"]] if n == 2 else None
    header = ["True \\ Predicted", *[f"{i} ({names[i]})" for i in range(n)]]
    rows = []
    for i in range(n):
        cells = [
            f"{tags[i][j]} = {cm[i, j]:.2f}%" if tags else f"{cm[i, j]:.2f}%" for j in range(n)
        ]
        rows.append([f"{i} ({names[i]})", *cells])
    return _md_table(header, rows)


def markdown_report(
    rows: Sequence[ConfigRow],
    comparisons: Sequence[dict[str, Any]] = (),
    title: str = "Results",
    n_boot: int = 10000,
) -> str:
    """The report as markdown: main table, confusion matrices, problems, comparisons."""
    paper_cols = [
        (k, t, al) for k, t, al in METRICS if any(paper_figure(r.paper, al) for r in rows)
    ]
    header = ["Configuration", "Runs"]
    for k, t, al in METRICS:
        header.append(f"{t} (%)")
        if (k, t, al) in paper_cols:
            header.append(f"Paper {t.lower()} (%)")
    header.append("Accuracy 95% CI")
    body = []
    for r in rows:
        n_expected = len(r.runs) + len(r.problems)
        cells = [r.label, f"{len(r.runs)}/{n_expected}"]
        for k, t, al in METRICS:
            s = r.summaries[k]
            cells.append(_fmt(s.mean, s.std))
            if (k, t, al) in paper_cols:
                fig = paper_figure(r.paper, al)
                cells.append(_fmt(*fig) if fig else "–")
        acc = r.summaries["test/acc"]
        cells.append("–" if math.isnan(acc.ci_low) else f"[{acc.ci_low:.2f}, {acc.ci_high:.2f}]")
        body.append(cells)
    parts = [f"# {title}", "", _md_table(header, body), ""]
    parts.append(
        "Mean ± sample standard deviation over runs; 95% CI: percentile bootstrap of the mean "
        f"accuracy ({n_boot:,} resamples of runs, seeded)."
    )
    sources = sorted(
        {str(r.paper.get("source")) for r in rows if r.paper and r.paper.get("source")}
    )
    if sources:
        parts.append("Paper figures: " + "; ".join(sources) + ".")
    for r in rows:
        if r.confusion_pct is not None:
            parts += ["", f"## Average confusion matrix (%): {r.label}", ""]
            parts.append(confusion_markdown(r.confusion_pct, r.class_names))
            paper_cm = (r.paper or {}).get("confusion_matrix")
            if paper_cm is not None and np.shape(paper_cm) == r.confusion_pct.shape:
                parts += ["", f"Paper ({r.paper.get('source', 'published')}):", ""]
                parts.append(confusion_markdown(np.asarray(paper_cm, float), r.class_names))
    problems = [p for r in rows for p in r.problems]
    if problems:
        parts += ["", "## Missing or failed runs (not in the statistics)", ""]
        parts += [
            f"- `{p.name}` [{p.status}] {' '.join(p.overrides)}: {p.reason}" for p in problems
        ]
    if comparisons:
        parts += ["", "## Paired comparisons (Wilcoxon signed-rank, two-sided)", ""]
        for c in comparisons:
            parts += [f"A = `{c['a']}`, B = `{c['b']}`; {c['n_pairs']} runs matched by "
                      "(repeat, fold, seed)" + (f"; unmatched: {', '.join(c['unmatched'])}"
                                                if c["unmatched"] else ""), ""]  # fmt: skip
            head = ["Metric", "Pairs", "A mean (%)", "B mean (%)", "Mean A−B (%)", "W", "p-value"]
            body = [
                [m["metric"], m["n"], _fmt(m["mean_a"]), _fmt(m["mean_b"]), _fmt(m["mean_diff"]),
                 _fmt(m["statistic"], digits=1), "–" if math.isnan(m["p_value"])
                 else f"{m['p_value']:.4g}"]
                for m in c["metrics"]
            ]  # fmt: skip
            parts += [_md_table(head, body), ""]
    return "\n".join(parts).rstrip() + "\n"


def csv_report(rows: Sequence[ConfigRow]) -> str:
    """One CSV row per configuration: every metric's mean/std/CI in %, paper figures, CM %."""
    metric_keys = [(k, t, al) for k, t, al in METRICS] + [(k, t, ()) for k, t in EXTRA_METRICS]
    max_n = max((r.confusion_pct.shape[0] for r in rows if r.confusion_pct is not None), default=0)
    header = ["configuration", "task_name", "overrides", "n_runs", "n_missing_or_failed"]
    for k, _, _ in metric_keys:
        name = k.split("/", 1)[1]
        header += [f"{name}_mean", f"{name}_std", f"{name}_ci_low", f"{name}_ci_high"]
        header += [f"{name}_paper_mean", f"{name}_paper_std"]
    header += [f"cm_pct_{i}_{j}" for i in range(max_n) for j in range(max_n)]
    header += ["missing_or_failed_runs", "paper_source"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        line: list[Any] = [
            r.label,
            r.task_name,
            " ".join(r.overrides),
            len(r.runs),
            len(r.problems),
        ]
        for k, _, al in metric_keys:
            s = r.summaries[k]
            fig = paper_figure(r.paper, al) if al else None
            line += [_num(s.mean), _num(s.std), _num(s.ci_low), _num(s.ci_high)]
            line += [_num(fig[0]), _num(fig[1])] if fig else ["", ""]
        for i in range(max_n):
            for j in range(max_n):
                cm = r.confusion_pct
                line.append(
                    _num(cm[i, j]) if cm is not None and i < len(cm) and j < len(cm) else ""
                )
        line.append(" ".join(p.name for p in r.problems))
        line.append((r.paper or {}).get("source", "") if r.paper else "")
        writer.writerow(line)
    return buf.getvalue()


def runs_csv(records: Sequence[RunRecord]) -> str:
    """One CSV row per run (the raw figures behind the table, for notebooks)."""
    keys = [k for k, _, _ in METRICS] + [k for k, _ in EXTRA_METRICS]
    header = ["run", "configuration", "status", "repeat", "fold", "seed", *keys, "confusion_matrix"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for r in records:
        cm = r.metrics.get("confusion_matrix")
        writer.writerow(
            [r.name, r.label, r.status, _opt(r.repeat), _opt(r.fold), _opt(r.seed)]
            + [_num(r.metrics[k]) if _is_number(r.metrics.get(k)) else "" for k in keys]
            + [json.dumps(cm) if cm is not None else ""]
        )
    return buf.getvalue()


def _num(v: float) -> str:
    return "" if v is None or math.isnan(v) else f"{v:.10g}"


def _opt(v: Any) -> str:
    return "" if v is None else str(v)


# ------------------------------------------------------------------------------------------
# paired comparison


def select_runs(records: Sequence[RunRecord], which: str) -> list[RunRecord]:
    """The runs of one configuration named by its label, full key, task name or a directory."""
    for attr in ("label", "config_key"):
        hit = [r for r in records if getattr(r, attr) == which]
        if hit:
            return hit
    path = Path(which)
    if path.is_dir():
        root = path.resolve()
        hit = [
            r
            for r in records
            if r.job_dir and root in (r.job_dir.resolve(), *r.job_dir.resolve().parents)
        ]
        keys = {r.config_key for r in hit}
        if len(keys) > 1:
            raise ConfigError(f"--compare {which}: the folder holds {len(keys)} configurations; "
                              "name one by its label in the table")  # fmt: skip
        if hit:
            return hit
    by_task = [r for r in records if r.task_name == which]
    keys = {r.config_key for r in by_task}
    if len(keys) == 1:
        return by_task
    labels = sorted({r.label for r in records})
    if len(keys) > 1:
        raise ConfigError(f"--compare {which}: several configurations of this task; use one of "
                          f"{labels}")  # fmt: skip
    raise ConfigError(f"--compare {which}: no such configuration; use one of {labels}")


def compare(records: Sequence[RunRecord], a: str, b: str) -> dict[str, Any]:
    """Paired two-sided Wilcoxon signed-rank test of A vs B per metric over matched runs."""
    from scipy.stats import wilcoxon

    runs_a = {r.pair_key: r for r in select_runs(records, a) if r.status == "ok"}
    runs_b = {r.pair_key: r for r in select_runs(records, b) if r.status == "ok"}
    keys = sorted(set(runs_a) & set(runs_b), key=lambda k: tuple(-1 if v is None else v for v in k))
    unmatched = sorted(
        [runs_a[k].name for k in set(runs_a) - set(runs_b)]
        + [runs_b[k].name for k in set(runs_b) - set(runs_a)]
    )
    if unmatched:
        log.warning("--compare: runs without a partner (left out): %s", ", ".join(unmatched))
    out = []
    for k, title, _ in METRICS:
        pairs = [
            (100 * float(runs_a[p].metrics[k]), 100 * float(runs_b[p].metrics[k]))
            for p in keys
            if _is_number(runs_a[p].metrics.get(k)) and _is_number(runs_b[p].metrics.get(k))
        ]
        xa = np.array([p[0] for p in pairs])
        xb = np.array([p[1] for p in pairs])
        stat = pval = math.nan
        if len(pairs) and np.any(xa != xb):
            res = wilcoxon(xa, xb, alternative="two-sided")
            stat, pval = float(res.statistic), float(res.pvalue)
        elif len(pairs):
            stat, pval = 0.0, 1.0  # identical results: no evidence of a difference
        out.append(
            {
                "metric": title,
                "n": len(pairs),
                "mean_a": float(xa.mean()) if len(pairs) else math.nan,
                "mean_b": float(xb.mean()) if len(pairs) else math.nan,
                "mean_diff": float((xa - xb).mean()) if len(pairs) else math.nan,
                "statistic": stat,
                "p_value": pval,
            }
        )
    return {"a": a, "b": b, "n_pairs": len(keys), "unmatched": unmatched, "metrics": out}
