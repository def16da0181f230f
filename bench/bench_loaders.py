"""Training-loader throughput: images/s of the DALI pipeline vs the MONAI-transforms path, same run, same files.

    .venv/bin/python bench/bench_loaders.py [--manifest M] [--images 256] [--batch 32] [--workers 2] [--epochs 2]

Without ``--manifest`` a phantom data set is generated in a temporary folder. Both loaders run the full
training augmentation; the first epoch warms up (pipeline build, worker start) and is reported separately.
The MONAI path is the baseline of the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from monai_vecl.data.manifest import image_path, read_manifest
from monai_vecl.data.phantom import generate_phantom
from monai_vecl.training.loaders import Augmentation, build_images


def images_per_second(backend: str, paths: list[Path], batch: int, workers: int, epochs: int) -> tuple[float, float]:
    """(first-epoch, steady-state) images/s of one backend over ``paths``."""
    loader = build_images(backend, Augmentation(), train=True, batch_size=batch, num_workers=workers)
    batches = [paths[i : i + batch] for i in range(0, len(paths), batch)]
    rates = []
    for epoch in range(epochs):
        start = time.perf_counter()
        n = sum(images.shape[0] for images in loader.batches(batches, epoch))
        rates.append(n / (time.perf_counter() - start))
    return rates[0], sum(rates[1:]) / max(1, len(rates) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", type=Path)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = args.manifest or generate_phantom(Path(tmp) / "phantom", n_images=args.images, seed=0)
        records = read_manifest(manifest)[: args.images]
        paths = [image_path(r, manifest) for r in records]
        print(f"{len(paths)} images from {manifest}, batch {args.batch}, {args.workers} workers/threads, "
              f"{args.epochs} epochs (first = warm-up), device {'GPU' if torch.cuda.is_available() else 'CPU'}")
        results = {b: images_per_second(b, paths, args.batch, args.workers, args.epochs) for b in ("monai", "dali")}
    for backend, (first, steady) in results.items():
        print(f"{backend:>6}: {steady:8.1f} images/s steady, {first:8.1f} images/s first epoch")
    print(f"DALI / MONAI (steady): {results['dali'][1] / results['monai'][1]:.2f}x")


if __name__ == "__main__":
    main()
