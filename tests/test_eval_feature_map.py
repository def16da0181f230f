"""Fusion features for the t-SNE map: pair independence, the MLP head reproduces the logits, the PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_vecl.evaluation.feature_map import GROUPS, feature_map, fusion_features
from monai_vecl.networks import build_vecl


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_vecl("small", image_size=64, load_size=72).eval()


def test_fusion_features_reproduce_logits_and_are_pairwise(model):
    images = torch.randn(4, 3, 64, 64)
    texts = ["There is Edema", "There is no Edema", "There is Hernia"]
    feats = fusion_features(model, images, texts, chunk_size=3)
    assert feats.shape == (4, 3, model.config.d_model)
    # pairs are scored independently: dropping a text or chunking images changes nothing
    torch.testing.assert_close(fusion_features(model, images[2:], texts[:1]), feats[2:, :1], atol=1e-5, rtol=1e-4)
    # the hook captures the head input: it reproduces the i2t logits, and the map averages both directions
    tok = model.tokenize(texts)
    with torch.no_grad():
        out = model(images, tok["input_ids"], tok["attention_mask"])
    captured = []
    hook = model.fusion_module.mlp_head.register_forward_pre_hook(lambda _m, a: captured.append(a[0]))
    with torch.no_grad():
        model.fuse(model.encode_images(images), model.encode_texts(tok["input_ids"], tok["attention_mask"]))
    hook.remove()
    torch.testing.assert_close(model.fusion_module.mlp_head(captured[0]), out.i2t, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close((captured[0] + captured[1].transpose(0, 1)) / 2, feats, atol=1e-5, rtol=1e-4)


def test_feature_map_writes_png_and_counts_groups(model, tmp_path):
    images = torch.randn(12, 3, 64, 64)
    labels = np.array([1, 0, 1, 0, 0, 0, -1, 1, 0, 0, np.nan, 1])
    info = feature_map(model, images, labels, "Pleural Effusion", tmp_path / "tsne.png")
    assert (tmp_path / "tsne.png").stat().st_size > 1000
    assert info["counts"] == {GROUPS[0]: 4, GROUPS[1]: 4, GROUPS[2]: 6, GROUPS[3]: 6}
    assert info["prompt_separation"] > 0
    with pytest.raises(ValueError, match="both positive and negative"):
        feature_map(model, images[:3], np.array([1, 1, -1]), "Edema", tmp_path / "x.png")
