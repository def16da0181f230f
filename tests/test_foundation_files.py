"""The one atomic write (monai_vecl.files): complete old or complete new bytes, durable, no leftovers."""

import json
import os
import stat

import pytest
import torch

from monai_vecl import files
from monai_vecl.files import atomic_open, remove_partial, write_bytes, write_json, write_text


def test_writes_replace_and_leave_no_temporary(tmp_path):
    target = tmp_path / "sub" / "a.json"
    write_json(target, {"b": 1, "a": "é"}, sort_keys=True)
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": "é", "b": 1}
    assert target.read_text(encoding="utf-8").index('"a"') < target.read_text(encoding="utf-8").index('"b"')
    write_text(target, "second")
    assert target.read_text() == "second"
    write_bytes(target, b"\x00third")
    assert target.read_bytes() == b"\x00third"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_failure_in_the_body_keeps_the_old_file(tmp_path):
    target = write_text(tmp_path / "m.jsonl", "old\n")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_open(target, "w") as f:
            f.write("half of the new")
            raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [target]


def test_torch_save_through_the_file_object(tmp_path):
    target = tmp_path / "model.pt"
    with atomic_open(target) as f:
        torch.save({"w": torch.arange(3)}, f)
    assert torch.equal(torch.load(target)["w"], torch.arange(3))


def test_file_and_folder_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_mode), real(fd)))
    write_bytes(tmp_path / "x", b"1")
    kinds = [stat.S_ISDIR(m) for m in synced]
    if os.name == "posix":
        assert kinds == [False, True]
    else:
        assert kinds == [False]


def test_no_overwrite_keeps_the_first_value_and_permissions(tmp_path):
    target = write_text(tmp_path / "salt", "first", overwrite=False, permissions=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_text(target, "second", overwrite=False)
    assert target.read_text() == "first"
    assert list(tmp_path.iterdir()) == [target]


def test_default_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        target = write_bytes(tmp_path / "x", b"1")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_remove_partial_counts_leftovers_only(tmp_path):
    keep = write_bytes(tmp_path / "a" / "x.dcm", b"1")
    (tmp_path / "a" / ".x.dcm.123.part").write_bytes(b"half")
    (tmp_path / ".y.part").write_bytes(b"half")
    assert remove_partial(tmp_path) == 2
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [keep]


def test_mode_is_checked(tmp_path):
    with pytest.raises(ValueError, match="'a'"):
        with atomic_open(tmp_path / "x", "a"):
            pass
