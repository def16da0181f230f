"""The gateway as a real service process: SIGKILL mid-study and again mid-processing, restart,
nothing lost, exactly one SR per study in Orthanc; a partial study waits the recovery grace period
for the rest; ``status`` reports it without identifiers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from deployapp_dicom import evidence_uids
from gateway_pacs import (
    GatewayProcess,
    Orthanc,
    free_port,
    gateway_yaml,
    missing_tools,
    storescu,
    wait_until,
    write_study,
)

pytestmark = [pytest.mark.pacs, pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()}")]


def _status(config: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "monai_vecl.deploy.gateway", "status", "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    return json.loads(out.stdout) | {"raw": out.stdout}


def test_killed_mid_study_and_restarted_every_study_gets_exactly_one_sr(tmp_path: Path) -> None:
    port = free_port()
    with Orthanc(tmp_path / "orthanc", {}) as orthanc:
        config = gateway_yaml(tmp_path / "gateway.yaml", port=port, dest_port=orthanc.dicom_port,
                              spool=tmp_path / "spool", quiet=4.0, recovery_grace_seconds=4.0)
        partial = write_study(tmp_path / "partial", 4, seed=31)
        complete = write_study(tmp_path / "complete", 3, seed=32)
        uids = [pydicom.dcmread(s[0]).StudyInstanceUID for s in (partial, complete)]
        gateway = GatewayProcess(config, port, tmp_path / "gateway.log")
        try:
            gateway.start()
            storescu(port, partial[:2])
            storescu(port, complete)
            gateway.kill()  # SIGKILL: no shutdown code runs
            gateway.start()
            storescu(port, partial[2:])
            wait_until(lambda: all(orthanc.srs_of(u) for u in uids), 120, interval=0.3, what="SRs after restart")
            wait_until(lambda: _status(config)["counts"]["delivered"] == 2, 30, interval=0.5, what="delivered state")
            # Second kill while a burst is being processed and delivered: studies are then spread
            # over queued, running, sr_written and delivered.
            burst = [write_study(tmp_path / f"burst{i}", 1, seed=40 + i) for i in range(6)]
            burst_uids = [pydicom.dcmread(s[0]).StudyInstanceUID for s in burst]
            storescu(port, [f for s in burst for f in s])
            wait_until(lambda: any(orthanc.srs_of(u) for u in burst_uids), 60, interval=0.05, what="first burst SR")
            gateway.kill()
            gateway.start()
            uids += burst_uids
            wait_until(lambda: all(orthanc.srs_of(u) for u in uids), 120, interval=0.3, what="all SRs")
            wait_until(lambda: _status(config)["counts"]["delivered"] == 8, 30, interval=0.5, what="delivered state")
        finally:
            gateway.terminate()
        assert [len(orthanc.srs_of(u)) for u in uids] == [1] * 8, "exactly one SR per study"
        status = _status(config)
        assert sorted(s["instances"] for s in status["studies"]) == [1] * 6 + [3, 4], "every instance survived"
        assert {s["state"] for s in status["studies"]} == {"delivered"}
        assert not any(u in status["raw"] for u in uids), "status must not print study UIDs"
        log = (tmp_path / "gateway.log").read_text()
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in [*partial, *complete, *(s[0] for s in burst)]]
        identifiers = {str(v) for ds in headers for v in (ds.StudyInstanceUID, ds.SOPInstanceUID, ds.PatientID)}
        assert "listening as VECL" in log and "SR" in log
        assert [i for i in identifiers if i in log] == [], "logs must not carry identifiers"


def test_killed_after_3_of_8_instances_and_resent_20_s_after_restart_gives_one_sr_of_all_8(tmp_path: Path) -> None:
    port = free_port()
    with Orthanc(tmp_path / "orthanc", {}) as orthanc:
        config = gateway_yaml(tmp_path / "gateway.yaml", port=port, dest_port=orthanc.dicom_port,
                              spool=tmp_path / "spool", quiet=1.0, recovery_grace_seconds=30.0)
        files = write_study(tmp_path / "study", 8, seed=51)
        study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
        gateway = GatewayProcess(config, port, tmp_path / "gateway.log")
        try:
            gateway.start()
            storescu(port, files[:3])
            gateway.kill()
            gateway.start()
            restarted = time.monotonic()
            time.sleep(20.0)  # the sender resends the rest 20 s after the restart, long after quiet_seconds
            assert orthanc.srs_of(study_uid) == [], "the partial study must wait the recovery grace period"
            storescu(port, files[3:])
            wait_until(lambda: orthanc.srs_of(study_uid), 60, interval=0.3, what="the SR")
            assert time.monotonic() - restarted >= 30.0
            time.sleep(3.0)  # several quiet periods: a second SR would come now
        finally:
            gateway.terminate()
        (sr_id,) = orthanc.srs_of(study_uid)
        sr = pydicom.dcmread(orthanc.instance_file(sr_id, tmp_path / "sr.dcm"))
        assert evidence_uids(sr) == {pydicom.dcmread(f).SOPInstanceUID for f in files}, "made from all 8 instances"
        assert "PredecessorDocumentsSequence" not in sr
