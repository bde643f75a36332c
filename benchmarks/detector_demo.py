"""Wall and CPU time and test metrics of the detector demos (issue 18, item 4):

    python benchmarks/detector_demo.py [--threads 1] [--only cells_yolov3]

runs ``+experiment=cells_detector debug=demo`` (FCOS, tiny backbone) and
``+experiment=cells_yolov3 debug=demo`` (YOLOv3, slim Darknet-53 at 128 px) in fresh output
folders on generated VOC data (made once, not timed) and prints one line per demo: wall seconds,
CPU seconds of the training process (user + system, what a quiet machine would take as wall time
with one thread), test mAP@0.5 (COCO, 101-point) and AP@0.5 (the paper's all-point). Targets:
FCOS <= 120 s and YOLOv3 <= 180 s wall on a quiet 2-core CPU, both at mAP@0.5 >= 0.9.
``--threads`` sets OMP_NUM_THREADS (on a shared, overloaded machine one thread per process is
much faster than two: spinning OpenMP threads lose their time slices).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, REPO, machine  # noqa: E402

DEMOS = ("cells_detector", "cells_yolov3")


def run_demo(experiment: str, data_dir: Path, threads: int | None) -> dict[str, float]:
    root = BENCH_DIR / f"demo_{experiment}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = dict(os.environ, LEUK_ROOT=str(root), LEUK_DATA_DIR=str(data_dir), WANDB_MODE="offline")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "leuk_lightning", f"+experiment={experiment}", "debug=demo",
           "callbacks.rich_progress_bar=null"]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    (result,) = root.glob("logs/*/runs/*/results.json")
    metrics = json.loads(result.read_text())["metrics"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "map_50": metrics["test/map_50"],
        "ap50": metrics.get("test/ap50", float("nan")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the runs")
    parser.add_argument("--only", choices=DEMOS, default=None)
    args = parser.parse_args()
    from leuk_lightning.data.synthetic import write_cells_voc

    data_dir = BENCH_DIR / "detector_demo_data"
    if not (data_dir / "demo" / "cells_voc" / "annotations").is_dir():
        # what debug=demo generates (data/synthetic/demo.py)
        write_cells_voc(data_dir / "demo" / "cells_voc", n_images=300, size=128, seed=3)
    print(machine(), f"OMP_NUM_THREADS={args.threads or os.environ.get('OMP_NUM_THREADS')}")
    for experiment in [args.only] if args.only else DEMOS:
        r = run_demo(experiment, data_dir, args.threads)
        print(
            f"{experiment:15s} wall {r['wall_s']:6.1f} s  cpu {r['cpu_s']:6.1f} s  "
            f"test mAP@0.5 {r['map_50']:.3f}  AP@0.5 (all-point) {r['ap50']:.3f}"
        )


if __name__ == "__main__":
    main()
