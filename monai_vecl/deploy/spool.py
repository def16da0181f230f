"""Durable on-disk spool for received instances and produced SRs.

Every file lands through temp file + fsync + rename + directory fsync, so after a crash a spool
path either holds the complete bytes or does not exist. File names are salted hashes of the DICOM
UIDs: the spool layout itself carries no identifiers.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path


def uid_hash(uid: str, salt: str = "") -> str:
    """Short, stable pseudonym of a DICOM UID for logs, file names and the status command."""
    return hashlib.sha256(f"{salt}{uid}".encode()).hexdigest()[:16]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Folder layout: ``instances/<study>/<sop>.dcm``, ``outbox/<study>/<sr>.dcm``, ``tmp/``."""

    def __init__(self, root: str | os.PathLike, salt: str = "") -> None:
        self.root = Path(root)
        self.salt = salt
        for sub in ("instances", "outbox", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def instance_path(self, study_uid: str, sop_uid: str) -> Path:
        return self.root / "instances" / uid_hash(study_uid, self.salt) / f"{uid_hash(sop_uid, self.salt)}.dcm"

    def sr_path(self, study_uid: str, sr_uid: str) -> Path:
        return self.root / "outbox" / uid_hash(study_uid, self.salt) / f"{uid_hash(sr_uid, self.salt)}.dcm"

    def write(self, path: Path, data: bytes) -> Path:
        """Atomically and durably place ``data`` at ``path`` (same file system as ``tmp/``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.root / "tmp" / f"{uuid.uuid4().hex}.part"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)
        return path

    def instance_files(self) -> list[Path]:
        """Every spooled instance file (used to re-register files a crash left unrecorded)."""
        return sorted((self.root / "instances").glob("*/*.dcm"))

    def clear_tmp(self) -> int:
        """Remove half-written temp files left by a crash; returns how many."""
        parts = list((self.root / "tmp").glob("*.part"))
        for p in parts:
            p.unlink(missing_ok=True)
        return len(parts)
