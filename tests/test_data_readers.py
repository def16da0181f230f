"""Readers of real data-set layouts, on tiny invented fixtures in the exact formats (tests/fixtures/data)."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import pytest

from monai_vecl.data import readers
from monai_vecl.data.manifest import read_manifest, write_manifest
from monai_vecl.taxonomy import ZERO_SHOT_CLASSES

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def by_id(records):
    return {r.study_id: r for r in records}


def test_mimic_cxr_frontal_images_reports_and_labels():
    records, report = readers.read_mimic_cxr(FIXTURES / "mimic")
    assert [r.extra["dicom_id"][-4:] for r in records] == ["0001", "0003", "0006"]
    assert report.records == 3
    assert report.counts["not_frontal"] == 1
    assert report.counts["missing_image"] == 1 and "p11000003" in report.examples["missing_image"][0]
    assert report.counts["not_in_split_file"] == 1
    assert report.counts["missing_report"] == 1  # study 50000002 has no .txt: the record is kept
    assert report.skipped == 3
    studies = by_id(records)
    first = studies["50000001"]
    assert first.split == "train" and first.view == "PA" and first.patient_id == "10000001"
    assert first.sentences == [
        "Streaky opacity at the left lung base is most in keeping with atelectasis.",
        "No pleural effusion or pneumothorax is seen.",
        "The heart size is normal.",
        "Left basilar atelectasis.",
    ]
    # Edema is -1.0 (uncertain): excluded by default and counted
    assert first.findings == {"Atelectasis": 1, "Cardiomegaly": 0, "Pulmonary Consolidation": 0, "Pleural Effusion": 0}
    assert report.counts["uncertain_label_excluded"] == 1
    assert studies["50000004"].sentences[-2:] == ["No acute cardiopulmonary process.", "Stable cardiomediastinal silhouette."]
    assert studies["50000002"].report == "" and studies["50000002"].findings["Pleural Effusion"] == 1
    assert Path(first.image).is_file()


def test_mimic_cxr_options():
    records, _ = readers.read_mimic_cxr(FIXTURES / "mimic", splits=["test"], uncertain="one")
    assert [r.study_id for r in records] == ["50000004"]
    records, report = readers.read_mimic_cxr(FIXTURES / "mimic", frontal_only=False, uncertain="zero")
    assert len(records) == 4 and report.counts["not_frontal"] == 0
    assert by_id(records)["50000001"].findings["Pulmonary Edema"] == 0
    with pytest.raises(ValueError, match="uncertain"):
        readers.read_mimic_cxr(FIXTURES / "mimic", uncertain="maybe")


def test_chexpert_test_labels_and_valid_csv():
    records, report = readers.read_chexpert(FIXTURES / "chexpert")
    assert [r.study_id for r in records] == ["patient90001/study1", "patient90002/study1"]
    assert set(records[0].findings) == set(ZERO_SHOT_CLASSES["chexpert"])
    assert records[0].findings["Cardiomegaly"] == 1 and records[0].findings["Pulmonary Edema"] == 0
    assert sum(records[1].findings.values()) == 0
    assert report.counts == {"not_frontal": 1, "missing_image": 1}
    valid, vreport = readers.read_chexpert(FIXTURES / "chexpert", labels_csv="valid.csv")
    assert len(valid) == 1 and valid[0].view == "AP" and valid[0].findings["Pulmonary Edema"] == 1
    assert Path(valid[0].image).is_file() and vreport.counts["not_frontal"] == 1


def test_chestxray14_test_list():
    records, report = readers.read_chestxray14(FIXTURES / "chestxray14")
    studies = by_id(records)
    assert list(studies) == ["00000901_000", "00000901_001", "00000902_000", "00000903_000"]
    assert list(studies["00000901_000"].findings) == list(ZERO_SHOT_CLASSES["chestxray14"])  # official order
    assert {k for k, v in studies["00000902_000"].findings.items() if v} == {
        "Pulmonary Mass", "Lung Nodule", "Pleural Thickening"}
    assert studies["00000901_001"].view == "AP" and sum(studies["00000901_001"].findings.values()) == 0
    assert report.counts == {"unknown_label": 1, "missing_image": 1, "not_in_data_entry": 1}
    assert studies["00000903_000"].findings["Pleural Effusion"] == 1  # kept despite the unknown 'Lung Cyst'


def test_chestxdet10_with_corrupt_image_verified():
    records, report = readers.read_chestxdet10(FIXTURES / "chestxdet10", verify=True)
    studies = by_id(records)
    assert list(studies) == ["70001", "70002"]
    assert {k for k, v in studies["70001"].findings.items() if v} == {"Atelectasis", "Pleural Effusion"}
    effusion = {"label": "Effusion", "finding": "Pleural Effusion", "box": [8, 9, 15, 15]}
    assert studies["70001"].extra["boxes"][1] == effusion
    assert report.counts == {"unreadable_image": 1, "missing_image": 1, "bad_row": 1}
    unverified, _ = readers.read_chestxdet10(FIXTURES / "chestxdet10")
    assert len(unverified) == 3  # without verify the corrupt file is only found when loaded


def test_openi_reports_mesh_and_missing(tmp_path):
    records, report = readers.read_openi(FIXTURES / "openi")
    assert [Path(r.image).name for r in records] == ["CXR9001_IM-0901-1001.png", "CXR9001_IM-0901-2001.png"]
    r = records[0]
    assert r.sentences == [
        "Heart size is enlarged.", "There is a small right pleural effusion.", "No pneumothorax.",
        "Cardiomegaly with small right effusion.",
    ]
    assert {k for k, v in r.findings.items() if v} == {"Cardiomegaly", "Pleural Effusion", "Pleural Thickening"}
    assert report.counts == {"unreadable_report": 1, "missing_image": 1}
    assert "9003.xml" in report.examples["unreadable_report"][0]
    out = write_manifest(records, tmp_path / "openi.jsonl")
    assert [x.to_json() for x in read_manifest(out)] == [x.to_json() for x in records]


@pytest.mark.skipif(find_spec("torchxrayvision") is None, reason="torchxrayvision not installed")
def test_openi_reads_the_distributed_report_archive():
    """The real Open-I report archive (shipped by torchxrayvision) parses; its images are not here."""
    tgz = Path(find_spec("torchxrayvision").origin).parent / "data" / "NLMCXR_reports.tgz"
    records, report = readers.read_openi(FIXTURES / "openi", reports=tgz)
    assert records == [] and report.counts.get("unreadable_report", 0) == 0
    assert report.counts["missing_image"] > 3000 and report.records == 0


def test_dispatch_cli_and_summary(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown data set"):
        readers.read_dataset("padchest", FIXTURES)
    with pytest.raises(FileNotFoundError, match="split"):
        readers.read_mimic_cxr(tmp_path)
    readers.main(["chestxray14", str(FIXTURES / "chestxray14"), "--out", str(tmp_path / "m.jsonl")])
    out = capsys.readouterr().out
    assert "4 records, 2 listed items skipped" in out and "missing_image: 1" in out
    assert len(read_manifest(tmp_path / "m.jsonl")) == 4
