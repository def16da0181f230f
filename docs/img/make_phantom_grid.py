"""Draw docs/img/phantom_grid.png: phantom images with their drawn findings and report.

Usage: python docs/img/make_phantom_grid.py [--data DIR] [--out docs/img/phantom_grid.png]
Picks one image per showcase finding (plus a normal and a shifted-split image) from a 400-image
phantom, then quantises the figure to a small palette so the PNG stays under 300 KB.
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from monai_vecl.data.manifest import Record, image_path, read_manifest  # noqa: E402
from monai_vecl.data.phantom import generate_phantom  # noqa: E402

SHOWCASE = ("Pleural Effusion", "Pneumothorax", "Cardiomegaly", "Pneumonia", "Pulmonary Mass", "Support Devices")


def pick(records: list[Record]) -> list[Record]:
    """A normal image, one per showcase finding (fewest other findings first), one from test_shifted."""
    chosen: list[Record] = []

    def first(cond) -> None:
        pool = sorted((r for r in records if cond(r) and r not in chosen), key=lambda r: sum(r.findings.values()))
        if pool:
            chosen.append(pool[0])

    first(lambda r: sum(r.findings.values()) == 0 and r.split != "test_shifted")
    for name in SHOWCASE:
        first(lambda r, name=name: r.findings[name] == 1 and r.split != "test_shifted")
    first(lambda r: r.split == "test_shifted" and sum(r.findings.values()) > 0)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("phantom_grid.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = generate_phantom(args.data or tmp, n_images=400, seed=0)
        records = pick(read_manifest(manifest))
        fig, axes = plt.subplots(2, 4, figsize=(16, 13), gridspec_kw={"hspace": 0.5, "wspace": 0.05})
        for ax, r in zip(axes.flat, records):
            ax.imshow(Image.open(image_path(r, manifest)), cmap="gray", vmin=0, vmax=255)
            present = [k for k, v in r.findings.items() if v] or ["no finding"]
            ax.set_title(textwrap.fill(f"{r.split}: " + ", ".join(present), 48), fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            report = "\n".join(textwrap.fill(s, 46) for s in r.report.split("\n\n"))
            ax.text(0, -0.02, report, transform=ax.transAxes, va="top", fontsize=7, family="monospace")
        for ax in list(axes.flat)[len(records):]:
            ax.axis("off")
        fig.savefig(args.out, dpi=72, bbox_inches="tight")
        plt.close(fig)
    Image.open(args.out).convert("RGB").quantize(64).save(args.out, optimize=True)
    print(f"{args.out}: {args.out.stat().st_size / 1024:.0f} KB, {len(records)} images")


if __name__ == "__main__":
    main()
