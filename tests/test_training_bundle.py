"""The training bundle end to end on a tiny phantom: run, stop mid-run, resume, MLflow read-back, configs."""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from monai.bundle import ConfigParser, ConfigWorkflow

from monai_vecl.data.phantom import PHANTOM_CLASSES, generate_phantom
from monai_vecl.losses import LOSS_KINDS
from monai_vecl.networks import VECLNetwork, build_vecl
from monai_vecl.thresholds import load_thresholds

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "vecl_cxr"
TINY_BERT = {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 32}
TINY = {
    "network_def#image_size": 32, "network_def#load_size": 40, "network_def#patch_size": 16,
    "network_def#vit_hidden_size": 16, "network_def#vit_mlp_dim": 32, "network_def#vit_num_layers": 1,
    "network_def#vit_num_heads": 2, "network_def#text_config": TINY_BERT, "network_def#text_last_n_layers": 2,
    "network_def#d_model": 16, "network_def#fusion_layers": 1, "network_def#fusion_heads": 2,
    "network_def#fusion_ffn_dim": 32, "network_def#head_dims": [16], "network_def#cnn_channels": [8, 8, 16, 16],
    "freeze_text": False,
    "batch_size": 8, "max_epochs": 2, "num_workers": 0, "val_batch_size": 16, "progress": False,
    "learning_rate": 1e-3,
}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return generate_phantom(tmp_path_factory.mktemp("phantom"), n_images=64, seed=5, image_size=64, workers=1)


@pytest.fixture()
def bundle(tmp_path):
    """A copy of the bundle's configs in a fresh bundle root."""
    shutil.copytree(BUNDLE / "configs", tmp_path / "configs")
    return tmp_path


def run_training(bundle: Path, phantom: Path, interrupt_at: int | None = None, tracking: str | None = "mlflow",
                 **overrides) -> ConfigWorkflow:
    """Run the bundle's ``training`` list as ``python -m monai.bundle run training ... --tracking mlflow`` does;
    ``interrupt_at``: Ctrl-C arrives while that iteration runs (fault injection through a trainer event)."""
    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / "train.yaml"), meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False, workflow_type="train", run_id="training", tracking=tracking,
        bundle_root=str(bundle), dataset_manifest=str(phantom), **{**TINY, **overrides},
    )
    workflow.initialize()
    if interrupt_at is not None:
        from ignite.engine import Events

        def interrupt(engine):
            raise KeyboardInterrupt

        trainer = workflow.parser.get_parsed_content("train#trainer")
        trainer.add_event_handler(Events.ITERATION_STARTED(once=interrupt_at), interrupt)
    workflow.run()
    workflow.finalize()
    return workflow


def run_evaluation(bundle: Path, phantom: Path, tracking: str | None = "mlflow", **overrides) -> dict:
    """Run the bundle's ``evaluating`` list (train.yaml + evaluate.yaml) as the README does after training; returns
    the summary it writes. ``--tracking mlflow`` must not add a run: the evaluation logs its own."""
    configs = [str(bundle / "configs" / name) for name in ("train.yaml", "evaluate.yaml")]
    workflow = ConfigWorkflow(config_file=configs, meta_file=str(bundle / "configs" / "metadata.json"),
                              logging_file=False, run_id="evaluating", tracking=tracking, bundle_root=str(bundle),
                              **{**TINY, "dataset_manifest": str(phantom), "eval_extras": [], "n_bootstrap": 20,
                                 **overrides})
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return json.loads((Path(workflow.parser.get_parsed_content("eval_dir")) / "summary.json").read_text())


def test_train_stop_resume_and_mlflow_store(bundle, phantom):
    from mlflow import MlflowClient

    with pytest.raises(KeyboardInterrupt):
        run_training(bundle, phantom, interrupt_at=4)
    last = bundle / "outputs" / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=False)
    assert state["trainer"]["iteration"] == 3  # the interrupted iteration 4 did not count: it runs again

    second = run_training(bundle, phantom)
    summary = run_evaluation(bundle, phantom)
    trainer = second.parser.get_parsed_content("train#trainer")
    total = 2 * trainer.loader.steps_per_epoch
    assert trainer.state.iteration == total and trainer.state.epoch == 2

    client = MlflowClient(tracking_uri=f"sqlite:///{(bundle / 'outputs' / 'mlflow.db').resolve()}")
    all_runs = client.search_runs([client.get_experiment_by_name("vecl").experiment_id])
    evaluations = [r for r in all_runs if r.info.run_name.startswith("evaluate-")]
    runs = [r for r in all_runs if r not in evaluations]
    assert len(runs) == 1  # the resumed run continued the same MLflow run; the evaluation added none but its own
    assert len(evaluations) == 1 and "test_pnc_macro_auc" in evaluations[0].data.metrics  # the evaluation's test table
    run = runs[0]
    assert run.info.status == "FINISHED"
    loss_steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert sorted(loss_steps) == list(range(1, total + 1))  # every step once: resumed at step 4
    assert len(client.get_metric_history(run.info.run_id, "lr_group_0")) == total
    aucs = [m.value for m in client.get_metric_history(run.info.run_id, "val_pnc_auc")]
    assert len(aucs) == 2 and all(0.0 <= a <= 1.0 for a in aucs)
    params = run.data.params
    assert params["loss.kind"] == "vecl" and float(params["optimizer.lr"]) == 1e-3
    assert params["optimizer.betas"] == "[0.9, 0.999]" and params["training.grad_clip"] == "1.0"
    assert params["loss.sentences_per_image"] == "4" and params["scheduler.name"] == "onecycle"
    # learning is visible per epoch: fit on the training subset, loss terms, target statistics
    for name in ("train_pnc_auc", "epoch_loss/i2t/entail", "epoch_loss/t2i/diagonal",
                 "epoch_targets/frac_entail", "epoch_fusion/std_over_images"):
        assert len(client.get_metric_history(run.info.run_id, name)) == 2, name
    assert params["network.d_model"] == "16" and params["loader.backend"] in ("dali", "monai")
    assert any(a.path.endswith(".json") for a in client.list_artifacts(run.info.run_id))  # the executed config

    weights = torch.load(bundle / "models" / "model.pt", weights_only=True)
    network = second.parser.get_parsed_content("network")
    network.load_state_dict(weights)  # a plain state_dict of the network, strict
    best = torch.load(last, weights_only=False)["best"]
    assert best["best"] == max(aucs) and best["best_epoch"] == 1 + aucs.index(max(aucs))

    # the evaluation after training: test tables, and thresholds chosen on the validation split beside the model
    assert 0.0 <= summary["test_pnc"]["auc"] <= 1.0 and "test_shifted_pnc" in summary
    table = load_thresholds(bundle / "models" / "thresholds.json")
    assert (table.split, table.rule, table.score_mode) == ("validate", "max_f1", "pnc")
    assert table.model_sha256 == hashlib.sha256((bundle / "models" / "model.pt").read_bytes()).hexdigest()
    assert set(table.thresholds) <= set(PHANTOM_CLASSES) and table.thresholds
    for name, value in table.thresholds.items():
        figures = table.figures[name]
        assert 0 < figures["n_pos"] < figures["n"] and 0.0 <= figures["f1"] <= 1.0 and 0.0 <= value <= 1.0

    # the validation AUC logged in training is the evaluation's AUC on the same split and weights
    check = run_evaluation(bundle, phantom, eval_splits=["validate"], eval_validation_split=None, eval_modes=["pnc"],
                           n_bootstrap=0, tracking=None, tracking_uri=None, thresholds_file=None,
                           eval_dir=str(bundle / "outputs" / "check"))
    assert check["validate_pnc"]["auc"] == pytest.approx(max(aucs), abs=1e-6)


def test_resume_with_another_configuration_is_refused(bundle, phantom):
    with pytest.raises(KeyboardInterrupt):
        run_training(bundle, phantom, interrupt_at=2, tracking=None)
    with pytest.raises(RuntimeError) as err:  # the bundle's expression runner wraps the trainer's error
        run_training(bundle, phantom, tracking=None, learning_rate=2e-3)
    assert "differs from the checkpoint's in ['optimizer.lr']" in str(err.value.__cause__)


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_loss_kind_comes_from_the_config(kind):
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.yaml"))
    parser["loss_kind"] = kind
    assert parser.get_parsed_content("loss").kind == kind


def test_reference_recipe_restored_by_the_paper_overrides():
    import importlib.util

    spec = importlib.util.spec_from_file_location("mimic_cxr_recipe", BUNDLE.parents[1] / "training" / "mimic_cxr.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    PAPER_OVERRIDES = recipe.PAPER_OVERRIDES
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.yaml"))
    config = parser.config
    assert config["loss_kind"] == "vecl" and config["network_preset"] == "small"
    assert "training" in config and "$" not in json.dumps(config["bundle_root"])
    for key, value in PAPER_OVERRIDES.items():
        parser[key] = ast.literal_eval(value) if value[0] in "[0123456789" else value
    assert parser["betas"] == [0.5, 0.999] and parser["weight_decay"] == 1e-6 and parser["grad_clip"] == 0.25
    assert parser["learning_rate"] == 5e-5 and parser["sentences_per_image"] == 1
    assert parser["lr_schedule"] == "plateau" and parser["augmentation"]["rotate_deg"] == 30.0


def test_inference_config_and_metadata_agree():
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.yaml"))
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert parser["network_def"]["_target_"] == "monai_vecl.networks.build_vecl"
    assert parser["class_names"] == list(PHANTOM_CLASSES)
    # MONAI's layout: network_data_format is the exported head (`pred`: a score per class), the network's own
    # relation logits are described under vecl_network_data_format
    assert list(meta["network_data_format"]["outputs"]["pred"]["channel_def"].values()) == list(PHANTOM_CLASSES)
    outputs = meta["vecl_network_data_format"]["outputs"]
    assert outputs["relation_logits"]["channel_def"] == {"0": "entail", "1": "neutral", "2": "contradict"}
    for field in ("version", "changelog", "monai_version", "pytorch_version", "numpy_version", "task",
                  "description", "authors", "copyright", "data_source", "intended_use", "references"):
        assert meta[field], field
    network = parser.get_parsed_content("network_def")
    assert isinstance(network, VECLNetwork)
    assert (network.image_size, network.load_size) == (parser["image_size"], parser["load_size"])


def test_normalisation_override_reaches_validation_evaluation_and_deployment(bundle, phantom):
    """`--network_def#intensity_mean 0.3` in training: the weights carry it, and every later use normalises so."""
    from monai_vecl.deploy.pipeline import load_bundle
    from monai_vecl.inference import load_weights

    workflow = run_training(bundle, phantom, tracking=None, max_epochs=1,
                            **{"network_def#intensity_mean": 0.3})
    network = workflow.parser.get_parsed_content("network")
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    assert evaluator.network is network and float(network.intensity_mean) == pytest.approx(0.3)  # training, validation
    weights = bundle / "models" / "model.pt"
    assert float(torch.load(weights, weights_only=True)["intensity_mean"]) == pytest.approx(0.3)
    # the evaluation and the deployment build the network from their own (default) configs, then load the weights
    tiny = {k.split("#", 1)[1]: v for k, v in TINY.items() if k.startswith("network_def#")}
    assert float(load_weights(build_vecl("small", **tiny), weights).intensity_mean) == pytest.approx(0.3)
    inference = bundle / "configs" / "inference.yaml"
    config = yaml.safe_load(inference.read_text())
    config["network_def"].update(tiny)  # the tiny test network, default normalisation
    inference.write_text(yaml.safe_dump(config))
    assert float(load_bundle(bundle, torch.device("cpu")).network.intensity_mean) == pytest.approx(0.3)


@pytest.mark.slow
def test_torchrun_two_processes_with_multi_gpu_config(bundle, phantom):
    """The documented multi-GPU command on CPU: torchrun, 2 gloo processes, train.yaml + multi_gpu_train.yaml."""
    import subprocess
    import sys

    configs = repr([str(bundle / "configs" / "train.yaml"), str(bundle / "configs" / "multi_gpu_train.yaml")])
    overrides = {**TINY, "batch_size": 4, "max_epochs": 1, "train_fit_images": 0,
                 "num_workers": 0, "dataset_manifest": str(phantom), "bundle_root": str(bundle)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle",
           "run", "training", "--config_file", configs, "--tracking", "mlflow"]
    for key, value in overrides.items():
        cmd += [f"--{key}", json.dumps(value) if isinstance(value, (dict, list)) else str(value)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                                 "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    state = torch.load(bundle / "outputs" / "checkpoints" / "last.pt", weights_only=False)
    assert state["run_config"]["training.world_size"] == "2"
    assert state["trainer"]["iteration"] == 41 // (4 * 2)  # 41 training images, global batch of 8
    assert (bundle / "models" / "model.pt").is_file()  # rank 0 wrote the best weights
