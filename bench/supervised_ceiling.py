"""Supervised ceiling on the phantom: a small CNN trained briefly on the train split, per-finding test AUCs.

This is what a model that sees the image labels can reach in a few CPU minutes, the figure zero-shot
scores on the phantom can be read against. It also checks the phantom's difficulty: a finding at
AUC ~1.0 after one epoch is too easy, one at ~0.5 after training is invisible.

Usage: python bench/supervised_ceiling.py [--data DIR] [--n 2000] [--epochs 6] [--size 128]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import roc_auc_score
from torch import nn

from monai_vecl.data.manifest import image_path, read_manifest
from monai_vecl.data.phantom import PHANTOM_CLASSES, generate_phantom


def load_split(manifest: Path, split: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N, 1, size, size] in [0, 1] and labels [N, C] of one split."""
    records = read_manifest(manifest, split=split)
    images = np.stack([
        np.asarray(Image.open(image_path(r, manifest)).convert("L").resize((size, size), Image.BILINEAR), np.float32)
        for r in records
    ]) / 255.0
    labels = np.array([[r.findings[c] for c in PHANTOM_CLASSES] for r in records], np.float32)
    return torch.from_numpy(images[:, None]), torch.from_numpy(labels)


class SmallCNN(nn.Module):
    """A strided stem and four conv blocks that halve the resolution, then global average pooling (~0.26 M
    parameters): cheap enough to train for a few epochs on two CPU cores."""

    def __init__(self, n_classes: int, width: int = 12):
        super().__init__()

        def block(cin: int, cout: int, stride: int, kernel: int = 3) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
                    nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        layers = block(1, width, 2, kernel=5)
        cin = width
        for cout in (2 * width, 4 * width, 6 * width, 8 * width):
            layers += block(cin, cout, 2) + block(cout, cout, 1)
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((x - 0.5) / 0.25).mean(dim=(2, 3)))


def aucs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict[str, float]:
    """Per-class ROC AUC (NaN where a class has only one label value in the split)."""
    model.eval()
    with torch.no_grad():
        scores = torch.cat([torch.sigmoid(model(x[i : i + 128].to(device))).cpu() for i in range(0, len(x), 128)])
    out = {}
    for k, name in enumerate(PHANTOM_CLASSES):
        labels = y[:, k].numpy()
        out[name] = float(roc_auc_score(labels, scores[:, k].numpy())) if 0 < labels.sum() < len(labels) else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="phantom folder (generated there if missing)")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--size", type=int, default=128, help="training resolution")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = generate_phantom(args.data or tmp, n_images=args.n, seed=args.seed)
        x_train, y_train = load_split(manifest, "train", args.size)
        evals = {s: load_split(manifest, s, args.size) for s in ("test", "test_shifted")}
    print(f"phantom n={args.n} seed={args.seed}: train {len(x_train)}, test {len(evals['test'][0])}, "
          f"shifted {len(evals['test_shifted'][0])}; {args.size}px, device {device}")
    print("train prevalence: " + ", ".join(f"{c} {p:.2f}" for c, p in zip(PHANTOM_CLASSES, y_train.mean(0).tolist())))
    model = SmallCNN(len(PHANTOM_CLASSES)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=args.epochs * -(-len(x_train) // args.batch))
    history = []
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(x_train)).split(args.batch):
            xb, yb = x_train[idx].to(device), y_train[idx].to(device)
            loss = F.binary_cross_entropy_with_logits(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        test = aucs(model, *evals["test"], device)
        history.append(test)
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, test macro AUC {np.nanmean(list(test.values())):.3f} "
              f"({time.perf_counter() - start:.0f} s)")
    shifted = aucs(model, *evals["test_shifted"], device)
    print(f"\n{'finding':<20} {'AUC ep1':>8} {'AUC test':>9} {'AUC shifted':>12}")
    for name in PHANTOM_CLASSES:
        print(f"{name:<20} {history[0][name]:>8.3f} {history[-1][name]:>9.3f} {shifted[name]:>12.3f}")
    print(f"{'macro':<20} {np.nanmean(list(history[0].values())):>8.3f} {np.nanmean(list(history[-1].values())):>9.3f} "
          f"{np.nanmean(list(shifted.values())):>12.3f}")


if __name__ == "__main__":
    main()
