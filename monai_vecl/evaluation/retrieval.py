"""Retrieval-based report generation (docs/method.md §Retrieval): each test image gets the candidate report it
entails most, scored with BLEU-1/2, ROUGE-L and CIDEr against its own report.

Text metrics are the COCO caption implementations from ``pycocoevalcap`` (BLEU corpus-level,
ROUGE-L and CIDEr-D averaged over images). Their Java PTB tokenizer is replaced by a lower-case
word tokenizer so no JVM is needed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from monai_vecl.inference.zero_shot import encode_texts_chunked, entail_probs, eval_mode, model_device

_WORD = re.compile(r"[a-z0-9]+")


def tokenize_report(text: str) -> str:
    """Lower-case words joined by single spaces (punctuation dropped, as the PTB tokenizer setup does)."""
    return " ".join(_WORD.findall(text.lower()))


@torch.no_grad()
def retrieve(
    model: torch.nn.Module, images: torch.Tensor, candidates: Sequence[str], chunk_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of the best candidate, its entail probability) for every image; both [N].

    Costs one fusion per (image, candidate) pair: pass deduplicated candidates.
    """
    if not candidates:
        raise ValueError("no candidate reports to retrieve from")
    device = model_device(model)
    best_idx, best_p = [], []
    with eval_mode(model):
        text_chunks = encode_texts_chunked(model, candidates, chunk_size)
        for start in range(0, images.shape[0], chunk_size):
            feats = model.encode_images(images[start : start + chunk_size].to(device))
            p, idx = entail_probs(model, feats, text_chunks).max(dim=1)
            best_idx.append(idx.cpu())
            best_p.append(p.cpu())
    if not best_idx:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    return torch.cat(best_idx), torch.cat(best_p)


def report_generation_scores(generated: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """BLEU-1, BLEU-2, ROUGE-L and CIDEr of ``generated[i]`` against ``references[i]``."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated reports but {len(references)} references")
    gen = {i: [tokenize_report(t)] for i, t in enumerate(generated)}
    ref = {i: [tokenize_report(t)] for i, t in enumerate(references)}
    empty = [i for i, r in ref.items() if not r[0]]
    if not gen or empty:
        raise ValueError(f"need non-empty references; {len(empty)} of {len(ref)} are empty (e.g. index {empty[:5]})")
    bleu, _ = Bleu(2).compute_score(ref, gen, verbose=0)
    rouge, _ = Rouge().compute_score(ref, gen)
    cider, _ = Cider().compute_score(ref, gen)
    return {"bleu1": float(bleu[0]), "bleu2": float(bleu[1]), "rouge_l": float(rouge), "cider": float(cider)}
