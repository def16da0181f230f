"""Zero-shot scoring speed: ZeroShotClassifier (prompts encoded once, images in chunks) against the
baseline measured in the same run, a full ``model(images, prompts)`` forward per image chunk that
re-encodes the 2×C prompts every time.

    .venv/bin/python bench/bench_zero_shot.py --images 128 --classes chestxray14 --chunk 32

Prints images/s of both and their ratio, and the largest score difference (must be ~0).
"""

from __future__ import annotations

import argparse
import time

import torch

from monai_vecl.inference.zero_shot import ZeroShotClassifier, pnc
from monai_vecl.networks import build_vecl
from monai_vecl.taxonomy import ZERO_SHOT_CLASSES


def baseline_scores(model, images: torch.Tensor, classes, chunk: int) -> torch.Tensor:
    """PNC with the prompts tokenized and encoded again for every image chunk."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), chunk):
            prompts = [f"There is {c}" for c in classes] + [f"There is no {c}" for c in classes]
            tok = model.tokenize(prompts)
            p = torch.softmax(model(images[start : start + chunk], tok["input_ids"], tok["attention_mask"]).logits, -1)[
                ..., 0
            ]
            out.append(pnc(p[:, : len(classes)], p[:, len(classes) :]))
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--classes", default="chestxray14", choices=sorted(ZERO_SHOT_CLASSES))
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_vecl(args.preset).to(device).eval()
    classes = ZERO_SHOT_CLASSES[args.classes]
    images = torch.randn(args.images, 3, model.image_size, model.image_size, device=device)

    def best_of(fn) -> tuple[float, torch.Tensor]:
        times, result = [], None
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return min(times), result

    t_base, s_base = best_of(lambda: baseline_scores(model, images, classes, args.chunk))
    # a new classifier per repeat, so the one-off prompt encoding is inside the timing
    t_zs, s_zs = best_of(lambda: ZeroShotClassifier(model, classes, chunk_size=args.chunk).scores(images, "pnc"))
    print(
        f"device {device}, preset {args.preset}, {args.images} images, {len(classes)} classes, chunk {args.chunk}, "
        f"best of {args.repeats}"
    )
    print(f"baseline (prompts re-encoded per chunk): {args.images / t_base:8.1f} images/s ({t_base:.2f} s)")
    print(f"ZeroShotClassifier (prompts cached):     {args.images / t_zs:8.1f} images/s ({t_zs:.2f} s)")
    print(f"speed-up: {t_base / t_zs:.2f}x; max |score difference| {float((s_base.cpu() - s_zs).abs().max()):.2e}")


if __name__ == "__main__":
    main()
