"""End to end with real PACS software: Orthanc pushes studies (REST API and DCMTK storescu) to the
gateway, the gateway runs the deploy app (untrained tiny model) and the SR comes back into the same
study in Orthanc, where DCMTK's dsrdump, dicom3tools' dciodvfy and pixelmed's DicomSRValidator check
it. Late instances: nothing new unless the report changes, then a corrected SR naming its
predecessor. A declined study gets a notice SR. An unreachable PACS is retried without giving up."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pydicom
import pytest
from deployapp_dicom import evidence_uids, pixelmed_errors
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
            processing_workers=2,  # two app threads: each study still gets exactly one SR
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


def _srs(orthanc: Orthanc, study_uid: str, tmp_path: Path) -> list[tuple[Path, pydicom.Dataset]]:
    """The study's SRs as stored by Orthanc: the original first, then the correction naming its predecessor."""
    found = []
    for sr_id in orthanc.srs_of(study_uid):
        path = orthanc.instance_file(sr_id, tmp_path / f"{sr_id}.dcm")
        found.append((path, pydicom.dcmread(path)))
    return sorted(found, key=lambda item: "PredecessorDocumentsSequence" in item[1])


def _texts(sr: pydicom.Dataset) -> list[str]:
    return [i.TextValue for c in sr.ContentSequence if c.ValueType == "CONTAINER" for i in c.ContentSequence
            if i.ValueType == "TEXT"]


def _check_sr(orthanc: Orthanc, study_uid: str, source: Path, tmp_path: Path) -> pydicom.Dataset:
    """The study's single SR: same study and patient as the source, and valid per dciodvfy and dsrdump."""
    ((path, sr),) = _srs(orthanc, study_uid, tmp_path)
    src = pydicom.dcmread(source, stop_before_pixels=True)
    assert sr.StudyInstanceUID == study_uid
    assert (sr.PatientID, sr.PatientName) == (src.PatientID, src.PatientName)
    assert sr.Modality == "SR" and sr.VerificationFlag == "UNVERIFIED"
    dump = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert dump.returncode == 0 and "Procedure reported" in dump.stdout, dump.stderr
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
        "lateral only": write_study(tmp_path / "lat", 1, seed=14, view="LL")[0],
    }
    studies = {}
    for name, path in sources.items():
        orthanc.upload(path)
        study_uid = pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID
        orthanc.push("VECL", orthanc.study_id(study_uid))
        studies[name] = study_uid
    for name, study_uid in studies.items():
        wait_until(lambda u=study_uid: _sr_count_is(orthanc, u, 1), 60, what=f"SR of the {name} study")
        sr = _check_sr(orthanc, study_uid, sources[name], tmp_path)
        if name == "lateral only":  # declined, and the PACS is told so
            assert _texts(sr) == ["Received; no findings produced: no frontal chest CR/DX image: lateral view"]
        else:
            assert not _texts(sr) and "Certainty of Finding" in str(sr.ContentSequence)


def test_late_instances_send_nothing_unless_the_report_changes_then_a_corrected_sr_names_its_predecessor(
    pacs_and_gateway, tmp_path: Path
) -> None:
    orthanc, gateway = pacs_and_gateway
    (ap,) = write_study(tmp_path / "ap", 1, seed=21, view="AP")
    study_uid = pydicom.dcmread(ap).StudyInstanceUID
    orthanc.upload(ap)
    storescu(gateway.port, [ap])
    wait_until(lambda: _sr_count_is(orthanc, study_uid, 1), 60, what="first SR")
    wait_until(lambda: gateway.state.counts()["sr_written"] == 0, 30, what="delivery recorded")
    delivered = gateway.state.counts()["delivered"]
    # Orthanc pushes the whole study back, our SR included: the images are known, the SR is ours.
    orthanc.push("VECL", orthanc.study_id(study_uid))
    storescu(gateway.port, [ap])
    # A late lateral changes the study but not the report (the AP stays the scored image).
    (lateral,) = write_study(tmp_path / "lat", 1, seed=22, study_uid=study_uid, view="LL")
    storescu(gateway.port, [lateral])
    wait_until(lambda: any(s.outcome == "unchanged after late instances" for s in gateway.state.studies()), 30,
               what="the re-evaluation with an unchanged report")
    with pytest.raises(TimeoutError):
        wait_until(lambda: gateway.state.counts()["delivered"] != delivered or len(orthanc.srs_of(study_uid)) > 1,
                   QUIET * 6, what="a second SR that must not come")
    # A late PA is preferred over the AP: the findings change, so a corrected SR follows.
    (pa,) = write_study(tmp_path / "pa", 1, seed=23, study_uid=study_uid, view="PA")
    storescu(gateway.port, [pa])
    wait_until(lambda: _sr_count_is(orthanc, study_uid, 2), 60, what="the corrected SR")
    (_, first), (second_path, second) = _srs(orthanc, study_uid, tmp_path)
    assert "PredecessorDocumentsSequence" not in first
    predecessor = second.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == first.SOPInstanceUID != second.SOPInstanceUID
    assert evidence_uids(second) == {pydicom.dcmread(f).SOPInstanceUID for f in (ap, lateral, pa)}, "all examined"
    assert pixelmed_errors(second_path) == []


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
    # The operator's view of the same run: Prometheus metrics and health on loopback.
    base = f"http://127.0.0.1:{gateway.monitor.address[1]}"
    wait_until(lambda: gateway.state.counts()["sr_written"] == 0, 30, what="deliveries recorded")
    metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line and not line.startswith("#")}
    assert values["vecl_push_to_sr_seconds_count"] >= 20, "one push-to-SR latency per delivered SR"
    assert values['vecl_studies_processed_total{outcome="findings"}'] >= 20
    assert json.loads(urllib.request.urlopen(f"{base}/health", timeout=10).read())["status"] == "ok"


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
        # More attempts than the old give-up limit of 10: by default delivery never gives up.
        wait_until(lambda: [s.attempts for s in service.state.studies()] >= [11], 60, what="failed delivery attempts")
        (pending,) = service.state.studies()
        assert pending.state == "sr_written" and pending.reason == "destination unreachable"
        assert service.config.max_attempts is None
        lua = FIXTURES / "autoroute.lua"
        with Orthanc(tmp_path / "orthanc", {"VECL": ("VECL", gateway_port)}, lua=lua, stable_age=1,
                     dicom_port=orthanc_port) as orthanc:
            wait_until(lambda: _sr_count_is(orthanc, early_uid, 1), 180, what="the kept SR once the PACS is up")
            routed = write_study(tmp_path / "routed", 2, seed=42)
            routed_uid = pydicom.dcmread(routed[0]).StudyInstanceUID
            for f in routed:
                orthanc.upload(f)
            wait_until(lambda: _sr_count_is(orthanc, routed_uid, 1), 180, what="SR of the auto-routed study")
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
