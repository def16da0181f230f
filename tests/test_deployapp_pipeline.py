"""StudyPipeline: the bundle as the source of truth (class names, prompts, score mode, geometry, thresholds),
scoring wiring, calibrated and site thresholds, study triage, notice SRs, bad instances, typed site config."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import yaml
from deployapp_dicom import make_dx, measurement_groups, ramp, rg1_path, validate_sr
from PIL import Image

from monai_vecl.data.manifest import image_path, read_manifest
from monai_vecl.data.phantom import generate_phantom
from monai_vecl.data.preprocess import preprocess_gray
from monai_vecl.data.dicom_image import dicom_to_gray01
from monai_vecl.deploy.pipeline import (
    PipelineConfig,
    StudyPipeline,
    group_by_study,
    load_bundle,
    resolve_findings,
    resolve_thresholds,
    save_sr,
)
from monai_vecl.inference.export import HeadContract
from monai_vecl.inference.head import ZeroShotHead
from monai_vecl.inference.zero_shot import ZeroShotClassifier
from monai_vecl.networks import build_vecl
from monai_vecl.thresholds import ThresholdTable, save_thresholds

CLASSES = ["Pleural Effusion", "Cardiomegaly", "Pulmonary Consolidation", "Pneumothorax"]
NAMES = ["Pleural Effusion", "Cardiomegaly", "Pulmonary Consolidation"]
CALIBRATED = {"Pleural Effusion": 0.42, "Cardiomegaly": 0.61}
REPO = Path(__file__).resolve().parents[1]
INFERENCE = {
    "class_names": CLASSES,
    "network_def": {"_target_": "monai_vecl.networks.build_vecl", "preset": "small"},
    "model_file": "models/model.pt",
    "pos_template": "There is {}",
    "neg_template": "There is no {}",
    "score_mode": "pnc",
}


def _bundle_configs(root: Path, **changes) -> Path:
    """``root/configs/inference.yaml`` with ``changes`` (None removes a key)."""
    (root / "configs").mkdir(parents=True, exist_ok=True)
    doc = {k: v for k, v in {**INFERENCE, **changes}.items() if v is not None}
    (root / "configs" / "inference.yaml").write_text(yaml.safe_dump(doc))
    return root


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A bundle in the trained layout whose weights differ clearly from any fresh initialisation."""
    root = _bundle_configs(tmp_path_factory.mktemp("bundle"))
    (root / "models").mkdir()
    torch.manual_seed(1)
    model = build_vecl("small").eval()
    with torch.no_grad():  # widen the relation head so scores spread well away from 0.5
        for param in model.fusion_module.mlp_head.parameters():
            param.mul_(5.0)
    torch.save(model.state_dict(), root / "models" / "model.pt")
    sha = hashlib.sha256((root / "models" / "model.pt").read_bytes()).hexdigest()
    # Calibrated thresholds for two of the three scored findings (Pulmonary Consolidation has none).
    save_thresholds(ThresholdTable(CALIBRATED, "pnc", "validate", "max_f1", model_sha256=sha),
                    root / "models" / "thresholds.json")
    return root, model


@pytest.fixture(scope="module")
def pipeline(bundle):
    root, _ = bundle
    return StudyPipeline(
        {
            "bundle_root": str(root),
            "device": "cpu",
            "findings": NAMES,
            "site_thresholds": {"Cardiomegaly": 0.3},
        }
    )


def _export_head(root: Path, model: torch.nn.Module, class_names: list[str], weights: Path | None = None,
                 **head_options) -> Path:
    """``models/model.ts`` as the bundle's ``ckpt_export --use_trace`` writes it: the head (recording the deployment
    contract of ``weights``, default the bundle's model.pt) traced, inference.yaml stored as ``inference.json``."""
    weights = weights or root / "models" / "model.pt"
    head = ZeroShotHead(copy.deepcopy(model), class_names, INFERENCE["pos_template"], INFERENCE["neg_template"],
                        model_file=weights, **head_options).eval()  # a copy: loading weights must not change ``model``
    head.load_state_dict(torch.load(weights, weights_only=True))  # what ckpt_export does with --ckpt_file
    traced = torch.jit.trace(head, torch.rand(1, 3, model.image_size, model.image_size))
    config = yaml.safe_load((root / "configs" / "inference.yaml").read_text())
    path = root / "models" / "model.ts"
    torch.jit.save(traced, str(path), _extra_files={"inference.json": json.dumps(config)})
    return path


@pytest.fixture
def twin(bundle, tmp_path):
    """A copy of the bundle (weights, thresholds, inference.yaml with the input geometry) and its exported head."""
    root, model = bundle
    twin = _bundle_configs(tmp_path / "bundle", image_size=model.image_size, load_size=model.load_size)
    (twin / "models").mkdir()
    for name in ("model.pt", "thresholds.json"):
        (twin / "models" / name).write_bytes((root / "models" / name).read_bytes())
    _export_head(twin, model, CLASSES)
    return twin


def test_exported_head_gives_the_same_sr_as_the_bundle_network(twin):
    settings = {"bundle_root": str(twin), "device": "cpu", "findings": NAMES, "grounding": {"enabled": False}}
    network = StudyPipeline(settings)
    exported = StudyPipeline({**settings, "model": "exported"})
    assert not hasattr(exported.model, "text_encoder") and exported.classifier is None
    assert exported.fingerprint == network.fingerprint  # the digest the export recorded: model.pt's
    a, b = network.process([rg1_path()]), exported.process([rg1_path()])
    assert list(b.scores) == NAMES  # the reported columns of the head's four, in the site's order
    np.testing.assert_allclose([b.scores[n] for n in NAMES], [a.scores[n] for n in NAMES], atol=1e-5)
    assert measurement_groups(b.sr) == measurement_groups(a.sr) and b.seg is None
    assert b.findings[0].threshold == CALIBRATED["Pleural Effusion"]  # thresholds checked against that digest
    with pytest.raises(ValueError, match="deploy.grounding.enabled: false"):
        StudyPipeline({**settings, "model": "exported", "grounding": {"enabled": True}})
    (twin / "models" / "model.ts").unlink()
    with pytest.raises(FileNotFoundError, match="ckpt_export"):
        StudyPipeline({**settings, "model": "exported"})


def test_the_exported_path_reads_its_contract_from_the_head_not_from_the_config(bundle, twin):
    _, model = bundle
    (twin / "models" / "model.pt").unlink()  # the head holds the weights and records their digest
    (twin / "models" / "calibrated.json").write_bytes((twin / "models" / "thresholds.json").read_bytes())
    (twin / "models" / "thresholds.json").unlink()
    # a head whose contract differs from what inference.yaml says, exported from a copy of the weights
    copy = twin / "weights" / "model.pt"
    copy.parent.mkdir()
    copy.write_bytes((bundle[0] / "models" / "model.pt").read_bytes())
    _export_head(twin, model, CLASSES[::-1], weights=copy, thresholds_file=twin / "models" / "calibrated.json")
    loaded = load_bundle(twin, torch.device("cpu"), exported=True)
    assert loaded.class_names == tuple(CLASSES[::-1]) and loaded.exported
    assert (loaded.image_size, loaded.load_size, loaded.score_mode) == (model.image_size, model.load_size, "pnc")
    assert loaded.model_sha256 == hashlib.sha256(copy.read_bytes()).hexdigest()
    assert loaded.thresholds_file == twin / "models" / "../models/calibrated.json"  # relative to the weights' folder
    pipeline = StudyPipeline({"bundle_root": str(twin), "device": "cpu", "model": "exported", "findings": NAMES,
                              "grounding": {"enabled": False}})
    assert pipeline.thresholds["Pleural Effusion"].value == CALIBRATED["Pleural Effusion"]


def test_a_stale_or_contract_less_export_is_refused_with_what_to_do(bundle, twin):
    root, model = bundle
    settings = {"bundle_root": str(twin), "device": "cpu", "model": "exported", "grounding": {"enabled": False}}
    _bundle_configs(twin, image_size=model.image_size, load_size=model.load_size, class_names=CLASSES[::-1])
    with pytest.raises(ValueError, match=r"stale: .*\(keys that differ: \['class_names'\]\); export the head again"):
        StudyPipeline(settings)
    _export_head(twin, model, CLASSES)  # exported again from the changed inference.yaml: accepted
    StudyPipeline(settings)
    # an export made before the contract existed: the head without its buffer
    head = ZeroShotHead(model, CLASSES).eval()
    del head._buffers["deploy_contract"]
    traced = torch.jit.trace(head, torch.rand(1, 3, model.image_size, model.image_size))
    config = yaml.safe_load((twin / "configs" / "inference.yaml").read_text())
    torch.jit.save(traced, str(twin / "models" / "model.ts"), _extra_files={"inference.json": json.dumps(config)})
    with pytest.raises(ValueError, match="records no deployment contract .*export the head again"):
        StudyPipeline(settings)
    # other weights than those the thresholds were calibrated for: the export's digest is checked
    other = twin / "other.pt"
    torch.manual_seed(3)
    torch.save(build_vecl("small").state_dict(), other)
    _export_head(twin, model, CLASSES, weights=other)
    with pytest.raises(ValueError, match="calibrated for model sha256 .*model.ts was exported from"):
        StudyPipeline(settings)


def test_the_contract_round_trips_and_a_malformed_one_fails_naming_the_file():
    contract = HeadContract(tuple(CLASSES), "There is {}", "There is no {}", "pnc", 128, 144, "ab" * 32)
    assert HeadContract.from_buffer(contract.to_buffer(), "model.ts") == contract
    broken = torch.frombuffer(bytearray(b'{"format": 1, "class_names": []}'), dtype=torch.uint8)
    with pytest.raises(ValueError, match="model.ts: unreadable deployment contract .*export the head again"):
        HeadContract.from_buffer(broken, "model.ts")
    with pytest.raises(ValueError, match="score_mode must be one of"):
        HeadContract(tuple(CLASSES), "a {}", "no {}", "PNC", 128, 144)


def test_the_exported_path_imports_neither_monai_nor_transformers_nor_the_network_code(twin):
    script = (
        "import sys; from monai_vecl.deploy.pipeline import StudyPipeline; "
        f"StudyPipeline({{'bundle_root': {str(twin)!r}, 'device': 'cpu', 'model': 'exported', "
        "'grounding': {'enabled': False}}); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('monai', 'transformers', 'sklearn') "
        "or m.startswith('monai_vecl.networks') or m.startswith('monai_vecl.evaluation')))"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False,
                         cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"


def test_scores_come_from_the_bundle_weights(pipeline, bundle):
    _, reference_model = bundle
    result = pipeline.process([rg1_path()])
    names = NAMES
    image = preprocess_gray(dicom_to_gray01(pydicom.dcmread(rg1_path())), reference_model.image_size, reference_model.load_size)[None]
    expected = ZeroShotClassifier(reference_model, names).scores(image, mode="pnc")[0]
    assert list(result.scores) == names
    np.testing.assert_allclose([result.scores[n] for n in names], expected.numpy(), atol=1e-5)
    assert max(result.scores.values()) - min(result.scores.values()) > 0.02  # not a constant stand-in
    groups = measurement_groups(result.sr)
    assert [g["Certainty of Finding"][0] for g in groups] == pytest.approx(
        [100 * result.scores[n] for n in names], abs=1e-3
    )
    assert any(p.startswith("model_sha256=") for p in groups[0]["parameters"])


def test_calibrated_thresholds_make_the_calls_a_site_threshold_wins_and_none_means_score_only(pipeline, tmp_path):
    result = pipeline.process([rg1_path()])
    by_name = {f.name: f for f in result.findings}
    effusion, cardio, consolidation = (by_name[n] for n in NAMES)
    assert effusion.threshold == 0.42 and effusion.present == (effusion.score >= 0.42)
    assert effusion.threshold_source.startswith("calibrated: max_f1 on validate split, model_sha256=")
    assert cardio.threshold == 0.3 and "site override" in cardio.threshold_source
    assert "over calibrated 0.61" in cardio.threshold_source
    assert consolidation.threshold is None and consolidation.present is None
    groups = {g["finding"][2]: g for g in measurement_groups(result.sr)}
    assert "evaluation" not in groups["Lung consolidation"]  # a score, no present/absent call
    assert "threshold=none (score only, no present/absent call)" in groups["Lung consolidation"]["parameters"]
    expected = "Present" if effusion.present else "Absent"
    assert groups["Pleural effusion"]["evaluation"][2] == expected
    assert "threshold=0.42" in groups["Pleural effusion"]["parameters"]
    assert any(p.startswith("threshold_source=site override") for p in groups["Cardiomegaly"]["parameters"])
    assert any(p.startswith("thresholds=max_f1 on validate split") for p in groups["Cardiomegaly"]["parameters"])
    path = save_sr(result.sr, tmp_path)
    assert validate_sr(path) == []


def test_thresholds_for_other_weights_or_score_mode_stop_the_start_up(bundle, tmp_path, caplog):
    root, _ = bundle
    table = json.loads((root / "models" / "thresholds.json").read_text())
    other = tmp_path / "other.json"
    # a second bundle: the same weights, its inference.yaml naming another thresholds file
    twin = _bundle_configs(tmp_path / "twin", model_file=str(root / "models" / "model.pt"), thresholds_file=str(other))
    other.write_text(json.dumps({**table, "model_sha256": "0" * 64}))
    with pytest.raises(ValueError, match="calibrated for model sha256 0000"):
        StudyPipeline({"bundle_root": str(twin), "device": "cpu"})
    other.write_text(json.dumps({**table, "score_mode": "pos"}))
    with pytest.raises(ValueError, match="calibrated for score_mode 'pos', the bundle scores 'pnc'"):
        StudyPipeline({"bundle_root": str(twin), "device": "cpu"})
    other.unlink()
    with caplog.at_level(logging.WARNING, logger="monai_vecl.deploy.pipeline"):
        uncalibrated = StudyPipeline({"bundle_root": str(twin), "device": "cpu"})
    assert "no calibrated thresholds" in caplog.text
    assert {t.value for t in uncalibrated.thresholds.values()} == {None}


def test_prompts_and_score_mode_come_from_the_bundle(bundle, tmp_path):
    root, reference_model = bundle
    twin = _bundle_configs(tmp_path / "twin", model_file=str(root / "models" / "model.pt"), score_mode="pos",
                           pos_template="Findings: {}", neg_template="Findings: no {}", thresholds_file="none.json")
    pipeline = StudyPipeline({"bundle_root": str(twin), "device": "cpu", "findings": ["Cardiomegaly"]})
    result = pipeline.process([rg1_path()])
    image = preprocess_gray(dicom_to_gray01(pydicom.dcmread(rg1_path())), reference_model.image_size,
                            reference_model.load_size)[None]
    expected = ZeroShotClassifier(reference_model, ["Cardiomegaly"], "Findings: {}", "Findings: no {}").scores(
        image, mode="pos")[0]
    assert result.scores["Cardiomegaly"] == pytest.approx(float(expected[0]), abs=1e-5)
    default = ZeroShotClassifier(reference_model, ["Cardiomegaly"]).scores(image, mode="pnc")[0]
    assert abs(float(default[0]) - result.scores["Cardiomegaly"]) > 1e-3  # the bundle's settings made a difference
    parameters = measurement_groups(result.sr)[0]["parameters"]
    assert {"score_mode=pos", "positive_prompt=Findings: {}", "negative_prompt=Findings: no {}"} <= set(parameters)


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"score_mode": None}, ValueError, r"needs \['score_mode'\]"),
        ({"pos_template": None, "class_names": None}, ValueError, r"needs \['class_names', 'pos_template'\]"),
        ({"score_mode": "PNC"}, ValueError, r"score_mode must be one of \['pnc', 'pos'\], got 'PNC'"),
        ({"class_names": "Pneumothorax"}, TypeError, "class_names must be a non-empty list"),
        ({"neg_template": 3}, TypeError, "neg_template must be a string"),
        ({"model_file": "models/missing.pt"}, FileNotFoundError, "lacks its weights"),
    ],
)
def test_a_bundle_without_the_deployment_keys_is_refused_naming_the_key(bundle, tmp_path, changes, error, message):
    root, _ = bundle
    twin = _bundle_configs(tmp_path / "twin", **{"model_file": str(root / "models" / "model.pt"), **changes})
    with pytest.raises(error, match=message):
        StudyPipeline({"bundle_root": str(twin), "device": "cpu"})


def test_bundle_class_names_are_the_default_findings_and_deploy_findings_a_subset():
    config = PipelineConfig.from_mapping({})
    assert resolve_findings(config, CLASSES) == CLASSES
    configured = PipelineConfig.from_mapping({"findings": ["Cardiomegaly"]})
    assert resolve_findings(configured, CLASSES) == ["Cardiomegaly"]
    # the taxonomy's names of the bundle's classes select them, under the bundle's (prompt) names
    synonyms = PipelineConfig.from_mapping({"findings": ["Consolidation", "Pleural Effusion"],
                                            "site_thresholds": {"Consolidation": 0.5}})
    findings = resolve_findings(synonyms, CLASSES)
    assert findings == ["Pulmonary Consolidation", "Pleural Effusion"]
    chosen = resolve_thresholds(findings, None, synonyms.site_thresholds)
    assert chosen["Pulmonary Consolidation"].value == 0.5 and chosen["Pleural Effusion"].value is None
    with pytest.raises(ValueError, match=r"classes the bundle does not score: \['Hernia'\]"):
        resolve_findings(PipelineConfig.from_mapping({"findings": ["Hernia"]}), CLASSES)
    assert resolve_findings(PipelineConfig.from_mapping({"findings": ["Hernia"]}), ()) == ["Hernia"]  # no bundle
    with pytest.raises(ValueError, match="not scored"):
        resolve_findings(PipelineConfig.from_mapping({"site_thresholds": {"Hernia": 0.5}}), CLASSES)
    with pytest.raises(ValueError, match="no findings"):
        resolve_findings(config, ())
    with pytest.raises(KeyError, match="unknown finding"):
        resolve_findings(config, ["Broken Heart"])


def test_lossless_jpeg2000_scores_like_the_original(pipeline):
    plain = pipeline.process([rg1_path("RG1_UNCR.dcm")]).scores
    j2k = pipeline.process([rg1_path("RG1_J2KR.dcm")]).scores
    assert j2k == pytest.approx(plain, abs=1e-6)


def test_a_mixed_study_uses_the_frontal_image_and_lists_the_rest(pipeline, tmp_path):
    source = pydicom.dcmread(rg1_path(), stop_before_pixels=True)
    lateral = make_dx(tmp_path / "lat.dcm", ramp(), study_uid=source.StudyInstanceUID, view="LL", bits_stored=12)
    junk = tmp_path / "notes.txt"
    junk.write_text("not dicom")
    result = pipeline.process([lateral, junk, rg1_path()])
    assert result.sr is not None and result.source_path == rg1_path()
    assert result.rejected[str(lateral)] == "lateral view"
    assert "not a readable DICOM file" in result.rejected[str(junk)]
    assert result.sr.StudyInstanceUID == source.StudyInstanceUID
    path = save_sr(result.sr, tmp_path / "out")
    assert path.name == f"{result.sr.SOPInstanceUID}.dcm" and validate_sr(path) == []


def test_unusable_pixels_fall_back_to_the_next_frontal_image(pipeline, tmp_path):
    study = pydicom.uid.generate_uid()
    broken = make_dx(tmp_path / "pa.dcm", ramp(), study_uid=study, view="PA", bits_stored=12)
    ds = pydicom.dcmread(broken)
    ds.PixelData = ds.PixelData[:100]
    ds.save_as(broken)
    good = make_dx(tmp_path / "ap.dcm", ramp(), study_uid=study, view="AP", bits_stored=12)
    result = pipeline.process([broken, good])
    assert result.source_path == good and "unusable pixel data" in result.rejected[str(broken)]
    only_broken = pipeline.process([broken])
    assert only_broken.findings == [] and "usable pixel data" in only_broken.skipped_reason


@pytest.mark.parametrize("kind, reason", [("lateral", "lateral view"), ("hand", "not chest"), ("none", "no instances")])
def test_studies_without_a_frontal_chest_get_a_notice_sr_saying_why(pipeline, tmp_path, caplog, kind, reason):
    paths = {
        "lateral": [make_dx(tmp_path / "l.dcm", ramp(), view="RL", bits_stored=12)],
        "hand": [make_dx(tmp_path / "h.dcm", ramp(), body_part="HAND", bits_stored=12)],
        "none": [],
    }[kind]
    with caplog.at_level(logging.INFO, logger="monai_vecl.deploy.pipeline"):
        result = pipeline.process(paths)
    assert reason in result.skipped_reason and result.scores == {}
    assert any(reason in record.getMessage() and "no findings" in record.getMessage() for record in caplog.records)
    if not paths:  # nothing to name the patient and study by: no notice possible
        assert result.sr is None
        return
    (comment,) = [item for c in result.sr.ContentSequence if c.ValueType == "CONTAINER" for item in c.ContentSequence]
    assert comment.TextValue.startswith("Received; no findings produced:") and reason in comment.TextValue
    assert result.sr.StudyInstanceUID == pydicom.dcmread(paths[0]).StudyInstanceUID
    assert validate_sr(save_sr(result.sr, tmp_path / "out")) == []


def test_a_site_can_turn_notice_srs_off(bundle, tmp_path):
    root, _ = bundle
    quiet = StudyPipeline({"bundle_root": str(root), "device": "cpu", "sr": {"notice_for_skipped": False}})
    result = quiet.process([make_dx(tmp_path / "l.dcm", ramp(), view="RL", bits_stored=12)])
    assert result.sr is None and "lateral view" in result.skipped_reason


def test_two_studies_in_one_call_are_refused(pipeline, tmp_path):
    a = make_dx(tmp_path / "a.dcm", ramp(), bits_stored=12)
    b = make_dx(tmp_path / "b.dcm", ramp(), bits_stored=12)
    with pytest.raises(ValueError, match="one study"):
        pipeline.process([a, b])
    studies, rejected = group_by_study([a, b, tmp_path])
    assert sorted(len(v) for v in studies.values()) == [1, 1] and list(rejected) == [str(tmp_path)]


def test_phantom_dx_export_reads_back_as_its_png_and_gets_an_sr(pipeline, tmp_path):
    manifest = generate_phantom(tmp_path / "phantom", n_images=2, seed=3, workers=1)
    record = read_manifest(manifest)[0]
    png = np.asarray(Image.open(image_path(record, manifest)))
    dx = make_dx(tmp_path / "ph.dcm", png, view=record.view)
    np.testing.assert_array_equal(dicom_to_gray01(pydicom.dcmread(dx)), (png / 255.0).astype(np.float32))
    result = pipeline.process([dx])
    assert result.sr is not None and set(result.scores) == set(pipeline.thresholds)
    path = save_sr(result.sr, tmp_path / "out")
    assert validate_sr(path) == []


def test_config_file_and_validation(tmp_path):
    config = PipelineConfig.from_yaml(REPO / "deploy" / "config.yaml")
    assert config.bundle_root == REPO / "bundles" / "vecl_cxr"  # resolved against the YAML's folder
    assert config.findings == () and config.site_thresholds == {}
    assert config.sr.kind == "comprehensive3d"
    with pytest.raises(ValueError, match=r"unknown deploy option\(s\) \['bundle_rot'\]"):
        PipelineConfig.from_mapping({"bundle_rot": "x"})
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        PipelineConfig.from_mapping({"site_thresholds": {"Pneumothorax": 1.5}})
    with pytest.raises(KeyError, match="unknown finding"):
        PipelineConfig.from_mapping({"findings": ["Broken Heart"]})
    with pytest.raises(FileNotFoundError, match="train the bundle first"):
        StudyPipeline({"bundle_root": str(tmp_path), "findings": ["Pneumothorax"]})


@pytest.mark.parametrize(
    ("deploy", "error", "message"),
    [
        ({"findings": {"Pneumothorax": 0.5}}, TypeError, r"deploy.findings must be tuple\[str, \.\.\.\]"),
        ({"findings": "Pneumothorax"}, TypeError, "deploy.findings must be tuple"),
        ({"site_thresholds": {"Pneumothorax": "0.5"}}, TypeError, r"deploy.site_thresholds must be dict\[str, float\]"),
        ({"site_thresholds": [0.5]}, TypeError, "deploy.site_thresholds must be dict"),
        ({"bundle_root": 5}, TypeError, r"deploy.bundle_root must be Path \| None"),
        ({"device": "gpu0"}, ValueError, "deploy.device must be auto or a torch device"),
        ({"no_voi": "window"}, ValueError, r"deploy.no_voi must be one of \['bit_depth', 'min_max'\]"),
        ({"selection": {"allow_unknown_view": "false"}}, TypeError, "deploy.selection.allow_unknown_view must be bool"),
        ({"selection": {"views": ["LATERAL"]}}, ValueError, r"deploy.selection.views\[\] must be one of \['PA', 'AP'\]"),
        ({"selection": ["PA"]}, TypeError, "deploy.selection must be a mapping"),
        ({"sr": {"series_number": "9901"}}, TypeError, "deploy.sr.series_number must be int"),
        ({"sr": {"notice_for_skipped": "true"}}, TypeError, "deploy.sr.notice_for_skipped must be bool"),
        ({"sr": {"kind": "basic"}}, ValueError, r"deploy.sr.kind must be one of \['comprehensive3d', 'comprehensive'\]"),
        ({"sr": {"title": "x"}}, ValueError, r"unknown deploy.sr option\(s\) \['title'\]"),
        ({"grounding": {"seg": {"binary_threshold": "0.5"}}}, TypeError,
         r"deploy.grounding.seg.binary_threshold must be float \| None"),
        ({"grounding": {"enabled": "false"}}, TypeError, "enabled must be"),
        ({"score_mode": "pos"}, ValueError, "deploy.score_mode is not a site setting: the bundle's configs/inference.yaml"),
        ({"prompts": {"positive": "x {}"}}, ValueError, "sets pos_template/neg_template"),
        ({"model_file": "m.pt"}, ValueError, "deploy.model_file is not a site setting"),
        ({"thresholds_file": "t.json"}, ValueError, "deploy.thresholds_file is not a site setting"),
    ],
)
def test_site_settings_are_typed_and_model_settings_belong_to_the_bundle(deploy, error, message):
    with pytest.raises(error, match=message):
        PipelineConfig.from_mapping({"deploy": deploy})


def test_a_directly_built_config_is_checked_too():
    with pytest.raises(TypeError, match="deploy.bundle_root must be Path"):
        PipelineConfig(bundle_root="bundles/vecl_cxr")
    with pytest.raises(TypeError, match=r"deploy.findings must be tuple\[str, \.\.\.\]"):
        PipelineConfig(findings=("Pneumothorax", 3))


def test_a_study_of_unreadable_files_is_reported_not_dropped(pipeline, tmp_path):
    files = [tmp_path / "a.bin", tmp_path / "b.bin"]
    for f in files:
        f.write_bytes(b"\x00" * 200)
    result = pipeline.process(files)
    assert result.sr is None and "no readable DICOM instance among 2 files" == result.skipped_reason
    assert set(result.rejected) == {str(f) for f in files}
