"""Image and text encoders of the VECL network (docs/method.md §Network).

The image encoder is MONAI's ViT returning the CLS token followed by the patch tokens. The text
encoder is any transformers ``AutoModel``; token features are the sum of its last hidden layers
(4 in the reference code) and the sentence feature is their mean over the sentence's tokens.
``text_pooling="mean"`` reproduces the reference instead: the sum over the sentence's tokens
divided by the fixed 97 slots (the reference zero-fills padding slots, after merging word pieces
into words, which leaves that sum unchanged). The word-piece merge of the token features
themselves is not reproduced.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from monai_vecl.networks.presets import VECLConfig

PACKAGE_SCHEME = "package:"


def resolve_model_path(name: str) -> str:
    """Turn ``package:<module>/<subfolder>`` into the folder inside that installed package; other names pass through."""
    if not name.startswith(PACKAGE_SCHEME):
        return name
    module, _, sub = name[len(PACKAGE_SCHEME) :].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{name}: Python package {module!r} is not installed")
    folder = Path(next(iter(spec.submodule_search_locations))) / sub
    if not folder.is_dir():
        raise FileNotFoundError(f"{name}: no folder {folder}")
    return str(folder)


class ImageEncoder(nn.Module):
    """MONAI ViT (2-D) returning tokens [N, 1 + patches, hidden] with the CLS token first."""

    def __init__(self, config: VECLConfig):
        super().__init__()
        from monai.networks.nets import ViT

        # classification=True is what creates the CLS token; the classification head is dropped.
        self.model = ViT(
            in_channels=3,
            img_size=config.image_size,
            patch_size=config.patch_size,
            hidden_size=config.vit_hidden_size,
            mlp_dim=config.vit_mlp_dim,
            num_layers=config.vit_num_layers,
            num_heads=config.vit_num_heads,
            dropout_rate=config.vit_dropout,
            spatial_dims=2,
            classification=True,
            qkv_bias=True,
        )
        del self.model.classification_head
        for module in self.model.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = config.vit_norm_eps
        if config.vit_dropout == 0:
            # Same maths through torch's fused attention kernel: faster and leaner on CPU and GPU.
            # Only without dropout: MONAI passes its dropout rate to that kernel in eval mode too.
            for block in self.model.blocks:
                block.attn.use_flash_attention = True
        self.hidden_size = config.vit_hidden_size
        if config.image_weights:
            state = torch.load(config.image_weights, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape [N, 3, H, W], got {tuple(images.shape)}")
        tokens, _ = self.model(images)
        return tokens


class ResNetImageEncoder(nn.Module):
    """MONAI ResNet (2-D) whose last feature map gives the image tokens [N, 1 + h·w, C].

    The tokens are the cells of the last stage's feature map, row-major; the first token is their
    mean (the global image feature, in the slot the ViT's CLS token takes). A convolutional stem
    learns far faster than a ViT from scratch on a few thousand images, which is what the CPU
    preset has; the ViT stays the ``paper`` encoder.
    """

    def __init__(self, config: VECLConfig):
        super().__init__()
        from monai.networks.nets import ResNet

        if len(config.cnn_channels) != len(config.cnn_blocks):
            raise ValueError(f"cnn_channels {config.cnn_channels} and cnn_blocks {config.cnn_blocks} differ in length")
        self.model = ResNet(
            block="basic",
            layers=list(config.cnn_blocks),
            block_inplanes=list(config.cnn_channels),
            spatial_dims=2,
            n_input_channels=3,
            conv1_t_size=7,
            conv1_t_stride=2,
            no_max_pool=True,
            feed_forward=False,
        )
        self.hidden_size = config.cnn_channels[-1]
        self.stride = 2 ** len(config.cnn_channels)  # the stem and every stage after the first halve the size
        if config.image_weights:
            self.model.load_state_dict(torch.load(config.image_weights, map_location="cpu", weights_only=True))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape [N, 3, H, W], got {tuple(images.shape)}")
        m = self.model
        x = m.act(m.bn1(m.conv1(images)))
        x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        tokens = x.flatten(2).transpose(1, 2)
        return torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)


IMAGE_ENCODERS = {"vit": ImageEncoder, "resnet": ResNetImageEncoder}


def build_image_encoder(config: VECLConfig) -> nn.Module:
    """The image encoder named by ``config.image_encoder`` (a choice the config has checked)."""
    return IMAGE_ENCODERS[config.image_encoder](config)


class TextEncoder(nn.Module):
    """transformers encoder + tokenizer; returns (sentence features [M, h], token features [M, L, h])."""

    def __init__(self, config: VECLConfig):
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        path = resolve_model_path(config.text_model)
        local = Path(path).is_dir()
        if config.text_config is not None:
            cfg = dict(config.text_config)
            self.model = AutoModel.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg))
        else:
            self.model = AutoModel.from_pretrained(path, local_files_only=local)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        n_hidden = self.model.config.num_hidden_layers + 1  # embeddings + each layer
        if not 1 <= config.text_last_n_layers <= n_hidden:
            raise ValueError(f"text_last_n_layers must be 1..{n_hidden}, got {config.text_last_n_layers}")
        self.last_n_layers = config.text_last_n_layers
        self.max_tokens = config.text_max_tokens
        self.pooling = config.text_pooling
        self.pad_to_max = config.text_pad_to_max
        self.hidden_size = self.model.config.hidden_size
        self.frozen = config.freeze_text
        if self.frozen:
            self.model.requires_grad_(False)
            self.model.eval()
        # A frozen encoder maps a sentence to fixed features, so each distinct sentence is encoded once
        # (a training run sees the same sentences every epoch). Token features are exact only where the
        # attention mask is 1, so the cache is used only when padding is masked downstream.
        self.cache_size = config.text_cache_size if self.frozen and config.mask_text_padding else 0
        self._cache: OrderedDict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if self.frozen:
            self.model.eval()  # a fixed feature extractor: no dropout noise in training either
        return self

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` [M, L], truncated to ``max_tokens``."""
        if isinstance(texts, str) or not texts:
            raise ValueError("tokenize expects a non-empty list of strings")
        tokens = self.tokenizer(
            list(texts),
            padding="max_length" if self.pad_to_max else "longest",
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        )
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.cache_size:
            return self._encode(input_ids, attention_mask)
        keys = [tuple(row[mask.bool()].tolist()) for row, mask in zip(input_ids, attention_mask)]
        misses = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if misses:
            ids = torch.zeros(len(misses), max(map(len, misses)), dtype=input_ids.dtype)
            mask = torch.zeros_like(ids)
            for i, key in enumerate(misses):
                ids[i, : len(key)] = torch.tensor(key)
                mask[i, : len(key)] = 1
            with torch.no_grad():
                sentence, tokens = self._encode(ids.to(input_ids.device), mask.to(input_ids.device))
            for i, key in enumerate(misses):
                self._cache[key] = (sentence[i], tokens[i, : len(key)])
        sentence = torch.stack([self._cache[k][0] for k in keys])
        tokens = sentence.new_zeros(len(keys), input_ids.shape[1], sentence.shape[-1])
        for i, key in enumerate(keys):
            self._cache.move_to_end(key)
            tokens[i, : len(key)] = self._cache[key][1]
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return sentence, tokens

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        tokens = torch.stack(out.hidden_states[-self.last_n_layers :]).sum(dim=0)
        weights = attention_mask.to(tokens.dtype).unsqueeze(-1)
        total = (tokens * weights).sum(dim=1)
        if self.pooling == "mean":
            # Reference parity: it averages over all max_tokens slots, its padding slots holding zeros.
            return total / self.max_tokens, tokens
        return total / weights.sum(dim=1).clamp_min(1.0), tokens
