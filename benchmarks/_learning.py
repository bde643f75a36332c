"""Shared helpers of the learning benchmarks (demo accuracy, leakage, transfer): run the real
entry point (``python -m leuk_lightning``) on generated data and read the runs' results.

They print accuracies measured by training, not speeds: figures differ from one machine to
the next only through floating-point order, but each run trains networks, so keep them few.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _common import BENCH_DIR, REPO

#: data and logs of the learning benchmarks (the demo data is built here once)
LEARN_DIR = BENCH_DIR / "learning"


def app(args: list[str], out_dir: Path, multirun: bool = False) -> list[dict]:
    """Run ``python -m leuk_lightning ARGS`` with its output in ``out_dir`` (a run, or a sweep
    whose jobs are ``out_dir/<n>``); returns the metrics of every ``results.json`` written."""
    env = dict(os.environ, LEUK_ROOT=str(LEARN_DIR), LEUK_DATA_DIR=str(LEARN_DIR / "data"))
    env["WANDB_MODE"] = "offline"
    env.setdefault("OMP_NUM_THREADS", "1")  # one thread per run: no oversubscription on busy CPUs
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    where = f"hydra.sweep.dir={out_dir}" if multirun else f"hydra.run.dir={out_dir}"
    cmd = [sys.executable, "-m", "leuk_lightning", *(["-m"] if multirun else []), *args, where]
    cmd.append("callbacks.rich_progress_bar=null")
    proc = subprocess.run(cmd, cwd=LEARN_DIR, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    pattern = "*/results.json" if multirun else "results.json"
    return [json.loads(p.read_text())["metrics"] for p in sorted(out_dir.glob(pattern))]


def prepare() -> None:
    LEARN_DIR.mkdir(parents=True, exist_ok=True)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def pp(value: float) -> str:
    """A fraction as percentage points with one decimal."""
    return f"{100 * value:.1f}"
