"""The VECL network: image encoder, text encoder and the shared two-way fusion (docs/method.md §Network)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from monai_vecl.networks.encoders import TextEncoder, build_image_encoder
from monai_vecl.networks.fusion import FusionModule
from monai_vecl.networks.presets import VECLConfig, make_config


@dataclass
class VECLOutput:
    """Relation logits [N_img, N_txt, 3] (entail, neutral, contradict) of both fusion directions."""

    i2t: torch.Tensor
    t2i: torch.Tensor

    @property
    def logits(self) -> torch.Tensor:
        """Inference logits: the mean of both directions."""
        return (self.i2t + self.t2i) / 2


class TextFeatures(NamedTuple):
    """Text memory [M, 1 + L, d] (sentence feature first, then tokens) and its padding mask [M, 1 + L]."""

    memory: torch.Tensor
    padding_mask: torch.Tensor | None

    @property
    def sentence(self) -> torch.Tensor:
        return self.memory[:, 0]


class VECLNetwork(nn.Module):
    """VECL: scores the relation of every image with every text.

    i2t: each image's [CLS; patches] is the memory and every sentence feature a query.
    t2i: each sentence's [sentence; tokens] is the memory and every image CLS a query; the result
    is transposed to image × text. Queries never attend to each other, so out[i, j] depends only
    on image i and text j.
    """

    def __init__(self, config: VECLConfig):
        super().__init__()
        self.config = config
        self.image_size = config.image_size
        self.load_size = config.load_size
        self.img_encoder = build_image_encoder(config)
        self.text_encoder = TextEncoder(config)
        d = config.d_model
        # Projections only where an encoder's width differs from the fusion width (none in ``paper``).
        self.img_proj = nn.Linear(self.img_encoder.hidden_size, d) if self.img_encoder.hidden_size != d else nn.Identity()
        self.text_proj = nn.Linear(self.text_encoder.hidden_size, d) if self.text_encoder.hidden_size != d else nn.Identity()
        self.register_buffer("intensity_mean", torch.tensor(float(config.intensity_mean)))
        self.register_buffer("intensity_std", torch.tensor(float(config.intensity_std)))
        self.fusion_module = FusionModule(
            d, config.fusion_layers, config.fusion_heads, config.fusion_ffn_dim, config.fusion_dropout, config.head_dims,
            config.fusion_init_std,
        )

    @property
    def image_token_grid(self) -> tuple[int, int]:
        """(rows, columns) of the image tokens after the first (global) one, laid out row-major."""
        if self.config.image_encoder == "resnet":
            side = -(-self.image_size // self.img_encoder.stride)
        else:
            side = self.image_size // self.config.patch_size
        return side, side

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Tokenize sentences: ``input_ids`` and ``attention_mask`` [M, L] on the CPU."""
        return self.text_encoder.tokenize(texts)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Image tokens [N, 1 + patches, d], CLS first, from images [N, 3, S, S] with intensities in [0, 1]
        (:func:`monai_vecl.inference.preprocess`); the network normalises them with its own statistics."""
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"images must be {self.image_size}×{self.image_size}, got {tuple(images.shape[-2:])}")
        return self.img_proj(self.img_encoder((images - self.intensity_mean) / self.intensity_std))

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextFeatures:
        """Text memory for the fusion from tokenized sentences."""
        sentence, tokens = self.text_encoder(input_ids, attention_mask)
        memory = self.text_proj(torch.cat([sentence.unsqueeze(1), tokens], dim=1))
        padding_mask = None
        if self.config.mask_text_padding:
            keep_sentence = torch.ones_like(attention_mask[:, :1], dtype=torch.bool)
            padding_mask = ~torch.cat([keep_sentence, attention_mask.bool()], dim=1)
        return TextFeatures(memory, padding_mask)

    def fuse(self, image_feats: torch.Tensor, text_feats: TextFeatures) -> VECLOutput:
        """Relation logits of every image with every text from encoded features."""
        i2t = self.fusion_module(image_feats, text_feats.sentence)
        t2i = self.fusion_module(text_feats.memory, image_feats[:, 0], text_feats.padding_mask).transpose(0, 1)
        return VECLOutput(i2t=i2t, t2i=t2i)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> VECLOutput:
        return self.fuse(self.encode_images(images), self.encode_texts(input_ids, attention_mask))


def build_vecl(preset: str = "small", **overrides: Any) -> VECLNetwork:
    """Build a :class:`VECLNetwork` from a preset (``"small"`` or ``"paper"``) with any config field overridden."""
    return VECLNetwork(make_config(preset, **overrides))
