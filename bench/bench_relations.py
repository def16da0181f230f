"""Benchmark: vectorised relation targets against the plain per-pair reference, on real label rows.

Images and sentences come from the VECL reference LLM labels of MIMIC-CXR (WVeLong/VECL, MIT):
an image carries the union of its row's labels, its sentence is one random cell of the row, as
in training. Uses the shared label folder when present, else the 194-row test fixture (sampled
with replacement). Prints, per batch size N (N images × N sentences), the median time of
``relation_targets`` on ready multi-hot tensors, of building those tensors from label sets, of
the per-pair Python reference, and the ratio reference / vectorised.

Tensors of a few hundred rows are small enough that waking a second intra-op thread can cost
more than the work on a loaded machine, so the vectorised timing is taken for each ``--threads``
value (default 1 and 2) and the load average is printed with the figures.

Usage: python bench/bench_relations.py [--sizes 64 128 256] [--threads 1 2] [--repeats 5] [--labels DIR_OR_CSV]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from functools import partial
from pathlib import Path

import torch

from monai_vecl.reference_labels import read_label_files, read_label_folder
from monai_vecl.relations import relation_targets, relation_targets_reference
from monai_vecl.taxonomy import image_label_set, multi_hot_batch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "vecl_mimic_llm_labels"
FIXTURE = ROOT / "tests" / "fixtures" / "core" / "reference_labels_sample.csv"


def load_rows(source: Path) -> list[list[tuple[str, ...]]]:
    table = read_label_folder(source, errors="keep") if source.is_dir() else read_label_files([source], errors="keep")
    rows = [[labels for labels in row if labels is not None] for row in table.rows]
    print(f"label rows: {len(rows)} from {source} ({table.stats.malformed} malformed cells left out of the sample)")
    return [row for row in rows if row]


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--labels", type=Path, default=SHARED if SHARED.is_dir() else FIXTURE)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = load_rows(args.labels)
    rng = random.Random(args.seed)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, median of {args.repeats} runs")
    heads = "".join(f"{f'vec {t}T ms':>12}" for t in args.threads)
    print(f"{'N':>5}{heads}{'multi-hot ms':>14}{'per-pair ms':>13}{'ratio (best)':>14}")
    for n in args.sizes:
        batch = [rng.choice(rows) for _ in range(n)]
        images = [image_label_set(row) for row in batch]
        sentences = [rng.choice(row) for row in batch]
        img_mh, sent_mh = multi_hot_batch(images), multi_hot_batch(sentences)
        fast = relation_targets(img_mh, sent_mh)
        if not torch.equal(fast, relation_targets_reference(images, sentences)):
            raise SystemExit(f"N={n}: vectorised and per-pair targets differ")
        t_fast = []
        for threads in args.threads:
            torch.set_num_threads(threads)
            t_fast.append(median_time(partial(relation_targets, img_mh, sent_mh), args.repeats))
        t_mh = median_time(partial(multi_hot_batch, images + sentences), args.repeats)
        t_ref = median_time(partial(relation_targets_reference, images, sentences), args.repeats)
        cols = "".join(f"{t * 1e3:>12.3f}" for t in t_fast)
        print(f"{n:>5}{cols}{t_mh * 1e3:>14.3f}{t_ref * 1e3:>13.1f}{t_ref / min(t_fast):>13.0f}×")
        share = fast.mean(dim=(0, 1)).tolist()
        print(f"      relation shares entail/neutral/contradict: {share[0]:.3f} / {share[1]:.3f} / {share[2]:.3f}")

if __name__ == "__main__":
    main()
