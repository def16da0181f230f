"""DICOM gateway: a Storage SCP that spools studies, runs the VECL app once a study is quiet,
and sends the resulting SR back to the PACS.

Threads: pynetdicom runs one thread per association (C-STORE handler: check, spool durably,
record, answer); one processing thread runs the app study by study (the model is loaded once);
one delivery thread sends SRs with retries and exponential backoff. All hand-over happens
through the on-disk state machine (:mod:`monai_vecl.deploy.state`), so a kill at any point
loses nothing. Logs name studies only by salted hashes of their UIDs.

Run: ``python -m monai_vecl.deploy.gateway serve --config deploy/gateway.yaml``.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from monai_vecl.deploy.gateway_config import GatewayConfig
from monai_vecl.deploy.intake import (
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    SUCCESS,
    IntakeError,
    check_instance,
    decode,
)
from monai_vecl.deploy.spool import Spool, uid_hash
from monai_vecl.deploy.state import Delivery, Job, StateStore

log = logging.getLogger("monai_vecl.deploy.gateway")

# C-STORE response statuses a PACS uses for "stored" (success and the B0xx warnings).
_STORED = (0x0000, 0xB000, 0xB006, 0xB007)
# A-ASSOCIATE-RJ: rejected permanent, by the service user, calling AE title not recognised.
_REJECT_CALLING_AE = (0x01, 0x01, 0x03)


class Pipeline(Protocol):
    """What the gateway needs of the app: ``StudyPipeline.process`` (a result with ``sr``, ``skipped_reason``)."""

    def process(self, paths: list[Path]) -> Any: ...


def _set_nodelay(event: evt.Event) -> None:
    """Disable Nagle's algorithm: small DIMSE PDUs otherwise wait ~40 ms for delayed ACKs (DESIGN §9)."""
    sock = event.assoc.dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def load_pipeline(config: GatewayConfig) -> Pipeline:
    """The MONAI Deploy app's study pipeline, built once per service (it loads the model)."""
    from monai_vecl.deploy.pipeline import StudyPipeline

    if config.pipeline is None:
        raise ValueError("gateway config names no app settings: set 'pipeline' or add a 'deploy:' section")
    return StudyPipeline(config.pipeline)


class GatewayService:
    """The long-running gateway; ``start()`` returns once it listens, ``stop()`` shuts it down."""

    def __init__(self, config: GatewayConfig, pipeline: Pipeline | None = None) -> None:
        self.config = config
        self.spool = Spool(config.spool_dir, salt=config.uid_salt)
        self.state = StateStore(config.state_db)
        self._pipeline = pipeline
        self._accepted = frozenset(config.accepted_sop_classes)
        self._stop = threading.Event()
        self._delivery_wake = threading.Event()
        self._process_wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server = None

    def _h(self, uid: str) -> str:
        return uid_hash(uid, self.config.uid_salt)

    @property
    def port(self) -> int:
        """The bound DICOM port (useful when the config asks for port 0)."""
        if self._server is None:
            raise RuntimeError("gateway not started")
        return self._server.server_address[1]

    def start(self) -> None:
        # The model loads first: recovery then restarts quiet periods right before we listen again.
        if self._pipeline is None:
            self._pipeline = load_pipeline(self.config)
        recovered = self.state.recover()
        cleared = self.spool.clear_tmp()
        orphans = self._register_orphans()
        log.info("recovery: %d interrupted studies re-queued, %d partial files removed, %d spooled files re-registered",
                 recovered, cleared, orphans)
        handlers = [(evt.EVT_REQUESTED, self._on_requested), (evt.EVT_C_STORE, self._on_store)]
        if self.config.tcp_nodelay:
            handlers.append((evt.EVT_CONN_OPEN, _set_nodelay))
        tls = self.config.tls
        self._server = self._make_ae().start_server(
            (self.config.host, self.config.port), block=False, evt_handlers=handlers,
            ssl_context=tls.server_context() if tls else None,
        )
        workers = ((self._process_step, self._process_wake, "vecl-process"),
                   (self._deliver_step, self._delivery_wake, "vecl-deliver"))
        for step, wake, name in workers:
            t = threading.Thread(target=self._guarded_loop, args=(step, wake), name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("listening as %s on %s:%d", self.config.ae_title, self.config.host, self.port)

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` to return (safe from a signal handler)."""
        self._stop.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._delivery_wake.set()
        self._process_wake.set()
        if self._server is not None:
            self._server.shutdown()
        for t in self._threads:
            t.join(timeout)
        self.state.close()

    def serve_forever(self) -> None:
        """Start and block until :meth:`stop` (e.g. from a signal handler)."""
        self.start()
        self._stop.wait()

    # --- receiving -------------------------------------------------------------------------

    def _make_ae(self) -> AE:
        ae = AE(ae_title=self.config.ae_title)
        ae.require_called_aet = True
        ae.maximum_associations = self.config.max_associations
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = self.config.network_timeout
        # Every storage class is negotiable so that an unsupported one gets a clear 0x0122 status
        # per instance instead of an opaque presentation-context rejection.
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        return ae

    def _on_requested(self, event: evt.Event) -> None:
        requestor = event.assoc.requestor
        calling = requestor.primitive.calling_ae_title.strip()
        if not any(p.allows(calling, requestor.address) for p in self.config.peers):
            log.warning("rejected association: calling AE %r from %s is not an allowed peer", calling, requestor.address)
            event.assoc.acse.send_reject(*_REJECT_CALLING_AE)
            event.assoc.kill()

    def _on_store(self, event: evt.Event) -> Dataset | int:
        try:
            return self._store(event)
        except IntakeError as e:
            log.warning("refused instance from %s: status 0x%04X, %s",
                        event.assoc.requestor.ae_title, e.status, e.comment)
            return _status(e.status, e.comment)
        except OSError as e:
            log.error("spool write failed (%s): answering out of resources", type(e).__name__)
            return _status(OUT_OF_RESOURCES, "gateway spool unavailable")
        except Exception as e:  # noqa: BLE001 - one bad instance must never take the service down
            log.error("instance handling failed with %s", type(e).__name__)
            return _status(PROCESSING_FAILURE, f"gateway error: {type(e).__name__}")

    def _store(self, event: evt.Event) -> int:
        encoded = event.encoded_dataset()
        ds = decode(encoded)
        sop_uid = str(ds.get("SOPInstanceUID", ""))
        if sop_uid and self.state.is_own_sr(sop_uid):
            # A PACS routing the whole study back includes our SR: acknowledge, never process it.
            log.info("ignored own SR %s routed back", self._h(sop_uid))
            return SUCCESS
        accepted = check_instance(ds, event.request.AffectedSOPClassUID, self._accepted)
        # The digest leaves the file meta out: it names the sending AE, which is not content.
        digest = hashlib.sha256(event.encoded_dataset(include_meta=False)).hexdigest()
        path = self.spool.instance_path(accepted.study_uid, accepted.sop_uid)
        if self.state.instance_digest(accepted.sop_uid) != (accepted.study_uid, digest):
            self.spool.write(path, encoded)
        new = self.state.record_instance(accepted.study_uid, accepted.sop_uid, digest, path)
        log.info("study %s: %s instance %s", self._h(accepted.study_uid), "stored" if new else "already had",
                 self._h(accepted.sop_uid))
        return SUCCESS

    def _register_orphans(self) -> int:
        """Spooled files whose database row a crash prevented: register them (their bytes are complete)."""
        known = self.state.known_paths()
        count = 0
        for path in self.spool.instance_files():
            if str(path) in known:
                continue
            encoded = path.read_bytes()
            try:
                ds = decode(encoded)
            except IntakeError:
                log.error("unreadable spool file %s left in place", path.name)
                continue
            self.state.record_instance(str(ds.StudyInstanceUID), str(ds.SOPInstanceUID),
                                       hashlib.sha256(_dataset_bytes(encoded)).hexdigest(), path)
            count += 1
        return count

    # --- processing ------------------------------------------------------------------------

    def _guarded_loop(self, step: Callable[[], bool], wake: threading.Event) -> None:
        """Run ``step`` until stopped; when it finds no work (or fails) wait for ``wake`` or the poll interval.

        A failing step (e.g. the disk or database briefly unavailable) is logged and retried:
        the worker threads must outlive any single error, like the SCP does.
        """
        while not self._stop.is_set():
            try:
                busy = step()
            except Exception as e:  # noqa: BLE001 - keep the service alive; the state on disk is intact
                log.error("%s step failed with %s; retrying", threading.current_thread().name, type(e).__name__)
                busy = False
            if not busy:
                wake.wait(self.config.poll_seconds)
                wake.clear()

    def _process_step(self) -> bool:
        self.state.promote_quiet(self.config.quiet_seconds)
        job = self.state.claim_next()
        if job is None:
            return False
        self._process(job)
        return True

    def _process(self, job: Job) -> None:
        study = self._h(job.study_uid)
        started = time.perf_counter()
        try:
            result = self._pipeline.process(job.paths)
            if result.sr is None:
                log.info("study %s: no SR (%s)", study, result.skipped_reason)
                self.state.finish(job.study_uid, "skipped", result.skipped_reason or "app produced no SR")
                return
            sr_uid, path = self._write_sr(job, result.sr)
        except Exception as e:  # noqa: BLE001 - any app failure marks the study, the service goes on
            # Only the exception type: messages can quote header values (patient data).
            log.error("study %s: processing failed with %s", study, type(e).__name__)
            self.state.finish(job.study_uid, "failed", f"app error: {type(e).__name__}")
            return
        self.state.sr_written(job, sr_uid, path)
        log.info("study %s: SR %s written in %.2f s", study, self._h(sr_uid), time.perf_counter() - started)
        self._delivery_wake.set()

    def _write_sr(self, job: Job, sr: Dataset) -> tuple[str, Path]:
        """Give the SR its content-versioned UID and put it durably in the outbox."""
        sr_uid = versioned_sr_uid(str(sr.SOPInstanceUID), job.digest)
        sr.SOPInstanceUID = sr_uid
        if getattr(sr, "file_meta", None) is not None:
            sr.file_meta.MediaStorageSOPInstanceUID = sr_uid
        buffer = BytesIO()
        sr.save_as(buffer, enforce_file_format=True)
        return sr_uid, self.spool.write(self.spool.sr_path(job.study_uid, sr_uid), buffer.getvalue())

    # --- delivery --------------------------------------------------------------------------

    def _deliver_step(self) -> bool:
        due = self.state.due_deliveries()
        for delivery in due:
            if self._stop.is_set():
                break
            self._deliver(delivery)
        return bool(due)

    def _deliver(self, delivery: Delivery) -> None:
        study = self._h(delivery.study_uid)
        try:
            error = send_file(self.config, delivery.sr_path)
        except Exception as e:  # noqa: BLE001 - e.g. TLS or file errors: count as a failed attempt
            error = f"{type(e).__name__} while sending"
        if error is None:
            self.state.delivered(delivery)
            log.info("study %s: SR %s delivered to %s", study, self._h(delivery.sr_uid),
                     self.config.destination.ae_title)
            return
        attempt = delivery.attempts + 1
        if attempt >= self.config.max_attempts:
            log.error("study %s: delivery failed %d times (%s); SR kept in the outbox", study, attempt, error)
            self.state.delivery_failed(delivery, error, retry_at=None)
            return
        delay = min(self.config.backoff_seconds * 2 ** (attempt - 1), self.config.backoff_max_seconds)
        log.warning("study %s: delivery attempt %d failed (%s); retry in %.1f s", study, attempt, error, delay)
        self.state.delivery_failed(delivery, error, retry_at=time.time() + delay)


def versioned_sr_uid(app_sr_uid: str, content_digest: str) -> str:
    """SR SOP Instance UID for one version of a study's content.

    The app's UID is deterministic in source image, model and settings; mixing in the study
    content digest keeps a re-run of the same content on the same UID (a PACS stores it once)
    while changed content gets a new SR instead of silently reusing the old UID.
    """
    return generate_uid(entropy_srcs=[app_sr_uid, content_digest])


def _status(code: int, comment: str) -> Dataset:
    rsp = Dataset()
    rsp.Status = code
    rsp.ErrorComment = comment
    return rsp


def _dataset_bytes(encoded: bytes) -> bytes:
    """The data set part of a DICOM file (what ``encoded_dataset(include_meta=False)`` returns)."""
    meta_group_length = int.from_bytes(encoded[140:144], "little")  # (0002,0000) UL value after preamble
    return encoded[144 + meta_group_length:]


def send_file(config: GatewayConfig, path: Path) -> str | None:
    """C-STORE one DICOM file to the configured destination; returns None on success, else why not."""
    ds = dcmread(path, stop_before_pixels=True)
    ae = AE(ae_title=config.ae_title)
    ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = config.network_timeout
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    handlers = [(evt.EVT_CONN_OPEN, _set_nodelay)] if config.tcp_nodelay else []
    dest = config.destination
    tls_args = (config.tls.client_context(), dest.host) if config.tls else None
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, evt_handlers=handlers, tls_args=tls_args)
    if not assoc.is_established:
        return "association rejected" if assoc.is_rejected else "destination unreachable"
    try:
        status = assoc.send_c_store(path)
    finally:
        assoc.release()
    if not status or "Status" not in status:
        return "no C-STORE response"
    if status.Status not in _STORED:
        return f"C-STORE status 0x{status.Status:04X}"
    return None


if __name__ == "__main__":
    from monai_vecl.deploy.gateway_cli import main

    raise SystemExit(main())
