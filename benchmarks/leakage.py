"""Subject leakage on C-NMC: the same recipe scored on an image-level split (the published
code's) and on a subject-grouped split (no subject in two subsets), on generated C-NMC data
with subject effects (``synthetic.CNMC_VARIATION``), averaged over seeds.

    python benchmarks/leakage.py [--seeds 3] [--model test_resnet] [--epochs 8]
Recipe: ``+experiment=sequential_resnet18_l1_cnmc debug=demo pretrain.enabled=false`` (the
C-NMC fine-tuning, without its ADP stage; a tiny ResNet and 8 epochs by default, to stay
affordable on a CPU) on 32 generated subjects x 6 cells, with ``protocol=dl4all_holdout``
(image-level) or ``protocol=cnmc_grouped`` (subject-grouped), both at 50/20/30 % so the test
set holds several subjects. Last line: ``image_split_minus_subject_split=<pp>`` (mean test
accuracy, percentage points; > 0: the image-level split is optimistic, as in the real
challenge).
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
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--subjects", type=int, default=16, help="per class")
    parser.add_argument("--per-subject", type=int, default=6, help="cells per subject")
    args = parser.parse_args()
    prepare()
    from leuk_lightning.data.synthetic import write_cnmc

    data = LEARN_DIR / f"cnmc_{args.subjects}x{args.per_subject}"
    done = data / ".done"
    if not done.is_file():
        base = write_cnmc(
            data,
            n_subjects_all=args.subjects,
            n_subjects_hem=args.subjects,
            images_per_subject=args.per_subject,
            n_prelim=2,
            n_final=2,
            size=64,
            seed=0,
        )
        done.write_text(str(base))
    base = Path(done.read_text())
    common = [
        "+experiment=sequential_resnet18_l1_cnmc",
        "debug=demo",
        "demo_data=false",  # reads only the C-NMC data generated here
        "pretrain.enabled=false",
        f"model={args.model}",
        f"paths.cnmc_dir={base}",
        f"trainer.max_epochs={args.epochs}",
        "data.split.fractions=[0.5,0.2,0.3]",
    ]
    accs: dict[str, list[float]] = {"image": [], "subject": []}
    protocols = {"image": "dl4all_holdout", "subject": "cnmc_grouped"}
    out = LEARN_DIR / "leakage"
    for seed in range(args.seeds):
        for kind, protocol in protocols.items():
            (metrics,) = app(
                [*common, f"protocol={protocol}", f"seed={seed}"], out / f"{kind}_{seed}"
            )
            accs[kind].append(metrics["test/acc"])
            print(f"seed {seed}: {kind}-level split test/acc={metrics['test/acc']:.3f}", flush=True)
    print(f"machine: {machine()}")
    print(f"data: {2 * args.subjects} subjects x {args.per_subject} cells, model {args.model}, "
          f"{args.epochs} epochs, seeds 0..{args.seeds - 1}")  # fmt: skip
    for kind in protocols:
        m, s = mean_std(accs[kind])
        print(f"{kind}-level split: test accuracy {pp(m)} +- {pp(s)} %")
    diff = mean_std(accs["image"])[0] - mean_std(accs["subject"])[0]
    print(f"image_split_minus_subject_split={pp(diff)}")


if __name__ == "__main__":
    main()
