"""Retrieval-based report generation: retrieval against brute force, text metrics against hand-worked values."""

from __future__ import annotations

import pytest
import torch

from monai_vecl.evaluation.retrieval import report_generation_scores, retrieve, tokenize_report
from monai_vecl.networks import build_vecl


def test_bleu_rouge_hand_worked():
    generated = ["The heart is normal.", "There is a small effusion"]
    references = ["the heart is normal", "No pneumothorax is seen."]
    scores = report_generation_scores(generated, references)
    # corpus BLEU-1: clipped unigram matches 4 + 1 ("is") over 9 hypothesis words, no brevity penalty (9 > 8)
    assert scores["bleu1"] == pytest.approx(5 / 9, rel=1e-6)
    # ROUGE-L (beta 1.2): image 1 is a perfect match; image 2 has LCS 1 over lengths 5 and 4
    p, r, beta = 1 / 5, 1 / 4, 1.2
    second = (1 + beta**2) * p * r / (r + beta**2 * p)
    assert scores["rouge_l"] == pytest.approx((1 + second) / 2, rel=1e-6)
    same = report_generation_scores(references, references)
    assert same["bleu1"] == pytest.approx(1.0) and same["rouge_l"] == pytest.approx(1.0)
    assert same["cider"] > scores["cider"]


def test_text_metric_input_errors():
    assert tokenize_report("No pleural effusion, NO pneumothorax.") == "no pleural effusion no pneumothorax"
    with pytest.raises(ValueError, match="references"):
        report_generation_scores(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        report_generation_scores(["a", "b"], ["a", "..."])


def test_retrieve_picks_the_most_entailed_candidate():
    torch.manual_seed(0)
    model = build_vecl("small", image_size=64, load_size=72).eval()
    images = torch.randn(5, 3, 64, 64)
    candidates = ["There is a small left pleural effusion.", "No pneumothorax.", "Heart size is normal.", "Mild edema."]
    idx, best = retrieve(model, images, candidates, chunk_size=2)
    tok = model.tokenize(candidates)
    with torch.no_grad():
        probs = torch.softmax(model(images, tok["input_ids"], tok["attention_mask"]).logits, -1)[..., 0]
    torch.testing.assert_close(best, probs.max(1).values, atol=1e-5, rtol=1e-4)
    assert torch.equal(idx, probs.argmax(1))
    with pytest.raises(ValueError, match="candidate"):
        retrieve(model, images, [])
