"""Write a manifest record's image as a DX DICOM file (for the PACS / deployment path).

Digital X-Ray Image Storage - For Presentation, MONOCHROME2, 12 bits stored in 16, uncompressed.
Study, series and instance UIDs are derived from the record's ids by the package's one UID scheme
(:func:`monai_vecl.data.uids.deterministic_uid`), so exporting the same study twice gives the same
UIDs and the deployment tests can push a study, recognise it and push it again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from monai_vecl.data.manifest import Record, image_path
from monai_vecl.data.uids import deterministic_uid
from monai_vecl.files import atomic_open

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
#: Phantom field of view (mm); real images keep it only as a nominal spacing.
FIELD_OF_VIEW_MM = 400.0
_EPOCH = dt.date(2024, 1, 1)
#: SNOMED CT codes of the frontal projections.
VIEW_CODES = {"PA": ("399348003", "postero-anterior"), "AP": ("399067008", "antero-posterior")}


def _code(scheme: str, value: str, meaning: str):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _short(text: str, n: int = 16) -> str:
    """DICOM SH values are at most 16 characters: keep the tail, which is where ids differ."""
    return text[-n:]


def export_dicom(record: Record, manifest_path: str | os.PathLike, out_path: str | os.PathLike, **tags) -> Path:
    """Write ``record``'s image to ``out_path`` as a DX DICOM file and return the path.

    ``tags`` are DICOM keywords that override the defaults (e.g. ``PatientName="Doe^Jane"``,
    ``StudyInstanceUID=...``); an unknown keyword raises ``ValueError``.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.datadict import tag_for_keyword
    from pydicom.uid import ExplicitVRLittleEndian

    from pydicom.sequence import Sequence

    unknown = [k for k in tags if tag_for_keyword(k) is None]
    if unknown:
        raise ValueError(f"not DICOM keywords: {unknown}")
    if record.view not in ("PA", "AP"):
        raise ValueError(f"record {record.study_id}: DX export needs a frontal view (PA/AP), got {record.view!r}")
    src = image_path(record, manifest_path)
    try:
        gray = np.asarray(Image.open(src).convert("L"), dtype=np.uint32)
    except (OSError, ValueError) as err:
        raise ValueError(f"record {record.study_id}: cannot read image {src}: {err}") from err
    pixels = (gray * 4095 + 127) // 255  # 8-bit → 12-bit stored range

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = deterministic_uid(record.study_id, record.image, "instance")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(out_path), {}, file_meta=meta, preamble=b"\0" * 128)

    digest = int(hashlib.sha256(record.study_id.encode()).hexdigest(), 16)
    when = _EPOCH + dt.timedelta(days=digest % 365)
    date, time = when.strftime("%Y%m%d"), f"{8 + digest % 10:02d}{digest % 60:02d}00"
    spacing = FIELD_OF_VIEW_MM / max(pixels.shape)
    defaults = {
        "SOPClassUID": DX_FOR_PRESENTATION,
        "SOPInstanceUID": meta.MediaStorageSOPInstanceUID,
        "StudyInstanceUID": deterministic_uid(record.study_id, "study"),
        "SeriesInstanceUID": deterministic_uid(record.study_id, "series"),
        "PatientName": f"Phantom^{record.patient_id}",
        "PatientID": record.patient_id,
        "PatientBirthDate": "",
        "PatientSex": "O",
        "StudyID": _short(record.study_id),
        "AccessionNumber": _short(record.study_id),
        "StudyDate": date, "StudyTime": time, "SeriesDate": date, "SeriesTime": time,
        "ContentDate": date, "ContentTime": time,
        "ReferringPhysicianName": "",
        "StudyDescription": "CHEST XRAY",
        "SeriesDescription": f"CHEST {record.view}",
        "Modality": "DX",
        "Manufacturer": "monai-vecl phantom",
        "SeriesNumber": 1,
        "InstanceNumber": 1,
        "BodyPartExamined": "CHEST",
        "ViewPosition": record.view,
        "ViewCodeSequence": Sequence([_code("SCT", *VIEW_CODES[record.view])]),
        "AnatomicRegionSequence": Sequence([_code("SCT", "51185008", "Chest")]),
        "PositionerType": "NONE",
        "AcquisitionContextSequence": Sequence([]),
        "PatientOrientation": ["L", "F"],
        "ImageType": ["ORIGINAL", "PRIMARY"],
        "PresentationIntentType": "FOR PRESENTATION",
        "ImageLaterality": "U",
        "BurnedInAnnotation": "NO",
        "LossyImageCompression": "00",
        "DetectorType": "SCINTILLATOR",
        "ImagerPixelSpacing": [spacing, spacing],
        "PixelSpacing": [spacing, spacing],
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": int(pixels.shape[0]),
        "Columns": int(pixels.shape[1]),
        "BitsAllocated": 16,
        "BitsStored": 12,
        "HighBit": 11,
        "PixelRepresentation": 0,
        "PixelIntensityRelationship": "LIN",
        "PixelIntensityRelationshipSign": 1,
        "RescaleIntercept": 0,
        "RescaleSlope": 1,
        "RescaleType": "US",
        "WindowCenter": 2048,
        "WindowWidth": 4096,
        "PresentationLUTShape": "IDENTITY",
    }
    for keyword, value in {**defaults, **tags}.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.astype("<u2").tobytes()
    with atomic_open(out_path) as f:
        pydicom.dcmwrite(f, ds, enforce_file_format=True)
    return Path(out_path)
