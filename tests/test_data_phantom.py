"""Phantom generator: determinism, caching, splits, ground truth consistency, statistics, visibility."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from monai_vecl.data import phantom
from monai_vecl.data.manifest import SPLITS, image_path, read_manifest
from monai_vecl.data.phantom_anatomy import (
    CARDIOMEGALY,
    CONSOLIDATION,
    EFFUSION,
    NODULE,
    PNEUMOTHORAX,
    Case,
    render,
)
from monai_vecl.data.phantom_reports import write_report
from monai_vecl.data.phantom_stats import STATS
from monai_vecl.reports import report_sentences
from monai_vecl.taxonomy import FINDINGS, code_of

SIZE = 96


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom")
    return phantom.generate_phantom(out, n_images=40, seed=3, image_size=SIZE, workers=1)


def test_manifest_images_and_splits(small_set):
    records = read_manifest(small_set)
    assert len(records) == 40
    assert {r.split for r in records} == set(SPLITS)
    assert len({r.study_id for r in records}) == 40
    for r in records:
        img = Image.open(image_path(r, small_set))
        assert img.mode == "L" and img.size == (SIZE, SIZE)
        assert r.label_source == "phantom_truth"
        assert set(r.findings) == set(phantom.PHANTOM_CLASSES)
        assert len(r.sentences) == len(r.sentence_labels) > 0
    meta = json.loads((small_set.parent / phantom.META_NAME).read_text())
    assert sum(meta["split_counts"].values()) == 40


def test_sentence_labels_agree_with_image_truth(small_set):
    """Every k+ names a present finding, every k- an absent one, and every drawn finding is mentioned."""
    for r in read_manifest(small_set):
        mentioned = set()
        for labels in r.sentence_labels:
            for label in labels:
                if label == "25":
                    continue
                name = FINDINGS[code_of(label)]
                if name in r.findings:
                    assert r.findings[name] == (1 if label.endswith("+") else 0), (r.study_id, label, r.report)
                if label.endswith("+"):
                    mentioned.add(name)
        drawn = set(r.extra["finding_attributes"])
        assert drawn <= mentioned, (r.study_id, drawn - mentioned)


def test_sentences_match_the_report_splitter(small_set):
    """The stored sentences are what the report module extracts from the report text."""
    for r in read_manifest(small_set):
        assert report_sentences(r.report) == r.sentences
        assert r.report.startswith("FINDINGS:")


def test_deterministic_across_worker_counts(small_set, tmp_path):
    again = phantom.generate_phantom(tmp_path / "b", n_images=40, seed=3, image_size=SIZE, workers=2)
    a, b = read_manifest(small_set), read_manifest(again)
    assert [r.to_json() for r in a] == [r.to_json() for r in b]
    for ra, rb in zip(a[:5], b[:5]):
        assert np.array_equal(np.asarray(Image.open(image_path(ra, small_set))),
                              np.asarray(Image.open(image_path(rb, again))))


def test_other_seed_differs(small_set, tmp_path):
    other = read_manifest(phantom.generate_phantom(tmp_path, n_images=40, seed=4, image_size=SIZE, workers=1))
    assert [r.report for r in other] != [r.report for r in read_manifest(small_set)]


def test_reuses_complete_set_and_regenerates_incomplete(tmp_path):
    path = phantom.generate_phantom(tmp_path, n_images=6, seed=0, image_size=64, workers=1)
    stamp = path.stat().st_mtime_ns
    assert phantom.generate_phantom(tmp_path, n_images=6, seed=0, image_size=64, workers=1) == path
    assert path.stat().st_mtime_ns == stamp
    first = read_manifest(path)[0]
    image_path(first, path).unlink()
    phantom.generate_phantom(tmp_path, n_images=6, seed=0, image_size=64, workers=1)
    assert image_path(first, path).is_file() and path.stat().st_mtime_ns != stamp
    phantom.generate_phantom(tmp_path, n_images=7, seed=0, image_size=64, workers=1)
    assert len(read_manifest(path)) == 7


@pytest.mark.parametrize(
    "kwargs", [{"n_images": 0}, {"image_size": 32}, {"shifted_fraction": 1.0}, {"split_fractions": {"train": 1.0}}]
)
def test_bad_parameters_raise(tmp_path, kwargs):
    with pytest.raises(ValueError):
        phantom.generate_phantom(tmp_path, **{"n_images": 4, **kwargs})


def test_split_fractions():
    splits = Counter(phantom.assign_splits(1000, 0, {"train": 0.5, "validate": 0.2, "test": 0.3}, 0.2))
    assert splits == {"train": 400, "validate": 160, "test": 240, "test_shifted": 200}


def test_finding_prevalence_follows_reference_statistics():
    rng = np.random.default_rng(0)
    n = 4000
    counts = Counter(c for _ in range(n) for c in phantom.sample_positive_codes(rng))
    for code, real in STATS["prevalence"].items():
        assert abs(counts[code] / n - real) < 0.035, (FINDINGS[code], counts[code] / n, real)


def test_negation_rates_and_groupings_follow_reference_statistics():
    rng = np.random.default_rng(1)
    absent, negated, n_negative = Counter(), Counter(), []
    for _ in range(1500):
        sentences = write_report(phantom.sample_case(rng), rng)
        labels = {x for _, _, s in sentences for x in s}
        n_negative.append(sum(s[0].endswith("-") for _, _, s in sentences))
        for code in range(1, 25):
            if f"{code}+" not in labels:
                absent[code] += 1
                negated[code] += f"{code}-" in labels
    for code, real in STATS["negation_rate"].items():
        if code != 5:  # "no opacity" is withheld whenever any lung density is drawn
            assert abs(negated[code] / absent[code] - real) < 0.1, (FINDINGS[code], negated[code] / absent[code], real)
    real_mean = sum(k * c for k, c in STATS["n_negative_sentences"]) / sum(c for _, c in STATS["n_negative_sentences"])
    assert abs(np.mean(n_negative) - real_mean) < 0.8
    reports = [write_report(phantom.sample_case(rng), rng) for _ in range(100)]
    assert any(len(s) > 2 and s[0].endswith("-") for r in reports for _, _, s in r)  # "No X, Y or Z."


def _difference(findings: dict, size: int = 128) -> tuple[float, float]:
    """Mean absolute pixel change a finding causes on the image left (patient right) and right halves."""
    base = phantom.sample_case(np.random.default_rng(7))
    base.findings = {}
    with_finding = Case(anatomy=base.anatomy, findings=findings)
    a = render(base, size, np.random.default_rng(8)).astype(float)
    b = render(with_finding, size, np.random.default_rng(8)).astype(float)
    diff = np.abs(a - b)
    return diff[:, : size // 2].mean(), diff[:, size // 2 :].mean()


@pytest.mark.parametrize(
    "code, attributes, side",
    [
        (EFFUSION, {"sides": ["left"], "size": "moderate"}, "left"),
        (PNEUMOTHORAX, {"side": "right", "size": "large"}, "right"),
        (NODULE, {"side": "left", "zone": "mid", "radius": 0.04, "lobulation": 0.0}, "left"),
        (CONSOLIDATION, {"region": {"side": "right", "zone": "lower"}}, "right"),
    ],
)
def test_findings_are_drawn_on_their_side(code, attributes, side):
    image_left, image_right = _difference({code: attributes})
    patient_side, other = (image_left, image_right) if side == "right" else (image_right, image_left)
    assert patient_side > 3 * other + 0.02, (patient_side, other)


def test_cardiomegaly_widens_the_heart():
    left, right = _difference({CARDIOMEGALY: {"severity": 3, "ctr": 0.68}})
    assert left + right > 2.0


def test_shifted_split_has_other_acquisition():
    rng = np.random.default_rng(0)
    standard = [phantom.sample_case(rng).anatomy for _ in range(200)]
    shifted = [phantom.sample_case(rng, shifted=True).anatomy for _ in range(200)]
    assert min(a["noise"] for a in shifted) > max(a["noise"] for a in standard)
    assert max(abs(a["rotation_deg"]) for a in shifted) > max(abs(a["rotation_deg"]) for a in standard) + 2


def test_cli(tmp_path, capsys):
    phantom.main(["--out", str(tmp_path), "--n", "5", "--size", "64", "--workers", "1"])
    assert "5 images" in capsys.readouterr().out
    assert len(read_manifest(tmp_path / "manifest.jsonl")) == 5
