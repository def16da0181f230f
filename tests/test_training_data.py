"""Training data: sentence sampling, the left-out rule, DALI/MONAI loader parity, rank slicing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from monai_vecl.data.manifest import Record, write_manifest
from monai_vecl.data.preprocess import preprocess_gray
from monai_vecl.reports import MAX_SENTENCE_CHARS
from monai_vecl.taxonomy import LABEL_INDEX
from monai_vecl.training.dataset import SentenceSampling
from monai_vecl.data.preprocess import read_gray
from monai_vecl.training.loaders import Augmentation, DaliImages, MonaiImages, TrainLoader

SIZES = [(300, 260), (256, 256), (200, 320), (180, 150)]
LONG = "There is a moderate right pleural effusion with adjacent compressive atelectasis of the right lower lobe."


def _image(path, h, w, seed):
    y, x = np.mgrid[0:h, 0:w]
    img = 127 + 90 * np.sin(x / (9 + seed)) * np.cos(y / 13.0)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("manifest")
    records = []
    for i in range(12):
        h, w = SIZES[i % len(SIZES)]
        _image(root / f"{i}.png", h, w, i)
        records.append(Record(image=f"{i}.png", study_id=f"s{i}", patient_id=f"p{i}", split="train",
                              sentences=["No effusion.", LONG, "Heart size normal."],
                              sentence_labels=[["2-"], ["2+", "1+"], ["25"]] if i % 2 else [["3-"], ["2+"], ["4-"]]))
    records.append(Record(image="0.png", study_id="x1", patient_id="x", split="train", sentences=["Lungs clear."]))
    records.append(Record(image="0.png", study_id="x2", patient_id="x", split="train", sentences=[],
                          sentence_labels=[]))
    records.append(Record(image="1.png", study_id="x3", patient_id="x", split="validate", sentences=["a"],
                          sentence_labels=[["25"]]))
    return write_manifest(records, root / "manifest.jsonl")


def test_sampling_counts_left_out_records_and_caps_sentences(manifest):
    data = SentenceSampling(manifest, seed=3)
    assert data.counts.used == len(data) == 12
    assert data.counts.skipped == {"unlabeled": 1, "no_sentences": 1} and data.counts.total == 14
    assert all(len(s) <= MAX_SENTENCE_CHARS for item in data.items for s in item.sentences)
    assert data.items[1].sentences[1] == LONG[:MAX_SENTENCE_CHARS] != LONG
    # The image label set is the union over all sentences of the report, whatever sentence is drawn.
    image = data.items[1].image_mh
    assert {i for i in range(49) if image[i]} == {LABEL_INDEX[x] for x in ("2-", "2+", "1+", "25")}
    with pytest.raises(ValueError, match="no labeled sentence"):
        SentenceSampling(manifest, strict=True)


def test_sentence_draw_is_deterministic_per_epoch_and_varies(manifest):
    data = SentenceSampling(manifest, seed=3)
    batch = data.text_and_labels(list(range(12)), epoch=0)
    again = SentenceSampling(manifest, seed=3).text_and_labels(list(range(12)), epoch=0)
    assert batch["text"] == again["text"]
    draws = {tuple(data.draw(i, e)[0] for i in range(12)) for e in range(6)}
    assert len(draws) > 1  # a new sentence per step, not a fixed one
    for i, text, sent in zip(range(12), batch["text"], batch["sentence_mh"]):
        k = data.items[i].sentences.index(text)
        assert torch.equal(sent, data.items[i].sentence_mh[k])  # labels travel with the drawn sentence
    assert batch["image_mh"].shape == batch["sentence_mh"].shape == (12, 49)


def _paths(manifest, n=4):
    return [manifest.parent / f"{i}.png" for i in range(n)]


@pytest.mark.parametrize("train", [False, True])
def test_dali_and_monai_agree_on_shape_dtype_range(manifest, train):
    aug = Augmentation(image_size=64, load_size=80)
    paths = _paths(manifest)
    dali = next(DaliImages(aug, train, batch_size=4).batches([paths]))
    mon = next(MonaiImages(aug, train).batches([paths]))
    for out in (dali, mon):
        assert out.shape == (4, 3, 64, 64) and out.dtype == torch.float32
        assert out.min() >= -1e-4 and out.max() <= 1 + 1e-4  # [0, 1]: the network normalises
        assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    # Same inputs, same value distribution (means within a small margin).
    assert abs(dali.mean() - mon.mean()) < 0.06


def _shift_tolerant_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest per-image mean error, allowing each image a shift of up to one pixel: DALI centres an odd padding
    half a pixel the other way than ``preprocess_gray``."""
    worst = 0.0
    for a, b in zip(out, reference):
        best = min((a[:, 1:-1, 1:-1] - b[:, 1 + dy : b.shape[1] - 1 + dy, 1 + dx : b.shape[2] - 1 + dx]).abs().mean()
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        worst = max(worst, float(best))
    return worst


def test_evaluation_mode_has_no_augmentation(manifest):
    aug = Augmentation(image_size=64, load_size=80)
    paths = _paths(manifest)
    reference = torch.stack([preprocess_gray(read_gray(p), 64, 80) for p in paths])
    for loader in (DaliImages(aug, False, batch_size=4), MonaiImages(aug, False)):
        first = next(loader.batches([paths], epoch=0))
        second = next(loader.batches([paths], epoch=1))
        assert torch.equal(first, second)  # deterministic
        assert _shift_tolerant_error(first, reference) < 0.03  # the evaluation preprocessing, up to resampling
    train = [next(MonaiImages(aug, True).batches([paths], epoch=e)) for e in (0, 1)]
    assert not torch.equal(train[0], train[1])
    assert _shift_tolerant_error(train[0], reference) > 0.05


@pytest.mark.parametrize("backend", ["dali", "monai"])
def test_train_loader_slices_global_batches_by_rank(manifest, backend):
    data = SentenceSampling(manifest, seed=1)
    aug = Augmentation(image_size=32, load_size=40)
    ranks = [TrainLoader(data, batch_size=3, backend=backend, aug=aug, num_workers=0, rank=r, world_size=2)
             for r in (0, 1)]
    assert ranks[0].steps_per_epoch == 2  # 12 images, global batch 6
    per_rank = [list(loader.epoch(epoch=4)) for loader in ranks]
    order = data.epoch_order(4)
    for step in range(2):
        merged = torch.cat([per_rank[r][step]["index"] for r in (0, 1)]).tolist()
        assert merged == order[step * 6 : (step + 1) * 6]
        assert per_rank[0][step]["image"].shape == (3, 3, 32, 32)
    resumed = list(ranks[0].epoch(epoch=4, start_step=1))
    assert len(resumed) == 1 and torch.equal(resumed[0]["index"], per_rank[0][1]["index"])


def test_loader_options_are_checked_naming_the_key(manifest):
    assert Augmentation(rotate_deg=5, scale=[0.8, 1.2]).rotate_deg == 5  # YAML ints and lists are fine
    with pytest.raises(TypeError, match=r"Augmentation.flip_prob must be float, got .0.3. of type str"):
        Augmentation(flip_prob="0.3")
    with pytest.raises(TypeError, match=r"Augmentation.image_size must be int, got .64. of type str"):
        Augmentation(image_size="64")
    with pytest.raises(TypeError, match=r"Augmentation.scale must be tuple\[float, float\]"):
        Augmentation(scale="0.9, 1.1")
    with pytest.raises(TypeError, match="unexpected keyword argument .flip."):
        Augmentation(flip=0.5)
    data = SentenceSampling(manifest, seed=1)
    with pytest.raises(TypeError, match=r"TrainLoader.batch_size must be int, got .3. of type str"):
        TrainLoader(data, batch_size="3", backend="monai")
    with pytest.raises(TypeError, match=r"TrainLoader.aug must be Augmentation \| None, got \{"):
        TrainLoader(data, batch_size=3, backend="monai", aug={"flip_prob": 0.3})
    with pytest.raises(TypeError, match=r"TrainLoader.data must be SentenceSampling, got .manifest.jsonl."):
        TrainLoader("manifest.jsonl", batch_size=3)
    with pytest.raises(ValueError, match=r"TrainLoader.sentences_per_image must be >= 1, got 0"):
        TrainLoader(data, batch_size=3, backend="monai", sentences_per_image=0)
    with pytest.raises(ValueError, match=r"backend must be one of \(.auto., .dali., .monai.\), got .torch."):
        TrainLoader(data, batch_size=3, backend="torch")
    with pytest.raises(TypeError, match="unexpected keyword argument .batchsize."):
        TrainLoader(data, batchsize=3)


def test_macro_auc_skips_unlabeled_records_and_one_class_columns():
    from monai_vecl.metrics import masked_macro_auc as macro_auc

    truth = np.array([[1, 0, -1], [0, 0, 1], [1, 0, 0], [-1, 0, 1]])
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.5, 0.8], [0.7, 0.3, 0.7], [0.0, 0.2, 0.6]])
    macro, per_class = macro_auc(truth, scores, ["a", "b", "c"])
    assert set(per_class) == {"a", "c"}  # "b" has no positive: no AUC
    assert per_class["a"] == 1.0  # row 3 (unlabeled for "a") would have broken the perfect ranking
    assert per_class["c"] == 0.5 and macro == 0.75
    with pytest.raises(ValueError, match="AUC undefined"):
        macro_auc(truth[:, 1:2], scores[:, 1:2], ["b"])
