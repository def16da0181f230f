"""Operator's view of the running gateway: Prometheus metrics and a health endpoint (loopback by default).

``GET /metrics``: Prometheus text format (``prometheus_client``). ``GET /health``: JSON with the
per-state counts, the failed and stuck studies (hashed), and ``"status": "ok"`` (HTTP 200) or
``"degraded"`` (HTTP 503) when a study failed, one is stuck or a worker thread died, so a plain
HTTP check can alert. Nothing served names a patient or a UID in clear.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from monai_vecl.deploy.state import STATES

log = logging.getLogger("monai_vecl.deploy.gateway")

# Seconds from a study's last received instance to its SR stored by the PACS, quiet period included.
_LATENCY_BUCKETS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300, 900)


class GatewayMetrics:
    """The gateway's counters; a registry of its own so that several services can share a process (tests)."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self.instances = Counter("vecl_instances_received", "Instances stored in the spool (new or changed)",
                                 registry=self.registry)
        self.received = Counter("vecl_studies_received", "Studies seen for the first time", registry=self.registry)
        self.processed = Counter("vecl_studies_processed", "Studies the app processed, by outcome "
                                 "(findings, notice, unchanged, no_report)", ["outcome"], registry=self.registry)
        self.skipped = Counter("vecl_studies_skipped", "Studies the app declined (no findings produced)",
                               registry=self.registry)
        self.failed = Counter("vecl_studies_failed", "Studies whose processing raised", registry=self.registry)
        self.refused = Counter("vecl_instances_refused", "Instances refused, by DIMSE status", ["status"],
                               registry=self.registry)
        self.rejected = Counter("vecl_associations_rejected", "Associations rejected, by reason", ["reason"],
                                registry=self.registry)
        self.attempts = Counter("vecl_delivery_attempts", "SR delivery attempts, by result (ok, error)", ["result"],
                                registry=self.registry)
        self.latency = Histogram("vecl_push_to_sr_seconds", "Last instance received to SR stored by the PACS",
                                 buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_QueueCollector(counts))


class _QueueCollector:
    """Studies per state, read from the state database at scrape time (it survives restarts)."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("vecl_studies", "Studies per gateway state (queue depth: received+queued+running)",
                                  labels=["state"])
        counts = self._counts()
        for state in STATES:
            gauge.add_metric([state], counts.get(state, 0))
        yield gauge


class MonitorServer:
    """HTTP server for ``/metrics`` and ``/health`` in a daemon thread."""

    def __init__(self, host: str, port: int, metrics: GatewayMetrics, health: Callable[[], dict[str, Any]]) -> None:
        registry = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?")[0] == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                elif self.path.split("?")[0] == "/health":
                    report = health()
                    code = 200 if report["status"] == "ok" else 503
                    self._send(code, "application/json", json.dumps(report, indent=1).encode())
                else:
                    self._send(404, "text/plain", b"try /metrics or /health\n")

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                """Scrapes are frequent: no access log."""

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="vecl-monitor", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self._httpd.server_address[:2]

    def start(self) -> None:
        self._thread.start()
        log.info("metrics and health on http://%s:%d/ (metrics, health)", *self.address)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
