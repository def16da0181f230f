"""Test support for the gateway tests: DICOM study builders, a real Orthanc process, a gateway
subprocess, and polling helpers. Processes are always stopped by their context managers."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import numpy as np
import pydicom
import yaml
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from monai_vecl.data.uids import deterministic_uid

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "gateway"
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
PACS_TOOLS = ("Orthanc", "storescu", "echoscu", "dciodvfy", "dsrdump")


def missing_tools() -> list[str]:
    return [t for t in PACS_TOOLS if shutil.which(t) is None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def pydicom_data(name: str) -> Path:
    """A file shipped by the ``pydicom-data`` package (e.g. ``RG1_UNCR.dcm``)."""
    import data_store

    path = Path(data_store.__file__).parent / "data" / name
    if not path.exists():
        raise FileNotFoundError(path)
    return path


def dx_instance(study_uid: str, seed: int, *, size: int = 128, view: str = "PA", patient: str = "PHANTOM^A") -> Dataset:
    """A small 12-bit DX For Presentation chest instance with a smooth random image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 1500 + 1500 * np.exp(-((xx - 0.3) ** 2 + (yy - 0.5) ** 2) * 8) + 1500 * np.exp(-((xx - 0.7) ** 2 + (yy - 0.5) ** 2) * 8)
    img = np.clip(img + rng.normal(0, 60, img.shape), 0, 4095).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_PRESENTATION
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DX_PRESENTATION
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = deterministic_uid(study_uid, view)
    # One patient per study: Orthanc files instances under (PatientID, StudyInstanceUID).
    patient_id = "P" + hashlib.sha256(study_uid.encode()).hexdigest()[:8]
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient, patient_id, "19700101", "O"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260101", "120000", f"ACC{seed}", "1"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "DX", 1, seed % 100 + 1
    ds.BodyPartExamined, ds.ViewPosition, ds.PatientOrientation = "CHEST", view, ["A", "F"]
    ds.Manufacturer = "monai-vecl tests"
    ds.PresentationIntentType, ds.ImageType = "FOR PRESENTATION", ["ORIGINAL", "PRIMARY"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = img.tobytes()
    return ds


def write_study(out_dir: Path, n_instances: int, seed: int, study_uid: str | None = None, **kw: Any) -> list[Path]:
    """Write ``n_instances`` DX instances of one study to ``out_dir``; returns the file paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or deterministic_uid("study", seed)
    paths = []
    for i in range(n_instances):
        ds = dx_instance(study_uid, seed * 100 + i, **kw)
        path = out_dir / f"s{seed}_{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def compressed_study(out_dir: Path, seed: int, transfer_syntax: str) -> Path:
    """A one-instance DX study re-encoded in ``transfer_syntax`` (e.g. RLE or JPEG-LS lossless)."""
    (path,) = write_study(out_dir, 1, seed=seed)
    ds = pydicom.dcmread(path)
    ds.compress(transfer_syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


def copy_as_new_study(src: Path, dst: Path, seed: int) -> Path:
    """Re-identify a shipped DICOM file as its own study (pixel data untouched, even if compressed)."""
    ds = pydicom.dcmread(src)
    ds.StudyInstanceUID = deterministic_uid("copy-study", seed)
    ds.SeriesInstanceUID = deterministic_uid("copy-series", seed)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = deterministic_uid("copy-sop", seed)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def storescu(port: int, paths: list[Path], *options: str, calling: str = "STORESCU", called: str = "VECL",
             check: bool = True) -> subprocess.CompletedProcess:
    """Push files with DCMTK's storescu (one association); ``options`` e.g. ``-xv`` to propose JPEG 2000."""
    cmd = ["storescu", *options, "-aet", calling, "-aec", called, "127.0.0.1", str(port), *map(str, paths)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=check)


def echoscu(port: int, *, calling: str, called: str = "VECL") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["echoscu", "-aet", calling, "-aec", called, "127.0.0.1", str(port)],
        capture_output=True, text=True, timeout=30, check=False,
    )


class Orthanc:
    """A real Orthanc server on loopback with random ports and a temporary storage folder."""

    def __init__(self, workdir: Path, modalities: dict[str, tuple[str, int]], *, lua: Path | None = None,
                 stable_age: int = 60, http_port: int | None = None, dicom_port: int | None = None) -> None:
        self.workdir = workdir
        self.http_port = http_port or free_port()
        self.dicom_port = dicom_port or free_port()
        self.aet = "ORTHANC"
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "vecl-test", "StorageDirectory": str(workdir / "db"), "IndexDirectory": str(workdir / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": self.aet,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "Plugins": [],
            "DicomModalities": {name: [aet, "127.0.0.1", port] for name, (aet, port) in modalities.items()},
            "StableAge": stable_age, "ConcurrentJobs": 2, "DicomScpTimeout": 30,
            "LuaScripts": [str(lua)] if lua else [], "UserMetadata": {"VeclRoutedInstances": 1024},
            "HttpServerEnabled": True, "DicomServerEnabled": True, "OrthancExplorerEnabled": False,
        }
        self.config_path = workdir / "orthanc.json"
        self.config_path.write_text(json.dumps(config, indent=1))
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        self.log = open(self.workdir / "orthanc.log", "wb")
        self.proc = subprocess.Popen(["Orthanc", str(self.config_path)], stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self._up, 30, what="Orthanc REST API")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited: {(self.workdir / 'orthanc.log').read_text()[-2000:]}")
        try:
            self.get("/system")
            return True
        except (urllib.error.URLError, ConnectionError):
            return False

    def request(self, method: str, path: str, body: bytes | None = None, ctype: str = "application/json") -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", ctype)
        with urllib.request.urlopen(req, timeout=60) as rsp:
            data = rsp.read()
        return json.loads(data) if rsp.headers.get_content_type() == "application/json" else data

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post_json(self, path: str, payload: Any) -> Any:
        return self.request("POST", path, json.dumps(payload).encode())

    def upload(self, path: Path) -> dict:
        return self.request("POST", "/instances", path.read_bytes(), "application/dicom")

    def study_id(self, study_uid: str) -> str | None:
        found = self.request("POST", "/tools/lookup", study_uid.encode(), "text/plain")
        return next((r["ID"] for r in found if r["Type"] == "Study"), None)

    def srs_of(self, study_uid: str) -> list[str]:
        """Orthanc IDs of the SRs in the study with this StudyInstanceUID (none if the study is unknown)."""
        study_id = self.study_id(study_uid)
        return [] if study_id is None else self.sr_instances(study_id)

    def instance_file(self, instance_id: str, dest: Path) -> Path:
        dest.write_bytes(self.request("GET", f"/instances/{instance_id}/file"))
        return dest

    def push(self, modality: str, study_id: str) -> dict:
        return self.post_json(f"/modalities/{modality}/store", {"Resources": [study_id], "Synchronous": True})

    def sr_instances(self, study_id: str) -> list[str]:
        """Orthanc IDs of the SR instances in a study."""
        ids = []
        for series in self.get(f"/studies/{study_id}/series"):
            if series["MainDicomTags"].get("Modality") == "SR":
                ids.extend(series["Instances"])
        return ids

    def all_srs(self) -> list[str]:
        return [i for s in self.get("/studies") for i in self.sr_instances(s)]


def gateway_yaml(path: Path, *, port: int, dest_port: int, spool: Path, quiet: float = 0.5,
                 peers: list[dict] | None = None, **extra: Any) -> Path:
    """Write one YAML with a ``gateway:`` section pointing at Orthanc and the tiny ``deploy:`` section."""
    section = {
        "ae_title": "VECL", "host": "127.0.0.1", "port": port, "quiet_seconds": quiet, "poll_seconds": 0.1,
        "spool_dir": str(spool), "destination": {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": dest_port},
        "peers": peers or [{"ae_title": "ORTHANC", "hosts": ["127.0.0.1"]}, {"ae_title": "STORESCU"}],
        "backoff_seconds": 0.2, "backoff_max_seconds": 1.0, "monitoring_port": 0,
        **extra,
    }
    path.write_text(yaml.safe_dump({"gateway": section, **tiny_pipeline_config()}))
    return path


def tiny_pipeline_config() -> dict:
    """The deploy app's config with an untrained tiny model (no trained bundle needed in tests)."""
    return yaml.safe_load((FIXTURES / "pipeline_tiny.yaml").read_text())


class GatewayProcess:
    """``python -m monai_vecl.deploy.gateway serve`` as a subprocess (for kill -9 tests)."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log_path = config, port, log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 300) -> GatewayProcess:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process; closed in kill/terminate
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monai_vecl.deploy.gateway", "serve", "--config", str(self.config)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
        )
        wait_until(self._ready, timeout, interval=0.3, what="gateway subprocess")
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"gateway exited {self.proc.returncode}: {self.log_path.read_text()[-3000:]}")
        return echoscu(self.port, calling="STORESCU").returncode == 0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._log.close()

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ValueError):
            self._log.close()


@contextlib.contextmanager
def gateway_process(config: Path, port: int, log: Path) -> Iterator[GatewayProcess]:
    gp = GatewayProcess(config, port, log)
    try:
        yield gp
    finally:
        gp.terminate()
