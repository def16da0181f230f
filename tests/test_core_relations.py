"""Relation targets: hand-worked cases, and equality with the per-pair reference on random and real label sets."""

import random
from pathlib import Path

import pytest
import torch

from monai_vecl.reference_labels import read_label_files
from monai_vecl.relations import (
    CONTRADICT,
    ENTAIL,
    NEUTRAL,
    relation_targets,
    relation_targets_reference,
)
from monai_vecl.taxonomy import SIGNED_LABELS, image_label_set, multi_hot_batch

FIXTURE = Path(__file__).parent / "fixtures" / "core" / "reference_labels_sample.csv"


def relations(images, sentences, **kw):
    """Relation index per pair from label lists, without the diagonal unless asked."""
    kw.setdefault("entail_diagonal", False)
    t = relation_targets(multi_hot_batch(images), multi_hot_batch(sentences), **kw)
    assert torch.equal(t.sum(-1), torch.ones(t.shape[:2])), "targets must be one-hot"
    return t.argmax(-1).tolist()


def test_hand_worked_closed_world():
    images = [["2+", "3-"], ["2-"], []]
    sentences = [["2+"], ["3-"], ["2+", "3-"], ["2-"], ["25"], ["4-"], ["4+"]]
    expected = [
        # 2+      3-       2+,3-   2-           25       4-      4+
        [ENTAIL, ENTAIL, ENTAIL, CONTRADICT, NEUTRAL, ENTAIL, NEUTRAL],
        [CONTRADICT, ENTAIL, CONTRADICT, ENTAIL, NEUTRAL, ENTAIL, NEUTRAL],
        [NEUTRAL, ENTAIL, NEUTRAL, ENTAIL, NEUTRAL, ENTAIL, NEUTRAL],
    ]
    assert relations(images, sentences) == expected


def test_hand_worked_open_world_needs_explicit_negatives():
    images = [["2+", "3-"], ["2-"], []]
    sentences = [["3-"], ["4-"], ["2-"], ["2+", "3-"]]
    expected = [
        [ENTAIL, NEUTRAL, CONTRADICT, ENTAIL],
        [NEUTRAL, NEUTRAL, ENTAIL, CONTRADICT],
        [NEUTRAL, NEUTRAL, NEUTRAL, NEUTRAL],
    ]
    assert relations(images, sentences, negatives="open_world") == expected


def test_contradiction_wins_over_support_in_multi_label_sentence():
    # Sentence "no effusion, pneumothorax present": 3+ is supported but 2- conflicts with 2+.
    assert relations([["2+", "3+"]], [["2-", "3+"]]) == [[CONTRADICT]]
    # Image mentioning effusion both ways: contradiction wins for either sentence polarity by default ...
    assert relations([["2+", "2-"]], [["2+"], ["2-"]]) == [[CONTRADICT, CONTRADICT]]
    # ... while the reference code's order of checks lets support win for k+.
    assert relations([["2+", "2-"]], [["2+"], ["2-"]], mixed="reference") == [[ENTAIL, CONTRADICT]]
    assert relations([["2+", "2-"]], [["2+"], ["2-"]], mixed="reference", negatives="open_world") == [[ENTAIL, ENTAIL]]


def test_no_mention_is_neutral_even_against_own_image():
    assert relations([["25", "2+"]], [["25"]]) == [[NEUTRAL]]


def test_diagonal_forced_to_entail_and_rectangular_shapes():
    images = [["2+"], ["2-"], ["5+"]]
    sentences = [["2-"], ["25"]]
    t = relation_targets(multi_hot_batch(images), multi_hot_batch(sentences))
    assert t.shape == (3, 2, 3)
    assert t.argmax(-1).tolist() == [[ENTAIL, NEUTRAL], [ENTAIL, ENTAIL], [ENTAIL, NEUTRAL]]
    t_off = relation_targets(multi_hot_batch(images), multi_hot_batch(sentences), entail_diagonal=False)
    assert t_off.argmax(-1).tolist() == [[CONTRADICT, NEUTRAL], [ENTAIL, NEUTRAL], [ENTAIL, NEUTRAL]]


def test_bad_input_is_rejected():
    good = multi_hot_batch([["2+"]])
    with pytest.raises(ValueError, match="shape"):
        relation_targets(torch.zeros(1, 48), good)
    with pytest.raises(ValueError, match="0/1"):
        relation_targets(good * 2, good)
    with pytest.raises(ValueError, match="no label"):
        relation_targets(good, torch.zeros(1, 49))
    with pytest.raises(ValueError, match="negatives"):
        relation_targets(good, good, negatives="sometimes")


def _random_label_set(rng: random.Random) -> list[str]:
    if rng.random() < 0.15:
        return ["25"]
    codes = rng.sample(range(1, 25), rng.randint(1, 4))
    return [f"{c}{rng.choice('+-')}" for c in codes]


@pytest.mark.parametrize("negatives", ["closed_world", "open_world"])
@pytest.mark.parametrize("mixed", ["contradict", "reference"])
@pytest.mark.parametrize("entail_diagonal", [True, False])
def test_matches_per_pair_reference_on_random_sets(negatives, mixed, entail_diagonal):
    rng = random.Random(f"{negatives}-{mixed}-{entail_diagonal}")
    # Image sets are unions of sentence sets, so both signs of a finding occur.
    images = [sorted({x for _ in range(rng.randint(0, 4)) for x in _random_label_set(rng)}) for _ in range(23)]
    sentences = [_random_label_set(rng) for _ in range(17)]
    opts = {"negatives": negatives, "mixed": mixed, "entail_diagonal": entail_diagonal}
    fast = relation_targets(multi_hot_batch(images), multi_hot_batch(sentences), **opts)
    slow = relation_targets_reference(images, sentences, **opts)
    assert torch.equal(fast, slow)
    # The random sets must exercise every relation, or the comparison proves little.
    assert set(fast.argmax(-1).flatten().tolist()) == {ENTAIL, NEUTRAL, CONTRADICT}


@pytest.mark.parametrize("negatives", ["closed_world", "open_world"])
@pytest.mark.parametrize("mixed", ["contradict", "reference"])
def test_matches_per_pair_reference_on_real_rows(negatives, mixed):
    table = read_label_files([FIXTURE], errors="keep")
    rows = [[labels for labels in row if labels is not None] for row in table.rows]
    rows = [row for row in rows if row]
    rng = random.Random(1)
    images = [image_label_set(row) for row in rows]
    sentences = [rng.choice(row) for row in rows]
    opts = {"negatives": negatives, "mixed": mixed}
    fast = relation_targets(multi_hot_batch(images), multi_hot_batch(sentences), **opts)
    assert torch.equal(fast, relation_targets_reference(images, sentences, **opts))
    counts = torch.bincount(fast.argmax(-1).flatten(), minlength=3)
    assert (counts > 0).all()


def test_all_signed_labels_round_trip_through_multi_hot():
    # Each single-label sentence against an image holding that label entails (k+, k-) or is neutral (25).
    images = [[label] for label in SIGNED_LABELS]
    got = relations(images, images)
    for i, label in enumerate(SIGNED_LABELS):
        assert got[i][i] == (NEUTRAL if label == "25" else ENTAIL)
