"""The Open-I (Indiana University) chest X-ray reports shipped inside the ``torchxrayvision`` package.

``torchxrayvision/data/NLMCXR_reports.tgz`` holds 3,955 reports as XML (Demner-Fushman et al., 2016;
CC BY-NC-ND 4.0). They are read from the installed package at run time and never copied into this
repository. Each report has FINDINGS / IMPRESSION text and MeSH "major" tags, which serve as report-level
ground truth for the labelers through :data:`MESH_CODES`.
"""

from __future__ import annotations

import importlib.util
import re
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

#: MeSH major headings (first term, optionally with its first qualifier) that name a taxonomy finding: the
#: report-level gold of the Open-I benchmark. Only headings that name the finding itself are mapped; those with
#: no finding counterpart (Lung/hyperdistention, Pulmonary Disease, Chronic Obstructive, Spine, Aorta, ...) and
#: those naming a related but different entity (see :data:`MESH_CODES_BROAD`) are left out on purpose.
MESH_CODES: dict[str, int] = {
    "Pulmonary Atelectasis": 1, "Atelectasis": 1,
    "Pleural Effusion": 2,
    "Pneumothorax": 3,
    "Cardiomegaly": 4, "Cardiac Shadow/enlarged": 4,
    "Opacity": 5, "Airspace Disease": 5,
    "Pneumonia": 6,
    "Mass": 7,
    "Pulmonary Edema": 8,
    "Nodule": 9,
    "Infiltrate": 10,
    "Pulmonary Fibrosis": 11,
    "Emphysema": 12, "Pulmonary Emphysema": 12,
    "Thickening/pleura": 13,
    "Hernia, Hiatal": 14, "Hernia": 14,
    "Consolidation": 15,
    "Fractures, Bone": 16,
    "Mediastinum/enlarged": 17, "Mediastinum/widened": 17,
    "Catheters, Indwelling": 20, "Implanted Medical Device": 20, "Tube, Inserted": 20, "Medical Device": 20,
    "Stents": 20, "Surgical Instruments": 20,
    "Granuloma": 22, "Granulomatous Disease": 22,
    "Calcified Granuloma": 23,
    "Calcinosis": 24,
}

#: A broader reading of the headings, kept for comparison: a scar (Cicatrix) as fibrosis, vascular congestion
#: as edema, a prominent mediastinum as an enlarged one (the mapping of earlier versions of this benchmark).
MESH_CODES_BROAD: dict[str, int] = {**MESH_CODES, "Cicatrix": 11, "Pulmonary Congestion": 8, "Mediastinum/prominent": 17}

_DEID = re.compile(r"\bX{3,}\b")  # Open-I de-identification, written as MIMIC's "___"


@dataclass(frozen=True)
class OpenIReport:
    """One Open-I report: id, its FINDINGS and IMPRESSION text, and its MeSH major headings."""

    uid: str
    findings: str
    impression: str
    mesh: tuple[str, ...]

    @property
    def text(self) -> str:
        """The report as MIMIC-style text with section headers."""
        return f"FINDINGS: {self.findings}\nIMPRESSION: {self.impression}"

    @property
    def codes(self) -> frozenset[int]:
        """Finding codes named by the MeSH headings (report-level ground truth, :data:`MESH_CODES`)."""
        return self.codes_with(MESH_CODES)

    @property
    def has_text(self) -> bool:
        """Whether the report has FINDINGS or IMPRESSION text (28 of the 3,955 have neither)."""
        return bool((self.findings + self.impression).strip())

    def codes_with(self, mapping: dict[str, int]) -> frozenset[int]:
        """Finding codes of the MeSH headings under another mapping (e.g. :data:`MESH_CODES_BROAD`)."""
        return frozenset(c for m in self.mesh if (c := mesh_code(m, mapping)) is not None)


def mesh_code(heading: str, mapping: dict[str, int] | None = None) -> int | None:
    """Finding code of a MeSH major heading such as ``"Opacity/lung/base/left"``, if it has one."""
    mapping = MESH_CODES if mapping is None else mapping
    parts = [p.strip() for p in heading.split("/")]
    for key in ("/".join(parts[:2]), parts[0]):
        if key in mapping:
            return mapping[key]
    return None


def openi_archive() -> Path:
    """Path of ``NLMCXR_reports.tgz`` in the installed torchxrayvision package (without importing it)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package torchxrayvision is not installed: pip install --no-deps torchxrayvision")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / "NLMCXR_reports.tgz"
        if path.exists():
            return path
    raise FileNotFoundError("torchxrayvision is installed but ships no data/NLMCXR_reports.tgz")


def read_openi_reports(path: str | Path | None = None) -> list[OpenIReport]:
    """All reports of the archive in id order; raises ``ValueError`` naming a member that is not valid XML."""
    path = Path(path) if path is not None else openi_archive()
    reports = []
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".xml"):
                continue
            try:
                root = ET.fromstring(tar.extractfile(member).read())
            except ET.ParseError as err:
                raise ValueError(f"{path}:{member.name}: not valid XML: {err}") from err
            sections = {a.get("Label", "").lower(): _clean(a.text or "") for a in root.iter("AbstractText")}
            uid = root.find("uId")
            reports.append(OpenIReport(
                uid=uid.get("id") if uid is not None else Path(member.name).stem,
                findings=sections.get("findings", ""),
                impression=sections.get("impression", ""),
                mesh=tuple(m.text.strip() for m in root.iter("major") if m.text),
            ))
    return sorted(reports, key=lambda r: int(re.sub(r"\D", "", r.uid) or 0))


def _clean(text: str) -> str:
    return _DEID.sub("___", text).strip()


def benchmark(labeler, reports: list[OpenIReport] | None = None, mapping: dict[str, int] | None = None,
              min_support: int = 15):
    """The Open-I report-level benchmark: every report with text, FINDINGS + IMPRESSION sentences labeled by
    ``labeler`` (each distinct sentence once), a report positive for a finding when any sentence has ``k+``,
    against the MeSH gold under ``mapping`` (default :data:`MESH_CODES`).

    Returns ``(scores, macro_f1)``: per-finding :class:`~monai_vecl.labeling.quality.Score` for all 24
    findings, and the mean F1 over findings with at least ``min_support`` positive reports.
    """
    from monai_vecl.labeling.pipeline import label_sentences
    from monai_vecl.labeling.quality import positive_codes, score_sets
    from monai_vecl.reports import report_sentences
    from monai_vecl.taxonomy import FINDINGS

    reports = [r for r in (reports if reports is not None else read_openi_reports()) if r.has_text]
    sentences = [report_sentences(r.text) for r in reports]
    results, _ = label_sentences([s for ss in sentences for s in ss], labeler, batch_size=4096)
    it = iter(results)
    predicted = [positive_codes(next(it).labels for _ in ss) for ss in sentences]
    truth = [r.codes_with(mapping if mapping is not None else MESH_CODES) for r in reports]
    scores = score_sets(predicted, truth, FINDINGS, FINDINGS)
    kept = [s for s in scores if s.support >= min_support]
    return scores, sum(s.f1 or 0.0 for s in kept) / len(kept)
