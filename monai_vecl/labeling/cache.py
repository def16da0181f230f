"""Persistent label cache: SQLite, one row per (labeler identity, normalised sentence).

WAL journal and one transaction per batch, so a killed run keeps every batch it committed and a rerun
labels only what is missing. The primary key makes a sentence's label unique per identity.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from monai_vecl.labeling.base import LabelResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    identity TEXT NOT NULL,
    sentence TEXT NOT NULL,
    labels TEXT NOT NULL,
    backend TEXT NOT NULL,
    repaired INTEGER NOT NULL,
    fallback INTEGER NOT NULL,
    created REAL NOT NULL,
    reason TEXT,
    PRIMARY KEY (identity, sentence)
)
"""
_CHUNK = 500  # stays under SQLite's bound-parameter limit


class LabelCache:
    """Args:
        path: SQLite file (created with its folder if missing).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(labels)")}
        if "reason" not in columns:  # a cache written before screening reasons were stored
            self._db.execute("ALTER TABLE labels ADD COLUMN reason TEXT")
        self._db.commit()

    def get_many(self, identity: str, keys: Iterable[str]) -> dict[str, LabelResult]:
        """Cached results for those ``keys`` (normalised sentences) that have one."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, LabelResult] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            rows = self._db.execute(
                f"SELECT sentence, labels, backend, repaired, fallback, reason FROM labels "
                f"WHERE identity = ? AND sentence IN ({','.join('?' * len(chunk))})", [identity, *chunk])
            for sentence, labels, backend, repaired, fallback, reason in rows:
                found[sentence] = LabelResult(tuple(json.loads(labels)), backend, bool(repaired), bool(fallback),
                                              reason)
        return found

    def put_many(self, identity: str, results: Mapping[str, LabelResult]) -> None:
        """Store a batch in one transaction; a key already present keeps its first label."""
        now = time.time()
        with self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO labels (identity, sentence, labels, backend, repaired, fallback, created, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(identity, key, json.dumps(list(r.labels)), r.backend, int(r.repaired), int(r.fallback), now, r.reason)
                 for key, r in results.items()])

    def count(self, identity: str | None = None) -> int:
        """Rows stored, for one identity or all."""
        if identity is None:
            return self._db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM labels WHERE identity = ?", [identity]).fetchone()[0]

    def identities(self) -> Sequence[str]:
        """Labeler identities present in the cache."""
        return [row[0] for row in self._db.execute("SELECT DISTINCT identity FROM labels ORDER BY identity")]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> LabelCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
