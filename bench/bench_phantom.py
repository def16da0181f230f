"""Phantom generation speed: images (with reports) per second, one worker (baseline) vs several.

Also times the stages of one image (case sampling, drawing, report writing, PNG encoding) so a
slowdown can be traced. Usage: python bench/bench_phantom.py [--n 2000] [--size 256] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from monai_vecl.data.phantom import generate_phantom, sample_case
from monai_vecl.data.phantom_anatomy import render
from monai_vecl.data.phantom_reports import write_report


def stage_times(n: int, size: int) -> dict[str, float]:
    """Milliseconds per image for each stage, single process."""
    totals = dict.fromkeys(("sample", "render", "report", "png"), 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            rng = np.random.default_rng([0, i])
            t0 = time.perf_counter()
            case = sample_case(rng)
            t1 = time.perf_counter()
            pixels = render(case, size, rng)
            t2 = time.perf_counter()
            write_report(case, rng)
            t3 = time.perf_counter()
            Image.fromarray(pixels, mode="L").save(Path(tmp) / f"{i}.png", compress_level=1)
            t4 = time.perf_counter()
            for key, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                totals[key] += dt
    return {k: 1000 * v / n for k, v in totals.items()}


def timed_generation(n: int, size: int, workers: int) -> tuple[float, float]:
    """Wall seconds and CPU seconds (this process and its workers) to generate ``n`` images."""
    with tempfile.TemporaryDirectory() as tmp:
        cpu0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        generate_phantom(tmp, n_images=n, seed=0, image_size=size, workers=workers)
        wall = time.perf_counter() - start
        cpu1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(cpu0, cpu1))
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--stage-images", type=int, default=100)
    args = parser.parse_args()
    print(f"phantom generation, {args.n} images of {args.size}^2 with reports, {os.cpu_count()} CPU cores, "
          f"load average {os.getloadavg()[0]:.1f} (wall times stretch when other jobs share the cores)")
    stages = stage_times(args.stage_images, args.size)
    print("per image (ms, 1 process): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
          + f", total {sum(stages.values()):.1f}")
    base, base_cpu = timed_generation(args.n, args.size, 1)
    print(f"baseline 1 worker: {base:.1f} s wall ({args.n / base:.0f} images/s), {base_cpu:.1f} s CPU "
          f"({1000 * base_cpu / args.n:.1f} ms CPU per image)")
    if args.workers > 1:
        par, par_cpu = timed_generation(args.n, args.size, args.workers)
        print(f"{args.workers} workers: {par:.1f} s wall ({args.n / par:.0f} images/s), {par_cpu:.1f} s CPU; "
              f"speed-up x{base / par:.2f} over 1 worker")


if __name__ == "__main__":
    main()
