"""Load time of a C-NMC-size dataset: first pass (decode every BMP) vs the uint8 cache.

Generates (once) C-NMC-layout data of 450 px BMPs like the real release, then times, in one run,
(1) constructing ``CnmcDataset`` (walking the folders, parsing names: no decoding),
(2) one pass over every image decoded from its file and resized to ``--image-size``,
(3) building the memory-mapped cache (a second full decode, written once), and
(4) one pass over every image served from the cache.
Last line: ``first_pass_s=<a> cache_build_s=<b> cached_pass_s=<c> cached_speedup=<a/c>``.

    python benchmarks/dataset_load.py --images 10000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import BENCH_DIR, machine

from leuk_lightning.data.cache import CachedDataset
from leuk_lightning.data.datasets import CnmcDataset
from leuk_lightning.data.synthetic import write_cnmc


def generate(n_images: int, size: int) -> Path:
    """About ``n_images`` training images over 75 subjects (50 ALL, 25 normal), generated once."""
    per_subject = max(1, round(n_images / 75))
    root = BENCH_DIR / f"cnmc_load_{size}px_75x{per_subject}"
    if not (root / ".done").is_file():
        t = time.perf_counter()
        write_cnmc(
            root,
            n_subjects_all=50,
            n_subjects_hem=25,
            images_per_subject=per_subject,
            n_prelim=10,
            n_final=5,
            size=size,
            seed=0,
        )
        (root / ".done").write_text("ok\n")
        print(f"generated {75 * per_subject} images in {time.perf_counter() - t:.1f} s")
    return root


def one_pass(dataset) -> float:
    """Seconds to read every image of ``dataset`` once, in order."""
    t = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]["image"]
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--size", type=int, default=450, help="generated image side (px)")
    parser.add_argument("--image-size", type=int, default=224, help="training input side (px)")
    args = parser.parse_args()
    print(machine())
    root = generate(args.images, args.size)
    t = time.perf_counter()
    dataset = CnmcDataset(root, split="train", image_size=args.image_size)
    construct = time.perf_counter() - t
    print(f"{len(dataset)} images, dataset construction {construct:.2f} s")
    first = one_pass(dataset)
    print(f"first pass (decode + resize): {first:.1f} s, {len(dataset) / first:.0f} images/s")
    with tempfile.TemporaryDirectory() as cache_dir:
        t = time.perf_counter()
        cached = CachedDataset(dataset, cache_dir)
        build = time.perf_counter() - t
        print(f"cache build: {build:.1f} s")
        again = one_pass(cached)
        print(f"cached pass: {again:.2f} s, {len(cached) / again:.0f} images/s")
    print(
        f"first_pass_s={first:.2f} cache_build_s={build:.2f} cached_pass_s={again:.2f} "
        f"cached_speedup={first / again:.1f}"
    )


if __name__ == "__main__":
    main()
