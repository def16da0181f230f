"""Per-epoch validation: zero-shot PNC (and POS) macro ROC AUC on the validation split (docs/method.md §Scoring).

Images go through the evaluation preprocessing shared with evaluation and deployment
(:func:`monai_vecl.data.preprocess.preprocess_gray`), so the figure tracked during training is
the one the deployed model reproduces.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from monai_vecl.data.manifest import image_path, read_manifest
from monai_vecl.data.preprocess import preprocess_gray
from monai_vecl.evaluation.zero_shot import ZeroShotClassifier
from monai_vecl.training.loaders import read_gray


@dataclass
class ValidationResult:
    """Scores and truth of one validation pass, and its metrics."""

    class_names: tuple[str, ...]
    truth: np.ndarray  # [N, C] 0/1, -1 where a record has no label for the class
    pnc: np.ndarray  # [N, C]
    pos: np.ndarray  # [N, C]
    metrics: dict[str, float]


def _scored(truth: np.ndarray, c: int) -> np.ndarray:
    """Rows labeled for class ``c`` when it has both a positive and a negative among them, else none."""
    known = truth[:, c] >= 0
    labels = truth[known, c]
    return known if 0 < labels.sum() < len(labels) else np.zeros_like(known)


def macro_auc(truth: np.ndarray, scores: np.ndarray, class_names: Sequence[str]) -> tuple[float, dict[str, float]]:
    """Macro ROC AUC over classes with a positive and a negative case, and the per-class values.

    Per class only records labeled for it count (``-1`` = no label, e.g. an uncertain CheXpert label left out).
    """
    per_class = {}
    for c, name in enumerate(class_names):
        rows = _scored(truth, c)
        if rows.any():
            per_class[name] = float(roc_auc_score(truth[rows, c], scores[rows, c]))
    if not per_class:
        raise ValueError("no validation class has both positive and negative images: AUC undefined")
    return float(np.mean(list(per_class.values()))), per_class


class ZeroShotValidation:
    """Zero-shot validation on the records of one manifest split that carry ground-truth ``findings``.

    Args:
        manifest: ``manifest.jsonl`` path.
        class_names: classes to score (keys of ``Record.findings``); ``None`` takes every key found.
        split: split to read.
        image_size / load_size: evaluation geometry (the network's).
        batch_size: images per forward pass.
        max_images: score only the first this many records (``None``: all), e.g. a fixed subset of the
            training split to see whether the model fits what it trains on.
        prefix: metric name prefix (``val`` → ``val_pnc_auc``; ``train`` → ``train_pnc_auc``).
    """

    def __init__(self, manifest: str | os.PathLike, class_names: Sequence[str] | None = None,
                 split: str = "validate", image_size: int = 224, load_size: int = 256, batch_size: int = 64,
                 max_images: int | None = None, prefix: str = "val"):
        records = [r for r in read_manifest(manifest, split=split) if r.findings][:max_images]
        if not records:
            raise ValueError(f"{manifest}: no '{split}' records with ground-truth findings to validate on")
        if class_names is None:
            class_names = sorted({k for r in records for k in r.findings})
        unknown = [c for c in class_names if not any(c in r.findings for r in records)]
        if unknown:
            raise ValueError(f"{manifest}: no '{split}' record has ground truth for {unknown}")
        self.class_names = tuple(class_names)
        self.paths = [image_path(r, manifest) for r in records]
        self.truth = np.array([[r.findings.get(c, -1) for c in self.class_names] for r in records], dtype=np.int64)
        self.image_size, self.load_size, self.batch_size = image_size, load_size, batch_size
        self.prefix = prefix

    def __len__(self) -> int:
        return len(self.paths)

    def _images(self, paths: Sequence[Path]) -> torch.Tensor:
        return torch.stack([preprocess_gray(read_gray(p), self.image_size, self.load_size) for p in paths])

    @torch.no_grad()
    def __call__(self, network: torch.nn.Module) -> ValidationResult:
        """Score every image; metrics ``<prefix>_pnc_auc``, ``<prefix>_pos_auc`` and per-class PNC AUC."""
        classifier = ZeroShotClassifier(network, self.class_names, chunk_size=self.batch_size)
        pos, neg = [], []
        for start in range(0, len(self.paths), self.batch_size):
            p, n = classifier.entail(self._images(self.paths[start : start + self.batch_size]))
            pos.append(p)
            neg.append(n)
        p_pos, p_neg = torch.cat(pos).numpy(), torch.cat(neg).numpy()
        pnc = p_pos / np.clip(p_pos + p_neg, 1e-12, None)
        pnc_auc, per_class = macro_auc(self.truth, pnc, self.class_names)
        pos_auc, _ = macro_auc(self.truth, p_pos, self.class_names)
        metrics = {f"{self.prefix}_pnc_auc": pnc_auc, f"{self.prefix}_pos_auc": pos_auc}
        metrics.update({f"{self.prefix}_pnc_auc.{name.replace(' ', '_')}": v for name, v in per_class.items()})
        return ValidationResult(self.class_names, self.truth, pnc, p_pos, metrics)


def plot_roc(result: ValidationResult, path: str | os.PathLike, title: str = "Validation ROC (PNC)") -> Path:
    """Per-class PNC ROC curves of a validation pass as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6))
    for c, name in enumerate(result.class_names):
        rows = _scored(result.truth, c)
        if rows.any():
            fpr, tpr, _ = roc_curve(result.truth[rows, c], result.pnc[rows, c])
            ax.plot(fpr, tpr, label=f"{name} ({roc_auc_score(result.truth[rows, c], result.pnc[rows, c]):.3f})")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set(xlabel="False positive rate", ylabel="True positive rate",
           title=f"{title}: macro AUC {next(v for k, v in result.metrics.items() if k.endswith('_pnc_auc')):.3f}")
    ax.legend(fontsize=7, loc="lower right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
