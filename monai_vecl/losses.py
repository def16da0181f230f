"""VECL training losses: the 3D InfoNCE and the ablations of the VECL paper (Table 3) (docs/method.md §Loss).

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

from monai_vecl.config import check_arguments, check_choice, check_min
from monai_vecl.relations import CONTRADICT, ENTAIL, MIXED_RULES, NEGATIVE_SEMANTICS, NEUTRAL, relation_targets

LOSS_KINDS = ("vecl", "vecl_paper", "no_entailment", "bce", "ce", "clip")
_DIAGONAL_WEIGHT = 1.5  # reference code
_REFERENCE_SCALE = 0.25  # reference code
CHANNEL_NAMES = {ENTAIL: "entail", NEUTRAL: "neutral", CONTRADICT: "contradict"}


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


def diagonal_cross_entropy(logits: torch.Tensor, sentences_per_image: int = 1) -> torch.Tensor:
    """Cross-entropy with each image's own sentences as the target, summed over both axes.

    ``logits`` is [N, k·N] with sentence j drawn from image j // k. With k = 1 both axes are hard
    cross-entropy on the diagonal (the reference term); with k > 1 an image's target is spread
    evenly over its k sentences, and each sentence still has exactly one own image.
    """
    n, m = logits.shape
    owner = torch.arange(m, device=logits.device) // sentences_per_image
    if sentences_per_image == 1:
        return F.cross_entropy(logits, owner) + F.cross_entropy(logits.T, owner)
    own = (owner[None, :] == torch.arange(n, device=logits.device)[:, None]).float()
    return soft_cross_entropy(logits, own) + F.cross_entropy(logits.T, owner)


class VECLLoss(nn.Module):
    """VECL loss and its ablations; ``loss_fn(i2t, t2i, image_mh, sentence_mh) -> scalar``.

    Args:
        kind: one of :data:`LOSS_KINDS`.
        negatives, entail_diagonal, mixed, sentences_per_image: passed to
            :func:`monai_vecl.relations.relation_targets`.

    Arguments are checked when the loss is built (types by annotation, choices, k >= 1), so a bundle override
    such as ``--entail_diagonal false`` (the string ``'false'``) fails naming the key instead of training on.
    """

    def __init__(
        self,
        kind: str = "vecl",
        negatives: str = "closed_world",
        entail_diagonal: bool = True,
        mixed: str = "contradict",
        sentences_per_image: int = 1,
    ):
        check_arguments(VECLLoss.__init__, locals())
        super().__init__()
        check_choice("VECLLoss.kind", kind, LOSS_KINDS)
        check_choice("VECLLoss.negatives", negatives, NEGATIVE_SEMANTICS)
        check_choice("VECLLoss.mixed", mixed, MIXED_RULES)
        check_min("VECLLoss.sentences_per_image", sentences_per_image, 1)
        self.kind = kind
        self.sentences_per_image = sentences_per_image
        self.target_options = {"negatives": negatives, "entail_diagonal": entail_diagonal, "mixed": mixed,
                               "sentences_per_image": sentences_per_image}

    def targets(self, image_mh: torch.Tensor, sentence_mh: torch.Tensor) -> torch.Tensor:
        """Relation targets [N, N, 3] for this loss's options."""
        return relation_targets(image_mh, sentence_mh, **self.target_options)

    def forward(
        self, i2t: torch.Tensor, t2i: torch.Tensor, image_mh: torch.Tensor, sentence_mh: torch.Tensor
    ) -> torch.Tensor:
        """Loss of a batch of N images with k sampled sentences each; logits [N, k·N, 3] per direction."""
        return sum(self.terms(i2t, t2i, image_mh, sentence_mh).values())

    def terms(
        self, i2t: torch.Tensor, t2i: torch.Tensor, image_mh: torch.Tensor, sentence_mh: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The loss as named, already weighted terms (``i2t/entail``, ``t2i/diagonal``, ...) that sum to it.

        Training logs them, and the diagnostics bench sets each against its floor (:func:`loss_floors`).
        """
        n, k = image_mh.shape[0], self.sentences_per_image
        expected = (n, k * n, 3)
        for name, logits in (("i2t", i2t), ("t2i", t2i)):
            if tuple(logits.shape) != expected:
                raise ValueError(f"{name} logits must have shape {expected} for {n} images with {k} sentence(s) "
                                 f"each, got {tuple(logits.shape)}")
        if sentence_mh.shape[0] != k * n:
            raise ValueError(f"{n} images but {sentence_mh.shape[0]} sentences: VECL pairs each image with {k} "
                             "sentence(s) of its own report")
        target = None if self.kind == "clip" else self.targets(image_mh, sentence_mh).to(i2t.device)
        out: dict[str, torch.Tensor] = {}
        for direction, logits in (("i2t", i2t.float()), ("t2i", t2i.float())):
            for name, value in self.direction_terms(logits, target).items():
                out[f"{direction}/{name}"] = value
        return out

    def direction_terms(self, logits: torch.Tensor, target: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Weighted terms of one direction's logits [N, N, 3] against relation targets [N, N, 3]."""
        entail = logits[..., ENTAIL]
        if self.kind == "clip":
            return {"diagonal": 0.5 * diagonal_cross_entropy(entail, self.sentences_per_image)}
        if self.kind == "bce":
            return {"bce": F.binary_cross_entropy_with_logits(logits, target)}
        if self.kind == "ce":
            return {"ce": F.cross_entropy(logits.reshape(-1, 3), target.reshape(-1, 3).argmax(dim=1))}
        channels = (ENTAIL,) if self.kind == "no_entailment" else range(3)
        scale = 1.0 if self.kind == "vecl_paper" else _REFERENCE_SCALE
        terms = {CHANNEL_NAMES[c]: scale * soft_info_nce(logits[..., c], target[..., c]) for c in channels}
        if self.kind != "vecl_paper":
            terms["diagonal"] = scale * _DIAGONAL_WEIGHT * diagonal_cross_entropy(entail, self.sentences_per_image)
        return terms


def soft_cross_entropy_floor(target: torch.Tensor) -> torch.Tensor:
    """Smallest value :func:`soft_cross_entropy` can take for ``target``: the mean entropy of its normalised rows."""
    mass = target.sum(dim=1, keepdim=True)
    valid = mass.squeeze(1) > 0
    if not bool(valid.any()):
        return target.new_zeros(())
    p = target[valid] / mass[valid]
    return -(p * torch.log(p.clamp_min(1e-30))).sum(dim=1).mean()


def loss_floors(loss: VECLLoss, image_mh: torch.Tensor, sentence_mh: torch.Tensor) -> dict[str, float]:
    """Floor of every soft-InfoNCE term of ``loss.terms`` (same names and weights), from the targets alone.

    A soft InfoNCE term cannot go below the entropy of its normalised targets, so "term - floor" is
    what is left to learn. The hard diagonal terms (and ``clip``, ``bce``, ``ce``) have floor 0 here,
    although batches with repeated sentences keep them above it.
    """
    if loss.kind in ("clip", "bce", "ce"):
        return {}
    target = loss.targets(image_mh, sentence_mh)
    channels = (ENTAIL,) if loss.kind == "no_entailment" else range(3)
    scale = 1.0 if loss.kind == "vecl_paper" else _REFERENCE_SCALE
    floors = {}
    for c in channels:
        t = target[..., c]
        value = scale * 0.5 * (soft_cross_entropy_floor(t) + soft_cross_entropy_floor(t.T))
        for direction in ("i2t", "t2i"):
            floors[f"{direction}/{CHANNEL_NAMES[c]}"] = float(value)
    return floors
