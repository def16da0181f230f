"""VECL training losses: the 3D InfoNCE and the ablations of the VECL paper (Table 3) (DESIGN §4).

Logits have shape [N, N, 3]: row = image, column = sentence, channel = entail / neutral /
contradict. Every loss is applied to the i2t and to the t2i logits and the two are added.

* ``vecl`` — the reference composition (WVeLong/VECL ``ThreeD_InfoNCE_Loss``): per channel a soft
  InfoNCE over both axes, plus 1.5 × hard cross-entropy with diagonal targets on the entail
  channel per axis, all × 0.25.
* ``vecl_paper`` — the three channel-wise soft InfoNCE terms alone, as the paper writes them.
* ``no_entailment`` — the ``vecl`` composition on the entail channel only: neutral and contradict
  collapse into "not entailed" (paper Table 3, first row).
* ``bce`` — per-pair binary cross-entropy on the three channels against the one-hot targets.
* ``ce`` — per-pair 3-way cross-entropy.
* ``clip`` — 2-D symmetric InfoNCE on the entail channel with identity targets: a CLIP baseline
  that ignores what the reports say about other images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from monai_vecl.relations import ENTAIL, relation_targets

LOSS_KINDS = ("vecl", "vecl_paper", "no_entailment", "bce", "ce", "clip")
_DIAGONAL_WEIGHT = 1.5  # reference code
_REFERENCE_SCALE = 0.25  # reference code


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-Σ_j t_ij log softmax(logits_i)_j`` with row-normalised targets.

    Rows whose target sums to zero carry no positive and are left out of the mean; with no
    valid row at all the loss is a zero that still depends on ``logits`` (finite gradients).
    """
    mass = target.sum(dim=1, keepdim=True)
    valid = mass.squeeze(1) > 0
    if not bool(valid.any()):
        return logits.sum() * 0.0
    per_row = -(target[valid] / mass[valid] * F.log_softmax(logits[valid], dim=1)).sum(dim=1)
    return per_row.mean()


def soft_info_nce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Symmetric soft InfoNCE of a [N, M] logit matrix: ½ (rows over columns + columns over rows)."""
    return 0.5 * (soft_cross_entropy(logits, target) + soft_cross_entropy(logits.T, target.T))


def diagonal_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Hard cross-entropy with the diagonal as the target, summed over both axes."""
    labels = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)


class VECLLoss(nn.Module):
    """VECL loss and its ablations; ``loss_fn(i2t, t2i, image_mh, sentence_mh) -> scalar``.

    Args:
        kind: one of :data:`LOSS_KINDS`.
        negatives, entail_diagonal, mixed: passed to :func:`monai_vecl.relations.relation_targets`.
    """

    def __init__(
        self,
        kind: str = "vecl",
        negatives: str = "closed_world",
        entail_diagonal: bool = True,
        mixed: str = "contradict",
    ):
        super().__init__()
        if kind not in LOSS_KINDS:
            raise ValueError(f"kind must be one of {LOSS_KINDS}, got {kind!r}")
        self.kind = kind
        self.target_options = {"negatives": negatives, "entail_diagonal": entail_diagonal, "mixed": mixed}

    def targets(self, image_mh: torch.Tensor, sentence_mh: torch.Tensor) -> torch.Tensor:
        """Relation targets [N, N, 3] for this loss's options."""
        return relation_targets(image_mh, sentence_mh, **self.target_options)

    def forward(
        self, i2t: torch.Tensor, t2i: torch.Tensor, image_mh: torch.Tensor, sentence_mh: torch.Tensor
    ) -> torch.Tensor:
        """Loss of one batch of N (image, sampled sentence) pairs; logits [N, N, 3] per direction."""
        n = image_mh.shape[0]
        expected = (n, n, 3)
        for name, logits in (("i2t", i2t), ("t2i", t2i)):
            if tuple(logits.shape) != expected:
                raise ValueError(f"{name} logits must have shape {expected} for a batch of {n} pairs, got {tuple(logits.shape)}")
        if sentence_mh.shape[0] != n:
            raise ValueError(f"{n} images but {sentence_mh.shape[0]} sentences: VECL pairs each image with one sentence")
        target = None if self.kind == "clip" else self.targets(image_mh, sentence_mh).to(i2t.device)
        return self.direction_loss(i2t.float(), target) + self.direction_loss(t2i.float(), target)

    def direction_loss(self, logits: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Loss of one direction's logits [N, N, 3] against relation targets [N, N, 3]."""
        entail = logits[..., ENTAIL]
        if self.kind == "clip":
            return 0.5 * diagonal_cross_entropy(entail)
        if self.kind == "bce":
            return F.binary_cross_entropy_with_logits(logits, target)
        if self.kind == "ce":
            return F.cross_entropy(logits.reshape(-1, 3), target.reshape(-1, 3).argmax(dim=1))
        if self.kind == "no_entailment":
            channels = (ENTAIL,)
        else:
            channels = range(3)
        loss = sum(soft_info_nce(logits[..., c], target[..., c]) for c in channels)
        if self.kind == "vecl_paper":
            return loss
        return _REFERENCE_SCALE * (loss + _DIAGONAL_WEIGHT * diagonal_cross_entropy(entail))
