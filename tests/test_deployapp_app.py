"""The MONAI Deploy application end to end on a folder: `python deploy/app.py -i IN -o OUT` on CPU, with the
bundle's calibrated thresholds, a site override, a finding without threshold and a notice SR."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import torch
import yaml
from deployapp_dicom import make_dx, measurement_groups, ramp, rg1_path, validate_sr

from monai_vecl.networks import build_vecl
from monai_vecl.thresholds import ThresholdTable, save_thresholds

REPO = Path(__file__).resolve().parents[1]


def test_app_writes_one_sr_per_frontal_chest_study_and_explains_the_rest(tmp_path):
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    (inbox / "cr").mkdir(parents=True)
    shutil.copy(rg1_path("RG1_J2KR.dcm"), inbox / "cr" / "image.dcm")
    lateral = make_dx(inbox / "lateral.dcm", ramp(), view="LL", bits_stored=12)
    (inbox / "readme.txt").write_text("not dicom")
    bundle = tmp_path / "bundle"  # the repo bundle's configs with fresh weights, given with -m as a user would
    shutil.copytree(REPO / "bundles" / "vecl_cxr" / "configs", bundle / "configs")
    (bundle / "models").mkdir()
    torch.save(build_vecl("small").state_dict(), bundle / "models" / "model.pt")
    weights_hash = hashlib.sha256((bundle / "models" / "model.pt").read_bytes()).hexdigest()
    class_names = yaml.safe_load((bundle / "configs" / "inference.yaml").read_text())["class_names"]
    calibrated = {class_names[0]: 0.0, class_names[1]: 1.0}  # always present / always absent
    save_thresholds(ThresholdTable(calibrated, "pnc", "validate", "max_f1", model_sha256=weights_hash),
                    bundle / "models" / "thresholds.json")
    config = yaml.safe_load((REPO / "deploy" / "config.yaml").read_text())
    config["deploy"]["device"] = "cpu"
    config["deploy"]["site_thresholds"] = {class_names[1]: 0.0}  # the site override wins: present
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "VECL_DEPLOY_CONFIG": str(tmp_path / "config.yaml"), "HF_HUB_OFFLINE": "1"}
    # holoscan, under the SDK, wants a 32 MB stack (docs/deploy_app.md)
    app = REPO / "deploy" / "app.py"
    cmd = f"ulimit -s 32768 2>/dev/null; exec {sys.executable} {app} -i {inbox} -o {outbox} -m {bundle}"
    run = subprocess.run(
        ["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "UNTRAINED" not in run.stderr + run.stdout

    summary = json.loads((outbox / "results.json").read_text())
    by_study = {s["study_instance_uid"]: s for s in summary["studies"]}
    cr_study = pydicom.dcmread(rg1_path("RG1_J2KR.dcm"), stop_before_pixels=True)
    lateral_study = pydicom.dcmread(lateral, stop_before_pixels=True).StudyInstanceUID
    assert set(by_study) == {cr_study.StudyInstanceUID, lateral_study}
    notice = by_study[lateral_study]
    assert notice["sr_file"] and "lateral view" in notice["skipped_reason"] and notice["scores"] == {}
    assert list(summary["unreadable_files"]) == [str(inbox / "readme.txt")]

    written = by_study[cr_study.StudyInstanceUID]
    sr_path = outbox / written["sr_file"]
    # the grounding SEG of the findings called present goes next to the SR (deploy.grounding, on by default)
    assert written["seg_file"] and notice["seg_file"] is None
    listed = [written["sr_file"], written["seg_file"], notice["sr_file"], "results.json"]
    assert sorted(p.name for p in outbox.iterdir()) == sorted(listed)
    assert validate_sr(sr_path) == [] and validate_sr(outbox / notice["sr_file"]) == []
    sr = pydicom.dcmread(sr_path)
    assert sr.StudyInstanceUID == cr_study.StudyInstanceUID and sr.VerificationFlag == "UNVERIFIED"
    groups = measurement_groups(sr)
    assert len(groups) == len(class_names) == len(written["scores"])  # config findings: [] = the bundle's
    assert all(g["source_sop"] == cr_study.SOPInstanceUID for g in groups)
    assert f"model_sha256={weights_hash[:16]}" in groups[0]["parameters"]  # -m's weights were the ones used
    calls = [g.get("evaluation", (None, None, None))[2] for g in groups]
    assert calls == ["Present", "Present"] + [None] * (len(class_names) - 2)
    assert written["present"] == class_names[:2]
    assert written["thresholds"][class_names[0]]["source"].startswith("calibrated: max_f1 on validate split")
    assert written["thresholds"][class_names[1]]["source"].startswith("site override")
    assert written["thresholds"][class_names[2]] == {"threshold": None, "source": "none calibrated: score only"}
    bundle_version = json.loads((bundle / "configs" / "metadata.json").read_text())["version"]
    assert groups[0]["Algorithm Version"].endswith(f"bundle {bundle_version}")
    assert not list(tmp_path.glob("*.dcm"))  # nothing stray beside the output folder
