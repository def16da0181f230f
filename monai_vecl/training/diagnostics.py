"""Instruments that say whether a VECL run can learn: target statistics, image dependence, gradients, text contrast.

Used by the trainer (per-epoch means logged to MLflow) and by ``bench/diagnose_training.py``.
Each function takes what one training step already has (targets, logits, the network) and returns
plain floats keyed by name, so they can be logged or printed as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from monai_vecl.inference.zero_shot import NEG_TEMPLATE, POS_TEMPLATE
from monai_vecl.relations import CONTRADICT, ENTAIL, NEUTRAL


def target_stats(target: torch.Tensor) -> dict[str, float]:
    """Fractions of entail / neutral / contradict pairs of a [N, M, 3] target, and rows/columns without an
    off-diagonal entail (those are taught only by the diagonal term)."""
    n, m, _ = target.shape
    entail = target[..., ENTAIL].clone()
    if n == m:
        entail.fill_diagonal_(0)
    return {
        "frac_entail": float(target[..., ENTAIL].mean()),
        "frac_neutral": float(target[..., NEUTRAL].mean()),
        "frac_contradict": float(target[..., CONTRADICT].mean()),
        "images_without_other_entail": float((entail.sum(1) == 0).float().mean()),
        "sentences_without_other_entail": float((entail.sum(0) == 0).float().mean()),
    }


def image_dependence(logits: torch.Tensor) -> dict[str, float]:
    """How much the entail logit of [N_img, N_txt, 3] moves with the image (sentence fixed) and with the
    sentence (image fixed): a model that ignores the image has ``std_over_images`` near 0."""
    entail = logits[..., ENTAIL].detach().float()
    over_images = float(entail.std(dim=0).mean())
    over_sentences = float(entail.std(dim=1).mean())
    return {
        "std_over_images": over_images,
        "std_over_sentences": over_sentences,
        "image_to_sentence_ratio": over_images / max(over_sentences, 1e-12),
    }


def module_grad_norms(network: nn.Module, depth: int = 2) -> dict[str, float]:
    """L2 norm of the current gradients per module prefix (``depth`` name parts), e.g. ``fusion_module.decoder``."""
    squares: dict[str, float] = {}
    for name, param in network.named_parameters():
        if param.grad is not None:
            key = ".".join(name.split(".")[:depth])
            squares[key] = squares.get(key, 0.0) + float(param.grad.detach().float().pow(2).sum())
    return {k: v**0.5 for k, v in squares.items()}


@torch.no_grad()
def prompt_contrast(network: nn.Module, class_names: Sequence[str], pos_template: str = POS_TEMPLATE,
                    neg_template: str = NEG_TEMPLATE) -> dict[str, float]:
    """Cosine of the sentence features the fusion sees (after the text projection) for "There is X" vs
    "There is no X", against "There is X" vs "There is Y": if negation is as close as another finding,
    the i2t queries cannot tell the two prompts apart."""
    prompts = [pos_template.format(c) for c in class_names] + [neg_template.format(c) for c in class_names]
    tokens = network.tokenize(prompts)
    device = next(network.parameters()).device
    was_training = network.training
    network.eval()
    try:
        feats = network.encode_texts(tokens["input_ids"].to(device), tokens["attention_mask"].to(device)).sentence
    finally:
        network.train(was_training)
    feats = nn.functional.normalize(feats.float(), dim=-1)
    k = len(class_names)
    pos, neg = feats[:k], feats[k:]
    pos_neg = (pos * neg).sum(-1).mean()
    pos_pos = pos @ pos.T
    other = (pos_pos.sum() - pos_pos.diagonal().sum()) / max(k * (k - 1), 1)
    return {"cos_pos_vs_neg": float(pos_neg), "cos_pos_vs_other_pos": float(other)}
