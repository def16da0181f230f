"""DICOM Structured Report of the zero-shot findings (TID 1500 measurement report, built with highdicom).

One TID 1501 measurement group per finding: the finding code as Finding type, a qualitative
evaluation "<finding> = Present | Absent" at the configured threshold, the score as DCM 111012
"Certainty of Finding" in percent, TID 4019 algorithm identification (name, version, parameters)
and a reference to the source image. The device observer names the algorithm; patient and study
attributes come from the source image so the SR files into the original study; VerificationFlag
stays UNVERIFIED because no human has checked the result.

Finding codes follow DESIGN §10 (SNOMED CT and DCM codes that validate in dciodvfy); findings
without one get the private coding scheme :data:`PRIVATE_SCHEME` (PS3.16 §8.2 reserves the "99"
prefix for local schemes), declared in the Coding Scheme Identification Sequence.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from monai_vecl.taxonomy import FINDINGS, finding_code

PRIVATE_SCHEME = "99VECL"
PRIVATE_SCHEME_NAME = "monai-vecl chest X-ray findings"
SR_KINDS = ("comprehensive3d", "comprehensive")

#: Standard codes by taxonomy finding code (DESIGN §10); the rest use :data:`PRIVATE_SCHEME`.
STANDARD_FINDING_CODES: dict[int, tuple[str, str, str]] = {
    1: ("46621007", "SCT", "Atelectasis"),
    2: ("60046008", "SCT", "Pleural effusion"),
    3: ("36118008", "SCT", "Pneumothorax"),
    5: ("112001", "DCM", "Opacity"),
    6: ("233604007", "SCT", "Pneumonia"),
    7: ("4147007", "SCT", "Mass"),
    8: ("19242006", "SCT", "Pulmonary edema"),
    9: ("27925004", "SCT", "Nodule"),
    10: ("112121", "DCM", "Infiltrate"),
    12: ("87433001", "SCT", "Pulmonary emphysema"),
    15: ("95436008", "SCT", "Lung consolidation"),
    16: ("125605004", "SCT", "Fracture of bone"),
}
PLAIN_CHEST_XRAY = CodedConcept("399208008", "SCT", "Plain chest X-ray")
PERCENT = CodedConcept("%", "UCUM", "Percent")


def finding_concept(name: str) -> CodedConcept:
    """Coded concept for a finding or zero-shot prompt name (standard code, else ``99VECL`` ``F<code>``)."""
    code = finding_code(name)
    if code in STANDARD_FINDING_CODES:
        return CodedConcept(*STANDARD_FINDING_CODES[code])
    return CodedConcept(f"F{code:02d}", PRIVATE_SCHEME, FINDINGS[code])


@dataclass(frozen=True)
class FindingScore:
    """One finding's zero-shot score and the threshold it is called present at (score >= threshold)."""

    name: str
    score: float
    threshold: float

    @property
    def present(self) -> bool:
        return self.score >= self.threshold


@dataclass(frozen=True)
class AlgorithmInfo:
    """TID 4019 algorithm identification; ``parameters`` apply to every finding (per-finding ones are added)."""

    name: str
    version: str
    parameters: tuple[str, ...] = ()


@dataclass(frozen=True)
class SRConfig:
    """SR options (the ``deploy.sr`` section of ``deploy/config.yaml``)."""

    kind: str = "comprehensive3d"
    manufacturer: str = "monai-vecl"
    device_name: str = "VECL zero-shot CXR"
    series_number: int = 9901
    series_description: str = "VECL zero-shot findings (AI, unverified)"
    institution_name: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SR_KINDS:
            raise ValueError(f"deploy.sr.kind must be one of {SR_KINDS}, got {self.kind!r}")

    @classmethod
    def from_mapping(cls, data: dict | None) -> SRConfig:
        data = dict(data or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown keys in deploy.sr: {sorted(unknown)}")
        return cls(**data)


def _uid(*parts: object) -> str:
    """Deterministic UID: the same source image, model and settings give the same SR (re-sends deduplicate)."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _finding_group(
    source: Dataset, finding: FindingScore, algorithm: AlgorithmInfo, sr_uid: str
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    concept = finding_concept(finding.name)
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        parameters=[*algorithm.parameters, f"class_name={finding.name}", f"threshold={finding.threshold:g}"],
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=_uid(sr_uid, finding.name), identifier=f"VECL {finding.name}"),
        finding_type=concept,
        algorithm_id=algorithm_id,
        measurements=[
            hd.sr.Measurement(
                name=codes.DCM.CertaintyOfFinding,
                value=round(100.0 * float(finding.score), 4),
                unit=PERCENT,
            )
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=concept, value=codes.SCT.Present if finding.present else codes.SCT.Absent)
        ],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )


def build_findings_sr(
    source: Dataset,
    findings: Sequence[FindingScore],
    algorithm: AlgorithmInfo,
    config: SRConfig = SRConfig(),
    fingerprint: str = "",
) -> hd.sr.Comprehensive3DSR | hd.sr.ComprehensiveSR:
    """The SR for one scored source image (header attributes suffice; pixel data is not read).

    ``fingerprint`` (e.g. the model weights' hash) enters the SOP Instance UID, so a new model
    or new thresholds give a new SR while a re-run of the same one reproduces the same UID.
    """
    if not findings:
        raise ValueError("no findings to report")
    settings = [f"{f.name}:{f.threshold:g}" for f in findings]
    sop_uid = _uid("sr", source.SOPInstanceUID, algorithm.name, algorithm.version, fingerprint, config.kind, *settings)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_uid("device", config.manufacturer, config.device_name, algorithm.name),
            name=config.device_name,
            manufacturer_name=config.manufacturer,
            model_name=f"{algorithm.name} {algorithm.version}",
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=PLAIN_CHEST_XRAY,
        imaging_measurements=[_finding_group(source, f, algorithm, sop_uid) for f in findings],
    )
    sr_class = hd.sr.Comprehensive3DSR if config.kind == "comprehensive3d" else hd.sr.ComprehensiveSR
    sr = sr_class(
        evidence=[source],
        content=report,
        series_instance_uid=_uid("series", source.StudyInstanceUID, algorithm.name, config.series_number),
        series_number=config.series_number,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=config.manufacturer,
        institution_name=config.institution_name,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=config.series_description,
    )
    now = datetime.datetime.now()
    sr.ContentDate, sr.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    if any(finding_concept(f.name).scheme_designator == PRIVATE_SCHEME for f in findings):
        scheme = Dataset()
        scheme.CodingSchemeDesignator = PRIVATE_SCHEME
        scheme.CodingSchemeName = PRIVATE_SCHEME_NAME
        scheme.CodingSchemeResponsibleOrganization = "monai-vecl project"
        sr.CodingSchemeIdentificationSequence = [scheme]
    return sr
