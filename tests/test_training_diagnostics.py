"""Training diagnostics, loss terms and floors, k sentences per image, the frozen-text cache, typed options."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from monai_vecl.config import check_bool
from monai_vecl.losses import VECLLoss, diagonal_cross_entropy, loss_floors, soft_cross_entropy_floor
from monai_vecl.networks import build_vecl
from monai_vecl.relations import relation_targets
from monai_vecl.taxonomy import multi_hot_batch
from monai_vecl.training import diagnostics

TINY_BERT = {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 32}
TINY = dict(image_size=32, load_size=40, cnn_channels=(4, 8, 8, 8), text_config=TINY_BERT, text_last_n_layers=2,
            d_model=16, fusion_layers=1, fusion_heads=2, fusion_ffn_dim=32, head_dims=(16,))

IMAGES = [("2+", "3-"), ("2-", "4+"), ("1+",), ("2-", "3-")]


def sentences_of(images, k):
    """k sentences per image drawn from its own labels (image-major)."""
    return [(labels[r % len(labels)],) for labels in images for r in range(k)]


def test_target_stats_count_channels_and_rows_without_other_entail():
    target = torch.zeros(3, 3, 3)
    target[..., 1] = 1  # all neutral
    for i in range(3):
        target[i, i] = torch.tensor([1.0, 0, 0])
    target[0, 1] = torch.tensor([0, 0, 1.0])
    target[0, 1, 1] = 0
    stats = diagnostics.target_stats(target)
    assert stats["frac_entail"] == pytest.approx(3 / 9) and stats["frac_contradict"] == pytest.approx(1 / 9)
    assert stats["images_without_other_entail"] == 1.0  # only the diagonal entails


def test_image_dependence_is_zero_for_logits_that_ignore_the_image():
    per_sentence = torch.randn(1, 5, 3)
    stats = diagnostics.image_dependence(per_sentence.expand(4, -1, -1))
    assert stats["std_over_images"] == 0.0 and stats["std_over_sentences"] > 0
    assert diagnostics.image_dependence(torch.randn(4, 5, 3))["std_over_images"] > 0


def test_soft_infonce_terms_reach_their_floor_only_at_the_normalised_targets():
    img = multi_hot_batch(IMAGES)
    sent = multi_hot_batch(sentences_of(IMAGES, 1))
    loss = VECLLoss("vecl_paper")
    target = loss.targets(img, sent)
    best = torch.log(target.clamp_min(1e-12))
    floors = loss_floors(loss, img, sent)
    terms = loss.terms(best, best, img, sent)
    assert set(floors) == set(terms)
    for name, value in terms.items():
        assert float(value) == pytest.approx(floors[name], abs=1e-4), name
    noisy = loss.terms(torch.randn_like(best), torch.randn_like(best), img, sent)
    assert all(float(noisy[k]) > floors[k] + 1e-3 for k in noisy)
    # the floor of a row with two equal targets is ln 2
    assert float(soft_cross_entropy_floor(torch.tensor([[1.0, 1.0, 0.0]]))) == pytest.approx(math.log(2))


def test_terms_sum_to_the_loss_for_every_kind():
    img = multi_hot_batch(IMAGES)
    sent = multi_hot_batch(sentences_of(IMAGES, 1))
    i2t, t2i = torch.randn(4, 4, 3), torch.randn(4, 4, 3)
    for kind in ("vecl", "vecl_paper", "no_entailment", "bce", "ce", "clip"):
        loss = VECLLoss(kind)
        terms = loss.terms(i2t, t2i, img, sent)
        assert float(loss(i2t, t2i, img, sent)) == pytest.approx(float(sum(terms.values())), rel=1e-6)
        assert all(k.startswith(("i2t/", "t2i/")) for k in terms)


def test_k_sentences_per_image_targets_and_diagonal_term():
    k = 3
    img = multi_hot_batch(IMAGES)
    sent = multi_hot_batch(sentences_of(IMAGES, k))
    target = relation_targets(img, sent, sentences_per_image=k)
    assert target.shape == (4, 12, 3)
    for j in range(12):
        assert target[j // k, j, 0] == 1  # every own sentence entails its image
    plain = relation_targets(img, sent, entail_diagonal=False)
    off_own = torch.ones(4, 12, dtype=torch.bool)
    off_own[torch.arange(12) // k, torch.arange(12)] = False
    assert torch.equal(target[off_own], plain[off_own])

    logits = torch.randn(4, 12)
    own = (torch.arange(12)[None] // k == torch.arange(4)[:, None]).float()
    expected = -(own / k * F.log_softmax(logits, 1)).sum(1).mean() + F.cross_entropy(logits.T, torch.arange(12) // k)
    assert float(diagonal_cross_entropy(logits, k)) == pytest.approx(float(expected), rel=1e-6)
    square = torch.randn(4, 4)
    labels = torch.arange(4)
    assert float(diagonal_cross_entropy(square)) == pytest.approx(
        float(F.cross_entropy(square, labels) + F.cross_entropy(square.T, labels)), rel=1e-6)

    loss = VECLLoss("vecl", sentences_per_image=k)
    assert torch.isfinite(loss(torch.randn(4, 12, 3), torch.randn(4, 12, 3), img, sent))
    with pytest.raises(ValueError, match="3 sentence"):
        loss(torch.randn(4, 4, 3), torch.randn(4, 4, 3), img, multi_hot_batch(sentences_of(IMAGES, 1)))


def test_frozen_text_cache_gives_the_uncached_features():
    plain = build_vecl("small", freeze_text=True, text_cache_size=0, **TINY).eval()
    cached = build_vecl("small", freeze_text=True, text_cache_size=2, **TINY).eval()
    cached.load_state_dict(plain.state_dict())
    texts = ["No pneumothorax.", "There is a small right pleural effusion.", "No pneumothorax.", "Heart size is normal."]
    tokens = plain.tokenize(texts)
    a = plain.encode_texts(tokens["input_ids"], tokens["attention_mask"])
    b = cached.encode_texts(tokens["input_ids"], tokens["attention_mask"])
    keep = ~a.padding_mask
    torch.testing.assert_close(b.memory[keep], a.memory[keep], atol=1e-5, rtol=1e-5)
    assert len(cached.text_encoder._cache) == 2  # bounded: least recently used entries dropped
    cached.train()
    assert not cached.text_encoder.model.training  # a frozen encoder never runs dropout


def test_module_grad_norms_and_prompt_contrast():
    net = build_vecl("small", freeze_text=False, **TINY)
    tokens = net.tokenize(["No effusion.", "Effusion."])
    out = net(torch.randn(2, 3, 32, 32), tokens["input_ids"], tokens["attention_mask"])
    out.logits.sum().backward()
    norms = diagnostics.module_grad_norms(net)
    manual = sum(float(p.grad.pow(2).sum()) for n, p in net.named_parameters()
                 if n.startswith("fusion_module.mlp_head") and p.grad is not None) ** 0.5
    assert norms["fusion_module.mlp_head"] == pytest.approx(manual, rel=1e-5)
    contrast = diagnostics.prompt_contrast(net, ["Pleural Effusion", "Pneumothorax", "Edema"])
    assert -1 <= contrast["cos_pos_vs_neg"] <= 1 and -1 <= contrast["cos_pos_vs_other_pos"] <= 1


def test_string_booleans_are_refused_with_the_key_named():
    with pytest.raises(TypeError, match="freeze_text"):
        build_vecl("small", freeze_text="false", **TINY)
    with pytest.raises(TypeError, match="fusion_layers"):
        build_vecl("small", fusion_layers="2")
    with pytest.raises(ValueError, match="unknown"):
        build_vecl("small", fusion_layer=2)
    with pytest.raises(TypeError, match="amp"):
        check_bool("amp", "false")
    assert check_bool("x", False) is False
