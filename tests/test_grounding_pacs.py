"""The grounding SEG through real PACS software: Orthanc pushes a study to the gateway, the SR and the
SEG come back into the same study, a second push (our SR and SEG included) adds nothing, and the SEG
Orthanc holds validates with dicom3tools' dciodvfy."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from gateway_pacs import Orthanc, free_port, missing_tools, wait_until
from test_grounding_seg import dciodvfy_errors

from monai_vecl.deploy.gateway import GatewayService
from monai_vecl.deploy.gateway_config import Destination, GatewayConfig, Peer

pytestmark = [pytest.mark.pacs, pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()}")]


def _instances(orthanc: Orthanc, study_id: str, modality: str) -> list[str]:
    return [i for s in orthanc.get(f"/studies/{study_id}/series") if s["MainDicomTags"].get("Modality") == modality
            for i in s["Instances"]]


def test_seg_and_sr_come_back_once_into_the_study_and_validate(tmp_path: Path) -> None:
    from monai_vecl.data.dicom_export import export_dicom
    from monai_vecl.data.manifest import read_manifest
    from monai_vecl.data.phantom import generate_phantom
    from monai_vecl.deploy.pipeline import StudyPipeline

    manifest = generate_phantom(tmp_path / "data", n_images=4, seed=0, workers=1)
    source = export_dicom(read_manifest(manifest)[0], manifest, tmp_path / "source.dcm")
    with pytest.warns(UserWarning, match="UNTRAINED"):  # threshold 0: the finding is called present
        pipeline = StudyPipeline({"deploy": {"bundle_root": None, "device": "cpu", "findings": ["Pleural Effusion"],
                                             "site_thresholds": {"Pleural Effusion": 0.0}}})
    port = free_port()
    with Orthanc(tmp_path / "orthanc", {"VECL": ("VECL", port)}) as orthanc:
        config = GatewayConfig(destination=Destination("ORTHANC", "127.0.0.1", orthanc.dicom_port),
                               peers=(Peer("ORTHANC", ("127.0.0.1",)),), spool_dir=tmp_path / "spool", port=port,
                               quiet_seconds=0.5, poll_seconds=0.05)
        service = GatewayService(config, pipeline=pipeline)
        service.start()
        try:
            orthanc.upload(source)
            study_uid = pydicom.dcmread(source, stop_before_pixels=True).StudyInstanceUID
            study_id = orthanc.study_id(study_uid)
            orthanc.push("VECL", study_id)
            wait_until(lambda: _instances(orthanc, study_id, "SEG") and _instances(orthanc, study_id, "SR"), 90,
                       what="SR and SEG in the study")
            wait_until(lambda: service.state.counts()["sr_written"] == 0, 30, what="delivery recorded")
            # The whole study again (the image, our SR and our SEG): every instance is acknowledged (a
            # refused one fails the synchronous push) and nothing new comes back.
            orthanc.push("VECL", study_id)
            with pytest.raises(TimeoutError):
                wait_until(lambda: len(_instances(orthanc, study_id, "SEG")) + len(_instances(orthanc, study_id, "SR"))
                           > 2, 3.0, what="a second SR or SEG that must not come")
            (seg_id,) = _instances(orthanc, study_id, "SEG")
            (sr_id,) = _instances(orthanc, study_id, "SR")
            path = orthanc.instance_file(seg_id, tmp_path / "seg.dcm")
            stored_sr = pydicom.dcmread(orthanc.instance_file(sr_id, tmp_path / "sr.dcm"), stop_before_pixels=True)
        finally:
            service.stop()
    # one UID scheme: the app run on the same study names its SR and SEG as the gateway did
    app = pipeline.process([source])
    assert (stored_sr.SOPInstanceUID, pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) == (
        app.sr.SOPInstanceUID, app.seg.SOPInstanceUID)
    assert dciodvfy_errors(path) == []
    seg = hd.seg.segread(path)
    src = pydicom.dcmread(source, stop_before_pixels=True)
    assert (seg.StudyInstanceUID, seg.PatientID) == (src.StudyInstanceUID, src.PatientID)
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert [d.segment_label for d in map(seg.get_segment_description, [1])] == ["Pleural Effusion"]
