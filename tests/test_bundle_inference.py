"""The bundle's inference side as MONAI tools use it: the README's `run` (inference.yaml alone and after train.yaml),
`verify_metadata`, `verify_net_in_out` and `ckpt_export` commands run through MONAI's own command line, the
inference and training property sets, and the exported head scoring like ZeroShotClassifier without a text encoder."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import yaml
from deployapp_dicom import make_dx, ramp, rg1_path
from monai.bundle import ConfigWorkflow
from PIL import Image

from monai_vecl.data.dicom_image import dicom_to_gray01
from monai_vecl.data.manifest import Record, write_manifest
from monai_vecl.data.phantom import generate_phantom
from monai_vecl.data.preprocess import read_gray
from monai_vecl.deploy.pipeline import load_bundle
from monai_vecl.inference import NEG_TEMPLATE, POS_TEMPLATE, ZeroShotClassifier, pnc, preprocess
from monai_vecl.inference.export import HeadContract
from monai_vecl.inference.head import ZeroShotHead
from monai_vecl.inference.workflow import calibrated_thresholds, list_images
from monai_vecl.networks import build_vecl
from monai_vecl.thresholds import ThresholdTable, save_thresholds

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "vecl_cxr"
SCHEMA = Path(__file__).parent / "fixtures" / "bundle" / "meta_schema_20240725.json"
CLASSES = yaml.safe_load((BUNDLE / "configs" / "inference.yaml").read_text())["class_names"]
CALLED = CLASSES[:2]  # the findings the test calibrates; the others get no call
UNREADABLE = {"UnidentifiedImageError: cannot identify image file '<file>'": 2,
              "DicomImageError: expected a grayscale image (MONOCHROME1/2), got RGB photometric": 1}


def readme_commands() -> dict[str, list[str]]:
    """The `python -m monai.bundle` commands of the README's "Inference and export" section, by subcommand (and
    `run` / `run composed`), as argument lists."""
    text = (BUNDLE / "docs" / "README.md").read_text()
    section = text.split("## Inference and export", 1)[1].split("\n## ", 1)[0]
    lines = " ".join(re.findall(r"```bash\n(.*?)```", section, re.S)).replace("\\\n", " ").splitlines()
    commands = {}
    for line in lines:
        if line.strip().startswith("python -m monai.bundle "):
            argv = shlex.split(line)[3:]
            commands[argv[0] + (" composed" if "train.yaml" in line else "")] = argv
    return commands


def monai_bundle(argv: list[str], bundle: Path, images: Path | None = None) -> None:
    """Run ``python -m monai.bundle <argv>`` from the repository root in this process, through the same fire command
    line, with the README's bundle path and image folder replaced by the test's."""
    import fire
    from monai.bundle import scripts

    argv = [a.replace("bundles/vecl_cxr", str(bundle)).replace("<image_folder>", str(images)) for a in argv]
    commands = ("run", "ckpt_export", "verify_metadata", "verify_net_in_out")
    with contextlib.chdir(REPO):
        fire.Fire({name: getattr(scripts, name) for name in commands}, command=argv, name="monai.bundle")


@pytest.fixture(scope="module")
def network():
    """The bundle's network (small preset, 128 px), untrained, with a widened relation head so that scores spread."""
    torch.manual_seed(0)
    model = build_vecl("small").eval()
    with torch.no_grad():
        for param in model.fusion_module.mlp_head.parameters():
            param.mul_(5.0)
    return model


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder as a site would hand it over: PNG (8- and 16-bit), JPEG, DICOM (a real CR, a MONOCHROME1 file without
    a suffix), two files that are no images, an RGB DICOM, and a text file."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (root / "ward").mkdir()
    Image.fromarray(rng.integers(0, 255, (90, 120), dtype=np.uint8)).save(root / "ward" / "frontal.png")
    Image.fromarray(rng.integers(0, 60000, (100, 80), dtype=np.uint16)).save(root / "dark16.png")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "colour.jpg")
    shutil.copy(rg1_path(), root / "cr.dcm")
    make_dx(root / "IM0001", ramp(top=4095), bits_stored=12, photometric="MONOCHROME1", WindowCenter=2000,
            WindowWidth=3000)
    (root / "broken.png").write_bytes(b"not a png")
    (root / "empty.dcm").write_bytes(b"")
    make_dx(root / "rgb.dcm", ramp(), photometric="RGB")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def reference(network, images):
    """POS / PNC of the readable images by the inference contract (ZeroShotClassifier), by image name."""
    names = ["IM0001", "colour.jpg", "cr.dcm", "dark16.png", "ward/frontal.png"]
    x = torch.stack([preprocess(read_gray(images / name), network) for name in names])
    p_pos, p_neg = ZeroShotClassifier(network, CLASSES).entail(x)
    p_pnc = pnc(p_pos, p_neg)
    return {name: (p_pos[i], p_pnc[i]) for i, name in enumerate(names)}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, network, reference):
    """The repo bundle's configs with the test network's weights and thresholds calibrated for them (the median
    PNC of the test images, so that both calls occur) for two findings."""
    root = tmp_path_factory.mktemp("bundle")
    shutil.copytree(BUNDLE / "configs", root / "configs")
    (root / "models").mkdir()
    torch.save(network.state_dict(), root / "models" / "model.pt")
    sha = hashlib.sha256((root / "models" / "model.pt").read_bytes()).hexdigest()
    scores = torch.stack([s for _, s in reference.values()])
    thresholds = {name: float(scores[:, CLASSES.index(name)].median()) for name in CALLED}
    save_thresholds(ThresholdTable(thresholds, "pnc", "validate", "max_f1", model_sha256=sha),
                    root / "models" / "thresholds.json")
    return root


def test_the_readme_section_has_the_commands_these_tests_run():
    assert set(readme_commands()) == {"run", "run composed", "verify_metadata", "verify_net_in_out", "ckpt_export"}


@pytest.mark.parametrize("command", ["run", "run composed"])
def test_run_scores_a_folder_like_the_classifier_and_calls_at_the_thresholds(command, bundle, images, reference):
    out = bundle / "outputs" / command.replace(" ", "_")
    monai_bundle(readme_commands()[command] + ["--infer_dir", str(out)], bundle, images)

    summary = json.loads((out / "scores.json").read_text())
    assert summary["counts"] == {"images": 8, "scored": 5, "unreadable": 3, "unreadable_by_reason": UNREADABLE,
                                 "ignored_files": {".txt": 1}}
    assert summary["class_names"] == CLASSES and summary["score_mode"] == "pnc"
    assert summary["thresholds"]["description"] == "max_f1 on validate split (pnc), 2 findings"
    table = json.loads((bundle / "models" / "thresholds.json").read_text())["thresholds"]
    scored = {r["image"]: r["findings"] for r in summary["images"] if r["status"] == "scored"}
    assert set(scored) == set(reference)
    calls = {name: set() for name in CLASSES}
    for name, findings in scored.items():
        p_pos, p_pnc = reference[name]
        assert list(findings) == CLASSES
        for c, finding in enumerate(CLASSES):
            got = findings[finding]
            assert abs(got["pos"] - float(p_pos[c])) <= 1e-5 and abs(got["pnc"] - float(p_pnc[c])) <= 1e-5
            calls[finding].add(got["call"])
            if finding in CALLED:
                threshold = table[finding]["threshold"]
                assert got["call"] == ("present" if got["pnc"] >= threshold else "absent")
    assert all(calls[f] == {"present", "absent"} for f in CALLED)  # the thresholds are medians: both calls occur
    assert all(calls[f] == {None} for f in CLASSES if f not in CALLED)  # no threshold, no call
    unreadable = {r["image"]: r["reason"] for r in summary["images"] if r["status"] == "unreadable"}
    assert set(unreadable) == {"broken.png", "empty.dcm", "rgb.dcm"}

    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == 5 * len(CLASSES) + 3
    row = next(r for r in rows if r["image"] == "cr.dcm" and r["finding"] == CALLED[0])
    assert float(row["pnc"]) == pytest.approx(scored["cr.dcm"][CALLED[0]]["pnc"], abs=1e-6)
    assert row["call"] == scored["cr.dcm"][CALLED[0]]["call"]
    assert {r["reason"] for r in rows if r["status"] == "unreadable"} == set(UNREADABLE)


def test_run_scores_the_records_of_a_manifest_split(bundle, images, reference):
    records = [Record(image=str(images / name), study_id=name, patient_id="p", split=split)
               for name, split in (("cr.dcm", "test"), ("dark16.png", "train"), ("IM0001", "test"))]
    manifest = write_manifest(records, bundle / "manifest.jsonl")
    out = bundle / "outputs" / "manifest"
    monai_bundle(readme_commands()["run"] + ["--input_manifest", str(manifest), "--input_split", "test",
                                             "--infer_dir", str(out)], bundle, images)
    summary = json.loads((out / "scores.json").read_text())
    assert summary["source"] == f"{manifest} (split test)"
    assert [r["image"] for r in summary["images"]] == [str(images / "cr.dcm"), str(images / "IM0001")]
    pnc = summary["images"][0]["findings"][CLASSES[3]]["pnc"]
    assert pnc == pytest.approx(float(reference["cr.dcm"][1][3]), abs=1e-5)


@pytest.mark.parametrize("configs", [["inference.yaml"], ["train.yaml", "inference.yaml"]])
def test_inference_property_set(configs, bundle, images):
    workflow = ConfigWorkflow(config_file=[str(bundle / "configs" / c) for c in configs], workflow_type="infer",
                              logging_file=False, bundle_root=str(bundle), dataset_dir=str(images))
    workflow.initialize()
    assert workflow.check_properties() == []
    assert len(workflow.dataset) == 8 and workflow.evaluator.inferer is workflow.inferer


def test_training_property_set(tmp_path):
    from test_training_bundle import TINY

    manifest = generate_phantom(tmp_path / "phantom", n_images=64, seed=5, image_size=64, workers=1)
    workflow = ConfigWorkflow(config_file=str(BUNDLE / "configs" / "train.yaml"), workflow_type="train",
                              logging_file=False, bundle_root=str(tmp_path), dataset_manifest=str(manifest),
                              loader_backend="monai", **TINY)
    workflow.initialize()
    assert workflow.check_properties() == []
    assert workflow.max_epochs == TINY["max_epochs"] and workflow.trainer.state.max_epochs == TINY["max_epochs"]


def test_metadata_follows_the_bundle_schema(bundle, tmp_path):
    from monai.bundle import verify_metadata

    monai_bundle(readme_commands()["verify_metadata"], bundle)  # the shipped schema file: nothing is downloaded
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert list(meta["network_data_format"]["outputs"]["pred"]["channel_def"].values()) == CLASSES
    # the old deviation (a word in a value range) is what the schema rejects
    meta["vecl_network_data_format"]["inputs"]["input_ids"]["value_range"] = [0, "vocabulary size"]
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="'vocabulary size' is not of type 'number'"):
        verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(SCHEMA))


def test_verify_net_in_out_checks_the_export_head(bundle):
    monai_bundle(readme_commands()["verify_net_in_out"], bundle)
    with pytest.raises(ValueError, match="output channel number `12` doesn't match: `5`"):
        monai_bundle(readme_commands()["verify_net_in_out"] + ["--_meta_#network_data_format#outputs#pred#num_channels",
                                                               "5"], bundle)


def test_exported_head_scores_like_the_classifier_without_a_text_encoder(bundle, images, reference, network, tmp_path):
    from monai.data import load_net_with_metadata

    monai_bundle(readme_commands()["ckpt_export"], bundle)
    exported = bundle / "models" / "model.ts"
    head, meta, extra = load_net_with_metadata(exported, more_extra_files=["inference.json"])
    assert meta["version"] == json.loads((BUNDLE / "configs" / "metadata.json").read_text())["version"]
    assert json.loads(extra["inference.json"])["class_names"] == CLASSES
    # the deployment contract the head records, as the deploy app reads it (no ConfigParser)
    sha = hashlib.sha256((bundle / "models" / "model.pt").read_bytes()).hexdigest()
    assert HeadContract.from_buffer(head.deploy_contract, str(exported)) == HeadContract(
        tuple(CLASSES), POS_TEMPLATE, NEG_TEMPLATE, "pnc", 128, 144, sha, "thresholds.json")
    loaded = load_bundle(bundle, torch.device("cpu"), exported=True)
    assert loaded.thresholds_file == bundle / "models" / "thresholds.json" and loaded.model_sha256 == sha
    names = list(reference)
    x = torch.stack([preprocess(read_gray(images / name), network) for name in names])  # 5 images, traced with 1
    expected = torch.stack([reference[name][1] for name in names])
    with torch.no_grad():
        assert (head(x) - expected).abs().max() <= 1e-5

    # a fresh interpreter loads and runs it with torch alone: no transformers, no tokenizer, no text encoder
    torch.save(x, tmp_path / "x.pt")
    script = (f"import sys, torch; m = torch.jit.load({str(exported)!r}); y = m(torch.load({str(tmp_path / 'x.pt')!r}));"
              f"torch.save(y, {str(tmp_path / 'y.pt')!r}); print(sorted(k for k in sys.modules if 'transformers' in k))")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"
    assert (torch.load(tmp_path / "y.pt") - expected).abs().max() <= 1e-5
    assert exported.stat().st_size < (bundle / "models" / "model.pt").stat().st_size / 4  # no text encoder weights


def test_head_records_the_digest_of_its_model_file_only_for_that_files_weights(network, tmp_path):
    weights = tmp_path / "model.pt"
    torch.save(network.state_dict(), weights)
    head = ZeroShotHead(build_vecl("small").eval(), CLASSES[:2], model_file=weights)
    assert HeadContract.from_buffer(head.deploy_contract, "head").model_sha256 is None  # no weights loaded yet
    head.load_state_dict(torch.load(weights, weights_only=True))
    assert HeadContract.from_buffer(head.deploy_contract, "head").model_sha256 == hashlib.sha256(
        weights.read_bytes()).hexdigest()
    torch.manual_seed(5)
    with pytest.raises(ValueError, match="not those of its model_file"):
        head.load_state_dict(build_vecl("small").state_dict())


def test_head_loads_the_network_weights_and_encodes_the_prompts_again(network):
    torch.manual_seed(7)
    other = build_vecl("small").eval()
    head = ZeroShotHead(other, CLASSES[:3], score_mode="pos")
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        before = head(x)
        head.load_state_dict(network.state_dict())  # what CheckpointLoader and ckpt_export do with model.pt
        after = head(x)
    assert (after - ZeroShotClassifier(network, CLASSES[:3]).scores(x, "pos")).abs().max() <= 1e-5
    assert (after - before).abs().max() > 1e-3
    assert head.state_dict().keys() == network.state_dict().keys()
    assert not any(name.startswith("text_encoder") for name, _ in head.named_parameters())


def test_read_gray_shows_dicom_files_through_the_display_reader(images):
    for name in ("cr.dcm", "IM0001"):  # by content, not by name
        expected = dicom_to_gray01(pydicom.dcmread(images / name))
        assert np.array_equal(read_gray(images / name), expected)
    assert read_gray(images / "IM0001")[0, 0] == 1.0  # MONOCHROME1: the darkest stored value shows white


def test_inputs_and_thresholds_fail_naming_the_source(tmp_path, bundle):
    with pytest.raises(FileNotFoundError, match="missing is not a folder"):
        list_images(tmp_path / "missing")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=r"notes: no images to score .* \{'.txt': 1\}"):
        list_images(tmp_path / "notes")

    thresholds, model = bundle / "models" / "thresholds.json", bundle / "models" / "model.pt"
    assert calibrated_thresholds(tmp_path / "none.json", "pnc", model) is None
    with pytest.raises(ValueError, match="calibrated for score_mode 'pnc', this run scores 'pos'"):
        calibrated_thresholds(thresholds, "pos", model)
    (tmp_path / "other.pt").write_bytes(b"other weights")
    with pytest.raises(ValueError, match="calibrated for model sha256 .* re-run the evaluation"):
        calibrated_thresholds(thresholds, "pnc", tmp_path / "other.pt")
