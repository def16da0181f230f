"""Linear probe: subsets, fitting, untrainable classes; image embedding is the CLS token."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from monai_vecl.evaluation.probe import fit_probe, image_embedding, subset_indices
from monai_vecl.networks import build_vecl


def test_subsets_are_nested_and_sized():
    small, large = subset_indices(1000, 0.01, seed=3), subset_indices(1000, 0.1, seed=3)
    assert len(small) == 10 and len(large) == 100 and set(small) <= set(large)
    assert len(subset_indices(50, 0.001)) == 1
    with pytest.raises(ValueError, match="fraction"):
        subset_indices(10, 0.0)


def test_probe_learns_separable_classes_and_flags_untrainable_ones():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (400, 3)).astype(float)
    y[:, 2] = 0  # never positive in training: cannot be fitted
    x = rng.normal(size=(400, 8)) + 2.0 * y[:, [0, 1, 0, 1, 0, 1, 0, 1]]
    y_test = rng.integers(0, 2, (200, 3)).astype(float)
    x_test = rng.normal(size=(200, 8)) + 2.0 * y_test[:, [0, 1, 0, 1, 0, 1, 0, 1]]
    full = fit_probe(x, y, x_test, ["a", "b", "c"], fraction=1.0)
    assert full.n_train == 400 and full.untrained == ["c"]
    assert roc_auc_score(y_test[:, 0], full.scores[:, 0]) > 0.9
    assert np.all(full.scores[:, 2] == 0.0)  # prevalence of the one-valued class
    tiny = fit_probe(x, y, x_test, ["a", "b", "c"], fraction=0.005)
    assert tiny.n_train == 2 and len(tiny.untrained) >= 1
    with pytest.raises(ValueError, match="do not match"):
        fit_probe(x, y[:, :2], x_test, ["a", "b", "c"])


def test_image_embedding_is_cls_token():
    torch.manual_seed(0)
    model = build_vecl("small", image_size=64, load_size=72)
    images = torch.randn(3, 3, 64, 64)
    emb = image_embedding(model, images)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(emb, model.encode_images(images)[:, 0])
    assert emb.shape == (3, model.config.d_model)
