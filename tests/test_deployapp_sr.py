"""The DICOM SR: TID 1500 content, codes, study membership, determinism, notice SRs, predecessors, and
dcmtk, dicom3tools and pixelmed validation."""

from __future__ import annotations

import dataclasses

import pydicom
import pytest
from deployapp_dicom import evidence_uids, make_dx, measurement_groups, pixelmed_errors, ramp, rg1_path, validate_sr

from monai_vecl.deploy.sr import (
    PRIVATE_SCHEME,
    PROCEDURE_REPORTED,
    AlgorithmInfo,
    FindingScore,
    SRConfig,
    add_predecessor,
    build_findings_sr,
    build_notice_sr,
    finding_concept,
    read_findings,
    versioned_uid,
)

ALGORITHM = AlgorithmInfo("VECL test", "1.2.3", ("score_mode=pnc",))
FINDINGS = [
    FindingScore("Pleural Effusion", 0.81, 0.5),
    FindingScore("Support Devices", 0.30, 0.25),  # private code, present at its own threshold
    FindingScore("Pulmonary Consolidation", 0.10, 0.5),  # prompt name mapped to the taxonomy
]
SCORE_ONLY = FindingScore("Cardiomegaly", 0.70, None, "none calibrated: score only")


@pytest.fixture(scope="module")
def source():
    return pydicom.dcmread(rg1_path(), stop_before_pixels=True)


@pytest.mark.parametrize(
    "kind, sop_class",
    [("comprehensive3d", "1.2.840.10008.5.1.4.1.1.88.34"), ("comprehensive", "1.2.840.10008.5.1.4.1.1.88.33")],
)
def test_sr_validates_with_dsrdump_and_dciodvfy(tmp_path, source, kind, sop_class):
    sr = build_findings_sr(source, FINDINGS, ALGORITHM, SRConfig(kind=kind))
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert validate_sr(path) == []
    assert pydicom.dcmread(path).SOPClassUID == sop_class


def test_sr_joins_the_source_study_and_is_unverified(source):
    sr = build_findings_sr(source, FINDINGS, ALGORITHM)
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "AccessionNumber",
    ):
        assert sr[keyword].value == source[keyword].value, keyword
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID
    assert (sr.VerificationFlag, sr.CompletionFlag, sr.Modality) == ("UNVERIFIED", "COMPLETE", "SR")
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_one_group_per_finding_with_code_evaluation_certainty_and_algorithm(source):
    groups = measurement_groups(build_findings_sr(source, FINDINGS, ALGORITHM))
    assert len(groups) == len(FINDINGS)
    for group, finding in zip(groups, FINDINGS):
        concept = finding_concept(finding.name)
        assert group["finding"] == (concept.value, concept.scheme_designator, concept.meaning)
        assert group["evaluation_name"] == concept.value
        present = finding.score >= finding.threshold
        assert group["evaluation"][0] == ("52101004" if present else "272519000")
        assert group["Certainty of Finding"] == (pytest.approx(100 * finding.score), "%")
        assert group["Algorithm Name"] == "VECL test" and group["Algorithm Version"] == "1.2.3"
        assert f"threshold={finding.threshold:g}" in group["parameters"] and "score_mode=pnc" in group["parameters"]
        assert group["source_sop"] == source.SOPInstanceUID
    assert groups[0]["finding"][:2] == ("60046008", "SCT")
    assert groups[1]["finding"][1] == PRIVATE_SCHEME and groups[1]["evaluation"][0] == "52101004"
    assert groups[2]["finding"][:2] == ("95436008", "SCT")


def test_standard_codes_for_cardiomegaly_and_the_cid_100_procedure(source):
    cardiomegaly = finding_concept("Cardiomegaly")
    assert (cardiomegaly.value, cardiomegaly.scheme_designator) == ("8186001", "SCT")
    sr = build_findings_sr(source, FINDINGS, ALGORITHM)
    (procedure,) = [i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121058"]
    assert procedure.ConceptCodeSequence[0].CodeValue == PROCEDURE_REPORTED.value == "363679005"


def test_findings_read_back_from_the_sr_are_the_ones_written(source):
    back = read_findings(build_findings_sr(source, [*FINDINGS, SCORE_ONLY], ALGORITHM))
    assert [(f.class_name, f.present) for f in back] == [(f.name, f.present) for f in [*FINDINGS, SCORE_ONLY]]
    assert [f.score for f in back] == pytest.approx([f.score for f in [*FINDINGS, SCORE_ONLY]])


def test_a_finding_without_threshold_has_its_score_and_no_call(source):
    (group,) = measurement_groups(build_findings_sr(source, [SCORE_ONLY], ALGORITHM))
    assert "evaluation" not in group and group["Certainty of Finding"] == (pytest.approx(70.0), "%")
    assert "threshold=none (score only, no present/absent call)" in group["parameters"]
    assert "threshold_source=none calibrated: score only" in group["parameters"]


def test_evidence_lists_every_examined_image_and_a_replacement_names_its_predecessor(source, tmp_path):
    lateral = pydicom.dcmread(make_dx(tmp_path / "lat.dcm", ramp(), study_uid=source.StudyInstanceUID, view="LL"))
    first = build_findings_sr(source, FINDINGS, ALGORITHM, evaluated=[lateral, source])
    assert evidence_uids(first) == {source.SOPInstanceUID, lateral.SOPInstanceUID}
    second = build_findings_sr(source, [*FINDINGS, SCORE_ONLY], ALGORITHM, evaluated=[lateral, source])
    add_predecessor(second, first)
    predecessor = second.PredecessorDocumentsSequence[0]
    assert predecessor.StudyInstanceUID == source.StudyInstanceUID
    sop = predecessor.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert (sop.ReferencedSOPInstanceUID, sop.ReferencedSOPClassUID) == (first.SOPInstanceUID, first.SOPClassUID)
    path = tmp_path / "second.dcm"
    second.save_as(path, enforce_file_format=True)
    assert validate_sr(path) == [] and pixelmed_errors(path) == []


def test_notice_sr_says_received_and_why_and_validates(source, tmp_path):
    notice = build_notice_sr([source], "no frontal chest image: lateral view", ALGORITHM)
    assert (notice.StudyInstanceUID, notice.PatientID) == (source.StudyInstanceUID, source.PatientID)
    texts = [i.TextValue for c in notice.ContentSequence if c.ValueType == "CONTAINER" for i in c.ContentSequence]
    assert texts == ["Received; no findings produced: no frontal chest image: lateral view"]
    assert notice.SOPInstanceUID == build_notice_sr([source], "no frontal chest image: lateral view",
                                                    ALGORITHM).SOPInstanceUID
    path = tmp_path / "notice.dcm"
    notice.save_as(path, enforce_file_format=True)
    assert validate_sr(path) == [] and pixelmed_errors(path) == []


def test_device_observer_and_private_scheme_declaration(source):
    sr = build_findings_sr(source, FINDINGS, ALGORITHM, SRConfig(device_name="Reader 7"))
    context = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in sr.ContentSequence}
    assert context["Observer Type"].ConceptCodeSequence[0].CodeValue == "121007"  # Device
    assert context["Device Observer Name"].TextValue == "Reader 7"
    assert [s.CodingSchemeDesignator for s in sr.CodingSchemeIdentificationSequence] == [PRIVATE_SCHEME]
    standard_only = build_findings_sr(source, FINDINGS[:1], ALGORITHM)
    assert "CodingSchemeIdentificationSequence" not in standard_only


def test_sr_uid_is_deterministic_and_follows_the_settings(source, tmp_path):
    first = build_findings_sr(source, FINDINGS, ALGORITHM, fingerprint="abc")
    again = build_findings_sr(source, FINDINGS, ALGORITHM, fingerprint="abc")
    assert first.SOPInstanceUID == again.SOPInstanceUID and first.SeriesInstanceUID == again.SeriesInstanceUID
    other_threshold = [FindingScore("Pleural Effusion", 0.81, 0.6), *FINDINGS[1:]]
    other_image = pydicom.dcmread(make_dx(tmp_path / "dx.dcm", ramp(), study_uid=source.StudyInstanceUID))
    assert (
        build_findings_sr(source, other_threshold, ALGORITHM, fingerprint="abc").SOPInstanceUID != first.SOPInstanceUID
    )
    assert build_findings_sr(source, FINDINGS, ALGORITHM, fingerprint="new").SOPInstanceUID != first.SOPInstanceUID
    assert build_findings_sr(other_image, FINDINGS, ALGORITHM, fingerprint="abc").SOPInstanceUID != first.SOPInstanceUID
    # what the report says is in the UID: a score that changes the written value, another algorithm parameter
    other_score = [dataclasses.replace(FINDINGS[0], score=FINDINGS[0].score + 1e-5), *FINDINGS[1:]]
    assert build_findings_sr(source, other_score, ALGORITHM, fingerprint="abc").SOPInstanceUID != first.SOPInstanceUID
    below_written = [dataclasses.replace(FINDINGS[0], score=FINDINGS[0].score + 1e-9), *FINDINGS[1:]]
    assert build_findings_sr(source, below_written, ALGORITHM, fingerprint="abc").SOPInstanceUID == first.SOPInstanceUID
    other_params = dataclasses.replace(ALGORITHM, parameters=(*ALGORITHM.parameters, "grounding=off"))
    assert build_findings_sr(source, FINDINGS, other_params, fingerprint="abc").SOPInstanceUID != first.SOPInstanceUID


def test_a_first_report_keeps_its_uid_a_correction_gets_its_own():
    assert versioned_uid("1.2.3", None) == "1.2.3"
    corrected = versioned_uid("1.2.3", "1.2.9")
    assert corrected == versioned_uid("1.2.3", "1.2.9") and corrected not in ("1.2.3", "1.2.9")
    assert versioned_uid(corrected, "1.2.3") not in ("1.2.3", corrected)


def test_bad_settings_are_refused(source):
    with pytest.raises(ValueError, match=r"deploy.sr.kind must be one of \['comprehensive3d', 'comprehensive'\]"):
        SRConfig(kind="basic")
    with pytest.raises(TypeError, match="deploy.sr.series_number must be int, got '9901'"):
        SRConfig.from_mapping({"series_number": "9901"})
    with pytest.raises(ValueError, match=r"unknown deploy.sr option\(s\) \['devce_name'\]"):
        SRConfig.from_mapping({"devce_name": "x"})
    with pytest.raises(ValueError, match="no findings"):
        build_findings_sr(source, [], ALGORITHM)
    with pytest.raises(KeyError, match="unknown finding"):
        finding_concept("Broken Heart")
