"""The exportable zero-shot head: images → zero-shot scores for a fixed class list, with the prompt features baked in.

:class:`ZeroShotHead` encodes the positive and negative prompts once (through :class:`ZeroShotClassifier`, so the
features are the ones it scores with) and keeps them as buffers; its ``forward`` runs only the image encoder and the
fusion against them. Its module tree holds no text encoder, so the TorchScript module that ``monai.bundle
ckpt_export --use_trace True`` writes from it (``export_head`` in ``configs/inference.yaml``) scores images without
a tokenizer, transformers or the text encoder's weights.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from monai_vecl.inference.zero_shot import (
    MODES,
    NEG_TEMPLATE,
    POS_TEMPLATE,
    ZeroShotClassifier,
    entail_probs,
    pnc,
)
from monai_vecl.networks import TextFeatures

__all__ = ["ZeroShotHead"]

#: Network parts that only encode texts: the head leaves them out once the prompts are encoded.
TEXT_MODULES = ("text_encoder", "text_proj")


def _image_side(network: nn.Module) -> nn.Module:
    """The network without its text side, sharing every remaining parameter and buffer: its own methods
    (``encode_images``, ``fuse``) keep working, on the same weights."""
    body = copy.copy(network)
    body._modules = dict(network._modules)  # its own module table, so removing the text side leaves the network whole
    for name in TEXT_MODULES:
        delattr(body, name)
    return body


class ZeroShotHead(nn.Module):
    """``head(images)`` → zero-shot scores [N, C] in [0, 1] for ``class_names`` from images [N, 3, S, S] in [0, 1].

    Scores equal :meth:`ZeroShotClassifier.scores` with the same network, prompts and ``score_mode`` ("pnc" or
    "pos"). The head's weights are the network's: ``load_state_dict`` takes the network's plain ``state_dict``
    (the bundle's ``models/model.pt``, as MONAI's ``CheckpointLoader`` and ``ckpt_export`` pass it) and encodes the
    prompts again with the loaded weights; ``state_dict`` returns the network's.
    """

    def __init__(self, network: nn.Module, class_names: Sequence[str], pos_template: str = POS_TEMPLATE,
                 neg_template: str = NEG_TEMPLATE, score_mode: str = "pnc"):
        super().__init__()
        if score_mode not in MODES:
            raise ValueError(f"score_mode must be one of {MODES}, got {score_mode!r}")
        # One chunk per prompt set: the prompt features are then one tensor each, as the classifier has them for up
        # to its chunk size of classes. A plain attribute, not a submodule: the text encoder stays out of the head.
        self.classifier = ZeroShotClassifier(network, class_names, pos_template, neg_template, len(class_names))
        self.class_names, self.score_mode = self.classifier.class_names, score_mode
        self.body = _image_side(network)
        self.encode_prompts()

    @torch.no_grad()
    def encode_prompts(self) -> None:
        """Encode the prompts with the network's current weights into the head's buffers."""
        c = self.classifier  # a fresh classifier: the features of the weights as they are now, not cached ones
        fresh = ZeroShotClassifier(c.model, c.class_names, c.pos_template, c.neg_template, c.chunk_size)
        (pos,), (neg,) = fresh.prompt_features()
        for prefix, features in (("pos", pos), ("neg", neg)):
            # derived from the weights and the prompts, so kept out of the state_dict
            self.register_buffer(f"{prefix}_memory", features.memory.detach().clone(), persistent=False)
            mask = None if features.padding_mask is None else features.padding_mask.clone()
            self.register_buffer(f"{prefix}_mask", mask, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.body.encode_images(images)
        p_pos = entail_probs(self.body, feats, [TextFeatures(self.pos_memory, self.pos_mask)])
        if self.score_mode == "pos":
            return p_pos
        return pnc(p_pos, entail_probs(self.body, feats, [TextFeatures(self.neg_memory, self.neg_mask)]))

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load the network's weights (its plain ``state_dict``) and encode the prompts with them."""
        result = self.classifier.model.load_state_dict(state_dict, strict=strict, assign=assign)
        self.encode_prompts()
        return result

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The network's ``state_dict`` (the prompt features derive from it)."""
        return self.classifier.model.state_dict(*args, **kwargs)
