"""The exportable zero-shot head: images → zero-shot scores for a fixed class list, with the prompt features baked in.

:class:`ZeroShotHead` encodes the positive and negative prompts once (through :class:`ZeroShotClassifier`, so the
features are the ones it scores with) and keeps them as buffers; its ``forward`` runs only the image encoder and the
fusion against them. Its module tree holds no text encoder, so the TorchScript module that ``monai.bundle
ckpt_export --use_trace True`` writes from it (``export_head`` in ``configs/inference.yaml``) scores images without
a tokenizer, transformers or the text encoder's weights. Given the bundle's ``model_file``, the head also records
its deployment contract (:mod:`monai_vecl.inference.export`), which the TorchScript module keeps: the deploy app
reads it instead of the bundle's config.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_vecl.files import sha256_file
from monai_vecl.inference.export import BUFFER, HeadContract
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

    With ``model_file`` (the bundle's weights file), loading weights checks that they are that file's and records
    its sha256 in the contract (buffer :data:`~monai_vecl.inference.export.BUFFER`): the deploy app checks the
    calibrated thresholds against it. ``thresholds_file`` is recorded relative to ``model_file``'s folder (where
    ``ckpt_export`` writes ``model.ts``); without it the contract names the calibration's default place there.
    """

    def __init__(self, network: nn.Module, class_names: Sequence[str], pos_template: str = POS_TEMPLATE,
                 neg_template: str = NEG_TEMPLATE, score_mode: str = "pnc", model_file: str | os.PathLike | None = None,
                 thresholds_file: str | os.PathLike | None = None):
        super().__init__()
        if score_mode not in MODES:
            raise ValueError(f"score_mode must be one of {MODES}, got {score_mode!r}")
        if thresholds_file is not None and model_file is None:
            raise ValueError("thresholds_file is recorded relative to model_file's folder: give model_file too")
        # One chunk per prompt set: the prompt features are then one tensor each, as the classifier has them for up
        # to its chunk size of classes. A plain attribute, not a submodule: the text encoder stays out of the head.
        self.classifier = ZeroShotClassifier(network, class_names, pos_template, neg_template, len(class_names))
        self.class_names, self.score_mode = self.classifier.class_names, score_mode
        self.body = _image_side(network)
        self.model_file = None if model_file is None else Path(model_file)
        self.thresholds_file = thresholds_file
        self.encode_prompts()
        self.record_contract(None)

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

    def record_contract(self, model_sha256: str | None) -> None:
        """Record the contract for the weights of sha256 ``model_sha256`` (a buffer, which TorchScript keeps)."""
        config = self.classifier.model.config
        extra = {} if self.thresholds_file is None else {
            "thresholds_file": os.path.relpath(self.thresholds_file, self.model_file.parent)}
        contract = HeadContract(tuple(self.class_names), self.classifier.pos_template, self.classifier.neg_template,
                                self.score_mode, config.image_size, config.load_size, model_sha256, **extra)
        # kept out of the head's state_dict (that is the network's) like the prompt features
        self.register_buffer(BUFFER, contract.to_buffer(), persistent=False)

    def _weights_digest(self, state_dict: Mapping[str, Any]) -> str | None:
        """sha256 of ``model_file`` after checking that ``state_dict`` holds its weights (None without model_file):
        the digest recorded must be that of the weights the head scores with."""
        if self.model_file is None:
            return None
        saved = torch.load(self.model_file, map_location="cpu", weights_only=True)
        if saved.keys() != state_dict.keys() or not all(torch.equal(v, state_dict[k].cpu()) for k, v in saved.items()):
            raise ValueError(f"the weights loaded into the head are not those of its model_file {self.model_file}, "
                             "whose sha256 the export records: export from that file (ckpt_export's default "
                             "--ckpt_file is the bundle's models/model.pt)")
        return sha256_file(self.model_file)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.body.encode_images(images)
        p_pos = entail_probs(self.body, feats, [TextFeatures(self.pos_memory, self.pos_mask)])
        if self.score_mode == "pos":
            return p_pos
        return pnc(p_pos, entail_probs(self.body, feats, [TextFeatures(self.neg_memory, self.neg_mask)]))

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load the network's weights (its plain ``state_dict``), encode the prompts with them, record the contract."""
        digest = self._weights_digest(state_dict)  # before loading: other weights leave the head as it was
        result = self.classifier.model.load_state_dict(state_dict, strict=strict, assign=assign)
        self.encode_prompts()
        self.record_contract(digest)
        return result

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The network's ``state_dict`` (the prompt features derive from it)."""
        return self.classifier.model.state_dict(*args, **kwargs)
