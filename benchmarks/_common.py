"""Shared helpers of the benchmarks: machine description, generated data, timing."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(os.environ.get("LEUK_BENCH_DIR", REPO / "logs" / "bench"))


def machine() -> str:
    """One line describing where the numbers were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {gpu}, Python {platform.python_version()}"
    )


def cnmc_data(size: int = 450, subjects: int = 4, per_subject: int = 12) -> Path:
    """C-NMC-layout data with images of ``size`` px (generated once, reused)."""
    from leuk_lightning.data.synthetic import write_cnmc

    root = BENCH_DIR / f"cnmc_{size}px_{subjects}x{per_subject}"
    done = root / ".done"
    if not done.is_file():
        base = write_cnmc(
            root,
            n_subjects_all=subjects,
            n_subjects_hem=subjects,
            images_per_subject=per_subject,
            n_prelim=2,
            n_final=2,
            size=size,
            seed=0,
        )
        done.write_text(str(base))
    return Path(done.read_text())


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
