"""Benchmark: DICOM gateway push-to-SR latency and throughput on this machine.

Modes. ``--mode nagle`` (default): the in-process comparison below. ``--mode load`` / ``soak``:
the gateway as a service process (``python -m monai_vecl.deploy.gateway serve``) delivering to a
real Orthanc, K senders pushing N studies at an offered rate, see :func:`load`. ``--mode breakdown``:
where one study's time goes in the app and the gateway, the SEG paths against the former one, see
:func:`breakdown`.

Studies are copies of the real chest CR ``RG1_UNCR.dcm`` (pydicom-data package, 1955×1841,
15-bit), each given new Study/Series/SOP UIDs. Senders push them with pynetdicom C-STORE to an
in-process gateway that runs the deploy app (``StudyPipeline``) and sends each SR to a probe
Storage SCP standing in for the PACS, which timestamps its arrival.

Figures per configuration:
- C-ECHO ms: round trip of a C-ECHO (median of 20 on one association), where Nagle's delay shows;
- small C-STORE ms: round trip of a 64×64 C-STORE, 20 on one association (median);
- C-STORE ms: sender-side round trip of one full-size CR C-STORE (median, latency phase);
- latency p50/p95: studies pushed one at a time (each waits for the previous SR, so no queueing);
  SR arrival at the PACS − sender's last C-STORE response − quiet period (the configured wait
  for study completeness is excluded; the gateway's 20 ms poll interval is not);
- studies/min: a burst of new studies pushed at once by all senders; studies ÷ (last SR arrival
  − first push).

The baseline, measured in the same run, is Nagle's algorithm left on (no TCP_NODELAY on the
gateway's or the senders' sockets) with one sender; then TCP_NODELAY with 1 and with 4
concurrent senders. Ratios are against the baseline.

Usage: python bench/bench_gateway.py [--studies 12] [--quiet 0.5] [--config deploy/config.yaml] [--untrained]
       python bench/bench_gateway.py --mode load --studies 100 --senders 8 --rate 120 [--quiet 1]
       python bench/bench_gateway.py --mode soak --minutes 20 --senders 8 --rate 100
       python bench/bench_gateway.py --mode breakdown --studies 5
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pydicom
import yaml
from pydicom.uid import generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from monai_vecl.data.dicom_image import dicom_to_gray01
from monai_vecl.deploy.gateway import GatewayService, send_file
from monai_vecl.deploy.gateway_config import Destination, GatewayConfig, Peer
from monai_vecl.deploy.pipeline import PipelineConfig, StudyPipeline
from monai_vecl.deploy.seg import build_grounding_seg
from monai_vecl.files import write_bytes
from monai_vecl.grounding import to_source_frame
from monai_vecl.inference.zero_shot import preprocess

ROOT = Path(__file__).resolve().parents[1]
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
sys.path.insert(0, str(ROOT / "tests"))  # the real-Orthanc launcher shared with the end-to-end tests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nodelay(event: evt.Event) -> None:
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def conn_handlers(tcp_nodelay: bool) -> list:
    return [(evt.EVT_CONN_OPEN, nodelay)] if tcp_nodelay else []


class Probe:
    """Storage SCP in the PACS role: records when each study's SR arrives."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.done = threading.Condition()
        ae = AE(ae_title="PACS")
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.port = free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._on_store), (evt.EVT_CONN_OPEN, nodelay)])

    def _on_store(self, event: evt.Event) -> int:
        now = time.perf_counter()
        with self.done:
            self.arrivals[str(event.dataset.StudyInstanceUID)] = now
            self.done.notify_all()
        return 0x0000

    def wait_for(self, study_uids: list[str], timeout: float) -> None:
        with self.done:
            if not self.done.wait_for(lambda: all(u in self.arrivals for u in study_uids), timeout):
                raise TimeoutError(f"{sum(u in self.arrivals for u in study_uids)}/{len(study_uids)} SRs arrived")


def make_studies(n: int, template: pydicom.Dataset) -> list[pydicom.Dataset]:
    studies = []
    for _ in range(n):
        ds = copy.deepcopy(template)  # Dataset.copy() shares element objects: new UIDs would leak into the template
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        studies.append(ds)
    return studies


def one_study(template: pydicom.Dataset, n: int) -> list[pydicom.Dataset]:
    """``n`` full-size instances of one new study (one series)."""
    instances = make_studies(n, template)
    for ds in instances:
        ds.StudyInstanceUID, ds.SeriesInstanceUID = instances[0].StudyInstanceUID, instances[0].SeriesInstanceUID
    return instances


def small_study(template: pydicom.Dataset, n: int, size: int = 64) -> list[pydicom.Dataset]:
    """``n`` instances of one new study, each a ``size``² subsample of the CR: small PDUs."""
    pixels = template.pixel_array
    step_r, step_c = pixels.shape[0] // size, pixels.shape[1] // size
    small = pixels[::step_r, ::step_c][:size, :size].copy()
    instances = one_study(template, n)
    for ds in instances:
        ds.Rows, ds.Columns, ds.PixelData = size, size, small.tobytes()
    return instances


def push(port: int, calling: str, studies: list[list[pydicom.Dataset]], tcp_nodelay: bool,
         times_ms: list[float], last_sent: dict[str, float], probe: Probe | None = None) -> None:
    """One sender: each study's instances over one association, as a PACS forwarding studies does.

    Times every C-STORE; with ``probe``, waits for each study's SR before pushing the next
    (latency without queueing)."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(CR_STORAGE, [str(studies[0][0].file_meta.TransferSyntaxUID)])
    for instances in studies:
        assoc = ae.associate("127.0.0.1", port, ae_title="VECL", evt_handlers=conn_handlers(tcp_nodelay))
        if not assoc.is_established:
            raise RuntimeError("gateway refused the association")
        for ds in instances:
            start = time.perf_counter()
            status = assoc.send_c_store(ds)
            end = time.perf_counter()
            if status.Status != 0x0000:
                raise RuntimeError(f"C-STORE status 0x{status.Status:04X}")
            times_ms.append(1000 * (end - start))
        assoc.release()
        study_uid = str(instances[0].StudyInstanceUID)
        last_sent[study_uid] = end
        if probe is not None:
            probe.wait_for([study_uid], timeout=120)


def echo_round_trips(port: int, tcp_nodelay: bool, n: int = 20) -> float:
    """Median C-ECHO round trip (ms) on one association: small PDUs show Nagle's delay best."""
    ae = AE(ae_title="SENDER0")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="VECL", evt_handlers=conn_handlers(tcp_nodelay))
    times = []
    for _ in range(n):
        start = time.perf_counter()
        assoc.send_c_echo()
        times.append(1000 * (time.perf_counter() - start))
    assoc.release()
    return statistics.median(times)


def run(pipeline: StudyPipeline, template: pydicom.Dataset, *, studies: int, senders: int, tcp_nodelay: bool,
        quiet: float, workdir: Path) -> dict[str, float]:
    """Latency phase (one study at a time), then throughput phase (all studies at once from ``senders``)."""
    probe = Probe()
    config = GatewayConfig(
        destination=Destination("PACS", "127.0.0.1", probe.port),
        peers=tuple(Peer(f"SENDER{k}") for k in range(senders)),
        spool_dir=workdir, port=0, quiet_seconds=quiet, poll_seconds=0.02, tcp_nodelay=tcp_nodelay,
    )
    service = GatewayService(config, pipeline=pipeline)
    service.start()
    store_ms: list[float] = []
    last_sent: dict[str, float] = {}
    try:
        echo_ms = echo_round_trips(service.port, tcp_nodelay)
        small_ms: list[float] = []
        push(service.port, "SENDER0", [small_study(template, 20)], tcp_nodelay, small_ms, {}, probe)
        sequential = make_studies(studies, template)
        push(service.port, "SENDER0", [[ds] for ds in sequential], tcp_nodelay, store_ms, last_sent, probe)
        burst = make_studies(studies, template)
        first = time.perf_counter()
        threads = [threading.Thread(target=push, args=(service.port, f"SENDER{k}", [[ds] for ds in burst[k::senders]],
                                                       tcp_nodelay, [], last_sent)) for k in range(senders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        burst_uids = [str(ds.StudyInstanceUID) for ds in burst]
        probe.wait_for(burst_uids, timeout=60 + 30 * studies)
    finally:
        service.stop()
        probe.server.shutdown()
    latencies = sorted(probe.arrivals[u] - last_sent[u] - quiet for u in (str(ds.StudyInstanceUID) for ds in sequential))
    span = max(probe.arrivals[u] for u in burst_uids) - first
    return {
        "echo_ms": echo_ms,
        "small_ms": statistics.median(small_ms),
        "store_ms": statistics.median(store_ms),
        "p50": statistics.median(latencies),
        "p95": statistics.quantiles(latencies, n=20, method="inclusive")[-1],
        "per_min": 60 * studies / span,
    }


class ProcessSampler:
    """Samples a process's resident memory and open file descriptors once a second (Linux /proc)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.samples = pid, []  # (seconds since start, RSS MiB, open fds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
                rss = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024
                fds = len(os.listdir(f"/proc/{self.pid}/fd"))
            except (OSError, StopIteration):
                return
            self.samples.append((time.monotonic() - self._start, rss, fds))

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def paced_push(port: int, calling: str, due_times: list[float], make: Callable[[], list[pydicom.Dataset]],
               sent: list[str], errors: list[str]) -> None:
    """One sender of the load bench: each new study (made just in time: a soak sends thousands) over its
    own association at its scheduled time; the Study UIDs sent are appended to ``sent``."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(CR_STORAGE, [str(make()[0].file_meta.TransferSyntaxUID)])
    for due in due_times:
        instances = make()
        time.sleep(max(0.0, due - time.time()))
        assoc = ae.associate("127.0.0.1", port, ae_title="VECL", evt_handlers=conn_handlers(True))
        if not assoc.is_established:
            errors.append("association refused")
            continue
        for ds in instances:
            status = assoc.send_c_store(ds)
            if not status or status.Status != 0x0000:
                errors.append(f"C-STORE status {getattr(status, 'Status', None)}")
        assoc.release()
        sent.append(str(instances[0].StudyInstanceUID))


def load(args: argparse.Namespace, settings: dict, template: pydicom.Dataset, workers: int) -> None:
    """K senders push N studies (``--instances`` CR images each) at ``--rate`` studies/min in total to the
    gateway process, which delivers each SR to a real Orthanc. ``soak`` runs for ``--minutes`` instead.

    Latency per study: SR stored by Orthanc (the C-STORE response the gateway records as delivered)
    − the study's last instance recorded by the gateway − the quiet period. Studies/min: studies ÷
    (last SR delivered − first push). Nothing lost or duplicated: Orthanc holds exactly one SR per
    study. Peak RSS and open descriptors of the gateway process are sampled every second. One
    untimed warm-up study goes first.
    """
    from gateway_pacs import Orthanc, free_port, wait_until

    n = args.studies if args.mode == "load" else int(args.minutes * args.rate)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        port = free_port()
        with Orthanc(tmp_path / "orthanc", {}) as orthanc:
            section = {
                "ae_title": "VECL", "port": port, "quiet_seconds": args.quiet, "poll_seconds": 0.05,
                "spool_dir": str(tmp_path / "spool"), "monitoring_port": free_port(), "processing_workers": workers,
                "destination": {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc.dicom_port},
                "peers": [{"ae_title": f"SENDER{k}"} for k in range(args.senders)],
            }
            config = tmp_path / "gateway.yaml"
            config.write_text(yaml.safe_dump({"gateway": section, "deploy": settings}))
            log = open(tmp_path / "gateway.log", "wb")  # noqa: SIM115 - closed below
            proc = subprocess.Popen([sys.executable, "-m", "monai_vecl.deploy.gateway", "serve", "--config", str(config)],
                                    stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            try:
                def listening() -> bool:
                    if proc.poll() is not None:
                        raise RuntimeError(f"gateway exited: {(tmp_path / 'gateway.log').read_text()[-2000:]}")
                    return b"listening as" in (tmp_path / "gateway.log").read_bytes()

                wait_until(listening, 900, what="gateway")  # a loaded machine can take minutes to import and load
                db = sqlite3.connect(f"file:{tmp_path / 'spool' / 'state.sqlite'}?mode=ro", uri=True)

                def delivered() -> int:
                    return db.execute("SELECT COUNT(*) FROM studies WHERE state='delivered'").fetchone()[0]

                # One study first, untimed: first-call costs (lazy imports, SR templates) stay out of the figures.
                warm_up: list[str] = []
                paced_push(port, "SENDER0", [time.time()], lambda: one_study(template, args.instances), warm_up, [])
                wait_until(lambda: delivered() == 1, 300, interval=0.2, what="warm-up SR")
                start = time.time() + 1.0
                schedule = [start + 60.0 * i / args.rate for i in range(n)]
                sent: list[str] = []
                errors: list[str] = []
                threads = [threading.Thread(target=paced_push, args=(port, f"SENDER{k}", schedule[k::args.senders],
                                                                     lambda: one_study(template, args.instances),
                                                                     sent, errors))
                           for k in range(args.senders)]
                with ProcessSampler(proc.pid) as sampler:
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                    wait_until(lambda: delivered() == n + 1, 600 + 30 * n, interval=0.5, what=f"{n} SRs delivered")
                    rows = [row for uid in sent for row in db.execute(
                        "SELECT s.last_received, r.delivered, r.created FROM studies s JOIN srs r ON r.sr_uid=s.sr_uid "
                        "WHERE s.study_uid=?", (uid,))]
                    db.close()
            finally:
                proc.terminate()
                proc.wait(60)
                log.close()
            per_study = {uid: len(orthanc.srs_of(uid)) for uid in sent}
        latencies = sorted(d - r - args.quiet for r, d, _ in rows)
        # split at the SR's creation: waiting for a worker + processing, then the outbox's delivery (SR and SEG)
        made = statistics.median(c - r - args.quiet for r, _, c in rows)
        delivery = statistics.median(d - c for _, d, c in rows)
        span = max(d for _, d, _ in rows) - start
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        rss = [s[1] for s in sampler.samples]
        fds = [s[2] for s in sampler.samples]
        print(f"{args.mode}, {workers} processing worker(s): {n} studies x {args.instances} CR instance(s) "
              f"({template.Rows}x{template.Columns}) from {args.senders} senders at {args.rate:g} studies/min offered, "
              f"quiet {args.quiet:g} s, load average {Path('/proc/loadavg').read_text().split()[:3]}")
        print(f"latency beyond the quiet period: p50 {cuts[49]:.2f} s, p95 {cuts[94]:.2f} s, p99 {cuts[98]:.2f} s, "
              f"max {latencies[-1]:.2f} s; {60 * n / span:.1f} studies/min; medians: SR written {made:.2f} s after the "
              f"quiet period, delivered {delivery:.2f} s after that")
        print(f"SRs in Orthanc: {sum(per_study.values())} for {n} studies; lost {sum(v == 0 for v in per_study.values())}, "
              f"duplicated {sum(v > 1 for v in per_study.values())}; sender errors {len(errors)}")
        print(f"gateway process: peak RSS {max(rss):.0f} MiB, open fds max {max(fds)}")
        if args.mode == "soak":
            quarter = max(1, len(rss) // 4)
            print(f"soak {args.minutes:g} min: RSS first quarter mean {statistics.mean(rss[:quarter]):.0f} MiB, "
                  f"last quarter {statistics.mean(rss[-quarter:]):.0f} MiB; fds first quarter max "
                  f"{max(fds[:quarter])}, last quarter max {max(fds[-quarter:])}")
            for t, r, f in sampler.samples[:: max(1, len(sampler.samples) // 10)]:
                print(f"  t={t:6.0f} s  RSS {r:6.0f} MiB  fds {f}")


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _encoded(ds: pydicom.Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def breakdown(args: argparse.Namespace, pipeline: StudyPipeline, template: pydicom.Dataset) -> None:
    """One study at a time: the app's stages (``StudyPipeline.process`` timings), then the SEG of the same maps
    built three ways, each encoded, spooled (fsync, as the gateway does) and C-STOREd to a real Orthanc.

    SEG ways: the former path (``full_checks``: plain highdicom on an interleaved copy, uncompressed: the
    baseline), the fast path uncompressed, the fast path JPEG-LS lossless (``transfer_syntax``, the default). Medians over
    ``--studies`` new studies after one warm-up; ratios against the baseline of the same run.
    """
    from dataclasses import replace

    from gateway_pacs import Orthanc

    seg_ways = {"former (full checks, explicit VR LE)": (True, replace(pipeline.config.seg,
                                                                      transfer_syntax="explicit_vr_little_endian")),
                "fast, explicit VR LE": (False, replace(pipeline.config.seg, transfer_syntax="explicit_vr_little_endian")),
                "fast, JPEG-LS lossless": (False, replace(pipeline.config.seg, transfer_syntax="jpeg_ls_lossless"))}
    stages: dict[str, list[float]] = {}
    costs: dict[str, dict[str, list[float]]] = {way: {} for way in seg_ways}
    sizes: dict[str, float] = {}

    def add(table: dict[str, list[float]], key: str, value: float) -> None:
        table.setdefault(key, []).append(value)

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        with Orthanc(tmp_path / "orthanc", {}) as orthanc:
            config = GatewayConfig(destination=Destination("ORTHANC", "127.0.0.1", orthanc.dicom_port),
                                   peers=(Peer("SENDER0"),), spool_dir=tmp_path / "spool", port=0)
            for i in range(args.studies + 1):  # the first one is the warm-up
                study = make_studies(1, template)[0]
                path = tmp_path / f"cr{i}.dcm"
                study.save_as(path, enforce_file_format=True)
                result = pipeline.process([path])
                source = pydicom.dcmread(path)
                gray = dicom_to_gray01(source, no_voi=pipeline.config.no_voi)
                del source.PixelData
                present = [k for k, f in enumerate(result.findings) if f.present]
                image = preprocess(gray, pipeline.model)[None]
                coarse, t_maps = _timed(lambda: pipeline.grounder.maps(image, present)[0])
                maps, t_frame = _timed(lambda: to_source_frame(coarse, gray.shape,
                                                               pipeline.model.config.load_size).numpy())
                named = {result.findings[k].name: m for k, m in zip(present, maps)}
                sr_bytes, t_sr_encode = _timed(lambda: _encoded(result.sr))
                sr_file = tmp_path / "spool" / f"sr{i}.dcm"
                _, t_sr_spool = _timed(lambda: write_bytes(sr_file, sr_bytes))
                _, t_sr_store = _timed(lambda: send_file(config, sr_file))
                if i == 0:
                    continue
                for key in ("select", "load", "score", "sr", "seg", "total"):
                    add(stages, key, result.timings[key])
                for key, value in (("maps", t_maps), ("to source grid", t_frame), ("SR encode", t_sr_encode),
                                   ("SR spool (fsync)", t_sr_spool), ("SR C-STORE", t_sr_store)):
                    add(stages, key, value)
                for w, (way, (full, seg_config)) in enumerate(seg_ways.items()):
                    uid = f"{result.sr.SOPInstanceUID}.{w}"
                    seg, t_build = _timed(lambda: build_grounding_seg(source, named, pipeline.algorithm, seg_config,
                                                                      sr_uid=uid, full_checks=full))
                    data, t_encode = _timed(lambda: _encoded(seg))
                    seg_file = tmp_path / "spool" / f"seg{i}-{w}.dcm"
                    _, t_spool = _timed(lambda: write_bytes(seg_file, data))
                    error, t_store = _timed(lambda: send_file(config, seg_file))
                    if error:
                        raise RuntimeError(f"{way}: Orthanc refused the SEG: {error}")
                    sizes[way] = len(data) / 1e6
                    for key, value in (("build", t_build), ("encode", t_encode), ("spool (fsync)", t_spool),
                                       ("C-STORE to Orthanc", t_store)):
                        add(costs[way], key, value)
    med = {key: statistics.median(v) for key, v in stages.items()}
    print(f"breakdown: {args.studies} studies x 1 CR ({template.Rows}x{template.Columns}), {len(present)} findings "
          f"present (SEG segments), device {pipeline.device}, load average "
          f"{Path('/proc/loadavg').read_text().split()[:3]}")
    print("app (StudyPipeline.process, as configured), median s: "
          + ", ".join(f"{k} {med[k]:.3f}" for k in ("select", "load", "score", "sr", "seg", "total")))
    print("of which SEG: maps (network) {:.3f}, to source grid {:.3f}; gateway per SR: encode {:.3f}, spool {:.3f}, "
          "C-STORE {:.3f}".format(*(med[k] for k in ("maps", "to source grid", "SR encode", "SR spool (fsync)",
                                                     "SR C-STORE"))))
    keys = ("build", "encode", "spool (fsync)", "C-STORE to Orthanc")
    print(f"{'SEG of the same maps':32} {'MB':>6} " + " ".join(f"{k:>18}" for k in keys) + f" {'sum s':>7} {'speed-up':>8}")
    base = sum(statistics.median(costs[next(iter(seg_ways))][k]) for k in keys)
    for way in seg_ways:
        row = [statistics.median(costs[way][k]) for k in keys]
        print(f"{way:32} {sizes[way]:6.2f} " + " ".join(f"{v:18.3f}" for v in row)
              + f" {sum(row):7.3f} {base / sum(row):7.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("nagle", "load", "soak", "breakdown"), default="nagle")
    parser.add_argument("--studies", type=int, default=12, help="studies per configuration (load: in total)")
    parser.add_argument("--quiet", type=float, default=0.5, help="gateway quiet period (s), excluded from latency")
    parser.add_argument("--config", type=Path, default=ROOT / "deploy" / "config.yaml", help="deploy app settings")
    parser.add_argument("--untrained", action="store_true", help="ignore the bundle: untrained small network")
    parser.add_argument("--senders", type=int, default=8, help="load/soak: concurrent senders")
    parser.add_argument("--rate", type=float, default=120.0, help="load/soak: offered studies per minute, in total")
    parser.add_argument("--instances", type=int, default=1, help="load/soak: CR instances per study")
    parser.add_argument("--minutes", type=float, default=20.0, help="soak: duration")
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="load/soak: processing_workers, one run each")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import data_store  # the pydicom-data package

    template = pydicom.dcmread(Path(data_store.__file__).parent / "data" / "RG1_UNCR.dcm")
    settings = yaml.safe_load(args.config.read_text())["deploy"]
    config = PipelineConfig.from_mapping(settings, base_dir=args.config.parent)
    pipeline = None
    if not args.untrained and config.bundle_root is not None:
        try:
            pipeline = StudyPipeline(config)
        except FileNotFoundError as err:  # an untrained checkout: configs but no weights
            print(f"no trained bundle: {err}")
    if pipeline is None:
        print("model: untrained small network (no trained bundle used)")
        bundle_names = yaml.safe_load((ROOT / "bundles" / "vecl_cxr" / "configs" / "inference.yaml").read_text())
        settings = {**settings, "bundle_root": None, "findings": settings.get("findings") or bundle_names["class_names"]}
        config = PipelineConfig.from_mapping(settings)
    else:
        print(f"model: bundle {config.bundle_root}")
        settings = {**settings, "bundle_root": str(config.bundle_root)}
    if args.mode == "breakdown":
        breakdown(args, pipeline or StudyPipeline(config), template)
        return
    if args.mode != "nagle":
        for workers in args.workers:
            load(args, settings, template, workers)
        return
    pipeline = pipeline or StudyPipeline(config)
    print(f"{args.studies} studies of 1 CR image ({template.Rows}x{template.Columns}), quiet {args.quiet} s, "
          f"{len(pipeline.thresholds)} findings, device {pipeline.device}, load average {Path('/proc/loadavg').read_text().split()[:3]}")
    runs = [("Nagle on (baseline), 1 sender", False, 1), ("TCP_NODELAY, 1 sender", True, 1), ("TCP_NODELAY, 4 senders", True, 4)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        # One study through the app first, so first-call costs (lazy imports, SR templates) stay out of every run.
        warm = Path(tmp) / "warm.dcm"
        template.save_as(warm, enforce_file_format=True)
        pipeline.process([warm])
        for i, (name, tcp_nodelay, senders) in enumerate(runs):
            results.append((name, run(pipeline, template, studies=args.studies, senders=senders,
                                      tcp_nodelay=tcp_nodelay, quiet=args.quiet, workdir=Path(tmp) / str(i))))
    base = results[0][1]
    print(f"{'configuration':32} {'C-ECHO ms':>9} {'small ms':>8} {'C-STORE ms':>10} {'p50 s':>7} {'p95 s':>7} {'studies/min':>11} "
          f"{'p50 speed-up':>12} {'thr. ratio':>10}")
    for name, r in results:
        print(f"{name:32} {r['echo_ms']:9.2f} {r['small_ms']:8.2f} {r['store_ms']:10.1f} {r['p50']:7.2f} {r['p95']:7.2f} {r['per_min']:11.1f} "
              f"{base['p50'] / r['p50']:11.2f}x {r['per_min'] / base['per_min']:9.2f}x")


if __name__ == "__main__":
    main()
