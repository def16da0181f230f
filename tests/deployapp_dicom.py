"""Small DICOM builders for the deploy-app tests (pydicom only; no files outside tmp_path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_PRESENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"


def rg1_path(name: str = "RG1_UNCR.dcm") -> Path:
    """A real chest CR from the ``pydicom-data`` package (found offline through pydicom's data manager)."""
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file(name))


def make_dx(
    path: Path,
    pixels: np.ndarray,
    *,
    study_uid: str | None = None,
    modality: str = "DX",
    view: str | None = "PA",
    body_part: str | None = "CHEST",
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    signed: bool = False,
    compress: str | None = None,
    **tags: object,
) -> Path:
    """Write a single-frame grayscale radiograph; extra ``tags`` (keyword=value) are set as given."""
    pixels = np.asarray(pixels)
    bits_allocated = 8 if pixels.dtype.itemsize == 1 else 16
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CR_STORAGE if modality == "CR" else DX_PRESENTATION_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Deploy", "DEPLOYAPP-1", "19700101", "O"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260101", "120000", "ACC1", "1"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 1, 1
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    if view is not None:
        ds.ViewPosition = view
    if body_part is not None:
        ds.BodyPartExamined = body_part
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = pixels.astype(f"{'i' if signed else 'u'}{bits_allocated // 8}").tobytes()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    if compress is not None:
        ds.compress(compress)
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp(shape: tuple[int, int] = (64, 80), top: int = 4095, dtype: str = "uint16") -> np.ndarray:
    """A deterministic image covering 0..top, for exact numeric checks."""
    return (np.arange(shape[0] * shape[1]).reshape(shape) * top // (shape[0] * shape[1] - 1)).astype(dtype)


def validate_sr(path: Path) -> list[str]:
    """Problems that dsrdump (dcmtk) and dciodvfy (dicom3tools) report for an SR file; empty when valid."""
    import shutil
    import subprocess

    import pytest

    for tool in ("dsrdump", "dciodvfy"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup.sh --system installs dcmtk and dicom3tools)")
    problems = []
    dump = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, check=False)
    if dump.returncode != 0 or "CONTAINER" not in dump.stdout:
        problems.append(f"dsrdump rc={dump.returncode}: {dump.stderr.strip()}")
    problems += [f"dsrdump: {line}" for line in dump.stderr.splitlines() if line.startswith(("E:", "F:"))]
    check = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    problems += [f"dciodvfy: {line}" for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
    return problems


def pixelmed_errors(path: Path) -> list[str]:
    """Errors that pixelmed's DicomSRValidator (templates and context groups) reports; ~10 s of Java per file."""
    import os
    import shutil
    import subprocess

    import pytest

    if shutil.which("DicomSRValidator") is None:
        pytest.skip("DicomSRValidator is not installed (scripts/setup.sh --system installs pixelmed-apps)")
    # The JDK's default XPath limits are too small for pixelmed's compiled template stylesheet.
    limits = "-Djdk.xml.xpathExprOpLimit=0 -Djdk.xml.xpathExprGrpLimit=0 -Djdk.xml.xpathTotalOpLimit=0"
    env = {**os.environ, "JAVA_TOOL_OPTIONS": limits}
    run = subprocess.run(["DicomSRValidator", str(path)], capture_output=True, text=True, env=env, check=False)
    out = run.stdout + run.stderr
    assert "IOD validation complete" in out, out[-2000:]
    return [line for line in out.splitlines() if line.startswith("Error")]


def evidence_uids(sr: Dataset) -> set[str]:
    """SOP Instance UIDs in an SR's Current Requested Procedure Evidence Sequence."""
    return {sop.ReferencedSOPInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
            for series in study.ReferencedSeriesSequence for sop in series.ReferencedSOPSequence}


def _name(item: Dataset) -> str:
    return item.ConceptNameCodeSequence[0].CodeMeaning


def measurement_groups(sr: Dataset) -> list[dict]:
    """Each TID 1501 group of an SR as a flat dict, read straight from the Content Sequence."""
    groups = []
    for container in sr.ContentSequence:
        if _name(container) != "Imaging Measurements":
            continue
        for group in container.ContentSequence:
            flat: dict = {"parameters": []}
            for item in group.ContentSequence:
                name = _name(item)
                if item.ValueType == "CODE":
                    code = item.ConceptCodeSequence[0]
                    key = "finding" if name == "Finding" else "evaluation"
                    flat[key] = (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning)
                    if key == "evaluation":
                        flat["evaluation_name"] = item.ConceptNameCodeSequence[0].CodeValue
                elif item.ValueType == "NUM":
                    value = item.MeasuredValueSequence[0]
                    flat[name] = (float(value.NumericValue), value.MeasurementUnitsCodeSequence[0].CodeValue)
                elif item.ValueType == "IMAGE":
                    flat["source_sop"] = item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                elif name == "Algorithm Parameters":
                    flat["parameters"].append(item.TextValue)
                elif item.ValueType == "TEXT":
                    flat[name] = item.TextValue
            groups.append(flat)
    return groups
