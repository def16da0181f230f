"""Zero-shot POS/PNC scoring against a brute-force per-pair computation (docs/method.md §Scoring)."""

from __future__ import annotations

import pytest
import torch

from monai_vecl.inference.zero_shot import ZeroShotClassifier
from monai_vecl.networks import build_vecl


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_vecl("small", image_size=64, load_size=72)


def _brute_force_entail(model, images, texts):
    """p_e for every pair, one full forward per (image, text) pair."""
    model.eval()
    out = torch.zeros(len(images), len(texts))
    with torch.no_grad():
        for j, text in enumerate(texts):
            tok = model.tokenize([text])
            for i in range(len(images)):
                logits = model(images[i : i + 1], tok["input_ids"], tok["attention_mask"]).logits
                out[i, j] = torch.softmax(logits.float(), -1)[0, 0, 0]
    return out


def test_pos_and_pnc_match_per_pair_definition(model):
    classes = ["Pleural Effusion", "Pneumothorax", "Cardiomegaly"]
    images = torch.randn(3, 3, model.image_size, model.image_size)
    clf = ZeroShotClassifier(model, classes, chunk_size=2)
    p_pos = _brute_force_entail(model, images, [f"There is {c}" for c in classes])
    p_neg = _brute_force_entail(model, images, [f"There is no {c}" for c in classes])
    torch.testing.assert_close(clf.scores(images, mode="pos"), p_pos, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(clf.scores(images, mode="pnc"), p_pos / (p_pos + p_neg), atol=1e-5, rtol=1e-4)


def test_chunking_does_not_change_scores_and_prompts_are_encoded_once(model, monkeypatch):
    classes = ["Atelectasis", "Edema", "Hernia", "Fibrosis", "Lung Nodule"]
    images = torch.randn(5, 3, model.image_size, model.image_size)
    reference = ZeroShotClassifier(model, classes, chunk_size=64).scores(images)
    calls = []
    original = model.encode_texts
    monkeypatch.setattr(model, "encode_texts", lambda *a, **k: calls.append(1) or original(*a, **k))
    clf = ZeroShotClassifier(model, classes, chunk_size=2)
    first = clf.scores(images)
    n_calls = len(calls)
    second = clf.scores(images[:3], mode="pos")
    assert n_calls == 6  # 5 positive + 5 negative prompts in chunks of 2 -> 3 + 3 calls
    assert len(calls) == n_calls  # the second call reused the cached prompt features
    torch.testing.assert_close(first, reference, atol=1e-5, rtol=1e-4)
    assert first.shape == (5, 5) and ((first >= 0) & (first <= 1)).all()
    assert second.shape == (3, 5)


def test_scoring_restores_training_mode_and_rejects_bad_input(model):
    model.train()
    clf = ZeroShotClassifier(model, ["Pneumonia"])
    clf.scores(torch.randn(1, 3, model.image_size, model.image_size))
    assert model.training
    with pytest.raises(ValueError, match="mode"):
        clf.scores(torch.randn(1, 3, model.image_size, model.image_size), mode="neg")
    with pytest.raises(ValueError, match=r"\[N, 3, S, S\]"):
        clf.scores(torch.randn(3, model.image_size, model.image_size))
    with pytest.raises(ValueError, match="template"):
        ZeroShotClassifier(model, ["A"], pos_template="There is")
    with pytest.raises(ValueError, match="duplicate"):
        ZeroShotClassifier(model, ["A", "A"])
    assert clf.scores(torch.zeros(0, 3, model.image_size, model.image_size)).shape == (0, 1)


def test_inferer_encodes_prompts_once_per_state_of_the_weights(monkeypatch):
    from monai_vecl.inference.engine import ZeroShotInferer
    from monai_vecl.networks import build_vecl

    torch.manual_seed(0)
    network = build_vecl("small", image_size=64, load_size=72).eval()
    images = torch.rand(2, 3, 64, 64)
    inferer = ZeroShotInferer(["Edema", "Cardiomegaly"])
    calls = []
    encode = network.encode_texts
    monkeypatch.setattr(network, "encode_texts", lambda *a: calls.append(1) or encode(*a))
    first = inferer(images, network)
    assert torch.equal(inferer(images, network), first) and len(calls) == 2  # pos + neg prompts, once
    with torch.no_grad():
        network.text_proj.weight.mul_(1.5)  # an in-place update, as an optimiser step makes
    changed = inferer(images, network)
    assert len(calls) == 4 and not torch.equal(changed, first)  # encoded again for the new weights
