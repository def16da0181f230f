"""Benchmark: how good are the present/absent calls a site receives in the SRs?

Phantom test-split studies are exported to DICOM (``monai_vecl.data.dicom_export``), run through the
deploy pipeline (``StudyPipeline``: selection, preprocessing, zero-shot PNC, SR), the SRs are written
and read back (``monai_vecl.deploy.sr.read_findings``), and the calls are compared with the phantom
truth: per-finding precision, recall and F1 (scikit-learn). Two sets of calls from the same SRs:

- calibrated: the present/absent calls the SRs carry, made at the bundle's ``models/thresholds.json``
  (chosen on the validation split); findings without a calibrated threshold carry no call and are
  listed as such;
- baseline: the uncalibrated 0.5 applied to the scores the same SRs carry (score >= 0.5 is what the
  SR would say with a site threshold of 0.5; only the threshold differs, so the comparison isolates it).

Data: ``--manifest``, else the phantom the bundle's training used (``<bundle>/outputs/phantom``) when it
exists, else one generated with the training defaults (600 images, seed 0) under ``--phantom-dir``.

``--calibrate PATH`` (for a bundle whose evaluation wrote no thresholds file): first choose max-F1
thresholds on the validation split with the evaluation's ``choose_thresholds``, from scores of the
same deploy path, write them to PATH with :func:`monai_vecl.thresholds.save_thresholds`, then use them.

``--thresholds`` / ``--calibrate`` run the bundle through a copy of its ``configs/inference.yaml`` whose
``thresholds_file`` names that file (same network, weights and prompts): the bundle stays the deployment's
source of truth and its own thresholds file is left alone.

Usage: python bench/bench_sr_calls.py [--bundle bundles/vecl_cxr] [--config deploy/config.yaml] [--manifest M]
                                      [--split test] [--limit N] [--thresholds PATH | --calibrate PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from sklearn.metrics import f1_score, precision_score, recall_score

from monai_vecl.data.dicom_export import export_dicom
from monai_vecl.data.manifest import read_manifest
from monai_vecl.deploy.pipeline import PipelineConfig, StudyPipeline, save_sr
from monai_vecl.deploy.sr import read_findings
from monai_vecl.metrics import choose_thresholds
from monai_vecl.thresholds import ThresholdTable, save_thresholds
from monai_vecl.training.dataset import resolve_manifest

ROOT = Path(__file__).resolve().parents[1]


def phantom_manifest(bundle: Path, phantom_dir: Path) -> Path:
    """The bundle training's phantom when present (never regenerated here), else the bench's own copy."""
    trained_on = bundle / "outputs" / "phantom" / "manifest.jsonl"
    if trained_on.is_file():
        return trained_on
    return resolve_manifest(None, phantom_dir)


def bundle_with_thresholds(bundle: Path, thresholds: Path, folder: Path) -> Path:
    """``folder`` as a bundle: ``bundle``'s inference.yaml with its weights and ``thresholds_file`` = ``thresholds``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.yaml"))
    parser["bundle_root"] = str(bundle)
    parser["model_file"] = str(bundle / parser.get_parsed_content("model_file"))
    parser["thresholds_file"] = str(thresholds.resolve())
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    ConfigParser.export_config_file(parser.get(), str(folder / "configs" / "inference.yaml"), fmt="yaml")
    if (bundle / "configs" / "metadata.json").is_file():
        shutil.copy(bundle / "configs" / "metadata.json", folder / "configs")
    return folder


def write_and_read(pipeline: StudyPipeline, studies: list[tuple[Path, dict[str, int]]], out_dir: Path) -> list:
    """SR of every study, written and read back: ``[(truth, [ReportedFinding, ...]), ...]``."""
    back = []
    for dicom_path, truth in studies:
        result = pipeline.process([dicom_path])
        if not result.findings:
            raise RuntimeError(f"{dicom_path.name}: no findings ({result.skipped_reason})")
        back.append((truth, read_findings(pydicom.dcmread(save_sr(result.sr, out_dir)))))
    return back


def tabulate(back: list, thresholds: dict[str, float | None]) -> list[str]:
    """Per-finding P/R/F1 of the SR calls and of score >= 0.5, and the macro F1 of each; as printed lines."""
    lines = [f"{'finding':24} {'n_pos':>5} {'threshold':>9} {'P':>6} {'R':>6} {'F1':>6}   {'P@0.5':>6} {'R@0.5':>6}"
             f" {'F1@0.5':>6}  dF1"]
    macro: dict[str, list[float]] = {"calibrated": [], "0.5 baseline": []}
    for name, chosen in thresholds.items():
        rows = [(truth[name], f) for truth, found in back for f in found if f.class_name == name and name in truth]
        y = [t for t, _ in rows if t in (0, 1)]
        if not y:
            continue
        at_half = scores(y, [int(f.score >= 0.5) for t, f in rows if t in (0, 1)])
        macro["0.5 baseline"].append(at_half[2])
        half = " ".join(f"{v:6.3f}" for v in at_half)
        if chosen is None:
            lines.append(f"{name:24} {sum(y):5d} {'none':>9} {'no call':>20}   {half}")
            continue
        called = scores(y, [int(bool(f.present)) for t, f in rows if t in (0, 1)])
        macro["calibrated"].append(called[2])
        lines.append(f"{name:24} {sum(y):5d} {chosen:9.3f} " + " ".join(f"{v:6.3f}" for v in called)
                     + f"   {half}  {called[2] - at_half[2]:+.3f}")
    for label, values in macro.items():
        if values:
            lines.append(f"macro F1 {label}: {sum(values) / len(values):.3f} over {len(values)} findings")
    return lines


def calibrate(pipeline: StudyPipeline, studies: list[tuple[Path, dict[str, int]]], out: Path) -> Path:
    """Max-F1 thresholds on these (validation) studies, from the deploy path's own scores."""
    names = list(pipeline.thresholds)
    y = np.array([[truth.get(n, -1) for n in names] for _, truth in studies], dtype=float)
    s = np.array([[pipeline.process([path]).scores[n] for n in names] for path, _ in studies])
    chosen = choose_thresholds(y, s).f1
    table = ThresholdTable({n: float(t) for n, t in zip(names, chosen) if np.isfinite(t)}, pipeline.bundle.score_mode,
                           "validate", "max_f1", model_sha256=pipeline.fingerprint)
    return save_thresholds(table, out)


def scores(y_true: list[int], y_pred: list[int]) -> tuple[float, float, float]:
    kw = {"zero_division": 0.0}
    return precision_score(y_true, y_pred, **kw), recall_score(y_true, y_pred, **kw), f1_score(y_true, y_pred, **kw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "vecl_cxr")
    parser.add_argument("--config", type=Path, default=ROOT / "deploy" / "config.yaml")
    parser.add_argument("--thresholds", default=None, help="thresholds file (default: the bundle's)")
    parser.add_argument("--calibrate", type=Path, default=None,
                        help="choose thresholds on the validation split first and write them here")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="at most this many studies")
    parser.add_argument("--manifest", type=Path, default=None, help="data set (default: the bundle's phantom)")
    parser.add_argument("--phantom-dir", type=Path, default=Path(tempfile.gettempdir()) / "vecl-bench-phantom")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    manifest = args.manifest or phantom_manifest(args.bundle, args.phantom_dir)
    records = [r for r in read_manifest(manifest) if r.split == args.split and r.view in ("PA", "AP") and r.findings]
    records = records[: args.limit] if args.limit else records
    base = dataclasses.replace(PipelineConfig.from_yaml(args.config), bundle_root=args.bundle.resolve(), device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        if args.calibrate:
            validation = [r for r in read_manifest(manifest) if r.split == "validate" and r.view in ("PA", "AP")
                          and r.findings]
            exported = [(export_dicom(r, manifest, tmp_path / "validate" / f"{i:05d}.dcm"), r.findings)
                        for i, r in enumerate(validation)]
            uncalibrated = bundle_with_thresholds(args.bundle, tmp_path / "none.json", tmp_path / "uncalibrated")
            scorer = StudyPipeline(dataclasses.replace(base, bundle_root=uncalibrated))
            args.thresholds = calibrate(scorer, exported, args.calibrate)
            print(f"calibrated on {len(validation)} validation studies -> {args.thresholds}")
        if args.thresholds:
            chosen = bundle_with_thresholds(args.bundle, Path(args.thresholds), tmp_path / "chosen")
            base = dataclasses.replace(base, bundle_root=chosen)
        pipeline = StudyPipeline(base)
        if pipeline.calibration is None:
            print("WARNING: no calibrated thresholds file: the SRs carry no calls")
        studies = [(export_dicom(r, manifest, tmp_path / "dicom" / f"{i:05d}.dcm"), r.findings)
                   for i, r in enumerate(records)]
        started = time.perf_counter()
        back = write_and_read(pipeline, studies, tmp_path / "sr")
        seconds = time.perf_counter() - started
    table = pipeline.calibration
    print(f"manifest {manifest} split {args.split}: {len(studies)} studies; model sha256 {pipeline.fingerprint[:16]}")
    print(f"thresholds: {table.describe() if table else 'none'}"
          + (f", file model_sha256 {table.model_sha256[:16]}" if table and table.model_sha256 else ""))
    print(f"{seconds:.1f} s for {len(studies)} studies ({seconds / len(studies):.3f} s/study, SR written and read back)\n")
    print("\n".join(tabulate(back, {name: chosen.value for name, chosen in pipeline.thresholds.items()})))

if __name__ == "__main__":
    main()
