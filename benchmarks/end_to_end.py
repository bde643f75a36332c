"""End-to-end wall times: the demo (``make demo``: HistoCNN stage on generated ADP, then
HistoTNet on generated ALL-IDB2, CPU) with the decoded-image cache off and on, in fresh
output folders (the stage is trained in both), and optionally the full test suite.

    python benchmarks/end_to_end.py [--experiment histotnet_resnet18_l2] [--tests]
Last line: ``demo_speedup=<wall time without cache / with cache>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, REPO, machine  # noqa: E402


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="histotnet_resnet18_l2")
    parser.add_argument("--tests", action="store_true", help="also time pytest -n 2")
    args = parser.parse_args()
    root = BENCH_DIR / "end_to_end"
    data = root / "data"
    env = dict(os.environ, LEUK_DATA_DIR=str(data), WANDB_MODE="offline")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    demo = [sys.executable, "-m", "leuk_lightning", f"+experiment={args.experiment}", "debug=demo"]
    demo += ["callbacks.rich_progress_bar=null"]
    from leuk_lightning.data.synthetic import ensure_demo_data

    ensure_demo_data(data)  # generated data is not what is timed
    times = {}
    for cache in ("false", "true"):
        work = root / f"cache_{cache}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        flags = [f"data.cache={cache}", f"pretrain.data.cache={cache}"]
        times[cache] = run([*demo, *flags], work, dict(env, LEUK_ROOT=str(work)))
    print(f"machine: {machine()}")
    print(f"demo ({args.experiment} debug=demo), image cache off: {times['false']:.1f} s")
    print(f"demo ({args.experiment} debug=demo), image cache on:  {times['true']:.1f} s")
    if args.tests:
        t = run([sys.executable, "-m", "pytest", "-q", "-n", "2"], REPO, env)
        print(f"test suite (pytest -n 2): {t:.1f} s")
    print(f"demo_speedup={times['false'] / times['true']:.2f}")


if __name__ == "__main__":
    main()
