"""Grounding cost and quality: maps per second against zero-shot scoring alone (the baseline, measured
in the same run), and, with ``--manifest``, the grounding metric table against the Gaussian-prior and
untrained-network baselines.

    .venv/bin/python bench/bench_grounding.py --images 32 --chunk 16
    .venv/bin/python bench/bench_grounding.py --bundle_root bundles/vecl_cxr --manifest DIR/manifest.jsonl

Scoring = ZeroShotClassifier PNC of every phantom class; each grounding method then maps every class
of the same images (attention: one extra fusion pass; Grad-CAM/Grad-CAM++: one backward pass per class).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from monai_vecl.data.phantom import PHANTOM_CLASSES
from monai_vecl.evaluation.grounding import GroundingEvaluation, build_network, make_grounder
from monai_vecl.inference.zero_shot import ZeroShotClassifier, load_weights
from monai_vecl.grounding import METHODS, GroundingConfig


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle_root", type=Path, default=Path("bundles/vecl_cxr"))
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--manifest", type=Path, default=None, help="a manifest with region truth: also the metric table")
    parser.add_argument("--max_images", type=int, default=None)
    parser.add_argument("--n_bootstrap", type=int, default=1000)
    args = parser.parse_args()
    network, class_names = build_network(args.bundle_root, seed=0)
    weights = args.bundle_root / "models" / "model.pt"
    trained = weights.is_file()
    if trained:
        load_weights(network, weights)
    network.eval()
    classes = list(class_names or PHANTOM_CLASSES)
    classifier = ZeroShotClassifier(network, classes, chunk_size=args.chunk)
    classifier.prompt_features()
    images = torch.randn(args.images, 3, network.image_size, network.image_size)
    chunks = [images[i : i + args.chunk] for i in range(0, len(images), args.chunk)]
    print(f"{'trained ' + str(weights) if trained else 'UNTRAINED network'}, {args.images} images, {len(classes)} "
          f"classes, chunk {args.chunk}, {torch.get_num_threads()} threads, best of {args.repeats}")
    t_score = best_of(lambda: classifier.scores(images, "pnc"), args.repeats)
    print(f"scoring alone (PNC):        {args.images / t_score:8.2f} images/s")
    for method in METHODS:
        grounder = make_grounder(classifier, GroundingConfig(method=method))
        t_map = best_of(lambda g=grounder: [g.maps(c) for c in chunks], args.repeats)
        print(f"maps, {method:<10}          {args.images / t_map:8.2f} images/s ({args.images * len(classes) / t_map:7.1f} "
              f"maps/s), {t_map / t_score:5.2f}x the scoring time")
    if args.manifest is not None:
        untrained, _ = build_network(args.bundle_root, seed=0)
        out = Path(tempfile.mkdtemp(prefix="bench_grounding_"))
        GroundingEvaluation(network, untrained.eval(), args.manifest, classes, out, max_images=args.max_images,
                            n_bootstrap=args.n_bootstrap).run()
        print((out / "grounding.md").read_text(encoding="utf-8"))
        print(f"written to {out}")


if __name__ == "__main__":
    main()
