"""Manifest schema and evaluation preprocessing (the contracts every layer shares)."""

import json

import numpy as np
import pytest
import torch

from monai_vecl.data.manifest import Record, image_path, read_manifest, write_manifest
from monai_vecl.data.preprocess import preprocess_gray, read_gray


def _record(**kw) -> Record:
    base = dict(image="img/a.png", study_id="s1", patient_id="p1", split="train",
                sentences=["No effusion.", "Small left pneumothorax."], sentence_labels=[["2-"], ["3+"]])
    base.update(kw)
    return Record(**base)


def test_roundtrip_and_relative_paths(tmp_path):
    records = [_record(), _record(image="img/b.png", split="test", sentence_labels=None, findings={"Pneumothorax": 1})]
    path = write_manifest(records, tmp_path / "sub" / "manifest.jsonl")
    back = read_manifest(path)
    assert back == records
    assert read_manifest(path, split="test") == records[1:]
    assert image_path(back[0], path) == (tmp_path / "sub" / "img" / "a.png").resolve()
    assert back[0].image_labels == ("3+", "2-")
    assert not (tmp_path / "sub" / "manifest.jsonl.tmp").exists()


def test_labels_must_align_with_sentences():
    with pytest.raises(ValueError, match="2 sentences but 1 label sets"):
        _record(sentence_labels=[["2-"]])


def test_bad_labels_and_split_rejected():
    with pytest.raises(ValueError, match="split"):
        _record(split="training")
    with pytest.raises(ValueError, match="not a signed VECL label"):
        _record(sentence_labels=[["2-"], ["26+"]])


def test_malformed_line_names_file_and_line(tmp_path):
    path = write_manifest([_record()], tmp_path / "m.jsonl")
    with open(path, "a") as f:
        f.write(json.dumps({"image": "x", "bogus": 1}) + "\n")
    with pytest.raises(ValueError, match=r"m\.jsonl:2"):
        read_manifest(path)


def test_preprocess_geometry_keeps_intensities():
    image = np.zeros((300, 150), np.float32)
    image[:, :] = 1.0
    out = preprocess_gray(image)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    assert torch.equal(out[0], out[2])
    # a portrait image is padded left/right: centre column bright, outer columns are zero padding;
    # intensities stay in [0, 1] (the network normalises them)
    assert out[0, 112, 112].item() == pytest.approx(1.0, abs=1e-4)
    assert out[0, 112, 0].item() == pytest.approx(0.0, abs=1e-4)


def test_read_gray_scales_by_bit_depth_not_by_values(tmp_path):
    from PIL import Image

    dark16 = np.full((4, 4), 200, np.uint16)  # a dark 16-bit image whose values are all <= 255
    Image.fromarray(dark16).save(tmp_path / "dark16.png")
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(tmp_path / "eight.png")
    Image.fromarray(np.full((4, 4, 3), 51, np.uint8)).save(tmp_path / "rgb.png")
    assert read_gray(tmp_path / "dark16.png").max() == pytest.approx(200 / 65535)
    assert read_gray(tmp_path / "eight.png").max() == pytest.approx(200 / 255)
    assert read_gray(tmp_path / "rgb.png").max() == pytest.approx(51 / 255)


def test_preprocess_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        preprocess_gray(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="non-finite"):
        preprocess_gray(np.full((8, 8), np.nan))
