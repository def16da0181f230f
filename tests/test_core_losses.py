"""VECL losses against small hand computations and simple references; edge cases; permutation invariance."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from monai_vecl.losses import LOSS_KINDS, VECLLoss, soft_cross_entropy
from monai_vecl.relations import relation_targets_reference
from monai_vecl.taxonomy import multi_hot_batch


def test_soft_cross_entropy_by_hand():
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0], [3.0, 1.0, 0.0]])
    target = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    lse0 = math.log(math.e + 1 + math.exp(-1))
    lse2 = math.log(math.exp(3) + math.e + 1)
    row0 = -0.5 * ((1 - lse0) + (0 - lse0))
    row2 = -(0 - lse2)
    # The empty row 1 is left out of the mean.
    assert soft_cross_entropy(logits, target).item() == pytest.approx((row0 + row2) / 2, rel=1e-6)


def _reference_direction(logits, target):
    """Loop form of the reference composition for one direction."""
    n = logits.shape[0]
    total = 0.0
    for c in range(3):
        per_axis = []
        for lg, tg in ((logits[..., c], target[..., c]), (logits[..., c].T, target[..., c].T)):
            rows = []
            for i in range(n):
                mass = float(tg[i].sum())
                if mass == 0:
                    continue
                logp = lg[i] - torch.logsumexp(lg[i], 0)
                rows.append(-float((tg[i] / mass * logp).sum()))
            per_axis.append(sum(rows) / len(rows) if rows else 0.0)
        total += sum(per_axis) / 2
    diag = 0.0
    for lg in (logits[..., 0], logits[..., 0].T):
        diag += sum(-float(lg[i, i] - torch.logsumexp(lg[i], 0)) for i in range(n)) / n
    return 0.25 * (total + 1.5 * diag)


def _batch(n, seed=0):
    """n (image labels, sentence labels) pairs: each image holds its sentence's labels plus one more."""
    rng = random.Random(seed)
    images, sentences = [], []
    for _ in range(n):
        if rng.random() < 0.2:
            sentence = ["25"]
        else:
            sentence = [f"{c}{rng.choice('+-')}" for c in rng.sample(range(1, 8), rng.randint(1, 2))]
        sentences.append(sentence)
        images.append(sorted(set(sentence) | {f"{rng.randint(8, 12)}{rng.choice('+-')}"}))
    return images, sentences


def test_vecl_matches_loop_reference():
    torch.manual_seed(0)
    images, sentences = _batch(6)
    i2t, t2i = torch.randn(6, 6, 3), torch.randn(6, 6, 3)
    target = relation_targets_reference(images, sentences)
    # The batch must hold every relation, and channels with empty rows, to test the masking.
    assert (target.sum((0, 1)) > 0).all() and (target.sum(1) == 0).any()
    expected = _reference_direction(i2t, target) + _reference_direction(t2i, target)
    got = VECLLoss("vecl")(i2t, t2i, multi_hot_batch(images), multi_hot_batch(sentences))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_paper_form_is_vecl_without_diagonal_term_and_scale():
    torch.manual_seed(1)
    images, sentences = _batch(5, seed=1)
    i2t, t2i = torch.randn(5, 5, 3), torch.randn(5, 5, 3)
    img, sent = multi_hot_batch(images), multi_hot_batch(sentences)
    diag = sum(
        F.cross_entropy(x[..., 0], torch.arange(5)) + F.cross_entropy(x[..., 0].T, torch.arange(5)) for x in (i2t, t2i)
    )
    vecl = VECLLoss("vecl")(i2t, t2i, img, sent)
    paper = VECLLoss("vecl_paper")(i2t, t2i, img, sent)
    assert vecl.item() == pytest.approx(0.25 * (paper.item() + 1.5 * diag.item()), rel=1e-5)


def test_bce_ce_clip_by_simple_references():
    torch.manual_seed(2)
    images, sentences = _batch(4, seed=2)
    i2t, t2i = torch.randn(4, 4, 3), torch.randn(4, 4, 3)
    img, sent = multi_hot_batch(images), multi_hot_batch(sentences)
    target = relation_targets_reference(images, sentences)
    bce = sum(F.binary_cross_entropy(torch.sigmoid(x), target) for x in (i2t, t2i))
    ce = sum(-(F.log_softmax(x, -1) * target).sum(-1).mean() for x in (i2t, t2i))
    labels = torch.arange(4)
    clip = sum(0.5 * (F.cross_entropy(x[..., 0], labels) + F.cross_entropy(x[..., 0].T, labels)) for x in (i2t, t2i))
    assert VECLLoss("bce")(i2t, t2i, img, sent).item() == pytest.approx(bce.item(), rel=1e-5)
    assert VECLLoss("ce")(i2t, t2i, img, sent).item() == pytest.approx(ce.item(), rel=1e-5)
    assert VECLLoss("clip")(i2t, t2i, img, sent).item() == pytest.approx(clip.item(), rel=1e-5)


def test_no_entailment_uses_only_the_entail_channel():
    torch.manual_seed(3)
    images, sentences = _batch(5, seed=3)
    img, sent = multi_hot_batch(images), multi_hot_batch(sentences)
    i2t, t2i = torch.randn(5, 5, 3), torch.randn(5, 5, 3)
    base = VECLLoss("no_entailment")(i2t, t2i, img, sent)
    i2t_b, t2i_b = i2t.clone(), t2i.clone()
    i2t_b[..., 1:] = torch.randn(5, 5, 2) * 10
    assert VECLLoss("no_entailment")(i2t_b, t2i_b, img, sent).item() == pytest.approx(base.item(), rel=1e-6)
    assert VECLLoss("vecl")(i2t_b, t2i_b, img, sent).item() != pytest.approx(VECLLoss("vecl")(i2t, t2i, img, sent).item())


@pytest.mark.parametrize("kind", LOSS_KINDS)
@pytest.mark.parametrize("case", ["all_neutral", "batch_of_one", "all_neutral_no_diagonal"])
def test_finite_loss_and_gradients_on_edge_cases(kind, case):
    n = 1 if case == "batch_of_one" else 4
    sentences = [["25"]] * n if case != "batch_of_one" else [["2+"]]
    images = [["25"]] * n if case != "batch_of_one" else [["2+"]]
    loss_fn = VECLLoss(kind, entail_diagonal=case != "all_neutral_no_diagonal")
    i2t = torch.randn(n, n, 3, requires_grad=True)
    t2i = torch.randn(n, n, 3, requires_grad=True)
    loss = loss_fn(i2t, t2i, multi_hot_batch(images), multi_hot_batch(sentences))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(i2t.grad).all() and torch.isfinite(t2i.grad).all()


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_invariant_to_joint_permutation(kind):
    torch.manual_seed(4)
    images, sentences = _batch(7, seed=4)
    img, sent = multi_hot_batch(images), multi_hot_batch(sentences)
    i2t, t2i = torch.randn(7, 7, 3), torch.randn(7, 7, 3)
    perm = torch.randperm(7)
    loss_fn = VECLLoss(kind)
    a = loss_fn(i2t, t2i, img, sent)
    b = loss_fn(i2t[perm][:, perm], t2i[perm][:, perm], img[perm], sent[perm])
    assert a.item() == pytest.approx(b.item(), rel=1e-5)
    # Permuting only the sentences breaks the pairing and must change the loss.
    c = loss_fn(i2t, t2i, img, sent[perm.roll(1)])
    if kind != "clip":
        assert c.item() != pytest.approx(a.item(), rel=1e-6)


def test_shape_errors():
    loss_fn = VECLLoss()
    img = multi_hot_batch([["2+"], ["3-"]])
    with pytest.raises(ValueError, match="shape"):
        loss_fn(torch.zeros(2, 3, 3), torch.zeros(2, 2, 3), img, img)
    with pytest.raises(ValueError, match="kind"):
        VECLLoss("triplet")


def test_options_are_checked_when_the_loss_is_built():
    assert VECLLoss("clip", "open_world", False, "reference", 4).target_options["entail_diagonal"] is False
    # --entail_diagonal false on the command line arrives as the truthy string false.
    with pytest.raises(TypeError, match=r"VECLLoss.entail_diagonal must be bool, got .false. of type str"):
        VECLLoss(entail_diagonal="false")
    with pytest.raises(TypeError, match=r"VECLLoss.sentences_per_image must be int, got .4. of type str"):
        VECLLoss(sentences_per_image="4")
    with pytest.raises(TypeError, match=r"VECLLoss.sentences_per_image must be int, got True"):
        VECLLoss(sentences_per_image=True)
    with pytest.raises(ValueError, match=r"VECLLoss.sentences_per_image must be >= 1, got 0"):
        VECLLoss(sentences_per_image=0)
    with pytest.raises(ValueError, match=r"VECLLoss.kind must be one of \[.vecl., .vecl_paper."):
        VECLLoss("triplet")
    with pytest.raises(ValueError, match=r"VECLLoss.negatives must be one of \[.closed_world., .open_world.\], got"):
        VECLLoss(negatives="open")
    with pytest.raises(ValueError, match=r"VECLLoss.mixed must be one of \[.contradict., .reference.\]"):
        VECLLoss(mixed="both")
    with pytest.raises(TypeError, match="unexpected keyword argument .negative."):
        VECLLoss(negative="open_world")
