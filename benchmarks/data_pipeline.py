"""Images per second of the data pipeline: decoded-image cache + batched on-device augmentation
vs a naive torchvision ImageFolder loader that decodes and augments every image with PIL.

Both read the same generated C-NMC training folders (450 px BMPs like the real ones), resize to
``--size`` px, flip/rotate at random and normalise, with the same DataLoader settings. Epochs
of the two pipelines alternate so that a busy machine slows both alike. The cache build is
a one-time cost, reported apart.

    python benchmarks/data_pipeline.py [--size 224] [--epochs 3] [--workers 0]
Last line: ``speedup=<cached images/s / naive images/s>``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset, DataLoader
from torchvision import datasets
from torchvision import transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, cnmc_data, machine, timed  # noqa: E402

from leuk_lightning.data.cache import maybe_cached  # noqa: E402
from leuk_lightning.data.datasets import CnmcDataset  # noqa: E402
from leuk_lightning.data.transforms import BatchAugment, BatchTransform, Normalize  # noqa: E402

MEAN, STD = [0.1, 0.1, 0.1], [0.2, 0.2, 0.2]


def naive_loader(root: Path, size: int, batch: int, workers: int) -> DataLoader:
    """ImageFolder per fold, PIL resize + flips + rotation + ToTensor + Normalize per image."""
    tf = T.Compose(
        [
            T.Resize((size, size)),
            T.RandomHorizontalFlip(),
            T.RandomVerticalFlip(),
            T.RandomRotation(360),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )
    folds = sorted((root / "training_data").glob("fold_*"))
    ds = ConcatDataset([datasets.ImageFolder(str(f), transform=tf) for f in folds])
    return DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(0)
    root = cnmc_data(450)
    cache_dir = BENCH_DIR / "image_cache"
    shutil.rmtree(cache_dir, ignore_errors=True)

    holder: dict[str, object] = {}
    build_s = timed(
        lambda: holder.update(
            ds=maybe_cached(CnmcDataset(root, image_size=args.size), cache_dir, num_workers=0)
        )
    )
    cached_ds = holder["ds"]
    n = len(cached_ds)
    transform = BatchTransform(
        Normalize(MEAN, STD), BatchAugment(hflip=0.5, vflip=0.5, rotation=360)
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    transform = transform.to(device)
    cached = DataLoader(cached_ds, batch_size=args.batch, shuffle=True, num_workers=args.workers)
    naive = naive_loader(root, args.size, args.batch, args.workers)

    def run_cached() -> None:
        for b in cached:
            x = transform(b["image"].to(device, non_blocking=True), train=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        assert x.dtype == torch.float32 and x.shape[-1] == args.size

    def run_naive() -> None:
        for x, _ in naive:
            x = x.to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        assert x.shape[-1] == args.size

    run_cached(), run_naive()  # warm-up (page cache, workers, allocator)
    t_cached, t_naive = [], []
    for _ in range(args.epochs):
        t_naive.append(timed(run_naive))
        t_cached.append(timed(run_cached))
    naive_ips = n / statistics.median(t_naive)
    cached_ips = n / statistics.median(t_cached)
    print(f"machine: {machine()}")
    print(
        f"data: {n} C-NMC-layout 450 px BMPs -> {args.size} px, batch {args.batch}, "
        f"{args.workers} workers, augmentation on {device}"
    )
    print(f"cache build (one time): {build_s:.2f} s ({n / build_s:.0f} images/s)")
    print(f"naive ImageFolder + PIL per image: {naive_ips:.0f} images/s")
    print(f"cache + batched augmentation:      {cached_ips:.0f} images/s")
    print(f"speedup={cached_ips / naive_ips:.2f}")


if __name__ == "__main__":
    main()
