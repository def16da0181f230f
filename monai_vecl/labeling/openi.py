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

#: MeSH major headings (first term, optionally with its first qualifier) that name a taxonomy finding.
#: Headings with no finding counterpart (Lung/hypoinflation, Spine, Aorta, ...) are left out on purpose.
MESH_CODES: dict[str, int] = {
    "Pulmonary Atelectasis": 1, "Atelectasis": 1,
    "Pleural Effusion": 2,
    "Pneumothorax": 3,
    "Cardiomegaly": 4, "Cardiac Shadow/enlarged": 4,
    "Opacity": 5, "Airspace Disease": 5,
    "Pneumonia": 6,
    "Mass": 7,
    "Pulmonary Edema": 8, "Pulmonary Congestion": 8,
    "Nodule": 9,
    "Infiltrate": 10,
    "Pulmonary Fibrosis": 11, "Cicatrix": 11,
    "Emphysema": 12, "Pulmonary Emphysema": 12,
    "Thickening/pleura": 13,
    "Hernia, Hiatal": 14, "Hernia": 14,
    "Consolidation": 15,
    "Fractures, Bone": 16,
    "Mediastinum/enlarged": 17, "Mediastinum/widened": 17, "Mediastinum/prominent": 17,
    "Catheters, Indwelling": 20, "Implanted Medical Device": 20, "Tube, Inserted": 20, "Medical Device": 20,
    "Stents": 20, "Surgical Instruments": 20,
    "Granuloma": 22, "Granulomatous Disease": 22,
    "Calcified Granuloma": 23,
    "Calcinosis": 24,
}

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
        """Finding codes named by the MeSH headings (report-level ground truth)."""
        return frozenset(c for m in self.mesh if (c := mesh_code(m)) is not None)


def mesh_code(heading: str) -> int | None:
    """Finding code of a MeSH major heading such as ``"Opacity/lung/base/left"``, if it has one."""
    parts = [p.strip() for p in heading.split("/")]
    for key in ("/".join(parts[:2]), parts[0]):
        if key in MESH_CODES:
            return MESH_CODES[key]
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
