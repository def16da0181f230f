"""The one atomic, durable file write of the package.

A write goes to a temporary file in the target's own folder (so the rename never crosses file
systems), is flushed and fsynced, renamed over the target with ``os.replace`` and the folder is
fsynced, so after a crash or a kill the target holds either the old complete bytes or the new
complete bytes, never half of them. Everything that writes a checkpoint, manifest, threshold table,
summary, SR or spool file calls :func:`atomic_open` or one of its one-line wrappers.

Temporary files are named ``.<target name>.<random>.part``; :func:`remove_partial` deletes the ones a
crash left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

PARTIAL_GLOB = ".*.part"


def _fsync_dir(folder: Path) -> None:
    # a rename is durable only once the folder entry is on disk; Windows cannot open folders
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, encoding: str = "utf-8",
                overwrite: bool = True, permissions: int = 0o666) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on normal exit it atomically and durably becomes ``path``.

    Args:
        path: the target; missing parent folders are created.
        mode: ``"wb"`` (bytes) or ``"w"`` (text in ``encoding``). The file object suits ``torch.save``,
            ``Dataset.save_as``, ``json.dump`` or line-by-line writing.
        overwrite: when False the target is created only if it does not exist yet (``os.link``), else
            ``FileExistsError`` is raised and the existing file is left untouched; for values that
            several processes may race to create, such as a salt.
        permissions: mode bits of the new file before the umask (``0o600`` for secrets).

    If the body raises, the temporary file is removed and the target is left as it was.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, permissions)
    try:
        with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": encoding})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails instead of replacing what another process wrote meanwhile
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes, **options: Any) -> Path:
    """Atomically write ``data`` to ``path`` (options as :func:`atomic_open`); returns the path."""
    with atomic_open(path, "wb", **options) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, **options: Any) -> Path:
    """Atomically write ``text`` to ``path`` (options as :func:`atomic_open`); returns the path."""
    with atomic_open(path, "w", **options) as f:
        f.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, sort_keys: bool = False,
               **options: Any) -> Path:
    """Atomically write ``obj`` as JSON (UTF-8, non-ASCII kept) to ``path``; returns the path."""
    with atomic_open(path, "w", **options) as f:
        json.dump(obj, f, indent=indent, sort_keys=sort_keys, ensure_ascii=False)
    return Path(path)


def remove_partial(folder: str | os.PathLike) -> int:
    """Delete the temporary files that interrupted writes left anywhere under ``folder``; returns how many."""
    parts = [p for p in Path(folder).rglob(PARTIAL_GLOB) if p.is_file()]
    for p in parts:
        p.unlink(missing_ok=True)
    return len(parts)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in blocks (weights files are large): the identity of a model file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
