"""Durable on-disk spool for received instances and produced SRs.

Every file lands through temp file + fsync + rename + directory fsync, so after a crash a spool
path either holds the complete bytes or does not exist. File names are salted hashes of the DICOM
UIDs: the spool layout itself carries no identifiers.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import uuid
from pathlib import Path

SALT_FILE = "salt"


def uid_hash(uid: str, salt: str = "") -> str:
    """Short, stable pseudonym of a DICOM UID for logs, file names and the status command."""
    return hashlib.sha256(f"{salt}{uid}".encode()).hexdigest()[:16]


def spool_salt(spool_dir: str | os.PathLike, explicit: str | None, create: bool = True) -> str:
    """The salt of the UID hashes: ``explicit`` when set, else the random one kept in the spool.

    The kept salt is generated at first start (128 random bits, file mode 0600) so that the
    hashes in logs and status cannot be recomputed from a Study UID; it lives with the spool
    because the spool's file names use it. With ``create=False`` (read-only tools) a missing
    salt file raises ``FileNotFoundError``.
    """
    if explicit:
        return explicit
    path = Path(spool_dir) / SALT_FILE
    if path.is_file():
        return path.read_text().strip()
    if not create:
        raise FileNotFoundError(f"no salt in {path} (has the gateway run with this spool?)")
    path.parent.mkdir(parents=True, exist_ok=True)
    salt = secrets.token_hex(16)
    tmp = path.with_name(f"{SALT_FILE}.{uuid.uuid4().hex}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(salt)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # never replaces a salt another process wrote meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    _fsync_dir(path.parent)
    return path.read_text().strip()


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
