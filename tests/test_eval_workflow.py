"""The evaluating workflow end to end on a tiny phantom: tables, plots, extras, skip log and MLflow."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator

from monai_vecl.data.manifest import Record, class_labels, read_manifest, write_manifest
from monai_vecl.data.phantom import generate_phantom
from monai_vecl.evaluation.workflow import FeatureMapStep, ProbeStep, RetrievalStep, ZeroShotEvaluation
from monai_vecl.inference import load_weights
from monai_vecl.inference.engine import ZeroShotInferer, labeled_dataset
from monai_vecl.networks import build_vecl

CLASSES = ("Atelectasis", "Pleural Effusion", "Cardiomegaly", "Lung Opacity", "Pulmonary Edema")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    manifest = generate_phantom(root / "data", n_images=40, seed=1, image_size=64, workers=1)
    records = read_manifest(manifest)
    # one unreadable image and one record without ground truth: both must be counted, not dropped silently
    (root / "data" / "broken.png").write_bytes(b"not a png")
    records.append(Record(image="broken.png", study_id="b", patient_id="b", split="test", findings={"Edema": 1}))
    records.append(Record(image=records[0].image, study_id="u", patient_id="u", split="test"))
    return write_manifest(records, root / "data" / "manifest.jsonl")


def test_class_labels_map_prompt_names_to_findings():
    recs = [
        Record(image="a", study_id="a", patient_id="a", split="test", findings={"Edema": 1, "Atelectasis": -1}),
        Record(image="b", study_id="b", patient_id="b", split="test", findings={"Edema": 0}),
    ]
    y = class_labels(recs, ["Pulmonary Edema", "Atelectasis", "Hernia"])
    assert y[0, 0] == 1 and y[1, 0] == 0 and y[0, 1] == -1
    assert np.isnan(y[1, 1]) and np.isnan(y[:, 2]).all()


def test_weights_round_trip_missing_file_and_normalisation(tmp_path):
    model = build_vecl("small", image_size=64, load_size=72)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(saved, tmp_path / "model.pt")
    with torch.no_grad():
        model.fusion_module.mlp_head[-1].weight.add_(1.0)
    load_weights(model, tmp_path / "model.pt")
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    with pytest.raises(FileNotFoundError, match="train first"):
        load_weights(model, tmp_path / "absent.pt")
    # the weights carry their intensity statistics: a network configured otherwise normalises with the trained ones
    other = build_vecl("small", image_size=64, load_size=72, intensity_mean=0.5)
    assert float(load_weights(other, tmp_path / "model.pt").intensity_mean) == pytest.approx(0.4978)


def test_evaluation_writes_tables_plots_extras_and_mlflow(phantom, tmp_path):
    torch.manual_seed(0)
    out = tmp_path / "eval"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    network = build_vecl("small", image_size=64, load_size=72)
    # the evaluator as validate#evaluator builds it; the evaluation gives it each split in turn
    evaluator = SupervisedEvaluator(device="cpu", network=network, inferer=ZeroShotInferer(CLASSES), decollate=False,
                                    val_data_loader=DataLoader(labeled_dataset(phantom, CLASSES, "validate", 64, 72)))
    ev = ZeroShotEvaluation(
        evaluator,
        phantom,
        out,
        n_bootstrap=20,
        chunk_size=16,
        extras=[
            RetrievalStep(max_images=8, max_candidates=10),
            ProbeStep(fractions=(0.1, 1.0), n_bootstrap=0),
            FeatureMapStep(max_images=16),
        ],
        tracking_uri=uri,
        experiment="eval-test",
        artifact_root=tmp_path / "artifacts",
    )
    summary = ev.run()
    for split in ("test", "test_shifted"):
        for mode in ("pos", "pnc"):
            rows = list(csv.DictReader(open(out / f"{split}_{mode}.csv")))
            assert [r["class"] for r in rows] == [*CLASSES, "macro"]
            assert {"auc", "oracle_f1", "oracle_mcc", "val_f1", "auc_ci_low"} <= set(rows[0])
            payload = json.loads((out / f"{split}_{mode}.json").read_text())
            assert "oracle" in payload["protocol"] and payload["mode"] == mode
            assert (out / f"{split}_{mode}_curves.png").stat().st_size > 1000
            macro = summary[f"{split}_{mode}"]["auc"]
            assert macro is None or 0 <= macro <= 1
    # each split went through the evaluator: its readable records with ground truth, no more, no fewer
    def readable(split):
        return len([r for r in read_manifest(phantom, split) if r.findings and r.image != "broken.png"])

    assert summary["n_validation_images"] == readable("validate") > 0
    assert json.loads((out / "test_pnc.json").read_text())["n_images"] == readable("test") > 0
    skipped = json.loads((out / "skipped.json").read_text())
    assert summary["skipped"] == len(skipped) >= 2
    assert [s["image"] for s in skipped].count("broken.png") == 1  # logged once although several steps read it
    assert any("no ground truth" in s["reason"] for s in skipped)
    assert {"bleu1", "bleu2", "rouge_l", "cider"} <= set(summary["retrieval_test"])
    assert summary["probe_100pct_test"]["n_train"] > summary["probe_10pct_test"]["n_train"]
    assert (out / summary["feature_map"]["png"]).is_file()

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(summary["mlflow_run_id"])
    assert "test_pnc_macro_auc" in run.data.metrics or "test_pnc_macro_ap" in run.data.metrics
    assert "retrieval_test_bleu1" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"test_pnc.csv", "test_shifted_pos_curves.png", "summary.json"} <= artifacts
    shutil.rmtree(tmp_path / "artifacts")
