"""Transfer from histology: HistoTNet (HistoCNN pre-training on generated ADP, then fine-tuning)
against the same network trained from scratch, on a small generated ALL-IDB2 training set,
averaged over seeds.

    python benchmarks/transfer_effect.py [--seeds 5] [--model resnet18] [--train 0.05]
Recipe: ``+experiment=histotnet_resnet18_l2 debug=demo`` with ``data.split.fractions=
[train, 0.1, rest]`` (13 training crops at 0.05); scratch adds ``pretrain.enabled=false``. Both
sides share seed, split and fine-tuning recipe; only the initialisation differs. The 5 "seeds"
are split seeds (``data.split.seed``; the training seed stays 42), so one cached ADP stage
serves every run, as in the paper's protocol. Last line:
``pretrained_minus_scratch=<pp>`` (mean test accuracy, percentage points; > 0: the ADP stage
transfers something, as in HistoTNet).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402
from _learning import LEARN_DIR, app, mean_std, pp, prepare  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="to split a run over processes")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--train", type=float, default=0.05, help="training fraction")
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    prepare()
    test = round(1.0 - args.train - 0.1, 4)
    common = [
        "+experiment=histotnet_resnet18_l2",
        "debug=demo",
        f"model={args.model}",
        f"trainer.max_epochs={args.epochs}",
        f"data.split.fractions=[{args.train},0.1,{test}]",
    ]
    accs: dict[str, list[float]] = {"pretrained": [], "scratch": []}
    extra = {"pretrained": [], "scratch": ["pretrain.enabled=false"]}
    out = LEARN_DIR / "transfer"
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for seed in seeds:
        for kind, flags in extra.items():
            args_ = [*common, *flags, f"data.split.seed={seed}"]
            (metrics,) = app(args_, out / f"{kind}_{seed}")
            accs[kind].append(metrics["test/acc"])
            print(f"seed {seed}: {kind} test/acc={metrics['test/acc']:.3f}", flush=True)
    print(f"machine: {machine()}")
    print(f"ALL-IDB2 demo data, training fraction {args.train}, model {args.model}, "
          f"{args.epochs} epochs, seeds {seeds[0]}..{seeds[-1]}")  # fmt: skip
    for kind in extra:
        m, s = mean_std(accs[kind])
        print(f"{kind}: test accuracy {pp(m)} +- {pp(s)} %")
    diff = mean_std(accs["pretrained"])[0] - mean_std(accs["scratch"])[0]
    print(f"pretrained_minus_scratch={pp(diff)}")


if __name__ == "__main__":
    main()
