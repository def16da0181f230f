"""Grounding metrics (pointing, IoU/Dice sweep, recall/precision at IoU 0.1), baselines, the evaluation run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_vecl.data import phantom, readers
from monai_vecl.data.manifest import image_path, read_manifest
from monai_vecl.evaluation import grounding as ge
from monai_vecl.data.preprocess import read_gray
from monai_vecl.grounding import GroundingConfig
from monai_vecl.networks import build_vecl

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def _disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_pair_scores_of_a_perfect_and_a_wrong_map():
    truth = _disk((40, 40), 10, 10, 5)
    perfect = ge.pair_scores(truth.astype(float), truth)
    assert perfect["pointing"] and perfect["dice"][50] == 1 and perfect["iou"][100] == 1
    wrong = ge.pair_scores(_disk((40, 40), 30, 30, 5).astype(float), truth)
    assert not wrong["pointing"] and wrong["dice"][50] == 0
    assert wrong["dice"][0] == pytest.approx(2 * truth.sum() / (truth.sum() + truth.size))  # t = 0: everything


def test_region_hits_count_parts_at_iou_one_tenth():
    truth = _disk((60, 60), 15, 15, 6) | _disk((60, 60), 45, 45, 6)
    pred = _disk((60, 60), 15, 17, 6) | _disk((60, 60), 45, 5, 3)  # one hit, one false region
    level = (pred * 100).astype(np.uint8)
    assert ge.region_hits(level, truth, 50) == (1, 2, 1, 2)
    assert ge.region_hits(np.zeros_like(level), truth, 50) == (0, 2, 0, 0)


def test_gaussian_prior_peaks_in_the_centre():
    prior = ge.gaussian_prior((50, 80))
    assert np.unravel_index(prior.argmax(), prior.shape) in {(24, 39), (24, 40), (25, 39), (25, 40)}
    assert prior.max() == pytest.approx(1, abs=1e-3)


def test_truth_masks_from_chestxdet10_boxes():
    records, _ = readers.read_chestxdet10(FIXTURES / "chestxdet10")
    first = next(r for r in records if r.study_id == "70001")
    masks = ge.truth_masks(first, FIXTURES / "chestxdet10" / "test.json", read_gray(first.image).shape)
    assert set(masks) == {"Atelectasis", "Pleural Effusion"}
    assert masks["Atelectasis"].sum() == (7 - 2) * (12 - 3) and masks["Atelectasis"][3, 2]


def _pairs(maps_and_truths):
    pairs = ge.PairSet()
    for i, (heat, truth, finding) in enumerate(maps_and_truths):
        pairs.add(i, finding, heat, truth)
    return pairs


def test_summary_and_paired_comparison_find_the_better_method():
    rng = np.random.default_rng(0)
    truths = [(_disk((32, 32), *rng.integers(6, 26, 2), 4), int(rng.integers(0, 2))) for _ in range(40)]
    good = _pairs([(t.astype(float) * 0.9 + 0.05 * rng.random(t.shape), t, c) for t, c in truths])
    prior = _pairs([(ge.gaussian_prior((32, 32)), t, c) for t, c in truths])
    a = ge.summarize(good, ["A", "B"], 40, n_bootstrap=200)
    b = ge.summarize(prior, ["A", "B"], 40, n_bootstrap=200)
    assert a["macro"]["pointing"] == 1 and a["macro"]["dice"] > 0.9 and a["macro"]["recall"] == 1
    assert b["macro"]["pointing"] < 0.5
    cmp = ge.compare(a, b)
    assert cmp["pointing"]["better"] and cmp["pointing"]["ci"][0] > 0
    assert not ge.compare(b, a)["pointing"]["better"]
    low, high = a["macro_ci"]["dice"]
    assert low <= a["macro"]["dice"] <= high


@pytest.fixture(scope="module")
def tiny_phantom(tmp_path_factory):
    return phantom.generate_phantom(tmp_path_factory.mktemp("ph"), n_images=30, seed=1, image_size=80, workers=1)


@pytest.mark.parametrize("method", ["attention", "gradcam"])
def test_evaluation_run_writes_tables_and_overlay(tiny_phantom, tmp_path, method):
    torch.manual_seed(0)
    net = build_vecl("small", image_size=64, load_size=80, vit_num_layers=1).eval()
    summary = ge.GroundingEvaluation(
        net, None, tiny_phantom, list(phantom.PHANTOM_CLASSES), tmp_path, split="train",
        config=GroundingConfig(method=method), n_bootstrap=50,
    ).run()
    records = read_manifest(tiny_phantom, "train")
    positives = sum(sum(r.findings.values()) for r in records)
    model = summary["results"]["model"]
    assert model["macro"]["n_pairs"] + summary["positive_pairs_without_region"] == positives
    assert summary["positive_pairs_without_region"] == 0
    assert set(summary["results"]) == {"model", "gaussian_prior"}
    assert "model_vs_gaussian_prior" in summary["comparisons"]
    assert all(0 <= model["macro"][k] <= 1 for k in ge.METRICS)
    assert json.loads((tmp_path / "grounding.json").read_text())["method"] == method
    assert (tmp_path / "grounding_overlay.png").stat().st_size > 1000
    assert "| model |" in (tmp_path / "grounding.md").read_text()
    assert image_path(records[0], tiny_phantom).is_file()


def test_bundle_step_reports_metrics_and_notes_missing_truth(tiny_phantom, tmp_path):
    from types import SimpleNamespace

    from monai_vecl.data.manifest import write_manifest

    torch.manual_seed(0)
    net = build_vecl("small", image_size=64, load_size=80, vit_num_layers=1).eval()
    ev = SimpleNamespace(model=net, manifest=tiny_phantom, class_names=tuple(phantom.PHANTOM_CLASSES),
                         output_dir=tmp_path / "eval", n_bootstrap=20)
    out = ge.GroundingStep(split="train")(ev)
    assert set(out["metrics"]) == {f"grounding_train_{k}" for k in ge.METRICS}
    assert "model_vs_untrained" in out["summary"]["grounding"]["comparisons"]
    assert (tmp_path / "eval" / "grounding" / "grounding_overlay.png").is_file()
    bare = [r for r in read_manifest(tiny_phantom)]
    for r in bare:
        r.extra = {}
    ev.manifest = write_manifest(bare, tiny_phantom.parent / "no_regions.jsonl")
    note = ge.GroundingStep(split="train")(ev)["summary"]["grounding"]
    assert "nothing to score" in note["note"] and note["positive_pairs_without_region"] > 0


def test_prompt_names_find_their_truth_by_finding_code():
    masks = {"Edema": np.ones((2, 2), bool)}
    assert ge._region_of(masks, "Pulmonary Edema") is masks["Edema"]
    assert ge._region_of(masks, "Pneumothorax") is None


def test_chestxdet10_fixtures_run_through_the_same_evaluation(tmp_path):
    from monai_vecl.data.manifest import write_manifest
    from monai_vecl.taxonomy import ZERO_SHOT_CLASSES

    records, _ = readers.read_chestxdet10(FIXTURES / "chestxdet10")
    manifest = write_manifest(records, tmp_path / "det10.jsonl")
    torch.manual_seed(0)
    net = build_vecl("small", image_size=64, load_size=80, vit_num_layers=1).eval()
    summary = ge.GroundingEvaluation(net, None, manifest, ZERO_SHOT_CLASSES["chestxdet10"], tmp_path / "out",
                                     n_bootstrap=20).run()
    model = summary["results"]["model"]
    assert model["macro"]["n_pairs"] == 2 and set(model["per_finding"]) == {"Atelectasis", "Pleural Effusion"}
    assert [Path(s["image"]).name for s in summary["skipped"]] == ["70003.png"]  # the corrupt image, counted
    assert summary["positive_pairs_without_region"] == 0
