"""The embedded default data set: generated frontal chest radiographs with reports and ground truth.

No labelled chest X-ray images can be downloaded here, so the phantom draws them: anatomy that
varies per patient (:mod:`phantom_anatomy`), findings of :data:`PHANTOM_CLASSES` drawn where a
reader would look for them, and a report per image (:mod:`phantom_reports`) with the true signed
labels of every sentence. Which findings occur together, and how often absent findings are
negated, follow the MIMIC-CXR reference labels (:mod:`phantom_stats`). Splits are
train/validate/test plus ``test_shifted``, drawn with other anatomy, contrast and noise ranges.

Region truth (for grounding, docs/grounding.md): every drawn finding's region is written as a
boolean mask, one per finding name, in ``regions/NNN/<study_id>.npz`` (``extra["regions"]``), and
as one bounding box per connected part in ``extra["boxes"]`` (``{"finding": name, "box": [x0, y0,
x1, y1]}``, pixels, ends exclusive). A parent class implied by a child gets the child's region.

CLI: ``python -m monai_vecl.data.phantom --out DIR --n 2000 --seed 0``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from monai_vecl.data.manifest import Record, read_manifest, write_manifest
from monai_vecl.data.phantom_anatomy import (
    ATELECTASIS,
    CARDIOMEGALY,
    CONSOLIDATION,
    DEVICES,
    EDEMA,
    EFFUSION,
    FRACTURE,
    MASS,
    NODULE,
    OPACITY,
    PNEUMONIA,
    PNEUMOTHORAX,
    Case,
    render,
)
from monai_vecl.data.phantom_reports import report_text, write_report
from monai_vecl.data.phantom_stats import PHANTOM_CODES, STATS
from monai_vecl.taxonomy import FINDINGS

#: Bumped whenever drawing or report writing changes, so cached data sets are regenerated.
GENERATOR_VERSION = 4
#: Taxonomy names of the findings the phantom draws (keys of each record's ``findings``).
PHANTOM_CLASSES: tuple[str, ...] = tuple(FINDINGS[c] for c in PHANTOM_CODES)
#: A drawn airspace finding also makes the image positive for the parent class Lung Opacity.
IMPLIES: dict[int, tuple[int, ...]] = {PNEUMONIA: (OPACITY,), CONSOLIDATION: (OPACITY,)}
META_NAME = "phantom.json"

#: Per-patient anatomy and acquisition ranges (uniform); ``shifted`` is the generalisation test split.
ANATOMY_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "standard": {
        "chest_hw": (0.74, 0.86), "mediastinum_hw": (0.1, 0.135), "lung_top": (-0.8, -0.68),
        "dome_y": (0.36, 0.5), "left_dome_drop": (0.0, 0.06), "ctr": (0.38, 0.53), "rotation_deg": (-4.0, 4.0),
        "zoom": (0.93, 1.03), "shift_x": (-0.04, 0.04), "shift_y": (-0.04, 0.04), "tissue": (0.9, 1.1),
        "breasts": (0.04, 0.1), "rib_spacing": (0.125, 0.145), "rib_hw": (0.016, 0.021), "markings": (0.02, 0.035),
        "window_lo": (0.0, 0.06), "window_hi": (0.9, 1.0), "gamma": (0.85, 1.2), "blur": (0.4, 0.8),
        "noise": (0.01, 0.025),
    },
    "shifted": {
        "chest_hw": (0.66, 0.92), "mediastinum_hw": (0.09, 0.15), "lung_top": (-0.84, -0.62),
        "dome_y": (0.3, 0.56), "left_dome_drop": (0.0, 0.08), "ctr": (0.38, 0.53), "rotation_deg": (-9.0, 9.0),
        "zoom": (0.84, 1.1), "shift_x": (-0.08, 0.08), "shift_y": (-0.08, 0.08), "tissue": (1.0, 1.2),
        "breasts": (0.06, 0.14), "rib_spacing": (0.115, 0.155), "rib_hw": (0.014, 0.024), "markings": (0.012, 0.045),
        "window_lo": (0.05, 0.12), "window_hi": (0.82, 0.95), "gamma": (0.75, 1.4), "blur": (0.9, 1.4),
        "noise": (0.03, 0.05),
    },
}
BREAST_PROBABILITY = 0.4
GASTRIC_BUBBLE_PROBABILITY = 0.6
DEFAULT_SPLITS = {"train": 0.7, "validate": 0.1, "test": 0.2}


def sample_positive_codes(rng: np.random.Generator) -> set[int]:
    """The set of drawn findings of one image: a real MIMIC-CXR pattern, or per-finding draws for the long tail."""
    patterns = STATS["positive_patterns"]
    if rng.random() < STATS["pattern_coverage"]:
        counts = np.array([c for _, c in patterns], np.float64)
        return set(patterns[rng.choice(len(patterns), p=counts / counts.sum())][0])
    return {c for c, p in STATS["residual_prevalence"].items() if rng.random() < p}


def _side(rng: np.random.Generator, p_both: float) -> list[str]:
    u = rng.random()
    return ["right", "left"] if u < p_both else (["right"] if u < p_both + (1 - p_both) / 2 else ["left"])


def _region(rng: np.random.Generator) -> dict[str, str]:
    return {"side": str(rng.choice(["right", "left"])), "zone": str(rng.choice(["upper", "mid", "lower"], p=[0.2, 0.3, 0.5]))}


def sample_case(rng: np.random.Generator, shifted: bool = False) -> Case:
    """Anatomy and finding attributes (side, size, severity, location) of one image."""
    ranges = ANATOMY_RANGES["shifted" if shifted else "standard"]
    anatomy = {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in ranges.items()}
    anatomy["breasts"] *= float(rng.random() < BREAST_PROBABILITY)
    anatomy["gastric_bubble"] = float(rng.random() < GASTRIC_BUBBLE_PROBABILITY)
    codes = sample_positive_codes(rng)
    f: dict[int, dict] = {}
    if ATELECTASIS in codes:
        lobar = rng.random() < 0.35
        f[ATELECTASIS] = {"kind": "lobar" if lobar else "plate", "sides": _side(rng, 0.0 if lobar else 0.45),
                          "bands": int(rng.integers(0, 2) if lobar else rng.integers(1, 3)),
                          "lift": float(rng.uniform(0.05, 0.1))}
    if EFFUSION in codes:
        f[EFFUSION] = {"sides": _side(rng, 0.35), "size": str(rng.choice(["small", "moderate", "large"], p=[0.5, 0.35, 0.15]))}
    if PNEUMOTHORAX in codes:
        f[PNEUMOTHORAX] = {"side": _side(rng, 0.0)[0],
                           "size": str(rng.choice(["small", "moderate", "large"], p=[0.55, 0.3, 0.15]))}
    if CARDIOMEGALY in codes:
        severity = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
        # mild cardiomegaly overlaps the top of the normal range, as borderline hearts do in real reads
        lo, hi = {1: (0.51, 0.57), 2: (0.57, 0.62), 3: (0.62, 0.68)}[severity]
        f[CARDIOMEGALY] = {"severity": severity, "ctr": float(rng.uniform(lo, hi))}
    region = _region(rng)
    for code in (OPACITY, PNEUMONIA, CONSOLIDATION):
        if code in codes:
            f[code] = {"region": region}
    if MASS in codes:
        f[MASS] = {**_region(rng), "radius": float(rng.uniform(0.08, 0.13)), "lobulation": float(rng.uniform(0.05, 0.15))}
    if NODULE in codes:
        f[NODULE] = {**_region(rng), "radius": float(rng.uniform(0.028, 0.05)), "lobulation": 0.0}
    if EDEMA in codes:
        f[EDEMA] = {"severity": int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))}
    if FRACTURE in codes:
        f[FRACTURE] = {"side": _side(rng, 0.0)[0], "rib": int(rng.integers(3, 9)), "u": float(rng.uniform(0.4, 0.72)),
                       "step": float(rng.uniform(0.035, 0.06)), "gap": float(rng.uniform(0.018, 0.03)),
                       "age": str(rng.choice(["acute", "healed"], p=[0.4, 0.6]))}
    if DEVICES in codes:
        kinds = ["et_tube", "ng_tube", "central_line", "pacemaker", "sternotomy_wires"]
        chosen = [k for k, p in zip(kinds, (0.35, 0.3, 0.5, 0.2, 0.25)) if rng.random() < p]
        f[DEVICES] = {"devices": chosen or [str(rng.choice(kinds))]}
    return Case(anatomy=anatomy, findings=f)


def ground_truth(case: Case) -> dict[str, int]:
    """Per-image findings (0/1) keyed by :data:`PHANTOM_CLASSES`, with parent classes implied by children."""
    present = set(case.findings)
    for code in list(present):
        present.update(IMPLIES.get(code, ()))
    return {FINDINGS[c]: int(c in present) for c in PHANTOM_CODES}


def assign_splits(n: int, seed: int, split_fractions: dict[str, float], shifted_fraction: float) -> list[str]:
    """Split of every index: a seeded permutation cut into shifted, then train/validate/test by fraction."""
    if set(split_fractions) != set(DEFAULT_SPLITS) or any(v < 0 for v in split_fractions.values()):
        raise ValueError(f"split_fractions needs non-negative train/validate/test, got {split_fractions}")
    if not 0 <= shifted_fraction < 1:
        raise ValueError(f"shifted_fraction must be in [0, 1), got {shifted_fraction}")
    total = sum(split_fractions.values())
    order = np.random.default_rng([seed, 0x5EED]).permutation(n)
    n_shift = round(n * shifted_fraction)
    rest = n - n_shift
    bounds = np.cumsum([round(rest * split_fractions[s] / total) for s in ("train", "validate")])
    splits = [""] * n
    for rank, idx in enumerate(order):
        if rank < n_shift:
            splits[idx] = "test_shifted"
        else:
            r = rank - n_shift
            splits[idx] = "train" if r < bounds[0] else ("validate" if r < bounds[1] else "test")
    return splits


def finding_regions(case: Case, regions: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    """Region masks of :func:`render` by taxonomy name; an implied parent (see :func:`ground_truth`) gets its child's."""
    masks = dict(regions)
    for code in case.findings:
        for parent in IMPLIES.get(code, ()):
            masks[parent] = masks[parent] | masks[code] if parent in masks else masks[code].copy()
    return {FINDINGS[c]: masks[c] for c in PHANTOM_CODES if c in masks}


def region_boxes(masks: dict[str, np.ndarray]) -> list[dict]:
    """One ``{"finding", "box": [x0, y0, x1, y1]}`` per 8-connected part of each mask (pixels, ends exclusive)."""
    boxes = []
    for name, mask in masks.items():
        parts, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
        for rows, cols in ndimage.find_objects(parts):
            boxes.append({"finding": name, "box": [cols.start, rows.start, cols.stop, rows.stop]})
    return boxes


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return round(value, 4) if isinstance(value, float) else value


def make_record(index: int, seed: int, split: str, out_dir: Path, image_size: int) -> Record:
    """Draw, save and describe one image; depends only on (seed, index), not on worker layout."""
    rng = np.random.default_rng([seed, index])
    case = sample_case(rng, shifted=split == "test_shifted")
    regions: dict[int, np.ndarray] = {}
    pixels = render(case, image_size, rng, regions)
    sentences = write_report(case, rng)
    study_id = f"ph{seed}-{index:06d}"
    rel = Path("images") / f"{index // 1000:03d}" / f"{study_id}.png"
    (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="L").save(out_dir / rel, compress_level=1)
    masks = finding_regions(case, regions)
    rel_regions = Path("regions") / f"{index // 1000:03d}" / f"{study_id}.npz"
    (out_dir / rel_regions).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / rel_regions, **masks)
    attributes = {FINDINGS[c]: _jsonable(a) for c, a in case.findings.items()}
    return Record(
        image=rel.as_posix(),
        study_id=study_id,
        patient_id=f"php{seed}-{index:06d}",
        split=split,
        view="AP" if rng.random() < 0.3 else "PA",
        report=report_text(sentences),
        sentences=[text for _, text, _ in sentences],
        sentence_labels=[list(labels) for _, _, labels in sentences],
        findings=ground_truth(case),
        label_source="phantom_truth",
        extra={"finding_attributes": attributes, "shifted": split == "test_shifted", "regions": rel_regions.as_posix(),
               "boxes": region_boxes(masks)},
    )


def _make_chunk(args: tuple[list[int], list[str], int, str, int]) -> list[Record]:
    indices, splits, seed, out_dir, image_size = args
    return [make_record(i, seed, s, Path(out_dir), image_size) for i, s in zip(indices, splits)]


def _is_complete(out_dir: Path, params: dict) -> bool:
    meta, manifest = out_dir / META_NAME, out_dir / "manifest.jsonl"
    if not (meta.is_file() and manifest.is_file()):
        return False
    try:
        if json.loads(meta.read_text(encoding="utf-8")).get("params") != params:
            return False
        records = read_manifest(manifest)
    except ValueError:
        return False
    return len(records) == params["n_images"] and all(
        (out_dir / r.image).is_file() and (out_dir / r.extra.get("regions", "")).is_file() for r in records
    )


def generate_phantom(
    out_dir: str | os.PathLike,
    n_images: int = 2000,
    seed: int = 0,
    image_size: int = 256,
    split_fractions: dict[str, float] | None = None,
    shifted_fraction: float = 0.1,
    workers: int | None = None,
) -> Path:
    """Generate (or reuse) a phantom data set in ``out_dir``; returns the path of its ``manifest.jsonl``.

    Deterministic in (``n_images``, ``seed``, ``image_size``, splits): the same parameters give the
    same pixels and reports whatever ``workers`` is. If ``out_dir`` already holds a complete data
    set made with the same parameters and generator version it is returned untouched.
    """
    if n_images < 1:
        raise ValueError(f"n_images must be positive, got {n_images}")
    if image_size < 64:
        raise ValueError(f"image_size must be at least 64 pixels, got {image_size}")
    fractions = dict(split_fractions or DEFAULT_SPLITS)
    out = Path(out_dir)
    params = {"n_images": n_images, "seed": seed, "image_size": image_size, "split_fractions": fractions,
              "shifted_fraction": shifted_fraction, "generator_version": GENERATOR_VERSION}
    manifest = out / "manifest.jsonl"
    if _is_complete(out, params):
        return manifest
    splits = assign_splits(n_images, seed, fractions, shifted_fraction)
    out.mkdir(parents=True, exist_ok=True)
    (out / META_NAME).unlink(missing_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, n_images // 50 or 1))
    chunk = max(1, min(100, -(-n_images // (workers * 4))))
    jobs = [(list(range(i, min(i + chunk, n_images))), splits[i : i + chunk], seed, str(out), image_size)
            for i in range(0, n_images, chunk)]
    start = time.perf_counter()
    if workers == 1:
        records = [r for job in jobs for r in _make_chunk(job)]
    else:
        context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            records = [r for part in pool.map(_make_chunk, jobs) for r in part]
    write_manifest(records, manifest)
    counts = {s: splits.count(s) for s in ("train", "validate", "test", "test_shifted")}
    meta = {"params": params, "split_counts": counts, "seconds": round(time.perf_counter() - start, 2),
            "workers": workers, "classes": list(PHANTOM_CLASSES)}
    (out / META_NAME).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the phantom chest X-ray data set (images + reports + truth).")
    parser.add_argument("--out", required=True, type=Path, help="output folder (manifest.jsonl, images/)")
    parser.add_argument("--n", type=int, default=2000, help="number of images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--shifted-fraction", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPU cores)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    path = generate_phantom(args.out, args.n, args.seed, args.size, shifted_fraction=args.shifted_fraction,
                            workers=args.workers)
    meta = json.loads((args.out / META_NAME).read_text(encoding="utf-8"))
    print(f"{path}: {args.n} images, splits {meta['split_counts']}, {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
