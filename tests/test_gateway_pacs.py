"""End to end with real PACS software: Orthanc pushes studies (REST API and DCMTK storescu) to the
gateway, the gateway runs the deploy app (untrained tiny model) and the SR comes back into the same
study in Orthanc, where DCMTK's dsrdump and dicom3tools' dciodvfy check it."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest
from gateway_pacs import (
    FIXTURES,
    Orthanc,
    compressed_study,
    copy_as_new_study,
    free_port,
    gateway_yaml,
    missing_tools,
    pydicom_data,
    storescu,
    tiny_pipeline_config,
    wait_until,
    write_study,
)

from monai_vecl.deploy.gateway import GatewayService
from monai_vecl.deploy.gateway_config import Destination, GatewayConfig, Peer

pytestmark = [pytest.mark.pacs, pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()}")]

QUIET = 0.5
SENDERS = ("SENDER1", "SENDER2", "SENDER3", "SENDER4")


@pytest.fixture(scope="module")
def pipeline():
    from monai_vecl.deploy.pipeline import StudyPipeline

    with pytest.warns(UserWarning, match="UNTRAINED"):
        return StudyPipeline(tiny_pipeline_config()["deploy"])


@pytest.fixture(scope="module")
def pacs_and_gateway(tmp_path_factory: pytest.TempPathFactory, pipeline):
    """Orthanc with the gateway declared as modality VECL; the gateway sends SRs back to Orthanc."""
    root = tmp_path_factory.mktemp("pacs")
    gateway_port = free_port()
    with Orthanc(root / "orthanc", {"VECL": ("VECL", gateway_port)}) as orthanc:
        config = GatewayConfig(
            destination=Destination("ORTHANC", "127.0.0.1", orthanc.dicom_port),
            peers=(Peer("ORTHANC", ("127.0.0.1",)), Peer("STORESCU"), *(Peer(s) for s in SENDERS)),
            spool_dir=root / "spool", port=gateway_port, monitoring_port=0, quiet_seconds=QUIET, poll_seconds=0.05,
        )
        service = GatewayService(config, pipeline=pipeline)
        service.start()
        try:
            yield orthanc, service
        finally:
            service.stop()


@pytest.fixture(scope="module")
def phantom_dicom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phantom chest radiograph (the project's embedded data set) exported as DX DICOM."""
    from monai_vecl.data.dicom_export import export_dicom
    from monai_vecl.data.manifest import read_manifest
    from monai_vecl.data.phantom import generate_phantom

    root = tmp_path_factory.mktemp("phantom")
    manifest = generate_phantom(root / "data", n_images=4, seed=0, workers=1)
    record = next(r for r in read_manifest(manifest) if r.view in ("PA", "AP"))
    return export_dicom(record, manifest, root / "phantom.dcm")


def _sr_count_is(orthanc: Orthanc, study_uid: str, n: int) -> bool:
    return len(orthanc.srs_of(study_uid)) == n


def _check_sr(orthanc: Orthanc, study_uid: str, source: Path, tmp_path: Path) -> pydicom.Dataset:
    """The study's single SR: same study and patient as the source, and valid per dciodvfy and dsrdump."""
    (sr_id,) = orthanc.srs_of(study_uid)
    path = orthanc.instance_file(sr_id, tmp_path / f"{sr_id}.dcm")
    sr = pydicom.dcmread(path)
    src = pydicom.dcmread(source, stop_before_pixels=True)
    assert sr.StudyInstanceUID == study_uid
    assert (sr.PatientID, sr.PatientName) == (src.PatientID, src.PatientName)
    assert sr.Modality == "SR" and sr.VerificationFlag == "UNVERIFIED"
    dump = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert dump.returncode == 0 and "Certainty of Finding" in dump.stdout, dump.stderr
    check = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60, check=False)
    errors = [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], errors
    return sr


def test_rest_push_of_real_cr_j2k_phantom_rle_and_jpeg_ls_studies_returns_a_valid_sr_into_each(
    pacs_and_gateway, phantom_dicom: Path, tmp_path: Path
) -> None:
    orthanc, _ = pacs_and_gateway
    sources = {
        "cr": pydicom_data("RG1_UNCR.dcm"),
        "j2k": copy_as_new_study(pydicom_data("RG1_J2KR.dcm"), tmp_path / "j2k.dcm", seed=1),
        "phantom": phantom_dicom,
        "rle": compressed_study(tmp_path / "rle", 12, pydicom.uid.RLELossless),
        "jpeg-ls": compressed_study(tmp_path / "jls", 13, pydicom.uid.JPEGLSLossless),
    }
    studies = {}
    for name, path in sources.items():
        orthanc.upload(path)
        study_uid = pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID
        orthanc.push("VECL", orthanc.study_id(study_uid))
        studies[name] = study_uid
    for name, study_uid in studies.items():
        wait_until(lambda u=study_uid: _sr_count_is(orthanc, u, 1), 60, what=f"SR of the {name} study")
        _check_sr(orthanc, study_uid, sources[name], tmp_path)


def test_storescu_push_then_same_content_again_gives_no_second_sr_but_new_content_does(
    pacs_and_gateway, tmp_path: Path
) -> None:
    orthanc, gateway = pacs_and_gateway
    files = write_study(tmp_path / "a", 2, seed=21)
    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    for f in files:
        orthanc.upload(f)
    storescu(gateway.port, files)
    wait_until(lambda: _sr_count_is(orthanc, study_uid, 1), 60, what="first SR")
    wait_until(lambda: gateway.state.counts()["sr_written"] == 0, 30, what="delivery recorded")
    delivered = gateway.state.counts()["delivered"]
    # Orthanc pushes the whole study back, our SR included: the images are known, the SR is ours.
    orthanc.push("VECL", orthanc.study_id(study_uid))
    storescu(gateway.port, files)
    with pytest.raises(TimeoutError):
        wait_until(lambda: gateway.state.counts()["delivered"] != delivered or len(orthanc.srs_of(study_uid)) > 1,
                   QUIET * 6, what="a second SR that must not come")
    extra = write_study(tmp_path / "b", 1, seed=22, study_uid=study_uid)
    orthanc.upload(extra[0])
    orthanc.push("VECL", orthanc.study_id(study_uid))
    wait_until(lambda: _sr_count_is(orthanc, study_uid, 2), 60, what="SR of the changed study")
    uids = {pydicom.dcmread(orthanc.instance_file(i, tmp_path / f"{i}.dcm")).SOPInstanceUID
            for i in orthanc.srs_of(study_uid)}
    assert len(uids) == 2


def test_twenty_studies_from_four_concurrent_senders_give_twenty_distinct_srs(pacs_and_gateway, tmp_path: Path) -> None:
    orthanc, gateway = pacs_and_gateway
    studies = [write_study(tmp_path / f"s{i}", 1 + i % 2, seed=100 + i) for i in range(20)]
    study_uids = [pydicom.dcmread(files[0]).StudyInstanceUID for files in studies]
    results: list[subprocess.CompletedProcess] = []

    def send(sender: str, batch: list[list[Path]]) -> None:
        results.append(storescu(gateway.port, [f for files in batch for f in files], calling=sender, check=False))

    threads = [threading.Thread(target=send, args=(s, studies[k::4])) for k, s in enumerate(SENDERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.returncode for r in results] == [0] * 4, [r.stderr for r in results]
    wait_until(lambda: all(orthanc.srs_of(u) for u in study_uids), 180, interval=0.5, what="20 SRs")
    per_study = {u: orthanc.srs_of(u) for u in study_uids}
    assert all(len(ids) == 1 for ids in per_study.values()), {u[-8:]: len(i) for u, i in per_study.items()}
    assert len({i for ids in per_study.values() for i in ids}) == 20


def test_sr_waits_for_a_down_pacs_and_lua_auto_route_does_not_loop(pipeline, tmp_path: Path) -> None:
    orthanc_port, gateway_port = free_port(), free_port()
    config_path = gateway_yaml(tmp_path / "gateway.yaml", port=gateway_port, dest_port=orthanc_port,
                               spool=tmp_path / "spool", quiet=QUIET)
    service = GatewayService(GatewayConfig.from_yaml(config_path), pipeline=pipeline)
    service.start()
    try:
        early = write_study(tmp_path / "early", 1, seed=41)
        early_uid = pydicom.dcmread(early[0]).StudyInstanceUID
        storescu(gateway_port, early)
        wait_until(lambda: [s.attempts for s in service.state.studies()] >= [2], 60, what="failed delivery attempts")
        (pending,) = service.state.studies()
        assert pending.state == "sr_written" and pending.reason == "destination unreachable"
        lua = FIXTURES / "autoroute.lua"
        with Orthanc(tmp_path / "orthanc", {"VECL": ("VECL", gateway_port)}, lua=lua, stable_age=1,
                     dicom_port=orthanc_port) as orthanc:
            wait_until(lambda: _sr_count_is(orthanc, early_uid, 1), 60, what="the kept SR once the PACS is up")
            routed = write_study(tmp_path / "routed", 2, seed=42)
            routed_uid = pydicom.dcmread(routed[0]).StudyInstanceUID
            for f in routed:
                orthanc.upload(f)
            wait_until(lambda: _sr_count_is(orthanc, routed_uid, 1), 60, what="SR of the auto-routed study")
            # The SR made the study unstable; once stable again the script runs and must not re-route.
            study_id = orthanc.study_id(routed_uid)
            wait_until(lambda: orthanc.get(f"/studies/{study_id}")["IsStable"], 30, what="study stable again")
            time.sleep(1.0)  # OnStableStudy runs within milliseconds of the study turning stable
            assert orthanc.get(f"/studies/{study_id}/metadata?expand")["VeclRoutedInstances"] == "2"
            stores = [j for j in orthanc.get("/jobs?expand") if j["Type"] == "DicomModalityStore"]
            assert len(stores) == 1, "exactly one auto-route, SR never routed back"
            assert _sr_count_is(orthanc, routed_uid, 1)
    finally:
        service.stop()
