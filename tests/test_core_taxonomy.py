"""Taxonomy: signed labels, multi-hot order, the reference cell format and the zero-shot class lists."""

import pytest
import torch

from monai_vecl.taxonomy import (
    FINDINGS,
    SIGNED_LABELS,
    ZERO_SHOT_CLASSES,
    finding_code,
    format_cell,
    image_label_set,
    multi_hot,
    multi_hot_batch,
    normalize_label_set,
    opposite,
    parse_cell,
)


def test_signed_labels_and_opposites():
    assert len(FINDINGS) == 24 and len(SIGNED_LABELS) == 49 and SIGNED_LABELS[-1] == "25"
    assert opposite("2+") == "2-" and opposite("17-") == "17+" and opposite("25") == "25"
    assert all(opposite(opposite(x)) == x for x in SIGNED_LABELS)


@pytest.mark.parametrize(
    "cell, expected",
    [("9+", ("9+",)), ("25", ("25",)), ('"15-,  2-,  3-"', ("2-", "3-", "15-")), ("20+, 16+", ("16+", "20+")), ("0", None)],
)
def test_parse_cell(cell, expected):
    assert parse_cell(cell) == expected


@pytest.mark.parametrize("cell", ["None+", "26", "9", "2+,  2-", "25,  3-", "", "3+,", "0+"])
def test_parse_cell_rejects_malformed(cell):
    with pytest.raises(ValueError):
        parse_cell(cell)


def test_format_cell_round_trip():
    for labels in [("9+",), ("2-", "3-", "15-"), ("25",)]:
        assert parse_cell(format_cell(labels)) == labels
    assert format_cell(["15-", "2-"]) == "2-,  15-"


def test_multi_hot_positions_and_batch():
    v = multi_hot(["1+", "24-", "25"])
    assert v.shape == (49,) and v.sum() == 3
    assert v[0] == 1 and v[SIGNED_LABELS.index("24-")] == 1 and v[48] == 1
    batch = multi_hot_batch([["2+"], ["3-", "4-"]])
    assert torch.equal(batch.sum(1), torch.tensor([1.0, 2.0]))
    assert multi_hot_batch([]).shape == (0, 49)
    with pytest.raises(ValueError):
        multi_hot(["2*"])


def test_label_set_rules():
    with pytest.raises(ValueError, match="alone"):
        normalize_label_set(["25", "2+"])
    with pytest.raises(ValueError, match="both"):
        normalize_label_set(["2+", "2-"])
    with pytest.raises(ValueError, match="at least one"):
        normalize_label_set([])
    # An image's label set may hold both signs: its report can say both in different sentences.
    assert image_label_set([["2+"], ["2-", "3-"], ["25"]]) == ("2+", "2-", "3-", "25")


def test_zero_shot_class_lists_resolve_to_findings():
    sizes = {name: len(classes) for name, classes in ZERO_SHOT_CLASSES.items()}
    assert sizes == {"chexpert": 5, "chestxray14": 14, "chestxdet10": 10, "openi": 18}
    for classes in ZERO_SHOT_CLASSES.values():
        codes = [finding_code(c) for c in classes]
        assert len(set(codes)) == len(codes) and all(1 <= c <= 24 for c in codes)
    assert finding_code("Pulmonary Consolidation") == finding_code("consolidation") == 15
    with pytest.raises(KeyError):
        finding_code("Bronchiectasis")
