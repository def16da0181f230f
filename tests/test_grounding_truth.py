"""Phantom region truth for grounding: one mask per drawn finding, deterministic, pixels unchanged."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from monai_vecl.data import phantom
from monai_vecl.data.manifest import read_manifest
from monai_vecl.data.phantom_anatomy import CARDIOMEGALY, EFFUSION, render
from monai_vecl.taxonomy import FINDINGS

SIZE = 96
#: sha256 of the pixels of 60 cases (seed 7, every 5th shifted) drawn by the renderer before region
#: truth existed: asking for regions must never change how the phantom looks.
PIXELS_BEFORE_REGIONS = "82678f88a379a916d98cf54687def512cd311a3a91c338c5d548f367cbca780c"


def _cases(n=60):
    for i in range(n):
        rng = np.random.default_rng([7, i])
        yield phantom.sample_case(rng, shifted=i % 5 == 0), rng


def test_regions_leave_pixels_unchanged_and_cover_every_drawn_finding():
    digest = hashlib.sha256()
    for case, rng in _cases():
        regions: dict[int, np.ndarray] = {}
        digest.update(render(case, SIZE, rng, regions).tobytes())
        assert set(regions) == set(case.findings)
        for code, mask in regions.items():
            assert mask.dtype == bool and mask.shape == (SIZE, SIZE)
            assert 0 < mask.mean() < 0.5, (FINDINGS[code], mask.mean())
    assert digest.hexdigest() == PIXELS_BEFORE_REGIONS


def test_regions_lie_where_the_finding_is_drawn():
    rows = np.arange(SIZE)[:, None]
    for case, rng in _cases():
        regions: dict[int, np.ndarray] = {}
        render(case, SIZE, rng, regions)
        if EFFUSION in regions:  # fluid settles at the lung bases: below the image centre
            assert rows.repeat(SIZE, 1)[regions[EFFUSION]].mean() > SIZE / 2
        if CARDIOMEGALY in regions:  # the heart straddles the midline
            cols = np.nonzero(regions[CARDIOMEGALY])[1]
            assert cols.min() < SIZE / 2 < cols.max()


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return phantom.generate_phantom(tmp_path_factory.mktemp("ph"), n_images=30, seed=3, image_size=SIZE, workers=1)


def test_manifest_masks_and_boxes_match_the_truth(small_set):
    for r in read_manifest(small_set):
        with np.load(small_set.parent / r.extra["regions"]) as masks:
            present = {k for k, v in r.findings.items() if v}
            assert set(masks.files) == present
            for box in r.extra["boxes"]:
                x0, y0, x1, y1 = box["box"]
                part = masks[box["finding"]][y0:y1, x0:x1]
                assert part.any() and part[0].any() and part[-1].any() and part[:, 0].any() and part[:, -1].any()
            assert {b["finding"] for b in r.extra["boxes"]} == present
        if r.findings["Pneumonia"]:  # an implied parent gets its child's region
            assert r.findings["Lung Opacity"] == 1


def test_region_files_are_deterministic_and_required(small_set, tmp_path):
    again = phantom.generate_phantom(tmp_path, n_images=30, seed=3, image_size=SIZE, workers=2)
    for a, b in zip(read_manifest(small_set), read_manifest(again)):
        with np.load(small_set.parent / a.extra["regions"]) as ma, np.load(again.parent / b.extra["regions"]) as mb:
            assert ma.files == mb.files and all(np.array_equal(ma[k], mb[k]) for k in ma.files)
    first = read_manifest(again)[0]
    (again.parent / first.extra["regions"]).unlink()
    phantom.generate_phantom(tmp_path, n_images=30, seed=3, image_size=SIZE, workers=1)  # a lost side file regenerates
    assert (again.parent / first.extra["regions"]).is_file()
