"""The MIMIC-CXR-JPG recipe on a tiny data set in the real PhysioNet layout (synthetic images and reports)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from monai_vecl.data.manifest import read_manifest
from monai_vecl.training.dataset import SentenceSampling

RECIPE = Path(__file__).resolve().parents[1] / "training" / "mimic_cxr.py"
REPORTS = [
    "FINDINGS: There is a small left pleural effusion. No pneumothorax.\nIMPRESSION: Small left effusion.",
    "FINDINGS: The lungs are clear. Heart size is normal.\nIMPRESSION: No acute cardiopulmonary process.",
    "FINDINGS: Mild cardiomegaly. Bibasilar atelectasis.\nIMPRESSION: Cardiomegaly without edema.",
]
#: (subject, study, dicom, view, split)
ROWS = [("10000032", "50414267", "d1", "PA", "train"), ("10000032", "50414267", "d2", "LATERAL", "train"),
        ("10000764", "57375967", "d3", "AP", "train"), ("10000898", "50771383", "d4", "PA", "validate")]


def _load_recipe():
    spec = importlib.util.spec_from_file_location("mimic_cxr_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _mimic_layout(root: Path) -> None:
    studies = {}
    for i, (subject, study, dicom, _, _) in enumerate(ROWS):
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.random.default_rng(i).random((96, 80)) * 255).astype(np.uint8)).save(folder / f"{dicom}.jpg")
        studies[study] = folder.parent / f"s{study}.txt"
    for (study, path), text in zip(studies.items(), REPORTS):
        path.write_text(text)
    _write_csv(root / "mimic-cxr-2.0.0-metadata.csv", ["dicom_id", "subject_id", "study_id", "ViewPosition"],
               [[d, s, st, v] for s, st, d, v, _ in ROWS])
    _write_csv(root / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "subject_id", "split"],
               [[d, st, s, sp] for s, st, d, _, sp in ROWS])


def test_prepare_builds_a_labeled_manifest_the_trainer_reads(tmp_path):
    recipe = _load_recipe()
    root = tmp_path / "mimic-cxr-jpg"
    _mimic_layout(root)
    out = tmp_path / "vecl" / "manifest.jsonl"
    assert recipe.main(["prepare", "--root", str(root), "--out", str(out), "--", "--backend", "rules", "--quiet"]) == 0
    records = read_manifest(out)
    assert [r.extra["dicom_id"] for r in records] == ["d1", "d3", "d4"]  # the lateral view is left out
    assert all(r.sentence_labels and len(r.sentence_labels) == len(r.sentences) for r in records)
    effusion = records[0]
    assert "2+" in effusion.image_labels and "3-" in effusion.image_labels
    data = SentenceSampling(out)
    assert len(data) == 2 and data.counts.skipped == {}


def test_train_command_runs_the_bundle_with_the_paper_preset(tmp_path):
    recipe = _load_recipe()
    manifest = tmp_path / "manifest.jsonl"
    single = recipe.train_command(manifest, 1, ["--batch_size", "32"])
    assert single[1:5] == ["-m", "monai.bundle", "run", "training"]
    assert single[single.index("--network_preset") + 1] == "paper"
    assert single[single.index("--dataset_manifest") + 1] == str(manifest)
    assert single[-2:] == ["--batch_size", "32"]  # user overrides come last and win
    multi = recipe.train_command(manifest, 4, [])
    assert "torch.distributed.run" in multi and "--nproc_per_node=4" in multi
    assert "multi_gpu_train.yaml" in multi[multi.index("--config_file") + 1]
