"""Accuracy of the HistoTNet demo on the generated data, and its spread over the paper's
protocol: the figures that tell whether the demo data is neither saturated (1.000 everywhere)
nor unlearnable.

    python benchmarks/demo_accuracy.py [--protocol] [--repeats 10] [--no-demo] [OVERRIDE]
Default: one ``+experiment=histotnet_resnet18_l2 debug=demo`` run (the README's demo), printing
its test accuracy and wall time (data generation excluded). ``--protocol`` also runs the
2-fold x 10 cross-validation (``protocol=histotnet_cv``, 20 jobs) and prints the mean and
standard deviation over its jobs; OVERRIDEs (e.g. ``model=test_resnet``) go to every run.
Last lines: ``demo_test_acc=<acc>`` and, with --protocol, ``cv_std_pp=<std in percentage
points>`` (targets: 0.80-0.97 and >= 1).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402
from _learning import LEARN_DIR, app, mean_std, pp, prepare  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", action="store_true", help="also run 2-fold CV x 10")
    parser.add_argument("--no-demo", action="store_true", help="skip the single demo run")
    parser.add_argument("--repeats", type=int, default=10, help="repetitions of the 2-fold CV")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides")
    args = parser.parse_args()
    prepare()
    from leuk_lightning.data.synthetic import ensure_demo_data

    ensure_demo_data(LEARN_DIR / "data")  # generated once, not timed
    demo = ["+experiment=histotnet_resnet18_l2", "debug=demo", *args.overrides]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    lines = [f"machine: {machine()}"]
    if not args.no_demo:
        start = time.perf_counter()
        (metrics,) = app(demo, LEARN_DIR / "demo" / stamp)
        wall = time.perf_counter() - start
        lines.append(f"demo {' '.join(demo)}: {wall:.0f} s wall (ADP stage + fine-tuning)")
        lines.append(f"demo_test_acc={metrics['test/acc']:.3f}")
    if args.protocol:
        sweep = [f"data.split.repeat=range(0,{args.repeats})", "data.split.fold=0,1"]
        cv = [*demo, "protocol=histotnet_cv", *sweep]
        jobs = app(cv, LEARN_DIR / "cv" / stamp, multirun=True)
        accs = [m["test/acc"] for m in jobs]
        m, s = mean_std(accs)
        head = f"2-fold CV x {args.repeats} ({len(accs)} jobs)"
        lines.append(f"{head}: test accuracy {pp(m)} +- {pp(s)} %, "
                     f"min {pp(min(accs))}, max {pp(max(accs))}")  # fmt: skip
        lines.append(f"cv_std_pp={pp(s)}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
