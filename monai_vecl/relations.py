"""Visual-entailment relation targets between images and report sentences (docs/method.md §Relation targets).

For every (image i, sentence j) pair the target is one-hot over three channels:
0 = entail, 1 = neutral, 2 = contradict. Image i carries the union of the signed labels
of its report; sentence j its own signed labels. The rules follow the VECL paper and its
reference code (WVeLong/VECL, MIT):

* a sentence labelled ``25`` (No Mention) is neutral to every image;
* ``k+`` in the sentence with ``k-`` in the image, or ``k-`` with ``k+``, contradicts;
* otherwise the pair entails when every sentence label is supported, else it is neutral.
  ``k+`` is supported by ``k+`` in the image. ``k-`` is supported by ``k-`` (``open_world``,
  the paper) or whenever ``k+`` is absent (``closed_world``, the reference code that
  produced the released weights: an unmentioned finding counts as absent).
* optionally the leading diagonal (an image with its own sentence) is forced to entail.

Images whose report mentions a finding both ways (``k+`` and ``k-`` in different sentences;
47% of the MIMIC-CXR reference label rows) need a precedence rule. ``mixed="contradict"``
(default, docs/method.md §Relation targets) lets contradiction win in both directions. ``mixed="reference"``
reproduces the reference code's order of checks: support is tested first, so a ``k+`` sentence
entails such an image while (closed world) a ``k-`` sentence contradicts it.

Everything is built with matrix products over the 49-way multi-hot encoding, so it costs a
few small GEMMs per step instead of a Python loop over N×M pairs.
"""

from __future__ import annotations

import torch

from monai_vecl.taxonomy import NO_MENTION_INDEX, NUM_FINDINGS, NUM_SIGNED

ENTAIL, NEUTRAL, CONTRADICT = 0, 1, 2
NEGATIVE_SEMANTICS = ("closed_world", "open_world")
MIXED_RULES = ("contradict", "reference")

_POS = slice(0, NUM_FINDINGS)
_NEG = slice(NUM_FINDINGS, 2 * NUM_FINDINGS)


def _check_multi_hot(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.ndim != 2 or x.shape[1] != NUM_SIGNED:
        raise ValueError(f"{name} must have shape [n, {NUM_SIGNED}], got {tuple(x.shape)}")
    if not bool(((x == 0) | (x == 1)).all()):
        raise ValueError(f"{name} must be a 0/1 multi-hot tensor")
    return x.float()


def relation_targets(
    image_mh: torch.Tensor,
    sentence_mh: torch.Tensor,
    *,
    negatives: str = "closed_world",
    entail_diagonal: bool = True,
    mixed: str = "contradict",
    sentences_per_image: int = 1,
) -> torch.Tensor:
    """One-hot relation targets of shape [N_img, N_sent, 3] (entail, neutral, contradict).

    Args:
        image_mh: [N, 49] multi-hot of each image's signed labels (may be all zero: nothing known).
        sentence_mh: [M, 49] multi-hot of each sentence's signed labels (at least one label each).
        negatives: ``"closed_world"`` (reference code, default) or ``"open_world"`` (paper).
        entail_diagonal: force every image and its own sampled sentence to entail, as the reference
            code does: pairs (i, i) for i < min(N, M) with one sentence per image.
        sentences_per_image: k sentences drawn per image, image-major (sentence j belongs to image
            j // k); with ``entail_diagonal`` the pairs (j // k, j) are forced to entail.
        mixed: precedence when the image holds both ``k+`` and ``k-`` (see the module docstring).
    """
    _check_options(negatives, mixed)
    img = _check_multi_hot(image_mh, "image_mh")
    sent = _check_multi_hot(sentence_mh, "sentence_mh")
    empty = (sent.sum(dim=1) == 0).nonzero().flatten()
    if len(empty):
        raise ValueError(f"sentences {empty.tolist()} have no label (use '25' for No Mention)")

    img_pos, img_neg = img[:, _POS], img[:, _NEG]
    sent_pos, sent_neg = sent[:, _POS], sent[:, _NEG]
    # Counts of conflicting findings per pair: [N, M]. Under the reference order a label the image
    # also supports with the same sign is never a conflict (closed-world k- has no such support).
    if mixed == "reference":
        conflicts = (img_neg * (1 - img_pos)) @ sent_pos.T
        conflicts = conflicts + (img_pos * (1 - img_neg) if negatives == "open_world" else img_pos) @ sent_neg.T
    else:
        conflicts = img_neg @ sent_pos.T + img_pos @ sent_neg.T
    # Counts of sentence labels the image does not support.
    unsupported = (1 - img_pos) @ sent_pos.T
    if negatives == "open_world":
        unsupported = unsupported + (1 - img_neg) @ sent_neg.T
    # Closed world: a k- label is unsupported only when k+ is present, which is already a conflict.
    no_mention = (sent[:, NO_MENTION_INDEX] > 0)[None, :]

    contradict = (conflicts > 0) & ~no_mention
    entail = (unsupported == 0) & ~contradict & ~no_mention
    if entail_diagonal:
        cols = torch.arange(min(img.shape[0] * sentences_per_image, sent.shape[0]), device=img.device)
        rows = cols // sentences_per_image
        entail[rows, cols] = True
        contradict[rows, cols] = False
    neutral = ~(entail | contradict)
    return torch.stack([entail, neutral, contradict], dim=-1).float()


def relation_targets_reference(
    image_labels: list[set[str]] | list[tuple[str, ...]],
    sentence_labels: list[set[str]] | list[tuple[str, ...]],
    *,
    negatives: str = "closed_world",
    entail_diagonal: bool = True,
    mixed: str = "contradict",
) -> torch.Tensor:
    """Plain per-pair implementation of the same rules, for tests and benchmarks only (O(N·M·labels) in Python)."""
    _check_options(negatives, mixed)
    out = torch.zeros(len(image_labels), len(sentence_labels), 3)
    for i, image in enumerate(image_labels):
        image = set(image)
        for j, sentence in enumerate(sentence_labels):
            out[i, j, _relation(image, set(sentence), negatives, mixed)] = 1.0
    if entail_diagonal:
        for i in range(min(len(image_labels), len(sentence_labels))):
            out[i, i] = torch.tensor([1.0, 0.0, 0.0])
    return out


def _check_options(negatives: str, mixed: str) -> None:
    if negatives not in NEGATIVE_SEMANTICS:
        raise ValueError(f"negatives must be one of {NEGATIVE_SEMANTICS}, got {negatives!r}")
    if mixed not in MIXED_RULES:
        raise ValueError(f"mixed must be one of {MIXED_RULES}, got {mixed!r}")


def _relation(image: set[str], sentence: set[str], negatives: str, mixed: str) -> int:
    if not sentence:
        raise ValueError("a sentence needs at least one label")
    if "25" in sentence:
        return NEUTRAL
    supported = True
    contradicted = False
    for label in sentence:
        code, sign = label[:-1], label[-1]
        if sign == "+":
            label_supported = f"{code}+" in image
        elif negatives == "open_world":
            label_supported = f"{code}-" in image
        else:
            label_supported = f"{code}+" not in image
        conflict = f"{code}-" in image if sign == "+" else f"{code}+" in image
        if mixed == "reference" and label_supported:
            conflict = False
        contradicted |= conflict
        supported &= label_supported
    if contradicted:
        return CONTRADICT
    return ENTAIL if supported else NEUTRAL
