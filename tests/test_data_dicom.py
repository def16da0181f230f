"""DX DICOM export of manifest records."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace

import numpy as np
import pydicom
import pytest
from PIL import Image

from monai_vecl.data.dicom_export import DX_FOR_PRESENTATION, deterministic_uid, export_dicom
from monai_vecl.data.manifest import image_path, read_manifest
from monai_vecl.data.phantom import generate_phantom


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return generate_phantom(tmp_path_factory.mktemp("ph"), n_images=3, seed=1, image_size=64, workers=1)


def test_dx_tags_and_pixels(manifest, tmp_path):
    record = read_manifest(manifest)[0]
    ds = pydicom.dcmread(export_dicom(record, manifest, tmp_path / "a.dcm"))
    assert ds.SOPClassUID == DX_FOR_PRESENTATION and ds.file_meta.MediaStorageSOPClassUID == DX_FOR_PRESENTATION
    assert ds.Modality == "DX" and ds.PhotometricInterpretation == "MONOCHROME2"
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, 12, 11)
    assert ds.ViewPosition == record.view and ds.PatientID == record.patient_id
    assert ds.ViewCodeSequence[0].CodeValue in ("399348003", "399067008")
    for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
        assert pydicom.uid.UID(uid).is_valid and len(uid) <= 64 and uid.startswith(pydicom.uid.PYDICOM_ROOT_UID)
    source = np.asarray(Image.open(image_path(record, manifest)), dtype=np.int64)
    pixels = ds.pixel_array.astype(np.int64)
    assert pixels.shape == source.shape and pixels.max() <= 4095
    assert np.array_equal(pixels, (source * 4095 + 127) // 255)


def test_uids_are_deterministic_per_study(manifest, tmp_path):
    a, b = read_manifest(manifest)[:2]
    first = pydicom.dcmread(export_dicom(a, manifest, tmp_path / "1.dcm"))
    again = pydicom.dcmread(export_dicom(a, manifest, tmp_path / "2.dcm"))
    other = pydicom.dcmread(export_dicom(b, manifest, tmp_path / "3.dcm"))
    assert (first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID) == (
        again.StudyInstanceUID, again.SeriesInstanceUID, again.SOPInstanceUID)
    assert first.StudyInstanceUID != other.StudyInstanceUID
    assert len({first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID}) == 3
    assert deterministic_uid("x") == deterministic_uid("x") != deterministic_uid("y")


def test_tag_overrides_and_errors(manifest, tmp_path):
    record = read_manifest(manifest)[0]
    ds = pydicom.dcmread(export_dicom(record, manifest, tmp_path / "o.dcm", PatientName="Doe^Jane", AccessionNumber="A1"))
    assert str(ds.PatientName) == "Doe^Jane" and ds.AccessionNumber == "A1"
    with pytest.raises(ValueError, match="not DICOM keywords"):
        export_dicom(record, manifest, tmp_path / "x.dcm", NotATag=1)
    with pytest.raises(ValueError, match="frontal"):
        export_dicom(replace(record, view="LATERAL"), manifest, tmp_path / "y.dcm")
    with pytest.raises(ValueError, match="cannot read image"):
        export_dicom(replace(record, image="images/none.png"), manifest, tmp_path / "z.dcm")


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
def test_dciodvfy_finds_no_errors(manifest, tmp_path):
    path = export_dicom(read_manifest(manifest)[1], manifest, tmp_path / "v.dcm")
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert "DXImageForPresentation" in output
    assert "Error" not in output, output
