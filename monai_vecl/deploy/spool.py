"""Durable on-disk spool for received instances and produced SRs.

Every file lands through :mod:`monai_vecl.files` (temp file + fsync + rename + directory fsync), so
after a crash a spool path either holds the complete bytes or does not exist. File names are salted hashes of the DICOM
UIDs: the spool layout itself carries no identifiers.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from monai_vecl.files import remove_partial, write_bytes, write_text

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
    try:
        write_text(path, secrets.token_hex(16), overwrite=False, permissions=0o600)
    except FileExistsError:
        pass  # another process wrote its salt meanwhile: that one is kept and used
    return path.read_text().strip()


class Spool:
    """Folder layout: ``instances/<study>/<sop>.dcm``, ``outbox/<study>/<sr>.dcm``."""

    def __init__(self, root: str | os.PathLike, salt: str = "") -> None:
        self.root = Path(root)
        self.salt = salt
        for sub in ("instances", "outbox"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def instance_path(self, study_uid: str, sop_uid: str) -> Path:
        return self.root / "instances" / uid_hash(study_uid, self.salt) / f"{uid_hash(sop_uid, self.salt)}.dcm"

    def sr_path(self, study_uid: str, sr_uid: str) -> Path:
        return self.root / "outbox" / uid_hash(study_uid, self.salt) / f"{uid_hash(sr_uid, self.salt)}.dcm"

    def write(self, path: Path, data: bytes) -> Path:
        """Atomically and durably place ``data`` at ``path``."""
        return write_bytes(path, data)

    def instance_files(self) -> list[Path]:
        """Every spooled instance file (used to re-register files a crash left unrecorded)."""
        return sorted((self.root / "instances").glob("*/*.dcm"))

    def clear_tmp(self) -> int:
        """Remove half-written temp files left by a crash; returns how many."""
        return remove_partial(self.root)
