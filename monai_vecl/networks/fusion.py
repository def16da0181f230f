"""Cross-attention fusion of the VECL network (docs/method.md §Network), shared by both directions.

Queries (sentence features for i2t, image CLS features for t2i) attend to the tokens of one
memory item (an image or a sentence) through pre-norm decoder layers *without* query
self-attention, so every (memory, query) pair is scored independently of the rest of the batch.
Module names follow the reference checkpoint (WVeLong/VECL ``Fusion_Model``): ``decoder_norm``
(also the decoder's final norm, one shared LayerNorm as in the reference), ``decoder.layers.N``
with ``multihead_attn``, ``linear1``, ``linear2``, ``norm2``, ``norm3``, and ``mlp_head``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

NUM_RELATIONS = 3


class CrossAttentionLayer(nn.Module):
    """Pre-norm decoder layer: cross-attention then feed-forward, each with a residual connection."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = nn.ReLU()

    def forward(
        self,
        queries: torch.Tensor,
        memory: torch.Tensor,
        padding_mask: torch.Tensor | None,
        attention: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """queries [B, Q, d], memory [B, T, d], padding_mask [B, T] (True = ignore) → [B, Q, d].

        With ``attention`` (a list) given, the attention weights [B, heads, Q, T] are appended to it.
        """
        attended, weights = self.multihead_attn(
            self.norm2(queries),
            memory,
            memory,
            key_padding_mask=padding_mask,
            need_weights=attention is not None,
            average_attn_weights=False,
        )
        if attention is not None:
            attention.append(weights)
        x = queries + self.dropout2(attended)
        return x + self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(self.norm3(x))))))


class CrossAttentionDecoder(nn.Module):
    """A stack of :class:`CrossAttentionLayer` followed by a final LayerNorm."""

    def __init__(self, layers: Sequence[CrossAttentionLayer], norm: nn.LayerNorm):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm

    def forward(
        self,
        queries: torch.Tensor,
        memory: torch.Tensor,
        padding_mask: torch.Tensor | None,
        attention: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        for layer in self.layers:
            queries = layer(queries, memory, padding_mask, attention)
        return self.norm(queries)


class FusionModule(nn.Module):
    """Scores every (memory item, query) pair: memory [B, T, d] × queries [Q, d] → logits [B, Q, 3]."""

    def __init__(
        self,
        d_model: int,
        num_layers: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float,
        head_dims: Sequence[int],
        init_std: float | None = 0.02,
    ):
        super().__init__()
        self.decoder_norm = nn.LayerNorm(d_model)
        layers = [CrossAttentionLayer(d_model, num_heads, ffn_dim, dropout) for _ in range(num_layers)]
        self.decoder = CrossAttentionDecoder(layers, self.decoder_norm)
        self.dropout_feas = nn.Dropout(dropout)
        head: list[nn.Module] = []
        width = d_model
        for dim in head_dims:
            head += [nn.Linear(width, dim), nn.ReLU(), nn.Dropout(dropout)]
            width = dim
        self.mlp_head = nn.Sequential(*head, nn.Linear(width, NUM_RELATIONS))
        if init_std is not None:
            self.apply(lambda module: self._init_weights(module, init_std))

    @staticmethod
    def _init_weights(module: nn.Module, std: float) -> None:
        # N(0, std) on linear and attention projections, as the reference initialises its fusion (0.02).
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, nn.MultiheadAttention):
            nn.init.normal_(module.in_proj_weight, std=std)
            nn.init.normal_(module.out_proj.weight, std=std)

    def forward(
        self,
        memory: torch.Tensor,
        queries: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        attention: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``attention``: an optional list that receives each layer's weights [B, heads, Q, T] (for grounding maps)."""
        memory = self.decoder_norm(memory)
        queries = self.decoder_norm(queries).unsqueeze(0).expand(memory.shape[0], -1, -1)
        features = self.decoder(queries, memory, padding_mask, attention)
        return self.mlp_head(self.dropout_feas(features))
