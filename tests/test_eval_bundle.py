"""bundles/vecl_cxr/configs/evaluate.yaml composes with train.yaml and its `evaluating` list runs."""

from __future__ import annotations

import json
from pathlib import Path

import torch

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "vecl_cxr"


def test_evaluating_runs_from_the_bundle_config(tmp_path, capsys):
    from monai.bundle import ConfigParser

    from monai_vecl.data.phantom import generate_phantom
    from monai_vecl.networks import build_vecl

    manifest = generate_phantom(tmp_path / "phantom", n_images=40, seed=2, image_size=64, workers=1)
    net = {"image_size": 64, "load_size": 72}
    torch.manual_seed(0)
    torch.save(build_vecl("small", freeze_text=True, **net).state_dict(), tmp_path / "model.pt")

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / "train.yaml"), str(BUNDLE / "configs" / "evaluate.yaml")])
    parser.update(
        {
            "bundle_root": str(BUNDLE),
            "output_dir": str(tmp_path / "out"),
            "model_file": str(tmp_path / "model.pt"),
            "dataset_manifest": str(manifest),
            "eval_splits": ["test"],
            "n_bootstrap": 10,
            "eval_extras": [],
            "eval_dataset": "chexpert",
            "network_def#image_size": 64,
            "network_def#load_size": 72,
            "tracking_uri": None,  # MLflow logging is covered by test_eval_workflow
        }
    )
    parser.get_parsed_content("evaluating")
    assert '"test_pnc"' in capsys.readouterr().out  # the run list prints the summary
    out = tmp_path / "out" / "eval"
    summary = json.loads((out / "summary.json").read_text())
    rows = json.loads((out / "test_pnc.json").read_text())["rows"]
    # --eval_dataset chexpert selects the 5 CheXpert prompt names; the phantom has truth for all of them
    assert [r["class"] for r in rows] == [
        "Atelectasis",
        "Cardiomegaly",
        "Pulmonary Consolidation",
        "Pulmonary Edema",
        "Pleural Effusion",
        "macro",
    ]
    assert summary["checkpoint"] == str(tmp_path / "model.pt") and summary["skipped"] == 0
    assert (out / "test_pos_curves.png").is_file() and not (tmp_path / "out" / "mlflow.db").exists()
