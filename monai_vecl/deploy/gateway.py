"""DICOM gateway: a Storage SCP that spools studies, runs the VECL app once a study is quiet,
and sends the resulting SR back to the PACS.

Threads: pynetdicom runs one thread per association (C-STORE handler: check, spool durably,
record, answer); ``processing_workers`` threads run the app, one study each (the model is loaded once);
one delivery thread sends SRs with retries and capped exponential backoff (forever by default);
one HTTP thread serves metrics and health (:mod:`monai_vecl.deploy.gateway_monitor`). All
hand-over happens through the on-disk state machine (:mod:`monai_vecl.deploy.state`), so a kill
at any point loses nothing. A study re-evaluated after late instances sends a new SR only when
the report changed, and that SR names the previous one as its predecessor. Logs name studies
only by salted hashes of their UIDs; library warnings are logged without their messages.

Run: ``python -m monai_vecl.deploy.gateway serve --config deploy/gateway.yaml``.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification
from pynetdicom.status import code_to_category

from monai_vecl.deploy.gateway_config import GatewayConfig
from monai_vecl.deploy.gateway_monitor import GatewayMetrics, MonitorServer
from monai_vecl.deploy.intake import (
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    SUCCESS,
    IntakeError,
    check_instance,
    decode,
)
from monai_vecl.deploy.spool import Spool, spool_salt, uid_hash
from monai_vecl.deploy.seg import seg_uid
from monai_vecl.deploy.sr import add_predecessor, versioned_uid
from monai_vecl.deploy.state import Delivery, Job, SentReport, StateStore

log = logging.getLogger("monai_vecl.deploy.gateway")

# PS3.7 C.5.8 "Duplicate SOP Instance" (0111H): the PACS already holds this SR, which is what a
# re-sent SR (same UID after a crash) should find. Every Success or Warning status (PS3.4 B.2.3:
# 0000H, B000H, B006H, B007H; PS3.7 C.4 general warnings 0107H, 0116H) also means stored.
DUPLICATE_SOP_INSTANCE = 0x0111
# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4: rejected permanent by the service user
# (calling / called AE title not recognised); rejected transient by the service provider
# (presentation layer: local limit exceeded).
_REJECT_CALLING_AE = (0x01, 0x01, 0x03)
_REJECT_CALLED_AE = (0x01, 0x01, 0x07)
_REJECT_LIMIT = (0x02, 0x03, 0x02)


class _WarningCapture(logging.Filter):
    """Library warnings (pydicom on odd input) as structured log lines without their messages.

    Messages can quote header values (patient data), so only category and origin are kept. pydicom
    both warns and logs each problem: the ``warnings`` hook and a filter on the ``pydicom`` logger
    catch both. While a thread collects (one incoming instance), its warnings become a single line.
    """

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def install(self) -> None:
        warnings.showwarning = self._show
        pydicom_log = logging.getLogger("pydicom")
        if self not in pydicom_log.filters:
            pydicom_log.addFilter(self)

    def _note(self, origin: str) -> None:
        bucket = getattr(self._local, "bucket", None)
        if bucket is not None:
            bucket[origin] += 1
        else:
            log.warning("library warning: %s (message withheld: it may quote header values)", origin)

    def _show(self, message: Warning | str, category: type[Warning], filename: str, lineno: int,
              file: Any = None, line: str | None = None) -> None:
        self._note(f"{category.__name__} from {Path(filename).parent.name}.{Path(filename).stem}")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        self._note(f"{record.levelname} logged by {record.name}.{record.module}")
        return False

    @contextlib.contextmanager
    def collect(self) -> Iterator[collections.Counter]:
        self._local.bucket = collections.Counter()
        try:
            yield self._local.bucket
        finally:
            self._local.bucket = None


_WARNINGS = _WarningCapture()


class _PeerLossFilter(logging.Filter):
    """pynetdicom logs a peer that vanished or went silent as an ERROR; for a gateway that is routine.

    Such records become one WARNING of ours (the slot is already free when they are logged).
    """

    KNOWN = {
        "Network timeout reached": "peer silent for longer than network_timeout",
        "The received PDU is shorter than expected": "peer closed the connection in the middle of a PDU",
        "Connection closed before the entire PDU was received": "peer closed the connection in the middle of a PDU",
    }

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], (ConnectionError, TimeoutError)):
            return False  # the traceback pynetdicom logs right after one of the messages below: already said
        message = record.getMessage()
        for prefix, meaning in self.KNOWN.items():
            if message.startswith(prefix):
                log.warning("association dropped: %s; its slot is free", meaning)
                return False
        return True

    @classmethod
    def install(cls) -> None:
        for name in ("pynetdicom.association", "pynetdicom.dul"):
            logger = logging.getLogger(name)
            if not any(isinstance(f, cls) for f in logger.filters):
                logger.addFilter(cls())


class Pipeline(Protocol):
    """What the gateway needs of the app: ``StudyPipeline.process`` (a result with ``sr``, ``skipped_reason``)."""

    def process(self, paths: list[Path]) -> Any: ...


def _set_nodelay(event: evt.Event) -> None:
    """Disable Nagle's algorithm: small DIMSE PDUs otherwise wait ~40 ms for delayed ACKs (docs/deploy.md)."""
    sock = event.assoc.dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _set_keepalive(sock: socket.socket, idle_seconds: int) -> None:
    """TCP keepalive: a peer that vanished without closing (power, network) is detected and its slot freed."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle_seconds)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, idle_seconds // 4))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


def load_pipeline(config: GatewayConfig) -> Pipeline:
    """The MONAI Deploy app's study pipeline, built once per service (it loads the model)."""
    from monai_vecl.deploy.pipeline import StudyPipeline

    if config.pipeline is None:
        raise ValueError("gateway config names no app settings: set 'pipeline' or add a 'deploy:' section")
    return StudyPipeline(config.pipeline)


def _share_cores(workers: int) -> None:
    """Give each processing thread its share of the cores for torch's intra-op threads.

    torch's default is one intra-op thread per core for every calling thread, so ``workers`` threads
    scoring at once oversubscribe the cores (2 workers on 2 cores: median push-to-SR latency 2.9–4.1 s
    with the default, 2.6 s with one thread each; docs/deploy.md, ``bench/bench_gateway.py --mode load``).
    """
    import torch  # loaded with the pipeline already

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // workers))


class GatewayService:
    """The long-running gateway; ``start()`` returns once it listens, ``stop()`` shuts it down."""

    def __init__(self, config: GatewayConfig, pipeline: Pipeline | None = None) -> None:
        self.config = config
        self.salt = spool_salt(config.spool_dir, config.uid_salt)
        self.spool = Spool(config.spool_dir, salt=self.salt)
        self.state = StateStore(config.state_db)
        self.metrics = GatewayMetrics(self.state.counts)
        self.monitor: MonitorServer | None = None
        self._pipeline = pipeline
        self._accepted = frozenset(config.accepted_sop_classes)
        self._stop = threading.Event()
        self._delivery_wake = threading.Event()
        self._process_wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server = None

    def _h(self, uid: str) -> str:
        return uid_hash(uid, self.salt)

    @property
    def port(self) -> int:
        """The bound DICOM port (useful when the config asks for port 0)."""
        if self._server is None:
            raise RuntimeError("gateway not started")
        return self._server.server_address[1]

    def start(self) -> None:
        # The model loads first: the recovery grace period then starts right before we listen again.
        if self._pipeline is None:
            self._pipeline = load_pipeline(self.config)
        _share_cores(self.config.processing_workers)
        requeued, held = self.state.recover(self.config.recovery_grace_seconds)
        cleared = self.spool.clear_tmp()
        orphans = self._register_orphans()
        log.info("recovery: %d interrupted studies re-queued, %d partial studies held %.0f s for late instances, "
                 "%d partial files removed, %d spooled files re-registered",
                 requeued, held, self.config.recovery_grace_seconds, cleared, orphans)
        _WARNINGS.install()
        _PeerLossFilter.install()
        handlers = [
            (evt.EVT_CONN_OPEN, self._on_conn_open),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_C_STORE, self._on_store),
        ]
        tls = self.config.tls
        self._server = self._make_ae().start_server(
            (self.config.host, self.config.port), block=False, evt_handlers=handlers,
            ssl_context=tls.server_context() if tls else None,
        )
        # Several processing threads overlap one study's Python-bound work (decoding, SR building)
        # with another's network scoring; studies are claimed atomically, so each runs once.
        workers = [(self._process_step, self._process_wake, f"vecl-process-{i}")
                   for i in range(self.config.processing_workers)]
        workers.append((self._deliver_step, self._delivery_wake, "vecl-deliver"))
        for step, wake, name in workers:
            t = threading.Thread(target=self._guarded_loop, args=(step, wake), name=name, daemon=True)
            t.start()
            self._threads.append(t)
        if self.config.monitoring_port is not None:
            self.monitor = MonitorServer(self.config.monitoring_host, self.config.monitoring_port, self.metrics,
                                         self.health)
            self.monitor.start()
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
        if self.monitor is not None:
            self.monitor.stop()
        for t in self._threads:
            t.join(timeout)
        self.state.close()

    def health(self) -> dict[str, Any]:
        """What ``/health`` reports: degraded when a study failed or is stuck, or a worker thread died."""
        counts = self.state.counts()
        stuck = [self._h(u) for u in self.state.stuck(self.config.stuck_after_seconds)]
        dead = [t.name for t in self._threads if not t.is_alive()]
        ok = not (counts["failed"] or stuck or dead)
        return {"status": "ok" if ok else "degraded", "counts": counts, "stuck": stuck, "dead_threads": dead}

    def serve_forever(self) -> None:
        """Start and block until :meth:`stop` (e.g. from a signal handler)."""
        self.start()
        self._stop.wait()

    # --- receiving -------------------------------------------------------------------------

    def _make_ae(self) -> AE:
        ae = AE(ae_title=self.config.ae_title)
        # The called AE title and the association limit are checked in _on_requested, which logs why.
        ae.require_called_aet = False
        ae.maximum_associations = self.config.max_associations
        ae.network_timeout = ae.dimse_timeout = self.config.network_timeout
        ae.acse_timeout = self.config.acse_timeout  # ARTIM: a peer that connects and goes silent
        # Every storage class is negotiable so that an unsupported one gets a clear 0x0122 status
        # per instance instead of an opaque presentation-context rejection.
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        return ae

    def _on_conn_open(self, event: evt.Event) -> None:
        if self.config.tcp_nodelay:
            _set_nodelay(event)
        sock = event.assoc.dul.socket.socket
        if sock is not None:
            _set_keepalive(sock, self.config.keepalive_seconds)

    def _on_requested(self, event: evt.Event) -> None:
        """Accept or reject the association, logging every rejection with its reason."""
        requestor = event.assoc.requestor
        calling = requestor.primitive.calling_ae_title.strip()
        called = requestor.primitive.called_ae_title.strip()
        active = sum(1 for a in event.assoc.ae.active_associations if a.is_acceptor)
        if called != self.config.ae_title:
            kind, reason, rsd = "called_ae", f"called AE {called!r} is not ours ({self.config.ae_title!r})", \
                _REJECT_CALLED_AE
        elif not any(p.allows(calling, requestor.address) for p in self.config.peers):
            kind, reason, rsd = "calling_ae", "calling AE/host is not an allowed peer", _REJECT_CALLING_AE
        elif active > self.config.max_associations:
            kind, reason, rsd = "limit", f"association limit ({self.config.max_associations}) reached", _REJECT_LIMIT
        else:
            if calling == self.config.destination.ae_title and self.state.deliver_now():
                # The PACS is evidently up again: waiting SRs go now, not at their backoff time.
                self._delivery_wake.set()
            return
        log.warning("rejected association from %s, calling AE %r: %s", requestor.address, calling, reason)
        self.metrics.rejected.labels(kind).inc()
        event.assoc.acse.send_reject(*rsd)
        event.assoc.kill()

    def _on_rejected(self, event: evt.Event) -> None:
        """A rejection pynetdicom made itself during negotiation (ours are logged in _on_requested)."""
        requestor = event.assoc.requestor
        log.warning("rejected association from %s, calling AE %r: refused in negotiation",
                    requestor.address, requestor.ae_title)
        self.metrics.rejected.labels("negotiation").inc()

    def _on_aborted(self, event: evt.Event) -> None:
        log.info("association from %s aborted (peer sent A-ABORT or vanished); its slot is free",
                 event.assoc.requestor.address)

    def _on_store(self, event: evt.Event) -> Dataset | int:
        try:
            with _WARNINGS.collect() as caught:
                answer = self._store(event)
        except IntakeError as e:
            log.warning("refused instance from %s: status 0x%04X, %s",
                        event.assoc.requestor.ae_title, e.status, e.comment)
            self.metrics.refused.labels(f"0x{e.status:04X}").inc()
            answer = _status(e.status, e.comment)
        except OSError as e:
            log.error("spool write failed (%s): answering out of resources", type(e).__name__)
            self.metrics.refused.labels(f"0x{OUT_OF_RESOURCES:04X}").inc()
            return _status(OUT_OF_RESOURCES, "gateway spool unavailable")
        except Exception as e:  # noqa: BLE001 - one bad instance must never take the service down
            log.error("instance handling failed with %s", type(e).__name__)
            return _status(PROCESSING_FAILURE, f"gateway error: {type(e).__name__}")
        if caught:
            log.warning("instance from %s: %d library warnings while decoding (%s)", event.assoc.requestor.ae_title,
                        sum(caught.values()), ", ".join(f"{k} x{n}" for k, n in sorted(caught.items())))
        return answer

    def _store(self, event: evt.Event) -> int:
        encoded = event.encoded_dataset()
        ds = decode(encoded)
        sop_uid = str(ds.get("SOPInstanceUID", ""))
        if sop_uid and (self.state.is_own_sr(sop_uid) or self._is_own_seg(ds, sop_uid)):
            # A PACS routing the whole study back includes our SR (and SEG): acknowledge, never process it.
            log.info("ignored own SR/SEG %s routed back", self._h(sop_uid))
            return SUCCESS
        accepted = check_instance(ds, event.request.AffectedSOPClassUID, self._accepted)
        # The digest leaves the file meta out: it names the sending AE, which is not content.
        digest = hashlib.sha256(event.encoded_dataset(include_meta=False)).hexdigest()
        path = self.spool.instance_path(accepted.study_uid, accepted.sop_uid)
        if self.state.instance_digest(accepted.sop_uid) != (accepted.study_uid, digest):
            self.spool.write(path, encoded)
        first_of_study = not self.state.has_study(accepted.study_uid)
        new = self.state.record_instance(accepted.study_uid, accepted.sop_uid, digest, path)
        self.metrics.received.inc(first_of_study)
        self.metrics.instances.inc(new)
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
            if result.skipped_reason:
                self.metrics.skipped.inc()
            if result.sr is None:
                log.info("study %s: no findings, nothing sent (%s)", study, result.skipped_reason)
                self.state.finish(job.study_uid, "skipped", result.skipped_reason or "app produced no SR")
                self.metrics.processed.labels("no_report").inc()
                return
            previous = self.state.last_report(job.study_uid)
            key = result.report_key
            if previous is not None and previous.report_key == key:
                self.state.report_unchanged(job, previous)
                self.metrics.processed.labels("unchanged").inc()
                log.info("study %s: re-evaluated (%d instances): report unchanged, nothing new sent",
                         study, len(job.paths))
                self._delivery_wake.set()
                return
            sr_uid, path = self._write_sr(job, result.sr, previous)
            if getattr(result, "seg", None) is not None:
                self._write_seg(job, result.seg, sr_uid)
        except Exception as e:  # noqa: BLE001 - any app failure marks the study, the service goes on
            # Only the exception type: messages can quote header values (patient data).
            log.error("study %s: processing failed with %s", study, type(e).__name__)
            self.state.finish(job.study_uid, "failed", f"app error: {type(e).__name__}")
            self.metrics.failed.inc()
            return
        kind = "notice" if result.skipped_reason else "findings"
        outcome = kind + (f": {result.skipped_reason}" if result.skipped_reason else "")
        if previous is not None:
            outcome += f" (replaces SR {self._h(previous.sr_uid)})"
        self.state.sr_written(job, sr_uid, path, key, outcome)
        self.metrics.processed.labels(kind).inc()
        log.info("study %s: %s SR %s written in %.2f s%s", study, kind, self._h(sr_uid), time.perf_counter() - started,
                 "" if previous is None else f", replacing SR {self._h(previous.sr_uid)} (Predecessor Documents)")
        self._delivery_wake.set()

    def _write_sr(self, job: Job, sr: Dataset, previous: SentReport | None) -> tuple[str, Path]:
        """Give the SR its report-versioned UID (the app's for a first report), name its predecessor, and put it
        durably in the outbox."""
        sr_uid = versioned_uid(str(sr.SOPInstanceUID), previous.sr_uid if previous else None)
        sr.SOPInstanceUID = sr_uid
        if getattr(sr, "file_meta", None) is not None:
            sr.file_meta.MediaStorageSOPInstanceUID = sr_uid
        if previous is not None:
            add_predecessor(sr, self._previous_header(previous, sr))
        buffer = BytesIO()
        sr.save_as(buffer, enforce_file_format=True)
        return sr_uid, self.spool.write(self.spool.sr_path(job.study_uid, sr_uid), buffer.getvalue())

    def _write_seg(self, job: Job, seg: Dataset, sr_uid: str) -> Path:
        """Put the grounding SEG durably in the outbox under a UID derived from its SR's; delivery sends both."""
        seg.SOPInstanceUID = seg_uid(sr_uid)
        seg.file_meta.MediaStorageSOPInstanceUID = seg.SOPInstanceUID
        buffer = BytesIO()
        seg.save_as(buffer, enforce_file_format=True)
        return self.spool.write(self.spool.sr_path(job.study_uid, seg.SOPInstanceUID), buffer.getvalue())

    def _is_own_seg(self, ds: Dataset, sop_uid: str) -> bool:
        """True for a SEG this gateway wrote (its outbox file exists)."""
        study_uid = ds.get("StudyInstanceUID")
        return bool(study_uid) and self.spool.sr_path(str(study_uid), sop_uid).is_file()

    @staticmethod
    def _previous_header(previous: SentReport, sr: Dataset) -> Dataset:
        """The replaced SR's header from the outbox; if that file is gone, its UID in this SR's series and class."""
        if previous.path is not None and previous.path.is_file():
            return dcmread(previous.path, stop_before_pixels=True)
        log.warning("SR %s replaced but its outbox file is gone: referenced by UID in the current SR series",
                    previous.sr_uid[-8:])
        header = Dataset()
        header.SOPClassUID, header.SOPInstanceUID = sr.SOPClassUID, previous.sr_uid
        header.SeriesInstanceUID, header.StudyInstanceUID = sr.SeriesInstanceUID, sr.StudyInstanceUID
        return header

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
        seg_path = self.spool.sr_path(delivery.study_uid, seg_uid(delivery.sr_uid))
        try:
            # the SR, then its grounding SEG if one was written: delivered means both are stored (a PACS
            # that refuses SEG would retry forever; such a site sets deploy.grounding.enabled false)
            error = send_file(self.config, delivery.sr_path)
            if error is None and seg_path.is_file():
                error = send_file(self.config, seg_path)
        except Exception as e:  # noqa: BLE001 - e.g. TLS or file errors: count as a failed attempt
            error = f"{type(e).__name__} while sending"
        self.metrics.attempts.labels("ok" if error is None else "error").inc()
        if error is None:
            latency = self.state.delivered(delivery)
            if latency is not None:
                self.metrics.latency.observe(latency)
            log.info("study %s: SR %s delivered to %s", study, self._h(delivery.sr_uid),
                     self.config.destination.ae_title)
            return
        attempt = delivery.attempts + 1
        if self.config.max_attempts is not None and attempt >= self.config.max_attempts:
            log.error("study %s: delivery failed %d times (%s); SR kept in the outbox until `retry`",
                      study, attempt, error)
            self.state.delivery_failed(delivery, error, retry_at=None)
            return
        # Capped exponential backoff (the exponent is bounded so that retrying forever cannot overflow).
        delay = min(self.config.backoff_seconds * 2 ** min(attempt - 1, 30), self.config.backoff_max_seconds)
        log.warning("study %s: delivery attempt %d failed (%s); retry in %.1f s", study, attempt, error, delay)
        self.state.delivery_failed(delivery, error, retry_at=time.time() + delay)


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
    code = int(status.Status)
    if code == DUPLICATE_SOP_INSTANCE:
        log.info("PACS answered 0x%04X duplicate SOP instance: it already holds this SR", code)
        return None
    if code_to_category(code) not in ("Success", "Warning"):
        return f"C-STORE status 0x{code:04X}"
    return None


if __name__ == "__main__":
    from monai_vecl.deploy.gateway_cli import main

    raise SystemExit(main())
