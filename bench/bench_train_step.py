"""Benchmark: one VECL training step (forward, 3D InfoNCE, backward, Adam) of a network preset.

Images are random tensors at the preset's input size; sentences are short radiology-style
sentences written for this benchmark; labels come from the VECL reference MIMIC-CXR label
rows in the test fixture (WVeLong/VECL, MIT). The baseline in the same run is the same step
with every sentence padded to the reference's fixed 97 tokens instead of to the longest
sentence of the batch. Prints wall-clock and CPU seconds per step (medians; on a shared machine
the CPU time is the steadier figure) and the process's peak memory (resident set on CPU,
allocated memory on GPU). Runs on the GPU when there is one.

Usage: python bench/bench_train_step.py [--preset small] [--batch 32] [--steps 5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import time
from pathlib import Path

import torch

from monai_vecl.losses import VECLLoss
from monai_vecl.networks import build_vecl
from monai_vecl.reference_labels import read_label_files
from monai_vecl.taxonomy import image_label_set, multi_hot_batch

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "core" / "reference_labels_sample.csv"
SENTENCES = (
    "No pleural effusion or pneumothorax.",
    "The cardiomediastinal silhouette is within normal limits.",
    "There is a small left pleural effusion with adjacent atelectasis at the left base.",
    "Mild pulmonary vascular congestion without frank edema.",
    "Endotracheal tube terminates about 4 cm above the carina.",
    "No focal consolidation.",
    "Right lower lobe opacity may reflect pneumonia in the appropriate clinical setting.",
    "Heart size is mildly enlarged.",
)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def time_steps(model, loss_fn, optimizer, batch, steps: int, warmup: int) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of a training step."""
    images, tokens, img_mh, sent_mh = batch
    times, cpu_times = [], []
    for i in range(warmup + steps):
        if images.device.type == "cuda":
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        out = model(images, tokens["input_ids"], tokens["attention_mask"])
        loss = loss_fn(out.i2t, out.t2i, img_mh, sent_mh)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optimizer.step()
        if images.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    return statistics.median(times), statistics.median(cpu_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rng = random.Random(0)

    rows = [[x for x in row if x is not None] for row in read_label_files([FIXTURE], errors="keep").rows]
    rows = [rng.choice([r for r in rows if r]) for _ in range(args.batch)]
    img_mh = multi_hot_batch([image_label_set(r) for r in rows]).to(device)
    sent_mh = multi_hot_batch([rng.choice(r) for r in rows]).to(device)
    texts = [rng.choice(SENTENCES) for _ in range(args.batch)]

    rss_before = peak_memory_mb(device)
    model = build_vecl(args.preset).to(device).train()
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    images = torch.randn(args.batch, 3, model.image_size, model.image_size, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-5, betas=(0.5, 0.999), weight_decay=1e-6)
    loss_fn = VECLLoss("vecl")
    print(f"preset {args.preset}: {n_params / 1e6:.1f} M trainable parameters, batch {args.batch}, device {device}, "
          f"{args.threads} threads, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

    results = {}
    for name, pad_to_max in (("longest", False), ("fixed 97", True)):
        model.text_encoder.pad_to_max = pad_to_max
        tokens = {k: v.to(device) for k, v in model.tokenize(texts).items()}
        batch = (images, tokens, img_mh, sent_mh)
        wall, cpu = time_steps(model, loss_fn, optimizer, batch, args.steps, args.warmup)
        results[name] = wall
        print(f"  padding {name:>8} ({tokens['input_ids'].shape[1]:>2} tokens): {wall:.3f} s/step wall, {cpu:.3f} s/step CPU "
              f"(median of {args.steps}), peak memory {peak_memory_mb(device):.0f} MiB")
    print(f"peak memory before building the model: {rss_before:.0f} MiB")
    print(f"speed-up of longest-in-batch padding over fixed 97-token padding: {results['fixed 97'] / results['longest']:.2f}×")


if __name__ == "__main__":
    main()
