"""Durable per-study state machine of the gateway (SQLite, WAL, synchronous=FULL).

States: ``received`` (instances arriving) → ``queued`` (quiet long enough) → ``running`` (app
processing) → ``sr_written`` (SR durable in the outbox, awaiting delivery) → ``delivered``;
side exits ``skipped`` (the app declined, e.g. lateral-only study) and ``failed``.

Crash safety: a study found ``running`` at start-up goes back to ``queued`` (nothing was sent
yet); ``sr_written`` is simply delivered again with the same SR SOP Instance UID, which a PACS
stores once; a study still ``received`` is held for a recovery grace period (its sender could
not reach a stopped gateway). Idempotency: each study keeps the digest of its instances; a
terminal study only re-opens when that digest changes, and each SR keeps the key of what it
reported, so a re-evaluation that reports the same sends nothing (:meth:`StateStore.report_unchanged`).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STATES = ("received", "queued", "running", "sr_written", "delivered", "skipped", "failed")
TERMINAL = ("delivered", "skipped", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    last_received REAL NOT NULL,
    content_digest TEXT NOT NULL,
    processed_digest TEXT,
    sr_uid TEXT,
    sr_path TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL,
    reason TEXT,
    updated REAL NOT NULL,
    hold_until REAL,
    outcome TEXT
);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    digest TEXT NOT NULL,
    path TEXT NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_uid);
CREATE TABLE IF NOT EXISTS srs (
    sr_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    digest TEXT NOT NULL,
    created REAL NOT NULL,
    delivered REAL,
    report_key TEXT,
    path TEXT
);
"""
# Columns added after the first release: (table, column, type) added to older databases at open.
_ADDED_COLUMNS = (
    ("studies", "hold_until", "REAL"),
    ("studies", "outcome", "TEXT"),
    ("srs", "report_key", "TEXT"),
    ("srs", "path", "TEXT"),
)


@dataclass(frozen=True)
class Job:
    """A study claimed for processing: the content digest it is processed for and its files."""

    study_uid: str
    digest: str
    paths: list[Path]


@dataclass(frozen=True)
class Delivery:
    study_uid: str
    sr_uid: str
    sr_path: Path
    attempts: int


@dataclass(frozen=True)
class SentReport:
    """The latest SR made for a study: what a re-evaluation compares with and names as predecessor."""

    sr_uid: str
    report_key: str | None
    path: Path | None
    delivered: bool


@dataclass(frozen=True)
class StudyStatus:
    study_uid: str
    state: str
    instances: int
    attempts: int
    updated: float
    reason: str | None
    outcome: str | None = None


class StateStore:
    """Thread-safe access to the gateway database; every method is one transaction."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        for table, column, kind in _ADDED_COLUMNS:
            if column not in {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _study_digest(db: sqlite3.Connection, study_uid: str) -> str:
        h = hashlib.sha256()
        for sop, digest in db.execute(
            "SELECT sop_uid, digest FROM instances WHERE study_uid=? ORDER BY sop_uid", (study_uid,)
        ):
            h.update(f"{sop}:{digest};".encode())
        return h.hexdigest()

    @staticmethod
    def _reopen_if_changed(db: sqlite3.Connection, study_uid: str, now: float) -> None:
        """After a terminal transition: content that arrived meanwhile starts a new round."""
        db.execute(
            "UPDATE studies SET state='received', attempts=0, reason=NULL, updated=? "
            "WHERE study_uid=? AND state IN ('delivered','skipped','failed') "
            "AND processed_digest IS NOT content_digest",
            (now, study_uid),
        )

    def record_instance(self, study_uid: str, sop_uid: str, digest: str, path: Path, now: float | None = None) -> bool:
        """Register a durably spooled instance; returns False when this exact instance was already known."""
        now = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute("SELECT study_uid, digest FROM instances WHERE sop_uid=?", (sop_uid,)).fetchone()
            if row is not None and row == (study_uid, digest):
                # A re-sent identical instance only extends the quiet period of a study still arriving.
                db.execute(
                    "UPDATE studies SET last_received=? WHERE study_uid=? AND state='received'", (now, study_uid)
                )
                return False
            db.execute(
                "INSERT OR REPLACE INTO instances(sop_uid, study_uid, digest, path, received) VALUES (?,?,?,?,?)",
                (sop_uid, study_uid, digest, str(path), now),
            )
            content = self._study_digest(db, study_uid)
            db.execute(
                "INSERT INTO studies(study_uid, state, last_received, content_digest, updated) "
                "VALUES (?, 'received', ?, ?, ?) "
                "ON CONFLICT(study_uid) DO UPDATE SET last_received=excluded.last_received, "
                "content_digest=excluded.content_digest, updated=excluded.updated, "
                "state=CASE WHEN state IN ('running','sr_written') THEN state ELSE 'received' END, "
                "attempts=CASE WHEN state IN ('running','sr_written') THEN attempts ELSE 0 END, "
                "reason=CASE WHEN state IN ('running','sr_written') THEN reason ELSE NULL END",
                (study_uid, now, content, now),
            )
            return True

    def instance_digest(self, sop_uid: str) -> tuple[str, str] | None:
        """``(study_uid, digest)`` of a known instance, else None."""
        with self._lock:
            row = self._db.execute("SELECT study_uid, digest FROM instances WHERE sop_uid=?", (sop_uid,)).fetchone()
        return None if row is None else (row[0], row[1])

    def has_study(self, study_uid: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM studies WHERE study_uid=?", (study_uid,)).fetchone() is not None

    def known_paths(self) -> set[str]:
        with self._lock:
            return {p for (p,) in self._db.execute("SELECT path FROM instances")}

    def is_own_sr(self, sop_uid: str) -> bool:
        """True for an SR this gateway produced (a PACS may route it back with the study)."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM srs WHERE sr_uid=?", (sop_uid,)).fetchone() is not None

    def recover(self, grace_seconds: float, now: float | None = None) -> tuple[int, int]:
        """Start-up: studies interrupted while running are queued again; studies still arriving are held.

        A study still ``received`` is held for ``grace_seconds``: its senders could not reach a
        stopped gateway and may resend the rest well after the quiet period. Returns
        ``(re-queued, held)``.
        """
        now = time.time() if now is None else now
        with self._tx() as db:
            held = db.execute("UPDATE studies SET hold_until=? WHERE state='received'", (now + grace_seconds,)).rowcount
            requeued = db.execute("UPDATE studies SET state='queued', updated=? WHERE state='running'", (now,)).rowcount
            return requeued, held

    def promote_quiet(self, quiet_seconds: float, now: float | None = None) -> int:
        """Queue every study that has received nothing for ``quiet_seconds`` and is not held."""
        now = time.time() if now is None else now
        with self._tx() as db:
            return db.execute(
                "UPDATE studies SET state='queued', updated=? WHERE state='received' AND last_received<=? "
                "AND (hold_until IS NULL OR hold_until<=?)",
                (now, now - quiet_seconds, now),
            ).rowcount

    def claim_next(self, now: float | None = None) -> Job | None:
        """Move the oldest queued study to ``running`` and return what to process."""
        now = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute(
                "SELECT study_uid, content_digest FROM studies WHERE state='queued' ORDER BY last_received LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            study_uid, digest = row
            db.execute(
                "UPDATE studies SET state='running', processed_digest=?, updated=? WHERE study_uid=?",
                (digest, now, study_uid),
            )
            paths = [
                Path(p)
                for (p,) in db.execute("SELECT path FROM instances WHERE study_uid=? ORDER BY sop_uid", (study_uid,))
            ]
            return Job(study_uid, digest, paths)

    def last_report(self, study_uid: str) -> SentReport | None:
        """The latest SR made for the study, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT sr_uid, report_key, path, delivered FROM srs WHERE study_uid=? ORDER BY created DESC LIMIT 1",
                (study_uid,),
            ).fetchone()
        if row is None:
            return None
        return SentReport(row[0], row[1], None if row[2] is None else Path(row[2]), row[3] is not None)

    def sr_written(
        self, job: Job, sr_uid: str, sr_path: Path, report_key: str | None = None, outcome: str | None = None,
        now: float | None = None,
    ) -> None:
        """The SR is durable in the outbox: record it (with what it reports) and queue its delivery."""
        now = time.time() if now is None else now
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO srs(sr_uid, study_uid, digest, created, report_key, path) VALUES (?,?,?,?,?,?)",
                (sr_uid, job.study_uid, job.digest, now, report_key, str(sr_path)),
            )
            db.execute(
                "UPDATE studies SET state='sr_written', sr_uid=?, sr_path=?, attempts=0, next_attempt=?, "
                "reason=NULL, outcome=?, updated=? WHERE study_uid=?",
                (sr_uid, str(sr_path), now, outcome, now, job.study_uid),
            )

    def report_unchanged(self, job: Job, report: SentReport, now: float | None = None) -> None:
        """Re-evaluation reported what ``report`` already says: nothing new is sent.

        The study returns to ``delivered``, or to ``sr_written`` when that SR has not been
        delivered yet (it is then sent, once, as before).
        """
        now = time.time() if now is None else now
        with self._tx() as db:
            db.execute(
                "UPDATE studies SET state=?, sr_uid=?, sr_path=?, attempts=0, next_attempt=?, reason=NULL, "
                "outcome='unchanged after late instances', updated=? WHERE study_uid=?",
                ("delivered" if report.delivered else "sr_written", report.sr_uid,
                 None if report.path is None else str(report.path), now, now, job.study_uid),
            )
            self._reopen_if_changed(db, job.study_uid, now)

    def finish(self, study_uid: str, state: str, reason: str | None = None, now: float | None = None) -> None:
        """Terminal transition (``skipped`` or ``failed``) of a study that produced no deliverable SR."""
        if state not in ("skipped", "failed"):
            raise ValueError(f"finish() takes 'skipped' or 'failed', got {state!r}")
        now = time.time() if now is None else now
        with self._tx() as db:
            db.execute("UPDATE studies SET state=?, reason=?, updated=? WHERE study_uid=?", (state, reason, now, study_uid))
            self._reopen_if_changed(db, study_uid, now)

    def due_deliveries(self, now: float | None = None) -> list[Delivery]:
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                "SELECT study_uid, sr_uid, sr_path, attempts FROM studies "
                "WHERE state='sr_written' AND next_attempt<=? ORDER BY next_attempt",
                (now,),
            ).fetchall()
        return [Delivery(s, u, Path(p), a) for s, u, p, a in rows]

    def delivered(self, delivery: Delivery, now: float | None = None) -> float | None:
        """Record the delivery; returns seconds from the study's last received instance to now."""
        now = time.time() if now is None else now
        with self._tx() as db:
            db.execute("UPDATE srs SET delivered=? WHERE sr_uid=?", (now, delivery.sr_uid))
            db.execute(
                "UPDATE studies SET state='delivered', reason=NULL, updated=? WHERE study_uid=? AND sr_uid=?",
                (now, delivery.study_uid, delivery.sr_uid),
            )
            row = db.execute("SELECT last_received FROM studies WHERE study_uid=?", (delivery.study_uid,)).fetchone()
            self._reopen_if_changed(db, delivery.study_uid, now)
        return None if row is None else now - row[0]

    def deliver_now(self, now: float | None = None) -> int:
        """Make every waiting delivery due now (e.g. the PACS has just shown it is up again)."""
        now = time.time() if now is None else now
        with self._tx() as db:
            return db.execute(
                "UPDATE studies SET next_attempt=? WHERE state='sr_written' AND next_attempt>?", (now, now)
            ).rowcount

    def delivery_failed(
        self, delivery: Delivery, reason: str, retry_at: float | None, now: float | None = None
    ) -> None:
        """Count a failed attempt; ``retry_at=None`` gives up (state ``failed``, SR kept in the outbox)."""
        now = time.time() if now is None else now
        with self._tx() as db:
            db.execute(
                "UPDATE studies SET attempts=attempts+1, reason=?, updated=?, next_attempt=?, "
                "state=CASE WHEN ? IS NULL THEN 'failed' ELSE state END WHERE study_uid=? AND sr_uid=?",
                (reason, now, retry_at, retry_at, delivery.study_uid, delivery.sr_uid),
            )
            if retry_at is None:
                self._reopen_if_changed(db, delivery.study_uid, now)

    def retry_failed(self, now: float | None = None) -> int:
        """Operator command: failed studies with an SR go back to delivery, the others to processing."""
        now = time.time() if now is None else now
        with self._tx() as db:
            return db.execute(
                "UPDATE studies SET attempts=0, reason=NULL, next_attempt=?, updated=?, "
                "state=CASE WHEN sr_uid IS NOT NULL AND processed_digest=content_digest "
                "THEN 'sr_written' ELSE 'queued' END WHERE state='failed'",
                (now, now),
            ).rowcount

    def studies(self) -> list[StudyStatus]:
        with self._lock:
            rows = self._db.execute(
                "SELECT s.study_uid, s.state, COUNT(i.sop_uid), s.attempts, s.updated, s.reason, s.outcome "
                "FROM studies s LEFT JOIN instances i ON i.study_uid=s.study_uid "
                "GROUP BY s.study_uid ORDER BY s.updated"
            ).fetchall()
        return [StudyStatus(*r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            found = dict(self._db.execute("SELECT state, COUNT(*) FROM studies GROUP BY state").fetchall())
        return {s: found.get(s, 0) for s in STATES}

    def stuck(self, after_seconds: float, now: float | None = None) -> list[str]:
        """Study UIDs that have sat in a non-terminal state for more than ``after_seconds``.

        ``received``: nothing arrived for that long yet it is not queued (a hold or a stopped
        worker); ``queued``/``running``: since the state was entered; ``sr_written``: since the SR
        was made (delivery keeps failing).
        """
        now = time.time() if now is None else now
        limit = now - after_seconds
        with self._lock:
            rows = self._db.execute(
                "SELECT s.study_uid FROM studies s LEFT JOIN srs r ON r.sr_uid=s.sr_uid WHERE "
                "(s.state='received' AND s.last_received<? AND (s.hold_until IS NULL OR s.hold_until<?)) "
                "OR (s.state IN ('queued','running') AND s.updated<?) "
                "OR (s.state='sr_written' AND COALESCE(r.created, s.updated)<?)",
                (limit, limit, limit, limit),
            ).fetchall()
        return [r[0] for r in rows]
