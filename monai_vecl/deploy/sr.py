"""DICOM Structured Report of the zero-shot findings (TID 1500 measurement report, built with highdicom).

One TID 1501 measurement group per finding: the finding code as Finding type, the score as
DCM 111012 "Certainty of Finding" in percent, TID 4019 algorithm identification (name, version,
parameters, among them the threshold and where it came from) and a reference to the scored image;
a qualitative evaluation "<finding> = Present | Absent" only when the finding has a threshold
(a finding without a calibrated or site threshold is reported by its score alone). The image
evidence (Current Requested Procedure Evidence Sequence) lists every image of the study the app
examined. (highdicom's TID 1600 image library is not used: it needs Imager Pixel Spacing and
Patient Orientation, which many CR/DX headers lack.)
The device observer names the algorithm; patient and study attributes come from the source image
so the SR files into the original study; VerificationFlag stays UNVERIFIED because no human has
checked the result. A study the app declined gets a short notice SR (:func:`build_notice_sr`).

Codes (table in docs/deploy.md): SNOMED CT and DCM codes that validate in dciodvfy, dsrdump and
pixelmed's DicomSRValidator; findings without a standard code get the private coding scheme
:data:`PRIVATE_SCHEME` (PS3.16 §8.2 reserves the "99" prefix for local schemes), declared in the
Coding Scheme Identification Sequence.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from monai_vecl.config import check_choice, check_dataclass, check_fields
from monai_vecl.data.uids import deterministic_uid
from monai_vecl.taxonomy import FINDINGS, finding_code

PRIVATE_SCHEME = "99VECL"
PRIVATE_SCHEME_NAME = "monai-vecl chest X-ray findings"
SR_KINDS = ("comprehensive3d", "comprehensive")

#: Standard codes by taxonomy finding code (docs/deploy.md); the rest use :data:`PRIVATE_SCHEME`.
STANDARD_FINDING_CODES: dict[int, tuple[str, str, str]] = {
    1: ("46621007", "SCT", "Atelectasis"),
    2: ("60046008", "SCT", "Pleural effusion"),
    3: ("36118008", "SCT", "Pneumothorax"),
    4: ("8186001", "SCT", "Cardiomegaly"),
    5: ("112001", "DCM", "Opacity"),
    6: ("233604007", "SCT", "Pneumonia"),
    7: ("4147007", "SCT", "Mass"),
    8: ("19242006", "SCT", "Pulmonary edema"),
    9: ("27925004", "SCT", "Nodule"),
    10: ("112121", "DCM", "Infiltrate"),
    11: ("51615001", "SCT", "Fibrosis of lung"),
    12: ("87433001", "SCT", "Pulmonary emphysema"),
    15: ("95436008", "SCT", "Lung consolidation"),
    16: ("125605004", "SCT", "Fracture of bone"),
}
# Procedure Reported must come from CID 100 (Quantitative Diagnostic Imaging Procedures), which
# has no radiography entry: its generic "Imaging procedure" is the valid choice.
PROCEDURE_REPORTED = CodedConcept("363679005", "SCT", "Imaging procedure")
COMMENT = CodedConcept("121106", "DCM", "Comment")
QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
ENGLISH_US = CodedConcept("en-US", "RFC5646", "English (United States)")
PERCENT = CodedConcept("%", "UCUM", "Percent")


def finding_concept(name: str) -> CodedConcept:
    """Coded concept for a finding or zero-shot prompt name (standard code, else ``99VECL`` ``F<code>``)."""
    code = finding_code(name)
    if code in STANDARD_FINDING_CODES:
        return CodedConcept(*STANDARD_FINDING_CODES[code])
    return CodedConcept(f"F{code:02d}", PRIVATE_SCHEME, FINDINGS[code])


@dataclass(frozen=True)
class FindingScore:
    """One finding's zero-shot score and the threshold it is called present at (score >= threshold).

    ``threshold=None``: no calibrated or site threshold, so the score is reported without a call.
    ``threshold_source`` says where the threshold came from (written into the SR).
    """

    name: str
    score: float
    threshold: float | None
    threshold_source: str = ""

    @property
    def present(self) -> bool | None:
        return None if self.threshold is None else self.score >= self.threshold

    @property
    def percent(self) -> float:
        """The score as the SR writes it ("Certainty of Finding", percent, 4 decimals)."""
        return round(100.0 * float(self.score), 4)


@dataclass(frozen=True)
class AlgorithmInfo:
    """TID 4019 algorithm identification; ``parameters`` apply to every finding (per-finding ones are added)."""

    name: str
    version: str
    parameters: tuple[str, ...] = ()

    @property
    def identity(self) -> tuple[str, ...]:
        """Name, version and parameters: what distinguishes this algorithm's reports (part of their UIDs)."""
        return (self.name, self.version, *self.parameters)


@dataclass(frozen=True)
class SRConfig:
    """SR options (the ``deploy.sr`` section of ``deploy/config.yaml``)."""

    kind: str = "comprehensive3d"
    manufacturer: str = "monai-vecl"
    device_name: str = "VECL zero-shot CXR"
    series_number: int = 9901
    series_description: str = "VECL zero-shot findings (AI, unverified)"
    institution_name: str | None = None
    # A study the app declines (lateral only, not a chest, no usable image) gets a short notice SR
    # saying it was received and why no findings were produced; false sends nothing back.
    notice_for_skipped: bool = True
    notice_series_description: str = "VECL: received, no findings produced (AI)"

    def __post_init__(self) -> None:
        check_dataclass(self, "deploy.sr")
        check_choice("deploy.sr.kind", self.kind, SR_KINDS)

    @classmethod
    def from_mapping(cls, data: dict | None) -> SRConfig:
        data = dict(data or {})
        check_fields(cls, data, "deploy.sr")
        return cls(**data)


def _finding_group(
    source: Dataset, finding: FindingScore, algorithm: AlgorithmInfo, sr_uid: str
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    concept = finding_concept(finding.name)
    threshold = "none (score only, no present/absent call)" if finding.threshold is None else f"{finding.threshold:g}"
    parameters = [*algorithm.parameters, f"class_name={finding.name}", f"threshold={threshold}"]
    if finding.threshold_source:
        parameters.append(f"threshold_source={finding.threshold_source}")
    algorithm_id = hd.sr.AlgorithmIdentification(name=algorithm.name, version=algorithm.version, parameters=parameters)
    evaluations = []
    if finding.present is not None:
        evaluations.append(
            hd.sr.QualitativeEvaluation(name=concept, value=codes.SCT.Present if finding.present else codes.SCT.Absent)
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=deterministic_uid(sr_uid, finding.name),
                                                     identifier=f"VECL {finding.name}"),
        finding_type=concept,
        algorithm_id=algorithm_id,
        measurements=[
            hd.sr.Measurement(
                name=codes.DCM.CertaintyOfFinding,
                value=finding.percent,
                unit=PERCENT,
            )
        ],
        qualitative_evaluations=evaluations or None,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )


def _observation_context(algorithm: AlgorithmInfo, config: SRConfig) -> hd.sr.ObservationContext:
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=deterministic_uid("device", config.manufacturer, config.device_name, algorithm.name),
            name=config.device_name,
            manufacturer_name=config.manufacturer,
            model_name=f"{algorithm.name} {algorithm.version}",
        ),
    )
    return hd.sr.ObservationContext(observer_device_context=observer)


def _document(
    source: Dataset, evidence: Sequence[Dataset], content: Dataset, sop_uid: str, algorithm: AlgorithmInfo,
    config: SRConfig, description: str,
) -> hd.sr.Comprehensive3DSR | hd.sr.ComprehensiveSR:
    sr_class = hd.sr.Comprehensive3DSR if config.kind == "comprehensive3d" else hd.sr.ComprehensiveSR
    sr = sr_class(
        evidence=list(evidence),
        content=content,
        series_instance_uid=deterministic_uid("series", source.StudyInstanceUID, algorithm.name, config.series_number),
        series_number=config.series_number,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=config.manufacturer,
        institution_name=config.institution_name,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=description,
    )
    now = datetime.datetime.now()
    sr.ContentDate, sr.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    return sr


def _with_source(source: Dataset, evaluated: Sequence[Dataset]) -> list[Dataset]:
    """``evaluated`` with ``source`` in it, each SOP instance once, source first."""
    seen, images = set(), []
    for ds in (source, *evaluated):
        if ds.SOPInstanceUID not in seen:
            seen.add(ds.SOPInstanceUID)
            images.append(ds)
    return images


def build_findings_sr(
    source: Dataset,
    findings: Sequence[FindingScore],
    algorithm: AlgorithmInfo,
    config: SRConfig = SRConfig(),
    fingerprint: str = "",
    evaluated: Sequence[Dataset] = (),
) -> hd.sr.Comprehensive3DSR | hd.sr.ComprehensiveSR:
    """The SR for one scored source image (header attributes suffice; pixel data is not read).

    ``evaluated``: headers of every image of the study the app examined (the scored one included
    or not); they are listed in the evidence. The SOP Instance UID is the deterministic UID
    (:func:`monai_vecl.data.uids.deterministic_uid`) of what the report says: the same content gives the same UID in the app and the gateway (a PACS stores a
    re-sent SR once), while a new model (``fingerprint``, e.g. the weights' hash), new settings, new
    thresholds or different scores give a new one.
    """
    if not findings:
        raise ValueError("no findings to report")
    sop_uid = deterministic_uid("sr", source.SOPInstanceUID, *algorithm.identity, fingerprint, config.kind,
                                *(f"{f.name}:{f.percent}:{f.threshold}:{f.present}" for f in findings))
    images = _with_source(source, evaluated)
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(algorithm, config),
        procedure_reported=PROCEDURE_REPORTED,
        imaging_measurements=[_finding_group(source, f, algorithm, sop_uid) for f in findings],
    )
    sr = _document(source, images, report, sop_uid, algorithm, config, config.series_description)
    declare_private_scheme(sr, [f.name for f in findings])
    return sr


def versioned_uid(uid: str, predecessor_uid: str | None) -> str:
    """UID of a report that replaces ``predecessor_uid`` (None: the first report, ``uid`` unchanged).

    The first report keeps the app's content UID, so the app and the gateway name it alike; a
    correction (which names its predecessor in the Predecessor Documents Sequence, so differs in
    content) gets a UID of its own that never reuses an earlier one.
    """
    return uid if predecessor_uid is None else deterministic_uid("version", uid, predecessor_uid)


def declare_private_scheme(ds: Dataset, names: Sequence[str]) -> None:
    """Declare :data:`PRIVATE_SCHEME` in ``ds`` (Coding Scheme Identification Sequence) if one of ``names`` uses it."""
    if any(finding_concept(n).scheme_designator == PRIVATE_SCHEME for n in names):
        scheme = Dataset()
        scheme.CodingSchemeDesignator = PRIVATE_SCHEME
        scheme.CodingSchemeName = PRIVATE_SCHEME_NAME
        scheme.CodingSchemeResponsibleOrganization = "monai-vecl project"
        ds.CodingSchemeIdentificationSequence = [scheme]


def build_notice_sr(
    received: Sequence[Dataset], reason: str, algorithm: AlgorithmInfo, config: SRConfig = SRConfig(),
    fingerprint: str = "",
) -> hd.sr.Comprehensive3DSR | hd.sr.ComprehensiveSR:
    """Short SR for a study the app received but produced no findings for, saying why.

    A TID 1500 report without measurement groups: a Comment under "Qualitative Evaluations" gives
    the reason, and the evidence lists the received images.
    """
    if not received:
        raise ValueError("a notice SR needs at least one received image header")
    source = received[0]
    sop_uid = deterministic_uid("notice", *sorted(str(ds.SOPInstanceUID) for ds in received), *algorithm.identity,
                                fingerprint, config.kind, reason)
    # TID 1500 with its "Qualitative Evaluations" branch (rows 12-14) instead of measurement groups;
    # highdicom's MeasurementReport insists on at least one group, so the root is assembled here.
    contains, modifier = hd.sr.RelationshipTypeValues.CONTAINS, hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD
    evaluations = hd.sr.ContainerContentItem(name=QUALITATIVE_EVALUATIONS, relationship_type=contains)
    evaluations.ContentSequence = [
        hd.sr.TextContentItem(name=COMMENT, value=f"Received; no findings produced: {reason}"[:1024],
                              relationship_type=contains)
    ]
    root = hd.sr.ContainerContentItem(name=codes.DCM.ImagingMeasurementReport, template_id="1500")
    root.ContentSequence = [
        *hd.sr.LanguageOfContentItemAndDescendants(ENGLISH_US),
        *_observation_context(algorithm, config),
        hd.sr.CodeContentItem(name=codes.DCM.ProcedureReported, value=PROCEDURE_REPORTED, relationship_type=modifier),
        evaluations,
    ]
    return _document(source, received, root, sop_uid, algorithm, config, config.notice_series_description)


def add_predecessor(sr: Dataset, previous: Dataset) -> None:
    """Name ``previous`` (an SR this one replaces) in the Predecessor Documents Sequence (PS3.3 C.17.2)."""
    sop = Dataset()
    sop.ReferencedSOPClassUID = previous.SOPClassUID
    sop.ReferencedSOPInstanceUID = previous.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = previous.SeriesInstanceUID
    series.ReferencedSOPSequence = [sop]
    study = Dataset()
    study.StudyInstanceUID = previous.StudyInstanceUID
    study.ReferencedSeriesSequence = [series]
    sr.PredecessorDocumentsSequence = [study]


@dataclass(frozen=True)
class ReportedFinding:
    """One finding as read back from an SR: its score and its call (None: reported without a call)."""

    class_name: str
    score: float
    present: bool | None


def read_findings(sr: Dataset) -> list[ReportedFinding]:
    """The findings of an SR built by :func:`build_findings_sr`, read from its content tree.

    The class name comes from the ``class_name=`` algorithm parameter, the score from "Certainty
    of Finding" (percent), the call from the qualitative evaluation when there is one.
    """
    certainty, present_code = codes.DCM.CertaintyOfFinding.value, codes.SCT.Present.value
    found = []
    for container in sr.ContentSequence:
        if container.ValueType != "CONTAINER" or container.ConceptNameCodeSequence[0].CodeValue != "126010":
            continue  # not "Imaging Measurements"
        for group in container.ContentSequence:
            name, score, present = None, None, None
            for item in group.ContentSequence:
                if item.ValueType == "NUM" and item.ConceptNameCodeSequence[0].CodeValue == certainty:
                    score = float(item.MeasuredValueSequence[0].NumericValue) / 100.0
                elif item.ValueType == "CODE" and item.ConceptNameCodeSequence[0].CodeValue != "121071":
                    present = item.ConceptCodeSequence[0].CodeValue == present_code  # not the "Finding" item
                elif item.ValueType == "TEXT" and item.TextValue.startswith("class_name="):  # TID 4019 parameter
                    name = item.TextValue.removeprefix("class_name=")
            if name is None or score is None:
                raise ValueError("SR measurement group without class_name parameter or Certainty of Finding")
            found.append(ReportedFinding(name, score, present))
    return found
