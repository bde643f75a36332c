"""Throughput of TTA prediction (images/s) on this machine: plain vs rot8 TTA, tiny vs full model.

    PYTHONPATH=. python benchmarks/tta_throughput.py [--size 224] [--batch 8] [--seconds 10]
        [--models test_resnet seresnext50_32x4d] [--threads N]

For each model (random weights, ``pretrained=False``) it measures the evaluation forward of
``leuk_lightning.inference.predict.InferenceModel`` (crop 2/3, normalisation, network,
probabilities) with and without ``TTAWrapper(mode="rot8")`` on random images of ``--size`` px,
and prints images/s and the ratios (TTA cost, full vs tiny model). All numbers come from one run.
"""

from __future__ import annotations

import argparse
import time

import timm
import torch

from leuk_lightning.inference.predict import InferenceModel


def images_per_second(model: torch.nn.Module, batch: torch.Tensor, seconds: float) -> float:
    """Forward passes of ``batch`` for about ``seconds`` (after one warm-up), images/s."""
    with torch.inference_mode():
        model(batch)
        n, start = 0, time.perf_counter()
        while True:
            model(batch)
            n += batch.shape[0]
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224, help="input side before the 2/3 crop")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--models", nargs="+", default=["test_resnet", "seresnext50_32x4d"])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = torch.rand(args.batch, 3, args.size, args.size)
    mean, std = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {args.size} px "
        f"(crop {round(args.size * 2 / 3)} px), batch {args.batch}"
    )
    results: dict[str, dict[str, float]] = {}
    for name in args.models:
        net = timm.create_model(name, pretrained=False, num_classes=1).eval()
        row = {}
        for tta in (None, "rot8"):
            model = InferenceModel(net, mean, std, True, False, crop_fraction=2 / 3, tta=tta)
            row[tta or "plain"] = images_per_second(model.eval(), batch, args.seconds)
        results[name] = row
        print(
            f"{name:>22}: plain {row['plain']:8.2f} img/s | rot8 TTA {row['rot8']:8.2f} img/s "
            f"| TTA slowdown x{row['plain'] / row['rot8']:.2f}"
        )
    if len(results) >= 2:
        tiny, full = args.models[0], args.models[-1]
        for mode in ("plain", "rot8"):
            ratio = results[tiny][mode] / results[full][mode]
            print(f"{mode}: {tiny} is x{ratio:.1f} faster than {full}")


if __name__ == "__main__":
    main()
