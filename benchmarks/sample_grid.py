"""The README's sample grid of the generated demo data (``benchmarks/figures/demo_samples.png``):
ALL-IDB2 lymphoblasts and normal cells, C-NMC ALL and HEM cells (two subjects each, one per
half-row, to show the subject effect), ADP patches; generated with the demo's defaults.

    python benchmarks/sample_grid.py [--out benchmarks/figures/demo_samples.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO  # noqa: E402

COLS, TILE, LABEL_W = 8, 128, 150


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/figures/demo_samples.png")
    args = parser.parse_args()
    from leuk_lightning.data import synthetic

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        idb = synthetic.write_all_idb2(root / "ALL_IDB2", n=40, size=64, seed=0)
        cnmc = synthetic.write_cnmc(
            root, n_subjects_all=2, n_subjects_hem=2, images_per_subject=4, n_prelim=1,
            n_final=1, size=64, seed=2,
        )  # fmt: skip
        adp = synthetic.write_adp(root / "ADP", n_slides=4, patches_per_slide=2, size=64, seed=1)
        files = sorted((idb / "img").glob("*.tif"))
        train = cnmc / "training_data"

        def by_subject(suffix: str) -> list[Path]:
            paths = sorted(train.rglob(f"*_{suffix}.bmp"))
            return sorted(paths, key=lambda p: p.name.split("_")[1])[:COLS]

        rows = [
            ("ALL-IDB2\nlymphoblast (1)", [p for p in files if p.stem.endswith("_1")][:COLS]),
            ("ALL-IDB2\nnormal (0)", [p for p in files if p.stem.endswith("_0")][:COLS]),
            ("C-NMC all\n(2 subjects)", by_subject("all")),
            ("C-NMC hem\n(2 subjects)", by_subject("hem")),
            ("ADP patches\n(4 slides)", sorted((adp / "img_res_1um_bicubic").glob("*.png"))),
        ]
        grid = Image.new("RGB", (LABEL_W + COLS * (TILE + 4), len(rows) * (TILE + 4)), "white")
        draw = ImageDraw.Draw(grid)
        for r, (label, paths) in enumerate(rows):
            y = r * (TILE + 4)
            draw.multiline_text((6, y + TILE // 2 - 14), label, fill="black")
            for c, path in enumerate(paths[:COLS]):
                tile = Image.open(path).convert("RGB").resize((TILE, TILE), Image.NEAREST)
                grid.paste(tile, (LABEL_W + c * (TILE + 4), y))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
