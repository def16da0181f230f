"""Grounding maps: attention capture leaves the fusion unchanged, token layout, Grad-CAM, frame geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_vecl.evaluation.grounding import make_grounder
from monai_vecl.inference.zero_shot import ZeroShotClassifier
from monai_vecl.grounding import (
    Grounder,
    GroundingConfig,
    _TokenGrid,
    attention_maps,
    to_model_frame,
    to_source_frame,
    token_grid,
)
from monai_vecl.networks import build_vecl

CLASSES = ["Pleural Effusion", "Cardiomegaly", "Pneumothorax"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_vecl("small", image_size=64, load_size=72, vit_num_layers=1).eval()


@pytest.fixture(scope="module")
def classifier(model):
    return ZeroShotClassifier(model, CLASSES)


def test_attention_capture_is_off_by_default_and_changes_nothing(model, classifier):
    images = torch.randn(2, 3, 64, 64)
    pos, _ = classifier.prompt_features()
    with torch.no_grad():
        tokens = model.encode_images(images)
        plain = model.fusion_module(tokens, pos[0].sentence)
        weights: list[torch.Tensor] = []
        captured = model.fusion_module(tokens, pos[0].sentence, attention=weights)
    torch.testing.assert_close(plain, captured)
    assert len(weights) == model.config.fusion_layers
    n_heads, n_tokens = model.config.fusion_heads, tokens.shape[1]
    assert weights[0].shape == (2, n_heads, len(CLASSES), n_tokens)
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(2, n_heads, len(CLASSES)))


def test_attention_map_is_the_head_and_layer_mean_over_image_tokens(model, classifier):
    pos, _ = classifier.prompt_features()
    with torch.no_grad():
        tokens = model.encode_images(torch.randn(1, 3, 64, 64))
        weights: list[torch.Tensor] = []
        model.fusion_module(tokens, pos[0].sentence, attention=weights)
        maps = attention_maps(model, tokens, pos[0].sentence, "last")
    h, w = token_grid(model, tokens.shape[1] - 1)
    expected = weights[-1].mean(1)[0, 1, 1:].reshape(h, w)  # prompt 1, global token dropped, row-major
    torch.testing.assert_close(maps[0, 1], expected)


def test_token_grid_is_row_major_and_rejects_non_square():
    tokens = torch.arange(1 + 6).float().reshape(1, 7, 1).expand(1, 7, 2)
    grid = _TokenGrid((2, 3))(tokens)
    assert grid.shape == (1, 2, 2, 3) and grid[0, 0, 1, 0] == 4  # row 1, column 0 → token 1 + 3
    net = torch.nn.Linear(1, 1)
    with pytest.raises(ValueError, match="grid"):
        token_grid(net, 12)
    net.image_token_grid = (3, 4)
    assert token_grid(net, 12) == (3, 4)


@pytest.mark.parametrize("method", ["attention", "gradcam", "gradcampp"])
def test_grounder_maps_every_prompt_in_unit_range(model, classifier, method):
    requires = [p.requires_grad for p in model.parameters()]
    grounder = make_grounder(classifier, GroundingConfig(method=method))
    maps = grounder.maps(torch.randn(2, 3, 64, 64))
    assert maps.shape == (2, len(CLASSES), 64, 64)
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert all(p.grad is None for p in model.parameters())  # no parameter gradients left behind
    assert [p.requires_grad for p in model.parameters()] == requires
    assert not model.training


def test_gradcam_needs_a_score_and_config_is_validated(model, classifier):
    with pytest.raises(ValueError, match="score_fn"):
        Grounder(model, classifier.prompt_features()[0], None, GroundingConfig(method="gradcam"))
    with pytest.raises(ValueError):
        GroundingConfig(method="saliency")
    with pytest.raises(TypeError):
        GroundingConfig.from_mapping({"enabled": "false"})
    with pytest.raises(ValueError, match="unknown"):
        GroundingConfig.from_mapping({"methd": "attention"})


@pytest.mark.parametrize("shape", [(96, 96), (120, 80), (70, 130)])
def test_source_frame_inverts_the_preprocessing_geometry(shape):
    mask = np.zeros(shape, np.float32)
    h, w = shape
    mask[h // 3 : h // 2, w // 3 : 2 * w // 3] = 1
    model_frame = to_model_frame(mask, 64, 72)
    back = to_source_frame(model_frame[None], shape, 72)[0].numpy() > 0.5
    inter, union = (back & (mask > 0)).sum(), (back | (mask > 0)).sum()
    assert back.shape == shape and inter / union > 0.85


def test_gradcampp_batch_gives_the_per_image_maps(model, classifier):
    """Batching must not mix images (MONAI's GradCAMpp broadcasts the score wrongly for N > 1)."""
    images = torch.randn(3, 3, 64, 64)
    grounder = make_grounder(classifier, GroundingConfig(method="gradcampp"))
    together = grounder.maps(images)
    one_by_one = torch.cat([grounder.maps(images[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=1e-4)
