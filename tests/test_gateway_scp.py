"""The gateway's Storage SCP in-process: DIMSE statuses for bad input, AE/host allowlist and logged
rejections, association slots of vanished peers, C-ECHO, durable spooling and idempotent re-sends,
PACS answers to SR delivery, metrics/health, library warnings. Senders are pynetdicom and DCMTK; no
model is loaded (stand-in apps that raise or decline)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
from gateway_pacs import (
    DX_PRESENTATION,
    dx_instance,
    echoscu,
    free_port,
    missing_tools,
    pydicom_data,
    storescu,
    wait_until,
    write_study,
)
from pydicom.encaps import encapsulate, generate_fragments
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import MRImageStorage, Verification

from monai_vecl.deploy.gateway import GatewayService, send_file
from monai_vecl.deploy.gateway_config import Destination, GatewayConfig, Peer, TLSConfig
from monai_vecl.deploy.intake import (
    CANNOT_UNDERSTAND,
    DOES_NOT_MATCH_SOP_CLASS,
    SOP_CLASS_NOT_SUPPORTED,
    IntakeError,
    check_instance,
)
from monai_vecl.deploy.spool import Spool

ACCEPTED = frozenset(GatewayConfig.__dataclass_fields__["accepted_sop_classes"].default)


class NeverCalled:
    """These tests never let a study go quiet; processing one would be a bug."""

    def process(self, paths: list) -> None:
        raise AssertionError("no study should be processed in SCP tests")


@pytest.fixture()
def gateway(tmp_path: Path):
    config = GatewayConfig(
        destination=Destination("ORTHANC", "127.0.0.1", free_port()),
        peers=(Peer("ORTHANC", ("127.0.0.1",)), Peer("STORESCU"), Peer("FARAWAY", ("10.9.8.7",))),
        spool_dir=tmp_path / "spool", port=0, monitoring_port=0, quiet_seconds=3600, poll_seconds=0.1,
    )
    service = GatewayService(config, pipeline=NeverCalled())
    service.start()
    try:
        yield service
    finally:
        service.stop()


def _send(port: int, payload, sop_class: str, calling: str = "ORTHANC", transfer_syntax=None):
    ae = AE(ae_title=calling)
    ae.add_requested_context(sop_class, transfer_syntax or pydicom.uid.ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="VECL")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(payload)
        echo = assoc.send_c_echo()
    finally:
        assoc.release()
    assert echo.Status == 0x0000, "the association must stay usable after any refusal"
    return status


def _truncated_j2k() -> pydicom.Dataset:
    ds = pydicom.dcmread(pydicom_data("RG1_J2KR.dcm"))
    frame = b"".join(generate_fragments(ds.PixelData))
    ds.PixelData = encapsulate([frame[: len(frame) // 2]])
    return ds


def test_not_dicom_gets_cannot_understand(gateway: GatewayService, monkeypatch: pytest.MonkeyPatch) -> None:
    # A misbehaving sender: the C-STORE data set stream is plain text, not an encoded data set.
    monkeypatch.setattr("pynetdicom.association.encode", lambda *args: b"this is not a DICOM data set\n" * 40)
    ds = dx_instance(generate_uid(), 6)
    status = _send(gateway.port, ds, ds.SOPClassUID)
    assert status.Status == CANNOT_UNDERSTAND and "not a DICOM" in status.ErrorComment
    assert gateway.state.counts()["received"] == 0 and gateway.spool.instance_files() == []


def test_bad_input_gets_its_status_and_service_keeps_running(gateway: GatewayService) -> None:
    good = dx_instance(generate_uid(), 7)
    no_pixels = dx_instance(generate_uid(), 8)
    del no_pixels.PixelData
    truncated = dx_instance(generate_uid(), 9)
    truncated.PixelData = truncated.PixelData[: len(truncated.PixelData) // 3]
    mr = dx_instance(generate_uid(), 10)
    mr.SOPClassUID = mr.file_meta.MediaStorageSOPClassUID = MRImageStorage
    cases = [
        (no_pixels, no_pixels.SOPClassUID, None, DOES_NOT_MATCH_SOP_CLASS),
        (truncated, truncated.SOPClassUID, None, DOES_NOT_MATCH_SOP_CLASS),
        (_truncated_j2k(), "1.2.840.10008.5.1.4.1.1.1", pydicom.uid.JPEG2000Lossless, DOES_NOT_MATCH_SOP_CLASS),
        (mr, MRImageStorage, None, SOP_CLASS_NOT_SUPPORTED),
    ]
    for payload, sop_class, ts, expected in cases:
        status = _send(gateway.port, payload, sop_class, transfer_syntax=ts)
        assert status.Status == expected, f"{expected:#06x} expected, got {status.Status:#06x}"
        assert status.ErrorComment, "a refusal must say why"
    assert gateway.state.counts()["received"] == 0, "nothing refused may be spooled"
    assert _send(gateway.port, good, good.SOPClassUID).Status == 0x0000
    assert gateway.state.counts()["received"] == 1
    assert len(gateway.spool.instance_files()) == 1


@pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()}")
def test_allowlist_rejects_unknown_calling_ae_wrong_called_ae_and_wrong_host(gateway: GatewayService) -> None:
    assert echoscu(gateway.port, calling="STORESCU").returncode == 0
    rejected = echoscu(gateway.port, calling="INTRUDER")
    assert rejected.returncode != 0 and "Calling AE Title Not Recognized" in rejected.stderr + rejected.stdout
    wrong_called = echoscu(gateway.port, calling="STORESCU", called="SOMEONE_ELSE")
    assert wrong_called.returncode != 0 and "Called AE Title Not Recognized" in wrong_called.stderr + wrong_called.stdout
    # FARAWAY is allowed only from 10.9.8.7; this test connects from loopback.
    assert echoscu(gateway.port, calling="FARAWAY").returncode != 0
    ae = AE(ae_title="INTRUDER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title="VECL")
    assert assoc.is_rejected


@pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()}")
def test_storescu_push_is_spooled_durably_and_resend_is_idempotent(gateway: GatewayService, tmp_path: Path) -> None:
    paths = write_study(tmp_path / "study", 3, seed=3)
    storescu(gateway.port, paths)
    j2k = pydicom_data("RG1_J2KR.dcm")
    storescu(gateway.port, [j2k], "-xv")
    counts = gateway.state.counts()
    assert counts["received"] == 2
    spooled = gateway.spool.instance_files()
    assert len(spooled) == 4
    # Each spool file is the instance exactly as sent (same pixel bytes, JPEG 2000 kept encapsulated).
    by_uid = {pydicom.dcmread(p).SOPInstanceUID: p for p in spooled}
    original = pydicom.dcmread(j2k)
    assert pydicom.dcmread(by_uid[original.SOPInstanceUID]).PixelData == original.PixelData
    mtimes = {p: os.stat(p).st_mtime_ns for p in spooled}
    storescu(gateway.port, paths)
    assert gateway.state.counts()["received"] == 2 and len(gateway.spool.instance_files()) == 4
    assert {p: os.stat(p).st_mtime_ns for p in spooled} == mtimes, "identical re-sends are not rewritten"


def test_check_instance_rejects_sop_class_mismatch() -> None:
    ds = dx_instance(generate_uid(), 1)
    with pytest.raises(IntakeError) as e:
        check_instance(ds, "1.2.840.10008.5.1.4.1.1.1", ACCEPTED)
    assert e.value.status == DOES_NOT_MATCH_SOP_CLASS
    assert check_instance(ds, ds.SOPClassUID, ACCEPTED).sop_uid == ds.SOPInstanceUID


def _make_certificates(folder: Path) -> TLSConfig:
    """A throw-away CA and one certificate for 127.0.0.1 it signed (used by every party here)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "2", "-subj", "/CN=vecl-test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=127.0.0.1")
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "node.crt", "-days", "2", "-extfile", "san.ext")
    return TLSConfig(folder / "node.crt", folder / "node.key", folder / "ca.crt")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_admits_only_tls_peers_and_delivers_over_tls(tmp_path: Path) -> None:
    tls = _make_certificates(tmp_path)
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(event.dataset.SOPInstanceUID)
        return 0x0000

    pacs = AE(ae_title="PACS")
    pacs.add_supported_context(DX_PRESENTATION)
    pacs_server = pacs.start_server(("127.0.0.1", 0), block=False, ssl_context=tls.server_context(),
                                    evt_handlers=[(evt.EVT_C_STORE, on_store)])
    config = GatewayConfig(
        destination=Destination("PACS", "127.0.0.1", pacs_server.server_address[1]), peers=(Peer("ORTHANC"),),
        spool_dir=tmp_path / "spool", port=0, monitoring_port=0, quiet_seconds=3600, tls=tls,
    )
    service = GatewayService(config, pipeline=NeverCalled())
    service.start()
    try:
        ds = dx_instance(generate_uid(), 5)
        ae = AE(ae_title="ORTHANC")
        ae.acse_timeout = ae.network_timeout = 10
        ae.add_requested_context(DX_PRESENTATION)
        assoc = ae.associate("127.0.0.1", service.port, ae_title="VECL", tls_args=(tls.client_context(), "127.0.0.1"))
        assert assoc.is_established
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()
        assert not ae.associate("127.0.0.1", service.port, ae_title="VECL").is_established, "plain TCP must fail"
        path = tmp_path / "out.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert send_file(config, path) is None
        assert received == [ds.SOPInstanceUID]
    finally:
        service.stop()
        pacs_server.shutdown()


def test_spooled_file_without_database_row_is_registered_at_start_up(tmp_path: Path) -> None:
    """A crash between the spool rename and the database commit leaves a complete file: keep it."""
    config = GatewayConfig(destination=Destination("PACS", "127.0.0.1", free_port()), peers=(Peer("ORTHANC"),),
                           spool_dir=tmp_path / "spool", port=0, monitoring_port=0, quiet_seconds=3600)
    ds = dx_instance(generate_uid(), 4)
    spool = Spool(config.spool_dir)
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    spool.write(spool.instance_path(ds.StudyInstanceUID, ds.SOPInstanceUID), buffer.getvalue())
    service = GatewayService(config, pipeline=NeverCalled())
    service.start()
    try:
        assert service.state.counts()["received"] == 1
        recorded = service.state.instance_digest(ds.SOPInstanceUID)
        assert _send(service.port, ds, ds.SOPClassUID).Status == 0x0000
        assert service.state.instance_digest(ds.SOPInstanceUID) == recorded, "same digest as a live C-STORE"
        assert len(service.state.studies()) == 1 and service.state.studies()[0].instances == 1
    finally:
        service.stop()


class FailsOnce:
    """An app that raises on its first study and declines the next: both must be recorded, service alive."""

    def __init__(self) -> None:
        self.calls = 0

    def process(self, paths: list) -> SimpleNamespace:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("boom")
        return SimpleNamespace(sr=None, skipped_reason="lateral view only")


def test_app_failure_marks_the_study_and_processing_goes_on(tmp_path: Path) -> None:
    config = GatewayConfig(destination=Destination("PACS", "127.0.0.1", free_port()), peers=(Peer("ORTHANC"),),
                           spool_dir=tmp_path / "spool", port=0, monitoring_port=0, quiet_seconds=0.2, poll_seconds=0.05)
    service = GatewayService(config, pipeline=FailsOnce())
    service.start()
    try:
        for seed in (1, 2):
            ds = dx_instance(generate_uid(), seed)
            assert _send(service.port, ds, ds.SOPClassUID).Status == 0x0000
        wait_until(lambda: service.state.counts()["failed"] + service.state.counts()["skipped"] == 2, 30,
                   what="both studies processed")
        reasons = sorted(s.reason for s in service.state.studies())
        assert reasons == ["app error: RuntimeError", "lateral view only"]
        assert all(t.is_alive() for t in service._threads)
    finally:
        service.stop()


def _rejection_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("rejected association")]


@pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()}")
def test_every_rejected_association_is_logged_with_its_reason_and_counted(
    gateway: GatewayService, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="monai_vecl.deploy.gateway"):
        echoscu(gateway.port, calling="STORESCU", called="SOMEONE_ELSE")
        echoscu(gateway.port, calling="INTRUDER")
    called, calling = _rejection_logs(caplog)
    assert "called AE 'SOMEONE_ELSE' is not ours ('VECL')" in called and "'STORESCU'" in called
    assert "not an allowed peer" in calling and "'INTRUDER'" in calling
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{gateway.monitor.address[1]}/metrics", timeout=10).read()
    assert b'vecl_associations_rejected_total{reason="called_ae"} 1.0' in metrics
    assert b'vecl_associations_rejected_total{reason="calling_ae"} 1.0' in metrics


@pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()}")
def test_association_limit_is_logged_and_a_silent_or_killed_sender_frees_its_slot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = GatewayConfig(destination=Destination("PACS", "127.0.0.1", free_port()), peers=(Peer("STORESCU"),),
                           spool_dir=tmp_path / "spool", port=0, monitoring_port=0, quiet_seconds=3600,
                           max_associations=1, network_timeout=1.5)
    service = GatewayService(config, pipeline=NeverCalled())
    service.start()
    (path,) = write_study(tmp_path / "one", 1, seed=12)
    # storescu pushing the same small file many times: one long association from a real sender process.
    cmd = ["storescu", "-aet", "STORESCU", "-aec", "VECL", "127.0.0.1", str(service.port), *[str(path)] * 20000]

    def busy_sender() -> subprocess.Popen:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: service._server.active_associations, 10, interval=0.02, what="sender associated")
        return proc

    try:
        with caplog.at_level(logging.INFO, logger="monai_vecl.deploy.gateway"):
            hung = busy_sender()
            assert echoscu(service.port, calling="STORESCU").returncode != 0, "the only slot is taken"
            assert "association limit (1) reached" in _rejection_logs(caplog)[0]
            hung.send_signal(signal.SIGSTOP)  # a hung sender: the connection stays open, nothing arrives
            wait_until(lambda: not service._server.active_associations, 10, what="slot freed after network_timeout")
            assert echoscu(service.port, calling="STORESCU").returncode == 0, "the freed slot takes a new association"
            hung.kill()
            hung.wait()
            killed = busy_sender()
            killed.kill()  # a sender killed mid-association: its kernel closes the connection
            killed.wait()
            wait_until(lambda: not service._server.active_associations, 5, what="slot freed after the sender died")
        messages = [r.getMessage() for r in caplog.records]
        assert any("association dropped: peer silent for longer than network_timeout" in m for m in messages)
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == [], "a lost peer is routine, not an ERROR"
    finally:
        service.stop()


class ScriptedPACS:
    """Fault injection (a stand-in, not a PACS): a Storage SCP answering every C-STORE with one status."""

    def __init__(self, status: int) -> None:
        self.status, self.calls = status, 0
        ae = AE(ae_title="PACS")
        ae.add_supported_context(DX_PRESENTATION)
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.port = self.server.server_address[1]

    def _store(self, event: evt.Event) -> int:
        self.calls += 1
        return self.status


@pytest.mark.parametrize(("status", "stored"), [(0x0111, True), (0xB000, True), (0x0107, True), (0xA700, False),
                                                (0xC000, False)])
def test_duplicate_and_warning_answers_count_as_stored_failures_do_not(tmp_path: Path, status: int,
                                                                       stored: bool) -> None:
    pacs = ScriptedPACS(status)
    try:
        config = GatewayConfig(destination=Destination("PACS", "127.0.0.1", pacs.port), peers=(Peer("ORTHANC"),),
                               spool_dir=tmp_path / "spool")
        path = tmp_path / "sr.dcm"
        dx_instance(generate_uid(), 3).save_as(path, enforce_file_format=True)
        error = send_file(config, path)
        assert pacs.calls == 1
        assert (error is None) == stored, error
        if not stored:
            assert error == f"C-STORE status 0x{status:04X}"
    finally:
        pacs.server.shutdown()


def test_metrics_and_health_report_outcomes_and_degrade_on_a_failed_study(tmp_path: Path) -> None:
    config = GatewayConfig(destination=Destination("PACS", "127.0.0.1", free_port()), peers=(Peer("ORTHANC"),),
                           spool_dir=tmp_path / "spool", port=0, monitoring_port=0, quiet_seconds=0.2,
                           poll_seconds=0.05)
    service = GatewayService(config, pipeline=FailsOnce())
    service.start()
    base = f"http://127.0.0.1:{service.monitor.address[1]}"
    assert service.monitor.address[0] == "127.0.0.1", "loopback by default"
    try:
        health = json.loads(urllib.request.urlopen(f"{base}/health", timeout=10).read())
        assert health["status"] == "ok" and health["counts"]["failed"] == 0
        for seed in (1, 2):
            ds = dx_instance(generate_uid(), seed)
            assert _send(service.port, ds, ds.SOPClassUID).Status == 0x0000
        wait_until(lambda: service.state.counts()["failed"] + service.state.counts()["skipped"] == 2, 30,
                   what="both studies processed")
        with pytest.raises(urllib.error.HTTPError) as degraded:
            urllib.request.urlopen(f"{base}/health", timeout=10)
        assert degraded.value.code == 503 and json.loads(degraded.value.read())["status"] == "degraded"
        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
        for line in ("vecl_studies_received_total 2.0", "vecl_instances_received_total 2.0",
                     "vecl_studies_failed_total 1.0", "vecl_studies_skipped_total 1.0",
                     'vecl_studies{state="failed"} 1.0', 'vecl_studies{state="skipped"} 1.0',
                     'vecl_studies_processed_total{outcome="no_report"} 1.0', "vecl_push_to_sr_seconds_count 0.0"):
            assert line in metrics, line
    finally:
        service.stop()


def test_library_warnings_become_one_line_without_their_messages(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = GatewayConfig(destination=Destination("PACS", "127.0.0.1", free_port()), peers=(Peer("ORTHANC"),),
                           spool_dir=tmp_path / "spool", port=0, monitoring_port=0, quiet_seconds=3600)
    ds = dx_instance(generate_uid(), 11)
    ds.PatientName = "SECRET^NAME"
    # A misbehaving sender: Explicit VR negotiated, the data set sent in Implicit VR (pydicom warns).
    stream = DicomBytesIO()
    stream.is_little_endian, stream.is_implicit_VR = True, True
    write_dataset(stream, ds)
    monkeypatch.setattr("pynetdicom.association.encode", lambda *args: stream.getvalue())
    service = GatewayService(config, pipeline=NeverCalled())
    service.start()  # in the test body: pytest's own warning capture is set per test phase
    try:
        with caplog.at_level(logging.WARNING):
            _send(service.port, ds, ds.SOPClassUID)
    finally:
        service.stop()
    (line,) = [r.getMessage() for r in caplog.records if "library warnings while decoding" in r.getMessage()]
    assert line.startswith("instance from ORTHANC: ") and "pydicom" in line
    assert "Expected explicit VR" not in caplog.text and "SECRET" not in caplog.text, "messages are withheld"


def test_peer_loss_records_of_pynetdicom_become_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    """The records pynetdicom's DUL writes when a peer resets the connection in the middle of a PDU read."""
    from monai_vecl.deploy.gateway import _PeerLossFilter

    _PeerLossFilter.install()
    dul = logging.getLogger("pynetdicom.dul")
    with caplog.at_level(logging.INFO):
        dul.error("Connection closed before the entire PDU was received")
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError as exc:
            dul.exception(exc)
        dul.error("Unknown PDU type received '0x99'")  # not a lost peer: stays an ERROR
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["Unknown PDU type received '0x99'"]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "association dropped: peer closed the connection in the middle of a PDU; its slot is free"]
