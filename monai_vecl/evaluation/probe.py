"""Linear probe on frozen image features with 1 %, 10 % and 100 % of the labelled training split.

One L2-regularised logistic regression per class (scikit-learn) on standardised image CLS
features: the data-efficiency protocol of the VECL paper's fine-tuning table, with the encoder frozen.
A class whose training subset holds only one label value cannot be fitted; it is scored with
that subset's prevalence (a constant, AUC 0.5) and counted in ``untrained``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from monai_vecl.inference.zero_shot import eval_mode, model_device


@torch.no_grad()
def image_embedding(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Global image feature [N, d]: the CLS token of ``model.encode_images`` (CPU float)."""
    with eval_mode(model):
        tokens = model.encode_images(images.to(model_device(model)))
    if isinstance(tokens, (tuple, list)):
        tokens = tokens[0]
    return (tokens[:, 0] if tokens.ndim == 3 else tokens).float().cpu()


def subset_indices(n: int, fraction: float, seed: int = 0) -> np.ndarray:
    """A seeded random ``fraction`` of ``range(n)`` (at least one index); nested across fractions."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: max(1, round(fraction * n))])


@dataclass
class ProbeResult:
    """Test scores [N_test, C] from one training fraction, and which classes could not be fitted."""

    fraction: float
    n_train: int
    scores: np.ndarray
    untrained: list[str]


def fit_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    class_names: Sequence[str],
    fraction: float = 1.0,
    seed: int = 0,
    c: float = 1.0,
) -> ProbeResult:
    """Fit per-class logistic regressions on a ``fraction`` of the training rows and score ``test_x``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if train_x.shape[0] != train_y.shape[0] or train_y.shape[1] != len(class_names):
        raise ValueError(
            f"train features {train_x.shape} and labels {train_y.shape} do not match {len(class_names)} classes"
        )
    idx = subset_indices(len(train_x), fraction, seed)
    x, y = train_x[idx], train_y[idx]
    scores = np.zeros((len(test_x), len(class_names)))
    untrained = []
    for k, name in enumerate(class_names):
        keep = (y[:, k] == 0) | (y[:, k] == 1)
        labels = y[keep, k].astype(int)
        if len(np.unique(labels)) < 2:
            untrained.append(name)
            scores[:, k] = labels.mean() if len(labels) else 0.5
            continue
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        clf.fit(x[keep], labels)
        scores[:, k] = clf.predict_proba(test_x)[:, 1]
    return ProbeResult(fraction, len(idx), scores, untrained)
