"""The inference contract: how a VECL network turns images and prompts into zero-shot scores (docs/method.md §Scoring).

Training validation, evaluation and deployment all score through this module: the preprocessing
(:func:`preprocess`), the weights loader (:func:`load_weights`), the prompts, the relation channels and
POS / PNC.

``p_e(image, prompt)`` is the entail-channel probability of the softmax over the three
relation channels (entail, neutral, contradict) of the inference logits ``(i2t + t2i) / 2``.

* POS: ``p_e("There is X")``.
* PNC: ``p_e("There is X") / (p_e("There is X") + p_e("There is no X"))`` — the positive-vs-negative
  prompt contrast the VECL paper uses to show that negation-blind contrastive models collapse.

Prompts are tokenized and encoded once per device and reused; images and prompts are fused in
chunks so memory stays bounded for any number of images and prompts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_vecl.data.preprocess import preprocess_gray
from monai_vecl.relations import CONTRADICT, ENTAIL, NEUTRAL

__all__ = ["CONTRADICT", "ENTAIL", "MODES", "NEG_TEMPLATE", "NEUTRAL", "POS_TEMPLATE", "ZeroShotClassifier",
           "encode_texts_chunked", "entail_probs", "eval_mode", "load_weights", "model_device", "pnc", "preprocess"]

logger = logging.getLogger(__name__)

MODES = ("pnc", "pos")
POS_TEMPLATE = "There is {}"
NEG_TEMPLATE = "There is no {}"
_EPS = 1e-12
#: Weights that carry the intensity statistics the network was trained with (see ``VECLConfig``).
NORMALISATION_KEYS = ("intensity_mean", "intensity_std")


def preprocess(image: np.ndarray | torch.Tensor, network: torch.nn.Module) -> torch.Tensor:
    """Network input [3, S, S] from a 2-D grayscale image in [0, 1], with the network's own geometry."""
    return preprocess_gray(image, network.config.image_size, network.config.load_size)


def load_weights(network: torch.nn.Module, path: str | os.PathLike) -> torch.nn.Module:
    """Load ``models/model.pt`` (a plain ``state_dict``) strictly into ``network``: the one weights loader.

    The weights carry the intensity statistics they were trained with, and those are the ones the network
    then normalises with, whatever it was configured with (a training override reaches every later use);
    a difference from the configured values is logged.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights {path} not found: train first or point the model file at your weights")
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = network.state_dict()
    missing = [k for k in NORMALISATION_KEYS if k in own and k not in state]
    if missing:
        # weights saved before the statistics were stored with them (and converted reference checkpoints)
        logger.warning("%s holds no %s: using the network's configured %s", path, missing,
                       {k: round(float(own[k]), 6) for k in missing})
        state = {**state, **{k: own[k] for k in missing}}
    changed = {k: (float(own[k]), float(state[k])) for k in NORMALISATION_KEYS
               if k in own and not torch.allclose(state[k].float(), own[k].float().cpu())}
    if changed:
        logger.info("%s: normalising with the trained statistics, not the configured ones: %s", path,
                    ", ".join(f"{k} {new:.6g} (configured {old:.6g})" for k, (old, new) in changed.items()))
    network.load_state_dict(state)
    return network


def model_device(model: torch.nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for a parameter-less module)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def encode_texts_chunked(model: Any, texts: Sequence[str], chunk_size: int = 64) -> list[Any]:
    """Tokenize and encode ``texts`` in chunks; returns one opaque feature object per chunk, in order.

    Features are kept per chunk (not concatenated) so this works with whatever structure
    ``model.encode_texts`` returns; :func:`entail_probs` fuses chunk by chunk.
    """
    if not texts:
        raise ValueError("no texts to encode")
    device = model_device(model)
    chunks = []
    for start in range(0, len(texts), chunk_size):
        tokens = model.tokenize(list(texts[start : start + chunk_size]))
        chunks.append(model.encode_texts(tokens["input_ids"].to(device), tokens["attention_mask"].to(device)))
    return chunks


def entail_probs(model: Any, image_feats: Any, text_chunks: Sequence[Any]) -> torch.Tensor:
    """Entail probability [N, M] of each (image, text) pair, fusing one text chunk at a time.

    Differentiable (Grad-CAM grounding maps use it); callers that only score run it under ``no_grad``.
    """
    parts = [torch.softmax(model.fuse(image_feats, t).logits.float(), dim=-1)[..., ENTAIL] for t in text_chunks]
    return torch.cat(parts, dim=1)


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (dropout off) inside the block; the module's previous mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class ZeroShotClassifier:
    """Scores images against ``class_names`` with positive and negative prompts.

    Args:
        model: a network honouring the VECL contract (``tokenize``, ``encode_images``,
            ``encode_texts``, ``fuse`` returning an object with ``.logits`` [N, M, 3]).
        class_names: names inserted into the templates (e.g. ``ZERO_SHOT_CLASSES["chexpert"]``).
        pos_template / neg_template: ``str.format`` templates with one ``{}``.
        chunk_size: images per forward pass and prompts per fusion call.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        class_names: Sequence[str],
        pos_template: str = POS_TEMPLATE,
        neg_template: str = NEG_TEMPLATE,
        chunk_size: int = 64,
    ):
        if not class_names:
            raise ValueError("class_names is empty")
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"duplicate class names in {list(class_names)}")
        for template in (pos_template, neg_template):
            if template.count("{}") != 1:
                raise ValueError(f"prompt template needs exactly one '{{}}', got {template!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.model = model
        self.class_names = tuple(class_names)
        self.pos_template, self.neg_template = pos_template, neg_template
        self.pos_prompts = tuple(pos_template.format(c) for c in self.class_names)
        self.neg_prompts = tuple(neg_template.format(c) for c in self.class_names)
        self.chunk_size = chunk_size
        self._cache: dict[torch.device, tuple[list[Any], list[Any]]] = {}

    def prompt_features(self) -> tuple[list[Any], list[Any]]:
        """(positive, negative) prompt feature chunks, encoded once per model device."""
        device = model_device(self.model)
        if device not in self._cache:
            with eval_mode(self.model):
                self._cache[device] = (
                    encode_texts_chunked(self.model, self.pos_prompts, self.chunk_size),
                    encode_texts_chunked(self.model, self.neg_prompts, self.chunk_size),
                )
        return self._cache[device]

    @torch.no_grad()
    def entail(self, images: torch.Tensor, negative: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Entail probabilities [N, C] for the positive prompts and (if ``negative``) the negative prompts."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, S, S], got {tuple(images.shape)}")
        pos_chunks, neg_chunks = self.prompt_features()
        device = model_device(self.model)
        pos_out, neg_out = [], []
        with eval_mode(self.model):
            for start in range(0, images.shape[0], self.chunk_size):
                feats = self.model.encode_images(images[start : start + self.chunk_size].to(device))
                pos_out.append(entail_probs(self.model, feats, pos_chunks).cpu())
                if negative:
                    neg_out.append(entail_probs(self.model, feats, neg_chunks).cpu())
        empty = torch.zeros(0, len(self.class_names))
        p_pos = torch.cat(pos_out) if pos_out else empty
        p_neg = (torch.cat(neg_out) if neg_out else empty) if negative else None
        return p_pos, p_neg

    def scores(self, images: torch.Tensor, mode: str = "pnc") -> torch.Tensor:
        """Zero-shot scores [N, C] in [0, 1] (CPU float): ``mode="pos"`` or ``"pnc"``."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        p_pos, p_neg = self.entail(images, negative=mode == "pnc")
        return p_pos if mode == "pos" else pnc(p_pos, p_neg)


def pnc(p_pos: torch.Tensor, p_neg: torch.Tensor) -> torch.Tensor:
    """Positive-negative contrast ``p_pos / (p_pos + p_neg)`` (0 where both are 0)."""
    return p_pos / (p_pos + p_neg).clamp_min(_EPS)
